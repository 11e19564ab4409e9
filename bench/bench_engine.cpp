// GPT-2 engine benchmark (issue 2): GPT-2 124M with random weights, fp32, 2 threads by default.
// Prints one JSON object. Every rate is reported next to the machine limit measured in the same
// run: OpenBLAS sgemm GFLOP/s for the compute-bound passes, a triad loop's GB/s for decode.
//
//   bench_engine [--threads N] [--reps N] [--model gpt2|gpt2-medium|...|tiny|smollm-135m]
//                [--attention softmax|gaincell-nonlinear|...] [--kv-cache f32|bf16]
//                [--only train|forward|decode|weights|gqa|attention]
//
// --kv-cache bf16 decodes with the softmax KV cache in bfloat16 (decode and weights sections).
// --attention runs the model with another attention variant (gain-cell variants on their own
// default hardware); the FLOP count stays the textbook one, so the fraction says how close the
// whole pass comes to GEMM speed with that variant. The gain-cell attention does inherently more
// work than a softmax dot product: its polynomial cell with leakage makes the QK and AV products
// GEMMs of depth terms x D (terms = 3 for paper-nonlinear, gaincell_gemm_terms), so each
// section also reports `work_gflops` and `work_fraction_of_sgemm` on the work actually done:
// the textbook count plus (terms - 1) x the attention's forward FLOPs (backward runs its
// surrogate gradient at depth D, like softmax; recomputation is not counted).
//
// FLOP counts are the useful multiply-adds x2 of the textbook model (recomputation in backward is
// not counted): per token forward = L (24 C^2 + 2 C (T+1)) + 2 C V (the causal attention averages
// (T+1)/2 keys for QKᵀ and PV); training = 3x forward. Decode reads every weight once per token
// (bytes = 4 (params - wpe rows) + 8 L C ctx for the KV cache).
#include <omp.h>
#include <sys/resource.h>
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "bench_common.h"
#include "gaincell/array/head_array.h"
#include "gaincell/attention/attention.h"
#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/attention/gaincell_kernel.h"
#include "gaincell/core/blas.h"
#include "gaincell/model/gpt2.h"

using gaincell::GPT2Config;
using gaincell::GPT2Model;
using gaincell::bench::best_decode_seconds;
using gaincell::bench::best_time;
using gaincell::bench::Clock;
using gaincell::bench::measure_sgemm_gflops;
using gaincell::bench::measure_triad_gbps;
using gaincell::bench::process_cpu_seconds;
using gaincell::bench::random_tokens;
using gaincell::bench::seconds_since;

namespace {

double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return usage.ru_maxrss / 1024.0;  // ru_maxrss is in KiB on Linux
}

// Matrix FLOPs per token of a forward pass at length T: the projections (GPT-2: 24 C^2 per
// layer; the Llama family: q|k|v, o, gate|up, down with their own widths), attention over (T+1)/2
// keys on average (2 x 2 x H D per key), and the LM head.
double forward_flops_per_token(const GPT2Config& c, int T) {
  const double C = c.n_embd, AO = double(c.n_head) * c.head_dim();
  const double QKV = double(c.n_head + 2 * c.kv_heads()) * c.head_dim();
  const double F = c.is_gpt2() ? 4.0 * C : 2.0 * c.mlp_width();
  const double A = c.is_gpt2() ? 4.0 * C : c.mlp_width();
  const double projections = 2.0 * (C * QKV + AO * C + C * F + A * C);
  return c.n_layer * (projections + 2.0 * AO * (T + 1)) + 2.0 * C * c.vocab_size;
}

// FLOPs per token of the attention products alone (QKᵀ and PV), part of the count above.
double attention_flops_per_token(const GPT2Config& c, int T) {
  return c.n_layer * 2.0 * double(c.n_head) * c.head_dim() * (T + 1);
}

// GEMM terms of the gain-cell kernel at length T (1 for softmax, 0 = plain loops).
int attention_gemm_terms(const GPT2Config& c, int T) {
  if (!gaincell::is_gaincell_attention(c.attention)) return 1;
  const gaincell::GainCellKernelParams p(gaincell::gaincell_variant_hw(c.attention, c.hw));
  return gaincell::gaincell_gemm_terms(p, T);
}

