// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Fits of the gain-cell table (spec §2.3, §2.4, §10): the paper's numbers from the shared table,
// and independent references (normal equations of the reduced basis, synthetic tables).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/fit/cell_fit.h"
#include "gaincell/tools/fit/fit_report.h"
#include "gaincell/tools/fit/iv_table.h"
#include "gaincell/tools/fit/lstsq.h"
#include "test_util.h"

namespace fs = std::filesystem;
using namespace gaincell;
using namespace gaincell::fit;

namespace {

constexpr const char* kPaperTable = "gaincell-reference/gain_cell_iv_table.csv";

fs::path paper_table_path() {
  return test_util::shared_data_path(kPaperTable);
}

#define SKIP_WITHOUT_PAPER_TABLE() GAINCELL_SHARED_DATA(paper_table_, kPaperTable)

// Solves the small dense system M x = r by Gaussian elimination with partial pivoting.
std::vector<double> solve_dense(std::vector<double> m, std::vector<double> r) {
  const size_t n = r.size();
  for (size_t c = 0; c < n; ++c) {
    size_t p = c;
    for (size_t k = c + 1; k < n; ++k)
      if (std::fabs(m[k * n + c]) > std::fabs(m[p * n + c])) p = k;
    for (size_t k = 0; k < n; ++k) std::swap(m[c * n + k], m[p * n + k]);
    std::swap(r[c], r[p]);
    for (size_t k = c + 1; k < n; ++k) {
      const double f = m[k * n + c] / m[c * n + c];
      for (size_t q = c; q < n; ++q) m[k * n + q] -= f * m[c * n + q];
      r[k] -= f * r[c];
    }
  }
  std::vector<double> x(n);
  for (size_t c = n; c-- > 0;) {
    double s = r[c];
    for (size_t q = c + 1; q < n; ++q) s -= m[c * n + q] * x[q];
    x[c] = s / m[c * n + c];
  }
  return x;
}

// Independent reference of the paper fit: at a constant Vin the ten columns collapse to the four
// powers of y, so fit alpha_i by normal equations, then spread each alpha_i over its j terms with
// the minimum-norm split C_ij = alpha_i vin^j / sum_j vin^(2j).
std::array<double, 10> reference_min_norm_fit(const std::vector<double>& vstore,
                                              const std::vector<double>& iout_ua, double vin,
                                              double offset) {
  std::vector<double> ata(16, 0.0), atb(4, 0.0);
  for (size_t r = 0; r < vstore.size(); ++r) {
    const double y = vstore[r] - offset;
    for (int a = 0; a < 4; ++a) {
      atb[a] += std::pow(y, a) * iout_ua[r];
      for (int b = 0; b < 4; ++b) ata[a * 4 + b] += std::pow(y, a + b);
    }
  }
  const auto alpha = solve_dense(ata, atb);
  std::array<double, 10> c{};
  for (size_t k = 0; k < 10; ++k) {
    const auto [i, j] = paper_basis()[k];
    double norm = 0;
    for (int q = 0; q <= 3 - i; ++q) norm += std::pow(vin, 2 * q);
    c[k] = alpha[i] * std::pow(vin, j) / norm;
  }
  return c;
}

IvTable synthetic_table(const std::array<double, 4>& alphas, double vin) {
  IvTable t;
  for (int r = 0; r < 30; ++r) t.vstore.push_back(0.9 * r / 29);
  t.vin = {0.45, vin};
  for (double v : t.vstore) {
    const double y = v - 0.45;
    t.iout.push_back(0.0);
    t.iout.push_back(1e-6 * (alphas[0] + y * (alphas[1] + y * (alphas[2] + y * alphas[3]))));
  }
  return t;
}

}  // namespace

TEST(FitCell, PaperTableReproducesPublishedCoefficients) {
  SKIP_WITHOUT_PAPER_TABLE();
  const IvTable t = read_iv_table(paper_table_path());
  ASSERT_EQ(t.vstore.size(), 50u);
  ASSERT_EQ(t.vin.size(), 51u);
  const PaperFit f = fit_paper_polynomial(t);
  const auto& paper = paper_cell_coefficients();
  for (size_t k = 0; k < 10; ++k)
    EXPECT_NEAR(f.coefficients[k], paper[k], 1e-6 * std::fabs(paper[k])) << "C index " << k;
  EXPECT_NEAR(f.rms_ua, 0.1296, 5e-5);  // spec §2.3
  const LinearSlopeFit lin = fit_linear_slope(f.alphas);
  EXPECT_NEAR(lin.slope, 19.32, 5e-3);  // spec §2.4: 19.320
  EXPECT_NEAR(lin.intercept, 0.170, 1e-3);
}

