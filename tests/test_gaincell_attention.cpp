// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// The gain-cell attention variants as Attention components: registry, token-by-token decoding
// against the whole-sequence form (T <= M and sliding T > M, every preset, noise off), scaler
// gradients by finite differences, the adaptation statistics, and bad input.
#include <gtest/gtest.h>
#include <omp.h>

#include <array>
#include <cmath>
#include <exception>
#include <memory>
#include <random>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/error.h"
#include "gaincell/core/spin_barrier.h"

using namespace gaincell;

namespace {

std::vector<float> random_vector(size_t n, uint32_t seed, float stddev = 0.5f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, stddev);
  std::vector<float> v(n);
  for (auto& x : v) x = g(rng);
  return v;
}

AttentionContext context(const HwConfig& hw, int H, int D) {
  AttentionContext ctx;
  ctx.n_head = H;
  ctx.head_dim = D;
  ctx.hw = hw;
  return ctx;
}

// Runs the decode state token by token over [1][H][T][D] inputs; returns [1][H][T][D].
std::vector<float> decode_all(const Attention& attn, const std::vector<float>& q,
                              const std::vector<float>& k, const std::vector<float>& v, int H,
                              int T, int D) {
  auto state = attn.make_decode_state();
  std::vector<float> out(q.size()), qt(H * D), kt(H * D), vt(H * D), ot(H * D);
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d) {
        const size_t i = (static_cast<size_t>(h) * T + t) * D + d;
        qt[h * D + d] = q[i];
        kt[h * D + d] = k[i];
        vt[h * D + d] = v[i];
      }
    state->append(kt.data(), vt.data());
    state->attend(qt.data(), ot.data());
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d) out[(static_cast<size_t>(h) * T + t) * D + d] = ot[h * D + d];
  }
  EXPECT_EQ(state->length(), T);
  return out;
}

struct DecodeCase {
  std::string attention;
  HwConfig hw;
};

std::vector<DecodeCase> decode_cases(int window) {
  std::vector<DecodeCase> cases;
  for (const char* preset : {"paper-nonlinear", "paper-linear", "ideal"}) {
    HwConfig hw = HwConfig::preset(preset);
    hw.window = window;
    hw.leakage.lambda_per_token = 2e-3;  // visible over a few hundred tokens
    cases.push_back({hw.cell == CellModel::kLinear ? "gaincell-linear" : "gaincell-nonlinear", hw});
  }
  for (const char* name : {"gaincell-x3", "gaincell-x5", "gaincell-sigmoid", "gaincell-exp"}) {
    HwConfig hw = gaincell_default_hw(name);
    hw.window = window;
    cases.push_back({name, hw});
  }
  HwConfig inverted = HwConfig::preset("paper-nonlinear");
  inverted.window = window;
  inverted.polarity = Polarity::kInverted;
  cases.push_back({"gaincell-nonlinear", inverted});
  HwConfig mean = HwConfig::preset("paper-nonlinear");
  mean.window = window;
  mean.out_mode = OutputQuantMode::kTileMean;
  cases.push_back({"gaincell-nonlinear", mean});
  HwConfig counter = HwConfig::preset("paper-linear");
  counter.window = window;
  counter.out_grid = OutputGrid::kCounter;
  cases.push_back({"gaincell-linear", counter});
  return cases;
}

void check_decode_equals_whole_sequence(int window, int T) {
  const int H = 2, D = 16;
  const size_t n = static_cast<size_t>(H) * T * D;
  uint32_t seed = 100;
  for (const DecodeCase& c : decode_cases(window)) {
    SCOPED_TRACE(c.attention + " hw " + c.hw.to_json().dump());
    auto attn = make_gaincell_attention(c.attention, context(c.hw, H, D));
    auto& ga = static_cast<GainCellAttention&>(*attn);
    const auto q = random_vector(n, seed++), k = random_vector(n, seed++),
               v = random_vector(n, seed++);
    const std::vector<float> dec = decode_all(*attn, q, k, v, H, T, D);
    // Against the loop reference of the whole-sequence form: the same double sums, so equal.
    ga.set_use_reference_kernel(true);
    std::vector<float> whole(n);
    attn->forward(q.data(), k.data(), v.data(), whole.data(), 1, T, false);
    double max_out = 0.0;
    int differ = 0;
    for (size_t i = 0; i < n; ++i) {
      max_out = std::max(max_out, static_cast<double>(std::fabs(whole[i])));
      if (std::fabs(dec[i] - whole[i]) > 1e-6) ++differ;
    }
    EXPECT_EQ(differ, 0);
    EXPECT_GT(max_out, 0.05);  // the comparison is not between zeros
    // Against the fast kernel: equal up to float rounding, except a rare output-quantiser tie.
    ga.set_use_reference_kernel(false);
    attn->forward(q.data(), k.data(), v.data(), whole.data(), 1, T, false);
    const double step = c.hw.out.enabled ? 2.0 / 31.0 : 0.0;
    int flips = 0;
    for (size_t i = 0; i < n; ++i) {
      const double diff = std::fabs(dec[i] - whole[i]);
      if (diff <= 1e-5) continue;
      EXPECT_TRUE(step > 0.0) << "element " << i << ": " << dec[i] << " vs " << whole[i];
      ++flips;
    }
    EXPECT_LE(flips, 3);
  }
}

}  // namespace

