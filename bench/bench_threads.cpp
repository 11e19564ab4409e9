// Thread scaling (issue 14 item 4): the engine's main passes at 1, 2, 4, ... up to the machine's
// cores (and the core count itself), each next to the machine limit measured at the same thread
// count in the same run. Prints one JSON object.
//
//   bench_threads [--max N] [--reps N] [--model gpt2|tiny|...] [--weights f32|bf16|q8]
//
// Per thread count n: sgemm GFLOP/s (2048^3) and triad GB/s (the limits), the whole-sequence
// forward (B=1, T=256) in tokens/s and as a fraction of sgemm(n), decode steps at a 128-token
// context in tokens/s and as a fraction of the triad bound, and the speedup over n = 1 with the
// parallel efficiency speedup / n. A pass that serialises shows an efficiency falling with n
// while its limit keeps scaling.
//
// Work balance (--balance 4,8,16,32,64, the default list; "none" skips it): how the same passes
// share their work among n threads, for n beyond the cores this machine has (a 2-core machine
// cannot time 64 threads, but it can count what each of them does). Each thread of the OpenMP
// team reads its CPU clock before and after the pass, and the CPU time it spent inside sgemm
// calls (blas::gemm_accounting); OpenMP waits passively and decode's barriers sleep without
// spinning (SpinBarrier::set_spin(0)) during these runs, so a thread's CPU time outside sgemm is
// the code's own work on that thread. A part that runs on one thread while the others wait shows
// as that thread's excess: the code's own work cannot finish on n cores before its busiest
// thread's share, so (own CPU time of the team) / (busiest thread's) bounds its speed-up on n
// real cores, and that over n is the efficiency the split of the work allows (memory bandwidth,
// which bounds decode, is not counted). sgemm's own split is OpenBLAS's (its CPU time, the
// workers' and the callers' waits included, is reported as sgemm_cpu_s).
#include <omp.h>
#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_common.h"
#include "gaincell/core/blas.h"
#include "gaincell/core/spin_barrier.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/weight_storage.h"

using namespace gaincell;
using namespace gaincell::bench;

