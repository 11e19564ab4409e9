#include "gaincell/model/gpt2.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <random>
#include <string>

#include "gaincell/core/blas.h"
#include "gaincell/core/error.h"
#include "gaincell/core/huge_pages.h"
#include "gaincell/core/json.h"
#include "gaincell/core/spin_barrier.h"
#include "gaincell/model/layers.h"
#include "gaincell/model/memory_estimate.h"

namespace gaincell {

using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// Configuration

namespace {

bool is_known_model_type(const std::string& t) {
  return t == "gpt2" || t == "llama" || t == "mistral" || t == "qwen2";
}

}  // namespace

void GPT2Config::validate() const {
  auto positive = [](int value, const char* field) {
    require(value > 0,
            std::string("model config: ") + field + " must be > 0, got " + std::to_string(value));
  };
  require(is_known_model_type(model_type),
          "model config: model_type \"" + model_type +
              "\" is not supported (known: gpt2, llama, mistral, qwen2)");
  const bool gpt2 = is_gpt2();
  positive(n_layer, gpt2 ? "n_layer" : "num_hidden_layers");
  positive(n_head, gpt2 ? "n_head" : "num_attention_heads");
  positive(n_embd, gpt2 ? "n_embd" : "hidden_size");
  positive(block_size, gpt2 ? "n_positions (block_size)" : "max_position_embeddings");
  positive(vocab_size, "vocab_size");
  require(n_kv_head >= 0 && head_size >= 0 && intermediate_size >= 0 && sliding_window >= 0 &&
              max_window_layers >= 0,
          "model config: num_key_value_heads, head_dim, intermediate_size, sliding_window and "
          "max_window_layers must be >= 0");
  if (head_size == 0) {
    require(n_embd % n_head == 0,
            std::string("model config: ") + (gpt2 ? "n_embd (" : "hidden_size (") +
                std::to_string(n_embd) + ") must be divisible by " +
                (gpt2 ? "n_head (" : "num_attention_heads (") + std::to_string(n_head) + ")");
  }
  require(n_head % kv_heads() == 0,
          "model config: num_key_value_heads (" + std::to_string(kv_heads()) +
              ") must divide num_attention_heads (" + std::to_string(n_head) + ")");
  if (gpt2) {
    require(n_kv_head == 0 || n_kv_head == n_head,
            "model config: GPT-2 has no grouped-query "
            "attention (n_kv_head must equal n_head)");
    require(head_size == 0 || head_size * n_head == n_embd,
            "model config: GPT-2 heads must split n_embd");
    require(tie_word_embeddings && qkv_bias && o_bias && mlp_bias && sliding_window == 0,
            "model config: GPT-2 has tied embeddings, biases and no sliding window");
  } else {
    require(head_dim() % 2 == 0, "model config: head_dim must be even for rotary embeddings, got " +
                                     std::to_string(head_dim()));
    require(std::isfinite(rope_theta) && rope_theta > 0.0,
            "model config: rope_theta must be a positive finite number");
    const RopeScaling& r = rope_scaling;
    require(r.type == "default" || r.type == "llama3",
            "model config: rope_scaling type \"" + r.type +
                "\" is not supported (known: default, llama3)");
    if (r.type == "llama3") {
      require(r.factor > 0.0 && r.low_freq_factor > 0.0 && r.high_freq_factor > r.low_freq_factor &&
                  r.original_max_position_embeddings > 0,
              "model config: rope_scaling llama3 needs factor > 0, 0 < low_freq_factor < "
              "high_freq_factor and original_max_position_embeddings > 0");
    }
  }
  require(std::isfinite(layer_norm_epsilon) && layer_norm_epsilon > 0.0f,
          std::string("model config: ") + (gpt2 ? "layer_norm_epsilon" : "rms_norm_eps") +
              " must be a positive finite number");
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

namespace {

const char* architecture_name(const std::string& model_type) {
  if (model_type == "llama") return "LlamaForCausalLM";
  if (model_type == "mistral") return "MistralForCausalLM";
  if (model_type == "qwen2") return "Qwen2ForCausalLM";
  return "GPT2LMHeadModel";
}

json llama_family_json(const GPT2Config& c) {
  json j;
  j["model_type"] = c.model_type;
  j["architectures"] = {architecture_name(c.model_type)};
  j["hidden_act"] = "silu";
  j["hidden_size"] = c.n_embd;
  j["intermediate_size"] = c.mlp_width();
  j["num_hidden_layers"] = c.n_layer;
  j["num_attention_heads"] = c.n_head;
  j["num_key_value_heads"] = c.kv_heads();
  j["head_dim"] = c.head_dim();
  j["max_position_embeddings"] = c.block_size;
  j["vocab_size"] = c.vocab_size;
  j["rms_norm_eps"] = c.layer_norm_epsilon;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling.type == "default") {
    j["rope_scaling"] = nullptr;
  } else {
    const RopeScaling& r = c.rope_scaling;
    j["rope_scaling"] = {{"rope_type", r.type},
                         {"factor", r.factor},
                         {"low_freq_factor", r.low_freq_factor},
                         {"high_freq_factor", r.high_freq_factor},
                         {"original_max_position_embeddings", r.original_max_position_embeddings}};
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.model_type == "llama") {
    j["attention_bias"] = c.qkv_bias;
    j["mlp_bias"] = c.mlp_bias;
  } else if (c.model_type == "mistral") {
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
  } else if (c.model_type == "qwen2") {
    j["use_sliding_window"] = c.sliding_window > 0;
    j["sliding_window"] = c.sliding_window > 0 ? json(c.sliding_window) : json(nullptr);
    j["max_window_layers"] = c.max_window_layers;
  }
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
  j["torch_dtype"] = "float32";
  return j;
}

}  // namespace

json GPT2Config::to_json() const {
  json j;
  if (is_gpt2()) {
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
  } else {
    j = llama_family_json(*this);
  }
  j["gaincell_attention"] = attention;
  j["gaincell_window"] = window;
  j["gaincell_hw"] = hw.to_json();
  if (tokenizer != "gpt2-bpe") j["gaincell_tokenizer"] = tokenizer;
  return j;
}

namespace {

int read_int(const json& j, const char* key, int fallback) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  return json_int_or<int>(j, key, fallback, "model config");
}

double read_number(const json& j, const char* key, double fallback) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  require(j.at(key).is_number(), std::string("model config: '") + key + "' must be a number");
  return j.at(key).get<double>();
}

bool read_bool(const json& j, const char* key, bool fallback) {
  if (!j.contains(key) || j.at(key).is_null()) return fallback;
  require(j.at(key).is_boolean(), std::string("model config: '") + key + "' must be true or false");
  return j.at(key).get<bool>();
}

int require_int(const json& j, const char* key, const std::string& model_type) {
  require(j.contains(key) && !j.at(key).is_null(),
          std::string("model config: missing key '") + key + "' (model_type " + model_type + ")");
  return read_int(j, key, 0);
}

// A token id key: an integer, or a list of them (the first one is kept), or null.
std::optional<int> read_token_id(const json& j, const char* key) {
  if (!j.contains(key) || j.at(key).is_null()) return std::nullopt;
  const json& v = j.at(key);
  if (v.is_array() && !v.empty() && v[0].is_number_integer()) return v[0].get<int>();
  require(v.is_number_integer(),
          std::string("model config: '") + key + "' must be an integer token id");
  return v.get<int>();
}

