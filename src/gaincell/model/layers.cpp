#include "gaincell/model/layers.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "gaincell/core/blas.h"
#include "gaincell/core/error.h"
#include "gaincell/core/fast_math.h"

namespace gaincell::layers {

namespace {
// Below this many elements a loop runs on one thread: waking the OpenMP team costs more than the
// work (and on a loaded machine a barrier can wait for a descheduled thread).
constexpr int64_t kParallelMin = int64_t{1} << 15;
}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* inp, const float* weight,
                       const float* bias, int64_t N, int C, float eps) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    // Two passes in double: the variance of a residual stream with a large mean loses digits in
    // a one-pass float formula.
    // The simd reductions let the compiler keep several partial sums (vectorised; without them
    // a double sum is one serial chain of adds).
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int c = 0; c < C; c++) sum += x[c];
    const double m = sum / C;
    double var = 0.0;
#pragma omp simd reduction(+ : var)
    for (int c = 0; c < C; c++) var += (x[c] - m) * (x[c] - m);
    const float s = static_cast<float>(1.0 / std::sqrt(var / C + eps));
    const float mf = static_cast<float>(m);
    float* o = out + n * C;
    for (int c = 0; c < C; c++) o[c] = (x[c] - mf) * s * weight[c] + bias[c];
    mean[n] = mf;
    rstd[n] = s;
  }
}

void layernorm_recompute(float* out, const float* inp, const float* mean, const float* rstd,
                         const float* weight, const float* bias, int64_t N, int C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    float* o = out + n * C;
    const float m = mean[n], s = rstd[n];
    for (int c = 0; c < C; c++) o[c] = (x[c] - m) * s * weight[c] + bias[c];
  }
}

void layernorm_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, const float* mean, const float* rstd,
                        int64_t N, int C) {
  const bool parallel = N * C >= kParallelMin;
  const int n_threads = parallel ? omp_get_max_threads() : 1;
  // Per-thread partial sums of dweight/dbias, reduced at the end (rows are split across threads).
  std::vector<float> partial(static_cast<size_t>(n_threads) * 2 * C, 0.0f);
#pragma omp parallel num_threads(n_threads)
  {
    float* dw = partial.data() + static_cast<size_t>(omp_get_thread_num()) * 2 * C;
    float* db = dw + C;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float* x = inp + n * C;
      const float* g = dout + n * C;
      const float m = mean[n], s = rstd[n];
      // dx = rstd * (dnorm - mean(dnorm) - norm * mean(dnorm * norm)), dnorm = dout * weight.
      float sum_dnorm = 0.0f, sum_dnorm_norm = 0.0f;
      for (int c = 0; c < C; c++) {
        const float norm = (x[c] - m) * s;
        const float dnorm = g[c] * weight[c];
        sum_dnorm += dnorm;
        sum_dnorm_norm += dnorm * norm;
        dw[c] += norm * g[c];
        db[c] += g[c];
      }
      const float mean_dnorm = sum_dnorm / C, mean_dnorm_norm = sum_dnorm_norm / C;
      float* dx = dinp + n * C;
      for (int c = 0; c < C; c++) {
        const float norm = (x[c] - m) * s;
        dx[c] += s * (g[c] * weight[c] - mean_dnorm - norm * mean_dnorm_norm);
      }
    }
  }
  for (int t = 0; t < n_threads; t++) {
    const float* dw = partial.data() + static_cast<size_t>(t) * 2 * C;
    for (int c = 0; c < C; c++) {
      dweight[c] += dw[c];
      dbias[c] += dw[C + c];
    }
  }
}

void linear_forward(float* out, const float* inp, const float* weight, const float* bias, int64_t N,
                    int C, int OC, bool accumulate) {
  if (bias != nullptr) {
#pragma omp parallel for schedule(static) if (N * OC >= kParallelMin)
    for (int64_t n = 0; n < N; n++) {
      float* o = out + n * OC;
      if (accumulate) {
        for (int c = 0; c < OC; c++) o[c] += bias[c];
      } else {
        for (int c = 0; c < OC; c++) o[c] = bias[c];
      }
    }
  }
  const float beta = (bias != nullptr || accumulate) ? 1.0f : 0.0f;
  blas::gemm_nn(static_cast<int>(N), OC, C, inp, C, weight, OC, out, OC, 1.0f, beta);
}

