// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Token sampling: greedy, temperature and top-k against hand-derived distributions and empirical
// frequencies; seeded reproducibility.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include "gaincell/core/error.h"
#include "gaincell/model/sampling.h"

namespace gaincell {
namespace {

TEST(Sampling, GreedyPicksFirstLargest) {
  std::vector<float> l = {0.5f, 3.0f, -1.0f, 3.0f};
  EXPECT_EQ(argmax_token(l.data(), 4), 1);
  TokenSampler greedy({0.0f, 0, 1});
  for (int i = 0; i < 10; ++i) EXPECT_EQ(greedy.next(l.data(), 4), 1);
  TokenSampler top1({5.0f, 1, 2});
  EXPECT_EQ(top1.next(l.data(), 4), 1);
}

TEST(Sampling, ProbabilitiesAreTemperedSoftmaxOverTopK) {
  std::vector<float> l = {0.0f, std::log(2.0f), std::log(4.0f), -5.0f};
  auto p = sampling_probabilities(l.data(), 4, {1.0f, 0, 0});
  const double z = 1 + 2 + 4 + std::exp(-5.0);
  EXPECT_NEAR(p[0], 1 / z, 1e-7);
  EXPECT_NEAR(p[2], 4 / z, 1e-7);
  // Temperature 2 halves the logits: weights 1, sqrt 2, 2.
  p = sampling_probabilities(l.data(), 4, {2.0f, 3, 0});
  const double z2 = 1 + std::sqrt(2.0) + 2;
  EXPECT_NEAR(p[1], std::sqrt(2.0) / z2, 1e-7);
  EXPECT_EQ(p[3], 0.0);  // outside the top 3
  p = sampling_probabilities(l.data(), 4, {1.0f, 2, 0});
  EXPECT_NEAR(p[1], 2.0 / 6.0, 1e-7);
  EXPECT_NEAR(p[2], 4.0 / 6.0, 1e-7);
  EXPECT_EQ(p[0], 0.0);
}

TEST(Sampling, EmpiricalFrequenciesMatchDistribution) {
  std::vector<float> l = {1.0f, 0.0f, 2.0f, -1.0f, 0.5f};
  SamplingOptions o{0.8f, 4, 42};
  auto p = sampling_probabilities(l.data(), 5, o);
  TokenSampler s(o);
  const int n = 40000;
  std::vector<int> count(5, 0);
  for (int i = 0; i < n; ++i) ++count[s.next(l.data(), 5)];
  EXPECT_EQ(count[3], 0);  // the smallest logit is outside the top 4
  for (int i = 0; i < 5; ++i) {
    const double sd = std::sqrt(n * p[i] * (1 - p[i]));
    EXPECT_NEAR(count[i], n * p[i], 5 * sd + 1) << "token " << i;
  }
}

TEST(Sampling, SeedReproducesAndDiffers) {
  std::vector<float> l(100);
  for (int i = 0; i < 100; ++i) l[i] = std::sin(i * 0.7f);
  auto run = [&](uint64_t seed) {
    TokenSampler s({1.0f, 0, seed});
    std::vector<int32_t> out;
    for (int i = 0; i < 50; ++i) out.push_back(s.next(l.data(), 100));
    return out;
  };
  EXPECT_EQ(run(7), run(7));
  EXPECT_NE(run(7), run(8));
}

TEST(Sampling, BadInputsAreErrors) {
  std::vector<float> l = {1.0f, NAN};
  EXPECT_THROW(argmax_token(l.data(), 2), Error);
  EXPECT_THROW(TokenSampler({-1.0f, 0, 0}), Error);
  EXPECT_THROW(TokenSampler({1.0f, -3, 0}), Error);
  EXPECT_THROW(TokenSampler({NAN, 0, 0}), Error);
  TokenSampler s({1.0f, 0, 0});
  EXPECT_THROW(s.next(l.data(), 2), Error);
}

}  // namespace
}  // namespace gaincell
