// A barrier for the threads of one OpenMP team that spins briefly before it sleeps.
//
// Decode runs one small matrix-vector product after another (GPT-2 124M: four per layer and the
// LM head), each some tens of microseconds on two cores. With OMP_WAIT_POLICY=passive (the CLI's
// default, core/blas.h) every OpenMP region start and barrier puts the waiting thread to sleep on
// a futex and wakes it with a system call: the scheduler's wake-up latency on every product.
// Decode's team therefore stays inside one region for a stretch of products and meets at this
// barrier: a waiting thread spins (pause) for at most kSpin, long enough for its partner to finish
// the last rows of a product on an idle machine, then sleeps on a futex. So on a loaded machine a
// descheduled partner costs one bounded spin, not busy waiting for a time slice. It sleeps on the
// futex directly: std::atomic::wait (libstdc++ 12) first calls sched_yield a few times, which on
// a loaded machine gave the core away for a time slice and made decode 30-40 % slower.
#pragma once

#include <omp.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <exception>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace gaincell {

class SpinBarrier {
 public:
  static constexpr std::chrono::microseconds kSpin{20};

  // How long a waiting thread spins before it sleeps, for every barrier of the process (kSpin by
  // default). bench_threads' work-balance analysis sets 0 while it runs more threads than cores,
  // so that the CPU time a thread uses is its work, not its spinning.
  static void set_spin(std::chrono::microseconds spin) { spin_us_.store(spin.count()); }
  static std::chrono::microseconds spin() {
    return std::chrono::microseconds(spin_us_.load(std::memory_order_relaxed));
  }

  // Every one of the `threads` threads calls wait(threads); all return once the last arrived.
  // Writes before wait() are visible to every thread after it.
  void wait(int threads) {
    if (threads <= 1) return;
    const uint32_t generation = generation_.load();
    if (arrived_.fetch_add(1) == threads - 1) {
      arrived_.store(0, std::memory_order_relaxed);
      generation_.fetch_add(1);
      if (sleepers_.load() > 0) wake_all();
      return;
    }
    const auto spin_for = spin();
    const auto give_up = std::chrono::steady_clock::now() + spin_for;
    for (int i = 1; spin_for.count() > 0; ++i) {
      if (generation_.load(std::memory_order_acquire) != generation) return;
      pause();
      if (i % 64 == 0 && std::chrono::steady_clock::now() > give_up) break;
    }
    // Sequentially consistent with the last thread's increment then load of sleepers_: either it
    // sees this sleeper, or this thread sees the new generation (the futex re-checks it too).
    sleepers_.fetch_add(1);
    while (generation_.load() == generation) sleep_while(generation);
    sleepers_.fetch_sub(1);
  }

 private:
  static inline std::atomic<int64_t> spin_us_{kSpin.count()};
  static void pause() {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
  }
#ifdef __linux__
  uint32_t* word() {
    return reinterpret_cast<uint32_t*>(&generation_);
  }
  void sleep_while(uint32_t generation) {
    syscall(SYS_futex, word(), FUTEX_WAIT_PRIVATE, generation, nullptr, nullptr, 0);
  }
  void wake_all() {
    syscall(SYS_futex, word(), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr, nullptr, 0);
  }
#else
  void sleep_while(uint32_t generation) {
    generation_.wait(generation);
  }
  void wake_all() {
    generation_.notify_all();
  }
#endif
  static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
  std::atomic<int> arrived_{0};
  std::atomic<int> sleepers_{0};
  std::atomic<uint32_t> generation_{0};
};

// Runs fn() on the first thread of the calling OpenMP team while the others wait, then the team
// meets at `barrier`. An exception must not leave a parallel region: one from fn() is stored in
// `error`, for the caller to rethrow after the region.
template <class F>
void run_on_first_thread(F&& fn, SpinBarrier& barrier, int threads, std::exception_ptr& error) {
  if (omp_get_thread_num() == 0) {
    try {
      fn();
    } catch (...) {
      error = std::current_exception();
    }
  }
  barrier.wait(threads);
}

}  // namespace gaincell