TEST(GainCellAttention, AllVariantsAreRegistered) {
  for (const std::string& name : gaincell_attention_names()) {
    AttentionContext ctx = context(gaincell_default_hw(name), 2, 8);
    auto attn = make_attention(name, ctx);
    EXPECT_EQ(attn->name(), name);
    EXPECT_EQ(static_cast<GainCellAttention&>(*attn).hw().cell, gaincell_cell_model(name));
    EXPECT_EQ(attn->param_specs().size(), 16u);
  }
  EXPECT_EQ(gaincell_attention_names().size(), 6u);
  EXPECT_FALSE(gaincell_default_hw("gaincell-x3").q.enabled);
  EXPECT_TRUE(gaincell_default_hw("gaincell-x3").k.enabled);
  EXPECT_EQ(gaincell_default_hw("gaincell-linear").name, "paper-linear");
}

TEST(GainCellAttention, ParamSpecsHaveSpecInitialValues) {
  auto attn = make_gaincell_attention("gaincell-nonlinear",
                                      context(HwConfig::preset("paper-nonlinear"), 3, 8));
  const auto specs = attn->param_specs();
  auto find = [&](const std::string& name) -> const ParamSpec& {
    for (const auto& s : specs)
      if (s.name == name) return s;
    throw Error("missing " + name);
  };
  EXPECT_EQ(find("attn.q_scaler.a").init, std::vector<float>(3, 1.0f));
  EXPECT_EQ(find("attn.q_scaler.b").init, std::vector<float>(3, 0.0f));
  EXPECT_EQ(find("attn.k_scaler.b").init, std::vector<float>(3, 0.45f));
  EXPECT_EQ(find("attn.v_scaler.b").init, std::vector<float>(3, 0.45f));
  EXPECT_EQ(find("attn.output_scaler.a").init, std::vector<float>(3, 1.0f));
  EXPECT_EQ(find("attn.output_scaler.b").init, std::vector<float>(3, 0.0f));
  EXPECT_TRUE(find("attn.k_scaler.a").trainable);
  EXPECT_FALSE(find("attn.k_scaler.target_std").trainable);
  EXPECT_EQ(find("attn.output_scaler.target_mean").shape, std::vector<int64_t>{3});
}

TEST(GainCellAttention, DecodeEqualsWholeSequenceWithinWindow) {
  check_decode_equals_whole_sequence(1024, 150);
}

TEST(GainCellAttention, DecodeEqualsMaskedWholeSequenceWhenSliding) {
  check_decode_equals_whole_sequence(128, 300);
}

// The decode state's own write path (scalers, clamp, the DAC quantisers of quantise_head_inputs,
// then HeadArray::write) must hand the arrays voltages that are exactly DAC levels, so that every
// head keeps its 1-byte level codes (head_array.h "Storage"). Results are bit-identical either
// way, so only this check notices a quantiser change that sends every head to fp32 storage.
TEST(GainCellAttention, DecodeKeepsTheArraysInLevelCodes) {
  for (const char* variant : {"gaincell-nonlinear", "gaincell-linear"}) {
    SCOPED_TRACE(variant);
    const int H = 3, D = 16, T = 100;
    HwConfig hw = gaincell_default_hw(variant);
    hw.window = 64;
    hw.array_size = 32;
    GainCellAttention attn(variant, context(hw, H, D));
    auto state = attn.make_decode_state();
    const auto q = random_vector(static_cast<size_t>(H) * D * T, 31, 0.6f);
    const auto k = random_vector(q.size(), 32, 0.6f);
    const auto v = random_vector(q.size(), 33, 0.6f);
    std::vector<float> out(static_cast<size_t>(H) * D);
    for (int t = 0; t < T; ++t) {
      const size_t at = static_cast<size_t>(t) * H * D;
      state->append(k.data() + at, v.data() + at);
      state->attend(q.data() + at, out.data());
    }
    const auto& arrays = dynamic_cast<const GainCellDecodeState&>(*state);
    for (int g = 0; g < H; ++g) EXPECT_TRUE(arrays.head(g).level_coded()) << "head " << g;
  }
}

