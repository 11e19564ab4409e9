// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// The whole-sequence gain-cell kernel: fast (tiled, factorised sgemm) against the plain loop
// reference; the ideal preset against closed-form unnormalised HardSigmoid attention; the exact
// gradient of the linear model against finite differences; the surrogate gradients of the
// nonlinear model against the formulas of spec §4 written out here.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gaincell/attention/gaincell_kernel.h"

using namespace gaincell;

namespace {

struct Signals {
  int T, D;
  std::vector<float> Q, K, V;
};

// Hardware signals in their ranges: Q in [0,1], K and V in [0,0.9]. Continuous (not on the
// quantiser grids) so that no clamp decision sits on a boundary.
Signals random_signals(int T, int D, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uq(0.0f, 1.0f), uv(0.0f, 0.9f);
  Signals s{T, D, {}, {}, {}};
  for (int i = 0; i < T * D; ++i) {
    s.Q.push_back(uq(rng));
    s.K.push_back(uv(rng));
    s.V.push_back(uv(rng));
  }
  return s;
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 1.0f);
  std::vector<float> v(n);
  for (auto& x : v) x = g(rng);
  return v;
}

double max_abs(const std::vector<float>& v) {
  double m = 0.0;
  for (float x : v) m = std::max(m, static_cast<double>(std::fabs(x)));
  return m;
}

// Every element within tol * max|ref| (the arrays are sums with cancellations).
void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), ref.size());
  const double scale = std::max(max_abs(ref), 1e-12);
  int bad = 0;
  for (size_t i = 0; i < ref.size(); ++i) {
    if (std::fabs(got[i] - ref[i]) > tol * scale) {
      if (++bad <= 3) ADD_FAILURE() << what << "[" << i << "]: " << got[i] << " vs " << ref[i];
    }
  }
  EXPECT_EQ(bad, 0) << what << ": " << bad << " of " << ref.size() << " elements differ";
}

HwConfig config(const std::string& preset, int window, double lambda, bool quant) {
  HwConfig hw = HwConfig::preset(preset);
  hw.window = window;
  hw.leakage.enabled = lambda > 0.0;
  hw.leakage.lambda_per_token = lambda;
  hw.q.enabled = hw.k.enabled = hw.v.enabled = hw.out.enabled = quant;
  return hw;
}

struct Case {
  std::string name;
  HwConfig hw;
  int T, D;
};

std::vector<Case> kernel_cases() {
  std::vector<Case> cases;
  for (const char* preset : {"paper-nonlinear", "paper-linear"}) {
    cases.push_back({std::string(preset) + " T<=M", config(preset, 1024, 1.6e-4, false), 150, 16});
    cases.push_back({std::string(preset) + " sliding", config(preset, 128, 3e-3, false), 300, 8});
    cases.push_back({std::string(preset) + " M=64", config(preset, 64, 1e-2, false), 200, 8});
  }
  HwConfig inv = config("paper-nonlinear", 128, 1e-3, false);
  inv.polarity = Polarity::kInverted;
  cases.push_back({"inverted", inv, 260, 8});
  HwConfig mean = config("paper-nonlinear", 128, 1e-3, false);
  mean.out_mode = OutputQuantMode::kTileMean;
  cases.push_back({"tile-mean", mean, 260, 8});
  HwConfig nolk = config("paper-nonlinear", 128, 0.0, false);
  cases.push_back({"no leakage", nolk, 200, 8});
  for (bool relative : {true, false}) {
    HwConfig noisy = config("paper-nonlinear", 128, 1e-3, false);
    noisy.noise.read_noise_relative = relative;
    noisy.noise.read_noise_s = relative ? 0.05 : 0.5;
    noisy.noise.read_noise_a = relative ? 0.05 : 0.5;
    cases.push_back({relative ? "relative read noise" : "absolute read noise", noisy, 260, 8});
  }
  for (CellModel cell : {CellModel::kCubic, CellModel::kSigmoid, CellModel::kExp}) {
    HwConfig c = config("paper-nonlinear", 128, 0.0, false);
    c.cell = cell;
    cases.push_back({"ablation " + to_string(cell), c, 200, 8});
    c.leakage.enabled = true;
    c.leakage.lambda_per_token = 2e-3;
    cases.push_back({"ablation leaky " + to_string(cell), c, 140, 8});
  }
  return cases;
}

}  // namespace

