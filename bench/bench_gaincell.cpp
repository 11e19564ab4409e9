// Gain-cell attention benchmark (issue 3): GPT-2 124M with random weights, fp32, 2 threads by
// default; the nonlinear gain-cell attention (paper-nonlinear) against the softmax engine at the
// same shapes in the same run. Prints one JSON object.
//
//   bench_gaincell [--threads N] [--reps N] [--model gpt2|tiny] [--attention gaincell-nonlinear]
//
// Measured: whole-sequence forward at B=1,T=1024 and B=4,T=256; a training step (forward +
// backward) at B=4,T=256; token-by-token decode at a 512-token context (prefill 512, time 32
// steps); and the attention core alone (all heads of one layer, B=1, T=1024, forward and
// backward). Targets (issue 3): forward and training <= 1.5x softmax, decode <= 1.3x softmax.
// Machine limits of the same run: OpenBLAS sgemm GFLOP/s and a triad loop's GB/s.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "bench_common.h"
#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/blas.h"
#include "gaincell/model/gpt2.h"

using namespace gaincell;
using namespace gaincell::bench;
using nlohmann::json;

namespace {

std::vector<float> random_vector(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.5f);
  std::vector<float> v(n);
  for (auto& x : v) x = g(rng);
  return v;
}

// Timings of one attention variant through the whole model.
json time_model(const std::string& model_name, const std::string& attention, int reps) {
  GPT2Config config = GPT2Config::named(model_name);
  config.attention = attention;
  if (is_gaincell_attention(attention)) config.hw = gaincell_default_hw(attention);
  json out;
  auto model = std::make_unique<GPT2Model>(config);
  model->init_random(1);
  for (auto [B, T_wanted] : {std::pair{1, 1024}, std::pair{4, 256}}) {
    const int T = std::min(T_wanted, config.block_size);  // smaller models: clamped, recorded
    const auto inputs = random_tokens(static_cast<size_t>(B) * T, config.vocab_size, 3);
    const double t = best_time(reps, [&] { model->forward(inputs.data(), nullptr, B, T); });
    out["forward_B" + std::to_string(B) + "_T" + std::to_string(T_wanted)] = {
        {"T", T}, {"pass_s", t}, {"tokens_per_s", B * T / t}};
  }
  {
    const int B = 4, T = std::min(256, config.block_size);
    const auto inputs = random_tokens(size_t{B} * T, config.vocab_size, 1);
    const auto targets = random_tokens(size_t{B} * T, config.vocab_size, 2);
    const double t = best_time(reps, [&] {
      model->zero_grad();
      model->forward(inputs.data(), targets.data(), B, T, true);
      model->backward();
    });
    out["train_B4_T256"] = {{"step_s", t}, {"tokens_per_s", B * T / t}};
  }
  {
    const int steps = std::min(32, config.block_size / 2);
    const int context = std::min(512, config.block_size - steps);
    const auto prompt = random_tokens(context + steps, config.vocab_size, 4);
    auto session = model->start_decoding();
    const double best = best_decode_seconds(*session, prompt, context, steps, reps);
    out["decode_ctx512"] = {{"step_s", best / steps}, {"tokens_per_s", steps / best}};
  }
  return out;
}

// The attention core of one layer alone: 12 heads, D = 64, B = 1, T = 1024.
json time_attention_core(const std::string& attention, int reps) {
  AttentionContext ctx;
  ctx.n_head = 12;
  ctx.head_dim = 64;
  if (is_gaincell_attention(attention)) ctx.hw = gaincell_default_hw(attention);
  auto attn = make_attention(attention, ctx);
  const int B = 1, T = 1024;
  const size_t n = size_t{B} * 12 * T * 64;
  const auto q = random_vector(n, 1), k = random_vector(n, 2), v = random_vector(n, 3),
             dy = random_vector(n, 4);
  std::vector<float> y(n), dq(n), dk(n), dv(n);
  const double fwd =
      best_time(reps, [&] { attn->forward(q.data(), k.data(), v.data(), y.data(), B, T, false); });
  const double fwd_bwd = best_time(reps, [&] {
    attn->forward(q.data(), k.data(), v.data(), y.data(), B, T, true);
    attn->backward(q.data(), k.data(), v.data(), dy.data(), dq.data(), dk.data(), dv.data(), B, T);
  });
  return {{"forward_s", fwd}, {"forward_backward_s", fwd_bwd}};
}

double ratio(const json& a, const json& b, const char* key, const char* field) {
  return a.at(key).at(field).get<double>() / b.at(key).at(field).get<double>();
}

}  // namespace

int run(int argc, char** argv) {
  int threads = 2, reps = 1;
  std::string model_name = "gpt2", attention = "gaincell-nonlinear";
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    if (flag == "--threads")
      threads = std::stoi(argv[i + 1]);
    else if (flag == "--reps")
      reps = std::stoi(argv[i + 1]);
    else if (flag == "--model")
      model_name = argv[i + 1];
    else if (flag == "--attention")
      attention = argv[i + 1];
    else {
      std::cerr << "usage: bench_gaincell [--threads N] [--reps N] [--model NAME] [--attention "
                   "NAME]\n";
      return 2;
    }
  }
  omp_set_num_threads(threads);
  blas::set_num_threads(threads);
  json out;
  out["benchmark"] = "gaincell";
  out["model"] = model_name;
  out["attention"] = attention;
  out["hw"] = gaincell_default_hw(attention).to_json();
  out["threads"] = threads;
  out["reps"] = reps;
  out["timing"] = "best of reps after one warm-up";
  out["machine"]["openblas_core"] = gaincell::bench::openblas_core();
  out["machine"]["omp_wait_policy"] = gaincell::bench::omp_wait_policy();
  out["machine"]["openblas_thread_timeout"] = gaincell::bench::openblas_thread_timeout();
  out["machine"]["sgemm_gflops"] = measure_sgemm_gflops(reps + 1);

  const json soft = time_model(model_name, "softmax", reps);
  const json gain = time_model(model_name, attention, reps);
  out["softmax"] = soft;
  out[attention] = gain;
  json& r = out["ratio_vs_softmax"];
  r["forward_B1_T1024"] = ratio(gain, soft, "forward_B1_T1024", "pass_s");
  r["forward_B4_T256"] = ratio(gain, soft, "forward_B4_T256", "pass_s");
  r["train_B4_T256"] = ratio(gain, soft, "train_B4_T256", "step_s");
  r["decode_ctx512"] = ratio(gain, soft, "decode_ctx512", "step_s");
  out["targets"] = {{"forward_and_train_max_ratio", 1.5}, {"decode_max_ratio", 1.3}};

  const json core_soft = time_attention_core("softmax", reps);
  const json core_gain = time_attention_core(attention, reps);
  out["attention_core_B1_H12_T1024_D64"] = {
      {"softmax", core_soft},
      {attention, core_gain},
      {"forward_ratio",
       core_gain["forward_s"].get<double>() / core_soft["forward_s"].get<double>()},
      {"forward_backward_ratio", core_gain["forward_backward_s"].get<double>() /
                                     core_soft["forward_backward_s"].get<double>()}};
  out["machine"]["triad_gbps"] = measure_triad_gbps(reps + 1);
  std::cout << out.dump(2) << std::endl;
  return 0;
}

int main(int argc, char** argv) {
  gaincell::bench::use_cli_thread_settings(argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_gaincell: error: " << e.what() << "\n";
    return 1;
  }
}
