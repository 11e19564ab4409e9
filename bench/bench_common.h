// What every benchmark shares: timing, random inputs, and the machine's limits, measured in the
// same run as the benchmark's own rates so that a fraction compares numbers taken under the same
// load (OpenBLAS sgemm GFLOP/s for compute-bound passes, a STREAM-style triad's GB/s for
// memory-bound ones).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gaincell/core/blas.h"
#include "gaincell/core/huge_pages.h"

namespace gaincell::bench {

using Clock = std::chrono::steady_clock;

inline double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// CPU seconds of the calling thread (blas::thread_cpu_seconds) and of the whole process: robust
// against other processes sharing the cores.
using blas::thread_cpu_seconds;
inline double process_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return static_cast<double>(ts.tv_sec) + 1e-9 * static_cast<double>(ts.tv_nsec);
}

// Best time of `reps` runs after one warm-up: on a shared machine the best run is the least noisy.
template <typename F>
double best_time(int reps, F&& run) {
  run();
  double best = 1e30;
  for (int r = 0; r < std::max(reps, 1); r++) {
    const auto start = Clock::now();
    run();
    best = std::min(best, seconds_since(start));
  }
  return best;
}

// OpenBLAS sgemm on 2048^3 with the current thread count (FLOPs = 2 n^3).
inline double measure_sgemm_gflops(int reps) {
  const int n = 2048;
  std::unique_ptr<float[]> a(new float[size_t{n} * n]), b(new float[size_t{n} * n]),
      c(new float[size_t{n} * n]);
  std::fill_n(a.get(), size_t{n} * n, 0.5f);
  std::fill_n(b.get(), size_t{n} * n, 0.25f);
  const double t =
      best_time(reps, [&] { blas::gemm_nn(n, n, n, a.get(), n, b.get(), n, c.get(), n); });
  return 2.0 * n * n * n / t / 1e9;
}

// STREAM triad a = b + s c over OpenMP threads, 12 bytes per element. The default 3 x 256 MiB is
// larger than this machine's 480 MiB L3, like the ~530 MB a GPT-2 124M decode step streams.
inline double measure_triad_gbps(int reps, size_t elements = size_t{1} << 26) {
  // Huge-page backed where the kernel offers them, as decode's weights (core/huge_pages.h); first
  // touched by the loop below, on the threads that stream them.
  auto unmap = [elements](float* p) {
    gaincell::unmap_huge_page_buffer(p, elements * sizeof(float));
  };
  auto map = [&] {
    return std::unique_ptr<float[], decltype(unmap)>(
        static_cast<float*>(gaincell::map_huge_page_buffer(elements * sizeof(float))), unmap);
  };
  auto a = map(), b = map(), c = map();
#pragma omp parallel for schedule(static)
  for (size_t i = 0; i < elements; i++) {
    a[i] = 0.0f;
    b[i] = 1.0f;
    c[i] = 2.0f;
  }
  const double t = best_time(reps, [&] {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < elements; i++) a[i] = b[i] + 0.5f * c[i];
  });
  return 3.0 * sizeof(float) * elements / t / 1e9;
}

// The size in bytes of the largest CPU cache the kernel reports for cpu0 (0 when unknown): the
// last-level cache that cpu0 shares (on chiplet CPUs one complex's L3, not the socket's total).
// Recorded beside decode rates: a model whose weights fit in it (q8 GPT-2 124M is 131 MB; the
// development VM reports 300 MB) can be served partly from cache, above the DRAM bound.
inline double last_level_cache_bytes() {
  double largest = 0;
  for (int index = 0; index < 8; ++index) {
    std::ifstream in("/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/size");
    std::string size;
    if (!(in >> size) || size.empty()) continue;
    double bytes = std::strtod(size.c_str(), nullptr);
    if (size.back() == 'K') bytes *= 1024.0;
    if (size.back() == 'M') bytes *= 1024.0 * 1024.0;
    largest = std::max(largest, bytes);
  }
  return largest;
}

// The median of `values` (the mean of the two middle ones for an even count; 0 when empty).
inline double median(std::vector<double> values) {
  if (values.empty()) return 0.0;
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 == 1 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

// Restarts the benchmark once with the settings the gaincell CLI runs with
// (blas::configure_threads_and_restart: OMP_WAIT_POLICY=passive, OPENBLAS_CORETYPE where OpenBLAS
// fell back to SSE3), so the benchmark measures what users run. Recorded by openblas_core() and
// omp_wait_policy().
inline void use_cli_thread_settings(char** argv) {
  blas::configure_threads_and_restart(argv);
}
inline std::string openblas_thread_timeout() {
  const char* timeout = std::getenv("OPENBLAS_THREAD_TIMEOUT");
  return timeout ? timeout : "default";
}
inline std::string omp_wait_policy() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  return policy ? policy : "default";
}
inline std::string openblas_core() {
  return openblas_get_corename();
}

inline std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(n);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % vocab);
  return tokens;
}

// Seconds of `steps` decode steps after a prefill of the first `context` tokens of `prompt`
// (DecodeSession: reset, prefill, then step through the next tokens), best of `reps` after one
// warm-up.
template <class Session>
double best_decode_seconds(Session& session, const std::vector<int32_t>& prompt, int context,
                           int steps, int reps) {
  double best = 1e30;
  for (int r = 0; r <= reps; r++) {
    session.reset();
    session.prefill(prompt.data(), context);
    const auto start = Clock::now();
    for (int s = 0; s < steps; s++) session.step(prompt[context + s]);
    if (r > 0) best = std::min(best, seconds_since(start));
  }
  return best;
}

}  // namespace gaincell::bench
