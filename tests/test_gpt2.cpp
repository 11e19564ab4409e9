// GPT-2 engine: configuration, parameter table, decode against whole-sequence logits, whole-model
// finite differences on a few parameters, and bad input.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "gaincell/core/error.h"
#include "gaincell/model/gpt2.h"
#include "test_util.h"

namespace gaincell {
namespace {

using test_util::random_tokens;

GPT2Config small_config(const std::string& attention = "softmax", int window = 0) {
  GPT2Config c = GPT2Config::named("tiny");
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = 24;
  c.vocab_size = 37;
  c.attention = attention;
  c.window = window;
  return c;
}

// Larger random weights than GPT-2's init so that every path matters numerically.
void randomize(GPT2Model& m, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.2f);
  for (size_t i = 0; i < m.num_params(); i++) m.param_data()[i] = dist(rng);
}

TEST(GPT2Config, JsonRoundTripKeepsEveryField) {
  GPT2Config c = small_config("sliding", 7);
  c.layer_norm_epsilon = 2e-5f;
  c.hw = HwConfig::preset("paper-linear");
  const nlohmann::json j = c.to_json();
  EXPECT_EQ(j["n_positions"], 24);
  EXPECT_EQ(j["model_type"], "gpt2");
  const GPT2Config d = GPT2Config::from_json(j);
  EXPECT_EQ(d.to_json(), j);
  EXPECT_EQ(d.window, 7);
  EXPECT_EQ(d.attention, "sliding");
  EXPECT_FLOAT_EQ(d.layer_norm_epsilon, 2e-5f);
  EXPECT_EQ(d.tokenizer, "gpt2-bpe");
  EXPECT_FALSE(j.contains("gaincell_tokenizer"));  // HF configs stay as they were
  c.tokenizer = "bytes";
  c.vocab_size = 257;
  EXPECT_EQ(GPT2Config::from_json(c.to_json()).tokenizer, "bytes");
}

TEST(GPT2Config, HuggingFaceConfigWithExtraKeysLoads) {
  const auto j = nlohmann::json::parse(R"({"activation_function": "gelu_new",
      "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1, "n_ctx": 1024, "n_embd": 768,
      "n_head": 12, "n_layer": 12, "n_positions": 1024, "vocab_size": 50257,
      "layer_norm_epsilon": 1e-05, "model_type": "gpt2"})");
  const GPT2Config c = GPT2Config::from_json(j);
  EXPECT_EQ(c.n_layer, 12);
  EXPECT_EQ(c.block_size, 1024);
  EXPECT_EQ(c.attention, "softmax");
}

TEST(GPT2Config, InvalidValuesAreRejectedWithTheFieldName) {
  auto expect_error = [](nlohmann::json j, const std::string& field) {
    try {
      GPT2Config::from_json(j);
      ADD_FAILURE() << "no error for " << j.dump();
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(field), std::string::npos) << e.what();
    }
  };
  const nlohmann::json base = small_config().to_json();
  auto with = [&base](const char* key, nlohmann::json value) {
    nlohmann::json j = base;
    j[key] = value;
    return j;
  };
  expect_error(with("n_head", 3), "divisible");
  expect_error(with("n_layer", 0), "n_layer");
  expect_error(with("vocab_size", -5), "vocab_size");
  expect_error(with("n_embd", "768"), "n_embd");
  expect_error(with("layer_norm_epsilon", -1.0), "layer_norm_epsilon");
  expect_error(with("gaincell_window", -2), "gaincell_window");
  expect_error(with("activation_function", "relu"), "activation_function");
  expect_error(with("model_type", "llama"), "model_type");
  expect_error(with("gaincell_tokenizer", "words"), "gaincell_tokenizer");
  expect_error(with("gaincell_tokenizer", 3), "gaincell_tokenizer");
  nlohmann::json small_bytes = with("gaincell_tokenizer", "bytes");
  small_bytes["vocab_size"] = 256;
  expect_error(small_bytes, "vocab_size >= 257");
  EXPECT_THROW(GPT2Config::named("gpt5"), Error);
  EXPECT_THROW(GPT2Model(small_config("no-such-attention")), Error);
}

