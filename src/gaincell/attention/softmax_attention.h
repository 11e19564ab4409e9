// Softmax attention of GPT-2 (spec §3.3) and its sliding-window variant (spec §3.4): query t sees
// keys j with max(0, t - W + 1) <= j <= t (spec §3.1 mask; W = 0 means plain causal).
//
// The fast kernel works per (batch, head) on blocks of queries: S = Q_blk Kᵀ over only the keys
// the block can see (the causal triangle and, for a window, the band are skipped), a row softmax,
// then O_blk = P V. Training keeps only the log-sum-exp per query; backward recomputes P.
// reference_softmax_attention_{forward,backward} are the plain loop-level oracle.
#pragma once

#include <memory>
#include <vector>

#include "gaincell/attention/attention.h"

namespace gaincell {

class SoftmaxAttention : public Attention {
 public:
  // window = 0: full causal softmax ("softmax"); window > 0: sliding window ("sliding").
  SoftmaxAttention(const AttentionContext& ctx, int window);
  std::string name() const override { return window_ > 0 ? "sliding" : "softmax"; }
  void forward(const float* q, const float* k, const float* v, float* out, int B, int T,
               bool training) override;
  void backward(const float* q, const float* k, const float* v, const float* dout, float* dq,
                float* dk, float* dv, int B, int T) override;
  bool has_kv_cache() const override { return true; }
  int window() const { return window_; }

 protected:
  std::unique_ptr<AttentionDecodeState> new_decode_state(KvCacheFormat format) const override;

 private:
  int n_head_, n_kv_head_, head_dim_, block_size_, window_;
  std::vector<float> lse_;  // [B, H, T] log-sum-exp of the scaled scores (training only)
  int lse_B_ = 0, lse_T_ = 0;
};

std::unique_ptr<Attention> make_softmax_attention(const AttentionContext& ctx);
// "softmax": the model's own window (ctx.model_window, 0 for GPT-2 and Llama).
// "sliding": ctx.window, or ctx.block_size when ctx.window is 0 (and at most ctx.model_window).
std::unique_ptr<Attention> make_sliding_attention(const AttentionContext& ctx);

// Loop-level oracle over q (B, H, T, D), k and v (B, Hkv, T, D); window 0 = causal; Hkv 0 = H.
void reference_softmax_attention_forward(const float* q, const float* k, const float* v, float* out,
                                         int B, int H, int T, int D, int window, int Hkv = 0);
void reference_softmax_attention_backward(const float* q, const float* k, const float* v,
                                          const float* dout, float* dq, float* dk, float* dv, int B,
                                          int H, int T, int D, int window, int Hkv = 0);

}  // namespace gaincell
