#include "gaincell/core/gemv.h"

#include <omp.h>

#include <algorithm>
#include <vector>

namespace gaincell {

namespace {
constexpr int64_t kParallelMin = int64_t{1} << 16;  // multiply-adds worth waking the team
}

void gemv_rows(const float* W, const float* x, float* y, int K, int N, bool accumulate) {
  const bool parallel = int64_t{K} * N >= kParallelMin;
  const int n_threads = parallel ? omp_get_max_threads() : 1;
  // Per-thread partial sums over a band of rows, reduced at the end: every thread reads one
  // contiguous stretch of W (ideal for the prefetchers) and its accumulator stays in L1.
  std::vector<float> partial(static_cast<size_t>(n_threads) * N, 0.0f);
#pragma omp parallel num_threads(n_threads)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int k0 = static_cast<int>(int64_t{K} * t / nt),
              k1 = static_cast<int>(int64_t{K} * (t + 1) / nt);
    float* acc = partial.data() + static_cast<size_t>(t) * N;
    for (int k = k0; k < k1; k++) {
      const float xk = x[k];
      const float* row = W + static_cast<int64_t>(k) * N;
#pragma omp simd
      for (int n = 0; n < N; n++) acc[n] += xk * row[n];
    }
  }
  for (int n = 0; n < N; n++) {
    float sum = accumulate ? y[n] : 0.0f;
    for (int t = 0; t < n_threads; t++) sum += partial[static_cast<size_t>(t) * N + n];
    y[n] = sum;
  }
}

void gemv_cols(const float* A, const float* x, float* y, int M, int K, bool accumulate) {
#pragma omp parallel for schedule(static) if (int64_t{M} * K >= kParallelMin)
  for (int m = 0; m < M; m++) {
    const float* row = A + static_cast<int64_t>(m) * K;
    float dot = 0.0f;
#pragma omp simd reduction(+ : dot)
    for (int k = 0; k < K; k++) dot += row[k] * x[k];
    y[m] = accumulate ? y[m] + dot : dot;
  }
}

void reference_gemv_rows(const float* W, const float* x, float* y, int K, int N, bool accumulate) {
  for (int n = 0; n < N; n++) {
    double sum = accumulate ? y[n] : 0.0;
    for (int k = 0; k < K; k++)
      sum += static_cast<double>(W[static_cast<int64_t>(k) * N + n]) * x[k];
    y[n] = static_cast<float>(sum);
  }
}

void reference_gemv_cols(const float* A, const float* x, float* y, int M, int K, bool accumulate) {
  for (int m = 0; m < M; m++) {
    double sum = accumulate ? y[m] : 0.0;
    for (int k = 0; k < K; k++)
      sum += static_cast<double>(A[static_cast<int64_t>(m) * K + k]) * x[k];
    y[m] = static_cast<float>(sum);
  }
}

}  // namespace gaincell