TEST(GPT2Model, ParameterTableIsHuggingFaceLayoutAndContiguous) {
  GPT2Model m(small_config());
  size_t offset = 0;
  for (const ParamInfo& p : m.params()) {
    EXPECT_EQ(p.offset, offset) << p.name;
    offset += p.numel;
  }
  EXPECT_EQ(offset, m.num_params());
  EXPECT_EQ(m.param("h.1.attn.c_attn.weight").shape, (std::vector<int64_t>{16, 48}));
  EXPECT_EQ(m.param("h.0.mlp.c_proj.weight").shape, (std::vector<int64_t>{64, 16}));
  EXPECT_EQ(m.param("wpe.weight").shape, (std::vector<int64_t>{24, 16}));
  EXPECT_THROW(m.param("lm_head.weight"), Error);  // tied to wte
}

TEST(GPT2Model, ParameterCountMatchesGpt2Formula) {
  // Independent count: 124,439,808 is the published size of Hugging Face "gpt2"; the same
  // formula must give the model's count for another shape (the 500 MB model itself is too slow
  // to build in a unit test).
  auto formula = [](const GPT2Config& c) {
    const int64_t C = c.n_embd;
    return c.vocab_size * C + c.block_size * C + c.n_layer * (12 * C * C + 13 * C) + 2 * C;
  };
  EXPECT_EQ(formula(GPT2Config::named("gpt2")), 124439808);
  GPT2Config c = small_config();
  c.n_layer = 3;
  c.n_embd = 24;
  c.n_head = 3;
  EXPECT_EQ(static_cast<int64_t>(GPT2Model(c).num_params()), formula(c));
}

TEST(GPT2Model, InitialisationFollowsGpt2) {
  GPT2Model m(small_config());
  // Constructor: deterministic structure only (LayerNorm weights 1, the rest 0).
  EXPECT_EQ(m.param_data()[m.param("ln_f.weight").offset], 1.0f);
  EXPECT_EQ(m.param_data()[m.param("wte.weight").offset + 5], 0.0f);
  m.init_random(42);
  const float* w = m.param_data();
  const ParamInfo& ln = m.param("h.0.ln_1.weight");
  const ParamInfo& bias = m.param("h.0.attn.c_attn.bias");
  for (int64_t i = 0; i < ln.numel; i++) EXPECT_EQ(w[ln.offset + i], 1.0f);
  for (int64_t i = 0; i < bias.numel; i++) EXPECT_EQ(w[bias.offset + i], 0.0f);
  auto std_of = [&](const std::string& name) {
    const ParamInfo& p = m.param(name);
    double s2 = 0.0;
    for (int64_t i = 0; i < p.numel; i++) s2 += w[p.offset + i] * w[p.offset + i];
    return std::sqrt(s2 / p.numel);
  };
  EXPECT_NEAR(std_of("wte.weight"), 0.02, 0.002);
  EXPECT_NEAR(std_of("h.0.mlp.c_fc.weight"), 0.02, 0.002);
  EXPECT_NEAR(std_of("h.0.mlp.c_proj.weight"), 0.02 / 2.0, 0.001);  // 0.02 / sqrt(2 n_layer)
  std::vector<float> first(w, w + m.num_params());
  m.init_random(42);
  EXPECT_TRUE(std::equal(first.begin(), first.end(), m.param_data()));
}

class DecodeMatchesForward : public ::testing::TestWithParam<std::pair<const char*, int>> {};
INSTANTIATE_TEST_SUITE_P(Variants, DecodeMatchesForward,
                         ::testing::Values(std::pair{"softmax", 0}, std::pair{"sliding", 5}));

TEST_P(DecodeMatchesForward, TokenByTokenLogitsEqualWholeSequenceLogits) {
  const auto [variant, window] = GetParam();
  GPT2Model m(small_config(variant, window));
  randomize(m, 3);
  const int T = 20;  // > window for "sliding"
  const auto tokens = random_tokens(T, 37, 4);
  m.forward(tokens.data(), nullptr, 1, T);
  const std::vector<float> whole(m.logits(), m.logits() + T * 37);
  auto session = m.start_decoding();
  for (int round = 0; round < 2; round++) {  // second round after reset()
    for (int t = 0; t < T; t++) {
      const float* logits = session->step(tokens[t]);
      for (int v = 0; v < 37; v++) {
        ASSERT_NEAR(logits[v], whole[t * 37 + v], 1e-4 * (1.0 + std::abs(whole[t * 37 + v])))
            << "t=" << t << " v=" << v;
      }
    }
    EXPECT_EQ(session->position(), T);
    session->reset();
  }
}

