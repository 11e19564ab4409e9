// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Stage B (spec §5.2) end to end on a small trained model: a linear gain-cell model is trained
// with target recording, its weights are moved to the nonlinear cell, and the adaptation must
// bring the statistics to their targets and most of the loss back.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/tools/adapt/adaptation.h"
#include "gaincell/train/trainer.h"

using namespace gaincell;
namespace fs = std::filesystem;

namespace {

constexpr int kVocab = 48;

// A corpus that needs attention: x[t+1] = succ[x[t-1]] (a fixed random table) with 1/8 noise, so
// the next token is predictable only by attending to the previous position.
std::vector<int32_t> synthetic_corpus(size_t n, uint64_t seed) {
  std::mt19937_64 table_rng(12345);  // the same table for train and validation
  std::vector<int32_t> succ(kVocab);
  for (int i = 0; i < kVocab; ++i) succ[i] = static_cast<int32_t>(table_rng() % kVocab);
  std::mt19937_64 rng(seed);
  std::vector<int32_t> tokens(n);
  for (size_t i = 0; i < n; ++i) {
    const bool noise = i < 2 || rng() % 8 == 0;
    tokens[i] = noise ? static_cast<int32_t>(rng() % kVocab) : succ[tokens[i - 2]];
  }
  return tokens;
}

GPT2Config small_config(const std::string& attention, const std::string& hw) {
  GPT2Config c;
  c.n_layer = 2;
  c.n_head = 1;
  c.n_embd = 64;
  c.block_size = 64;
  c.vocab_size = kVocab;
  c.attention = attention;
  c.hw = HwConfig::preset(hw);
  c.hw.window = 64;
  return c;
}

float mean_loss(GPT2Model& model, const TokenDataset& data, int B, int T) {
  BatchSampler sampler(data, B, T, 99);
  std::vector<int32_t> x(B * T), y(B * T);
  double sum = 0;
  const int batches = 4;
  for (int i = 0; i < batches; ++i) {
    sampler.next(x.data(), y.data());
    sum += model.forward(x.data(), y.data(), B, T, false);
  }
  return static_cast<float>(sum / batches);
}

class AdaptationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gaincell_adapt_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
    write_token_file(dir_ / "train.bin", synthetic_corpus(40000, 1));
    write_token_file(dir_ / "val.bin", synthetic_corpus(8000, 2));
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

}  // namespace

// Mean KL(p_ref || p) over the positions of one batch, from the two models' logits.
double mean_kl(const float* ref_logits, const float* logits, int positions, int vocab) {
  double total = 0;
  for (int i = 0; i < positions; ++i) {
    const float* a = ref_logits + static_cast<size_t>(i) * vocab;
    const float* b = logits + static_cast<size_t>(i) * vocab;
    const double ma = *std::max_element(a, a + vocab), mb = *std::max_element(b, b + vocab);
    double za = 0, zb = 0;
    for (int v = 0; v < vocab; ++v) za += std::exp(a[v] - ma), zb += std::exp(b[v] - mb);
    for (int v = 0; v < vocab; ++v) {
      const double la = a[v] - ma - std::log(za), lb = b[v] - mb - std::log(zb);
      total += std::exp(la) * (la - lb);
    }
  }
  return total / positions;
}