void add_bias(float* out, const float* bias, int64_t N, int OC) {
#pragma omp parallel for schedule(static) if (N * OC >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    float* o = out + n * OC;
#pragma omp simd
    for (int c = 0; c < OC; c++) o[c] += bias[c];
  }
}

void residual_with_bias(float* out, const float* res, const float* bias, int64_t N, int C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* r = res + n * C;
    float* o = out + n * C;
    if (bias == nullptr) {
      std::copy(r, r + C, o);
      continue;
    }
#pragma omp simd
    for (int c = 0; c < C; c++) o[c] = r[c] + bias[c];
  }
}

void linear_backward(float* dinp, float* dweight, float* dbias, const float* dout, const float* inp,
                     const float* weight, int64_t N, int C, int OC) {
  const int n = static_cast<int>(N);
  blas::gemm_nt(n, C, OC, dout, OC, weight, OC, dinp, C);              // dinp = dout · Wᵀ
  blas::gemm_tn(C, OC, n, inp, C, dout, OC, dweight, OC, 1.0f, 1.0f);  // dW += inpᵀ · dout
  if (dbias != nullptr) {
    // Column sums, walking rows contiguously within blocks of columns (a strided walk down each
    // column would miss the cache on every element).
    constexpr int kBlock = 128;
#pragma omp parallel for schedule(static) if (N * OC >= kParallelMin)
    for (int c0 = 0; c0 < OC; c0 += kBlock) {
      const int width = std::min(kBlock, OC - c0);
      float acc[kBlock] = {};
      for (int64_t r = 0; r < N; r++) {
        const float* row = dout + r * OC + c0;
#pragma omp simd
        for (int c = 0; c < width; c++) acc[c] += row[c];
      }
      for (int c = 0; c < width; c++) dbias[c0 + c] += acc[c];
    }
  }
}

namespace {
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
}

void gelu_forward(float* out, const float* inp, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i];
    out[i] = 0.5f * x * (1.0f + fast_tanh(kGeluScale * (x + 0.044715f * x * x * x)));
  }
}

void gelu_backward(float* dinp, const float* inp, const float* dout, int64_t n) {
#pragma omp parallel for simd schedule(static) if (parallel : n >= kParallelMin)
  for (int64_t i = 0; i < n; i++) {
    const float x = inp[i];
    const float u = kGeluScale * (x + 0.044715f * x * x * x);
    const float th = fast_tanh(u);
    const float sech2 = 1.0f - th * th;
    const float du = kGeluScale * (1.0f + 3.0f * 0.044715f * x * x);
    dinp[i] = dout[i] * (0.5f * (1.0f + th) + 0.5f * x * sech2 * du);
  }
}

namespace {
// log(sum(exp(row))), stable: shifted by the max, vectorised float sums over blocks of 512,
// accumulated in double.
double row_logsumexp(const float* row, int V) {
  const float mx = max_value(row, V);
  double sum = 0.0;
  for (int v0 = 0; v0 < V; v0 += 512) {
    const int v1 = std::min(V, v0 + 512);
    float block = 0.0f;
#pragma omp simd reduction(+ : block)
    for (int v = v0; v < v1; v++) block += fast_exp(row[v] - mx);
    sum += block;
  }
  return mx + std::log(sum);
}
}  // namespace

namespace {
void check_targets(const int32_t* targets, int64_t N, int V) {
  // The message is built only on failure (a require() per row would allocate it every time).
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] >= V) {
      throw Error("target token " + std::to_string(targets[n]) + " at position " +
                  std::to_string(n) + " is outside the vocabulary (size " + std::to_string(V) +
                  ")");
    }
  }
}
}  // namespace