// The work-done rate of a gain-cell section (see the header comment) next to the textbook one.
void add_work_rate(nlohmann::json& section, const GPT2Config& c, int T, double tokens_per_s,
                   double textbook_gflops, double sgemm_gflops) {
  if (!gaincell::is_gaincell_attention(c.attention)) return;
  const int terms = attention_gemm_terms(c, T);
  section["attention_gemm_terms"] = terms;
  if (terms == 0) return;  // plain loops: no GEMM work to compare with sgemm
  const double work =
      textbook_gflops + (terms - 1) * attention_flops_per_token(c, T) * tokens_per_s / 1e9;
  section["work_gflops"] = work;
  section["work_fraction_of_sgemm"] = work / sgemm_gflops;
}

// A plain AdamW step (lr 1e-4, betas 0.9/0.95, wd 0.1 on rank >= 2) so that the training rate and
// peak memory include the optimiser state, as a real run would.
void adamw_step(GPT2Model& m, std::vector<float>& mom, std::vector<float>& var, int step) {
  const float lr = 1e-4f, b1 = 0.9f, b2 = 0.95f, eps = 1e-8f, wd = 0.1f;
  const float bc1 = 1.0f - std::pow(b1, step), bc2 = 1.0f - std::pow(b2, step);
  float* w = m.param_data();
  const float* g = m.grad_data();
  // One parallel region; `nowait` lets threads run on to the next tensor without a barrier.
#pragma omp parallel
  for (const auto& p : m.params()) {
    const float decay = p.weight_decay ? wd : 0.0f;
#pragma omp for schedule(static) nowait
    for (int64_t j = 0; j < p.numel; j++) {
      const size_t i = p.offset + j;
      mom[i] = b1 * mom[i] + (1 - b1) * g[i];
      var[i] = b2 * var[i] + (1 - b2) * g[i] * g[i];
      w[i] -= lr * ((mom[i] / bc1) / (std::sqrt(var[i] / bc2) + eps) + decay * w[i]);
    }
  }
}

// Grouped-query attention's KV-cache traffic (issue 12: each K/V head is read once per group):
// one decode attention step of 32 query heads (D = 64) over a long softmax KV cache with 32, 8,
// 4 and 1 key/value heads. When each cached row is read once per group, the time follows the
// cache's bytes (2 x Hkv x ctx x D x 4 bytes; 2 bytes an element with --kv-cache bf16), not the
// query heads' count.
nlohmann::json measure_gqa_decode(int reps, gaincell::KvCacheFormat kv_cache) {
  const int H = 32, D = 64, ctx = 8192;
  nlohmann::json out = {{"n_head", H},
                        {"head_dim", D},
                        {"context", ctx},
                        {"kv_cache", gaincell::kv_cache_format_name(kv_cache)}};
  const double triad_before = measure_triad_gbps(reps);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> q(static_cast<size_t>(H) * D), o(q.size());
  for (float& x : q) x = normal(rng);
  for (int Hkv : {32, 8, 4, 1}) {
    gaincell::AttentionContext ctx_info;
    ctx_info.n_head = H;
    ctx_info.n_kv_head = Hkv;
    ctx_info.head_dim = D;
    ctx_info.block_size = ctx;
    auto attn = gaincell::make_attention("softmax", ctx_info);
    auto state = attn->make_decode_state(kv_cache);
    std::vector<float> k(static_cast<size_t>(Hkv) * D), v(k.size());
    for (int t = 0; t < ctx; ++t) {
      for (float& x : k) x = normal(rng);
      for (float& x : v) x = normal(rng);
      state->append(k.data(), v.data());
    }
    const double t = best_time(reps + 2, [&] { state->attend(q.data(), o.data()); });
    const double kv_bytes = 2.0 * Hkv * ctx * D * gaincell::kv_cache_element_bytes(kv_cache);
    out["kv_heads_" + std::to_string(Hkv)] = {{"step_s", t},
                                              {"kv_cache_bytes", kv_bytes},
                                              {"kv_gb_per_s", kv_bytes / t / 1e9},
                                              {"query_heads_per_kv_head", H / Hkv}};
  }
  out["triad_gbps"] = 0.5 * (triad_before + measure_triad_gbps(reps));
  return out;
}