TEST_P(DecodeMatchesForward, PrefillThenStepEqualsWholeSequenceLogits) {
  const auto [variant, window] = GetParam();
  GPT2Model m(small_config(variant, window));
  randomize(m, 13);
  const int T = 20, prompt = 9;  // prompt > window for "sliding"
  const auto tokens = random_tokens(T, 37, 14);
  m.forward(tokens.data(), nullptr, 1, T);
  const std::vector<float> whole(m.logits(), m.logits() + T * 37);
  auto session = m.start_decoding();
  const float* logits = session->prefill(tokens.data(), prompt);
  EXPECT_EQ(session->position(), prompt);
  for (int t = prompt - 1; t < T; t++) {
    if (t >= prompt) logits = session->step(tokens[t]);
    for (int v = 0; v < 37; v++) {
      ASSERT_NEAR(logits[v], whole[t * 37 + v], 1e-4 * (1.0 + std::abs(whole[t * 37 + v])))
          << "t=" << t << " v=" << v;
    }
  }
  EXPECT_THROW(session->prefill(tokens.data(), 3), Error);  // not at position 0
}

// A KV cache doubles as it fills (32, 64, ... rows), copying its rows at that step; reserve()
// allocates the rows up front. Only where the rows lie changes, not what is summed in which order,
// so a reserved session (before the prompt, or midway, or for more than block_size tokens) gives
// the same logits, bit for bit, as one that grows. Both cache formats.
TEST_P(DecodeMatchesForward, ReservedSessionsDecodeBitForBitAsGrowingOnes) {
  const auto [variant, window] = GetParam();
  GPT2Config c = small_config(variant, window);
  c.block_size = 80;  // past two doublings
  GPT2Model m(c);
  randomize(m, 23);
  const int T = 75;
  const auto tokens = random_tokens(T, 37, 24);
  for (KvCacheFormat format : {KvCacheFormat::kF32, KvCacheFormat::kBf16}) {
    SCOPED_TRACE(kv_cache_format_name(format));
    auto growing = m.start_decoding(format), reserved = m.start_decoding(format),
         midway = m.start_decoding(format);
    reserved->reserve(T);
    const float* a = growing->prefill(tokens.data(), 5);
    const float* b = reserved->prefill(tokens.data(), 5);
    midway->prefill(tokens.data(), 5);
    midway->reserve(10 * c.block_size);  // capped at block_size
    for (int t = 5; t < T; t++) {
      ASSERT_TRUE(std::equal(a, a + 37, b)) << "t=" << t;
      a = growing->step(tokens[t]);
      b = reserved->step(tokens[t]);
      const float* d = midway->step(tokens[t]);
      ASSERT_TRUE(std::equal(a, a + 37, d)) << "t=" << t;
    }
    EXPECT_THROW(growing->reserve(-1), Error);
  }
}

TEST(GPT2Model, SlidingWindowChangesLogitsOnlyBeyondTheWindow) {
  GPT2Model full(small_config("softmax")), windowed(small_config("sliding", 6));
  randomize(full, 5);
  std::copy(full.param_data(), full.param_data() + full.num_params(), windowed.param_data());
  const int T = 16;
  const auto tokens = random_tokens(T, 37, 6);
  full.forward(tokens.data(), nullptr, 1, T);
  windowed.forward(tokens.data(), nullptr, 1, T);
  for (int t = 0; t < T; t++) {
    double diff = 0.0;
    for (int v = 0; v < 37; v++) {
      diff = std::max(diff, static_cast<double>(std::abs(full.logits()[t * 37 + v] -
                                                         windowed.logits()[t * 37 + v])));
    }
    if (t < 6) {
      EXPECT_LT(diff, 1e-5) << "t=" << t;
    } else {
      EXPECT_GT(diff, 1e-4) << "t=" << t;
    }
  }
}

