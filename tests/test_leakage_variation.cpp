// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Cell-to-cell leakage variation in the whole-sequence gain-cell attention (issue 13 item 4): each
// cell (slot, d) of the K and V arrays leaks with its own rate lambda * max(0, 1 + sigma N), drawn
// from the same seeded events as the token-by-token arrays (HeadArray), so that a retention sweep
// is a cheap whole-sequence evaluation. Checked against decoding on the simulated arrays and its
// gradients against finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/device/noise.h"

namespace gaincell {
namespace {

std::vector<float> random_vector(size_t n, uint32_t seed, float stddev) {
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
  ctx.layer = 1;
  return ctx;
}

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
  return out;
}

HwConfig leaky_hw(double variation, int window) {
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  hw.window = window;
  hw.array_size = 16;
  hw.leakage.lambda_per_token = 0.02;  // strong leakage, so that the per-cell rates matter
  hw.noise.leakage_variation = variation;
  hw.noise.seed = 77;
  return hw;
}

TEST(LeakageVariation, CellFactorsAreTheArraysDraws) {
  // The factor of a cell is one seeded event: the same for every caller, clamped at 0.
  EXPECT_EQ(cell_variation_factor(0.3, 5, NoiseStream::kLeakK, 3, 4, true),
            cell_variation_factor(0.3, 5, NoiseStream::kLeakK, 3, 4, true));
  EXPECT_NE(cell_variation_factor(0.3, 5, NoiseStream::kLeakK, 3, 4, true),
            cell_variation_factor(0.3, 5, NoiseStream::kLeakV, 3, 4, true));
  for (int slot = 0; slot < 200; ++slot)
    EXPECT_GE(cell_variation_factor(3.0, 1, NoiseStream::kLeakV, slot, 0, true), 0.0f);
}

TEST(LeakageVariation, WholeSequenceEqualsDecodingOnTheArrays) {
  const int H = 2, D = 8;
  for (int window : {256, 32}) {  // T <= M, and a sliding window with circular overwrite
    SCOPED_TRACE(window);
    GainCellAttention attn("gaincell-nonlinear", context(leaky_hw(0.3, window), H, D));
    const int T = 90;
    const size_t n = static_cast<size_t>(H) * T * D;
    const auto q = random_vector(n, 1, 0.5f), k = random_vector(n, 2, 0.5f),
               v = random_vector(n, 3, 0.5f);
    std::vector<float> whole(n);
    attn.forward(q.data(), k.data(), v.data(), whole.data(), 1, T, false);
    const std::vector<float> dec = decode_all(attn, q, k, v, H, T, D);
    int flips = 0;
    double worst = 0.0;
    for (size_t i = 0; i < n; ++i) {
      const double diff = std::fabs(dec[i] - whole[i]);
      if (diff > 1e-5)
        ++flips;  // output-quantiser ties of float vs double accumulation
      else
        worst = std::max(worst, diff);
    }
    EXPECT_LE(flips, 3) << "of " << n;
    // The variation matters: one leakage rate gives another output.
    GainCellAttention uniform("gaincell-nonlinear", context(leaky_hw(0.0, window), H, D));
    std::vector<float> plain(n);
    uniform.forward(q.data(), k.data(), v.data(), plain.data(), 1, T, false);
    int changed = 0;
    // (The output is quantised to 32 levels, so a change shows where a level flips.)
    for (size_t i = 0; i < n; ++i) changed += std::fabs(plain[i] - whole[i]) > 1e-3 ? 1 : 0;
    EXPECT_GT(changed, static_cast<int>(n / 100));
  }
}

TEST(LeakageVariation, ScalerGradientsMatchFiniteDifferences) {
  // Linear cell without quantisers (ideal preset), leakage with a per-cell rate: the loss is
  // smooth in the scalers away from the clamps, so central differences check the gradients.
  HwConfig hw = HwConfig::preset("ideal");
  hw.window = 64;
  hw.leakage.enabled = true;
  hw.leakage.lambda_per_token = 0.01;
  hw.noise.leakage_variation = 0.4;
  hw.noise.seed = 3;
  const int B = 1, H = 2, T = 40, D = 8;
  const size_t n = static_cast<size_t>(B) * H * T * D;
  GainCellAttention attn("gaincell-linear", context(hw, H, D));
  const float init[8] = {1.1f, 0.35f, 0.9f, 0.65f, 1.2f, 0.52f, 0.8f, 0.1f};
  std::vector<std::vector<float>> vals(16, std::vector<float>(H)),
      grads(16, std::vector<float>(H, 0.0f));
  std::vector<TensorRef> refs;
  for (int i = 0; i < 16; ++i) {
    for (int h = 0; h < H; ++h) vals[i][h] = i < 8 ? init[i] * (1.0f + 0.1f * h) : 0.0f;
    refs.push_back({vals[i].data(), i < 8 ? grads[i].data() : nullptr, H});
  }
  attn.bind_params(refs);
  const auto q = random_vector(n, 11, 0.1f), k = random_vector(n, 12, 0.04f),
             v = random_vector(n, 13, 0.05f), dy = random_vector(n, 14, 1.0f);
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
      EXPECT_NEAR(grads[i][h], fd, 2e-3 * std::fabs(fd) + 2e-3) << "scaler " << i << " head " << h;
    }
  }
}

}  // namespace
}  // namespace gaincell
