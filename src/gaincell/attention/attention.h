// Attention as a pluggable component (issue 2 item 8). The GPT-2 model only talks to this
// interface: a whole-sequence causal forward over (B, H, T, D), its backward, and a token-by-token
// decode state. Variants (softmax, sliding-window softmax, the gain-cell hardware models) register
// a factory by name in attention_registry.cpp; the model code never names a variant.
#pragma once

#include <array>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "gaincell/core/spin_barrier.h"
#include "gaincell/hw/hw_config.h"

namespace gaincell {

// A tensor that a component owns logically but that the model allocates inside its one contiguous
// parameter buffer (so the optimiser, checkpoints and gradient clipping see it like any weight).
struct ParamSpec {
  std::string name;  // relative to the layer, e.g. "attn.q_scaler.a" -> "h.3.attn.q_scaler.a"
  std::vector<int64_t> shape;  // checkpoint shape, e.g. {n_head}
  std::vector<float> init;  // initial values (numel entries), used when no checkpoint provides them
  bool trainable = true;    // false: a stored buffer (no gradient, not optimised)
  bool weight_decay = false;  // AdamW decay group
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape) n *= s;
    return n;
  }
};

// Where the model put a ParamSpec's storage. grad is null for buffers.
struct TensorRef {
  float* data = nullptr;
  float* grad = nullptr;
  int64_t numel = 0;
};

// Everything a variant needs to build itself for one layer.
struct AttentionContext {
  int n_head = 12;    // query heads
  int n_kv_head = 0;  // key/value heads (grouped-query attention); 0 = n_head (GPT-2)
  int head_dim = 64;
  int layer = 0;
  int block_size = 1024;  // longest whole-sequence T
  int window = 0;         // sliding window in tokens for "sliding" (gaincell_window); 0 = none
  // The model's own sliding window for this layer (Mistral's and Qwen2's sliding_window): query t
  // sees keys t - model_window + 1 .. t in "softmax" and "sliding"; 0 = none (GPT-2, Llama).
  int model_window = 0;
  HwConfig hw = HwConfig::preset("paper-nonlinear");  // used by the hardware variants
};

// Token-by-token state: the KV cache of a software variant, the simulated gain-cell arrays of a
// hardware variant. Vectors are head-major: keys and values [n_kv_head * head_dim], queries and
// outputs [n_head * head_dim]; query head h reads key/value head h / (n_head / n_kv_head).
class AttentionDecodeState {
 public:
  virtual ~AttentionDecodeState() = default;
  // Stores the key and value of the next token (position length()).
  virtual void append(const float* k, const float* v) = 0;
  // Attends with the query of the newest appended token; writes [n_head * head_dim].
  virtual void attend(const float* q, float* out) = 0;
  // attend() from inside an OpenMP parallel region (decode runs a whole token in one region):
  // every one of the team's `threads` threads calls it with the same arguments, and it returns on
  // each once `out` is complete, having met at `barrier`. The result equals attend()'s. The
  // default runs attend() on the team's first thread while the others wait. An exception on that
  // thread is stored in `error` (it cannot leave the parallel region); the caller rethrows it
  // after the region.
  virtual void attend_on_team(const float* q, float* out, SpinBarrier& barrier, int threads,
                              std::exception_ptr& error) {
    run_on_first_thread([&] { attend(q, out); }, barrier, threads, error);
  }
  virtual int64_t length() const = 0;
  virtual void reset() = 0;
  // Allocates room for `tokens` stored tokens now (at most what the state can hold), so that
  // appends up to that length never re-lay the storage out. A KV cache otherwise doubles as it
  // fills, copying every cached row at that step. Variants of fixed size ignore it.
  virtual void reserve(int64_t tokens) {}
  // An independent copy of this state (same stored tokens, same noise streams), so that several
  // continuations of one context can be decoded from a single pass over the context (eval).
  // Null when a variant cannot copy its state; callers then score each continuation whole.
  virtual std::unique_ptr<AttentionDecodeState> clone() const { return nullptr; }
  // Makes this state equal to `other` (a state of the same layer and variant) in this state's
  // storage, without allocating; false when the variant cannot (then use clone()).
  virtual bool assign_from(const AttentionDecodeState& other) { return false; }
};

// How a software variant's decode state stores its KV cache. kBf16 (opt-in, `--kv-cache bf16`)
// rounds every cached key and value to bfloat16 (nearest, ties to even) and halves the bytes each
// decode step reads; queries, scores and sums stay fp32. Decode at long contexts reads the whole
// cache per token beside the weights (at 512 tokens of GPT-2 124M, 39 MB against 131 MB of q8
// weights), so the cache caps what reduced-precision weights can gain there. The hardware
// variants hold keys and values in their simulated arrays and have no KV cache.
enum class KvCacheFormat { kF32, kBf16 };
// "f32" or "bf16"; throws gaincell::Error naming the value otherwise.
KvCacheFormat parse_kv_cache_format(const std::string& name);
const char* kv_cache_format_name(KvCacheFormat format);
// Bytes per cached key or value element.
inline int kv_cache_element_bytes(KvCacheFormat format) {
  return format == KvCacheFormat::kBf16 ? 2 : 4;
}