TEST(GPT2Model, BatchRowsAreIndependent) {
  GPT2Model m(small_config());
  randomize(m, 7);
  const int T = 12;
  const auto tokens = random_tokens(3 * T, 37, 8);
  m.forward(tokens.data(), nullptr, 3, T);
  const std::vector<float> batched(m.logits(), m.logits() + 3 * T * 37);
  m.forward(tokens.data() + T, nullptr, 1, T);  // row 1 alone
  for (int i = 0; i < T * 37; i++) EXPECT_NEAR(m.logits()[i], batched[T * 37 + i], 1e-5);
}

TEST(GPT2Model, WholeModelGradientMatchesFiniteDifferences) {
  GPT2Model m(small_config());
  randomize(m, 9);
  const int B = 2, T = 8;
  const auto inputs = random_tokens(B * T, 37, 10);
  auto targets = random_tokens(B * T, 37, 11);
  targets[5] = -1;
  m.zero_grad();
  m.forward(inputs.data(), targets.data(), B, T, true);
  m.backward();
  const std::vector<float> grad(m.grad_data(), m.grad_data() + m.num_params());
  std::mt19937_64 rng(12);
  for (const char* name : {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.attn.c_attn.weight",
                           "h.1.attn.c_proj.bias", "h.1.mlp.c_fc.weight", "ln_f.bias"}) {
    const ParamInfo& p = m.param(name);
    for (int trial = 0; trial < 3; trial++) {
      const size_t i = p.offset + rng() % p.numel;
      float* w = m.param_data() + i;
      const float saved = *w, h = 1e-2f;
      *w = saved + h;
      const double up = m.forward(inputs.data(), targets.data(), B, T);
      *w = saved - h;
      const double down = m.forward(inputs.data(), targets.data(), B, T);
      *w = saved;
      const double fd = (up - down) / (2.0 * h);
      EXPECT_NEAR(grad[i], fd, 2e-3 * std::abs(fd) + 2e-4) << name << " element " << i - p.offset;
    }
  }
}

TEST(GPT2Model, BadInputIsRejected) {
  GPT2Model m(small_config());
  std::vector<int32_t> tokens(30, 1), targets(30, 2);
  EXPECT_THROW(m.forward(tokens.data(), nullptr, 1, 25), Error);  // > block_size
  EXPECT_THROW(m.forward(tokens.data(), nullptr, 0, 5), Error);
  tokens[3] = 37;
  EXPECT_THROW(m.forward(tokens.data(), nullptr, 1, 5), Error);
  tokens[3] = -1;
  EXPECT_THROW(m.forward(tokens.data(), nullptr, 1, 5), Error);
  tokens[3] = 1;
  targets[2] = 99;
  EXPECT_THROW(m.forward(tokens.data(), targets.data(), 1, 5), Error);
  m.forward(tokens.data(), nullptr, 1, 5, true);
  EXPECT_THROW(m.backward(), Error);  // no targets
  targets[2] = 3;
  m.forward(tokens.data(), targets.data(), 1, 5, false);
  EXPECT_THROW(m.backward(), Error);  // not a training forward
  m.forward(tokens.data(), targets.data(), 1, 5, true);
  m.backward();
  EXPECT_THROW(m.backward(), Error);  // twice
  EXPECT_THROW(m.logits(), Error);    // a training forward keeps no logits
  auto session = m.start_decoding();
  EXPECT_THROW(session->step(37), Error);
  for (int t = 0; t < 24; t++) session->step(1);
  EXPECT_THROW(session->step(1), Error);  // past block_size
}

TEST(GPT2Model, AllIgnoredTargetsGiveZeroLossAndGradient) {
  GPT2Model m(small_config());
  std::vector<int32_t> tokens(6, 1), targets(6, -1);
  EXPECT_EQ(m.forward(tokens.data(), targets.data(), 1, 6, true), 0.0f);
  m.zero_grad();
  m.backward();
  for (size_t i = 0; i < m.num_params(); i++) ASSERT_EQ(m.grad_data()[i], 0.0f);
}

}  // namespace
}  // namespace gaincell
