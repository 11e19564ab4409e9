// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Device layer: leakage (spec §1.3), charge-to-pulse HardSigmoid (§2.4), the signed output stage
// with per-tile or tile-mean conversion (§2.5, §3.5-§3.7), checked against hand-computed values.
#include <gtest/gtest.h>

#include <cmath>

#include "gaincell/device/charge_to_pulse.h"
#include "gaincell/device/gain_cell.h"
#include "gaincell/device/leakage.h"
#include "gaincell/device/output_stage.h"

using namespace gaincell;

TEST(Leakage, PaperDecayOfTheOldestWindowEntry) {
  const Leakage leak(HwConfig::preset("paper-nonlinear").leakage);
  EXPECT_DOUBLE_EQ(leak.lambda(), 1.6e-4);
  EXPECT_NEAR(leak.decay(1023), 0.849, 5e-4);  // spec §1.3 table
  EXPECT_DOUBLE_EQ(leak.decay(0), 1.0);
  EXPECT_NEAR(leak.decay(10, 2.0), std::exp(-3.2e-3), 1e-15);
  const auto table = leak.decay_table(4);
  EXPECT_FLOAT_EQ(table[3], static_cast<float>(std::exp(-4.8e-4)));
}

TEST(Leakage, RetentionTimeGivesLambda) {
  LeakageConfig c;
  c.retention_time_s = 5e-3;  // CMOS gain cell, spec §1.3
  c.time_per_token_s = 0.8e-6;
  EXPECT_NEAR(Leakage(c).lambda(), 1.6e-4, 1e-12);
  c.enabled = false;
  EXPECT_EQ(Leakage(c).decay(1000), 1.0);
}

TEST(ChargeToPulse, HardSigmoidAndPolarity) {
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  const ChargeToPulse c2p(hw);
  EXPECT_FLOAT_EQ(c2p.pulse(40.0f), 0.5f);
  EXPECT_FLOAT_EQ(c2p.pulse(-3.0f), 0.0f);   // negative charge: no pulse
  EXPECT_FLOAT_EQ(c2p.pulse(200.0f), 1.0f);  // saturates at Tmax
  EXPECT_FLOAT_EQ(c2p.signed_charge(12.0f), 12.0f);
  hw.polarity = Polarity::kInverted;
  const ChargeToPulse inv(hw);
  EXPECT_FLOAT_EQ(inv.signed_charge(12.0f), -12.0f);
  EXPECT_FLOAT_EQ(inv.pulse(inv.signed_charge(-40.0f)), 0.5f);
}

TEST(OutputStage, PerTileCodeGridWithQuirkAndDigitalSum) {
  const OutputStage stage(HwConfig::preset("paper-nonlinear"));
  EXPECT_FLOAT_EQ(stage.normalise(20.0f), 0.5f);
  // Tiles: 0.5 -> 7.75 steps -> 8; 2.0 -> clamp 1 -> 15.5 -> 16 (the +-32/31 quirk);
  // -0.1 -> -1.55 -> -2.
  const float x[3] = {0.5f, 2.0f, -0.1f};
  int64_t levels = 0;
  EXPECT_NEAR(stage.combine(x, 3, &levels), (8 + 16 - 2) * 2.0f / 31.0f, 1e-6);
  EXPECT_EQ(levels, 26);
  levels = 0;
  EXPECT_EQ(stage.combine(x, 0, &levels), 0.0f);
  EXPECT_EQ(levels, 0);
}

TEST(OutputStage, TileMeanQuantisesTheMeanOnce) {
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  hw.out_mode = OutputQuantMode::kTileMean;
  const OutputStage stage(hw);
  // sum = 1.4, n = 2 -> mean 0.7 -> 10.85 steps -> 11 -> 2 * 22/31.
  const float x[2] = {0.5f, 0.9f};
  int64_t levels = 0;
  EXPECT_NEAR(stage.combine(x, 2, &levels), 2 * 11 * 2.0f / 31.0f, 1e-6);
  EXPECT_EQ(levels, 11);
}

TEST(OutputStage, CounterGridAndPolarityAndDisabledQuantiser) {
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  hw.out_grid = OutputGrid::kCounter;
  hw.polarity = Polarity::kInverted;
  const OutputStage stage(hw);
  EXPECT_FLOAT_EQ(stage.normalise(20.0f), -0.5f);
  const float x[1] = {-0.5f};  // 7.5 counts -> 8 (half to even) -> -8/15
  int64_t levels = 0;
  EXPECT_NEAR(stage.combine(x, 1, &levels), -8.0f / 15.0f, 1e-6);
  EXPECT_EQ(levels, 8);

  HwConfig off = HwConfig::preset("ideal");
  const OutputStage plain(off);
  const float y[2] = {0.3f, 1.7f};
  levels = 0;
  EXPECT_FLOAT_EQ(plain.combine(y, 2, &levels), 1.3f);  // clamp only
}

TEST(GainCell, SinglePrecisionCurrentMatchesDouble) {
  for (CellModel m : {CellModel::kPolynomial, CellModel::kLinear, CellModel::kCubic,
                      CellModel::kQuintic, CellModel::kSigmoid, CellModel::kExp}) {
    HwConfig hw = HwConfig::preset("paper-nonlinear");
    hw.cell = m;
    const GainCell cell(hw);
    for (double y = -0.45; y <= 0.45; y += 0.01)
      EXPECT_NEAR(cell.current_f(static_cast<float>(y)), cell.current(static_cast<float>(y)),
                  2e-6 * (1 + std::fabs(cell.current(y))))
          << to_string(m) << " y=" << y;
  }
}