// One attention layer of the model's shape on random inputs in the hardware ranges: forward at
// B=1, T=1024 (inference) and forward + backward at B=4, T=256 (training). Process CPU time is
// reported beside wall time: it moves far less with the load of a shared machine, so it shows
// kernel changes (run with --threads 1 for a per-core figure).
nlohmann::json measure_attention_layer(const GPT2Config& c, int reps) {
  gaincell::AttentionContext ctx;
  ctx.n_head = c.n_head;
  ctx.n_kv_head = c.kv_heads();
  ctx.head_dim = c.head_dim();
  ctx.block_size = c.block_size;
  ctx.hw = c.hw;
  auto attn = gaincell::make_attention(c.attention, ctx);
  const int H = c.n_head, Hkv = c.kv_heads(), D = c.head_dim();
  nlohmann::json out;
  for (auto [B, T, train] : {std::tuple{1, 1024, false}, std::tuple{4, 256, true}}) {
    T = std::min(T, c.block_size);
    const size_t n = size_t{1} * B * H * T * D, nkv = n / H * Hkv;
    std::mt19937 rng(7);
    std::normal_distribution<float> normal(0.45f, 0.3f);
    std::vector<float> q(n), k(nkv), v(nkv), o(n), dout(n), dq(n), dk(nkv), dv(nkv);
    for (auto* x : {&q, &k, &v, &dout})
      for (float& e : *x) e = normal(rng);
    double fwd_cpu = 1e30, fwd_wall = 1e30, bwd_cpu = 1e30, bwd_wall = 1e30;
    for (int r = 0; r <= reps + 2; ++r) {  // the first run warms up
      double c0 = process_cpu_seconds();
      auto w0 = Clock::now();
      attn->forward(q.data(), k.data(), v.data(), o.data(), B, T, train);
      if (r > 0) {
        fwd_cpu = std::min(fwd_cpu, process_cpu_seconds() - c0);
        fwd_wall = std::min(fwd_wall, seconds_since(w0));
      }
      if (!train) continue;
      c0 = process_cpu_seconds();
      w0 = Clock::now();
      attn->backward(q.data(), k.data(), v.data(), dout.data(), dq.data(), dk.data(), dv.data(), B,
                     T);
      if (r > 0) {
        bwd_cpu = std::min(bwd_cpu, process_cpu_seconds() - c0);
        bwd_wall = std::min(bwd_wall, seconds_since(w0));
      }
    }
    // Forward FLOPs of the products (QKᵀ and PV over (T+1)/2 keys), and with the gain-cell
    // kernel's GEMM terms the work actually done.
    const double textbook = 2.0 * 2.0 * B * H * double(T) * (T + 1) / 2.0 * D;
    const int terms = attention_gemm_terms(c, T);
    nlohmann::json section = {{"forward_cpu_s", fwd_cpu},
                              {"forward_wall_s", fwd_wall},
                              {"forward_textbook_gflops_per_cpu_s", textbook / fwd_cpu / 1e9},
                              {"attention_gemm_terms", terms}};
    if (terms > 0) section["forward_work_gflops_per_cpu_s"] = terms * textbook / fwd_cpu / 1e9;
    if (train) {
      section["backward_cpu_s"] = bwd_cpu;
      section["backward_wall_s"] = bwd_wall;
    }
    out["B" + std::to_string(B) + "_T" + std::to_string(T) + (train ? "_train" : "_forward")] =
        section;
  }
  return out;
}

// Bytes of attention state one decode step of `session` reads: the softmax KV cache (every
// key/value head once, `length` tokens, in the cache's format) or, for the gain-cell variants,
// the session's own arrays as they are stored now (level codes or fp32; at most a window).
double attention_state_bytes(const gaincell::DecodeSession& session, const GPT2Config& config,
                             gaincell::KvCacheFormat kv_cache, double length) {
  if (!gaincell::is_gaincell_attention(config.attention)) {
    return 2.0 * gaincell::kv_cache_element_bytes(kv_cache) * config.n_layer * config.kv_heads() *
           config.head_dim() * length;
  }
  double bytes = 0.0;
  for (int l = 0; l < session.num_layers(); ++l) {
    const auto& arrays = dynamic_cast<const gaincell::GainCellDecodeState&>(session.state(l));
    for (int g = 0; g < config.kv_heads(); ++g)
      bytes += static_cast<double>(arrays.head(g).state_bytes_per_read());
  }
  return bytes;
}