// Exact scaler gradients (ideal preset: linear cell, no quantisers) by central differences of
// L = sum dy . y with respect to every a and b of every head. The inputs keep every clamp away
// from its kinks (Q in (0,1), K in (0.45, 0.9) so 0 < S < 80, small V so |A| < 40), where
// finite differences are exact to O(step^2).
// Scaler values (a, b for q, k, v, output) of head 0; head 1 is 10% larger.
using ScalerInit = std::array<float, 8>;
constexpr ScalerInit kPlainInit = {1.1f, 0.5f, 0.9f, 0.65f, 1.2f, 0.42f, 0.8f, 0.1f};
void check_scaler_gradients(const HwConfig& hw, const ScalerInit& init);

TEST(GainCellAttention, ScalerGradientsMatchFiniteDifferences) {
  HwConfig hw = HwConfig::preset("ideal");
  hw.window = 64;
  hw.leakage.enabled = true;
  hw.leakage.lambda_per_token = 5e-3;
  check_scaler_gradients(hw, kPlainInit);
}

// The same with relative read noise on S and A, write noise and gain variation: the gradient
// includes d(x + level |x| n)/dx and the per-cell gains. Relative noise has a kink at 0, so the
// inputs keep S and A positive (V above the offset, smaller Q so that A stays below a_sat).
TEST(GainCellAttention, ScalerGradientsMatchFiniteDifferencesWithNoise) {
  HwConfig hw = HwConfig::preset("ideal");
  hw.window = 64;
  hw.leakage.enabled = true;
  hw.leakage.lambda_per_token = 5e-3;
  hw.noise.read_noise_s = 0.1;
  hw.noise.read_noise_a = 0.1;
  hw.noise.write_noise_kv = 0.005;
  hw.noise.gain_variation = 0.1;
  hw.noise.seed = 99;
  check_scaler_gradients(hw, {1.1f, 0.35f, 0.9f, 0.65f, 1.2f, 0.52f, 0.8f, 0.1f});
}

void check_scaler_gradients(const HwConfig& hw, const ScalerInit& init) {
  const int B = 2, H = 2, T = 90, D = 8;
  const size_t n = static_cast<size_t>(B) * H * T * D;
  GainCellAttention attn("gaincell-linear", context(hw, H, D));
  std::vector<std::vector<float>> vals(16, std::vector<float>(H)),
      grads(16, std::vector<float>(H, 0.0f));
  std::vector<TensorRef> refs;
  for (int i = 0; i < 16; ++i) {
    for (int h = 0; h < H; ++h) vals[i][h] = i < 8 ? init[i] * (1.0f + 0.1f * h) : 0.0f;
    refs.push_back({vals[i].data(), i < 8 ? grads[i].data() : nullptr, H});
  }
  attn.bind_params(refs);
  const auto q = random_vector(n, 1, 0.1f), k = random_vector(n, 2, 0.04f),
             v = random_vector(n, 3, 0.05f), dy = random_vector(n, 4, 1.0f);
  std::vector<float> y(n), dq(n), dk(n), dv(n);
  attn.forward(q.data(), k.data(), v.data(), y.data(), B, T, true);
  attn.backward(q.data(), k.data(), v.data(), dy.data(), dq.data(), dk.data(), dv.data(), B, T);
  auto loss = [&]() {
    attn.forward(q.data(), k.data(), v.data(), y.data(), B, T, false);
    double l = 0.0;
    for (size_t i = 0; i < n; ++i) l += static_cast<double>(dy[i]) * y[i];
    return l;
  };
  const float step = 1e-3f;
  for (int i = 0; i < 8; ++i) {
    for (int h = 0; h < H; ++h) {
      const float saved = vals[i][h];
      vals[i][h] = saved + step;
      const double lp = loss();
      vals[i][h] = saved - step;
      const double lm = loss();
      vals[i][h] = saved;
      const double fd = (lp - lm) / (2.0 * step);
      EXPECT_NEAR(grads[i][h], fd, 2e-3 * std::fabs(fd) + 2e-3)
          << "scaler tensor " << i << " head " << h;
    }
  }
}