LossResult crossentropy_forward(float* losses, const float* logits, const int32_t* targets,
                                int64_t N, int V) {
  check_targets(targets, N, V);
  double total = 0.0;
  int64_t count = 0;
#pragma omp parallel for schedule(static) reduction(+ : total, count) if (N * V >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    if (targets[n] < 0) {
      losses[n] = 0.0f;
      continue;
    }
    const float* row = logits + n * V;
    const double loss = row_logsumexp(row, V) - row[targets[n]];
    losses[n] = static_cast<float>(loss);
    total += loss;
    count++;
  }
  return {count > 0 ? total / count : 0.0, count};
}

void crossentropy_backward_inplace(float* logits, const int32_t* targets, int64_t N, int V,
                                   int64_t count) {
  const float inv_count = count > 0 ? 1.0f / static_cast<float>(count) : 0.0f;
#pragma omp parallel for schedule(static) if (N * V >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    float* row = logits + n * V;
    if (targets[n] < 0) {
      std::fill(row, row + V, 0.0f);
      continue;
    }
    const double lse = row_logsumexp(row, V);
    for (int v = 0; v < V; v++) {
      row[v] = static_cast<float>(std::exp(row[v] - lse)) * inv_count;
    }
    row[targets[n]] -= inv_count;
  }
}

LossResult lm_head_loss_forward_chunked(float* losses, float* lse, float* buffer, const float* x,
                                        const float* wte, const int32_t* targets, int64_t N, int C,
                                        int V, int chunk) {
  check_targets(targets, N, V);
  std::vector<double> run_max(N, -INFINITY), run_sum(N, 0.0), target_logit(N, 0.0);
  for (int v0 = 0; v0 < V; v0 += chunk) {
    const int vc = std::min(chunk, V - v0);
    blas::gemm_nt(static_cast<int>(N), vc, C, x, C, wte + static_cast<int64_t>(v0) * C, C, buffer,
                  vc);
#pragma omp parallel for schedule(static) if (N * vc >= kParallelMin)
    for (int64_t n = 0; n < N; n++) {
      const float* row = buffer + n * vc;
      const float mx = max_value(row, vc);
      const double new_max = std::max(run_max[n], static_cast<double>(mx));
      const float shift = static_cast<float>(new_max);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int v = 0; v < vc; v++) sum += fast_exp(row[v] - shift);
      run_sum[n] = run_sum[n] * std::exp(run_max[n] - new_max) + sum;
      run_max[n] = new_max;
      const int t = targets[n];
      if (t >= v0 && t < v0 + vc) target_logit[n] = row[t - v0];
    }
  }
  double total = 0.0;
  int64_t count = 0;
  for (int64_t n = 0; n < N; n++) {
    const double row_lse = run_max[n] + std::log(run_sum[n]);
    lse[n] = static_cast<float>(row_lse);
    losses[n] = targets[n] < 0 ? 0.0f : static_cast<float>(row_lse - target_logit[n]);
    if (targets[n] >= 0) {
      total += row_lse - target_logit[n];
      count++;
    }
  }
  return {count > 0 ? total / count : 0.0, count};
}

void lm_head_loss_backward_chunked(float* dx, float* dwte, float* buffer, const float* x,
                                   const float* wte, const int32_t* targets, const float* lse,
                                   int64_t N, int C, int V, int chunk, int64_t count,
                                   bool buffer_holds_logits) {
  require(!buffer_holds_logits || chunk >= V,
          "lm_head_loss_backward_chunked: kept logits need the whole vocabulary in one chunk");
  const float inv_count = count > 0 ? 1.0f / static_cast<float>(count) : 0.0f;
  const int n = static_cast<int>(N);
  for (int v0 = 0; v0 < V; v0 += chunk) {
    const int vc = std::min(chunk, V - v0);
    const float* w = wte + static_cast<int64_t>(v0) * C;
    if (!buffer_holds_logits) blas::gemm_nt(n, vc, C, x, C, w, C, buffer, vc);
#pragma omp parallel for schedule(static) if (N * vc >= kParallelMin)
    for (int64_t r = 0; r < N; r++) {
      float* row = buffer + r * vc;
      if (targets[r] < 0) {
        std::fill(row, row + vc, 0.0f);
        continue;
      }
      const float shift = lse[r];
#pragma omp simd
      for (int v = 0; v < vc; v++) row[v] = fast_exp(row[v] - shift) * inv_count;
      const int t = targets[r];
      if (t >= v0 && t < v0 + vc) row[t - v0] -= inv_count;
    }
    blas::gemm_tn(vc, C, n, buffer, vc, x, C, dwte + static_cast<int64_t>(v0) * C, C, 1.0f, 1.0f);
    blas::gemm_nn(n, C, vc, buffer, vc, w, C, dx, C, 1.0f, v0 == 0 ? 0.0f : 1.0f);
  }
}

