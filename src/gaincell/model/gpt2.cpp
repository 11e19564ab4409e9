#include "gaincell/model/gpt2.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>

#include "gaincell/core/blas.h"
#include "gaincell/core/error.h"
#include "gaincell/core/json.h"
#include "gaincell/model/layers.h"
#include "gaincell/model/memory_estimate.h"

namespace gaincell {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Configuration

void GPT2Config::validate() const {
  auto positive = [](int value, const char* field) {
    require(value > 0,
            std::string("model config: ") + field + " must be > 0, got " + std::to_string(value));
  };
  positive(n_layer, "n_layer");
  positive(n_head, "n_head");
  positive(n_embd, "n_embd");
  positive(block_size, "n_positions (block_size)");
  positive(vocab_size, "vocab_size");
  require(n_embd % n_head == 0, "model config: n_embd (" + std::to_string(n_embd) +
                                    ") must be divisible by n_head (" + std::to_string(n_head) +
                                    ")");
  require(std::isfinite(layer_norm_epsilon) && layer_norm_epsilon > 0.0f,
          "model config: layer_norm_epsilon must be a positive finite number");
  require(!attention.empty(), "model config: gaincell_attention must name an attention variant");
  require(window >= 0, "model config: gaincell_window must be >= 0, got " + std::to_string(window));
  require(tokenizer == "gpt2-bpe" || tokenizer == "bytes",
          "model config: gaincell_tokenizer must be \"gpt2-bpe\" or \"bytes\", got \"" + tokenizer +
              "\"");
  require(tokenizer != "bytes" || vocab_size >= 257,
          "model config: the byte tokenizer needs vocab_size >= 257 (256 bytes and "
          "<|endoftext|>), got " +
              std::to_string(vocab_size));
  hw.validate();
}

json GPT2Config::to_json() const {
  json j;
  j["model_type"] = "gpt2";
  j["architectures"] = {"GPT2LMHeadModel"};
  j["activation_function"] = "gelu_new";
  j["n_layer"] = n_layer;
  j["n_head"] = n_head;
  j["n_embd"] = n_embd;
  j["n_positions"] = block_size;
  j["n_ctx"] = block_size;
  j["vocab_size"] = vocab_size;
  j["layer_norm_epsilon"] = layer_norm_epsilon;
  j["gaincell_attention"] = attention;
  j["gaincell_window"] = window;
  j["gaincell_hw"] = hw.to_json();
  if (tokenizer != "gpt2-bpe") j["gaincell_tokenizer"] = tokenizer;
  return j;
}

namespace {

int read_int(const json& j, const char* key, int fallback) {
  return json_int_or<int>(j, key, fallback, "model config");
}

}  // namespace

GPT2Config GPT2Config::from_json(const json& j) {
  require(j.is_object(), "model config: expected a JSON object");
  // Keys HF GPT-2 configs carry that this engine does not use (dropouts, task heads, ...) are
  // ignored; missing keys take the GPT-2 (124M) defaults, as in Hugging Face.
  GPT2Config c;
  if (j.contains("model_type")) {
    require(j["model_type"].is_string() && j["model_type"] == "gpt2",
            "model config: model_type must be \"gpt2\"");
  }
  if (j.contains("activation_function")) {
    const json& a = j["activation_function"];
    require(a.is_string() && (a == "gelu_new" || a == "gelu_pytorch_tanh"),
            "model config: activation_function must be the tanh GELU (\"gelu_new\")");
  }
  c.n_layer = read_int(j, "n_layer", c.n_layer);
  c.n_head = read_int(j, "n_head", c.n_head);
  c.n_embd = read_int(j, "n_embd", c.n_embd);
  c.block_size = read_int(j, "n_ctx", c.block_size);
  c.block_size = read_int(j, "n_positions", c.block_size);
  c.vocab_size = read_int(j, "vocab_size", c.vocab_size);
  if (j.contains("layer_norm_epsilon")) {
    c.layer_norm_epsilon =
        json_float(j["layer_norm_epsilon"], "model config: 'layer_norm_epsilon'");
  }
  if (j.contains("gaincell_attention")) {
    require(j["gaincell_attention"].is_string(),
            "model config: 'gaincell_attention' must be a string");
    c.attention = j["gaincell_attention"].get<std::string>();
  }
  c.window = read_int(j, "gaincell_window", c.window);
  // Without gaincell_hw a hardware variant runs on its own default hardware, exactly as when it is
  // chosen with --attention (ModelOverrides); the variant then sets its cell model.
  if (j.contains("gaincell_hw")) {
    c.hw = HwConfig::from_json(j["gaincell_hw"]);
  } else if (auto own = attention_default_hardware(c.attention)) {
    c.hw = *own;
  }
  c.hw = attention_hardware(c.attention, c.hw);
  if (j.contains("gaincell_tokenizer")) {
    require(j["gaincell_tokenizer"].is_string(),
            "model config: 'gaincell_tokenizer' must be a string");
    c.tokenizer = j["gaincell_tokenizer"].get<std::string>();
  }
  c.validate();
  return c;
}

GPT2Config GPT2Config::named(const std::string& name) {
  GPT2Config c;
  auto set = [&c](int layers, int heads, int embd) {
    c.n_layer = layers;
    c.n_head = heads;
    c.n_embd = embd;
  };
  if (name == "gpt2") {
    set(12, 12, 768);
  } else if (name == "gpt2-medium") {
    set(24, 16, 1024);
  } else if (name == "gpt2-large") {
    set(36, 20, 1280);
  } else if (name == "gpt2-xl") {
    set(48, 25, 1600);
  } else if (name == "tiny") {  // the shape of tests/fixtures/gpt2_tiny
    set(2, 4, 32);
    c.block_size = 32;
    c.vocab_size = 101;
  } else {
    throw Error("unknown model name '" + name +
                "' (known: gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny)");
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Parameter table: Hugging Face names and shapes, one contiguous buffer.

struct GPT2Model::LayerOffsets {
  size_t ln1_w, ln1_b, qkv_w, qkv_b, attproj_w, attproj_b, ln2_w, ln2_b, fc_w, fc_b, fcproj_w,
      fcproj_b;
  std::vector<size_t> attention_params;  // indices into params_ of the variant's ParamSpecs
};

void GPT2Model::build_param_table() {
  const int64_t C = config_.n_embd, V = config_.vocab_size, T = config_.block_size;
  size_t offset = 0;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, bool trainable = true,
                 int decay = -1) {
    ParamInfo p;
    p.name = name;
    p.numel = 1;
    for (int64_t s : shape) p.numel *= s;
    p.shape = std::move(shape);
    p.offset = offset;
    p.trainable = trainable;
    p.weight_decay = decay >= 0 ? decay == 1 : p.shape.size() >= 2;
    require(!param_index_.count(name), "duplicate parameter name '" + name + "'");
    param_index_[name] = params_.size();
    params_.push_back(p);
    offset += static_cast<size_t>(p.numel);
    return p.offset;
  };
  wte_ = add("wte.weight", {V, C});
  wpe_ = add("wpe.weight", {T, C});
  for (int l = 0; l < config_.n_layer; l++) {
    const std::string h = "h." + std::to_string(l) + ".";
    LayerOffsets o;
    o.ln1_w = add(h + "ln_1.weight", {C});
    o.ln1_b = add(h + "ln_1.bias", {C});
    o.qkv_w = add(h + "attn.c_attn.weight", {C, 3 * C});
    o.qkv_b = add(h + "attn.c_attn.bias", {3 * C});
    o.attproj_w = add(h + "attn.c_proj.weight", {C, C});
    o.attproj_b = add(h + "attn.c_proj.bias", {C});
    o.ln2_w = add(h + "ln_2.weight", {C});
    o.ln2_b = add(h + "ln_2.bias", {C});
    o.fc_w = add(h + "mlp.c_fc.weight", {C, 4 * C});
    o.fc_b = add(h + "mlp.c_fc.bias", {4 * C});
    o.fcproj_w = add(h + "mlp.c_proj.weight", {4 * C, C});
    o.fcproj_b = add(h + "mlp.c_proj.bias", {C});
    for (const ParamSpec& spec : attention_[l]->param_specs()) {
      o.attention_params.push_back(params_.size());
      add(h + spec.name, spec.shape, spec.trainable, spec.weight_decay ? 1 : 0);
    }
    layer_offsets_.push_back(std::move(o));
  }
  lnf_w_ = add("ln_f.weight", {C});
  lnf_b_ = add("ln_f.bias", {C});
  num_params_ = offset;
}

// ---------------------------------------------------------------------------------------------
// Activations: one allocation for the forward pass, one for the backward scratch, sized for the
// largest B*T seen so far (pointers stay valid while B*T does not grow).

struct GPT2Model::Activations {
  int64_t capacity = 0;  // B*T the buffers were carved for
  int B = 0, T = 0;
  bool has_targets = false, training = false, logits_valid = false;
  int64_t loss_count = 0;
  std::vector<int32_t> inputs, targets;
  std::unique_ptr<float[]> forward_buffer, backward_buffer;
  size_t forward_floats = 0, backward_floats = 0;
  // The [B*T, V] logits are only materialised by inference forwards; a training forward computes
  // the loss `kVocabChunk` vocabulary columns at a time into vocab_chunk (saves ~200 MB at
  // GPT-2 124M, B*T = 1024) and backward recomputes them.
  std::unique_ptr<float[]> logits_buffer, vocab_chunk;
  int64_t logits_capacity = 0, vocab_chunk_capacity = 0;
  // Forward (kept for backward). Per layer l: res_in(l) = l == 0 ? encoded : res3[l-1].
  float* encoded;
  std::vector<float*> qkvh, atty, res2, fch, res3, ln1_stats, ln2_stats;  // stats: mean | rstd
  float *lnf, *lnf_stats, *lse, *losses, *logits = nullptr;
  // Forward scratch.
  float *ln, *qkv, *atto, *gelu;
  // Backward scratch. datty aliases dln and dheads aliases dfch: their lifetimes do not overlap.
  float *dres, *dln, *datty, *dfch, *dheads;
};

namespace {

// Hands out consecutive slices of a float buffer (first pass: only counts).
class Carver {
 public:
  explicit Carver(float* base) : base_(base) {}
  float* take(int64_t n) {
    float* p = base_ ? base_ + used_ : nullptr;
    used_ += static_cast<size_t>(n);
    return p;
  }
  size_t used() const { return used_; }

 private:
  float* base_;
  size_t used_ = 0;
};

}  // namespace

void GPT2Model::ensure_activations(int B, int T) {
  Activations& a = *acts_;
  a.B = B;
  a.T = T;
  const int64_t BT = static_cast<int64_t>(B) * T;
  if (BT <= a.capacity && a.forward_buffer) return;
  const int64_t C = config_.n_embd, L = config_.n_layer;
  auto carve = [&](float* base) {
    Carver c(base);
    a.encoded = c.take(BT * C);
    a.qkvh.assign(L, nullptr);
    a.atty = a.res2 = a.fch = a.res3 = a.ln1_stats = a.ln2_stats = a.qkvh;
    for (int64_t l = 0; l < L; l++) {
      a.qkvh[l] = c.take(3 * BT * C);
      a.atty[l] = c.take(BT * C);
      a.res2[l] = c.take(BT * C);
      a.fch[l] = c.take(4 * BT * C);
      a.res3[l] = c.take(BT * C);
      a.ln1_stats[l] = c.take(2 * BT);
      a.ln2_stats[l] = c.take(2 * BT);
    }
    a.lnf = c.take(BT * C);
    a.lnf_stats = c.take(2 * BT);
    a.lse = c.take(BT);
    a.losses = c.take(BT);
    a.ln = c.take(BT * C);
    a.qkv = c.take(3 * BT * C);
    a.atto = c.take(BT * C);
    a.gelu = c.take(4 * BT * C);
    return c.used();
  };
  a.forward_floats = carve(nullptr);
  a.forward_buffer.reset();  // free the old buffer before allocating the larger one
  a.forward_buffer.reset(new float[a.forward_floats]);
  carve(a.forward_buffer.get());
  a.backward_buffer.reset();
  a.backward_floats = 0;
  a.capacity = BT;
}

void GPT2Model::ensure_backward_scratch() {
  Activations& a = *acts_;
  if (a.backward_buffer) return;
  const int64_t BT = a.capacity, C = config_.n_embd;
  auto carve = [&](float* base) {
    Carver c(base);
    a.dres = c.take(BT * C);
    a.dln = c.take(BT * C);
    a.dfch = c.take(4 * BT * C);
    a.datty = a.dln;
    a.dheads = a.dfch;
    return c.used();
  };
  a.backward_floats = carve(nullptr);
  a.backward_buffer.reset(new float[a.backward_floats]);
  carve(a.backward_buffer.get());
}

size_t GPT2Model::activation_bytes() const {
  const Activations& a = *acts_;
  return (a.forward_floats + a.backward_floats + a.logits_capacity + a.vocab_chunk_capacity) *
         sizeof(float);
}

void GPT2Model::set_vocab_chunk(int columns) {
  require(columns > 0, "vocab chunk must be > 0");
  vocab_chunk_ = columns;
  acts_->vocab_chunk.reset();
  acts_->vocab_chunk_capacity = 0;
}

namespace {
// Grows a lazily allocated buffer to at least n floats.
float* ensure_buffer(std::unique_ptr<float[]>& buffer, int64_t& capacity, int64_t n) {
  if (!buffer || capacity < n) {
    buffer.reset();
    buffer.reset(new float[n]);
    capacity = n;
  }
  return buffer.get();
}
}  // namespace

// ---------------------------------------------------------------------------------------------
// Construction and parameters

GPT2Model::GPT2Model(const GPT2Config& config) : config_(config), acts_(new Activations) {
  // The configuration the model reports (and save_model records) is the hardware that runs.
  config_.hw = attention_hardware(config_.attention, config_.hw);
  config_.validate();
  // Before anything is allocated: an absurd configuration is an error, not an OOM kill.
  char count[32];
  std::snprintf(count, sizeof count, "%.3g", estimated_param_count(config_));
  require_memory(estimated_model_bytes(config_, false), "the model",
                 std::string(count) + " float32 parameters");
  AttentionContext ctx;
  ctx.n_head = config_.n_head;
  ctx.head_dim = config_.head_dim();
  ctx.block_size = config_.block_size;
  ctx.window = config_.window;
  ctx.hw = config_.hw;
  for (int l = 0; l < config_.n_layer; l++) {
    ctx.layer = l;
    attention_.push_back(make_attention(config_.attention, ctx));
  }
  build_param_table();
  param_data_.reset(new float[num_params_]());
  // A variant's trainable tensors need their gradient storage at bind time (bind_params is
  // called once), so such models allocate gradients up front; plain GPT-2 allocates them lazily.
  bool any_trainable_spec = false;
  for (const LayerOffsets& o : layer_offsets_) {
    for (size_t idx : o.attention_params) any_trainable_spec |= params_[idx].trainable;
  }
  if (any_trainable_spec) allocate_grads();
  bind_attention_params();
  initialise_params(/*random=*/false, 0);
}

GPT2Model::~GPT2Model() = default;

const ParamInfo& GPT2Model::param(const std::string& name) const {
  auto it = param_index_.find(name);
  if (it == param_index_.end()) throw Error("model has no parameter named '" + name + "'");
  return params_[it->second];
}

void GPT2Model::allocate_grads() {
  if (!grad_data_) grad_data_.reset(new float[num_params_]());
}

float* GPT2Model::grad_data() {
  allocate_grads();
  return grad_data_.get();
}

void GPT2Model::zero_grad() {
  if (grad_data_) std::memset(grad_data_.get(), 0, num_params_ * sizeof(float));
}

void GPT2Model::bind_attention_params() {
  for (int l = 0; l < config_.n_layer; l++) {
    std::vector<TensorRef> refs;
    for (size_t idx : layer_offsets_[l].attention_params) {
      const ParamInfo& p = params_[idx];
      TensorRef r;
      r.data = param_data_.get() + p.offset;
      r.grad = (p.trainable && grad_data_) ? grad_data_.get() + p.offset : nullptr;
      r.numel = p.numel;
      refs.push_back(r);
    }
    attention_[l]->bind_params(refs);
  }
}

void GPT2Model::init_random(uint64_t seed) {
  initialise_params(true, seed);
}

void GPT2Model::initialise_params(bool random, uint64_t seed) {
  // Box-Muller over mt19937_64 so the values do not depend on the standard library.
  std::mt19937_64 rng(seed);
  auto uniform = [&rng] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };
  auto fill_normal = [&](const ParamInfo& p, double std) {
    float* w = param_data_.get() + p.offset;
    if (!random) {
      std::fill(w, w + p.numel, 0.0f);
      return;
    }
    for (int64_t i = 0; i < p.numel; i += 2) {  // each Box-Muller draw gives two normals
      const double r = std * std::sqrt(-2.0 * std::log(uniform()));
      const double angle = 2.0 * M_PI * uniform();
      w[i] = static_cast<float>(r * std::cos(angle));
      if (i + 1 < p.numel) w[i + 1] = static_cast<float>(r * std::sin(angle));
    }
  };
  const double residual_std = 0.02 / std::sqrt(2.0 * config_.n_layer);
  auto ends_with = [](const std::string& s, const std::string& suffix) {
    return s.size() >= suffix.size() &&
           s.compare(s.size() - suffix.size(), suffix.npos, suffix) == 0;
  };
  std::vector<bool> is_attention_param(params_.size(), false);
  for (int l = 0; l < config_.n_layer; l++) {
    const auto specs = attention_[l]->param_specs();
    const auto& idx = layer_offsets_[l].attention_params;
    for (size_t s = 0; s < specs.size(); s++) {
      const ParamInfo& p = params_[idx[s]];
      is_attention_param[idx[s]] = true;
      float* w = param_data_.get() + p.offset;
      if (specs[s].init.empty()) {
        std::fill(w, w + p.numel, 0.0f);
      } else {
        require(static_cast<int64_t>(specs[s].init.size()) == p.numel,
                "attention parameter '" + p.name + "': init has " +
                    std::to_string(specs[s].init.size()) + " values for " +
                    std::to_string(p.numel) + " elements");
        std::copy(specs[s].init.begin(), specs[s].init.end(), w);
      }
    }
  }
  for (size_t i = 0; i < params_.size(); i++) {
    const ParamInfo& p = params_[i];
    if (is_attention_param[i]) continue;
    float* w = param_data_.get() + p.offset;
    if (ends_with(p.name, "ln_1.weight") || ends_with(p.name, "ln_2.weight") ||
        p.name == "ln_f.weight") {
      std::fill(w, w + p.numel, 1.0f);
    } else if (p.shape.size() == 1) {
      std::fill(w, w + p.numel, 0.0f);  // biases
    } else if (ends_with(p.name, "c_proj.weight")) {
      fill_normal(p, residual_std);  // residual projections, GPT-2 paper
    } else {
      fill_normal(p, 0.02);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Forward and backward

float GPT2Model::forward(const int32_t* inputs, const int32_t* targets, int B, int T,
                         bool training) {
  require(B > 0 && T > 0,
          "forward: B and T must be > 0, got B=" + std::to_string(B) + ", T=" + std::to_string(T));
  require(T <= config_.block_size, "forward: sequence length " + std::to_string(T) +
                                       " exceeds the model's block_size " +
                                       std::to_string(config_.block_size));
  require(!training || weight_format_ == WeightFormat::kF32,
          "forward: training needs f32 weights (the model holds " + to_string(weight_format_) +
              " inference weights)");
  ensure_activations(B, T);
  Activations& a = *acts_;
  const int C = config_.n_embd, V = config_.vocab_size, H = config_.n_head, D = C / H;
  const int64_t BT = static_cast<int64_t>(B) * T;
  const float eps = config_.layer_norm_epsilon;
  const float* P = param_data_.get();
  a.inputs.assign(inputs, inputs + BT);
  a.has_targets = false;
  a.logits_valid = false;
  a.training = training;

  layers::embedding_forward(a.encoded, inputs, P + wte_, P + wpe_, B, T, C, V);
  for (int l = 0; l < config_.n_layer; l++) {
    const LayerOffsets& o = layer_offsets_[l];
    const float* res_in = l == 0 ? a.encoded : a.res3[l - 1];
    float* q = a.qkvh[l];
    float* k = q + BT * C;
    float* v = k + BT * C;
    // x + attn(ln_1(x))  (spec §3.1)
    layers::layernorm_forward(a.ln, a.ln1_stats[l], a.ln1_stats[l] + BT, res_in, P + o.ln1_w,
                              P + o.ln1_b, BT, C, eps);
    linear(a.qkv, a.ln, o.qkv_w, o.qkv_b, BT, C, 3 * C);
    layers::split_heads(q, k, v, a.qkv, B, T, H, D);
    attention_[l]->forward(q, k, v, a.atto, B, T, training);
    layers::merge_heads(a.atty[l], a.atto, B, T, H, D);
    std::memcpy(a.res2[l], res_in, BT * C * sizeof(float));
    linear(a.res2[l], a.atty[l], o.attproj_w, o.attproj_b, BT, C, C, true);
    // x + mlp(ln_2(x))
    layers::layernorm_forward(a.ln, a.ln2_stats[l], a.ln2_stats[l] + BT, a.res2[l], P + o.ln2_w,
                              P + o.ln2_b, BT, C, eps);
    linear(a.fch[l], a.ln, o.fc_w, o.fc_b, BT, C, 4 * C);
    layers::gelu_forward(a.gelu, a.fch[l], BT * 4 * C);
    std::memcpy(a.res3[l], a.res2[l], BT * C * sizeof(float));
    linear(a.res3[l], a.gelu, o.fcproj_w, o.fcproj_b, BT, 4 * C, C, true);
  }
  layers::layernorm_forward(a.lnf, a.lnf_stats, a.lnf_stats + BT, a.res3[config_.n_layer - 1],
                            P + lnf_w_, P + lnf_b_, BT, C, eps);
  // Tied LM head: logits = ln_f(x) · wteᵀ.
  layers::LossResult loss;
  if (training && targets != nullptr) {
    float* chunk =
        ensure_buffer(a.vocab_chunk, a.vocab_chunk_capacity, BT * std::min(vocab_chunk_, V));
    loss = layers::lm_head_loss_forward_chunked(a.losses, a.lse, chunk, a.lnf, P + wte_, targets,
                                                BT, C, V, vocab_chunk_);
  } else {
    a.logits = ensure_buffer(a.logits_buffer, a.logits_capacity, BT * V);
    if (const PackedMatrix* head = packed(wte_)) {
      packed_matmul(a.logits, a.lnf, *head, BT, false);
    } else {
      blas::gemm_nt(static_cast<int>(BT), V, C, a.lnf, C, P + wte_, C, a.logits, V);
    }
    a.logits_valid = true;
    if (targets == nullptr) {
      std::fill(a.losses, a.losses + BT, 0.0f);
      return 0.0f;
    }
    loss = layers::crossentropy_forward(a.losses, a.logits, targets, BT, V);
  }
  a.targets.assign(targets, targets + BT);
  a.has_targets = true;
  a.loss_count = loss.count;
  return static_cast<float>(loss.mean);
}

const float* GPT2Model::logits() const {
  require(acts_->logits_valid,
          "logits(): only an inference forward (training = false) keeps the logits");
  return acts_->logits;
}

const float* GPT2Model::token_losses() const {
  require(acts_->forward_buffer != nullptr, "token_losses(): no forward pass yet");
  return acts_->losses;
}

void GPT2Model::backward() {
  Activations& a = *acts_;
  require(a.has_targets, "backward(): needs a forward pass with targets before each backward()");
  require(a.training, "backward(): the forward pass must run with training = true");
  require(weight_format_ == WeightFormat::kF32, "backward(): training needs f32 weights");
  ensure_backward_scratch();
  float* G = grad_data();
  const float* P = param_data_.get();
  const int B = a.B, T = a.T, C = config_.n_embd, V = config_.vocab_size, H = config_.n_head,
            D = C / H;
  const int64_t BT = static_cast<int64_t>(B) * T;

  float* chunk =
      ensure_buffer(a.vocab_chunk, a.vocab_chunk_capacity, BT * std::min(vocab_chunk_, V));
  layers::lm_head_loss_backward_chunked(a.dln, G + wte_, chunk, a.lnf, P + wte_, a.targets.data(),
                                        a.lse, BT, C, V, vocab_chunk_, a.loss_count);
  std::memset(a.dres, 0, BT * C * sizeof(float));
  layers::layernorm_backward(a.dres, G + lnf_w_, G + lnf_b_, a.dln, a.res3[config_.n_layer - 1],
                             P + lnf_w_, a.lnf_stats, a.lnf_stats + BT, BT, C);

  for (int l = config_.n_layer - 1; l >= 0; l--) {
    const LayerOffsets& o = layer_offsets_[l];
    const float* res_in = l == 0 ? a.encoded : a.res3[l - 1];
    // MLP: res3 = res2 + c_proj(gelu(c_fc(ln_2(res2)))); gelu and ln_2 are recomputed.
    layers::gelu_forward(a.gelu, a.fch[l], BT * 4 * C);
    layers::linear_backward(a.dfch, G + o.fcproj_w, G + o.fcproj_b, a.dres, a.gelu, P + o.fcproj_w,
                            BT, 4 * C, C);
    layers::gelu_backward(a.dfch, a.fch[l], a.dfch, BT * 4 * C);
    layers::layernorm_recompute(a.ln, a.res2[l], a.ln2_stats[l], a.ln2_stats[l] + BT, P + o.ln2_w,
                                P + o.ln2_b, BT, C);
    layers::linear_backward(a.dln, G + o.fc_w, G + o.fc_b, a.dfch, a.ln, P + o.fc_w, BT, C, 4 * C);
    layers::layernorm_backward(a.dres, G + o.ln2_w, G + o.ln2_b, a.dln, a.res2[l], P + o.ln2_w,
                               a.ln2_stats[l], a.ln2_stats[l] + BT, BT, C);
    // Attention: res2 = res_in + c_proj(attn(split(c_attn(ln_1(res_in))))).
    layers::linear_backward(a.datty, G + o.attproj_w, G + o.attproj_b, a.dres, a.atty[l],
                            P + o.attproj_w, BT, C, C);
    layers::split_heads_one(a.atto, a.datty, B, T, H, D);
    const float* q = a.qkvh[l];
    const float* k = q + BT * C;
    const float* v = k + BT * C;
    float* dq = a.dheads;
    float* dk = dq + BT * C;
    float* dv = dk + BT * C;
    attention_[l]->backward(q, k, v, a.atto, dq, dk, dv, B, T);
    layers::merge_heads_qkv(a.qkv, dq, dk, dv, B, T, H, D);
    layers::layernorm_recompute(a.ln, res_in, a.ln1_stats[l], a.ln1_stats[l] + BT, P + o.ln1_w,
                                P + o.ln1_b, BT, C);
    layers::linear_backward(a.dln, G + o.qkv_w, G + o.qkv_b, a.qkv, a.ln, P + o.qkv_w, BT, C,
                            3 * C);
    layers::layernorm_backward(a.dres, G + o.ln1_w, G + o.ln1_b, a.dln, res_in, P + o.ln1_w,
                               a.ln1_stats[l], a.ln1_stats[l] + BT, BT, C);
  }
  layers::embedding_backward(G + wte_, G + wpe_, a.dres, a.inputs.data(), B, T, C);
  a.has_targets = false;  // one backward per forward
}

// ---------------------------------------------------------------------------------------------
// Digital linear layers and their reduced-precision weights

void GPT2Model::set_weight_format(WeightFormat format) {
  packed_.clear();
  weight_format_ = format;
  if (format == WeightFormat::kF32) return;
  const int C = config_.n_embd;
  const float* P = param_data_.get();
  for (const LayerOffsets& o : layer_offsets_) {
    // Conv1D weights [in, out] are packed as the [out, in] matrix of y = M x.
    packed_[o.qkv_w] = PackedMatrix::from_columns(format, P + o.qkv_w, 3 * C, C);
    packed_[o.attproj_w] = PackedMatrix::from_columns(format, P + o.attproj_w, C, C);
    packed_[o.fc_w] = PackedMatrix::from_columns(format, P + o.fc_w, 4 * C, C);
    packed_[o.fcproj_w] = PackedMatrix::from_columns(format, P + o.fcproj_w, C, 4 * C);
  }
  packed_[wte_] = PackedMatrix::from_rows(format, P + wte_, config_.vocab_size, C);  // LM head
}

size_t GPT2Model::packed_weight_bytes() const {
  size_t bytes = 0;
  for (const auto& [offset, m] : packed_) bytes += m.bytes();
  return bytes;
}

const PackedMatrix* GPT2Model::packed(size_t offset) const {
  if (packed_.empty()) return nullptr;
  auto it = packed_.find(offset);
  return it == packed_.end() ? nullptr : &it->second;
}

void GPT2Model::linear(float* out, const float* inp, size_t w, size_t bias, int64_t N, int C,
                       int OC, bool accumulate) const {
  const float* P = param_data_.get();
  const PackedMatrix* m = packed(w);
  if (m == nullptr) {
    layers::linear_forward(out, inp, P + w, P + bias, N, C, OC, accumulate);
    return;
  }
  packed_matmul(out, inp, *m, N, accumulate);
  layers::add_bias(out, P + bias, N, OC);
}

void GPT2Model::linear_one(float* out, const float* inp, size_t w, int C, int OC) const {
  if (const PackedMatrix* m = packed(w)) {
    m->gemv(inp, out, true);
  } else {
    blas::gemv_t(C, OC, param_data_.get() + w, inp, out, 1.0f);
  }
}

// ---------------------------------------------------------------------------------------------
// Token-by-token decode

struct DecodeSession::Buffers {
  std::vector<float> x, ln, qkv, att, fc, logits;
  float mean = 0.0f, rstd = 0.0f;
  // extend(): the same tensors for n rows, and per-row LayerNorm statistics.
  std::vector<float> nx, nln, nqkv, natt, nfc, nlogits, nmean, nrstd;
};

std::unique_ptr<DecodeSession> GPT2Model::start_decoding() {
  return std::make_unique<DecodeSession>(*this);
}

DecodeSession::DecodeSession(GPT2Model& model) : model_(model), buffers_(new Buffers) {
  const GPT2Config& c = model.config();
  for (int l = 0; l < c.n_layer; l++) states_.push_back(model.attention(l).make_decode_state());
  const size_t C = c.n_embd;
  buffers_->x.resize(C);
  buffers_->ln.resize(C);
  buffers_->qkv.resize(3 * C);
  buffers_->att.resize(C);
  buffers_->fc.resize(4 * C);
  buffers_->logits.resize(c.vocab_size);
}

DecodeSession::~DecodeSession() = default;

void DecodeSession::reset() {
  for (auto& s : states_) s->reset();
  position_ = 0;
}

const float* DecodeSession::prefill(const int32_t* tokens, int n) {
  const GPT2Config& cfg = model_.config();
  require(position_ == 0, "decode: prefill() must start at position 0 (call reset() first)");
  require(n > 0 && n <= cfg.block_size, "decode: prefill of " + std::to_string(n) +
                                            " tokens (need 1.." + std::to_string(cfg.block_size) +
                                            ")");
  model_.forward(tokens, nullptr, 1, n, false);
  const int C = cfg.n_embd, H = cfg.n_head, D = C / H;
  std::vector<float> k(C), v(C);
  for (int l = 0; l < cfg.n_layer; l++) {
    const float* kh = model_.acts_->qkvh[l] + static_cast<int64_t>(n) * C;  // (1, H, n, D)
    const float* vh = kh + static_cast<int64_t>(n) * C;
    for (int t = 0; t < n; t++) {
      for (int h = 0; h < H; h++) {
        const int64_t src = (static_cast<int64_t>(h) * n + t) * D;
        std::copy(kh + src, kh + src + D, k.begin() + h * D);
        std::copy(vh + src, vh + src + D, v.begin() + h * D);
      }
      states_[l]->append(k.data(), v.data());
    }
  }
  const float* last = model_.logits() + static_cast<int64_t>(n - 1) * cfg.vocab_size;
  std::copy(last, last + cfg.vocab_size, buffers_->logits.begin());
  position_ = n;
  return buffers_->logits.data();
}

std::unique_ptr<DecodeSession> DecodeSession::clone() const {
  auto copy = std::make_unique<DecodeSession>(model_);
  for (size_t l = 0; l < states_.size(); l++) {
    copy->states_[l] = states_[l]->clone();
    if (!copy->states_[l]) return nullptr;
  }
  copy->position_ = position_;
  return copy;
}

bool DecodeSession::assign_from(const DecodeSession& other) {
  require(&other.model_ == &model_, "decode: assign_from() needs a session of the same model");
  for (size_t l = 0; l < states_.size(); l++) {
    if (states_[l]->assign_from(*other.states_[l])) continue;
    std::unique_ptr<AttentionDecodeState> copy = other.states_[l]->clone();
    if (!copy) return false;
    states_[l] = std::move(copy);
  }
  position_ = other.position_;
  return true;
}

const float* DecodeSession::extend(const int32_t* tokens, int n) {
  const GPT2Config& cfg = model_.config();
  const int C = cfg.n_embd, V = cfg.vocab_size;
  require(n > 0, "decode: extend() needs at least one token");
  require(position_ + n <= cfg.block_size,
          "decode: extending position " + std::to_string(position_) + " by " + std::to_string(n) +
              " tokens passes the model's block_size " + std::to_string(cfg.block_size));
  Buffers& b = *buffers_;
  const int64_t N = n;
  auto fit = [](std::vector<float>& v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(size);
    return v.data();
  };
  float* x = fit(b.nx, N * C);
  float* ln = fit(b.nln, N * C);
  float* qkv = fit(b.nqkv, N * 3 * C);
  float* att = fit(b.natt, N * C);
  float* fc = fit(b.nfc, N * 4 * C);
  float* mean = fit(b.nmean, N);
  float* rstd = fit(b.nrstd, N);
  const float* P = model_.param_data();
  const float eps = cfg.layer_norm_epsilon;
  // Positions continue from position_: the position table starts at that row.
  layers::embedding_forward(x, tokens, P + model_.wte_, P + model_.wpe_ + position_ * int64_t{C}, 1,
                            n, C, V);
  for (int l = 0; l < cfg.n_layer; l++) {
    const GPT2Model::LayerOffsets& o = model_.layer_offsets_[l];
    layers::layernorm_forward(ln, mean, rstd, x, P + o.ln1_w, P + o.ln1_b, N, C, eps);
    model_.linear(qkv, ln, o.qkv_w, o.qkv_b, N, C, 3 * C);
    for (int64_t t = 0; t < N; t++) {
      const float* row = qkv + t * 3 * C;
      states_[l]->append(row + C, row + 2 * C);
      states_[l]->attend(row, att + t * C);
    }
    model_.linear(x, att, o.attproj_w, o.attproj_b, N, C, C, true);
    layers::layernorm_forward(ln, mean, rstd, x, P + o.ln2_w, P + o.ln2_b, N, C, eps);
    model_.linear(fc, ln, o.fc_w, o.fc_b, N, C, 4 * C);
    layers::gelu_forward(fc, fc, N * 4 * C);
    model_.linear(x, fc, o.fcproj_w, o.fcproj_b, N, 4 * C, C, true);
  }
  layers::layernorm_forward(ln, mean, rstd, x, P + model_.lnf_w_, P + model_.lnf_b_, N, C, eps);
  float* logits = fit(b.nlogits, N * V);
  // The same digital layers as forward() and step(): packed bf16/q8 copies when the model has them.
  if (const PackedMatrix* head = model_.packed(model_.wte_)) {
    packed_matmul(logits, ln, *head, N, false);
  } else {
    blas::gemm_nt(n, V, C, ln, C, P + model_.wte_, C, logits, V);
  }
  position_ += n;
  return logits;
}

const float* DecodeSession::step(int32_t token) {
  const GPT2Config& cfg = model_.config();
  const int C = cfg.n_embd, V = cfg.vocab_size;
  require(token >= 0 && token < V, "decode: token " + std::to_string(token) +
                                       " is outside the vocabulary (size " + std::to_string(V) +
                                       ")");
  require(position_ < cfg.block_size, "decode: position " + std::to_string(position_) +
                                          " reaches the model's block_size " +
                                          std::to_string(cfg.block_size));
  // Matrix-vector products run on OpenBLAS's pool and everything else here is serial: a second
  // (OpenMP) pool alternating with it was measured to slow decode 2-6x on a loaded machine
  // (bench/README.md).
  Buffers& b = *buffers_;
  const float* P = model_.param_data();
  const float eps = cfg.layer_norm_epsilon;
  float* x = b.x.data();
  const int32_t pos = static_cast<int32_t>(position_);
  layers::embedding_forward(x, &token, P + model_.wte_, P + model_.wpe_ + pos * int64_t{C}, 1, 1, C,
                            V);
  for (int l = 0; l < cfg.n_layer; l++) {
    const GPT2Model::LayerOffsets& o = model_.layer_offsets_[l];
    layers::layernorm_forward(b.ln.data(), &b.mean, &b.rstd, x, P + o.ln1_w, P + o.ln1_b, 1, C,
                              eps);
    std::copy(P + o.qkv_b, P + o.qkv_b + 3 * C, b.qkv.begin());
    model_.linear_one(b.qkv.data(), b.ln.data(), o.qkv_w, C, 3 * C);
    states_[l]->append(b.qkv.data() + C, b.qkv.data() + 2 * C);
    states_[l]->attend(b.qkv.data(), b.att.data());
    for (int c = 0; c < C; c++) x[c] += P[o.attproj_b + c];
    model_.linear_one(x, b.att.data(), o.attproj_w, C, C);
    layers::layernorm_forward(b.ln.data(), &b.mean, &b.rstd, x, P + o.ln2_w, P + o.ln2_b, 1, C,
                              eps);
    std::copy(P + o.fc_b, P + o.fc_b + 4 * C, b.fc.begin());
    model_.linear_one(b.fc.data(), b.ln.data(), o.fc_w, C, 4 * C);
    layers::gelu_forward(b.fc.data(), b.fc.data(), 4 * C);
    for (int c = 0; c < C; c++) x[c] += P[o.fcproj_b + c];
    model_.linear_one(x, b.fc.data(), o.fcproj_w, 4 * C, C);
  }
  layers::layernorm_forward(b.ln.data(), &b.mean, &b.rstd, x, P + model_.lnf_w_, P + model_.lnf_b_,
                            1, C, eps);
  if (const PackedMatrix* head = model_.packed(model_.wte_)) {
    head->gemv(b.ln.data(), b.logits.data(), false);
  } else {
    blas::gemv_n(V, C, P + model_.wte_, b.ln.data(), b.logits.data());
  }
  position_++;
  return b.logits.data();
}

}  // namespace gaincell