namespace {

double forward_flops_per_token(const GPT2Config& c, int T) {
  const double C = c.n_embd;
  return c.n_layer * (24.0 * C * C + 2.0 * C * (T + 1)) + 2.0 * C * c.vocab_size;
}

std::vector<int> thread_counts(int max_threads) {
  std::vector<int> counts;
  for (int n = 1; n < max_threads; n *= 2) counts.push_back(n);
  counts.push_back(max_threads);
  return counts;
}

// "4,8,16" -> {4, 8, 16}; "none" -> {}. Every entry a whole number in 1 .. 4096.
std::vector<int> parse_counts(const std::string& list) {
  std::vector<int> counts;
  if (list == "none") return counts;
  size_t start = 0;
  while (start <= list.size()) {
    const size_t end = std::min(list.find(',', start), list.size());
    const std::string item = list.substr(start, end - start);
    const bool digits =
        !item.empty() && item.size() <= 4 &&
        std::all_of(item.begin(), item.end(), [](char c) { return c >= '0' && c <= '9'; });
    const int n = digits ? std::stoi(item) : 0;
    if (n < 1 || n > 4096)
      throw std::runtime_error("--balance: '" + item + "' is not a thread count from 1 to 4096 (" +
                               "give a comma-separated list, or none)");
    counts.push_back(n);
    start = end + 1;
  }
  return counts;
}

// One reading per thread of an n-thread OpenMP team (index = thread number), taken inside a team
// of n: libgomp keeps its pool, so the passes' own regions of n threads run on these threads.
struct TeamReading {
  std::vector<pthread_t> ids;
  std::vector<double> cpu_s;   // the thread's CPU clock
  std::vector<double> gemm_s;  // its CPU time inside sgemm calls (blas::gemm_accounting)
};

TeamReading read_team(int n) {
  TeamReading r{std::vector<pthread_t>(n), std::vector<double>(n), std::vector<double>(n)};
#pragma omp parallel num_threads(n)
  {
    const int i = omp_get_thread_num();
    r.ids[i] = pthread_self();
    r.cpu_s[i] = thread_cpu_seconds();
    r.gemm_s[i] = blas::gemm_thread_cpu_seconds;
  }
  return r;
}

// CPU seconds each team thread spends in fn() (run with n threads), with and without its time
// inside sgemm, and those of the whole process (OpenBLAS's workers included).
template <class F>
nlohmann::json work_balance(int n, F&& fn) {
  blas::gemm_accounting = true;
  const TeamReading before = read_team(n);
  const double process_before = process_cpu_seconds();
  const auto start = Clock::now();
  fn();
  const double wall = seconds_since(start);
  const double process = process_cpu_seconds() - process_before;
  const TeamReading after = read_team(n);
  blas::gemm_accounting = false;
  if (!std::equal(before.ids.begin(), before.ids.end(), after.ids.begin(), pthread_equal))
    throw std::runtime_error("the OpenMP team's threads changed during a pass");
  std::vector<double> own(n);  // CPU time outside sgemm
  double team = 0.0, team_own = 0.0, busiest_own = 0.0;
  for (int i = 0; i < n; ++i) {
    const double cpu = after.cpu_s[i] - before.cpu_s[i];
    own[i] = cpu - (after.gemm_s[i] - before.gemm_s[i]);
    team += cpu;
    team_own += own[i];
    busiest_own = std::max(busiest_own, own[i]);
  }
  // The code's own work (all but sgemm) cannot finish before its busiest thread's share.
  const double bound = busiest_own > 0.0 ? team_own / busiest_own : 0.0;
  return {{"threads", n},
          {"wall_s", wall},
          {"process_cpu_s", process},
          {"sgemm_cpu_s", process - team_own},
          {"own_cpu_s", team_own},
          {"own_cpu_s_per_thread", own},
          {"busiest_thread_own_cpu_s", busiest_own},
          {"own_work_speedup_bound", bound},
          {"own_work_efficiency_bound", bound / n}};
}

}  // namespace