TEST(GainCellAttention, RecordsScalerStatisticsAndTargetEma) {
  const int B = 2, H = 2, T = 70, D = 8;
  const size_t n = static_cast<size_t>(B) * H * T * D;
  GainCellAttention attn("gaincell-nonlinear", context(HwConfig::preset("paper-nonlinear"), H, D));
  EXPECT_EQ(attn.scaler_statistics(), nullptr);
  std::vector<std::vector<float>> vals(16, std::vector<float>(H, 0.0f));
  const float init[8] = {1.5f, 0.1f, 0.7f, 0.45f, 1.3f, 0.4f, 2.0f, 0.3f};
  std::vector<TensorRef> refs;
  for (int i = 0; i < 16; ++i) {
    if (i < 8) vals[i] = {init[i], init[i] * 0.5f};
    refs.push_back({vals[i].data(), nullptr, H});
  }
  attn.bind_params(refs);
  attn.set_record_targets(true);
  const auto q = random_vector(n, 1), k = random_vector(n, 2), v = random_vector(n, 3);
  std::vector<float> y(n);
  attn.forward(q.data(), k.data(), v.data(), y.data(), B, T, false);
  EXPECT_EQ(attn.scaler_statistics(), nullptr) << "statistics only in training";
  attn.forward(q.data(), k.data(), v.data(), y.data(), B, T, true);
  const ScalerStatistics* st = attn.scaler_statistics();
  ASSERT_NE(st, nullptr);
  EXPECT_EQ(st->recorded_forwards, 1);
  const std::vector<float>* inputs[3] = {&q, &k, &v};
  for (int s = 0; s < 4; ++s) {
    for (int h = 0; h < H; ++h) {
      // Hand computation: x_out = a x + b over (b, t, d) for q/k/v; y itself for the output.
      std::vector<double> xs;
      for (int b = 0; b < B; ++b)
        for (int i = 0; i < T * D; ++i) {
          const size_t idx = (static_cast<size_t>(b) * H + h) * T * D + i;
          xs.push_back(s < 3 ? vals[2 * s][h] * (*inputs[s])[idx] + vals[2 * s + 1][h] : y[idx]);
        }
      double mean = 0.0, var = 0.0;
      for (double x : xs) mean += x;
      mean /= xs.size();
      for (double x : xs) var += (x - mean) * (x - mean);
      const double sd = std::sqrt(var / (xs.size() - 1));
      EXPECT_NEAR(st->mean[s][h], mean, 1e-5 * (1 + std::fabs(mean))) << s << " " << h;
      EXPECT_NEAR(st->std[s][h], sd, 1e-5 * (1 + sd)) << s << " " << h;
      // EMA from 0 with alpha 0.1 after one training forward.
      EXPECT_NEAR(vals[8 + 2 * s][h], 0.1 * mean, 1e-6 * (1 + std::fabs(mean)));
      EXPECT_NEAR(vals[8 + 2 * s + 1][h], 0.1 * sd, 1e-6 * (1 + sd));
    }
  }
}

// Noise and variation beyond the paper: both simulations draw the same seeded numbers (per
// (layer, head) seed, event indices of gaincell/device/noise.h), so with read noise on S and A,
// write noise and gain variation, decoding still equals the whole-sequence form.
TEST(GainCellAttention, DecodeEqualsWholeSequenceWithNoise) {
  const int H = 2, D = 16;
  uint32_t seed = 500;
  for (bool relative : {true, false}) {
    for (int window : {1024, 64}) {
      HwConfig hw = HwConfig::preset("paper-nonlinear");
      hw.window = window;
      hw.leakage.lambda_per_token = 2e-3;
      hw.noise.read_noise_relative = relative;
      hw.noise.read_noise_s = relative ? 0.05 : 0.5;
      hw.noise.read_noise_a = relative ? 0.05 : 0.5;
      hw.noise.write_noise_kv = 0.02;
      hw.noise.gain_variation = 0.05;
      hw.noise.seed = 1234;
      SCOPED_TRACE(hw.noise.read_noise_relative ? "relative" : "absolute");
      SCOPED_TRACE(window);
      AttentionContext ctx = context(hw, H, D);
      ctx.layer = 3;
      GainCellAttention attn("gaincell-nonlinear", ctx);
      const int T = 150;
      const size_t n = static_cast<size_t>(H) * T * D;
      const auto q = random_vector(n, seed++), k = random_vector(n, seed++),
                 v = random_vector(n, seed++);
      const std::vector<float> dec = decode_all(attn, q, k, v, H, T, D);
      std::vector<float> whole(n), quiet(n);
      attn.forward(q.data(), k.data(), v.data(), whole.data(), 1, T, false);
      int flips = 0;
      for (size_t i = 0; i < n; ++i)
        if (std::fabs(dec[i] - whole[i]) > 1e-5) ++flips;
      EXPECT_LE(flips, 3) << "of " << n;  // rare output-quantiser ties (float vs float paths)
      // The noise matters: the noiseless hardware gives a different output.
      AttentionContext clean = ctx;
      clean.hw.noise = NoiseConfig{};
      GainCellAttention noiseless("gaincell-nonlinear", clean);
      noiseless.forward(q.data(), k.data(), v.data(), quiet.data(), 1, T, false);
      int changed = 0;
      for (size_t i = 0; i < n; ++i)
        if (std::fabs(quiet[i] - whole[i]) > 1e-3) ++changed;
      EXPECT_GT(changed, static_cast<int>(n / 20));
    }
  }
}