void embedding_forward(float* out, const int32_t* tokens, const float* wte, const float* wpe, int B,
                       int T, int C, int vocab_size) {
  for (int64_t i = 0; i < static_cast<int64_t>(B) * T; i++) {
    if (tokens[i] < 0 || tokens[i] >= vocab_size) {
      throw Error("input token " + std::to_string(tokens[i]) + " at position " + std::to_string(i) +
                  " is outside the vocabulary (size " + std::to_string(vocab_size) + ")");
    }
  }
#pragma omp parallel for schedule(static) if (int64_t{B} * T * C >= kParallelMin)
  for (int64_t i = 0; i < static_cast<int64_t>(B) * T; i++) {
    const float* e = wte + static_cast<int64_t>(tokens[i]) * C;
    float* o = out + i * C;
    if (wpe == nullptr) {
      std::copy(e, e + C, o);
      continue;
    }
    const float* p = wpe + (i % T) * C;
    for (int c = 0; c < C; c++) o[c] = e[c] + p[c];
  }
}

void embedding_backward(float* dwte, float* dwpe, const float* dout, const int32_t* tokens, int B,
                        int T, int C) {
  // Serial over rows: several positions may share a token, and this is a tiny O(B*T*C) pass.
  for (int64_t i = 0; i < static_cast<int64_t>(B) * T; i++) {
    const float* g = dout + i * C;
    float* e = dwte + static_cast<int64_t>(tokens[i]) * C;
    for (int c = 0; c < C; c++) e[c] += g[c];
    if (dwpe == nullptr) continue;
    float* p = dwpe + (i % T) * C;
    for (int c = 0; c < C; c++) p[c] += g[c];
  }
}

namespace {
// Copies between token-major (B, T, stride) rows at column `offset` and head-major (B, H, T, D).
template <bool kToHeads>
void permute_heads(float* heads, float* rows, int B, int T, int H, int D, int stride, int offset) {
#pragma omp parallel for collapse(2) schedule(static) if (int64_t{B} * T * H * D >= kParallelMin)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      for (int t = 0; t < T; t++) {
        float* hd = heads + ((static_cast<int64_t>(b) * H + h) * T + t) * D;
        float* rw = rows + (static_cast<int64_t>(b) * T + t) * stride + offset + h * D;
        if constexpr (kToHeads) {
          std::copy(rw, rw + D, hd);
        } else {
          std::copy(hd, hd + D, rw);
        }
      }
    }
  }
}
}  // namespace

void split_heads(float* q, float* k, float* v, const float* qkv, int B, int T, int H, int D) {
  const int C = H * D;
  float* src = const_cast<float*>(qkv);  // read only: permute_heads<true> never writes rows
  permute_heads<true>(q, src, B, T, H, D, 3 * C, 0);
  permute_heads<true>(k, src, B, T, H, D, 3 * C, C);
  permute_heads<true>(v, src, B, T, H, D, 3 * C, 2 * C);
}

void merge_heads_qkv(float* qkv, const float* q, const float* k, const float* v, int B, int T,
                     int H, int D) {
  const int C = H * D;
  permute_heads<false>(const_cast<float*>(q), qkv, B, T, H, D, 3 * C, 0);
  permute_heads<false>(const_cast<float*>(k), qkv, B, T, H, D, 3 * C, C);
  permute_heads<false>(const_cast<float*>(v), qkv, B, T, H, D, 3 * C, 2 * C);
}