int run(int argc, char** argv) {
  int max_threads = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  int reps = 2;
  std::string model_name = "gpt2", weights = "f32", balance = "4,8,16,32,64";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--max") {
      max_threads = std::stoi(argv[i + 1]);
    } else if (flag == "--reps") {
      reps = std::stoi(argv[i + 1]);
    } else if (flag == "--model") {
      model_name = argv[i + 1];
    } else if (flag == "--weights") {
      weights = argv[i + 1];
    } else if (flag == "--balance") {
      balance = argv[i + 1];
    } else {
      std::cerr << "usage: bench_threads [--max N] [--reps N] [--model NAME] "
                   "[--weights f32|bf16|q8] [--balance N,N,...|none]\n";
      return 2;
    }
  }
  max_threads = std::max(1, max_threads);
  const std::vector<int> balance_counts = parse_counts(balance);
  // The balance counts a thread's CPU time as its work: threads that spin while they wait would
  // count their waiting as work.
  std::string policy = gaincell::bench::omp_wait_policy();
  for (char& c : policy) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  if (!balance_counts.empty() && policy != "passive") {
    throw std::runtime_error(
        "--balance needs OMP_WAIT_POLICY=passive (the default this program "
        "sets); got '" +
        gaincell::bench::omp_wait_policy() + "'");
  }
  const GPT2Config config = GPT2Config::named(model_name);
  GPT2Model model(config);
  model.init_random(1);
  model.set_weight_format(parse_weight_format(weights));
  const int T = std::min(256, config.block_size);
  const int context = std::min(128, config.block_size - 16), steps = 16;
  const auto tokens = random_tokens(static_cast<size_t>(T), config.vocab_size, 1);
  const auto prompt = random_tokens(static_cast<size_t>(context + steps), config.vocab_size, 2);
  const double bytes_per_token =
      (weights == "f32" ? 4.0 * model.num_params()
                        : static_cast<double>(model.packed_weight_bytes())) +
      8.0 * config.n_layer * config.n_embd * (context + steps / 2.0);

  nlohmann::json out;
  out["benchmark"] = "threads";
  out["model"] = model_name;
  out["weights"] = weights;
  out["reps"] = reps;
  out["cores_online"] = sysconf(_SC_NPROCESSORS_ONLN);
  out["omp_wait_policy"] = gaincell::bench::omp_wait_policy();
  out["openblas_thread_timeout"] = gaincell::bench::openblas_thread_timeout();
  out["openblas_core"] = gaincell::bench::openblas_core();
  double forward_1 = 0.0, decode_1 = 0.0;
  for (int n : thread_counts(max_threads)) {
    omp_set_num_threads(n);
    blas::set_num_threads(n);
    const double sgemm = measure_sgemm_gflops(reps);
    const double triad = measure_triad_gbps(reps);
    const double t_fwd = best_time(reps, [&] { model.forward(tokens.data(), nullptr, 1, T); });
    auto session = model.start_decoding();
    session->reserve(context + steps);
    double t_dec = 1e30;
    for (int r = 0; r <= reps; ++r) {
      session->reset();
      session->prefill(prompt.data(), context);
      const auto start = Clock::now();
      for (int s = 0; s < steps; ++s) session->step(prompt[context + s]);
      if (r > 0) t_dec = std::min(t_dec, seconds_since(start));
    }
    const double fwd = T / t_fwd, dec = steps / t_dec;
    if (n == 1) {
      forward_1 = fwd;
      decode_1 = dec;
    }
    const double gflops = forward_flops_per_token(config, T) * fwd / 1e9;
    out["runs"].push_back({{"threads", n},
                           {"sgemm_gflops", sgemm},
                           {"triad_gbps", triad},
                           {"forward_B1_T256_tokens_per_s", fwd},
                           {"forward_fraction_of_sgemm", gflops / sgemm},
                           {"forward_speedup", fwd / forward_1},
                           {"forward_efficiency", fwd / forward_1 / n},
                           {"decode_ctx128_tokens_per_s", dec},
                           {"decode_fraction_of_triad", dec * bytes_per_token / 1e9 / triad},
                           {"decode_speedup", dec / decode_1},
                           {"decode_efficiency", dec / decode_1 / n}});
    std::cerr << "bench_threads: " << n << " threads done\n";
  }
  if (!balance_counts.empty()) {
    std::vector<int32_t> targets(tokens.begin() + 1, tokens.end());
    targets.push_back(-1);
    const auto saved_spin = SpinBarrier::spin();
    SpinBarrier::set_spin(std::chrono::microseconds(0));
    for (int n : balance_counts) {
      omp_set_num_threads(n);
      blas::set_num_threads(n);
      // Warm-up: the team's threads, OpenBLAS's and the buffers exist before counting.
      model.forward(tokens.data(), targets.data(), 1, T);
      auto session = model.start_decoding();
      session->reserve(context + steps);
      session->prefill(prompt.data(), context);
      out["balance"].push_back(
          {{"threads", n},
           {"forward_and_scoring_B1_T256",
            work_balance(n, [&] { model.forward(tokens.data(), targets.data(), 1, T); })},
           {"decode_ctx128_16_steps", work_balance(n, [&] {
              for (int s = 0; s < steps; ++s) session->step(prompt[context + s]);
            })}});
      std::cerr << "bench_threads: balance at " << n << " threads done\n";
    }
    SpinBarrier::set_spin(saved_spin);
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}

int main(int argc, char** argv) {
  gaincell::bench::use_cli_thread_settings(argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_threads: error: " << e.what() << "\n";
    return 1;
  }
}