// Per-head statistics of the range scalers' outputs (spec §5.1), for the adaptation algorithm:
// mean and unbiased std over batch, tokens and features of x_out = a x + b (before the clamp and
// quantiser) for q, k, v, and of the final per-head output for the output scaler (q and output per
// query head, k and v per key/value head under grouped-query attention). Recorded by the
// hardware variants on every forward with training == true (the last such forward).
struct ScalerStatistics {
  static constexpr int kQ = 0, kK = 1, kV = 2, kOutput = 3, kCount = 4;
  static constexpr const char* kNames[kCount] = {"q", "k", "v", "output"};
  std::array<std::vector<float>, kCount> mean;  // [scaler][head]
  std::array<std::vector<float>, kCount> std;   // [scaler][head], unbiased
  int64_t recorded_forwards = 0;                // forwards with training == true so far
};

class Attention {
 public:
  virtual ~Attention() = default;
  virtual std::string name() const = 0;

  // Extra tensors of this layer's attention (e.g. per-head scalers). Default: none.
  virtual std::vector<ParamSpec> param_specs() const { return {}; }
  // Storage for param_specs(), in the same order; called once after allocation.
  virtual void bind_params(std::span<const TensorRef> refs) {}

  // Whole-sequence causal forward. q, out: [B, H, T, D]; k, v: [B, Hkv, T, D] (Hkv = n_kv_head
  // divides H; query head h uses key/value head h / (H / Hkv)); contiguous, T <= block_size.
  // Keeps what backward() needs; q, k, v must stay valid until backward() of the same step.
  virtual void forward(const float* q, const float* k, const float* v, float* out, int B, int T,
                       bool training) = 0;
  // Overwrites dq ([B, H, T, D]), dk and dv ([B, Hkv, T, D], summed over the query heads of each
  // group); accumulates parameter gradients into bound grads.
  virtual void backward(const float* q, const float* k, const float* v, const float* dout,
                        float* dq, float* dk, float* dv, int B, int T) = 0;

  // Token-by-token state with its KV cache stored in `format`. Throws gaincell::Error for a format
  // the variant cannot store (anything but kF32 in a variant without a KV cache).
  std::unique_ptr<AttentionDecodeState> make_decode_state(
      KvCacheFormat format = KvCacheFormat::kF32) const;
  // Whether the decode state is a KV cache (the software variants), whose format can be chosen.
  virtual bool has_kv_cache() const { return false; }

  // Optional (hardware variants): statistics of the last training forward, null if none.
  virtual const ScalerStatistics* scaler_statistics() const { return nullptr; }
  // Optional: when on, every training forward also moves the target_mean/target_std buffers
  // towards the statistics by an EMA with alpha 0.1 (spec §5.1, §12 item 7; stage A).
  virtual void set_record_targets(bool on) {}

  // Data-parallel runs (train/data_parallel.h): sums the per-head statistics of a training
  // forward (sums, sums of squares, counts; `n` doubles) over the ranks in place before they
  // become means and standard deviations, so that every rank records the statistics of the
  // whole global batch. Called inside training forwards: every rank must run the same ones.
  using StatisticsReducer = std::function<void(double* values, size_t n)>;
  void set_statistics_reducer(StatisticsReducer reducer) {
    statistics_reducer_ = std::move(reducer);
  }

 protected:
  // make_decode_state's work; `format` is kF32 unless has_kv_cache().
  virtual std::unique_ptr<AttentionDecodeState> new_decode_state(KvCacheFormat format) const = 0;

  StatisticsReducer statistics_reducer_;  // empty: one process
};

using AttentionFactory = std::function<std::unique_ptr<Attention>(const AttentionContext&)>;

// What a hardware variant does with a hardware configuration; empty for software variants.
struct AttentionHardware {
  // The hardware the variant runs on when the user names none.
  std::function<HwConfig()> default_hw;
  // The hardware it actually runs from a given one. The one rule (issue 11): the variant sets
  // what its name says (the gain-cell variants: the cell model), everything else comes from `hw`.
  std::function<HwConfig(const HwConfig& hw)> resolve;
};

// Registry of variants by name ("softmax", "sliding", "gaincell-nonlinear", ...).
void register_attention(const std::string& name, const std::string& help, AttentionFactory f,
                        AttentionHardware hardware = {});
std::unique_ptr<Attention> make_attention(const std::string& name, const AttentionContext& ctx);
std::vector<std::string> attention_names();
std::string attention_help(const std::string& name);

// Whether the variant runs on the simulated hardware (reads AttentionContext::hw).
bool attention_uses_hardware(const std::string& name);
// The variant's own default hardware; nullopt for software variants. Throws for unknown names.
std::optional<HwConfig> attention_default_hardware(const std::string& name);
// The hardware the variant runs from `hw` (identity for software variants). Every place that
// builds or records a model configuration passes its hardware through this, so that what a
// result file says ran is what ran.
HwConfig attention_hardware(const std::string& name, const HwConfig& hw);

}  // namespace gaincell