TEST(FitCell, SvdFitMatchesNormalEquationReferenceOnPaperTable) {
  SKIP_WITHOUT_PAPER_TABLE();
  const IvTable t = read_iv_table(paper_table_path());
  const PaperFit f = fit_paper_polynomial(t);
  const auto ref = reference_min_norm_fit(f.vstore, f.data_ua, 0.9, 0.45);
  for (size_t k = 0; k < 10; ++k)
    EXPECT_NEAR(f.coefficients[k], ref[k], 1e-9 * (1 + std::fabs(ref[k]))) << k;
}

TEST(FitCell, SurfaceFitsMatchSpecResiduals) {
  SKIP_WITHOUT_PAPER_TABLE();
  const IvTable t = read_iv_table(paper_table_path());
  // Spec §10: degree (3,3) RMS 0.100 uA, (4,4) 0.075 uA, (5,5) 0.024 uA.
  EXPECT_NEAR(fit_surface(t, 3, 3).rms_ua, 0.100, 1e-3);
  EXPECT_NEAR(fit_surface(t, 4, 4).rms_ua, 0.075, 1e-3);
  EXPECT_NEAR(fit_surface(t, 5, 5).rms_ua, 0.024, 1e-3);
}

TEST(FitCell, ExactCubicIsRecoveredWithZeroResidual) {
  const std::array<double, 4> alphas = {0.3, 12.0, -4.0, 30.0};
  for (double vin : {0.9, 0.7}) {
    const PaperFit f = fit_paper_polynomial(synthetic_table(alphas, vin), vin);
    EXPECT_LT(f.rms_ua, 1e-9);
    for (int i = 0; i < 4; ++i) EXPECT_NEAR(f.alphas[i], alphas[i], 1e-8) << i;
    // Minimum norm: within one i the C_ij are proportional to vin^j.
    EXPECT_NEAR(f.coefficients[1] / f.coefficients[0], vin, 1e-9);
    EXPECT_NEAR(f.coefficients[8] / f.coefficients[7], vin, 1e-9);
  }
}

TEST(FitCell, LinearSlopeOfALinearCellIsItsSlope) {
  const LinearSlopeFit lin = fit_linear_slope({0.0, 17.0, 0.0, 0.0});
  EXPECT_NEAR(lin.slope, 17.0, 1e-12);
  EXPECT_NEAR(lin.intercept, 0.0, 1e-12);
  EXPECT_NEAR(lin.rms, 0.0, 1e-12);
  // An offset alpha_0 only moves the intercept: z = x*a0 has mean a0/2 and no correlation with
  // x*y on the symmetric grid.
  const LinearSlopeFit off = fit_linear_slope({2.0, 17.0, 0.0, 0.0});
  EXPECT_NEAR(off.slope, 17.0, 1e-9);
  EXPECT_NEAR(off.intercept, 1.0, 1e-9);
}

TEST(FitCell, SurfaceFitRecoversAnExactSurface) {
  IvTable t;
  for (int r = 0; r < 20; ++r) t.vstore.push_back(0.9 * r / 19);
  for (int c = 0; c < 12; ++c) t.vin.push_back(0.45 + 0.45 * c / 11);
  auto f = [](double vs, double vi) {
    const double y = vs - 0.45, u = vi - 0.45;
    return 3.0 * u + 20.0 * y * u - 7.0 * y * y * u * u + 11.0 * y * y * y * u;
  };
  for (double vs : t.vstore)
    for (double vi : t.vin) t.iout.push_back(1e-6 * f(vs, vi));
  const SurfaceFit s = fit_surface(t, 3, 3);
  EXPECT_LT(s.rms_ua, 1e-9);
  EXPECT_NEAR(s.eval_ua(0.123, 0.777), f(0.123, 0.777), 1e-8);
}

TEST(FitLstsq, FullRankMatchesNormalEquations) {
  std::mt19937 rng(7);
  std::normal_distribution<double> g;
  const size_t m = 25, n = 6;
  std::vector<double> a(m * n), b(m);
  for (auto& x : a) x = g(rng);
  for (auto& x : b) x = g(rng);
  const auto sol = min_norm_lstsq(a, m, n, b);
  EXPECT_EQ(sol.rank, 6);
  std::vector<double> ata(n * n, 0.0), atb(n, 0.0);
  for (size_t r = 0; r < m; ++r)
    for (size_t i = 0; i < n; ++i) {
      atb[i] += a[r * n + i] * b[r];
      for (size_t j = 0; j < n; ++j) ata[i * n + j] += a[r * n + i] * a[r * n + j];
    }
  const auto ref = solve_dense(ata, atb);
  for (size_t i = 0; i < n; ++i) EXPECT_NEAR(sol.x[i], ref[i], 1e-10);
}