// Decode tokens/s with f32, bf16 and q8 weights, at a context of 512 (as decode_ctx512) and at 64,
// where the KV cache the attention reads per token is small beside the weights (a quarter of q8's
// weight bytes at 512 in GPT-2 124M, under 4 % at 64), so the speed-ups show the formats
// themselves. One model per format (the same random weights) and the formats timed in turn, round
// by round: on a shared machine the memory bandwidth drifts over seconds, which would move a
// format measured after another; within a round all three see the same machine, so the median of
// the rounds' ratios is the robust speed-up (the ratio of best rounds is reported beside it).
nlohmann::json measure_weight_formats(const GPT2Config& config, GPT2Model& f32_model, int reps,
                                      gaincell::KvCacheFormat kv_cache) {
  using gaincell::WeightFormat;
  const int steps = std::min(32, config.block_size / 2);
  const double triad_before = measure_triad_gbps(reps);
  const char* names[] = {"f32", "bf16", "q8"};
  std::vector<std::unique_ptr<GPT2Model>> packed;
  std::vector<GPT2Model*> models = {&f32_model};
  for (const char* name : {"bf16", "q8"}) {
    packed.push_back(std::make_unique<GPT2Model>(config));
    packed.back()->init_random(1);  // the weights of f32_model (bench_engine's seed)
    packed.back()->set_weight_format(gaincell::parse_weight_format(name));
    models.push_back(packed.back().get());
  }
  nlohmann::json out;
  for (const int context_wanted : {512, 64}) {
    const int context = std::min(context_wanted, config.block_size - steps);
    const auto prompt = random_tokens(context + steps, config.vocab_size, 4);
    std::vector<std::unique_ptr<gaincell::DecodeSession>> prefilled;
    for (GPT2Model* m : models) {
      prefilled.push_back(m->start_decoding(kv_cache));
      // Room for the timed steps (clones keep it): no cache grows inside a round.
      prefilled.back()->reserve(context + steps);
      prefilled.back()->prefill(prompt.data(), context);
    }
    // seconds[f][round]; round 0 is a warm-up.
    std::vector<std::vector<double>> seconds(3);
    for (int round = 0; round <= std::max(reps, 1); ++round) {
      for (int f = 0; f < 3; ++f) {
        auto session = prefilled[f]->clone();
        if (!session) {  // a decode state that cannot be copied: prefill again
          session = models[f]->start_decoding(kv_cache);
          session->reserve(context + steps);
          session->prefill(prompt.data(), context);
        }
        const auto start = Clock::now();
        for (int s = 0; s < steps; s++) session->step(prompt[context + s]);
        if (round > 0) seconds[f].push_back(gaincell::bench::seconds_since(start));
      }
    }
    const std::string key = context_wanted == 512 ? "decode_weights" : "decode_weights_ctx64";
    const double f32_best = *std::min_element(seconds[0].begin(), seconds[0].end());
    // The attention state read per step at the rounds' mean length: a copy of the f32 session
    // advanced by half the steps (the gain-cell arrays as they are stored: 1-byte level codes
    // where every stored voltage is a DAC level, gaincell/array/head_array.h, else fp32).
    auto midway = prefilled[0]->clone();
    for (int s = 0; midway && s < steps / 2; s++) midway->step(prompt[context + s]);
    const double kv_bytes =
        midway ? attention_state_bytes(*midway, config, kv_cache, context + steps / 2) : 0.0;
    const double f32_weight_bytes = 4.0 * f32_model.num_params();
    for (int f = 0; f < 3; ++f) {
      std::vector<double> ratios;
      for (size_t r = 0; r < seconds[f].size(); ++r)
        ratios.push_back(seconds[0][r] / seconds[f][r]);
      const double best = *std::min_element(seconds[f].begin(), seconds[f].end());
      const double weight_bytes =
          f == 0 ? f32_weight_bytes : static_cast<double>(models[f]->packed_weight_bytes());
      // What the bytes alone allow: f32's bytes per step over this format's, the cache included
      // (with every byte at the same rate; norms, attention arithmetic and barriers not counted).
      const double bound = (f32_weight_bytes + kv_bytes) / (weight_bytes + kv_bytes);
      out[key][names[f]] = {{"tokens_per_s", steps / best},
                            {"speedup_over_f32", f32_best / best},
                            {"speedup_median_of_rounds", gaincell::bench::median(ratios)},
                            {"speedup_bound_from_bytes", bound},
                            {"round_seconds", seconds[f]},
                            {"weight_bytes_read_per_token", weight_bytes}};
    }
    out[key]["context"] = context;
    out[key]["steps"] = steps;
    out[key]["rounds"] = seconds[0].size();
    out[key]["kv_cache"] = gaincell::kv_cache_format_name(kv_cache);
    out[key]["kv_cache_bytes_read_per_token"] = kv_bytes;
  }
  const double triad_after = measure_triad_gbps(reps);
  for (const char* key : {"decode_weights", "decode_weights_ctx64"})
    out[key]["triad_gbps"] = 0.5 * (triad_before + triad_after);
  return out;
}

}  // namespace