TEST(GainCellKernel, FastForwardAndBackwardMatchReference) {
  uint32_t seed = 1;
  for (const Case& c : kernel_cases()) {
    SCOPED_TRACE(c.name);
    const GainCellKernelParams p(c.hw);
    const Signals s = random_signals(c.T, c.D, seed++);
    const size_t n = static_cast<size_t>(c.T) * c.D;
    std::vector<float> O(n), Oref(n);
    std::vector<uint8_t> mask(p.clip_mask_size(c.T, c.D));
    GainCellWorkspace ws;
    const uint64_t noise_seed = 42;
    gaincell_head_forward(p, s.Q.data(), s.K.data(), s.V.data(), c.T, c.D, O.data(), mask.data(),
                          ws, noise_seed);
    reference_gaincell_forward(p, s.Q.data(), s.K.data(), s.V.data(), c.T, c.D, Oref.data(),
                               nullptr, nullptr, noise_seed);
    expect_close(O, Oref, 2e-6, "O");
    // The output must not be trivially saturated or zero: the test would then prove little.
    EXPECT_GT(max_abs(Oref), 0.05);

    const std::vector<float> dO = random_vector(n, seed++);
    std::vector<float> dQ(n), dK(n), dV(n), rQ(n), rK(n), rV(n);
    gaincell_head_backward(p, s.Q.data(), s.K.data(), s.V.data(), c.T, c.D, dO.data(), mask.data(),
                           dQ.data(), dK.data(), dV.data(), ws, noise_seed);
    reference_gaincell_backward(p, s.Q.data(), s.K.data(), s.V.data(), c.T, c.D, dO.data(),
                                rQ.data(), rK.data(), rV.data(), noise_seed);
    expect_close(dQ, rQ, 1e-5, "dQ");
    expect_close(dK, rK, 1e-5, "dK");
    expect_close(dV, rV, 1e-5, "dV");
    EXPECT_GT(max_abs(rQ), 0.0);
    EXPECT_GT(max_abs(rV), 0.0);
  }
}

TEST(GainCellKernel, QuantisedOutputMatchesReferenceUpToRareBoundaryFlips) {
  const HwConfig hw = config("paper-nonlinear", 128, 1.6e-4, true);
  const GainCellKernelParams p(hw);
  const int T = 300, D = 16;
  const Signals s = random_signals(T, D, 77);
  std::vector<float> O(T * D), Oref(T * D);
  std::vector<uint8_t> mask(p.clip_mask_size(T, D));
  GainCellWorkspace ws;
  gaincell_head_forward(p, s.Q.data(), s.K.data(), s.V.data(), T, D, O.data(), mask.data(), ws);
  reference_gaincell_forward(p, s.Q.data(), s.K.data(), s.V.data(), T, D, Oref.data());
  const double step = 2.0 / 31.0;
  int off_grid = 0, flips = 0;
  for (int i = 0; i < T * D; ++i) {
    const double diff = std::fabs(O[i] - Oref[i]);
    if (diff < 1e-5) continue;
    if (std::fabs(diff - step) < 1e-5)
      ++flips;
    else
      ++off_grid;
  }
  EXPECT_EQ(off_grid, 0);
  EXPECT_LE(flips, 2);  // a tile sum within float rounding of a grid mid-point
}

// With no quantisers, no leakage, a linear cell and one tile holding the whole window, the
// hardware is unnormalised HardSigmoid attention: O = clip((19.3/40) sum_j clip((19.3/80)
// q.(k-0.45), 0, 1) (v-0.45), -1, 1) for windows of at most 64 keys.
TEST(GainCellKernel, IdealPresetIsClosedFormHardSigmoidAttention) {
  HwConfig hw = HwConfig::preset("ideal");
  hw.window = 64;
  const GainCellKernelParams p(hw);
  const int T = 150, D = 8;
  const Signals s = random_signals(T, D, 5);
  std::vector<float> O(T * D), expect(T * D);
  std::vector<uint8_t> mask(p.clip_mask_size(T, D));
  GainCellWorkspace ws;
  gaincell_head_forward(p, s.Q.data(), s.K.data(), s.V.data(), T, D, O.data(), mask.data(), ws);
  // Hand-written closed form; the window [t-63, t] spans up to two 64-aligned key blocks, which
  // all map to the single physical sub-tile, so one clip per row.
  for (int t = 0; t < T; ++t) {
    std::vector<double> acc(D, 0.0);
    for (int j = std::max(0, t - 63); j <= t; ++j) {
      double dot = 0.0;
      for (int d = 0; d < D; ++d) dot += s.Q[t * D + d] * (s.K[j * D + d] - 0.45);
      const double phi = std::clamp(19.3 * dot / 80.0, 0.0, 1.0);
      for (int d = 0; d < D; ++d) acc[d] += phi * 19.3 * (s.V[j * D + d] - 0.45);
    }
    for (int d = 0; d < D; ++d)
      expect[t * D + d] = static_cast<float>(std::clamp(acc[d] / 40.0, -1.0, 1.0));
  }
  expect_close(O, expect, 2e-6, "O");
}

