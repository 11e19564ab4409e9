// The transformer engine (issue 2; issue 12 item 1): GPT-2 and the Llama family (Llama, Mistral,
// Qwen2) in one implementation, the architecture chosen by the config's model_type. Shared:
// embedding, pre-norm blocks, the attention interface (one pluggable instance per layer), the
// LM head with chunked cross-entropy, hand-written backward, decode session, parameter buffer.
//   gpt2    LayerNorm (eps from the config), learned positions, fused c_attn, tanh-GELU MLP 4x,
//           biases everywhere, LM head tied to wte.
//   llama   RMSNorm, rotary position embeddings (rope_theta, rope_scaling "default"/"llama3"),
//   mistral grouped-query attention (num_key_value_heads), SwiGLU MLP, optional biases (Qwen2's
//   qwen2   q/k/v biases; Llama's attention_bias / mlp_bias), tied or untied lm_head, Mistral's
//           and Qwen2's sliding_window.
//
// Parameters use the Hugging Face names and shapes, so a HF checkpoint maps by name without
// transposes: GPT-2 in Conv1D layout (c_attn.weight is [n_embd, 3*n_embd], y = x W + b); the
// Llama family in nn.Linear layout (q_proj.weight is [heads*head_dim, hidden], y = x Wᵀ + b)
// under "model.embed_tokens.weight", "model.layers.{l}.self_attn.q_proj.weight", ...,
// "model.norm.weight", "lm_head.weight". The q|k|v projections (and gate|up) sit next to each
// other in the parameter buffer, so each pair or triple runs as one fused GEMM. Attention variants
// may add per-layer tensors (ParamSpec), named layer_prefix(l) + spec.name. Parameters,
// gradients, optimiser state and activations live in a few contiguous allocations.
//
// The names GPT2Config and GPT2Model are kept for every existing caller; ModelConfig and
// TransformerModel are aliases that read better in new code.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "gaincell/attention/attention.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/model/weight_storage.h"

namespace gaincell {

// Rotary embedding frequency scaling (Hugging Face rope_scaling). type "default" = none;
// "llama3" = Llama 3.1's smooth low/high-frequency rescaling.
struct RopeScaling {
  std::string type = "default";
  double factor = 8.0;
  double low_freq_factor = 1.0;
  double high_freq_factor = 4.0;
  int original_max_position_embeddings = 8192;
};

struct GPT2Config {
  int n_layer = 12;       // HF num_hidden_layers for the Llama family
  int n_head = 12;        // query heads (num_attention_heads)
  int n_embd = 768;       // hidden_size
  int block_size = 1024;  // HF n_positions / max_position_embeddings
  int vocab_size = 50257;
  float layer_norm_epsilon = 1e-5f;   // LayerNorm eps (GPT-2) or rms_norm_eps (Llama family)
  std::string attention = "softmax";  // a registered attention variant
  int window = 0;                     // sliding window for "sliding" (0 = block_size)
  HwConfig hw = HwConfig::preset("paper-nonlinear");  // for the gain-cell variants
  // How text becomes ids (tokenizer.h): "gpt2-bpe" or "bytes" (then vocab_size >= 257).
  std::string tokenizer = "gpt2-bpe";

  // Architecture. Every default below means GPT-2, so GPT-2 configs need none of these.
  std::string model_type = "gpt2";  // "gpt2", "llama", "mistral" or "qwen2"
  int n_kv_head = 0;                // num_key_value_heads; 0 = n_head
  int head_size = 0;                // HF head_dim; 0 = n_embd / n_head
  int intermediate_size = 0;        // MLP width; 0 = 4 n_embd (GPT-2)
  bool tie_word_embeddings = true;  // false: a separate lm_head.weight
  bool qkv_bias = true;             // biases of the q/k/v projections
  bool o_bias = true;               // bias of the attention output projection
  bool mlp_bias = true;             // biases of the MLP projections
  double rope_theta = 10000.0;
  RopeScaling rope_scaling;
  // Mistral/Qwen2 sliding_window: query t sees keys t - sliding_window + 1 .. t; 0 = none.
  // Qwen2 applies it to layers >= max_window_layers only (0 for Mistral: every layer).
  int sliding_window = 0;
  int max_window_layers = 0;
  // Token ids of the Hugging Face config, kept so a saved model round-trips them.
  std::optional<int> bos_token_id, eos_token_id;

