// Thin row-major wrappers over OpenBLAS cblas_sgemm, so model code reads like the
// math (C = A·B, C = A·Bᵀ, ...) instead of a dozen positional BLAS arguments.
//
// Threading: OpenBLAS (pthread build) runs its own thread pool. Large GEMMs called from serial
// code use it; kernels that run many small GEMMs inside an OpenMP parallel region must first pin
// OpenBLAS to one thread with BlasSingleThreadScope, or both pools oversubscribe the cores.
#pragma once

#include <cblas.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <ctime>
#include <iterator>
#include <string_view>

namespace gaincell::blas {

// GEMM accounting, for bench_threads' work-balance analysis: while it is on, every thread adds
// the CPU time it spends inside sgemm calls (its own share of a product, and its wait for
// OpenBLAS's workers, which spin) to its own counter, so the analysis can tell the code's own
// work from OpenBLAS's, which OpenBLAS splits. Off (always, outside that benchmark): one relaxed
// load per call.
inline std::atomic<bool> gemm_accounting{false};
inline thread_local double gemm_thread_cpu_seconds = 0.0;

inline double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// cblas_sgemm, row-major; every product of the library goes through it.
inline void sgemm(CBLAS_TRANSPOSE trans_a, CBLAS_TRANSPOSE trans_b, int M, int N, int K,
                  float alpha, const float* A, int lda, const float* B, int ldb, float beta,
                  float* C, int ldc) {
  if (!gemm_accounting.load(std::memory_order_relaxed)) {
    cblas_sgemm(CblasRowMajor, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const double start = thread_cpu_seconds();
  cblas_sgemm(CblasRowMajor, trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  gemm_thread_cpu_seconds += thread_cpu_seconds() - start;
}

// C[M,N] = alpha * A[M,K] · B[K,N] + beta * C (all row-major, dense leading dims unless given).
inline void gemm_nn(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                    int ldc, float alpha = 1.0f, float beta = 0.0f) {
  sgemm(CblasNoTrans, CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
// C[M,N] = alpha * A[M,K] · B[N,K]ᵀ + beta * C.
inline void gemm_nt(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                    int ldc, float alpha = 1.0f, float beta = 0.0f) {
  sgemm(CblasNoTrans, CblasTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
// C[M,N] = alpha * A[K,M]ᵀ · B[K,N] + beta * C.
inline void gemm_tn(int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
                    int ldc, float alpha = 1.0f, float beta = 0.0f) {
  sgemm(CblasTrans, CblasNoTrans, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

// OpenBLAS picks its kernels from the CPU model. Releases older than the CPU (Debian 12 ships
// 0.3.21) do not know recent Intel models (family 6 model 207, Emerald Rapids, for one) and fall
// back to the SSE3 "Prescott" kernels: sgemm then ran at 2.8 GFLOP/s on one core of this project's
// build machine against 11.5 with the AVX-512 kernels (OPENBLAS_CORETYPE=SkylakeX). Returns the
// core type to ask for (through OPENBLAS_CORETYPE, read when the library loads) when OpenBLAS chose
// a pre-AVX2 core on a CPU with AVX-512 (SkylakeX) or AVX2 + FMA (Haswell); null otherwise.
inline const char* better_openblas_core() {
  const std::string_view core = openblas_get_corename();
  constexpr std::string_view kGeneric[] = {"Prescott",  "Core2",  "Penryn", "Dunnington",
                                           "Nehalem",   "Atom",   "Katmai", "Coppermine",
                                           "Northwood", "Banias", "unknown"};
  if (std::find(std::begin(kGeneric), std::end(kGeneric), core) == std::end(kGeneric))
    return nullptr;
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "Haswell";
  return nullptr;
}

// Two settings that libgomp and OpenBLAS read when they are loaded, before main, so a process
// (the CLI, every benchmark) restarts itself once with them set; a user's own settings are kept:
// - OMP_WAIT_POLICY=passive: OpenMP threads that spin after a parallel region take the cores from
//   OpenBLAS's own threads (two thread pools on two cores): training the demo model ran at 7.2k
//   tokens/s with the default policy and 17.4k with the passive one; a 60-token prefill of
//   GPT-2 124M took 0.46 s against 0.14 s.
// - OPENBLAS_THREAD_TIMEOUT=4: OpenBLAS's idle workers sleep after 2^4 cycles instead of calling
//   sched_yield for 2^28, where they took the cores from the OpenMP team between GEMMs. The
//   demo's training steps (AVX2 kernels, 80 steps) took 12.9-14.6 s instead of 15.9-18.1 s;
//   GPT-2 124M training ran 4% faster (189 against 182 tokens/s).
// - OPENBLAS_CORETYPE, only where OpenBLAS fell back to its SSE3 kernels on a CPU it does not know
//   (better_openblas_core): 4x faster sgemm on such machines.
// Returns only when no restart was needed or execv failed (then the process runs as it is).
inline void configure_threads_and_restart(char** argv) {
  bool restart = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    restart = true;
  }
  if (std::getenv("OPENBLAS_THREAD_TIMEOUT") == nullptr) {
    setenv("OPENBLAS_THREAD_TIMEOUT", "4", 1);
    restart = true;
  }
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    if (const char* core = better_openblas_core()) {
      setenv("OPENBLAS_CORETYPE", core, 1);
      restart = true;
    }
  }
  if (restart) execv("/proc/self/exe", argv);
}

inline int num_threads() {
  return openblas_get_num_threads();
}
inline void set_num_threads(int n) {
  openblas_set_num_threads(n);
}

// Pins OpenBLAS to one thread for the lifetime of the scope (restores the previous count).
class BlasSingleThreadScope {
 public:
  BlasSingleThreadScope() : previous_(openblas_get_num_threads()) {
    if (previous_ != 1) openblas_set_num_threads(1);
  }
  ~BlasSingleThreadScope() {
    if (previous_ != 1) openblas_set_num_threads(previous_);
  }
  BlasSingleThreadScope(const BlasSingleThreadScope&) = delete;
  BlasSingleThreadScope& operator=(const BlasSingleThreadScope&) = delete;

 private:
  int previous_;
};

}  // namespace gaincell::blas
