// Sweep per-point overhead (issue 13, "Speed"): a sweep point reuses the loaded model, the
// tokenised data and the digital weights, so its time beyond the evaluation itself (building the
// point's model from the loaded weights, the cost model, the JSON line) must stay under 5%.
// Prints one JSON object with the machine limits (sgemm, triad) measured in the same run.
//
//   bench_sweep [--model DIR] [--tokens N] [--reps N] [--eval perplexity|tasks] [--docs N]
//               [--weights f32|bf16|q8]
//
// Without --model it uses a random model of the demo's shape (4 layers, 2 heads of 64, context
// 128, byte vocabulary) with the gain-cell nonlinear attention, written to a temporary directory.
// --eval tasks scores synthetic ARC-Easy and LAMBADA files of --docs documents each (written in
// their published formats) through the sweep's tasks evaluation instead of validation perplexity.
// --weights packs each point's digital weights (the packing is part of the overhead).
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "bench_common.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/tools/sweep/sweep_runner.h"

namespace fs = std::filesystem;
using gaincell::bench::best_time;
using gaincell::bench::measure_sgemm_gflops;
using gaincell::bench::measure_triad_gbps;
using nlohmann::json;

// Synthetic ARC-Easy (4 choices) and LAMBADA rows of random lower-case words, in the Hugging
// Face formats the task readers take (tools/eval/task.h).
void write_task_files(const fs::path& dir, int docs) {
  std::mt19937 rng(3);
  auto words = [&](int n) {
    std::string s;
    for (int w = 0; w < n; ++w) {
      s += w ? " " : "";
      for (int c = 0, len = 2 + static_cast<int>(rng() % 6); c < len; ++c)
        s += static_cast<char>('a' + rng() % 26);
    }
    return s;
  };
  std::string arc, lambada;
  for (int d = 0; d < docs; ++d) {
    json choices = {{"text", json::array()}, {"label", {"A", "B", "C", "D"}}};
    for (int k = 0; k < 4; ++k) choices["text"].push_back(words(3));
    arc +=
        json{{"question", words(12) + "?"}, {"choices", choices}, {"answerKey", "B"}}.dump() + "\n";
    lambada += json{{"text", words(40)}}.dump() + "\n";
  }
  gaincell::write_file_atomic(dir / "arc_easy_test.jsonl", arc);
  gaincell::write_file_atomic(dir / "lambada_openai_test.jsonl", lambada);
}

int main(int argc, char** argv) {
  gaincell::bench::use_cli_thread_settings(argv);
  std::string model_dir;
  int64_t tokens = 16384;
  int reps = 3;
  std::string eval_type = "perplexity", weights = "f32";
  int docs = 200;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc)
      model_dir = argv[++i];
    else if (a == "--tokens" && i + 1 < argc)
      tokens = std::stoll(argv[++i]);
    else if (a == "--reps" && i + 1 < argc)
      reps = std::stoi(argv[++i]);
    else if (a == "--eval" && i + 1 < argc)
      eval_type = argv[++i];
    else if (a == "--docs" && i + 1 < argc)
      docs = std::stoi(argv[++i]);
    else if (a == "--weights" && i + 1 < argc)
      weights = argv[++i];
    else {
      std::fprintf(stderr,
                   "usage: bench_sweep [--model DIR] [--tokens N] [--reps N] "
                   "[--eval perplexity|tasks] [--docs N] [--weights f32|bf16|q8]\n");
      return 2;
    }
  }
  const fs::path dir = fs::temp_directory_path() / ("bench_sweep_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  int vocab = 257;
  if (model_dir.empty()) {
    gaincell::GPT2Config c;
    c.n_layer = 4;
    c.n_head = 2;
    c.n_embd = 128;
    c.block_size = 128;
    c.vocab_size = vocab;
    c.tokenizer = "bytes";
    c.attention = "gaincell-nonlinear";
    gaincell::GPT2Model m(c);
    m.init_random(1);
    model_dir = (dir / "model").string();
    gaincell::save_model(m, model_dir);
  } else {
    vocab = gaincell::read_model_config(model_dir).vocab_size;
  }
  std::string evaluation;
  if (eval_type == "tasks") {
    write_task_files(dir, docs);
    evaluation = R"({"type": "tasks", "tasks": ["arc_easy", "lambada_openai"], "data_dir": ")" +
                 dir.string() + R"("})";
  } else {
    gaincell::write_token_file(dir / "val.bin", gaincell::bench::random_tokens(tokens, vocab, 5));
    evaluation = R"({"tokens": ")" + (dir / "val.bin").string() + R"("})";
  }
  const std::string spec_text = R"({"attention": "gaincell-nonlinear", "weights": ")" + weights +
                                R"(", "axes": {"quantization.k.levels": [8]}, "evaluation": )" +
                                evaluation + "}";
  const auto spec = gaincell::sweep::SweepSpec::parse(spec_text, dir);
  auto ctx = gaincell::sweep::open_sweep(spec, model_dir);

  // The evaluation alone, on a model built (and packed) once.
  auto model = gaincell::sweep::model_with_hw(*ctx, ctx->points[0].hw);
  model->set_weight_format(ctx->weights);
  const double eval_s = best_time(reps, [&] { ctx->evaluator->evaluate(*model); });
  // A whole point: model from the loaded weights, evaluation, cost model, result line.
  const double point_s = best_time(reps, [&] { gaincell::sweep::run_point(*ctx, 0).dump(); });
  // The parts of the overhead on their own.
  const double build_s =
      best_time(reps, [&] { gaincell::sweep::model_with_hw(*ctx, ctx->points[0].hw); });
  const double cost_s =
      best_time(reps, [&] { gaincell::sweep::point_cost(*ctx, ctx->points[0].hw); });

  const json out = {{"benchmark", "sweep per-point overhead"},
                    {"model", model_dir},
                    {"params", ctx->prototype->num_params()},
                    {"evaluation", ctx->evaluator->describe()},
                    {"weights", weights},
                    {"evaluation_s", eval_s},
                    {"point_s", point_s},
                    {"overhead_fraction", (point_s - eval_s) / eval_s},
                    {"overhead_limit", 0.05},
                    {"model_build_s", build_s},
                    {"cost_model_s", cost_s},
                    {"threads", gaincell::blas::num_threads()},
                    {"machine",
                     {{"sgemm_gflops", measure_sgemm_gflops(3)},
                      {"triad_gbps", measure_triad_gbps(3)},
                      {"openblas_core", gaincell::bench::openblas_core()},
                      {"omp_wait_policy", gaincell::bench::omp_wait_policy()}}}};
  std::cout << out.dump(2) << "\n";
  fs::remove_all(dir);
  return 0;
}