// The targets are recorded on a linear model (EMA over 120 training forwards of one batch, so
// they equal its statistics to ~1e-5); the same weights on the nonlinear cell give different
// statistics. The algorithm must bring every statistic to its target (or report it) and bring
// the nonlinear model's predictions closer to the linear model's.
TEST_F(AdaptationTest, MatchesLinearStatisticsOnTheNonlinearCell) {
  const TokenDataset train = TokenDataset::open(dir_ / "train.bin", kVocab);
  const int B = 4, T = 32;
  BatchSampler sampler(train, B, T, 5);
  std::vector<int32_t> x(B * T), y(B * T);
  sampler.next(x.data(), y.data());

  GPT2Model linear(small_config("gaincell-linear", "paper-linear"));
  linear.init_random(3);
  for (int l = 0; l < linear.config().n_layer; ++l) linear.attention(l).set_record_targets(true);
  for (int i = 0; i < 120; ++i) linear.forward(x.data(), y.data(), B, T, /*training=*/true);
  linear.forward(x.data(), y.data(), B, T, false);
  const std::vector<float> linear_logits(linear.logits(),
                                         linear.logits() + static_cast<size_t>(B) * T * kVocab);

  GPT2Model nonlinear(small_config("gaincell-nonlinear", "paper-nonlinear"));
  ASSERT_EQ(nonlinear.num_params(), linear.num_params());
  std::copy_n(linear.param_data(), linear.num_params(), nonlinear.param_data());
  nonlinear.forward(x.data(), y.data(), B, T, false);
  const double kl_before = mean_kl(linear_logits.data(), nonlinear.logits(), B * T, kVocab);

  AdaptationOptions opt;
  int calls = 0;
  AdaptationResult r =
      adapt_scalers(nonlinear, x, y, B, T, opt, [&](const AdaptationPass&) { ++calls; });
  nonlinear.forward(x.data(), y.data(), B, T, false);
  const double kl_after = mean_kl(linear_logits.data(), nonlinear.logits(), B * T, kVocab);

  EXPECT_EQ(calls, static_cast<int>(r.passes.size()));
  ASSERT_FALSE(r.passes.empty());
  EXPECT_LT(r.passes.front().converged, r.passes.front().statistics);  // there was work to do
  EXPECT_TRUE(r.converged || static_cast<int>(r.passes.size()) == opt.matching.max_passes);
  EXPECT_EQ(r.converged, r.unconverged.empty()) << r.to_json().dump(1);
  // Every scaler's statistics now sit at the targets (the algorithm's own stopping criterion,
  // re-checked here from the model's buffers and the last recorded statistics).
  for (int l = 0; l < 2 && r.converged; ++l) {
    const ScalerStatistics* st = nonlinear.attention(l).scaler_statistics();
    ASSERT_NE(st, nullptr);
    const std::string base = "h." + std::to_string(l) + ".attn.";
    for (int s = 0; s < ScalerStatistics::kCount; ++s) {
      const ParamInfo& ts =
          nonlinear.param(base + ScalerStatistics::kNames[s] + "_scaler.target_std");
      EXPECT_NEAR(st->std[s][0], nonlinear.param_data()[ts.offset], 2e-4);
    }
  }
  EXPECT_LT(kl_after, 0.5 * kl_before) << "KL before " << kl_before << " after " << kl_after;
  std::fprintf(stderr, "passes %zu converged %d loss %.4f -> %.4f KL %.5f -> %.5f\n",
               r.passes.size(), r.converged, r.initial_loss, r.final_loss, kl_before, kl_after);
}

// The acceptance test of issue 4 runs on a small *trained* model: a one-layer linear gain-cell
// model trained (with target recording, as stage A does) on the synthetic corpus, where the next
// token can only be predicted by attending to the previous position.
constexpr int kTrainedB = 16, kTrainedT = 32;
const fs::path kTrainedFixture = fs::path(GAINCELL_SOURCE_DIR) / "tests/fixtures/adaptation_linear";

GPT2Config trained_config(const std::string& attention, const std::string& hw) {
  GPT2Config c = small_config(attention, hw);
  c.n_layer = 1;
  c.n_embd = 32;
  c.block_size = kTrainedT;
  return c;
}

std::unique_ptr<GPT2Model> train_linear_model(const TokenDataset& train, uint64_t seed) {
  auto linear = std::make_unique<GPT2Model>(trained_config("gaincell-linear", "paper-linear"));
  linear->init_random(seed);
  linear->attention(0).set_record_targets(true);  // stage A's EMA of the scaler statistics
  TrainOptions o;
  o.steps = 800;
  o.batch_size = kTrainedB;
  o.seq_len = kTrainedT;
  o.lr = 1e-2f;
  o.min_lr = 1e-4f;
  o.warmup_steps = 20;
  o.eval_interval = 0;
  o.eval_iters = 1;
  o.log_interval = 0;
  Trainer(*linear, train, nullptr, o).run();
  return linear;
}

struct AdaptationOutcome {
  float linear_loss, unadapted_loss, adapted_loss;
  AdaptationResult result;
};

