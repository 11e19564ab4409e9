#include <gtest/gtest.h>

#include <cmath>

#include "gaincell/core/error.h"
#include "gaincell/hw/hw_config.h"

using gaincell::CellModel;
using gaincell::Error;
using gaincell::HwConfig;

TEST(HwConfig, PaperAlphasMatchSpec) {
  // Spec §2.3: effective per-power coefficients at Vin = 0.9.
  const auto a = HwConfig::preset("paper-nonlinear").alphas();
  EXPECT_NEAR(a[0], 0.52136361391, 1e-9);
  EXPECT_NEAR(a[1], 13.612260634, 1e-8);
  EXPECT_NEAR(a[2], -2.620445619, 1e-8);
  EXPECT_NEAR(a[3], 46.05483778, 1e-8);
}

TEST(HwConfig, PresetsValidateAndRoundTrip) {
  for (const auto& name : HwConfig::preset_names()) {
    HwConfig c = HwConfig::preset(name);
    EXPECT_NO_THROW(c.validate()) << name;
    HwConfig back = HwConfig::from_json(c.to_json());
    EXPECT_EQ(back.to_json(), c.to_json()) << name;
  }
}

TEST(HwConfig, PresetDifferences) {
  EXPECT_EQ(HwConfig::preset("paper-linear").cell, gaincell::CellModel::kLinear);
  HwConfig ideal = HwConfig::preset("ideal");
  EXPECT_FALSE(ideal.q.enabled);
  EXPECT_FALSE(ideal.out.enabled);
  EXPECT_EQ(ideal.leakage.effective_lambda(), 0.0);
  EXPECT_DOUBLE_EQ(HwConfig::preset("paper-nonlinear").leakage.effective_lambda(), 1.6e-4);
}

TEST(HwConfig, RetentionTimeGivesLambda) {
  HwConfig c = HwConfig::from_json(
      {{"leakage", {{"retention_time_s", 5e-3}, {"time_per_token_s", 0.8e-6}}}});
  EXPECT_NEAR(c.leakage.effective_lambda(), 1.6e-4, 1e-12);
}

static std::string error_of(const nlohmann::json& j) {
  try {
    HwConfig::from_json(j);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(HwConfig, BadValuesNameTheField) {
  EXPECT_NE(error_of({{"s_sat", -1.0}}).find("s_sat"), std::string::npos);
  EXPECT_NE(error_of({{"window", 1000}}).find("window"), std::string::npos);
  EXPECT_NE(error_of({{"quantization", {{"k", {{"levels", 1}}}}}}).find("quantization.k.levels"),
            std::string::npos);
  EXPECT_NE(error_of({{"bogus", 1}}).find("bogus"), std::string::npos);
  EXPECT_NE(error_of({{"cell", {{"model", "cubic-ish"}}}}).find("cell.model"), std::string::npos);
  EXPECT_NE(error_of({{"cell", {{"coefficients", {1, 2}}}}}).find("cell.coefficients"),
            std::string::npos);
  EXPECT_NE(error_of({{"array_size", "64"}}).find("array_size"), std::string::npos);
  EXPECT_NE(error_of({{"preset", "nope"}}).find("nope"), std::string::npos);
  EXPECT_NE(error_of({{"noise", {{"read_noise_s", -0.1}}}}).find("noise.read_noise_s"),
            std::string::npos);
}

// Issue 11 defect 3: a default-constructed configuration is the paper's nonlinear hardware, and a
// polynomial cell whose current ignores the stored voltage is rejected.
TEST(HwConfig, DefaultComputesAndDeadCellIsRejected) {
  HwConfig def;
  def.name = "paper-nonlinear";
  EXPECT_EQ(def.to_json(), HwConfig::preset("paper-nonlinear").to_json());
  EXPECT_NO_THROW(HwConfig{}.validate());
  HwConfig dead;
  dead.coefficients.fill(0.0);
  try {
    dead.validate();
    FAIL() << "an all-zero polynomial cell must be rejected";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cell.coefficients"), std::string::npos) << e.what();
  }
  // Only the offset term alpha_0 left: still dead.
  dead.coefficients = {1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_THROW(dead.validate(), Error);
  dead.cell = CellModel::kLinear;  // the linear cell does not use the coefficients
  EXPECT_NO_THROW(dead.validate());
}