void merge_heads(float* out, const float* heads, int B, int T, int H, int D) {
  permute_heads<false>(const_cast<float*>(heads), out, B, T, H, D, H * D, 0);
}

void split_heads_one(float* heads, const float* inp, int B, int T, int H, int D) {
  permute_heads<true>(heads, const_cast<float*>(inp), B, T, H, D, H * D, 0);
}

void split_heads_gqa(float* q, float* k, float* v, const float* qkv, int B, int T, int H, int Hkv,
                     int D) {
  const int stride = (H + 2 * Hkv) * D;
  float* src = const_cast<float*>(qkv);  // read only: permute_heads<true> never writes rows
  permute_heads<true>(q, src, B, T, H, D, stride, 0);
  permute_heads<true>(k, src, B, T, Hkv, D, stride, H * D);
  permute_heads<true>(v, src, B, T, Hkv, D, stride, (H + Hkv) * D);
}

void merge_heads_qkv_gqa(float* qkv, const float* q, const float* k, const float* v, int B, int T,
                         int H, int Hkv, int D) {
  const int stride = (H + 2 * Hkv) * D;
  permute_heads<false>(const_cast<float*>(q), qkv, B, T, H, D, stride, 0);
  permute_heads<false>(const_cast<float*>(k), qkv, B, T, Hkv, D, stride, H * D);
  permute_heads<false>(const_cast<float*>(v), qkv, B, T, Hkv, D, stride, (H + Hkv) * D);
}

namespace {
// Rotary embedding of one D-vector (rotate-half convention, see rope_apply): dst may equal src.
inline void rotate_half(float* dst, const float* src, const float* cos, const float* sin, int half,
                        float sign) {
  for (int i = 0; i < half; i++) {
    const float x1 = src[i], x2 = src[i + half], si = sign * sin[i];
    dst[i] = x1 * cos[i] - x2 * si;
    dst[i + half] = x2 * cos[i] + x1 * si;
  }
}

// One pass over the fused q|k|v rows for the layout changes (and rotations) of split_qkv_heads
// (kToHeads) and merge_qkv_heads: a single parallel region instead of one per tensor and one per
// rotation, and each row is read or written once.
template <bool kToHeads>
void qkv_rows_and_heads(float* rows, float* q, float* k, float* v, int B, int T, int H, int Hkv,
                        int D, const float* cos, const float* sin, int64_t pos0) {
  const int heads = H + 2 * Hkv, half = D / 2;
  const float sign = kToHeads ? 1.0f : -1.0f;  // backward rotates back
#pragma omp parallel for collapse(2) \
    schedule(static) if (int64_t{B} * T * heads * D >= kParallelMin)
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T; t++) {
      float* row = rows + (static_cast<int64_t>(b) * T + t) * heads * D;
      const float* c = cos == nullptr ? nullptr : cos + (pos0 + t) * half;
      const float* s = sin == nullptr ? nullptr : sin + (pos0 + t) * half;
      for (int j = 0; j < heads; j++) {
        float* base = j < H ? q : j < H + Hkv ? k : v;
        const int h = j < H ? j : j < H + Hkv ? j - H : j - H - Hkv;
        const int n = j < H ? H : Hkv;
        float* hd = base + ((static_cast<int64_t>(b) * n + h) * T + t) * D;
        float* rw = row + static_cast<int64_t>(j) * D;
        const bool rotate = c != nullptr && j < H + Hkv;  // q and k; never v
        float* dst = kToHeads ? hd : rw;
        const float* src = kToHeads ? rw : hd;
        if (rotate) {
          rotate_half(dst, src, c, s, half, sign);
        } else {
          std::copy(src, src + D, dst);
        }
      }
    }
  }
}
}  // namespace

void split_qkv_heads(float* q, float* k, float* v, const float* qkv, int B, int T, int H, int Hkv,
                     int D, const float* cos, const float* sin, int64_t pos0) {
  // read only: qkv_rows_and_heads<true> never writes rows
  qkv_rows_and_heads<true>(const_cast<float*>(qkv), q, k, v, B, T, H, Hkv, D, cos, sin, pos0);
}