// Moves the linear model's weights to the nonlinear cell, resets the scalers to a = 1, b = 0 (the
// start of the paper's adaptation script and of Fig. 4c, spec §5.2: K and V lose their 0.45 V
// offset, so half of them clamp to 0 V), and adapts on one fixed training batch.
AdaptationOutcome adapt_from_reset(GPT2Model& linear, const TokenDataset& train,
                                   const TokenDataset& val, GPT2Model& nonlinear) {
  AdaptationOutcome out;
  out.linear_loss = mean_loss(linear, val, kTrainedB, kTrainedT);
  std::copy_n(linear.param_data(), linear.num_params(), nonlinear.param_data());
  reset_adapted_scalers(nonlinear);
  out.unadapted_loss = mean_loss(nonlinear, val, kTrainedB, kTrainedT);
  BatchSampler sampler(train, kTrainedB, kTrainedT, 5);
  std::vector<int32_t> x(kTrainedB * kTrainedT), y(x.size());
  sampler.next(x.data(), y.data());
  AdaptationOptions options;
  options.reset = true;
  out.result = adapt_scalers(nonlinear, x, y, kTrainedB, kTrainedT, options);
  out.adapted_loss = mean_loss(nonlinear, val, kTrainedB, kTrainedT);
  std::fprintf(stderr,
               "validation loss: linear %.4f, nonlinear reset %.4f, adapted %.4f (%zu passes, "
               "converged %d)\n",
               out.linear_loss, out.unadapted_loss, out.adapted_loss, out.result.passes.size(),
               out.result.converged);
  return out;
}

// Regenerates tests/fixtures/adaptation_linear (run with --gtest_also_run_disabled_tests). The
// acceptance test below uses the committed fixture: training is not bit-identical across builds
// (Release -O3 vs the sanitizer build's -O2 vectorise differently), and how much the reset hurts
// varies from one trained model to the next (1.3x to 2.1x the linear loss over seeds 1 to 8),
// while the adaptation's recovery does not (TrainedModelsAdaptBackToTheirLinearLoss).
TEST_F(AdaptationTest, DISABLED_WritesTheTrainedLinearFixture) {
  const TokenDataset train = TokenDataset::open(dir_ / "train.bin", kVocab);
  save_model(*train_linear_model(train, 7), kTrainedFixture);
}

// The acceptance test: on the trained fixture the reset nonlinear model is far worse than the
// linear one; the algorithm converges (or reports the pass limit), leaves every statistic within
// the threshold (or reports it), and cuts the validation loss by a large factor, back to within
// a few percent of the linear model's.
TEST_F(AdaptationTest, RecoversATrainedModelFromResetScalers) {
  ASSERT_TRUE(fs::exists(kTrainedFixture / "model.safetensors")) << kTrainedFixture;
  const TokenDataset train = TokenDataset::open(dir_ / "train.bin", kVocab);
  const TokenDataset val = TokenDataset::open(dir_ / "val.bin", kVocab);
  const auto linear = load_model(kTrainedFixture);
  ASSERT_EQ(linear->config().attention, "gaincell-linear");
  GPT2Model nonlinear(trained_config("gaincell-nonlinear", "paper-nonlinear"));
  const AdaptationOutcome o = adapt_from_reset(*linear, train, val, nonlinear);
  const AdaptationResult& r = o.result;

  // The corpus is 1/8 noise: the best possible loss is about 0.85 nats, log(48) = 3.87 without
  // attention. The linear model uses its attention, or the test would prove nothing.
  ASSERT_LT(o.linear_loss, 1.5f) << "the fixture is not a trained model";
  EXPECT_GT(o.unadapted_loss, 1.5f * o.linear_loss) << "the unadapted model should be far worse";
  EXPECT_TRUE(r.converged ||
              static_cast<int>(r.passes.size()) == AdaptationOptions{}.matching.max_passes);
  EXPECT_EQ(r.converged, r.unconverged.empty()) << r.to_json().dump(1);
  const ScalerStatistics* st = nonlinear.attention(0).scaler_statistics();
  ASSERT_NE(st, nullptr);
  const double threshold = AdaptationOptions{}.matching.threshold;
  for (int s = 0; s < ScalerStatistics::kCount && r.converged; ++s) {
    const std::string base = std::string("h.0.attn.") + ScalerStatistics::kNames[s] + "_scaler.";
    const float target_std = nonlinear.param_data()[nonlinear.param(base + "target_std").offset];
    const float target_mean = nonlinear.param_data()[nonlinear.param(base + "target_mean").offset];
    EXPECT_NEAR(st->std[s][0], target_std, threshold) << base;
    EXPECT_NEAR(st->mean[s][0], target_mean, threshold) << base;
  }
  EXPECT_LT(o.adapted_loss, 0.5f * o.unadapted_loss)
      << "adaptation must cut the loss by a large factor";
  EXPECT_LT(o.adapted_loss, 1.05f * o.linear_loss)
      << "and recover most of the linear model's quality";
}

