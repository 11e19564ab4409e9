// Sweep per-point overhead (issue 13, "Speed"): a sweep point reuses the loaded model, the
// tokenised data and the digital weights, so its time beyond the evaluation itself (building the
// point's model from the loaded weights, the cost model, the JSON line) must stay under 5%.
// Prints one JSON object with the machine limits (sgemm, triad) measured in the same run.
//
//   bench_sweep [--model DIR] [--tokens N] [--reps N]
//
// Without --model it uses a random model of the demo's shape (4 layers, 2 heads of 64, context
// 128, byte vocabulary) with the gain-cell nonlinear attention, written to a temporary directory.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
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

int main(int argc, char** argv) {
  std::string model_dir;
  int64_t tokens = 16384;
  int reps = 3;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--model" && i + 1 < argc)
      model_dir = argv[++i];
    else if (a == "--tokens" && i + 1 < argc)
      tokens = std::stoll(argv[++i]);
    else if (a == "--reps" && i + 1 < argc)
      reps = std::stoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: bench_sweep [--model DIR] [--tokens N] [--reps N]\n");
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
  gaincell::write_token_file(dir / "val.bin", gaincell::bench::random_tokens(tokens, vocab, 5));
  const std::string spec_text = R"({"attention": "gaincell-nonlinear",
      "axes": {"quantization.k.levels": [8]}, "evaluation": {"tokens": ")" +
                                (dir / "val.bin").string() + R"("}})";
  const auto spec = gaincell::sweep::SweepSpec::parse(spec_text, dir);
  auto ctx = gaincell::sweep::open_sweep(spec, model_dir);

  // The evaluation alone, on a model built once.
  auto model = gaincell::sweep::model_with_hw(*ctx, ctx->points[0].hw);
  const double eval_s = best_time(reps, [&] { ctx->evaluator->evaluate(*model); });
  // A whole point: model from the loaded weights, evaluation, cost model, result line.
  const double point_s = best_time(reps, [&] { gaincell::sweep::run_point(*ctx, 0).dump(); });
  // The parts of the overhead on their own.
  const double build_s =
      best_time(reps, [&] { gaincell::sweep::model_with_hw(*ctx, ctx->points[0].hw); });
  const double cost_s =
      best_time(reps, [&] { gaincell::sweep::point_cost(*ctx, ctx->points[0].hw); });

  const json out = {
      {"benchmark", "sweep per-point overhead"},
      {"model", model_dir},
      {"params", ctx->prototype->num_params()},
      {"eval_tokens", tokens},
      {"evaluation_s", eval_s},
      {"point_s", point_s},
      {"overhead_fraction", (point_s - eval_s) / eval_s},
      {"overhead_limit", 0.05},
      {"model_build_s", build_s},
      {"cost_model_s", cost_s},
      {"threads", gaincell::blas::num_threads()},
      {"machine",
       {{"sgemm_gflops", measure_sgemm_gflops(3)}, {"triad_gbps", measure_triad_gbps(3)}}}};
  std::cout << out.dump(2) << "\n";
  fs::remove_all(dir);
  return 0;
}