void merge_qkv_heads(float* qkv, const float* dq, const float* dk, const float* dv, int B, int T,
                     int H, int Hkv, int D, const float* cos, const float* sin, int64_t pos0) {
  // read only: qkv_rows_and_heads<false> never writes the heads
  qkv_rows_and_heads<false>(qkv, const_cast<float*>(dq), const_cast<float*>(dk),
                            const_cast<float*>(dv), B, T, H, Hkv, D, cos, sin, pos0);
}

// ---------------------------------------------------------------------------------------------
// Llama-family kernels

namespace {
// Rows of `out` start as the bias (or keep their contents when accumulating).
void init_rows_with_bias(float* out, const float* bias, int64_t N, int OC, bool accumulate) {
  if (bias == nullptr) return;
#pragma omp parallel for schedule(static) if (N * OC >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    float* o = out + n * OC;
    if (accumulate) {
      for (int c = 0; c < OC; c++) o[c] += bias[c];
    } else {
      std::copy(bias, bias + OC, o);
    }
  }
}

// Column sums of dout [N, OC] added to dbias, walking rows contiguously within column blocks.
void accumulate_column_sums(float* dbias, const float* dout, int64_t N, int OC) {
  constexpr int kBlock = 128;
#pragma omp parallel for schedule(static) if (N * OC >= kParallelMin)
  for (int c0 = 0; c0 < OC; c0 += kBlock) {
    const int width = std::min(kBlock, OC - c0);
    float acc[kBlock] = {};
    for (int64_t r = 0; r < N; r++) {
      const float* row = dout + r * OC + c0;
#pragma omp simd
      for (int c = 0; c < width; c++) acc[c] += row[c];
    }
    for (int c = 0; c < width; c++) dbias[c0 + c] += acc[c];
  }
}
}  // namespace

void linear_nt_forward(float* out, const float* inp, const float* weight, const float* bias,
                       int64_t N, int C, int OC, bool accumulate) {
  init_rows_with_bias(out, bias, N, OC, accumulate);
  const float beta = (bias != nullptr || accumulate) ? 1.0f : 0.0f;
  blas::gemm_nt(static_cast<int>(N), OC, C, inp, C, weight, C, out, OC, 1.0f, beta);
}

void linear_nt_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                        const float* inp, const float* weight, int64_t N, int C, int OC) {
  const int n = static_cast<int>(N);
  blas::gemm_nn(n, C, OC, dout, OC, weight, C, dinp, C);              // dinp = dout · W
  blas::gemm_tn(OC, C, n, dout, OC, inp, C, dweight, C, 1.0f, 1.0f);  // dW += doutᵀ · inp
  if (dbias != nullptr) accumulate_column_sums(dbias, dout, N, OC);
}

void rmsnorm_forward(float* out, float* rstd, const float* inp, const float* weight, int64_t N,
                     int C, float eps) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    double sumsq = 0.0;
#pragma omp simd reduction(+ : sumsq)
    for (int c = 0; c < C; c++) sumsq += static_cast<double>(x[c]) * x[c];
    const float s = static_cast<float>(1.0 / std::sqrt(sumsq / C + eps));
    float* o = out + n * C;
    for (int c = 0; c < C; c++) o[c] = x[c] * s * weight[c];
    rstd[n] = s;
  }
}

void rmsnorm_recompute(float* out, const float* inp, const float* rstd, const float* weight,
                       int64_t N, int C) {
#pragma omp parallel for schedule(static) if (N * C >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* x = inp + n * C;
    float* o = out + n * C;
    for (int c = 0; c < C; c++) o[c] = x[c] * rstd[n] * weight[c];
  }
}

