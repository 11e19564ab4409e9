// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gaincell/tools/adapt/statistics_matching.h"

using namespace gaincell;

TEST(StatisticsMatching, AlphaScheduleIsLinspaceThenMin) {
  StatisticsMatchingOptions opt;
  EXPECT_DOUBLE_EQ(adaptation_alpha(opt, 0), 1.0);
  EXPECT_NEAR(adaptation_alpha(opt, 1), 1.0 - 0.9 / 49.0, 1e-15);
  EXPECT_NEAR(adaptation_alpha(opt, 49), 0.1, 1e-15);
  EXPECT_DOUBLE_EQ(adaptation_alpha(opt, 50), 0.1);
  EXPECT_DOUBLE_EQ(adaptation_alpha(opt, 100), 0.1);
}

TEST(StatisticsMatching, HandComputedUpdate) {
  std::vector<float> a = {2.0f, 1.0f}, b = {0.5f, 0.0f};
  const std::vector<float> stdv = {4.0f, 1.0f}, mean = {1.0f, 0.3f};
  const std::vector<float> tstd = {1.0f, 1.00005f}, tmean = {0.0f, 0.30002f};
  MatchingCounts c = match_statistics(a, b, stdv, mean, tstd, tmean, 0.5, 1e-4);
  // Head 0: a <- 0.5 * (2 * 1/4) + 0.5 * 2 = 1.25; b <- 0.5 * (0.5 + 0 - 1) + 0.5 * 0.5 = 0.
  EXPECT_FLOAT_EQ(a[0], 1.25f);
  EXPECT_FLOAT_EQ(b[0], 0.0f);
  // Head 1 is within the threshold on both statistics: unchanged.
  EXPECT_FLOAT_EQ(a[1], 1.0f);
  EXPECT_FLOAT_EQ(b[1], 0.0f);
  EXPECT_EQ(c.statistics, 4);
  EXPECT_EQ(c.converged, 2);
  EXPECT_NEAR(c.worst_std_error, 3.0, 1e-9);
  EXPECT_NEAR(c.worst_mean_error, 1.0, 1e-9);
}

TEST(StatisticsMatching, ZeroStdKeepsScale) {
  std::vector<float> a = {3.0f}, b = {0.0f};
  const std::vector<float> stdv = {0.0f}, mean = {0.0f}, tstd = {1.0f}, tmean = {0.0f};
  MatchingCounts c = match_statistics(a, b, stdv, mean, tstd, tmean, 1.0, 1e-4);
  EXPECT_FLOAT_EQ(a[0], 3.0f);
  EXPECT_EQ(c.converged, 1);  // the mean matched, the std did not
}

// With an affine map whose output statistics respond exactly to (a, b), alpha = 1 converges in
// one step and the schedule converges for any start.
TEST(StatisticsMatching, ConvergesOnAffineSystem) {
  std::mt19937 rng(7);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::vector<double> x(4096);
  for (auto& v : x) v = 0.3 + 2.0 * n01(rng);
  double xm = 0, xs = 0;
  for (double v : x) xm += v;
  xm /= x.size();
  for (double v : x) xs += (v - xm) * (v - xm);
  xs = std::sqrt(xs / (x.size() - 1));
  std::vector<float> a = {5.0f}, b = {-3.0f};
  const std::vector<float> tstd = {0.7f}, tmean = {0.2f};
  StatisticsMatchingOptions opt;
  int pass = 0;
  for (; pass < opt.max_passes; ++pass) {
    // y = a x + b: std = |a| xs, mean = a xm + b.
    const std::vector<float> stdv = {static_cast<float>(std::fabs(a[0]) * xs)};
    const std::vector<float> mean = {static_cast<float>(a[0] * xm + b[0])};
    MatchingCounts c =
        match_statistics(a, b, stdv, mean, tstd, tmean, adaptation_alpha(opt, pass), opt.threshold);
    if (c.converged == c.statistics) break;
  }
  EXPECT_LT(pass, opt.max_passes);
  EXPECT_NEAR(std::fabs(a[0]) * xs, 0.7, 2e-4);
  EXPECT_NEAR(a[0] * xm + b[0], 0.2, 2e-4);
}
