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
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_common.h"
#include "gaincell/core/blas.h"
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

}  // namespace

int run(int argc, char** argv) {
  int max_threads = static_cast<int>(sysconf(_SC_NPROCESSORS_ONLN));
  int reps = 2;
  std::string model_name = "gpt2", weights = "f32";
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
    } else {
      std::cerr << "usage: bench_threads [--max N] [--reps N] [--model NAME] "
                   "[--weights f32|bf16|q8]\n";
      return 2;
    }
  }
  max_threads = std::max(1, max_threads);
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