// Decode's team shares the key/value groups' arrays out (attend_on_team): with read noise, write
// noise, gain variation and leakage on, for multi-head and grouped-query attention (two query
// heads per array), past the window, the outputs and the hardware events are the same bits on
// 1, 2 and 3 threads as attend() on one; a bad query (NaN) on any thread comes back as the error.
TEST(GainCellAttention, TeamDecodeEqualsThePlainLoopOnAnyTeam) {
  for (int kv_heads : {4, 2}) {
    HwConfig hw = HwConfig::preset("paper-nonlinear");
    hw.window = 64;
    hw.leakage.lambda_per_token = 2e-3;
    hw.noise.read_noise_s = hw.noise.read_noise_a = 0.05;
    hw.noise.write_noise_kv = 0.02;
    hw.noise.gain_variation = 0.05;
    hw.noise.seed = 77;
    const int H = 4, D = 16;
    AttentionContext ctx = context(hw, H, D);
    ctx.n_kv_head = kv_heads;
    ctx.layer = 2;
    GainCellAttention attn("gaincell-nonlinear", ctx);
    auto plain = attn.make_decode_state();
    std::array<std::unique_ptr<AttentionDecodeState>, 3> teams;
    for (auto& t : teams) t = attn.make_decode_state();
    std::vector<float> want(static_cast<size_t>(H) * D), got(want.size());
    for (int t = 0; t < 90; ++t) {
      const auto k = random_vector(static_cast<size_t>(kv_heads) * D, 3000 + t);
      const auto v = random_vector(k.size(), 4000 + t);
      const auto q = random_vector(want.size(), 5000 + t);
      plain->append(k.data(), v.data());
      plain->attend(q.data(), want.data());
      for (int threads = 1; threads <= 3; ++threads) {
        AttentionDecodeState& team = *teams[threads - 1];
        team.append(k.data(), v.data());
        SpinBarrier barrier;
        std::exception_ptr error;
        std::fill(got.begin(), got.end(), -7.0f);
#pragma omp parallel num_threads(threads)
        team.attend_on_team(q.data(), got.data(), barrier, omp_get_num_threads(), error);
        ASSERT_FALSE(error);
        ASSERT_EQ(got, want) << "kv_heads=" << kv_heads << " t=" << t << " threads=" << threads;
        const auto& g = dynamic_cast<const GainCellDecodeState&>(team);
        ASSERT_EQ(g.events(), dynamic_cast<const GainCellDecodeState&>(*plain).events());
      }
    }
    auto bad_q = random_vector(want.size(), 9);
    bad_q[3 * D + 1] = std::nanf("");  // the last query head (whichever thread reads its group)
    SpinBarrier barrier;
    std::exception_ptr error;
#pragma omp parallel num_threads(2)
    teams[1]->attend_on_team(bad_q.data(), got.data(), barrier, omp_get_num_threads(), error);
    ASSERT_TRUE(error);
    EXPECT_THROW(std::rethrow_exception(error), Error);
  }
}