  bool is_gpt2() const { return model_type == "gpt2"; }
  bool uses_rope() const { return !is_gpt2(); }
  int kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  int head_dim() const { return head_size > 0 ? head_size : n_embd / n_head; }
  int mlp_width() const { return intermediate_size > 0 ? intermediate_size : 4 * n_embd; }
  // The model's own sliding window of layer l (0 = full causal).
  int layer_window(int layer) const {
    return sliding_window > 0 && layer >= max_window_layers ? sliding_window : 0;
  }
  void validate() const;  // throws gaincell::Error naming the field
  // Hugging Face config.json keys. GPT-2: n_layer, n_head, n_embd, n_positions, n_ctx,
  // vocab_size, layer_norm_epsilon, model_type "gpt2", architectures. Llama family: hidden_size,
  // intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
  // max_position_embeddings, vocab_size, rms_norm_eps, rope_theta, rope_scaling, hidden_act
  // ("silu"), tie_word_embeddings, attention_bias, mlp_bias, sliding_window (Mistral),
  // use_sliding_window / sliding_window / max_window_layers (Qwen2). Plus gaincell_attention,
  // gaincell_window, gaincell_hw, gaincell_tokenizer (absent = "gpt2-bpe").
  nlohmann::json to_json() const;
  static GPT2Config from_json(const nlohmann::json& j);
  // "gpt2" (124M), "gpt2-medium", "gpt2-large", "gpt2-xl", or "tiny" for tests; "llama-tiny"
  // (2 layers, 4 query / 2 KV heads of 8, SwiGLU 64, untied head) for tests and examples;
  // "smollm-135m" (SmolLM-135M's shape: 30 layers, 9 query / 3 KV heads of 64) for benchmarks.
  static GPT2Config named(const std::string& name);
};
using ModelConfig = GPT2Config;

struct ParamInfo {
  std::string name;            // e.g. "h.0.attn.c_attn.weight"
  std::vector<int64_t> shape;  // HF shape
  size_t offset = 0;           // into param_data()/grad_data()
  int64_t numel = 0;
  bool trainable = true;
  bool weight_decay = false;     // rank >= 2 tensors (unless a ParamSpec says otherwise)
  bool attention_extra = false;  // an attention variant's ParamSpec (optional in checkpoints)
};

class DecodeSession;

class GPT2Model {
 public:
  // `packed_load` bf16 or q8: a model about to be loaded straight into that packed storage
  // (begin_packed_load, called here), whose memory check counts the matrices at their packed size
  // instead of fp32 (load_model with LoadModelOptions::weights).
  explicit GPT2Model(const GPT2Config& config, WeightFormat packed_load = WeightFormat::kF32);
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
  // Name prefix of layer l's tensors: "h.3." (GPT-2) or "model.layers.3." (Llama family).
  std::string layer_prefix(int layer) const;

  // GPT-2 initialisation (normal 0.02, residual projections 0.02/sqrt(2 n_layer), LN 1/0; the
  // Llama family: normal 0.02 for every matrix, norms 1, biases 0), and each attention
  // ParamSpec's init values. The constructor does not draw random weights (loading a checkpoint
  // would overwrite them): it sets norm weights to 1, the attention ParamSpecs to their init
  // values, and everything else to 0.
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
  // Called by backward() each time the gradient of a contiguous parameter range [begin, end)
  // (offsets into grad_data()) is final for this backward: the final norm (and an untied LM
  // head) first, then each block from the last, the embeddings (and a tied LM head) last.
  // Data-parallel training starts the all-reduce of each range there while backward continues
  // with the earlier layers (train/data_parallel.h). An empty hook: none.
  using GradReadyHook = std::function<void(size_t begin, size_t end)>;
  void set_grad_ready_hook(GradReadyHook hook) { grad_ready_hook_ = std::move(hook); }

  // A training forward (training = true with targets) whose [B, T, vocab] logits exceed the
  // budget below does not keep them (they dominate activation memory): it computes the loss over
  // chunks of this many vocabulary columns and backward() recomputes them. After any training
  // forward logits() is unavailable; token_losses() is.
  void set_vocab_chunk(int columns);
  // Unless the [B, T, vocab] logits fit this many floats: then a training forward keeps them
  // (computed in one GEMM, the loss over them as one chunk) and backward() uses them in place,
  // one LM-head GEMM per step fewer. Default 64 M floats (256 MiB: GPT-2 124M at B*T = 1024 keeps
  // its 206 MB of logits; B*T = 2048 with GPT-2's vocabulary chunks); 0 = always chunk.
  void set_training_logits_budget(int64_t floats) { training_logits_budget_ = floats; }
  // Bytes held by the activation buffers (forward + backward scratch), for benchmarks.
  size_t activation_bytes() const;

