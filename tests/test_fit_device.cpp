// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Closing the loop (issue 6, point 5): a hardware configuration built from the fit of the paper's
// table equals the paper-nonlinear preset, down to one 64x64 sub-tile computed here with a plain
// loop-level reference of spec §2.3.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/fit/cell_fit.h"
#include "gaincell/tools/fit/compare.h"
#include "gaincell/tools/fit/device.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace gaincell;
using namespace gaincell::fit;

namespace {

using test_util::TempDir;

constexpr const char* kPaperTable = "gaincell-reference/gain_cell_iv_table.csv";

// Quantiser of spec §2.5: clamp, then step * round-half-even(x / step).
double quantize(double x, const QuantizerConfig& q) {
  x = std::clamp(x, q.vmin, q.vmax);
  if (!q.enabled) return x;
  const double step = q.step();
  return step * std::nearbyint(x / step);
}

struct SubTile {
  std::vector<double> s, out;
};

// One 64x64 sub-tile, causal, no decay (spec §2.3 implementation note, §1.2 steps 4-7):
// S_tj = sum_i alpha_i sum_d Q_td (K_jd - 0.45)^i, phi = clip(S/80, 0, 1),
// A_td = sum_i alpha_i sum_j phi_tj (V_jd - 0.45)^i, out = clip(A/40, -1, 1) (unquantised here so
// that tiny coefficient differences are visible rather than hidden by rounding).
SubTile subtile_reference(const HwConfig& hw, const std::vector<double>& q,
                          const std::vector<double>& k, const std::vector<double>& v) {
  const int n = 64;
  const auto a = hw.alphas();
  SubTile r;
  r.s.assign(n * n, 0.0);
  r.out.assign(n * n, 0.0);
  std::vector<double> phi(n * n, 0.0);
  for (int t = 0; t < n; ++t)
    for (int j = 0; j <= t; ++j) {
      double s = 0;
      for (int i = 0; i < 4; ++i)
        for (int d = 0; d < n; ++d)
          s += a[i] * quantize(q[t * n + d], hw.q) *
               std::pow(quantize(k[j * n + d], hw.k) - hw.k_offset, i);
      r.s[t * n + j] = s;
      phi[t * n + j] = std::clamp(s / hw.s_sat, 0.0, 1.0);
    }
  for (int t = 0; t < n; ++t)
    for (int d = 0; d < n; ++d) {
      double acc = 0;
      for (int i = 0; i < 4; ++i)
        for (int j = 0; j <= t; ++j)
          acc += a[i] * phi[t * n + j] * std::pow(quantize(v[j * n + d], hw.v) - hw.v_offset, i);
      r.out[t * n + d] = std::clamp(acc / hw.a_sat, -1.0, 1.0);
    }
  return r;
}

}  // namespace

TEST(FitDevice, JsonRoundTripAndValidation) {
  DeviceModel d;
  d.coefficients = paper_cell_coefficients();
  d.linear_slope = 19.32;
  d.tau_s = 5e-3;
  d.time_per_token_s = 0.8e-6;
  d.lambda_per_token = 1.6e-4;
  d.source = {{"netlist", "x.cir"}};
  const DeviceModel back = DeviceModel::from_json(d.to_json());
  EXPECT_EQ(back.to_json(), d.to_json());

  auto j = d.to_json();
  j["format"] = "other";
  EXPECT_THROW(DeviceModel::from_json(j), Error);
  j = d.to_json();
  j["version"] = 2;
  EXPECT_THROW(DeviceModel::from_json(j), Error);
  j = d.to_json();
  j["coefficients"].erase(3);
  EXPECT_THROW(DeviceModel::from_json(j), Error);
  j = d.to_json();
  j.erase("vin");
  EXPECT_THROW(DeviceModel::from_json(j), Error);
  j = d.to_json();
  j["linear_slope"] = "19";
  EXPECT_THROW(DeviceModel::from_json(j), Error);
}