void rmsnorm_backward(float* dinp, float* dweight, const float* dout, const float* inp,
                      const float* weight, const float* rstd, int64_t N, int C) {
  const bool parallel = N * C >= kParallelMin;
  const int n_threads = parallel ? omp_get_max_threads() : 1;
  std::vector<float> partial(static_cast<size_t>(n_threads) * C, 0.0f);
#pragma omp parallel num_threads(n_threads)
  {
    float* dw = partial.data() + static_cast<size_t>(omp_get_thread_num()) * C;
#pragma omp for schedule(static)
    for (int64_t n = 0; n < N; n++) {
      const float* x = inp + n * C;
      const float* g = dout + n * C;
      const float s = rstd[n];
      // y = x s w, s = (mean(x²) + eps)^-1/2: dx = s (g w) - x s³ mean(g w x).
      float dot = 0.0f;
      for (int c = 0; c < C; c++) {
        dot += g[c] * weight[c] * x[c];
        dw[c] += g[c] * x[c] * s;
      }
      const float coef = s * s * s * dot / C;
      float* d = dinp + n * C;
      for (int c = 0; c < C; c++) d[c] += s * g[c] * weight[c] - coef * x[c];
    }
  }
  for (int t = 0; t < n_threads; t++) {
    const float* dw = partial.data() + static_cast<size_t>(t) * C;
    for (int c = 0; c < C; c++) dweight[c] += dw[c];
  }
}

void reference_rmsnorm_forward(float* out, const float* inp, const float* weight, int64_t N, int C,
                               float eps) {
  for (int64_t n = 0; n < N; n++) {
    double ms = 0.0;
    for (int c = 0; c < C; c++) ms += static_cast<double>(inp[n * C + c]) * inp[n * C + c] / C;
    for (int c = 0; c < C; c++)
      out[n * C + c] = static_cast<float>(inp[n * C + c] / std::sqrt(ms + eps) * weight[c]);
  }
}

void rope_apply(float* x, const float* cos, const float* sin, int B, int H, int T, int D,
                int64_t pos0, bool inverse) {
  const int half = D / 2;
  const float sign = inverse ? -1.0f : 1.0f;
#pragma omp parallel for collapse(2) schedule(static) if (int64_t{B} * H * T * D >= kParallelMin)
  for (int b = 0; b < B; b++) {
    for (int h = 0; h < H; h++) {
      for (int t = 0; t < T; t++) {
        float* r = x + ((static_cast<int64_t>(b) * H + h) * T + t) * D;
        const float* c = cos + (pos0 + t) * half;
        const float* s = sin + (pos0 + t) * half;
        rotate_half(r, r, c, s, half, sign);
      }
    }
  }
}

namespace {
// fast_exp (2 ulp) rather than std::exp: the library call kept these loops scalar, and SwiGLU
// runs on N x intermediate_size elements per layer. fast_exp(-x) is 0 or +inf at the extremes,
// so the sigmoid saturates to 1 or 0 as it should.
inline float sigmoid(float x) {
  return 1.0f / (1.0f + fast_exp(-x));
}
}  // namespace

void swiglu_forward(float* out, const float* gu, int64_t N, int I) {
#pragma omp parallel for schedule(static) if (N * I >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* g = gu + n * 2 * I;
    const float* u = g + I;
    float* o = out + n * I;
#pragma omp simd
    for (int i = 0; i < I; i++) o[i] = g[i] * sigmoid(g[i]) * u[i];
  }
}

void swiglu_backward(float* dgu, const float* gu, const float* dout, int64_t N, int I) {
#pragma omp parallel for schedule(static) if (N * I >= kParallelMin)
  for (int64_t n = 0; n < N; n++) {
    const float* g = gu + n * 2 * I;
    const float* u = g + I;
    const float* d = dout + n * I;
    float* dg = dgu + n * 2 * I;
    float* du = dg + I;
#pragma omp simd
    for (int i = 0; i < I; i++) {
      const float sg = sigmoid(g[i]);
      const float silu = g[i] * sg;
      du[i] = d[i] * silu;
      dg[i] = d[i] * u[i] * sg * (1.0f + g[i] * (1.0f - sg));  // silu' = s (1 + x (1 - s))
    }
  }
}

}  // namespace gaincell::layers