// Finite differences of a scalar loss L = sum dO . O(Q, K, V) for the linear model (exact
// gradient), in a regime where no clamp is near a kink: small signals so that nothing saturates.
TEST(GainCellKernel, LinearModelGradientMatchesFiniteDifferences) {
  HwConfig hw = config("paper-linear", 64, 5e-3, false);
  const GainCellKernelParams p(hw);
  const int T = 100, D = 4;
  Signals s = random_signals(T, D, 11);
  // Keys above the offset so that S > 0 (phi in the linear part), values near it (A small).
  for (auto& k : s.K) k = 0.45f + 0.3f * (k / 0.9f);
  for (auto& v : s.V) v = 0.45f + 0.05f * (v / 0.9f - 0.5f);
  for (auto& q : s.Q) q *= 0.5f;
  const size_t n = static_cast<size_t>(T) * D;
  const std::vector<float> dO = random_vector(n, 12);
  std::vector<float> dQ(n), dK(n), dV(n);
  reference_gaincell_backward(p, s.Q.data(), s.K.data(), s.V.data(), T, D, dO.data(), dQ.data(),
                              dK.data(), dV.data());
  auto loss = [&](const Signals& x) {
    std::vector<float> O(n);
    reference_gaincell_forward(p, x.Q.data(), x.K.data(), x.V.data(), T, D, O.data());
    double l = 0.0;
    for (size_t i = 0; i < n; ++i) l += static_cast<double>(dO[i]) * O[i];
    return l;
  };
  std::mt19937 rng(3);
  const float h = 2e-3f;
  int checked = 0;
  for (int which = 0; which < 3; ++which) {
    for (int trial = 0; trial < 12; ++trial) {
      const size_t i = rng() % n;
      Signals plus = s, minus = s;
      std::vector<float>* vp = which == 0 ? &plus.Q : which == 1 ? &plus.K : &plus.V;
      std::vector<float>* vm = which == 0 ? &minus.Q : which == 1 ? &minus.K : &minus.V;
      (*vp)[i] += h;
      (*vm)[i] -= h;
      const double fd = (loss(plus) - loss(minus)) / (2.0 * h);
      const double an = which == 0 ? dQ[i] : which == 1 ? dK[i] : dV[i];
      EXPECT_NEAR(an, fd, 2e-3 * std::fabs(fd) + 1e-7) << "input " << which << " index " << i;
      ++checked;
    }
  }
  EXPECT_EQ(checked, 36);
}

// Surrogate gradients of the nonlinear model (spec §4) written as whole matrices here:
// G = dL/dA, D = decay matrix; dphi = 19.3 (G (V-.45)^T) . D; dV = 19.3 (phi . D)^T G;
// dS = dphi . 1[0<=S/80<=1] / 80; dQ = 19.3 (dS . D) (K-.45); dK = 19.3 (dS . D)^T Q.
// One tile, T <= 64, no output clamp active (small V), so G = dO / 40.
TEST(GainCellKernel, NonlinearSurrogateGradientEqualsSpecFormulas) {
  HwConfig hw = config("paper-nonlinear", 1024, 1e-2, false);
  const GainCellKernelParams p(hw);
  const int T = 64, D = 8;
  Signals s = random_signals(T, D, 21);
  for (auto& v : s.V) v = 0.45f + 0.02f * (v / 0.9f - 0.5f);
  const size_t n = static_cast<size_t>(T) * D;
  const std::vector<float> dO = random_vector(n, 22);
  std::vector<float> O(n), dQ(n), dK(n), dV(n);
  std::vector<uint8_t> mask(p.clip_mask_size(T, D));
  GainCellWorkspace ws;
  gaincell_head_forward(p, s.Q.data(), s.K.data(), s.V.data(), T, D, O.data(), mask.data(), ws);
  for (uint8_t m : mask) ASSERT_EQ(m, 1) << "test premise: no output clamp active";
  gaincell_head_backward(p, s.Q.data(), s.K.data(), s.V.data(), T, D, dO.data(), mask.data(),
                         dQ.data(), dK.data(), dV.data(), ws);
  std::vector<double> S;
  std::vector<float> tmp(n);
  std::vector<double> phi;
  reference_gaincell_forward(p, s.Q.data(), s.K.data(), s.V.data(), T, D, tmp.data(), &S, &phi);
  std::vector<double> eQ(n, 0.0), eK(n, 0.0), eV(n, 0.0);
  int active = 0;
  for (int t = 0; t < T; ++t) {
    for (int j = 0; j <= t; ++j) {
      const double Dm = std::exp(-1e-2 * (t - j));
      double dphi = 0.0;
      for (int d = 0; d < D; ++d) dphi += (dO[t * D + d] / 40.0) * (s.V[j * D + d] - 0.45);
      dphi *= 19.3 * Dm;
      for (int d = 0; d < D; ++d)
        eV[j * D + d] += 19.3 * phi[t * T + j] * Dm * dO[t * D + d] / 40.0;
      const double x = S[t * T + j] / 80.0;
      if (x < 0.0 || x > 1.0) continue;
      ++active;
      const double dS = dphi / 80.0;
      for (int d = 0; d < D; ++d) {
        eQ[t * D + d] += 19.3 * dS * Dm * (s.K[j * D + d] - 0.45);
        eK[j * D + d] += 19.3 * dS * Dm * s.Q[t * D + d];
      }
    }
  }
  EXPECT_GT(active, 100);
  auto to_float = [](const std::vector<double>& v) {
    return std::vector<float>(v.begin(), v.end());
  };
  expect_close(dQ, to_float(eQ), 1e-5, "dQ");
  expect_close(dK, to_float(eK), 1e-5, "dK");
  expect_close(dV, to_float(eV), 1e-5, "dV");
}