  // A token-by-token session whose layers keep their KV caches in `kv_cache` (attention.h; the
  // hardware variants have none and accept only kF32, an Error otherwise).
  std::unique_ptr<DecodeSession> start_decoding(KvCacheFormat kv_cache = KvCacheFormat::kF32);

  // Reduced-precision inference weights (weight_storage.h): packs the digital linear layers'
  // matrices (attention and MLP projections, the tied LM head) in `format`; inference forwards
  // and decode then read the packed copies. The fp32 parameters stay (embeddings, LayerNorms,
  // biases, checkpoints), so call this after the weights are final; f32 drops the copies.
  // Training (a forward with training = true, backward) requires f32. A model loaded straight
  // into packed storage (begin_packed_load) has no fp32 matrices to pack from: any format other
  // than its own is an error.
  void set_weight_format(WeightFormat format);
  WeightFormat weight_format() const { return weight_format_; }
  size_t packed_weight_bytes() const;

  // Loading a checkpoint straight into reduced-precision storage (load_model with weights bf16 or
  // q8), without an fp32 copy of the packed matrices: allocates (zero) the packed matrices that
  // set_weight_format(format) would build and marks their fp32 parameters absent. The loader then
  // fills each tensor through packed_target(); the fp32 pages of the absent matrices are never
  // written, so they cost no memory (the parameter buffer is calloc'd). Embeddings, norms, biases,
  // attention extras and a tied LM head (the embedding lookup reads it) stay fp32. From then on
  // everything that would read the absent matrices throws (require_fp32_weights): training
  // forwards and backward, init_random, save_weights, set_weight_format to another format.
  // Must be called on a freshly constructed model, before any forward.
  void begin_packed_load(WeightFormat format);
  // Where the loader puts parameter p's values: the packed matrix holding them (null when p is not
  // packed), p's first row in it, whether p is stored by columns (a GPT-2 Conv1D weight [in, out]
  // of M = wᵀ) and whether p's fp32 values are kept too (a tied LM head, also the embedding).
  struct PackedTarget {
    PackedMatrix* matrix = nullptr;
    int first_row = 0;
    bool columns = false;
    bool fp32_kept = false;
  };
  PackedTarget packed_target(const ParamInfo& p);
  // False after begin_packed_load: the packed matrices have no fp32 values.
  bool has_fp32_weights() const { return fp32_absent_floats_ == 0; }
  // Throws a gaincell::Error saying `what` needs the fp32 weights this model was loaded without.
  void require_fp32_weights(const std::string& what) const;
  // Bytes of the fp32 parameters the model holds: all of them, less the matrices held only
  // packed (begin_packed_load). packed_weight_bytes() is the packed storage.
  size_t fp32_param_bytes() const { return (num_params_ - fp32_absent_floats_) * sizeof(float); }

