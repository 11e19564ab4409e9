// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// The bf16 leakage-cast reproduction option (hw leakage.bf16_qk_decay, issue 14 item 5): the QK
// stage's decay factor rounded to bfloat16 as the authors' autocast code does. Hand-derived
// rounding, JSON round trip, and in a model: the whole-sequence form equals token-by-token decode
// with the option on, and the option changes the logits (it is not silently ignored).
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/bf16.h"
#include "gaincell/core/error.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/model/gpt2.h"

using namespace gaincell;

TEST(LeakageCast, Bf16RoundingIsNearestEven) {
  EXPECT_EQ(float_to_bf16_bits(1.0f), 0x3f80);
  // bf16 keeps 7 fraction bits: 1 + 2^-8 is halfway between 1 and 1 + 2^-7 -> the even one, 1.
  EXPECT_EQ(round_to_bf16(1.0f + 0x1.0p-8f), 1.0f);
  // 1 + 3 * 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  EXPECT_EQ(round_to_bf16(1.0f + 3 * 0x1.0p-8f), 1.0f + 0x1.0p-6f);
  EXPECT_EQ(round_to_bf16(1.0f + 0x1.8p-8f), 1.0f + 0x1.0p-7f);  // above halfway: up
  EXPECT_EQ(round_to_bf16(-2.5f), -2.5f);                        // exactly representable
  EXPECT_TRUE(std::isnan(round_to_bf16(NAN)));
  EXPECT_TRUE(std::isinf(round_to_bf16(INFINITY)));
}

TEST(LeakageCast, QkDecayIsTheBf16RoundedFactor) {
  LeakageConfig l;
  const double lambda = 1.6e-4;
  // exp(-0.016) = 0.984127...; bf16 values in [0.5, 1) are k/256: 251.93/256 -> 252/256.
  EXPECT_DOUBLE_EQ(l.qk_decay(lambda, 100), std::exp(-0.016));
  l.bf16_qk_decay = true;
  EXPECT_DOUBLE_EQ(l.qk_decay(lambda, 100), 252.0 / 256.0);
  EXPECT_DOUBLE_EQ(l.qk_decay(lambda, 0), 1.0);
  // exp(-1023 * 1.6e-4) = 0.84896...: 217.33/256 -> 217/256.
  EXPECT_DOUBLE_EQ(l.qk_decay(lambda, 1023), 217.0 / 256.0);
}

TEST(LeakageCast, JsonRoundTripAndDefaultOff) {
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  EXPECT_FALSE(hw.leakage.bf16_qk_decay);
  EXPECT_EQ(hw.to_json()["leakage"]["bf16_qk_decay"], false);
  hw.leakage.bf16_qk_decay = true;
  const HwConfig back = HwConfig::from_json(hw.to_json());
  EXPECT_TRUE(back.leakage.bf16_qk_decay);
  nlohmann::json bad = hw.to_json();
  bad["leakage"]["bf16_qk_decay"] = "yes";
  EXPECT_THROW(HwConfig::from_json(bad), Error);
}

namespace {

constexpr int kVocab = 37;

std::unique_ptr<GPT2Model> make_model(bool cast) {
  GPT2Config c = GPT2Config::named("tiny");
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 32;
  c.block_size = 96;
  c.vocab_size = kVocab;
  c.attention = "gaincell-nonlinear";
  c.hw = gaincell_default_hw(c.attention);
  c.hw.window = 64;
  c.hw.leakage.lambda_per_token = 4e-3;  // decay down to ~0.7: bf16 steps of 2^-9 matter
  c.hw.leakage.bf16_qk_decay = cast;
  auto model = std::make_unique<GPT2Model>(c);
  GPT2Model& m = *model;
  m.init_random(11);
  std::mt19937_64 rng(3);
  std::normal_distribution<float> dist(0.0f, 0.1f);
  for (const ParamInfo& p : m.params()) {
    float* x = m.param_data() + p.offset;
    if (p.name.find("c_attn.weight") != std::string::npos)
      for (int64_t i = 0; i < p.numel; ++i) x[i] = dist(rng);
    auto ends = [&](const std::string& s) {
      return p.name.size() >= s.size() && p.name.compare(p.name.size() - s.size(), s.npos, s) == 0;
    };
    if (ends("q_scaler.a")) std::fill(x, x + p.numel, 1.5f);
    if (ends("q_scaler.b")) std::fill(x, x + p.numel, 0.4f);
    if (ends("output_scaler.a")) std::fill(x, x + p.numel, 0.5f);
  }
  return model;
}

}  // namespace

TEST(LeakageCast, WholeSequenceEqualsDecodeAndDiffersFromFp32) {
  const int T = 90;  // > window: slots are reused
  std::vector<int32_t> x(T);
  std::mt19937_64 rng(5);
  for (auto& t : x) t = static_cast<int32_t>(rng() % kVocab);
  auto cast_model = make_model(true), plain_model = make_model(false);
  GPT2Model &cast = *cast_model, &plain = *plain_model;
  cast.forward(x.data(), nullptr, 1, T);
  plain.forward(x.data(), nullptr, 1, T);
  const float* whole = cast.logits();
  double max_change = 0.0;
  for (int64_t i = 0; i < int64_t{T} * kVocab; ++i)
    max_change = std::max(max_change, std::fabs(double{whole[i]} - plain.logits()[i]));
  EXPECT_GT(max_change, 1e-5) << "the option did not change the logits";
  auto session = cast.start_decoding();
  int mismatched = 0;
  for (int t = 0; t < T; ++t) {
    const float* step = session->step(x[t]);
    bool ok = true;
    for (int v = 0; v < kVocab; ++v) {
      const float w = whole[static_cast<int64_t>(t) * kVocab + v];
      if (std::fabs(step[v] - w) > 1e-4 * (1.0 + std::fabs(w))) ok = false;
    }
    mismatched += ok ? 0 : 1;
  }
  // As in test_gaincell_attention_model: a quantiser decision within float rounding of a
  // boundary may flip between the two summation orders.
  EXPECT_LE(mismatched, 2);
}
