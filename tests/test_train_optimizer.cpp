// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// AdamW, learning-rate schedule and gradient clipping: against PyTorch
// (tests/reference/make_adamw_fixture.py), hand-derived cases, and fast vs reference kernels.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/train/optimizer.h"

namespace gaincell {
namespace {

const std::filesystem::path kFixtures =
    std::filesystem::path(GAINCELL_SOURCE_DIR) / "tests/fixtures";

TEST(AdamW, MatchesTorchAdamWWithClippingOverSixSteps) {
  auto ref = nlohmann::json::parse(read_text_file(kFixtures / "adamw_reference.json"));
  std::vector<float> params = ref["initial"].get<std::vector<float>>();
  ASSERT_EQ(params.size(), 20u);
  std::vector<ParamSegment> segments = {{0, 12, true}, {12, 3, false}, {15, 5, false}};
  AdamW reference_opt(params.size(), segments, {0.9f, 0.95f, 1e-8f, 0.1f});
  AdamW fast_opt(params.size(), segments, {0.9f, 0.95f, 1e-8f, 0.1f});
  std::vector<float> fast_params = params;
  int step = 0;
  for (const auto& s : ref["steps"]) {
    std::vector<float> grads = s["grads"].get<std::vector<float>>();
    std::vector<float> fast_grads = grads;
    const double norm = clip_grad_norm(grads.data(), segments, 1.0);
    clip_grad_norm(fast_grads.data(), segments, 1.0);
    EXPECT_NEAR(norm, s["norm"].get<double>(), 1e-6 * s["norm"].get<double>()) << "step " << step;
    const float lr = s["lr"].get<float>();
    reference_opt.step_reference(params.data(), grads.data(), lr);
    fast_opt.step(fast_params.data(), fast_grads.data(), lr);
    const auto want = s["params"].get<std::vector<float>>();
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(params[i], want[i], 2e-6f * (1.0f + std::fabs(want[i])))
          << "step " << step << " i " << i;
      EXPECT_NEAR(fast_params[i], want[i], 2e-6f * (1.0f + std::fabs(want[i])))
          << "step " << step << " i " << i;
    }
    ++step;
  }
  EXPECT_EQ(step, 6);
  EXPECT_EQ(reference_opt.step_count(), 6);
}

TEST(AdamW, DecayOnlyInDecayedGroupAndHandDerivedFirstStep) {
  // Zero gradients: moments stay 0, the update is 0/(0+eps) = 0, so only the decoupled decay acts.
  std::vector<float> p = {2.0f, 2.0f, 5.0f};
  std::vector<float> g = {0.0f, 0.0f, 0.0f};
  AdamW opt(3, {{0, 1, true}, {1, 1, false}}, {0.9f, 0.95f, 1e-8f, 0.5f});
  opt.step(p.data(), g.data(), 0.1f);
  EXPECT_FLOAT_EQ(p[0], 2.0f * (1 - 0.1f * 0.5f));
  EXPECT_FLOAT_EQ(p[1], 2.0f);
  EXPECT_FLOAT_EQ(p[2], 5.0f);  // outside every segment: untouched
  // First step with gradient g: m_hat = g, v_hat = g^2, so the step is lr * g / (|g| + eps).
  std::vector<float> q = {1.0f, 1.0f};
  std::vector<float> gq = {0.5f, -4.0f};
  AdamW opt2(2, {{0, 2, false}}, {0.9f, 0.95f, 1e-8f, 0.0f});
  opt2.step(q.data(), gq.data(), 0.01f);
  EXPECT_NEAR(q[0], 1.0f - 0.01f, 1e-7f);
  EXPECT_NEAR(q[1], 1.0f + 0.01f, 1e-7f);
  EXPECT_NEAR(opt2.m()[1], -0.4f, 1e-7f);
  EXPECT_NEAR(opt2.v()[1], 0.8f, 1e-6f);
}

TEST(AdamW, FastStepMatchesReferenceOnLargeSegments) {
  const size_t n = 300000;
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> p(n), g(n);
  for (auto& x : p) x = normal(rng);
  std::vector<ParamSegment> segs = {
      {0, 200000, true}, {200000, 50000, false}, {260000, 40000, true}};
  AdamW a(n, segs, {}), b(n, segs, {});
  std::vector<float> pa = p, pb = p;
  for (int step = 0; step < 3; ++step) {
    for (auto& x : g) x = normal(rng) * 0.01f;
    a.step(pa.data(), g.data(), 1e-3f);
    b.step_reference(pb.data(), g.data(), 1e-3f);
  }
  for (size_t i = 0; i < n; ++i) {
    ASSERT_NEAR(pa[i], pb[i], 1e-6f * (1 + std::fabs(pb[i]))) << i;
    ASSERT_NEAR(a.m()[i], b.m()[i], 1e-7f) << i;
  }
  for (size_t i = 250000; i < 260000; ++i) ASSERT_EQ(pa[i], p[i]);  // gap between segments
}

TEST(AdamW, RejectsBadStateAndConfig) {
  AdamW opt(4, {{0, 4, true}}, {});
  std::vector<float> m(3), v(4);
  EXPECT_THROW(opt.set_state(1, m, v), Error);
  EXPECT_THROW(AdamW(4, {{2, 4, true}}, {}), Error);
  EXPECT_THROW(AdamW(4, {}, {0.9f, 1.0f, 1e-8f, 0.1f}), Error);
}

TEST(LrSchedule, WarmupThenCosineHandValues) {
  LrSchedule s{1.0f, 0.1f, 10, 110};
  EXPECT_FLOAT_EQ(s.at(0), 0.1f);
  EXPECT_FLOAT_EQ(s.at(4), 0.5f);
  EXPECT_FLOAT_EQ(s.at(9), 1.0f);
  EXPECT_FLOAT_EQ(s.at(10), 1.0f);
  EXPECT_FLOAT_EQ(s.at(60), 0.55f);  // halfway: cos(pi/2) = 0
  EXPECT_NEAR(s.at(35), 0.1f + 0.9f * 0.5f * (1 + std::cos(M_PI * 0.25)), 1e-6);
  EXPECT_FLOAT_EQ(s.at(110), 0.1f);
  EXPECT_FLOAT_EQ(s.at(1000), 0.1f);
  LrSchedule constant{3e-4f, 0.0f, 0, 0};
  EXPECT_FLOAT_EQ(constant.at(0), 3e-4f);
  EXPECT_FLOAT_EQ(constant.at(500), 3e-4f);
}

TEST(GradClip, HandDerivedNormAndScaling) {
  std::vector<float> g = {3.0f, 99.0f, 4.0f};
  std::vector<ParamSegment> segs = {{0, 1, true}, {2, 1, false}};
  EXPECT_DOUBLE_EQ(clip_grad_norm(g.data(), segs, 10.0), 5.0);  // below: unchanged
  EXPECT_EQ(g[0], 3.0f);
  EXPECT_DOUBLE_EQ(clip_grad_norm(g.data(), segs, 1.0), 5.0);
  EXPECT_FLOAT_EQ(g[0], static_cast<float>(3.0 / (5.0 + 1e-6)));
  EXPECT_FLOAT_EQ(g[2], static_cast<float>(4.0 / (5.0 + 1e-6)));
  EXPECT_EQ(g[1], 99.0f);  // not in a segment
}

TEST(GradClip, ChunkedNormMatchesReferenceAndIsDeterministic) {
  const size_t n = 1 << 20;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-1, 1);
  std::vector<float> g(n);
  for (auto& x : g) x = u(rng);
  std::vector<ParamSegment> segs = {{0, 700000, true}, {700001, n - 700001, false}};
  const double fast = grad_norm(g.data(), segs);
  EXPECT_NEAR(fast, grad_norm_reference(g.data(), segs), 1e-10 * fast);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(grad_norm(g.data(), segs), fast);
}

}  // namespace
}  // namespace gaincell
