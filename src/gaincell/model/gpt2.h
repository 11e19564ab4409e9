// The GPT-2 engine (issue 2): pre-LN blocks, tanh-GELU MLP 4x, tied token embedding and LM head,
// learned positions, LayerNorm eps from the config, biases; fp32; any size from a config.
// Attention is a pluggable component (attention/attention.h), one instance per layer.
//
// Parameters use the Hugging Face GPT-2 names and shapes (Conv1D layout: c_attn.weight is
// [n_embd, 3*n_embd], y = x W + b), so a HF checkpoint maps by name without transposes. Attention
// variants may add per-layer tensors (ParamSpec), named "h.{l}.<spec.name>". Parameters, gradients,
// optimiser state and activations live in a few contiguous allocations.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <unordered_map>
#include <vector>

#include "gaincell/attention/attention.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/model/weight_storage.h"

namespace gaincell {

struct GPT2Config {
  int n_layer = 12;
  int n_head = 12;
  int n_embd = 768;
  int block_size = 1024;  // HF n_positions
  int vocab_size = 50257;
  float layer_norm_epsilon = 1e-5f;
  std::string attention = "softmax";  // a registered attention variant
  int window = 0;                     // sliding window for "sliding" (0 = block_size)
  HwConfig hw = HwConfig::preset("paper-nonlinear");  // for the gain-cell variants
  // How text becomes ids (tokenizer.h): "gpt2-bpe" or "bytes" (then vocab_size >= 257).
  std::string tokenizer = "gpt2-bpe";

  int head_dim() const { return n_embd / n_head; }
  void validate() const;  // throws gaincell::Error naming the field
  // Hugging Face config.json keys (n_layer, n_head, n_embd, n_positions, n_ctx, vocab_size,
  // layer_norm_epsilon, model_type "gpt2", architectures) plus gaincell_attention, gaincell_window,
  // gaincell_hw, gaincell_tokenizer (absent = "gpt2-bpe").
  nlohmann::json to_json() const;
  static GPT2Config from_json(const nlohmann::json& j);
  // "gpt2" (124M), "gpt2-medium", "gpt2-large", "gpt2-xl", or "tiny" for tests.
  static GPT2Config named(const std::string& name);
};

struct ParamInfo {
  std::string name;            // e.g. "h.0.attn.c_attn.weight"
  std::vector<int64_t> shape;  // HF shape
  size_t offset = 0;           // into param_data()/grad_data()
  int64_t numel = 0;
  bool trainable = true;
  bool weight_decay = false;  // rank >= 2 tensors (unless a ParamSpec says otherwise)
};

class DecodeSession;

class GPT2Model {
 public:
  explicit GPT2Model(const GPT2Config& config);
  ~GPT2Model();
  GPT2Model(const GPT2Model&) = delete;
  GPT2Model& operator=(const GPT2Model&) = delete;

  const GPT2Config& config() const { return config_; }
  const std::vector<ParamInfo>& params() const { return params_; }
  const ParamInfo& param(const std::string& name) const;  // throws if unknown
  size_t num_params() const { return num_params_; }
  float* param_data() { return param_data_.get(); }
  const float* param_data() const { return param_data_.get(); }
  float* grad_data();  // allocated on first use
  Attention& attention(int layer) { return *attention_[layer]; }

  // GPT-2 initialisation (normal 0.02, residual projections 0.02/sqrt(2 n_layer), LN 1/0), and
  // each attention ParamSpec's init values. The constructor does not draw random weights (loading
  // a checkpoint would overwrite them): it sets LayerNorm weights to 1, the attention ParamSpecs
  // to their init values, and everything else to 0.
  void init_random(uint64_t seed);

  // Whole-sequence forward over inputs [B][T]. With targets (entries < 0 are ignored) returns the
  // mean cross-entropy over the counted positions, else 0. `training` lets attention variants
  // record statistics and keep what backward() needs.
  float forward(const int32_t* inputs, const int32_t* targets, int B, int T, bool training = false);
  const float* logits() const;        // [B, T, vocab_size] of the last inference forward
  const float* token_losses() const;  // [B, T] per-position cross-entropy (0 where ignored)

  void zero_grad();
  // Backward of the last forward (which must have had targets and training = true); accumulates
  // into grad_data(). May be called again after another forward (gradient accumulation).
  void backward();