TEST(GainCellKernel, MaskedKeysContributeNothingIncludingOffsetTerm) {
  // A query whose window is one key: O must equal the single key's contribution, so alpha_0 of
  // the other (masked) keys does not leak in. Window 64, query t = 100 sees keys 37..100.
  HwConfig hw = config("paper-nonlinear", 64, 0.0, false);
  const GainCellKernelParams p(hw);
  const int T = 101, D = 4;
  Signals s = random_signals(T, D, 31);
  // Keys 37..100: strongly negative S (K far below the offset) -> phi = 0, except key 100.
  for (int j = 0; j < T; ++j)
    for (int d = 0; d < D; ++d) s.K[j * D + d] = (j == 100) ? 0.9f : 0.0f;
  std::vector<float> O(T * D);
  std::vector<uint8_t> mask(p.clip_mask_size(T, D));
  GainCellWorkspace ws;
  gaincell_head_forward(p, s.Q.data(), s.K.data(), s.V.data(), T, D, O.data(), mask.data(), ws);
  const GainCell cell(hw);
  double S = 0.0;
  for (int d = 0; d < D; ++d) S += s.Q[100 * D + d] * cell.current(0.45);
  const double phi = std::clamp(S / 80.0, 0.0, 1.0);
  ASSERT_GT(phi, 0.0);
  for (int d = 0; d < D; ++d) {
    const double A = phi * cell.current(s.V[100 * D + d] - 0.45);
    EXPECT_NEAR(O[100 * D + d], std::clamp(A / 40.0, -1.0, 1.0), 1e-6);
  }
}

// The rows of a head split into ranges (as the attention layer threads them) give the whole
// head's output and clip mask: uneven range ends, T > M (the sub-tile carries of blocks that
// share a physical tile), tile-mean mode and read noise; the ranges run in reverse order on one
// workspace, so a carry left over from another range would show.
TEST(GainCellKernel, RowRangesEqualTheWholeHead) {
  uint32_t seed = 500;
  int checked = 0;
  for (const Case& c : kernel_cases()) {
    const GainCellKernelParams p(c.hw);
    if (!gaincell_rows_separable(p, c.T)) continue;
    SCOPED_TRACE(c.name);
    ++checked;
    const Signals s = random_signals(c.T, c.D, seed++);
    const size_t n = static_cast<size_t>(c.T) * c.D;
    std::vector<float> whole(n), parts(n, -7.0f);
    // Mask bytes of sub-tiles a row does not use yet are never written (nor read): zero in both.
    std::vector<uint8_t> whole_mask(p.clip_mask_size(c.T, c.D)), parts_mask(whole_mask.size(), 0);
    GainCellWorkspace ws;
    gaincell_head_forward(p, s.Q.data(), s.K.data(), s.V.data(), c.T, c.D, whole.data(),
                          whole_mask.data(), ws, 42);
    const std::vector<int> ends = {c.T, c.T - 1, 2 * c.T / 3, c.T / 2 + 5, 37, 1, 0};
    for (size_t i = 0; i + 1 < ends.size(); ++i) {
      gaincell_head_forward_rows(p, s.Q.data(), s.K.data(), s.V.data(), c.T, c.D, ends[i + 1],
                                 ends[i], parts.data(), parts_mask.data(), ws, 42);
    }
    expect_close(parts, whole, 1e-6, "O");
    EXPECT_EQ(parts_mask, whole_mask);
  }
  EXPECT_GE(checked, 8);
}