 private:
  struct Activations;
  struct LayerOffsets;  // offsets of one block's tensors in param_data()/grad_data()
  void build_param_table();
  void initialise_params(bool random, uint64_t seed);
  void allocate_grads();
  void bind_attention_params();
  void ensure_activations(int B, int T);
  void ensure_backward_scratch();
  void build_rope_tables();
  // Architecture-dependent pieces of a block (LayerNorm or RMSNorm, Conv1D or nn.Linear layout,
  // GELU or SwiGLU); offsets equal to kNone are absent tensors (no bias).
  static constexpr size_t kNone = static_cast<size_t>(-1);
  const float* tensor_or_null(size_t offset) const;
  void norm_forward(float* out, float* stats, const float* in, size_t w, size_t b, int64_t N) const;
  void norm_recompute(float* out, const float* in, const float* stats, size_t w, size_t b,
                      int64_t N) const;
  void norm_backward(float* dres, float* G, const float* dout, const float* in, const float* stats,
                     size_t w, size_t b, int64_t N) const;
  // The digital linear layers (Conv1D layout for GPT-2, nn.Linear for the Llama family), reading
  // the packed copy of the weight at parameter offset `w` when there is one (weight_storage.h):
  // out[N, OUT] = in[N, IN] · W + bias, and the one-vector form; accumulate adds to `out`.
  void linear(float* out, const float* in, size_t w, size_t b, int64_t N, int IN, int OUT,
              bool accumulate) const;
  void linear_grad(float* din, float* G, const float* dout, const float* in, size_t w, size_t b,
                   int64_t N, int IN, int OUT) const;
  void activation(float* out, const float* pre, int64_t N) const;
  const PackedMatrix* packed(size_t offset) const;
  GPT2Config config_;
  std::unordered_map<std::string, size_t> param_index_;
  std::vector<LayerOffsets> layer_offsets_;
  size_t wte_ = 0, wpe_ = kNone, lnf_w_ = 0, lnf_b_ = kNone, lm_head_ = 0;
  std::vector<float> rope_cos_, rope_sin_;  // [block_size][head_dim / 2] (Llama family)
  int vocab_chunk_ = 2048;
  int64_t training_logits_budget_ = int64_t{64} << 20;
  std::vector<ParamInfo> params_;
  size_t num_params_ = 0;
  // calloc'd: zero pages that are never written (matrices loaded straight into packed storage)
  // are never backed by memory.
  struct FreeDeleter {
    void operator()(float* p) const;
  };
  std::unique_ptr<float[], FreeDeleter> param_data_;
  size_t fp32_absent_floats_ = 0;  // floats of the matrices held only packed
  std::unique_ptr<float[]> grad_data_;
  GradReadyHook grad_ready_hook_;
  std::vector<std::unique_ptr<Attention>> attention_;
  std::unique_ptr<Activations> acts_;
  WeightFormat weight_format_ = WeightFormat::kF32;
  std::unordered_map<size_t, PackedMatrix> packed_;  // by parameter offset
  friend class DecodeSession;
};
using TransformerModel = GPT2Model;

// Token-by-token inference with one AttentionDecodeState per layer (KV cache or simulated arrays).
class DecodeSession {
 public:
  explicit DecodeSession(GPT2Model& model, KvCacheFormat kv_cache = KvCacheFormat::kF32);
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
  // extend() for several sessions of one model at once (distinct sessions, e.g. clone()s of one
  // context, one per multiple-choice continuation): session s is fed tokens[s] from its own
  // position. The projections and the LM head run once over all the rows, so the weights are read
  // once per call rather than once per session; attention goes through each session's own decode
  // state, so the result equals calling extend() on each session in turn. Returns the logits
  // [sum of the token counts, vocab_size], rows in session order, valid until the next call on
  // sessions[0]; with last_rows_only, only each session's last row [sessions, vocab_size] (the LM
  // head runs on those rows alone: a context whose next-token predictions are not needed).
  static const float* extend_together(std::span<DecodeSession* const> sessions,
                                      std::span<const std::span<const int32_t>> tokens,
                                      bool last_rows_only = false);
  // An independent copy (every layer's decode state and the position), to score several
  // continuations of one context from one prefill. Null when an attention variant's decode state
  // cannot be copied (AttentionDecodeState::clone()).
  std::unique_ptr<DecodeSession> clone() const;
  // Makes this session equal to `other` (a session of the same model), reusing this session's
  // storage where the decode states allow (AttentionDecodeState::assign_from); false when a
  // state can be neither assigned nor cloned.
  bool assign_from(const DecodeSession& other);
  int64_t position() const { return position_; }
  // Allocates every layer's decode state for `tokens` tokens in all (capped at block_size), so
  // that decoding up to that position never grows a KV cache: a growing cache doubles, copying
  // every cached row at one step (at 512 tokens of GPT-2 124M, 19 MB of fp32 keys and values and
  // as much newly zeroed memory, in one token's time). Generation reserves the prompt plus the
  // tokens it may add. Throws gaincell::Error for a negative count.
  void reserve(int64_t tokens);
  // The per-layer decode state (KV cache or simulated arrays), e.g. to read hardware events.
  const AttentionDecodeState& state(int layer) const { return *states_.at(layer); }
  int num_layers() const { return static_cast<int>(states_.size()); }
  void reset();

 private:
  struct Buffers;
  // step()'s work: the products on the OpenMP team, two regions per layer.
  const float* step_on_team(int32_t token);
  // The fp32 views of the digital layers' weights (Buffers::f32_views), built once per session.
  void build_f32_views();
  // The matrix a product reads: the model's packed copy, else the fp32 view.
  const PackedMatrix& decode_matrix(size_t offset) const;
  // The token at `pos` into layer `layer`'s decode state: RoPE on the buffers' q and k (when the
  // family uses it), then k and v appended.
  void rotate_and_append(int layer, int32_t pos);
  // The token's embedding (and learned position, GPT-2) into the buffers' `x`; returns the
  // position.
  int32_t embed_at_position(int32_t token);
  GPT2Model& model_;
  KvCacheFormat kv_cache_;  // how the layers' states store keys and values (clone() keeps it)
  std::vector<std::unique_ptr<AttentionDecodeState>> states_;
  std::unique_ptr<Buffers> buffers_;
  int64_t position_ = 0;
};

}  // namespace gaincell