TEST(FitDevice, ConfigFromFittedPaperTableEqualsPreset) {
  GAINCELL_SHARED_DATA(paper_table, kPaperTable);
  TempDir tmp;
  const IvTable table = read_iv_table(paper_table);
  const PaperFit f = fit_paper_polynomial(table);
  write_file_atomic(tmp.path() / "device.json",
                    device_from_fit(f, fit_linear_slope(f.alphas)).to_json().dump(2));
  // The configuration names the device relative to its own directory.
  write_file_atomic(
      tmp.path() / "hw.json",
      std::string(R"({"preset": "paper-nonlinear", "cell": {"device_file": "device.json"}})"));
  const HwConfig fitted = HwConfig::load((tmp.path() / "hw.json").string());
  const HwConfig preset = HwConfig::preset("paper-nonlinear");
  for (size_t k = 0; k < 10; ++k)
    EXPECT_NEAR(fitted.coefficients[k], preset.coefficients[k],
                1e-6 * std::fabs(preset.coefficients[k]));
  for (int i = 0; i < 4; ++i)
    EXPECT_NEAR(fitted.alphas()[i], preset.alphas()[i], 1e-6 * std::fabs(preset.alphas()[i]));
  EXPECT_DOUBLE_EQ(fitted.vin, 0.9);
  EXPECT_DOUBLE_EQ(fitted.k_offset, 0.45);
  EXPECT_NEAR(fitted.linear_amplitude, 19.32, 5e-3);

  std::mt19937 rng(11);
  std::uniform_real_distribution<double> uq(0.0, 1.0), ukv(0.0, 0.9);
  std::vector<double> q(64 * 64), k(64 * 64), v(64 * 64);
  for (auto& x : q) x = uq(rng);
  for (auto& x : k) x = ukv(rng);
  for (auto& x : v) x = ukv(rng);
  const SubTile a = subtile_reference(fitted, q, k, v);
  const SubTile b = subtile_reference(preset, q, k, v);
  double max_s = 0;
  for (size_t i = 0; i < a.s.size(); ++i) max_s = std::max(max_s, std::fabs(b.s[i]));
  ASSERT_GT(max_s, 1.0);  // the tile is not trivially zero
  for (size_t i = 0; i < a.s.size(); ++i) {
    ASSERT_NEAR(a.s[i], b.s[i], 1e-6 * max_s) << i;
    ASSERT_NEAR(a.out[i], b.out[i], 1e-6) << i;
  }
  // The fitted configuration reproduces the table exactly as the preset does.
  EXPECT_NEAR(compare_hw_to_table(fitted, table).rms_ua, 0.1296, 5e-5);
  EXPECT_NEAR(compare_hw_to_table(preset, table).rms_ua, 0.1296, 5e-5);
}

TEST(FitDevice, ConfigErrorsNameTheProblem) {
  TempDir tmp;
  DeviceModel d;
  d.coefficients = paper_cell_coefficients();
  d.coefficients[9] = 40.0;
  d.linear_slope = 18.0;
  write_file_atomic(tmp.path() / "dev.json", d.to_json().dump());
  // Absolute path, and the device's values win over the preset's.
  const HwConfig c =
      HwConfig::from_json({{"cell", {{"device_file", (tmp.path() / "dev.json").string()}}}});
  EXPECT_DOUBLE_EQ(c.coefficients[9], 40.0);
  EXPECT_DOUBLE_EQ(c.linear_amplitude, 18.0);
  // Literal coefficients that disagree with the device are rejected.
  nlohmann::json conflict = {{"cell",
                              {{"device_file", (tmp.path() / "dev.json").string()},
                               {"coefficients", paper_cell_coefficients()}}}};
  EXPECT_THROW(HwConfig::from_json(conflict), Error);
  // to_json() writes both; reading it back is consistent.
  EXPECT_NO_THROW(HwConfig::from_json(c.to_json()));
  // Issue 11 defect 4: an explicit linear amplitude or K/V offset that disagrees with the device
  // is an error naming the field, never silently replaced.
  const std::string dev = (tmp.path() / "dev.json").string();
  const std::pair<nlohmann::json, std::string> disagreeing[] = {
      {{{"cell", {{"device_file", dev}, {"linear_amplitude", 19.3}}}}, "cell.linear_amplitude"},
      {{{"cell", {{"device_file", dev}}}, {"k_offset", 0.4}}, "k_offset"},
      {{{"cell", {{"device_file", dev}}}, {"v_offset", 0.5}}, "v_offset"}};
  for (const auto& [j, field] : disagreeing) {
    try {
      HwConfig::from_json(j);
      ADD_FAILURE() << field << ": no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("'" + field + "'"), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find("dev.json"), std::string::npos) << e.what();
    }
  }
  // Values that agree with the device are accepted.
  EXPECT_NO_THROW(HwConfig::from_json(
      {{"cell", {{"device_file", dev}, {"linear_amplitude", 18.0}}}, {"k_offset", 0.45}}));
  // Missing or corrupt device files.
  EXPECT_THROW(HwConfig::from_json({{"cell", {{"device_file", "/nonexistent/dev.json"}}}}), Error);
  write_file_atomic(tmp.path() / "bad.json", std::string("{\"format\": \"gaincell-device\""));
  try {
    HwConfig::from_json({{"cell", {{"device_file", (tmp.path() / "bad.json").string()}}}});
    FAIL() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("not valid JSON"), std::string::npos) << e.what();
  }
}

TEST(FitDevice, ComparisonOfLinearModel) {
  IvTable t;
  t.vstore = {0.0, 0.45, 0.9};
  t.vin = {0.9};
  t.iout = {-19.3e-6 * 0.45, 0.0, 19.3e-6 * 0.45};
  const auto cmp = compare_hw_to_table(HwConfig::preset("paper-linear"), t);
  EXPECT_NEAR(cmp.rms_ua, 0.0, 1e-9);
  t.iout[2] += 1e-6;
  EXPECT_NEAR(compare_hw_to_table(HwConfig::preset("paper-linear"), t).max_abs_ua, 1.0, 1e-9);
  HwConfig cubic = HwConfig::preset("paper-nonlinear");
  cubic.cell = CellModel::kCubic;
  EXPECT_THROW(compare_hw_to_table(cubic, t), Error);
}