RopeScaling read_rope_scaling(const json& j) {
  RopeScaling r;
  if (!j.contains("rope_scaling") || j["rope_scaling"].is_null()) return r;
  const json& s = j["rope_scaling"];
  require(s.is_object(), "model config: 'rope_scaling' must be an object or null");
  const char* type_key = s.contains("rope_type") ? "rope_type" : "type";
  require(s.contains(type_key) && s[type_key].is_string(),
          "model config: 'rope_scaling' needs a string 'rope_type'");
  r.type = s[type_key].get<std::string>();
  r.factor = read_number(s, "factor", r.factor);
  r.low_freq_factor = read_number(s, "low_freq_factor", r.low_freq_factor);
  r.high_freq_factor = read_number(s, "high_freq_factor", r.high_freq_factor);
  r.original_max_position_embeddings =
      read_int(s, "original_max_position_embeddings", r.original_max_position_embeddings);
  return r;
}

// The Llama family's keys (Hugging Face LlamaConfig / MistralConfig / Qwen2Config). The shape keys
// are required: a config without them is not a usable model description.
void read_llama_family(const json& j, GPT2Config& c) {
  const std::string& t = c.model_type;
  c.n_embd = require_int(j, "hidden_size", t);
  c.intermediate_size = require_int(j, "intermediate_size", t);
  c.n_layer = require_int(j, "num_hidden_layers", t);
  c.n_head = require_int(j, "num_attention_heads", t);
  c.vocab_size = require_int(j, "vocab_size", t);
  c.n_kv_head = read_int(j, "num_key_value_heads", c.n_head);
  c.head_size = read_int(j, "head_dim", 0);
  c.block_size = read_int(j, "max_position_embeddings", 2048);
  c.layer_norm_epsilon = static_cast<float>(read_number(j, "rms_norm_eps", 1e-6));
  c.rope_theta = read_number(j, "rope_theta", 10000.0);
  c.rope_scaling = read_rope_scaling(j);
  if (j.contains("hidden_act")) {
    require(j["hidden_act"].is_string() && j["hidden_act"] == "silu",
            "model config: hidden_act must be \"silu\" (SwiGLU)");
  }
  c.tie_word_embeddings = read_bool(j, "tie_word_embeddings", false);
  if (t == "llama") {
    c.qkv_bias = c.o_bias = read_bool(j, "attention_bias", false);
    c.mlp_bias = read_bool(j, "mlp_bias", false);
  } else if (t == "qwen2") {
    c.qkv_bias = true;  // Qwen2: q/k/v biases, none on o_proj and the MLP
    c.o_bias = c.mlp_bias = false;
  } else {
    c.qkv_bias = c.o_bias = c.mlp_bias = false;
  }
  if (t == "mistral") {
    c.sliding_window = read_int(j, "sliding_window", 0);
  } else if (t == "qwen2" && read_bool(j, "use_sliding_window", false)) {
    c.sliding_window = read_int(j, "sliding_window", 0);
    c.max_window_layers = read_int(j, "max_window_layers", 0);
  }
  c.bos_token_id = read_token_id(j, "bos_token_id");
  c.eos_token_id = read_token_id(j, "eos_token_id");
}

}  // namespace

