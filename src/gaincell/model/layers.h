// The GPT-2 layer kernels (forward and hand-written backward), fp32, row-major [N rows, C columns].
// Backward kernels ACCUMULATE into parameter gradients and into `dinp` (the residual-stream
// gradient), as the residual connections need; callers zero them once per step.
// Each kernel is small and standalone so tests can check it by finite differences.
#pragma once

#include <cstdint>

namespace gaincell::layers {

// LayerNorm over the last dimension: out = (x - mean) * rstd * weight + bias; stores mean and
// rstd per row for the backward pass (and for recomputing `out` there).
void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int C, float eps);
// Recomputes `out` from the stored statistics (activation recomputation saves memory).
void layernorm_recompute(float* out, const float* inp, const float* mean, const float* rstd,
                         const float* weight, const float* bias, int64_t N, int C);
void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int64_t N, int C);

// Conv1D linear layer (Hugging Face layout): out[N,OC] = inp[N,C] · W[C,OC] + bias.
// With accumulate = true the result is added to `out` (used for residual additions).
void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int C, int OC, bool accumulate = false);
// out[n, :] += bias for each of the N rows.
void add_bias(float* out, const float* bias, int64_t N, int OC);
// out[n, :] = res[n, :] + bias (bias null: a copy): the start of a residual block's output, to
// which the projection's GEMM then adds (one sweep for the copy and the bias).
void residual_with_bias(float* out, const float* res, const float* bias, int64_t N, int C);
// dinp is OVERWRITTEN (it is always a scratch buffer); dweight, dbias accumulate. dbias may be
// null.
void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int C, int OC);

// tanh-approximated GELU ("gelu_new" in Hugging Face GPT-2).
void gelu_forward(float* out, const float* inp, int64_t n);
// dinp = dout * gelu'(inp); dinp may alias dout.
void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n);

// Cross-entropy of each row of logits [N,V] against targets (< 0: ignored, loss 0).
// Writes per-row losses and returns the mean over counted rows (0 if none) and their count.
struct LossResult {
  double mean = 0.0;
  int64_t count = 0;
};
LossResult crossentropy_forward(float* losses, const float* logits, const int32_t* targets,
                                int64_t N, int V);
// Overwrites `logits` in place with d(mean loss)/d(logits) = (softmax - onehot) / count; ignored
// rows become 0. In place because the logits of a 50257-token vocabulary dominate memory.
void crossentropy_backward_inplace(float* logits, const int32_t* targets, int64_t N, int V,
                                   int64_t count);

// Tied LM head + cross-entropy without materialising the [N, V] logits (training memory): logits
// are produced `chunk` vocabulary columns at a time into `buffer` [N, chunk], with an online
// log-sum-exp per row. Forward writes lse [N] and per-row losses; returns the mean as above.
LossResult lm_head_loss_forward_chunked(float* losses, float* lse, float* buffer, const float* x,
                                        const float* wte, const int32_t* targets, int64_t N, int C,
                                        int V, int chunk);
// Recomputes each logits chunk, turns it into d(mean loss)/d(logits) with the stored lse, and
// accumulates dwte += dlogitsᵀ x; OVERWRITES dx = dlogits · wte. Each dwte row is touched once.
// buffer_holds_logits: the forward ran with chunk >= V and its [N, V] logits are still in
// `buffer`, so they are used in place instead of recomputed (one LM-head GEMM fewer).
void lm_head_loss_backward_chunked(float* dx, float* dwte, float* buffer, const float* x,
                                   const float* wte, const int32_t* targets, const float* lse,
                                   int64_t N, int C, int V, int chunk, int64_t count,
                                   bool buffer_holds_logits = false);

// Token + position embedding: out[b,t,:] = wte[tok] + wpe[t] (wpe null: no position embedding,
// the Llama family). Throws on out-of-range tokens.
void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                       int T, int C, int vocab_size);
void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                        int T, int C);