  // A training forward (training = true with targets) does not keep the [B, T, vocab] logits
  // (they dominate activation memory): it computes the loss over chunks of this many vocabulary
  // columns and backward() recomputes them. logits() is then unavailable; token_losses() is.
  void set_vocab_chunk(int columns);
  // Bytes held by the activation buffers (forward + backward scratch), for benchmarks.
  size_t activation_bytes() const;

  std::unique_ptr<DecodeSession> start_decoding();

  // Reduced-precision inference weights (weight_storage.h): packs the digital linear layers'
  // matrices (attention and MLP projections, the tied LM head) in `format`; inference forwards
  // and decode then read the packed copies. The fp32 parameters stay (embeddings, LayerNorms,
  // biases, checkpoints), so call this after the weights are final; f32 drops the copies.
  // Training (a forward with training = true, backward) requires f32.
  void set_weight_format(WeightFormat format);
  WeightFormat weight_format() const { return weight_format_; }
  size_t packed_weight_bytes() const;

 private:
  struct Activations;
  struct LayerOffsets;  // offsets of one block's tensors in param_data()/grad_data()
  void build_param_table();
  void initialise_params(bool random, uint64_t seed);
  void allocate_grads();
  void bind_attention_params();
  void ensure_activations(int B, int T);
  void ensure_backward_scratch();
  // The digital linear layers, reading the packed copy of the weight at parameter offset `w` when
  // there is one: out[N, OC] = inp[N, C] · W + bias (Conv1D layout), and the one-vector form.
  void linear(float* out, const float* inp, size_t w, size_t bias, int64_t N, int C, int OC,
              bool accumulate = false) const;
  void linear_one(float* out, const float* inp, size_t w, int C, int OC) const;  // out += x W
  const PackedMatrix* packed(size_t offset) const;
  GPT2Config config_;
  std::unordered_map<std::string, size_t> param_index_;
  std::vector<LayerOffsets> layer_offsets_;
  size_t wte_ = 0, wpe_ = 0, lnf_w_ = 0, lnf_b_ = 0;
  int vocab_chunk_ = 2048;
  std::vector<ParamInfo> params_;
  size_t num_params_ = 0;
  std::unique_ptr<float[]> param_data_;
  std::unique_ptr<float[]> grad_data_;
  std::vector<std::unique_ptr<Attention>> attention_;
  std::unique_ptr<Activations> acts_;
  WeightFormat weight_format_ = WeightFormat::kF32;
  std::unordered_map<size_t, PackedMatrix> packed_;  // by parameter offset
  friend class DecodeSession;
};

// Token-by-token inference with one AttentionDecodeState per layer (KV cache or simulated arrays).
class DecodeSession {
 public:
  explicit DecodeSession(GPT2Model& model);
  ~DecodeSession();
  // Feeds one token at position position(); returns the logits [vocab_size] for the next token.
  const float* step(int32_t token);
  // Feeds a prompt of n tokens at once (one whole-sequence forward, whose keys and values are then
  // appended to every layer's decode state); must start at position 0. Returns the logits
  // [vocab_size] after the last prompt token. Equivalent to n calls of step(), but GEMM-fast.
  // Uses the model's activation buffers (the model's last forward is overwritten).
  const float* prefill(const int32_t* tokens, int n);
  // Feeds n tokens at positions position() .. position() + n - 1 after a prefill() or step()s:
  // the projections and the LM head run as matrix products over the n rows, attention goes
  // through each layer's decode state one token at a time (so it equals n calls of step()).
  // Returns the logits [n, vocab_size], valid until the next call on this session.
  const float* extend(const int32_t* tokens, int n);
  // An independent copy (every layer's decode state and the position), to score several
  // continuations of one context from one prefill. Null when an attention variant's decode state
  // cannot be copied (AttentionDecodeState::clone()).
  std::unique_ptr<DecodeSession> clone() const;
  // Makes this session equal to `other` (a session of the same model), reusing this session's
  // storage where the decode states allow (AttentionDecodeState::assign_from); false when a
  // state can be neither assigned nor cloned.
  bool assign_from(const DecodeSession& other);
  int64_t position() const { return position_; }
  // The per-layer decode state (KV cache or simulated arrays), e.g. to read hardware events.
  const AttentionDecodeState& state(int layer) const { return *states_.at(layer); }
  int num_layers() const { return static_cast<int>(states_.size()); }
  void reset();

 private:
  struct Buffers;
  GPT2Model& model_;
  std::vector<std::unique_ptr<AttentionDecodeState>> states_;
  std::unique_ptr<Buffers> buffers_;
  int64_t position_ = 0;
};

}  // namespace gaincell