int run(int argc, char** argv) {
  int threads = 2, reps = 2;
  std::string only;  // "", "train", "forward" or "decode"
  std::string model_name = "gpt2";
  std::string attention = "softmax";
  gaincell::KvCacheFormat kv_cache = gaincell::KvCacheFormat::kF32;
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
    else if (flag == "--only")
      only = argv[i + 1];
    else if (flag == "--kv-cache")
      kv_cache = gaincell::parse_kv_cache_format(argv[i + 1]);
    else {
      std::cerr << "usage: bench_engine [--threads N] [--reps N] [--model NAME] [--attention NAME] "
                   "[--kv-cache f32|bf16] [--only train|forward|decode|weights|gqa|attention]\n";
      return 2;
    }
  }
  omp_set_num_threads(threads);
  gaincell::blas::set_num_threads(threads);
  nlohmann::json out;
  out["benchmark"] = "engine";
  out["model"] = model_name;
  out["attention"] = attention;
  out["kv_cache"] = gaincell::kv_cache_format_name(kv_cache);
  out["threads"] = threads;
  out["reps"] = reps;
  out["only"] = only.empty() ? "all" : only;
  // Recorded because it matters (bench/README.md): spinning OpenMP threads take the cores from
  // OpenBLAS's threads, and wait a whole time slice at every barrier on an oversubscribed machine.
  out["openblas_core"] = gaincell::bench::openblas_core();
  out["omp_wait_policy"] = gaincell::bench::omp_wait_policy();
  out["openblas_thread_timeout"] = gaincell::bench::openblas_thread_timeout();
  out["timing"] = "best of reps after one warm-up; limits measured before and after each section";

  // The machine may be shared, so each section's limit is measured right before and right after
  // it (mean of the two), under the same load as the section itself.
  const double sgemm_start = measure_sgemm_gflops(reps);
  out["machine"]["sgemm_gflops_at_start"] = sgemm_start;
  out["machine"]["last_level_cache_bytes"] = gaincell::bench::last_level_cache_bytes();
  double sgemm_gflops = sgemm_start;

  if (only == "gqa") {  // needs no model
    out["gqa_decode_attention"] = measure_gqa_decode(reps, kv_cache);
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
  GPT2Config config = GPT2Config::named(model_name);
  config.attention = attention;
  if (gaincell::is_gaincell_attention(attention))
    config.hw = gaincell::gaincell_default_hw(attention);
  if (only == "attention") {  // one attention layer, no model passes
    out["attention_layer"] = measure_attention_layer(config, reps);
    std::cout << out.dump(2) << std::endl;
    return 0;
  }
  auto model = std::make_unique<GPT2Model>(config);
  model->init_random(1);
  out["num_params"] = model->num_params();

  // "weights" (decode with f32, bf16 and q8 weights), "gqa" and "attention" run only when asked
  // for.
  auto wanted = [&only](const char* section) { return only.empty() || only == section; };
  if (wanted("train")) {  // Training step: forward + backward + AdamW at B=4, T=256.
    const int B = 4, T = std::min(256, config.block_size);
    const auto inputs = random_tokens(size_t{B} * T, config.vocab_size, 1);
    const auto targets = random_tokens(size_t{B} * T, config.vocab_size, 2);
    std::vector<float> mom(model->num_params(), 0.0f), var(model->num_params(), 0.0f);
    int step = 0;
    const double t = best_time(reps, [&] {
      model->zero_grad();
      model->forward(inputs.data(), targets.data(), B, T, true);
      model->backward();
      adamw_step(*model, mom, var, ++step);
    });
    const double rss = peak_rss_mb();
    sgemm_gflops = 0.5 * (sgemm_gflops + measure_sgemm_gflops(reps));
    const double tokens_per_s = B * T / t;
    const double gflops = 3.0 * forward_flops_per_token(config, T) * tokens_per_s / 1e9;
    out["train_B4_T256"] = {{"tokens_per_s", tokens_per_s},
                            {"sgemm_gflops", sgemm_gflops},
                            {"step_s", t},
                            {"gflops", gflops},
                            {"fraction_of_sgemm", gflops / sgemm_gflops},
                            {"activation_mb", model->activation_bytes() / 1e6},
                            {"peak_rss_mib", rss}};
    add_work_rate(out["train_B4_T256"], config, T, tokens_per_s, gflops, sgemm_gflops);
  }
  if (wanted("train")) {
    model = std::make_unique<GPT2Model>(config);  // drop gradients and optimiser state
    model->init_random(1);
  }

  for (auto [B, T] : {std::pair{1, 1024}, std::pair{4, 256}}) {
    if (!wanted("forward")) break;
    T = std::min(T, config.block_size);
    const auto inputs = random_tokens(static_cast<size_t>(B) * T, config.vocab_size, 3);
    const double sgemm_before = measure_sgemm_gflops(reps);
    const double t = best_time(reps, [&] { model->forward(inputs.data(), nullptr, B, T); });
    sgemm_gflops = 0.5 * (sgemm_before + measure_sgemm_gflops(reps));
    const double tokens_per_s = B * T / t;
    const double gflops = forward_flops_per_token(config, T) * tokens_per_s / 1e9;
    auto& section = out["forward_B" + std::to_string(B) + "_T" + std::to_string(T)];
    section = {{"tokens_per_s", tokens_per_s},
               {"pass_s", t},
               {"sgemm_gflops", sgemm_gflops},
               {"gflops", gflops},
               {"fraction_of_sgemm", gflops / sgemm_gflops}};
    add_work_rate(section, config, T, tokens_per_s, gflops, sgemm_gflops);
  }

  if (wanted("decode")) {  // Decode at a 512-token context: prefill, then time single steps.
    const int steps = std::min(32, config.block_size / 2);
    const int context = std::min(512, config.block_size - steps);
    const auto prompt = random_tokens(context + steps, config.vocab_size, 4);
    auto session = model->start_decoding(kv_cache);
    session->reserve(context + steps);
    const double triad_before = measure_triad_gbps(reps);
    const double best = best_decode_seconds(*session, prompt, context, steps, reps);
    const double triad_gbps = 0.5 * (triad_before + measure_triad_gbps(reps));
    const double tokens_per_s = steps / best;
    const double ctx_mid = context + steps / 2.0;
    // Every weight once (not GPT-2's position table, of which a step reads one row) and the K
    // and V cache of every key/value head: grouped-query attention reads each once per group.
    const double position_table =
        config.is_gpt2() ? static_cast<double>(config.block_size) * config.n_embd : 0.0;
    const double bytes_per_token = 4.0 * (model->num_params() - position_table) +
                                   attention_state_bytes(*session, config, kv_cache, ctx_mid);
    const double gbps = tokens_per_s * bytes_per_token / 1e9;
    out["decode_ctx512"] = {{"tokens_per_s", tokens_per_s},
                            {"gb_per_s", gbps},
                            {"bytes_per_token", bytes_per_token},
                            {"triad_gbps", triad_gbps},
                            {"bandwidth_bound_tokens_per_s", triad_gbps * 1e9 / bytes_per_token},
                            {"fraction_of_bandwidth", gbps / triad_gbps}};
  }
  if (only == "weights") {  // Decode with each weight storage (issue 14 item 3), same run.
    out["weights_timing"] =
        "rounds: f32, bf16, q8 in turn, each timing `steps` tokens from a copy of its prefilled "
        "session; best round per format, and the median over rounds of each round's ratio "
        "(peak_rss_mib counts the three models, each with its fp32 parameters)";
    out.update(measure_weight_formats(config, *model, reps, kv_cache));
    model->set_weight_format(gaincell::WeightFormat::kF32);
  }
  out["peak_rss_mib"] = peak_rss_mb();
  std::cout << out.dump(2) << std::endl;
  return 0;
}

int main(int argc, char** argv) {
  gaincell::bench::use_cli_thread_settings(argv);
  try {
    return run(argc, argv);
  } catch (const std::exception& e) {
    std::cerr << "bench_engine: error: " << e.what() << "\n";
    return 1;
  }
}