// (B, T, 3C) c_attn output -> q, k, v each (B, H, T, D); and the inverse.
void split_heads(float* q, float* k, float* v, const float* qkv, int B, int T, int H, int D);
void merge_heads_qkv(float* qkv, const float* q, const float* k, const float* v, int B, int T,
                     int H, int D);
// (B, H, T, D) -> (B, T, H*D) and the inverse.
void merge_heads(float* out, const float* heads, int B, int T, int H, int D);
void split_heads_one(float* heads, const float* inp, int B, int T, int H, int D);

// Grouped-query form: (B, T, (H + 2 Hkv) D) fused q|k|v rows -> q (B, H, T, D), k and v
// (B, Hkv, T, D); and the inverse. Hkv = H is the GPT-2 layout of split_heads.
void split_heads_gqa(float* q, float* k, float* v, const float* qkv, int B, int T, int H, int Hkv,
                     int D);
void merge_heads_qkv_gqa(float* qkv, const float* q, const float* k, const float* v, int B, int T,
                         int H, int Hkv, int D);

// The two above fused with the rotary embedding of the Llama family (rope_apply): q and k rotated
// at positions pos0 + t while they are copied (cos, sin null: no rotation, GPT-2), in one pass
// over the rows. merge_qkv_heads rotates dq and dk back (the backward of the rotation) while it
// gathers them. Equal to split_heads_gqa then rope_apply (and rope_apply inverse, then
// merge_heads_qkv_gqa), which stay as their reference.
void split_qkv_heads(float* q, float* k, float* v, const float* qkv, int B, int T, int H, int Hkv,
                     int D, const float* cos, const float* sin, int64_t pos0);
void merge_qkv_heads(float* qkv, const float* dq, const float* dk, const float* dv, int B, int T,
                     int H, int Hkv, int D, const float* cos, const float* sin, int64_t pos0);

// ---------------------------------------------------------------------------------------------
// Llama-family kernels (RMSNorm, nn.Linear layout, rotary embeddings, SwiGLU).

// nn.Linear layer (Hugging Face Llama layout): out[N,OC] = inp[N,C] · W[OC,C]ᵀ + bias (bias may
// be null); accumulate = true adds to `out`.
void linear_nt_forward(float* out, const float* inp, const float* weight, const float* bias,
                       int64_t N, int C, int OC, bool accumulate = false);
// dinp is OVERWRITTEN; dweight (and dbias unless null) accumulate.
void linear_nt_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, int64_t N, int C, int OC);

// RMSNorm: out = x * rstd * weight, rstd = 1 / sqrt(mean(x²) + eps) per row (stored).
void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int C, float eps);
void rmsnorm_recompute(float* out, const float* inp, const float* rstd, const float* weight,
                       int64_t N, int C);
// dinp ACCUMULATES (residual stream), dweight accumulates.
void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int C);
// Plain loop-level reference of rmsnorm_forward (double accumulation), for tests.
void reference_rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t N, int C,
                               float eps);

// Rotary position embedding in Hugging Face's rotate-half convention, in place on (B, H, T, D)
// heads: for i < D/2, (x_i, x_{i+D/2}) is rotated by the angle pos * inv_freq_i with
// cos/sin tables [positions][D/2]; token t of the block sits at position pos0 + t.
// inverse = true rotates by the negative angle (the backward pass: the rotation is orthogonal).
void rope_apply(float* x, const float* cos, const float* sin, int B, int H, int T, int D,
                int64_t pos0, bool inverse = false);

// SwiGLU on fused gate|up rows gu [N, 2I]: out[n, i] = silu(gu[n, i]) * gu[n, I + i].
void swiglu_forward(float* out, const float* gu, int64_t N, int I);
// dgu [N, 2I] is OVERWRITTEN from dout [N, I].
void swiglu_backward(float* dgu, const float* gu, const float* dout, int64_t N, int I);

}  // namespace gaincell::layers
