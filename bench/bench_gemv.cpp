// Matrix-vector kernels of decode alone (issue 14 item 3): one token's products over a model's
// digital matrices (every block's q|k|v, output, MLP up (gate|up) and down projections, and the
// LM head), stored as f32, bf16 and q8 (PackedMatrix, model/weight_storage.h), run on the OpenMP
// team as decode runs them (one thread prepares x, then every thread takes rows). Prints one JSON
// object: per format the bytes swept, the best and median time of a sweep, and GB/s as a fraction
// of the triad bandwidth measured before and after. f32 is stored row-major here for every family
// (decode reads GPT-2's Conv1D weights in place with a column kernel instead).
//
//   bench_gemv [--model gpt2|smollm-135m|...] [--rounds N] [--threads N]
//
// The formats are swept in turn, round by round (f32, bf16, q8, f32, ...), so a drift of the
// shared machine's bandwidth moves all three alike; the ratios to f32 are the medians of the
// rounds' ratios. Between two sweeps of one format the other two stream their matrices, so a
// sweep comes from DRAM unless the three formats' matrices together fit in the last-level cache
// (recorded as `last_level_cache_bytes`; GPT-2 124M's matrices are 494 + 247 + 131 MB).
#include <omp.h>

#include <algorithm>
#include <iostream>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench_common.h"
#include "gaincell/core/spin_barrier.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/weight_storage.h"

namespace {

using gaincell::GPT2Config;
using gaincell::PackedMatrix;
using gaincell::WeightFormat;

struct Shape {
  int rows, cols;  // y = M x, M [rows][cols]
};

// The matrices one decoded token multiplies, in order, for a GPT-2 or Llama-family shape.
std::vector<Shape> decode_matrices(const GPT2Config& c) {
  const int C = c.n_embd, AO = c.n_head * c.head_dim();
  const int QKV = (c.n_head + 2 * c.kv_heads()) * c.head_dim();
  const int up = c.is_gpt2() ? 4 * C : 2 * c.mlp_width(),
            down = c.is_gpt2() ? 4 * C : c.mlp_width();
  std::vector<Shape> shapes;
  for (int l = 0; l < c.n_layer; ++l)
    for (Shape s : {Shape{QKV, C}, Shape{C, AO}, Shape{up, C}, Shape{C, down}}) shapes.push_back(s);
  shapes.push_back({c.vocab_size, C});
  return shapes;
}

// One token's products: y = M x for every matrix, in one parallel region whose threads meet at
// spin barriers between products, as DecodeSession::step does.
void sweep(const std::vector<PackedMatrix>& matrices, const std::vector<float>& x,
           std::vector<float>& y) {
  const gaincell::GemvInput* input = nullptr;
  gaincell::SpinBarrier barrier;
#pragma omp parallel shared(input, barrier)
  {
    const int team = omp_get_num_threads();
    for (const PackedMatrix& m : matrices) {
      if (omp_get_thread_num() == 0) input = &m.prepare(x.data());
      barrier.wait(team);
      m.gemv_team(*input, y.data(), false);
      barrier.wait(team);
    }
  }
}

int run(int argc, char** argv) {
  std::string model = "gpt2";
  int rounds = 8, threads = std::max(1, omp_get_num_procs());
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--model")
      model = argv[i + 1];
    else if (flag == "--rounds")
      rounds = std::max(1, std::stoi(argv[i + 1]));
    else if (flag == "--threads")
      threads = std::max(1, std::stoi(argv[i + 1]));
    else {
      std::cerr << "usage: bench_gemv [--model NAME] [--rounds N] [--threads N]\n";
      return 2;
    }
  }
  omp_set_num_threads(threads);
  const GPT2Config config = GPT2Config::named(model);
  const std::vector<Shape> shapes = decode_matrices(config);
  const WeightFormat formats[] = {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kQ8};
  std::vector<PackedMatrix> matrices[3];
  double bytes[3] = {0, 0, 0};
  std::mt19937 rng(1);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  size_t widest = 0;
  for (const Shape& s : shapes) {
    std::vector<float> m(static_cast<size_t>(s.rows) * s.cols);
    for (float& v : m) v = normal(rng);
    for (int f = 0; f < 3; ++f) {
      matrices[f].push_back(PackedMatrix::from_rows(formats[f], m.data(), s.rows, s.cols));
      bytes[f] += static_cast<double>(matrices[f].back().bytes());
    }
    widest = std::max({widest, static_cast<size_t>(s.rows), static_cast<size_t>(s.cols)});
  }
  std::vector<float> x(widest), y(widest);
  for (float& v : x) v = normal(rng);

  const double triad_before = gaincell::bench::measure_triad_gbps(3);
  std::vector<double> seconds[3];
  for (int round = 0; round <= rounds; ++round) {  // round 0 warms up
    for (int f = 0; f < 3; ++f) {
      const auto start = gaincell::bench::Clock::now();
      sweep(matrices[f], x, y);
      if (round > 0) seconds[f].push_back(gaincell::bench::seconds_since(start));
    }
  }
  const double triad = 0.5 * (triad_before + gaincell::bench::measure_triad_gbps(3));

  nlohmann::json out;
  out["benchmark"] = "gemv";
  out["model"] = model;
  out["threads"] = threads;
  out["rounds"] = rounds;
  out["matrices"] = shapes.size();
  out["machine"]["triad_gbps"] = triad;
  out["machine"]["last_level_cache_bytes"] = gaincell::bench::last_level_cache_bytes();
  out["timing"] = "formats swept in turn, round by round; best and median sweep per format";
  for (int f = 0; f < 3; ++f) {
    std::vector<double> ratios;
    for (size_t r = 0; r < seconds[f].size(); ++r) ratios.push_back(seconds[0][r] / seconds[f][r]);
    const double best = *std::min_element(seconds[f].begin(), seconds[f].end());
    const double median = gaincell::bench::median(seconds[f]);
    const double gbps = bytes[f] / median / 1e9;
    out["formats"][gaincell::to_string(formats[f])] = {
        {"bytes", bytes[f]},
        {"best_s", best},
        {"median_s", median},
        {"round_seconds", seconds[f]},
        {"gb_per_s_best", bytes[f] / best / 1e9},
        {"gb_per_s_median", gbps},
        {"fraction_of_triad_median", gbps / triad},
        {"speedup_over_f32_median_of_rounds", gaincell::bench::median(ratios)}};
  }
  std::cout << out.dump(2) << std::endl;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  gaincell::bench::use_cli_thread_settings(argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_gemv: error: " << e.what() << "\n";
    return 1;
  }
}