TEST(FitLstsq, DuplicatedColumnsShareTheWeight) {
  // Columns 0 and 1 identical: min-norm splits the coefficient equally (hand-derived).
  const std::vector<double> a = {1, 1, 0, 2, 2, 1, 3, 3, 0, 4, 4, 1};
  const std::vector<double> b = {2, 4 + 5, 6, 8 + 5};  // b = 2*col0 + 5*col2
  const auto sol = min_norm_lstsq(a, 4, 3, b);
  EXPECT_EQ(sol.rank, 2);
  EXPECT_NEAR(sol.x[0], 1.0, 1e-12);
  EXPECT_NEAR(sol.x[1], 1.0, 1e-12);
  EXPECT_NEAR(sol.x[2], 5.0, 1e-12);
}

TEST(FitLstsq, RejectsBadInput) {
  EXPECT_THROW(min_norm_lstsq({1, 2}, 2, 2, {1, 2}), Error);
  EXPECT_THROW(min_norm_lstsq({1, NAN}, 2, 1, {1, 2}), Error);
  EXPECT_THROW(min_norm_lstsq({1, 2}, 2, 1, {1, INFINITY}), Error);
}

TEST(FitTable, FormatAndParseRoundTrip) {
  IvTable t = synthetic_table({0.1, 10, 1, 40}, 0.9);
  t.comments = {"a comment"};
  const IvTable back = parse_iv_table(format_iv_table(t), "mem");
  ASSERT_EQ(back.vstore.size(), t.vstore.size());
  ASSERT_EQ(back.vin.size(), 2u);
  EXPECT_EQ(back.comments, t.comments);
  for (size_t k = 0; k < t.iout.size(); ++k)
    EXPECT_NEAR(back.iout[k], t.iout[k], 1e-9 * std::fabs(t.iout[k]) + 1e-20);
}

TEST(FitTable, BadTablesGiveClearErrors) {
  auto message = [](const std::string& text) {
    try {
      parse_iv_table(text, "t.csv");
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message("").find("no header"), std::string::npos);
  EXPECT_NE(message("vstore_v,vin=0.45,vin=0.9\n0,1,2\n0.5,1\n").find("expected 3 values"),
            std::string::npos);
  EXPECT_NE(message("vstore_v,vin=0.45,vin=0.9\n0,1,nan\n0.5,1,2\n").find("not a finite"),
            std::string::npos);
  EXPECT_NE(message("vstore_v,vin=0.45,vin=0.9\n0,1,x\n").find("not a finite"), std::string::npos);
  EXPECT_NE(message("vstore_v,vin=0.9,vin=0.45\n0,1,2\n0.5,1,2\n").find("increasing"),
            std::string::npos);
  EXPECT_NE(message("vstore_v,vin=0.45,vin=0.9\n0,1,2\n").find("at least 2"), std::string::npos);
  EXPECT_THROW(read_iv_table("/nonexistent/table.csv"), Error);
  // No 0.9 V column.
  const IvTable t =
      parse_iv_table("vstore_v,vin=0.45,vin=0.8\n0,0,1\n0.3,0,2\n0.6,0,3\n0.9,0,4\n", "t");
  EXPECT_THROW(fit_paper_polynomial(t), Error);
}

TEST(FitCli, JsonPlotAndErrors) {
  SKIP_WITHOUT_PAPER_TABLE();
  const fs::path dir = fs::temp_directory_path() / ("gaincell_fit_cli_" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string cmd = std::string(GAINCELL_CLI_PATH) + " fit --table " +
                          paper_table_path().string() + " --json --plot " + dir.string() +
                          " --device-out " + (dir / "dev.json").string() + " > " +
                          (dir / "out.json").string();
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  const auto j = nlohmann::json::parse(read_text_file(dir / "out.json"));
  ASSERT_EQ(j["coefficients"].size(), 10u);
  EXPECT_NEAR(j["coefficients"][9].get<double>(), 46.05483778, 1e-5);
  EXPECT_NEAR(j["rms_ua"].get<double>(), 0.1296, 5e-5);
  EXPECT_NEAR(j["linear_slope"].get<double>(), 19.32, 5e-3);
  EXPECT_TRUE(fs::exists(dir / "fit_vin.svg"));
  EXPECT_TRUE(fs::exists(dir / "fit_surface.svg"));
  EXPECT_NE(read_text_file(dir / "fit_vin.svg").find("<svg"), std::string::npos);
  EXPECT_TRUE(fs::exists(dir / "dev.json"));

  write_file_atomic(dir / "bad.csv", std::string("vstore_v,vin=0.45\n0,1\n0.1,"));
  const std::string bad = std::string(GAINCELL_CLI_PATH) + " fit --table " +
                          (dir / "bad.csv").string() + " > " + (dir / "err.txt").string() + " 2>&1";
  const int rc = std::system(bad.c_str());
  EXPECT_EQ(WEXITSTATUS(rc), 1);
  EXPECT_NE(read_text_file(dir / "err.txt").find("gaincell: error:"), std::string::npos);
  fs::remove_all(dir);
}
