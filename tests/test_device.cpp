// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
#include <gtest/gtest.h>

#include <cmath>

#include "gaincell/device/gain_cell.h"
#include "gaincell/device/quantizer.h"

using namespace gaincell;

TEST(Quantizer, KvGridIsZeroAnchoredWithHalfEven) {
  Quantizer k(HwConfig::preset("paper-nonlinear").k);  // 8 levels in [0, 0.9]
  const float step = 0.9f / 7.0f;
  EXPECT_FLOAT_EQ(k(-0.3f), 0.0f);
  EXPECT_FLOAT_EQ(k(1.5f), 7 * step);
  EXPECT_FLOAT_EQ(k(0.2f), 2 * step);  // 0.2/0.1286 = 1.56 -> 2
  EXPECT_FLOAT_EQ(k(0.05f), 0.0f);     // 0.39 -> 0
}

TEST(Quantizer, OutputQuirkGivesPlusMinus32Over31) {
  Quantizer out(HwConfig::preset("paper-nonlinear").out);  // 32 levels in [-1, 1]
  EXPECT_NEAR(out(5.0f), 32.0f / 31.0f, 1e-6);
  EXPECT_NEAR(out(-1.0f), -32.0f / 31.0f, 1e-6);
  EXPECT_NEAR(out(0.5f), 2.0f / 31.0f * 8.0f, 1e-6);  // 7.75 -> 8
  // Half-way point 2.5 steps rounds to the even 2.
  EXPECT_NEAR(out(2.5f * 2.0f / 31.0f), 2.0f * 2.0f / 31.0f, 1e-6);
}

TEST(Quantizer, QGridSixteenLevels) {
  Quantizer q(HwConfig::preset("paper-nonlinear").q);
  for (int kk = 0; kk <= 15; ++kk) EXPECT_NEAR(q(kk / 15.0f + 0.01f), kk / 15.0f, 1e-6);
}

TEST(Quantizer, CounterGridSignPlusSixteenLevels) {
  QuantizerConfig c = HwConfig::preset("paper-nonlinear").out;
  Quantizer out(c, /*counter=*/true);
  EXPECT_NEAR(out(1.7f), 1.0f, 1e-6);
  EXPECT_NEAR(out(-0.5f), -8.0f / 15.0f, 1e-6);  // 7.5 -> 8 (half to even)
  EXPECT_NEAR(out(0.1f), 2.0f / 15.0f, 1e-6);    // 1.5 -> 2
}

TEST(Quantizer, DisabledOnlyClamps) {
  Quantizer q(HwConfig::preset("ideal").q);
  EXPECT_FLOAT_EQ(q(0.123f), 0.123f);
  EXPECT_FLOAT_EQ(q(1.5f), 1.0f);
  EXPECT_EQ(q.grad(1.5f), 0.0f);
  EXPECT_EQ(q.grad(1.0f), 1.0f);
}

TEST(GainCell, PolynomialEndpointsMatchSpec) {
  GainCell cell(HwConfig::preset("paper-nonlinear"));
  // Spec §2.3: f(-0.45) = -10.3315, f(0) = 0.5214, f(0.45) = 10.3130.
  EXPECT_NEAR(cell.current(-0.45), -10.3315, 1e-4);
  EXPECT_NEAR(cell.current(0.0), 0.5214, 1e-4);
  EXPECT_NEAR(cell.current(0.45), 10.3130, 1e-4);
  EXPECT_DOUBLE_EQ(cell.surrogate_slope(), 19.3);
}

TEST(GainCell, AblationGainsMatchSpecTable) {
  // Spec §2.7: a = 19.3/range, so f(0.45) - f(-0.45) = 19.3 and f(0) = 0 for every ablation.
  for (CellModel m :
       {CellModel::kCubic, CellModel::kQuintic, CellModel::kSigmoid, CellModel::kExp}) {
    HwConfig hw = HwConfig::preset("paper-nonlinear");
    hw.cell = m;
    GainCell cell(hw);
    EXPECT_NEAR(cell.current(0.45) - cell.current(-0.45), 19.3, 1e-9) << to_string(m);
    EXPECT_NEAR(cell.current(0.0), 0.0, 1e-12) << to_string(m);
  }
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  hw.cell = CellModel::kCubic;
  EXPECT_NEAR(GainCell(hw).current(0.1), 105.898491 * 1e-3, 1e-6);
}

TEST(GainCell, SlopeMatchesFiniteDifference) {
  for (CellModel m : {CellModel::kPolynomial, CellModel::kLinear, CellModel::kCubic,
                      CellModel::kQuintic, CellModel::kSigmoid, CellModel::kExp}) {
    HwConfig hw = HwConfig::preset("paper-nonlinear");
    hw.cell = m;
    GainCell cell(hw);
    for (double y : {-0.4, -0.1, 0.0, 0.2, 0.44}) {
      const double h = 1e-6;
      const double fd = (cell.current(y + h) - cell.current(y - h)) / (2 * h);
      EXPECT_NEAR(cell.current_slope(y), fd, 1e-5 * (1 + std::fabs(fd)))
          << to_string(m) << " " << y;
    }
  }
}