// The same recipe with the training in the test, in every build: whatever model the training
// gives, it has learned the task, the reset makes it worse, and the adaptation brings it back to
// within a few percent of its linear loss.
TEST_F(AdaptationTest, TrainedModelsAdaptBackToTheirLinearLoss) {
  const TokenDataset train = TokenDataset::open(dir_ / "train.bin", kVocab);
  const TokenDataset val = TokenDataset::open(dir_ / "val.bin", kVocab);
  const auto linear = train_linear_model(train, 7);
  GPT2Model nonlinear(trained_config("gaincell-nonlinear", "paper-nonlinear"));
  const AdaptationOutcome o = adapt_from_reset(*linear, train, val, nonlinear);
  ASSERT_LT(o.linear_loss, 2.0f) << "the linear model did not learn the task";
  EXPECT_GT(o.unadapted_loss, o.linear_loss + 0.05f);  // +0.13 to +1.31 nats over seeds and builds
  EXPECT_TRUE(o.result.converged) << o.result.to_json().dump(1);
  EXPECT_LT(o.adapted_loss, 1.05f * o.linear_loss);
}

TEST_F(AdaptationTest, ResetStartsFromIdentityScalers) {
  const int B = 2, T = 16;
  std::vector<int32_t> x(B * T), y(B * T);
  for (int i = 0; i < B * T; ++i) x[i] = i % kVocab, y[i] = (i * 7 + 1) % kVocab;
  GPT2Model model(small_config("gaincell-nonlinear", "paper-nonlinear"));
  model.init_random(4);
  // Targets of a differently initialised linear model.
  GPT2Model linear(small_config("gaincell-linear", "paper-linear"));
  linear.init_random(4);
  for (int l = 0; l < 2; ++l) linear.attention(l).set_record_targets(true);
  for (int i = 0; i < 5; ++i) linear.forward(x.data(), y.data(), B, T, true);
  std::copy_n(linear.param_data(), linear.num_params(), model.param_data());
  AdaptationOptions opt;
  opt.reset = true;
  opt.matching.max_passes = 1;
  AdaptationResult r = adapt_scalers(model, x, y, B, T, opt);
  ASSERT_EQ(r.passes.size(), 1u);
  // With alpha = 1 on the first pass, a = 1 * target_std / std from the reset a = 1: check one.
  const ParamInfo& a = model.param("h.0.attn.k_scaler.a");
  const ParamInfo& ts = model.param("h.0.attn.k_scaler.target_std");
  EXPECT_GT(model.param_data()[a.offset], 0.0f);
  EXPECT_GT(model.param_data()[ts.offset], 0.0f);
  EXPECT_FALSE(r.converged);
  EXPECT_FALSE(r.unconverged.empty());
}

TEST_F(AdaptationTest, RefusesModelsWithoutTargetsOrScalers) {
  std::vector<int32_t> x(2 * 8, 1), y(2 * 8, 2);
  GPT2Model softmax(small_config("softmax", "paper-nonlinear"));
  softmax.init_random(1);
  EXPECT_THROW(adapt_scalers(softmax, x, y, 2, 8, {}), Error);
  GPT2Model fresh(small_config("gaincell-nonlinear", "paper-nonlinear"));
  fresh.init_random(1);
  try {
    adapt_scalers(fresh, x, y, 2, 8, {});
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("target"), std::string::npos) << e.what();
  }
}
