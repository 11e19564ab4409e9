// Evaluation-harness benchmark (issue 10): GPT-2 124M with random weights scoring synthetic
// requests of each task type through eval::score_requests, beside the engine's forward
// throughput (B=1, T=1024) and the sgemm limit measured in the same run. Prints one JSON object.
//
//   bench_eval [--threads N] [--reps N] [--model gpt2|tiny] [--docs N] [--windows N]
//              [--only rolling]
//
// Rates are tokens/s of useful tokens: context + continuation per request for rolling perplexity
// and loglikelihood tasks, context + sum of continuations per document for multiple choice (what
// the shared-context path runs). `forward_tokens_per_doc` counts the tokens the model actually ran.
// Targets (issue 10): rolling perplexity >= 0.85 of the forward pass's tokens/s; multiple choice
// runs no more than context + sum of continuations tokens per document.
#include <omp.h>

#include <cstdio>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench_common.h"
#include "gaincell/core/blas.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/tools/eval/requests.h"
#include "gaincell/tools/eval/scorer.h"

using gaincell::GPT2Config;
using gaincell::GPT2Model;
using gaincell::bench::best_time;
using gaincell::bench::measure_sgemm_gflops;
using gaincell::bench::random_tokens;
namespace eval = gaincell::eval;

namespace {

struct Shape {
  const char* name;
  int contexts_per_doc;  // 1, or 2 (WinoGrande: one context per option)
  int context;           // tokens
  int choices;           // continuations per context
  int continuation;      // tokens per continuation
};

// Typical GPT-2 token counts of the tasks (zero-shot prompts).
const Shape kShapes[] = {
    {"lambada_like", 1, 80, 1, 2},     // loglikelihood: one request per document
    {"hellaswag_like", 1, 60, 4, 20},  // multiple choice, long endings
    {"arc_like", 1, 25, 4, 5},         // multiple choice, short answers
    {"piqa_like", 1, 20, 2, 25},       // multiple choice, two solutions
    {"winogrande_like", 2, 20, 1, 8},  // multiple inputs, shared continuation
};

std::vector<eval::TokenRequest> make_requests(const Shape& s, int docs, int vocab, uint64_t seed) {
  std::vector<eval::TokenRequest> out;
  for (int d = 0; d < docs; d++) {
    std::vector<std::vector<int32_t>> contexts;
    for (int c = 0; c < s.contexts_per_doc; c++) {
      contexts.push_back(random_tokens(s.context, vocab, seed + 1000 * d + c));
    }
    const auto shared_cont = random_tokens(s.continuation, vocab, seed + 1000 * d + 500);
    for (const auto& ctx : contexts) {
      for (int k = 0; k < s.choices; k++) {
        eval::TokenRequest r;
        r.context = ctx;
        r.continuation = s.contexts_per_doc > 1
                             ? shared_cont
                             : random_tokens(s.continuation, vocab, seed + 1000 * d + 100 + k);
        out.push_back(std::move(r));
      }
    }
  }
  return out;
}

nlohmann::json run_shape(GPT2Model& model, const Shape& s, int docs, int reps, double forward_tps,
                         bool share) {
  const auto requests = make_requests(s, docs, model.config().vocab_size, 42);
  eval::ScoreOptions options;
  options.share_context = share;
  eval::ScoreStats stats;
  const double t = best_time(reps, [&] { eval::score_requests(model, requests, options, &stats); });
  const double useful_per_doc =
      s.contexts_per_doc * (s.context + static_cast<double>(s.choices) * s.continuation);
  const double tps = useful_per_doc * docs / t;
  return {{"docs", docs},
          {"seconds", t},
          {"docs_per_s", docs / t},
          {"tokens_per_s", tps},
          {"fraction_of_forward", tps / forward_tps},
          {"useful_tokens_per_doc", useful_per_doc},
          {"forward_tokens_per_doc", static_cast<double>(stats.forward_tokens) / docs},
          {"shared_groups", stats.shared_groups}};
}

int run(int argc, char** argv) {
  int threads = 2, reps = 1, docs = 16, windows_n = 4;
  std::string model_name = "gpt2", only;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads") {
      threads = std::stoi(argv[i + 1]);
    } else if (flag == "--reps") {
      reps = std::stoi(argv[i + 1]);
    } else if (flag == "--model") {
      model_name = argv[i + 1];
    } else if (flag == "--docs") {
      docs = std::stoi(argv[i + 1]);
    } else if (flag == "--windows") {
      windows_n = std::stoi(argv[i + 1]);
    } else if (flag == "--only" && std::string(argv[i + 1]) == "rolling") {
      only = "rolling";  // the forward and rolling perplexity only (the 0.85 target)
    } else {
      std::cerr << "usage: bench_eval [--threads N] [--reps N] [--model gpt2|tiny] [--docs N] "
                   "[--windows N] [--only rolling]\n";
      return 2;
    }
  }
  omp_set_num_threads(threads);
  gaincell::blas::set_num_threads(threads);
  nlohmann::json out = {{"benchmark", "eval"},
                        {"model", model_name},
                        {"threads", threads},
                        {"reps", reps},
                        {"timing", "best of reps after one warm-up"}};
  const double sgemm_start = measure_sgemm_gflops(reps);
  GPT2Config config = GPT2Config::named(model_name);
  GPT2Model model(config);
  model.init_random(1);
  const int T = config.block_size;

  // The engine's forward pass, B = 1, T = n_positions (logits included).
  const auto tokens = random_tokens(T, config.vocab_size, 7);
  const double forward_s = best_time(reps, [&] { model.forward(tokens.data(), nullptr, 1, T); });
  const double forward_tps = T / forward_s;
  out["forward_B1_T" + std::to_string(T)] = {{"tokens_per_s", forward_tps}, {"seconds", forward_s}};

  // Rolling perplexity (wikitext): a stream of `windows_n` windows, lm-eval's disjoint windows.
  const auto stream = random_tokens(static_cast<int64_t>(windows_n) * T, config.vocab_size, 11);
  const auto windows = eval::rolling_requests(stream, 50256 % config.vocab_size, T);
  eval::ScoreStats stats;
  const double rolling_s =
      best_time(reps, [&] { eval::score_requests(model, windows, {}, &stats); });
  const double rolling_tps = static_cast<double>(stream.size()) / rolling_s;
  out["rolling_perplexity"] = {{"tokens", stream.size()},
                               {"windows", windows.size()},
                               {"seconds", rolling_s},
                               {"tokens_per_s", rolling_tps},
                               {"fraction_of_forward", rolling_tps / forward_tps},
                               {"target_fraction", 0.85}};

  for (const Shape& s : kShapes) {
    if (only == "rolling") break;
    out[s.name] = run_shape(model, s, docs, reps, forward_tps, true);
    if (s.choices > 1) {
      out[std::string(s.name) + "_whole_pairs"] =
          run_shape(model, s, docs, reps, forward_tps, false);
    }
  }
  const double sgemm_end = measure_sgemm_gflops(reps);
  out["machine"] = {{"sgemm_gflops_start", sgemm_start},
                    {"sgemm_gflops_end", sgemm_end},
                    {"openblas_core", gaincell::bench::openblas_core()},
                    {"omp_wait_policy", gaincell::bench::omp_wait_policy()},
                    {"openblas_thread_timeout", gaincell::bench::openblas_thread_timeout()}};
  std::cout << out.dump(2) << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gaincell::bench::use_cli_thread_settings(argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_eval: %s\n", e.what());
    return 1;
  }
}
