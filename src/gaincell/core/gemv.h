// Matrix-vector kernels for token-by-token decode, where every weight is read once per token and
// the speed is set by memory bandwidth. They run on the OpenMP team rather than OpenBLAS's
// thread pool: decode alternates matrix-vector products with OpenMP loops (attention, LayerNorm),
// and two pools that both spin-wait were measured to fight for the two cores (decode at 0.27 of
// the triad bandwidth with OpenBLAS sgemv and the default OMP_WAIT_POLICY, 0.76 with passive).
// reference_gemv_* are the plain loops the tests compare against.
#pragma once

#include <cstdint>

namespace gaincell {

// y[N] = W[K,N]ᵀ · x[K] + (accumulate ? y : 0). Each thread streams a contiguous band of rows.
void gemv_rows(const float* W, const float* x, float* y, int K, int N, bool accumulate);
// y[M] = A[M,K] · x[K] (+ y). Each output is one contiguous dot product.
void gemv_cols(const float* A, const float* x, float* y, int M, int K, bool accumulate);

void reference_gemv_rows(const float* W, const float* x, float* y, int K, int N, bool accumulate);
void reference_gemv_cols(const float* A, const float* x, float* y, int M, int K, bool accumulate);

}  // namespace gaincell
