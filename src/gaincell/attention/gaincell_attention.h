// The gain-cell attention variants (issue 3; spec §3.1, §3.2, §3.5, §3.6, §2.7, §4):
//   gaincell-linear     linear cell (spec §3.5), default hardware preset paper-linear
//   gaincell-nonlinear  polynomial cell (spec §3.6), default preset paper-nonlinear
//   gaincell-x3 | -x5 | -sigmoid | -exp   ablation cells (spec §2.7); default: paper-nonlinear with
//                       the Q and output quantisers off (K/V stay 8-level), as the paper's classes
// The attention name selects the cell model; everything else comes from AttentionContext::hw.
//
// Per head: Q = Qz_q(clip(a_q q + b_q, 0, 1)), K = Qz_k(clip(a_k k + b_k, 0, 0.9)), V likewise,
// the analog core of gaincell_kernel.h, then y = a_o O + b_o. Grouped-query attention (issue 12):
// one K/V array pair per key/value head, written once; the query heads of its group read it one
// after the other. q and output scalers are per query head, k and v scalers per key/value head;
// noise draws of an array (write, gain, read) use the key/value head's seed. The scaler a's are
// clamped to
// >= 1e-20. Whole-sequence forward/backward use the fast kernel; decoding simulates the arrays
// token by token (slot = t mod M, leakage by age, circular overwrite).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "gaincell/array/head_array.h"
#include "gaincell/attention/attention.h"
#include "gaincell/attention/gaincell_kernel.h"

namespace gaincell {

// The variants' names, and the hardware configuration a variant uses when the user names none.
std::vector<std::string> gaincell_attention_names();
bool is_gaincell_attention(const std::string& name);
HwConfig gaincell_default_hw(const std::string& attention_name);
// The cell model selected by a variant name; throws for a name that is not a gain-cell variant.
CellModel gaincell_cell_model(const std::string& attention_name);
// The hardware the variant runs from `hw`: hw with the variant's cell model (the rule of
// attention_hardware() in attention.h), validated.
HwConfig gaincell_variant_hw(const std::string& attention_name, const HwConfig& hw);

std::unique_ptr<Attention> make_gaincell_attention(const std::string& name,
                                                   const AttentionContext& ctx);

class GainCellAttention : public Attention {
 public:
  // Scaler order in every per-scaler array below.
  enum Scaler { kQ = 0, kK = 1, kV = 2, kOut = 3 };

  GainCellAttention(std::string name, const AttentionContext& ctx);

  std::string name() const override { return name_; }
  std::vector<ParamSpec> param_specs() const override;
  void bind_params(std::span<const TensorRef> refs) override;
  void forward(const float* q, const float* k, const float* v, float* out, int B, int T,
               bool training) override;
  void backward(const float* q, const float* k, const float* v, const float* dout, float* dq,
                float* dk, float* dv, int B, int T) override;
  const ScalerStatistics* scaler_statistics() const override;
  void set_record_targets(bool on) override { record_targets_ = on; }

  const HwConfig& hw() const { return params_.hw; }
  const GainCellKernelParams& kernel_params() const { return params_; }
  int n_head() const { return n_head_; }
  int n_kv_head() const { return n_kv_head_; }
  // Heads a scaler has: query heads for q and output, key/value heads for k and v.
  int scaler_heads(Scaler s) const;
  int head_dim() const { return head_dim_; }
  int layer() const { return layer_; }
  // Effective scaler values of head h (a query head for q/output, a key/value head for k/v; a
  // clamped to >= 1e-20), for the decode state and tests.
  float scaler_a(Scaler s, int h) const;
  float scaler_b(Scaler s, int h) const;
  // Use the plain loop reference instead of the fast kernel (tests).
  void set_use_reference_kernel(bool on) { use_reference_ = on; }

 protected:
  // The simulated arrays (GainCellDecodeState); no KV cache, so `format` is always kF32.
  std::unique_ptr<AttentionDecodeState> new_decode_state(KvCacheFormat format) const override;

 private:
  struct Saved;
  std::string name_;
  int n_head_, n_kv_head_, head_dim_, layer_;
  GainCellKernelParams params_;
  Quantizer quant_[3];  // q, k, v
  // Bound storage: a, b per scaler ([n_head] each), grads may be null; targets (buffers).
  TensorRef a_[4], b_[4], target_mean_[4], target_std_[4];
  std::vector<float> own_storage_;  // used until bind_params() (standalone use in tests)
  bool record_targets_ = false;
  bool use_reference_ = false;
  ScalerStatistics stats_;
  std::shared_ptr<Saved> saved_;
  std::vector<GainCellWorkspace> workspaces_;  // one per thread, kept across calls

  // forward(): keep = keep what backward() needs; record_statistics = training statistics.
  void run_forward(const float* q, const float* k, const float* v, float* out, int B, int T,
                   bool keep, bool record_statistics);
  void prepare_head(int h, const float* x, int n, Scaler s, float* out) const;
  uint64_t noise_seed(int h) const;
  // The kernel workspaces of omp_get_max_threads() threads, allocated once and reused.
  std::vector<GainCellWorkspace>& workspaces();
  void apply_write_effects(int h, int T, Scaler s, float* X, float* factor) const;
};

// Token-by-token decoding on simulated arrays: one HeadArray per key/value head; per head, the
// digital scalers and quantisers, then HeadArray::write/read (slot = t mod M, leakage by age,
// circular overwrite, noise seeded by (hw.noise.seed, layer, head)), then the output scaler.
// Scalers are read at every step, so a state follows parameter updates.
class GainCellDecodeState : public AttentionDecodeState {
 public:
  explicit GainCellDecodeState(const GainCellAttention& attn);
  void append(const float* k, const float* v) override;
  void attend(const float* q, float* out) override;
  void attend_on_team(const float* q, float* out, SpinBarrier& barrier, int threads,
                      std::exception_ptr& error) override;
  int64_t length() const override { return length_; }
  void reset() override;
  std::unique_ptr<AttentionDecodeState> clone() const override;
  bool assign_from(const AttentionDecodeState& other) override;

  // Hardware events summed over the arrays (inputs of the cost model): since construction or
  // reset, and of the last step. Under grouped-query attention an array is written once per token
  // and read once per query head of its group.
  ArrayEvents events() const;
  ArrayEvents last_step_events() const;
  const HeadArray& head(int h) const { return heads_.at(h); }

 private:
  void attend_group(const float* q, float* out, int g);
  const GainCellAttention& attn_;
  std::vector<HeadArray> heads_;
  std::vector<float> kq_, vq_, qq_;
  int64_t length_ = 0;
};

}  // namespace gaincell