TEST(GainCellAttention, BadInputGivesClearErrors) {
  AttentionContext ctx = context(HwConfig::preset("paper-nonlinear"), 2, 4);
  EXPECT_THROW(make_gaincell_attention("gaincell-x7", ctx), Error);
  GainCellAttention attn("gaincell-nonlinear", ctx);
  std::vector<float> x(2 * 5 * 4, 0.1f), y(x.size());
  x[7] = std::nanf("");
  try {
    attn.forward(x.data(), x.data(), x.data(), y.data(), 1, 5, false);
    ADD_FAILURE() << "NaN accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("non-finite"), std::string::npos);
  }
  // An infinity (of either sign) in one tensor alone, named with its index.
  for (const float bad : {INFINITY, -INFINITY}) {
    std::vector<float> ok(x.size(), 0.1f), k = ok;
    k[3] = bad;
    try {
      attn.forward(ok.data(), k.data(), ok.data(), y.data(), 1, 5, false);
      ADD_FAILURE() << bad << " accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("non-finite value in k at index 3"), std::string::npos)
          << e.what();
    }
  }
  auto state = attn.make_decode_state();
  EXPECT_THROW(state->attend(x.data(), y.data()), Error);
}

// backward() after an evaluation forward (which keeps nothing) recomputes what it needs: the
// gradients equal those after a training forward, and no statistics are recorded.
TEST(GainCellAttention, BackwardAfterEvaluationForwardRecomputes) {
  const int B = 2, H = 2, T = 80, D = 8;
  const size_t n = static_cast<size_t>(B) * H * T * D;
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  hw.window = 64;
  const auto q = random_vector(n, 7), k = random_vector(n, 8), v = random_vector(n, 9),
             dy = random_vector(n, 10);
  std::vector<float> y(n), dq1(n), dk1(n), dv1(n), dq2(n), dk2(n), dv2(n);
  GainCellAttention a1("gaincell-nonlinear", context(hw, H, D));
  a1.forward(q.data(), k.data(), v.data(), y.data(), B, T, true);
  a1.backward(q.data(), k.data(), v.data(), dy.data(), dq1.data(), dk1.data(), dv1.data(), B, T);
  GainCellAttention a2("gaincell-nonlinear", context(hw, H, D));
  a2.forward(q.data(), k.data(), v.data(), y.data(), B, T, false);
  a2.backward(q.data(), k.data(), v.data(), dy.data(), dq2.data(), dk2.data(), dv2.data(), B, T);
  EXPECT_EQ(a2.scaler_statistics(), nullptr);
  EXPECT_EQ(dq1, dq2);
  EXPECT_EQ(dk1, dk2);
  EXPECT_EQ(dv1, dv2);
  double norm = 0.0;
  for (float g : dq1) norm += std::fabs(g);
  EXPECT_GT(norm, 0.0);
}

// An inference forward with few heads splits each head's query rows over the threads: the
// output equals the one-thread forward (whole heads) and the plain-loop reference kernel, also
// with T > M (sliding) and GQA.
TEST(GainCellAttention, RowRangeThreadingEqualsWholeHeads) {
  const int B = 1, H = 3, T = 300, D = 8;
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  hw.window = 128;
  for (int Hkv : {3, 1}) {
    SCOPED_TRACE("Hkv = " + std::to_string(Hkv));
    AttentionContext ctx = context(hw, H, D);
    ctx.n_kv_head = Hkv;
    const size_t n = static_cast<size_t>(B) * H * T * D, nkv = n / H * Hkv;
    const auto q = random_vector(n, 21), k = random_vector(nkv, 22), v = random_vector(nkv, 23);
    std::vector<float> one(n), two(n), ref(n);
    GainCellAttention attn("gaincell-nonlinear", ctx);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    attn.forward(q.data(), k.data(), v.data(), one.data(), B, T, false);
    omp_set_num_threads(2);
    attn.forward(q.data(), k.data(), v.data(), two.data(), B, T, false);
    attn.set_use_reference_kernel(true);
    attn.forward(q.data(), k.data(), v.data(), ref.data(), B, T, false);
    omp_set_num_threads(threads);
    double worst = 0.0, largest = 0.0;
    int off_reference = 0;  // a tile sum within float rounding of an output-quantiser mid-point
    for (size_t i = 0; i < n; ++i) {
      worst = std::max(worst, static_cast<double>(std::fabs(two[i] - one[i])));
      largest = std::max(largest, static_cast<double>(std::fabs(ref[i])));
      if (std::fabs(two[i] - ref[i]) > 1e-4) ++off_reference;
    }
    EXPECT_LE(worst, 1e-6 * largest);
    EXPECT_LE(off_reference, 2);
    EXPECT_GT(largest, 0.05);
  }
}
