// Rolling-window perplexity: window layout against lm-eval's get_rolling_token_windows (hand
// cases), and per-token NLL against a brute-force oracle that runs one forward per token.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/train/perplexity.h"

namespace gaincell {
namespace {

TEST(RollingWindows, StrideEqualContextIsLmEvalRolling) {
  // 11 tokens (EOT + 10 text tokens), context 4: lm-eval predicts text tokens in chunks
  // [0,4) [4,8) [8,10); the last window is left-extended to 4 inputs.
  auto w = rolling_windows(11, 4, 4);
  ASSERT_EQ(w.size(), 3u);
  EXPECT_EQ(w[0].begin, 0);
  EXPECT_EQ(w[0].end, 4);
  EXPECT_EQ(w[0].first_scored, 1);
  EXPECT_EQ(w[1].begin, 4);
  EXPECT_EQ(w[1].end, 8);
  EXPECT_EQ(w[1].first_scored, 5);
  EXPECT_EQ(w[2].begin, 6);  // inputs tokens[6..10), targets 7..10, scored 9..10
  EXPECT_EQ(w[2].end, 10);
  EXPECT_EQ(w[2].first_scored, 9);
}

TEST(RollingWindows, EveryTargetScoredOnceForManyShapes) {
  for (int64_t n : {2, 3, 7, 50, 101}) {
    for (int context : {1, 3, 8, 16}) {
      for (int stride = 1; stride <= context; stride += 2) {
        std::vector<int> scored(n, 0);
        for (const auto& w : rolling_windows(n, context, stride)) {
          ASSERT_LE(w.end - w.begin, context);
          ASSERT_GE(w.begin, 0);
          ASSERT_LE(w.end, n - 1);
          for (int64_t t = std::max(w.first_scored, w.begin + 1); t <= w.end; ++t) ++scored[t];
          // Scored targets have at least min(context, index) tokens of context... up to the start.
          ASSERT_TRUE(w.begin == 0 || w.end - w.begin == context);
        }
        for (int64_t t = 1; t < n; ++t)
          ASSERT_EQ(scored[t], 1) << n << " " << context << " " << stride;
      }
    }
  }
  EXPECT_TRUE(rolling_windows(1, 4, 4).empty());
  EXPECT_THROW(rolling_windows(10, 4, 5), Error);
  EXPECT_THROW(rolling_windows(10, 0, 1), Error);
}

TEST(RollingPerplexity, PerTokenNllMatchesOneForwardPerTokenOracle) {
  GPT2Model model(GPT2Config::named("tiny"));
  model.init_random(21);
  // Larger weights than GPT-2 init so that context matters and a wrong window shows.
  for (size_t i = 0; i < model.num_params(); ++i) model.param_data()[i] *= 8.0f;
  std::mt19937 rng(4);
  std::vector<int32_t> tokens(45);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 101);
  const int context = 12, stride = 5;
  PerplexityResult r = rolling_perplexity(model, tokens, context, stride);
  ASSERT_EQ(r.tokens, 44);
  ASSERT_EQ(r.nll.size(), 44u);
  // Oracle: target j gets the context the window rule promises: min(context, ...) tokens ending
  // at j-1, starting where its window starts. Recompute each with its own forward.
  const auto windows = rolling_windows(45, context, stride);
  double sum = 0;
  for (const auto& w : windows) {
    for (int64_t j = std::max(w.first_scored, w.begin + 1); j <= w.end; ++j) {
      const int len = static_cast<int>(j - w.begin);
      std::vector<int32_t> x(tokens.begin() + w.begin, tokens.begin() + j);
      std::vector<int32_t> y(len, -1);
      y[len - 1] = tokens[j];
      const float loss = model.forward(x.data(), y.data(), 1, len);
      EXPECT_NEAR(r.nll[j - 1], loss, 2e-5 * (1 + loss)) << "target " << j;
      sum += loss;
    }
  }
  EXPECT_NEAR(r.mean_nll, sum / 44, 1e-5);
  EXPECT_NEAR(r.ppl, std::exp(sum / 44), 1e-4 * r.ppl);
  // A shorter context changes the result (the oracle comparison is not vacuous).
  PerplexityResult shorter = rolling_perplexity(model, tokens, 3, 3);
  EXPECT_GT(std::fabs(shorter.nll[20] - r.nll[20]), 1e-4);
}

TEST(RollingPerplexity, BadInputsAreErrors) {
  GPT2Model model(GPT2Config::named("tiny"));
  std::vector<int32_t> one = {5};
  EXPECT_THROW(rolling_perplexity(model, one, 8, 8), Error);
  std::vector<int32_t> bad = {5, 101};
  EXPECT_THROW(rolling_perplexity(model, bad, 8, 8), Error);
  std::vector<int32_t> ok = {5, 6, 7};
  EXPECT_THROW(rolling_perplexity(model, ok, 64, 64), Error);  // context > n_positions 32
}

}  // namespace
}  // namespace gaincell
