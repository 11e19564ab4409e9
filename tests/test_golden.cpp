// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Golden tests of one 64x64 sub-tile against the authors' test vectors (spec §3.9):
// subtile64_golden.npz (normal polarity) and subtile64_golden_inverted.npz (S and output negated).
// 10 cases of Q, K, V (64 tokens x 64 dims), no quantisation, no decay, causal mask, a, b = (1, 0).
//
// Tolerances (spec §3.9): the authors ran in bf16/TF32, so their S deviates from the exact
// polynomial by up to 0.44 (|S| <= 102.5); their phi_S is clip(S/80, 0, 1) of *their* S to ~4e-8;
// their output deviates from the exact AV stage *applied to their phi_S* by up to 0.0038. Our phi
// is compared with a tolerance of 0.44 / 80; our output (computed from our phi) with 0.0038 plus
// the propagated phi difference, sum_j |phi_ours - phi_theirs| |f(V_jd - 0.45)| / 40 (the clamp is
// 1-Lipschitz), derived per row.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <string>

#include "gaincell/array/head_array.h"
#include "gaincell/array/head_array_reference.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/npy.h"
#include "gaincell/device/gain_cell.h"
#include "test_util.h"

using namespace gaincell;

namespace {

constexpr int kCases = 10, kT = 64, kD = 64;
constexpr double kSTol = 0.44;
constexpr double kPhiTol = kSTol / 80.0;
constexpr double kOutTol = 0.0038;

HwConfig golden_hw(bool inverted) {
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  hw.q.enabled = hw.k.enabled = hw.v.enabled = hw.out.enabled = false;
  hw.leakage.enabled = false;
  hw.array_size = 64;
  hw.window = 64;
  hw.polarity = inverted ? Polarity::kInverted : Polarity::kNormal;
  return hw;
}

struct Golden {
  std::vector<float> Q, K, V, S, phi, out;
};

Golden load_golden(const std::filesystem::path& file) {
  auto npz = read_npz(file);
  Golden g;
  for (auto [name, dst] : {std::pair{"Q", &g.Q},
                           {"K", &g.K},
                           {"V", &g.V},
                           {"S", &g.S},
                           {"phi_S", &g.phi},
                           {"output", &g.out}}) {
    const NpyArray& a = npz.at(name);
    EXPECT_EQ(a.descr, "<f4") << name;
    EXPECT_EQ(a.shape, (std::vector<int64_t>{kCases, kT, kD})) << name;
    *dst = a.to_float();
  }
  return g;
}

struct MaxDev {
  double s = 0, phi = 0, phi_theirs = 0, out = 0, out_excess = 0, masked = 0;
};

// Writes the 64 tokens one by one and reads with each query (the causal mask is "only tokens
// written so far"), comparing every row with the golden data.
MaxDev run_headarray(const Golden& g, bool inverted) {
  MaxDev dev;
  const HwConfig hw = golden_hw(inverted);
  const GainCell cell(hw);
  for (int c = 0; c < kCases; ++c) {
    HeadArray head(hw, kD, 0);
    const size_t base = static_cast<size_t>(c) * kT * kD;
    std::vector<float> out(kD);
    for (int t = 0; t < kT; ++t) {
      head.write(&g.K[base + t * kD], &g.V[base + t * kD]);
      head.read(&g.Q[base + t * kD], out.data());
      for (int j = 0; j < kT; ++j) {
        const float their_s = g.S[base + t * kT + j];
        const float their_phi = g.phi[base + t * kT + j];
        if (j > t) {
          dev.masked = std::max(
              {dev.masked, std::fabs(double(their_s)), std::fabs(double(head.last_scores()[j]))});
          continue;
        }
        dev.s = std::max(dev.s, std::fabs(double(head.last_scores()[j]) - their_s));
        dev.phi = std::max(dev.phi, std::fabs(double(head.last_phi()[j]) - their_phi));
        const double phi_from_their_s = std::clamp(their_s / 80.0, 0.0, 1.0);
        dev.phi_theirs = std::max(dev.phi_theirs, std::fabs(phi_from_their_s - their_phi));
      }
      for (int d = 0; d < kD; ++d) {
        double propagated = 0.0;
        for (int j = 0; j <= t; ++j)
          propagated += std::fabs(double(head.last_phi()[j]) - g.phi[base + t * kT + j]) *
                        std::fabs(cell.current(g.V[base + j * kD + d] - 0.45)) / 40.0;
        const double dout = std::fabs(double(out[d]) - g.out[base + t * kD + d]);
        dev.out = std::max(dev.out, dout);
        dev.out_excess = std::max(dev.out_excess, dout - (kOutTol + propagated + 1e-6));
      }
    }
  }
  return dev;
}

std::string golden_file(const char* name) {
  return std::string("gaincell-reference/") + name;
}

void check_file(const char* name, bool inverted) {
  GAINCELL_SHARED_DATA(file, golden_file(name));
  const Golden g = load_golden(file);
  const MaxDev dev = run_headarray(g, inverted);
  ::testing::Test::RecordProperty("max_abs_dev_S", std::to_string(dev.s));
  ::testing::Test::RecordProperty("max_abs_dev_output", std::to_string(dev.out));
  EXPECT_EQ(dev.masked, 0.0) << "masked (future) keys must give S = 0 exactly";
  EXPECT_LE(dev.phi_theirs, 1e-7) << "their phi_S is clip(S/80, 0, 1) of their S";
  EXPECT_LE(dev.s, kSTol);
  EXPECT_LE(dev.phi, kPhiTol);
  EXPECT_LE(dev.out_excess, 0.0) << "output deviates beyond 0.0038 + propagated phi difference";
  EXPECT_LE(dev.out, 2 * kOutTol);
  // Report the measured deviations (docs/hardware-model.md validation table).
  std::printf("[golden %s] max |dS| = %.4f  max |dphi| = %.2e  max |dout| = %.2e\n", name, dev.s,
              dev.phi, dev.out);
}

}  // namespace