GPT2Config GPT2Config::from_json(const json& j) {
  require(j.is_object(), "model config: expected a JSON object");
  // Keys HF configs carry that this engine does not use (dropouts, task heads, ...) are ignored.
  // GPT-2: missing keys take the GPT-2 (124M) defaults, as in Hugging Face.
  GPT2Config c;
  if (j.contains("model_type")) {
    require(j["model_type"].is_string(), "model config: 'model_type' must be a string");
    c.model_type = j["model_type"].get<std::string>();
    require(is_known_model_type(c.model_type),
            "model config: model_type \"" + c.model_type +
                "\" is not supported (known: gpt2, llama, mistral, qwen2)");
  }
  if (c.is_gpt2()) {
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
  } else {
    read_llama_family(j, c);
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
  } else if (name == "llama-tiny") {
    set(2, 4, 32);
    c.model_type = "llama";
    c.n_kv_head = 2;
    c.intermediate_size = 64;
    c.block_size = 32;
    c.vocab_size = 101;
    c.tie_word_embeddings = false;
    c.qkv_bias = c.o_bias = c.mlp_bias = false;
    c.layer_norm_epsilon = 1e-5f;
  } else if (name == "smollm-135m") {  // SmolLM-135M's shape (random weights: benchmarks)
    set(30, 9, 576);
    c.model_type = "llama";
    c.n_kv_head = 3;
    c.intermediate_size = 1536;
    c.block_size = 2048;
    c.vocab_size = 49152;
    c.qkv_bias = c.o_bias = c.mlp_bias = false;
  } else {
    throw Error("unknown model name '" + name +
                "' (known: gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, llama-tiny, "
                "smollm-135m)");
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// Parameter table: Hugging Face names and shapes, one contiguous buffer.

// Offsets of one block's tensors. GPT-2 names: ln1 = ln_1, qkv = attn.c_attn, attproj =
// attn.c_proj, ln2 = ln_2, fc = mlp.c_fc, fcproj = mlp.c_proj. Llama family: ln1 =
// input_layernorm, qkv = q_proj|k_proj|v_proj (adjacent: one fused [(H + 2 Hkv) D, C] matrix),
// attproj = o_proj, ln2 = post_attention_layernorm, fc = gate_proj|up_proj (fused [2 I, C]),
// fcproj = down_proj. kNone: the tensor does not exist (RMSNorm bias, absent biases).
struct GPT2Model::LayerOffsets {
  size_t ln1_w, ln1_b, qkv_w, qkv_b, attproj_w, attproj_b, ln2_w, ln2_b, fc_w, fc_b, fcproj_w,
      fcproj_b;
  std::vector<size_t> attention_params;  // indices into params_ of the variant's ParamSpecs
};

std::string GPT2Model::layer_prefix(int layer) const {
  return (config_.is_gpt2() ? "h." : "model.layers.") + std::to_string(layer) + ".";
}

void GPT2Model::build_param_table() {
  const int64_t C = config_.n_embd, V = config_.vocab_size, T = config_.block_size;
  const int64_t D = config_.head_dim(), H = config_.n_head, Hkv = config_.kv_heads();
  const int64_t I = config_.mlp_width();
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
  auto add_if = [&](bool present, const std::string& name, std::vector<int64_t> shape) {
    return present ? add(name, std::move(shape)) : kNone;
  };
  const bool gpt2 = config_.is_gpt2();
  if (gpt2) {
    wte_ = add("wte.weight", {V, C});
    wpe_ = add("wpe.weight", {T, C});
  } else {
    wte_ = add("model.embed_tokens.weight", {V, C});
  }
  for (int l = 0; l < config_.n_layer; l++) {
    const std::string h = layer_prefix(l);
    LayerOffsets o;
    if (gpt2) {
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
    } else {
      const bool qb = config_.qkv_bias, mb = config_.mlp_bias;
      o.ln1_w = add(h + "input_layernorm.weight", {C});
      o.ln1_b = kNone;
      o.qkv_w = add(h + "self_attn.q_proj.weight", {H * D, C});
      add(h + "self_attn.k_proj.weight", {Hkv * D, C});
      add(h + "self_attn.v_proj.weight", {Hkv * D, C});
      o.qkv_b = add_if(qb, h + "self_attn.q_proj.bias", {H * D});
      add_if(qb, h + "self_attn.k_proj.bias", {Hkv * D});
      add_if(qb, h + "self_attn.v_proj.bias", {Hkv * D});
      o.attproj_w = add(h + "self_attn.o_proj.weight", {C, H * D});
      o.attproj_b = add_if(config_.o_bias, h + "self_attn.o_proj.bias", {C});
      o.ln2_w = add(h + "post_attention_layernorm.weight", {C});
      o.ln2_b = kNone;
      o.fc_w = add(h + "mlp.gate_proj.weight", {I, C});
      add(h + "mlp.up_proj.weight", {I, C});
      o.fc_b = add_if(mb, h + "mlp.gate_proj.bias", {I});
      add_if(mb, h + "mlp.up_proj.bias", {I});
      o.fcproj_w = add(h + "mlp.down_proj.weight", {C, I});
      o.fcproj_b = add_if(mb, h + "mlp.down_proj.bias", {C});
    }
    for (const ParamSpec& spec : attention_[l]->param_specs()) {
      o.attention_params.push_back(params_.size());
      add(h + spec.name, spec.shape, spec.trainable, spec.weight_decay ? 1 : 0);
      params_.back().attention_extra = true;
    }
    layer_offsets_.push_back(std::move(o));
  }
  if (gpt2) {
    lnf_w_ = add("ln_f.weight", {C});
    lnf_b_ = add("ln_f.bias", {C});
  } else {
    lnf_w_ = add("model.norm.weight", {C});
    lnf_b_ = kNone;
  }
  lm_head_ = config_.tie_word_embeddings ? wte_ : add("lm_head.weight", {V, C});
  num_params_ = offset;
}

// Rotary tables as Hugging Face computes them: inv_freq_i = theta^(-2i/D) in float32 (rescaled for
// rope_scaling llama3), the angle pos * inv_freq_i in float32, its cos and sin.
void GPT2Model::build_rope_tables() {
  if (!config_.uses_rope()) return;
  const int D = config_.head_dim(), half = D / 2;
  std::vector<float> inv_freq(half);
  for (int i = 0; i < half; i++) {
    inv_freq[i] = static_cast<float>(
        1.0 / std::pow(config_.rope_theta, static_cast<double>(2 * i) / static_cast<double>(D)));
  }
  const RopeScaling& r = config_.rope_scaling;
  if (r.type == "llama3") {
    const double old_len = r.original_max_position_embeddings;
    const double low_wavelen = old_len / r.low_freq_factor;
    const double high_wavelen = old_len / r.high_freq_factor;
    for (float& f : inv_freq) {
      const double wavelen = 2.0 * M_PI / f;
      if (wavelen < high_wavelen) continue;  // high frequencies: unchanged
      if (wavelen > low_wavelen) {           // low frequencies: divided by the factor
        f = static_cast<float>(f / r.factor);
        continue;
      }
      const double smooth =
          (old_len / wavelen - r.low_freq_factor) / (r.high_freq_factor - r.low_freq_factor);
      f = static_cast<float>((1.0 - smooth) * f / r.factor + smooth * f);
    }
  }
  const int positions = config_.block_size;
  rope_cos_.resize(static_cast<size_t>(positions) * half);
  rope_sin_.resize(rope_cos_.size());
  for (int p = 0; p < positions; p++) {
    for (int i = 0; i < half; i++) {
      const float angle = static_cast<float>(p) * inv_freq[i];
      rope_cos_[static_cast<size_t>(p) * half + i] = static_cast<float>(std::cos(angle));
      rope_sin_[static_cast<size_t>(p) * half + i] = static_cast<float>(std::sin(angle));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Activations: one allocation for the forward pass, one for the backward scratch, sized for the
// largest B*T seen so far (pointers stay valid while B*T does not grow).

struct GPT2Model::Activations {
  int64_t capacity = 0;  // B*T the buffers were carved for
  int B = 0, T = 0;
  bool has_targets = false, training = false, logits_valid = false, logits_kept = false;
  int64_t loss_count = 0;
  std::vector<int32_t> inputs, targets;
  std::unique_ptr<float[]> forward_buffer, backward_buffer;
  size_t forward_floats = 0, backward_floats = 0;
  // The [B*T, V] logits are materialised by inference forwards, and by training forwards when
  // they fit training_logits_budget_ (logits_kept: backward uses them in place); otherwise a
  // training forward computes the loss `vocab_chunk_` vocabulary columns at a time into
  // vocab_chunk and backward recomputes them.
  std::unique_ptr<float[]> logits_buffer, vocab_chunk;
  int64_t logits_capacity = 0, vocab_chunk_capacity = 0;
  // Forward (kept for backward). Per layer l: res_in(l) = l == 0 ? encoded : res3[l-1].
  float* encoded;
  std::vector<float*> qkvh, atty, res2, fch, res3, ln1_stats, ln2_stats;  // stats: mean | rstd
  float *lnf, *lnf_stats, *lse, *losses, *logits = nullptr;
  // Forward scratch (gelu: the MLP activation's output, GELU or SwiGLU).
  float *ln, *qkv, *atto, *gelu;
  // Backward scratch. datty aliases dln and dheads aliases dfch: their lifetimes do not overlap.
  float *dres, *dln, *datty, *dfch, *dheads, *dact;
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

// Widths of the per-token activation rows (GPT-2: QKV = 3C, AO = C, F = A = 4C; the Llama family:
// QKV = (H + 2 Hkv) D, AO = H D, F = 2 I for the fused gate|up, A = I).
namespace {
struct RowWidths {
  int64_t C, QKV, AO, F, A;
  explicit RowWidths(const GPT2Config& c)
      : C(c.n_embd),
        QKV(static_cast<int64_t>(c.n_head + 2 * c.kv_heads()) * c.head_dim()),
        AO(static_cast<int64_t>(c.n_head) * c.head_dim()),
        F(c.is_gpt2() ? 4 * c.n_embd : 2 * int64_t{c.mlp_width()}),
        A(c.is_gpt2() ? 4 * c.n_embd : c.mlp_width()) {}
};
}  // namespace

void GPT2Model::ensure_activations(int B, int T) {
  Activations& a = *acts_;
  a.B = B;
  a.T = T;
  const int64_t BT = static_cast<int64_t>(B) * T;
  if (BT <= a.capacity && a.forward_buffer) return;
  const int64_t L = config_.n_layer;
  const RowWidths w(config_);
  auto carve = [&](float* base) {
    Carver c(base);
    a.encoded = c.take(BT * w.C);
    a.qkvh.assign(L, nullptr);
    a.atty = a.res2 = a.fch = a.res3 = a.ln1_stats = a.ln2_stats = a.qkvh;
    for (int64_t l = 0; l < L; l++) {
      a.qkvh[l] = c.take(BT * w.QKV);
      a.atty[l] = c.take(BT * w.AO);
      a.res2[l] = c.take(BT * w.C);
      a.fch[l] = c.take(BT * w.F);
      a.res3[l] = c.take(BT * w.C);
      a.ln1_stats[l] = c.take(2 * BT);
      a.ln2_stats[l] = c.take(2 * BT);
    }
    a.lnf = c.take(BT * w.C);
    a.lnf_stats = c.take(2 * BT);
    a.lse = c.take(BT);
    a.losses = c.take(BT);
    a.ln = c.take(BT * w.C);
    a.qkv = c.take(BT * w.QKV);
    a.atto = c.take(BT * w.AO);
    a.gelu = c.take(BT * w.A);
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
  const int64_t BT = a.capacity;
  const RowWidths w(config_);
  const bool gpt2 = config_.is_gpt2();
  auto carve = [&](float* base) {
    Carver c(base);
    a.dres = c.take(BT * w.C);
    a.dln = c.take(BT * std::max(w.C, w.AO));
    a.dfch = c.take(BT * std::max(w.F, w.QKV));
    // GPT-2's GELU backward runs in place on dfch; SwiGLU's input gradient is twice as wide as
    // its output gradient, which therefore needs its own buffer.
    a.dact = gpt2 ? a.dfch : c.take(BT * w.A);
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

GPT2Model::GPT2Model(const GPT2Config& config, WeightFormat packed_load)
    : config_(config), acts_(new Activations) {
  // The configuration the model reports (and save_model records) is the hardware that runs.
  config_.hw = attention_hardware(config_.attention, config_.hw);
  config_.validate();
  // Before anything is allocated: an absurd configuration is an error, not an OOM kill.
  char count[32];
  std::snprintf(count, sizeof count, "%.3g", estimated_param_count(config_));
  require_memory(
      estimated_model_bytes(config_, false, packed_load), "the model",
      std::string(count) + (packed_load == WeightFormat::kF32
                                ? " float32 parameters"
                                : " parameters, the matrices as " + to_string(packed_load)),
      estimated_model_address_space(config_, packed_load));
  AttentionContext ctx;
  ctx.n_head = config_.n_head;
  ctx.n_kv_head = config_.kv_heads();
  ctx.head_dim = config_.head_dim();
  ctx.block_size = config_.block_size;
  ctx.window = config_.window;
  ctx.hw = config_.hw;
  for (int l = 0; l < config_.n_layer; l++) {
    ctx.layer = l;
    ctx.model_window = config_.layer_window(l);
    attention_.push_back(make_attention(config_.attention, ctx));
  }
  build_param_table();
  build_rope_tables();
  // calloc: the zero pages stay unbacked until written, so the matrices of a model loaded
  // straight into packed storage (begin_packed_load) cost no memory.
  param_data_.reset(static_cast<float*>(std::calloc(num_params_, sizeof(float))));
  if (!param_data_) throw std::bad_alloc();
  // fp32 decode streams these in place (core/huge_pages.h). Not for a packed load: a huge page
  // around each norm or bias written would back the unused matrices beside it.
  if (packed_load == WeightFormat::kF32) advise_huge_pages(param_data_.get(), num_params_ * 4);
  // A variant's trainable tensors need their gradient storage at bind time (bind_params is
  // called once), so such models allocate gradients up front; plain GPT-2 allocates them lazily.
  bool any_trainable_spec = false;
  for (const LayerOffsets& o : layer_offsets_) {
    for (size_t idx : o.attention_params) any_trainable_spec |= params_[idx].trainable;
  }
  if (any_trainable_spec) allocate_grads();
  bind_attention_params();
  initialise_params(/*random=*/false, 0);
  if (packed_load != WeightFormat::kF32) begin_packed_load(packed_load);
}

GPT2Model::~GPT2Model() = default;

void GPT2Model::FreeDeleter::operator()(float* p) const {
  std::free(p);
}

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
  require_fp32_weights("init_random");
  initialise_params(true, seed);
}

// Without `random` (the constructor) the buffer is freshly calloc'd: the zeros are already there
// and are not written again, so pages nothing else writes stay unbacked (begin_packed_load).
void GPT2Model::initialise_params(bool random, uint64_t seed) {
  // Box-Muller over mt19937_64 so the values do not depend on the standard library.
  std::mt19937_64 rng(seed);
  auto uniform = [&rng] { return (static_cast<double>(rng() >> 11) + 0.5) * 0x1.0p-53; };
  auto fill_normal = [&](const ParamInfo& p, double std) {
    float* w = param_data_.get() + p.offset;
    if (!random) return;                        // already zero
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
        if (random) std::fill(w, w + p.numel, 0.0f);  // else already zero
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
        p.name == "ln_f.weight" || ends_with(p.name, "norm.weight")) {
      std::fill(w, w + p.numel, 1.0f);
    } else if (p.shape.size() == 1) {
      if (random) std::fill(w, w + p.numel, 0.0f);  // biases (else already zero)
    } else if (config_.is_gpt2() && ends_with(p.name, "c_proj.weight")) {
      fill_normal(p, residual_std);  // residual projections, GPT-2 paper
    } else {
      fill_normal(p, 0.02);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Architecture-dependent pieces

const float* GPT2Model::tensor_or_null(size_t offset) const {
  return offset == kNone ? nullptr : param_data_.get() + offset;
}

namespace {
// A rotary table, or null where the model has no rotary embedding (GPT-2).
const float* rope_table(const GPT2Config& config, const std::vector<float>& table) {
  return config.uses_rope() ? table.data() : nullptr;
}
}  // namespace

// stats: [mean (N) | rstd (N)]; RMSNorm uses only rstd.
void GPT2Model::norm_forward(float* out, float* stats, const float* in, size_t w, size_t b,
                             int64_t N) const {
  const float* P = param_data_.get();
  const int C = config_.n_embd;
  if (config_.is_gpt2()) {
    layers::layernorm_forward(out, stats, stats + N, in, P + w, P + b, N, C,
                              config_.layer_norm_epsilon);
  } else {
    layers::rmsnorm_forward(out, stats + N, in, P + w, N, C, config_.layer_norm_epsilon);
  }
}

void GPT2Model::norm_recompute(float* out, const float* in, const float* stats, size_t w, size_t b,
                               int64_t N) const {
  const float* P = param_data_.get();
  const int C = config_.n_embd;
  if (config_.is_gpt2()) {
    layers::layernorm_recompute(out, in, stats, stats + N, P + w, P + b, N, C);
  } else {
    layers::rmsnorm_recompute(out, in, stats + N, P + w, N, C);
  }
}

void GPT2Model::norm_backward(float* dres, float* G, const float* dout, const float* in,
                              const float* stats, size_t w, size_t b, int64_t N) const {
  const float* P = param_data_.get();
  const int C = config_.n_embd;
  if (config_.is_gpt2()) {
    layers::layernorm_backward(dres, G + w, G + b, dout, in, P + w, stats, stats + N, N, C);
  } else {
    layers::rmsnorm_backward(dres, G + w, dout, in, P + w, stats + N, N, C);
  }
}

void GPT2Model::linear(float* out, const float* in, size_t w, size_t b, int64_t N, int IN, int OUT,
                       bool accumulate) const {
  if (const PackedMatrix* m = packed(w)) {  // reduced-precision inference weights
    packed_matmul(out, in, *m, N, accumulate);
    if (b != kNone) layers::add_bias(out, tensor_or_null(b), N, OUT);
    return;
  }
  const float* W = param_data_.get() + w;
  if (config_.is_gpt2()) {
    layers::linear_forward(out, in, W, tensor_or_null(b), N, IN, OUT, accumulate);
  } else {
    layers::linear_nt_forward(out, in, W, tensor_or_null(b), N, IN, OUT, accumulate);
  }
}

void GPT2Model::linear_grad(float* din, float* G, const float* dout, const float* in, size_t w,
                            size_t b, int64_t N, int IN, int OUT) const {
  const float* W = param_data_.get() + w;
  float* dbias = b == kNone ? nullptr : G + b;
  if (config_.is_gpt2()) {
    layers::linear_backward(din, G + w, dbias, dout, in, W, N, IN, OUT);
  } else {
    layers::linear_nt_backward(din, G + w, dbias, dout, in, W, N, IN, OUT);
  }
}

// MLP activation: GELU over [N, 4C] (GPT-2) or SwiGLU of the fused gate|up [N, 2I] -> [N, I].
void GPT2Model::activation(float* out, const float* pre, int64_t N) const {
  if (config_.is_gpt2()) {
    layers::gelu_forward(out, pre, N * 4 * config_.n_embd);
  } else {
    layers::swiglu_forward(out, pre, N, config_.mlp_width());
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
  if (training) {
    require_fp32_weights("forward (training)");
    require(weight_format_ == WeightFormat::kF32,
            "forward: training needs f32 weights (the model holds " + to_string(weight_format_) +
                " inference weights)");
  }
  ensure_activations(B, T);
  Activations& a = *acts_;
  const RowWidths w(config_);
  const int C = config_.n_embd, V = config_.vocab_size, H = config_.n_head,
            Hkv = config_.kv_heads(), D = config_.head_dim();
  const int64_t BT = static_cast<int64_t>(B) * T;
  const float* P = param_data_.get();
  a.inputs.assign(inputs, inputs + BT);
  a.has_targets = false;
  a.logits_valid = false;
  a.logits_kept = false;
  a.training = training;

  layers::embedding_forward(a.encoded, inputs, P + wte_, tensor_or_null(wpe_), B, T, C, V);
  for (int l = 0; l < config_.n_layer; l++) {
    const LayerOffsets& o = layer_offsets_[l];
    const float* res_in = l == 0 ? a.encoded : a.res3[l - 1];
    float* q = a.qkvh[l];
    float* k = q + BT * H * D;
    float* v = k + BT * Hkv * D;
    // x + attn(norm_1(x))  (spec §3.1)
    norm_forward(a.ln, a.ln1_stats[l], res_in, o.ln1_w, o.ln1_b, BT);
    linear(a.qkv, a.ln, o.qkv_w, o.qkv_b, BT, C, static_cast<int>(w.QKV), false);
    // Heads, with the digital rotation (Llama family) before the attention variant sees q and k.
    layers::split_qkv_heads(q, k, v, a.qkv, B, T, H, Hkv, D, rope_table(config_, rope_cos_),
                            rope_table(config_, rope_sin_), 0);
    attention_[l]->forward(q, k, v, a.atto, B, T, training);
    layers::merge_heads(a.atty[l], a.atto, B, T, H, D);
    // Residual and bias in one sweep; the projection's GEMM adds to them.
    layers::residual_with_bias(a.res2[l], res_in, tensor_or_null(o.attproj_b), BT, C);
    linear(a.res2[l], a.atty[l], o.attproj_w, kNone, BT, static_cast<int>(w.AO), C, true);
    // x + mlp(norm_2(x))
    norm_forward(a.ln, a.ln2_stats[l], a.res2[l], o.ln2_w, o.ln2_b, BT);
    linear(a.fch[l], a.ln, o.fc_w, o.fc_b, BT, C, static_cast<int>(w.F), false);
    activation(a.gelu, a.fch[l], BT);
    layers::residual_with_bias(a.res3[l], a.res2[l], tensor_or_null(o.fcproj_b), BT, C);
    linear(a.res3[l], a.gelu, o.fcproj_w, kNone, BT, static_cast<int>(w.A), C, true);
  }
  norm_forward(a.lnf, a.lnf_stats, a.res3[config_.n_layer - 1], lnf_w_, lnf_b_, BT);
  // LM head (tied to the token embedding unless the config has a separate lm_head).
  layers::LossResult loss;
  if (training && targets != nullptr) {
    a.logits_kept = BT * V <= training_logits_budget_;
    if (a.logits_kept) {  // one chunk of the whole vocabulary, kept for backward()
      float* logits = ensure_buffer(a.logits_buffer, a.logits_capacity, BT * V);
      loss = layers::lm_head_loss_forward_chunked(a.losses, a.lse, logits, a.lnf, P + lm_head_,
                                                  targets, BT, C, V, V);
    } else {
      float* chunk =
          ensure_buffer(a.vocab_chunk, a.vocab_chunk_capacity, BT * std::min(vocab_chunk_, V));
      loss = layers::lm_head_loss_forward_chunked(a.losses, a.lse, chunk, a.lnf, P + lm_head_,
                                                  targets, BT, C, V, vocab_chunk_);
    }
  } else {
    a.logits = ensure_buffer(a.logits_buffer, a.logits_capacity, BT * V);
    if (const PackedMatrix* head = packed(lm_head_)) {
      packed_matmul(a.logits, a.lnf, *head, BT, false);
    } else {
      blas::gemm_nt(static_cast<int>(BT), V, C, a.lnf, C, P + lm_head_, C, a.logits, V);
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
  require_fp32_weights("backward()");
  require(weight_format_ == WeightFormat::kF32, "backward(): training needs f32 weights");
  ensure_backward_scratch();
  float* G = grad_data();
  const RowWidths w(config_);
  const int B = a.B, T = a.T, C = config_.n_embd, V = config_.vocab_size, H = config_.n_head,
            Hkv = config_.kv_heads(), D = config_.head_dim();
  const int QKV = static_cast<int>(w.QKV), AO = static_cast<int>(w.AO), F = static_cast<int>(w.F),
            A = static_cast<int>(w.A);
  const int64_t BT = static_cast<int64_t>(B) * T;
  const float* P = param_data_.get();

  if (a.logits_kept) {
    layers::lm_head_loss_backward_chunked(a.dln, G + lm_head_, a.logits_buffer.get(), a.lnf,
                                          P + lm_head_, a.targets.data(), a.lse, BT, C, V, V,
                                          a.loss_count, /*buffer_holds_logits=*/true);
  } else {
    float* chunk =
        ensure_buffer(a.vocab_chunk, a.vocab_chunk_capacity, BT * std::min(vocab_chunk_, V));
    layers::lm_head_loss_backward_chunked(a.dln, G + lm_head_, chunk, a.lnf, P + lm_head_,
                                          a.targets.data(), a.lse, BT, C, V, vocab_chunk_,
                                          a.loss_count);
  }
  std::memset(a.dres, 0, BT * C * sizeof(float));
  norm_backward(a.dres, G, a.dln, a.res3[config_.n_layer - 1], a.lnf_stats, lnf_w_, lnf_b_, BT);
  // Parameter layout (build_param_table): embeddings, block 0 .. block n-1, final norm, untied
  // head. A block's tensors are contiguous and final once its iteration below is done.
  auto block_begin = [&](int l) { return l < config_.n_layer ? layer_offsets_[l].ln1_w : lnf_w_; };
  if (grad_ready_hook_) grad_ready_hook_(lnf_w_, num_params_);

  for (int l = config_.n_layer - 1; l >= 0; l--) {
    const LayerOffsets& o = layer_offsets_[l];
    const float* res_in = l == 0 ? a.encoded : a.res3[l - 1];
    // MLP: res3 = res2 + proj(act(fc(norm_2(res2)))); act and norm_2 are recomputed.
    activation(a.gelu, a.fch[l], BT);
    linear_grad(a.dact, G, a.dres, a.gelu, o.fcproj_w, o.fcproj_b, BT, A, C);
    if (config_.is_gpt2()) {
      layers::gelu_backward(a.dfch, a.fch[l], a.dact, BT * F);  // dact aliases dfch
    } else {
      layers::swiglu_backward(a.dfch, a.fch[l], a.dact, BT, A);
    }
    norm_recompute(a.ln, a.res2[l], a.ln2_stats[l], o.ln2_w, o.ln2_b, BT);
    linear_grad(a.dln, G, a.dfch, a.ln, o.fc_w, o.fc_b, BT, C, F);
    norm_backward(a.dres, G, a.dln, a.res2[l], a.ln2_stats[l], o.ln2_w, o.ln2_b, BT);
    // Attention: res2 = res_in + proj(attn(rope(split(qkv(norm_1(res_in)))))).
    linear_grad(a.datty, G, a.dres, a.atty[l], o.attproj_w, o.attproj_b, BT, AO, C);
    layers::split_heads_one(a.atto, a.datty, B, T, H, D);
    const float* q = a.qkvh[l];
    const float* k = q + BT * H * D;
    const float* v = k + BT * Hkv * D;
    float* dq = a.dheads;
    float* dk = dq + BT * H * D;
    float* dv = dk + BT * Hkv * D;
    attention_[l]->backward(q, k, v, a.atto, dq, dk, dv, B, T);
    // The rotation is orthogonal: its backward rotates back (while the rows are gathered).
    layers::merge_qkv_heads(a.qkv, dq, dk, dv, B, T, H, Hkv, D, rope_table(config_, rope_cos_),
                            rope_table(config_, rope_sin_), 0);
    norm_recompute(a.ln, res_in, a.ln1_stats[l], o.ln1_w, o.ln1_b, BT);
    linear_grad(a.dln, G, a.qkv, a.ln, o.qkv_w, o.qkv_b, BT, C, QKV);
    norm_backward(a.dres, G, a.dln, res_in, a.ln1_stats[l], o.ln1_w, o.ln1_b, BT);
    if (grad_ready_hook_) grad_ready_hook_(block_begin(l), block_begin(l + 1));
  }
  layers::embedding_backward(G + wte_, wpe_ == kNone ? nullptr : G + wpe_, a.dres, a.inputs.data(),
                             B, T, C);
  if (grad_ready_hook_) grad_ready_hook_(0, block_begin(0));
  a.has_targets = false;  // one backward per forward
}

// ---------------------------------------------------------------------------------------------
// Digital linear layers and their reduced-precision weights

namespace {

// "parameter 'name', element i" for the float at `index` of the parameter data.
std::string parameter_element(const std::vector<ParamInfo>& params, size_t index) {
  for (const ParamInfo& p : params) {
    if (index >= p.offset && index - p.offset < static_cast<size_t>(p.numel))
      return "parameter '" + p.name + "', element " + std::to_string(index - p.offset);
  }
  return "parameter float " + std::to_string(index);
}

}  // namespace

void GPT2Model::set_weight_format(WeightFormat format) {
  if (!has_fp32_weights()) {
    if (format == weight_format_) return;  // already packed in this format
    require_fp32_weights("set_weight_format(" + to_string(format) + ")");
  }
  packed_.clear();
  weight_format_ = WeightFormat::kF32;
  if (format == WeightFormat::kF32) return;
  const RowWidths w(config_);
  const int C = static_cast<int>(w.C), QKV = static_cast<int>(w.QKV), AO = static_cast<int>(w.AO),
            F = static_cast<int>(w.F), A = static_cast<int>(w.A);
  const float* P = param_data_.get();
  // Packed into a new map that becomes the model's only when all matrices are done: a weight q8
  // cannot hold (an Error) leaves the model in fp32, with no packed matrices.
  std::unordered_map<size_t, PackedMatrix> packed;
  // Packed as the [out, in] matrix M of y = M x: Conv1D weights [in, out] from their transpose,
  // nn.Linear weights [out, in] as they are. A weight q8 cannot hold is named as an element of
  // its own parameter (the packer knows only M's row and column; M may be a transpose, or Llama's
  // fused q|k|v or gate|up, whose parameters lie one after the other).
  auto pack = [&](size_t offset, int out, int in, bool columns) {
    const int64_t n = static_cast<int64_t>(out) * in;
    if (format == WeightFormat::kQ8) {
      if (const int64_t i = first_q8_overflow(P + offset, n); i >= 0)
        throw_q8_weight_too_large(
            "set_weight_format(q8): " + parameter_element(params_, offset + i), P[offset + i]);
    }
    packed[offset] = columns ? PackedMatrix::from_columns(format, P + offset, out, in)
                             : PackedMatrix::from_rows(format, P + offset, out, in);
  };
  for (const LayerOffsets& o : layer_offsets_) {
    pack(o.qkv_w, QKV, C, config_.is_gpt2());
    pack(o.attproj_w, C, AO, config_.is_gpt2());
    pack(o.fc_w, F, C, config_.is_gpt2());
    pack(o.fcproj_w, C, A, config_.is_gpt2());
  }
  pack(lm_head_, config_.vocab_size, C, false);
  packed_ = std::move(packed);
  weight_format_ = format;
}

void GPT2Model::begin_packed_load(WeightFormat format) {
  require(format != WeightFormat::kF32, "begin_packed_load: f32 is not a packed format");
  require(packed_.empty() && has_fp32_weights() && acts_->forward_buffer == nullptr,
          "begin_packed_load: the model must be freshly constructed");
  const RowWidths w(config_);
  const int C = static_cast<int>(w.C), QKV = static_cast<int>(w.QKV), AO = static_cast<int>(w.AO),
            F = static_cast<int>(w.F), A = static_cast<int>(w.A);
  // The matrices set_weight_format builds, keyed by the same offsets (the first tensor of a
  // fused q|k|v or gate|up group).
  auto add = [&](size_t offset, int out, int in) {
    packed_[offset] = PackedMatrix::zeros(format, out, in);
    if (offset != wte_) fp32_absent_floats_ += static_cast<size_t>(out) * in;
  };
  for (const LayerOffsets& o : layer_offsets_) {
    add(o.qkv_w, QKV, C);
    add(o.attproj_w, C, AO);
    add(o.fc_w, F, C);
    add(o.fcproj_w, C, A);
  }
  add(lm_head_, config_.vocab_size, C);
  weight_format_ = format;
}

GPT2Model::PackedTarget GPT2Model::packed_target(const ParamInfo& p) {
  PackedTarget t;
  // Only during a packed load: packed copies made by set_weight_format come from the fp32
  // parameters, which a load fills.
  if (has_fp32_weights()) return t;
  for (auto& [offset, m] : packed_) {
    const size_t end = offset + static_cast<size_t>(m.rows()) * m.cols();
    if (p.offset < offset || p.offset >= end) continue;
    t.matrix = &m;
    t.first_row = static_cast<int>((p.offset - offset) / m.cols());
    // GPT-2's projections are Conv1D [in, out]; its LM head (wte) and every Llama-family matrix
    // are [out, in], the rows of M.
    t.columns = config_.is_gpt2() && offset != lm_head_;
    t.fp32_kept = offset == wte_;
    return t;
  }
  return t;
}

void GPT2Model::require_fp32_weights(const std::string& what) const {
  if (has_fp32_weights()) return;
  throw Error(what + " needs the fp32 weights, but this model was loaded with " +
              to_string(weight_format_) +
              " weights and no fp32 copy of its linear layers' matrices (load it with weights "
              "f32, e.g. --weights f32)");
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

// ---------------------------------------------------------------------------------------------
// Token-by-token decode

struct DecodeSession::Buffers {
  // fp32 decode's matrices: views of the parameters (no copy) by parameter offset, read by the
  // same team kernels as the packed formats (GPT-2's Conv1D weights as column views).
  std::unordered_map<size_t, PackedMatrix> f32_views;
  std::vector<float> x, ln, qkv, att, fc, act, logits;
  float stats[2] = {0.0f, 0.0f};  // [mean, rstd] of the one row
  // extend(): the same tensors for n rows, and per-row norm statistics [mean (n) | rstd (n)].
  std::vector<float> nx, nln, nqkv, natt, nfc, nact, nlogits, nstats;
};

std::unique_ptr<DecodeSession> GPT2Model::start_decoding(KvCacheFormat kv_cache) {
  return std::make_unique<DecodeSession>(*this, kv_cache);
}

DecodeSession::DecodeSession(GPT2Model& model, KvCacheFormat kv_cache)
    : model_(model), kv_cache_(kv_cache), buffers_(new Buffers) {
  const GPT2Config& c = model.config();
  for (int l = 0; l < c.n_layer; l++)
    states_.push_back(model.attention(l).make_decode_state(kv_cache));
  const RowWidths w(c);
  buffers_->x.resize(w.C);
  buffers_->ln.resize(w.C);
  buffers_->qkv.resize(w.QKV);
  buffers_->att.resize(w.AO);
  buffers_->fc.resize(w.F);
  buffers_->act.resize(w.A);
  buffers_->logits.resize(c.vocab_size);
  build_f32_views();
}

void DecodeSession::build_f32_views() {
  const GPT2Model& m = model_;
  const GPT2Config& c = m.config();
  const RowWidths w(c);
  const int C = static_cast<int>(w.C), QKV = static_cast<int>(w.QKV), AO = static_cast<int>(w.AO),
            F = static_cast<int>(w.F), A = static_cast<int>(w.A);
  const float* P = m.param_data();
  auto& views = buffers_->f32_views;
  // As set_weight_format packs them: M of y = M x is [out, in]; Conv1D weights are its transpose.
  auto view = [&](size_t offset, int out, int in) {
    views[offset] = c.is_gpt2() ? PackedMatrix::view_columns(P + offset, out, in)
                                : PackedMatrix::view_rows(P + offset, out, in);
  };
  for (const GPT2Model::LayerOffsets& o : m.layer_offsets_) {
    view(o.qkv_w, QKV, C);
    view(o.attproj_w, C, AO);
    view(o.fc_w, F, C);
    view(o.fcproj_w, C, A);
  }
  views[m.lm_head_] = PackedMatrix::view_rows(P + m.lm_head_, c.vocab_size, C);
}

const PackedMatrix& DecodeSession::decode_matrix(size_t offset) const {
  if (const PackedMatrix* packed = model_.packed(offset)) return *packed;
  return buffers_->f32_views.at(offset);
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
  const int H = cfg.n_head, Hkv = cfg.kv_heads(), D = cfg.head_dim();
  std::vector<float> k(static_cast<size_t>(Hkv) * D), v(k.size());
  for (int l = 0; l < cfg.n_layer; l++) {
    // (1, Hkv, n, D) keys (already rotated) and values after the (1, H, n, D) queries.
    const float* kh = model_.acts_->qkvh[l] + static_cast<int64_t>(n) * H * D;
    const float* vh = kh + static_cast<int64_t>(n) * Hkv * D;
    for (int t = 0; t < n; t++) {
      for (int g = 0; g < Hkv; g++) {
        const int64_t src = (static_cast<int64_t>(g) * n + t) * D;
        std::copy(kh + src, kh + src + D, k.begin() + g * D);
        std::copy(vh + src, vh + src + D, v.begin() + g * D);
      }
      states_[l]->append(k.data(), v.data());
    }
  }
  const float* last = model_.logits() + static_cast<int64_t>(n - 1) * cfg.vocab_size;
  std::copy(last, last + cfg.vocab_size, buffers_->logits.begin());
  position_ = n;
  return buffers_->logits.data();
}

void DecodeSession::reserve(int64_t tokens) {
  require(tokens >= 0, "decode: reserve() needs a token count >= 0, got " + std::to_string(tokens));
  const int64_t capped = std::min<int64_t>(tokens, model_.config().block_size);
  for (auto& state : states_) state->reserve(capped);
}

std::unique_ptr<DecodeSession> DecodeSession::clone() const {
  auto copy = std::make_unique<DecodeSession>(model_, kv_cache_);
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
  require(n > 0, "decode: extend() needs at least one token");
  DecodeSession* self = this;
  const std::span<const int32_t> rows(tokens, static_cast<size_t>(n));
  return extend_together(std::span<DecodeSession* const>(&self, 1),
                         std::span<const std::span<const int32_t>>(&rows, 1));
}

const float* DecodeSession::extend_together(std::span<DecodeSession* const> sessions,
                                            std::span<const std::span<const int32_t>> tokens,
                                            bool last_rows_only) {
  require(!sessions.empty() && sessions.size() == tokens.size(),
          "decode: extend_together() needs one token list per session");
  DecodeSession& first = *sessions[0];
  GPT2Model& model = first.model_;
  const GPT2Config& cfg = model.config();
  const int C = cfg.n_embd, V = cfg.vocab_size, H = cfg.n_head, Hkv = cfg.kv_heads(),
            D = cfg.head_dim();
  const RowWidths w(cfg);
  const int QKV = static_cast<int>(w.QKV), AO = static_cast<int>(w.AO), F = static_cast<int>(w.F),
            A = static_cast<int>(w.A);
  // Rows of session s start at row_begin[s]: the digital layers run once over all of them, so the
  // weights stream from memory once per call however many continuations it carries.
  std::vector<int64_t> row_begin(sessions.size() + 1, 0);
  for (size_t s = 0; s < sessions.size(); s++) {
    const DecodeSession& session = *sessions[s];
    const int64_t n = static_cast<int64_t>(tokens[s].size());
    require(&session.model_ == &model, "decode: extend_together() needs sessions of one model");
    require(n > 0, "decode: extend() needs at least one token");
    for (size_t other = 0; other < s; other++) {
      require(sessions[other] != sessions[s], "decode: extend_together() got a session twice");
    }
    require(session.position_ + n <= cfg.block_size,
            "decode: extending position " + std::to_string(session.position_) + " by " +
                std::to_string(n) + " tokens passes the model's block_size " +
                std::to_string(cfg.block_size));
    row_begin[s + 1] = row_begin[s] + n;
  }
  Buffers& b = *first.buffers_;
  const int64_t N = row_begin.back();
  auto fit = [](std::vector<float>& v, int64_t size) {
    if (static_cast<int64_t>(v.size()) < size) v.resize(size);
    return v.data();
  };
  float* x = fit(b.nx, N * C);
  float* ln = fit(b.nln, N * C);
  float* qkv = fit(b.nqkv, N * QKV);
  float* att = fit(b.natt, N * AO);
  float* fc = fit(b.nfc, N * F);
  float* act = fit(b.nact, N * A);
  float* stats = fit(b.nstats, 2 * N);
  const float* P = model.param_data();
  for (size_t s = 0; s < sessions.size(); s++) {
    // Positions continue from each session's own position: the position table (GPT-2) starts at
    // that row.
    const float* wpe = model.wpe_ == GPT2Model::kNone
                           ? nullptr
                           : P + model.wpe_ + sessions[s]->position_ * int64_t{C};
    layers::embedding_forward(x + row_begin[s] * C, tokens[s].data(), P + model.wte_, wpe, 1,
                              static_cast<int>(tokens[s].size()), C, V);
  }
  for (int l = 0; l < cfg.n_layer; l++) {
    const GPT2Model::LayerOffsets& o = model.layer_offsets_[l];
    model.norm_forward(ln, stats, x, o.ln1_w, o.ln1_b, N);
    model.linear(qkv, ln, o.qkv_w, o.qkv_b, N, C, QKV, false);
    for (size_t s = 0; s < sessions.size(); s++) {
      AttentionDecodeState& state = *sessions[s]->states_[l];
      for (int64_t t = row_begin[s]; t < row_begin[s + 1]; t++) {
        float* q = qkv + t * QKV;
        float* k = q + H * D;
        if (cfg.uses_rope()) {
          const int64_t pos = sessions[s]->position_ + (t - row_begin[s]);
          layers::rope_apply(q, model.rope_cos_.data(), model.rope_sin_.data(), 1, H, 1, D, pos);
          layers::rope_apply(k, model.rope_cos_.data(), model.rope_sin_.data(), 1, Hkv, 1, D, pos);
        }
        state.append(k, k + Hkv * D);
        state.attend(q, att + t * AO);
      }
    }
    model.linear(x, att, o.attproj_w, o.attproj_b, N, AO, C, true);
    model.norm_forward(ln, stats, x, o.ln2_w, o.ln2_b, N);
    model.linear(fc, ln, o.fc_w, o.fc_b, N, C, F, false);
    model.activation(act, fc, N);
    model.linear(x, act, o.fcproj_w, o.fcproj_b, N, A, C, true);
  }
  int64_t head_rows = N;
  if (last_rows_only) {
    // Gather each session's last row in place (row s <= its last row, so nothing is overwritten
    // before it is read).
    head_rows = static_cast<int64_t>(sessions.size());
    for (int64_t s = 0; s < head_rows; s++) {
      std::copy(x + (row_begin[s + 1] - 1) * C, x + row_begin[s + 1] * C, x + s * C);
    }
  }
  model.norm_forward(ln, stats, x, model.lnf_w_, model.lnf_b_, head_rows);
  float* logits = fit(b.nlogits, head_rows * V);
  // The same digital layers as forward() and step(): packed bf16/q8 copies when the model has them.
  if (const PackedMatrix* head = model.packed(model.lm_head_)) {
    packed_matmul(logits, ln, *head, head_rows, false);
  } else {
    blas::gemm_nt(static_cast<int>(head_rows), V, C, ln, C, P + model.lm_head_, C, logits, V);
  }
  for (size_t s = 0; s < sessions.size(); s++) {
    sessions[s]->position_ += static_cast<int64_t>(tokens[s].size());
  }
  return logits;
}

const float* DecodeSession::step(int32_t token) {
  const GPT2Config& cfg = model_.config();
  const int V = cfg.vocab_size;
  require(token >= 0 && token < V, "decode: token " + std::to_string(token) +
                                       " is outside the vocabulary (size " + std::to_string(V) +
                                       ")");
  require(position_ < cfg.block_size, "decode: position " + std::to_string(position_) +
                                          " reaches the model's block_size " +
                                          std::to_string(cfg.block_size));
  return step_on_team(token);
}

// Decode, any weight format: packed bf16/q8 copies or fp32 views of the parameters, both read by
// weight_storage.h's team kernels. The whole token runs in one OpenMP parallel region: every
// product on the team, the attention on the team (AttentionDecodeState::attend_on_team), the
// threads meeting at a SpinBarrier after each (core/spin_barrier.h) rather than at the start and
// end of a region per product, which with OMP_WAIT_POLICY=passive would put them to sleep and
// wake them with a system call each time. Each thread computes the small serial pieces (norms,
// the MLP activation) itself from the shared complete vectors into its own buffer, so one barrier
// per product suffices; the results are the same on every thread (the same instructions on the
// same data). RoPE and the cache append run on the first thread.
const float* DecodeSession::step_on_team(int32_t token) {
  const GPT2Model& m = model_;
  const GPT2Config& cfg = m.config();
  const RowWidths w(cfg);
  Buffers& b = *buffers_;
  float* x = b.x.data();
  const int32_t pos = embed_at_position(token);
  const size_t own_width = static_cast<size_t>(std::max<int64_t>(w.C, w.A));
  SpinBarrier barrier;
  std::exception_ptr error;  // from the first thread's serial parts, rethrown after the region
#pragma omp parallel
  {
    const int threads = omp_get_num_threads();
    thread_local std::vector<float> own;  // this thread's copy of a product's input
    own.resize(own_width);
    float stats[2];
    // out = (out when accumulating) + bias + M in; then the team meets.
    auto product = [&](size_t weight, size_t bias, const float* in, float* out, bool accumulate) {
      const PackedMatrix& M = decode_matrix(weight);
      M.gemv_team(M.prepare(in), out, accumulate, m.tensor_or_null(bias));
      barrier.wait(threads);
    };
    for (int l = 0; l < cfg.n_layer; l++) {
      const GPT2Model::LayerOffsets& o = m.layer_offsets_[l];
      m.norm_forward(own.data(), stats, x, o.ln1_w, o.ln1_b, 1);
      product(o.qkv_w, o.qkv_b, own.data(), b.qkv.data(), false);
      run_on_first_thread([&] { rotate_and_append(l, pos); }, barrier, threads, error);
      states_[l]->attend_on_team(b.qkv.data(), b.att.data(), barrier, threads, error);
      product(o.attproj_w, o.attproj_b, b.att.data(), x, true);
      m.norm_forward(own.data(), stats, x, o.ln2_w, o.ln2_b, 1);
      product(o.fc_w, o.fc_b, own.data(), b.fc.data(), false);
      m.activation(own.data(), b.fc.data(), 1);
      product(o.fcproj_w, o.fcproj_b, own.data(), x, true);
    }
    m.norm_forward(own.data(), stats, x, m.lnf_w_, m.lnf_b_, 1);
    const PackedMatrix& head = decode_matrix(m.lm_head_);
    head.gemv_team(head.prepare(own.data()), b.logits.data(), false);  // the region's end joins
  }
  if (error) std::rethrow_exception(error);
  position_++;
  return b.logits.data();
}

int32_t DecodeSession::embed_at_position(int32_t token) {
  const GPT2Config& cfg = model_.config();
  const float* P = model_.param_data();
  const int32_t pos = static_cast<int32_t>(position_);
  const float* wpe =
      model_.wpe_ == GPT2Model::kNone ? nullptr : P + model_.wpe_ + pos * int64_t{cfg.n_embd};
  layers::embedding_forward(buffers_->x.data(), &token, P + model_.wte_, wpe, 1, 1, cfg.n_embd,
                            cfg.vocab_size);
  return pos;
}

void DecodeSession::rotate_and_append(int layer, int32_t pos) {
  const GPT2Config& cfg = model_.config();
  const int H = cfg.n_head, Hkv = cfg.kv_heads(), D = cfg.head_dim();
  float* q = buffers_->qkv.data();
  float* k = q + H * D;
  if (cfg.uses_rope()) {
    layers::rope_apply(q, model_.rope_cos_.data(), model_.rope_sin_.data(), 1, H, 1, D, pos);
    layers::rope_apply(k, model_.rope_cos_.data(), model_.rope_sin_.data(), 1, Hkv, 1, D, pos);
  }
  states_[layer]->append(k, k + Hkv * D);
}

}  // namespace gaincell