TEST(Golden, Subtile64NormalPolarity) {
  check_file("subtile64_golden.npz", false);
}

TEST(Golden, Subtile64InvertedPolarity) {
  check_file("subtile64_golden_inverted.npz", true);
}

TEST(Golden, LoopReferenceSubtileMatchesGoldenAndHeadArray) {
  GAINCELL_SHARED_DATA(file, golden_file("subtile64_golden.npz"));
  const Golden g = load_golden(file);
  const HwConfig hw = golden_hw(false);
  double ds = 0, dout = 0, d_fast_s = 0, d_fast_out = 0;
  for (int c = 0; c < 3; ++c) {
    const size_t base = static_cast<size_t>(c) * kT * kD;
    const SubtileReference r = reference_subtile(hw, &g.Q[base], &g.K[base], &g.V[base], kT, kD);
    const SubtileReference on_their_phi =
        reference_subtile(hw, &g.Q[base], &g.K[base], &g.V[base], kT, kD, &g.phi[base]);
    HeadArray head(hw, kD, 0);
    std::vector<float> out(kD);
    for (int t = 0; t < kT; ++t) {
      head.write(&g.K[base + t * kD], &g.V[base + t * kD]);
      head.read(&g.Q[base + t * kD], out.data());
      for (int j = 0; j <= t; ++j) {
        ds = std::max(ds, std::fabs(r.S[t * kT + j] - g.S[base + t * kT + j]));
        d_fast_s = std::max(d_fast_s, std::fabs(r.S[t * kT + j] - head.last_scores()[j]));
      }
      for (int d = 0; d < kD; ++d) {
        dout = std::max(dout, std::fabs(on_their_phi.out[t * kD + d] - g.out[base + t * kD + d]));
        d_fast_out = std::max(d_fast_out, std::fabs(r.out[t * kD + d] - out[d]));
      }
    }
  }
  std::printf(
      "[golden reference] max |dS| = %.4f  max |dout| on their phi = %.2e  fast vs loop: "
      "|dS| = %.2e |dout| = %.2e\n",
      ds, dout, d_fast_s, d_fast_out);
  EXPECT_LE(ds, kSTol);
  EXPECT_LE(dout, kOutTol);
  // The fp32 fast path and the double loop reference agree far more tightly than the golden data.
  EXPECT_LE(d_fast_s, 1e-3);
  EXPECT_LE(d_fast_out, 1e-5);
}
