// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Issue 12 item 5: Karpathy's stories260K (a real pretrained Llama: 8 query heads, 4 KV heads,
// head dim 8, tied embeddings) in Hugging Face format, against the logits llama2c's run.c
// computed position by position (../shared/data/models/stories260K, see its README). The whole
// Llama path on real weights: loader, RMSNorm, RoPE, GQA, SwiGLU, whole-sequence forward,
// token-by-token decode, per-token log-likelihoods and greedy generation.
//
// Skipped when the shared data is absent; fails instead when the environment has CI=true.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <tuple>
#include <vector>

#include "gaincell/core/file_io.h"
#include "gaincell/core/npy.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/model/gpt2.h"
#include "test_cli_util.h"
#include "test_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;

fs::path stories_dir() {
  const fs::path shared = shared_data_dir();
  const fs::path dir = shared.empty() ? fs::path() : shared / "models" / "stories260K";
  return !dir.empty() && fs::exists(dir / "config.json") ? dir : fs::path();
}

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

#define REQUIRE_STORIES_OR_SKIP(dir)                                                          \
  const fs::path dir = stories_dir();                                                         \
  if (dir.empty()) {                                                                          \
    if (in_ci()) FAIL() << "CI=true but ../shared/data/models/stories260K is missing";        \
    GTEST_SKIP() << "../shared/data/models/stories260K not found; stories260K tests skipped"; \
  }

struct Case {
  std::string name;
  double mean_nll;  // the README's mean NLL of the ids under llama2c's logits
};
const Case kCases[] = {{"s20", 0.101124}, {"m100", 17.465627}, {"l300", 0.962836}};

std::vector<int32_t> read_ids(const fs::path& dir, const std::string& name) {
  const auto j = nlohmann::json::parse(read_text_file(dir / ("ids_" + name + ".json")));
  return j.at("ids").get<std::vector<int32_t>>();
}

std::vector<float> read_llama2c_logits(const fs::path& dir, const std::string& name, int T, int V) {
  const NpyArray a = read_npy(dir / ("llama2c_logits_" + name + ".npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{T, V}));
  return a.to_float();
}

// Worst |got - want| over a row-major [T, V] block.
double max_abs_diff(const float* got, const std::vector<float>& want, size_t begin, size_t n) {
  double worst = 0.0;
  for (size_t i = 0; i < n; ++i)
    worst = std::max(worst, std::abs(static_cast<double>(got[i]) - want[begin + i]));
  return worst;
}

// -log softmax(row)[target] over a row of V logits, in double.
double nll_of_row(const float* row, int V, int32_t target) {
  const double mx = *std::max_element(row, row + V);
  double z = 0.0;
  for (int v = 0; v < V; ++v) z += std::exp(row[v] - mx);
  return mx + std::log(z) - row[target];
}

// The standard deviation of all the logits (the scale the tolerances are relative to).
double logit_std(const std::vector<float>& logits) {
  double mean = 0.0, var = 0.0;
  for (float x : logits) mean += x;
  mean /= logits.size();
  for (float x : logits) var += (x - mean) * (x - mean);
  return std::sqrt(var / logits.size());
}

size_t argmax(const float* x, int n) {
  return static_cast<size_t>(std::max_element(x, x + n) - x);
}

TEST(Stories260K, ConfigIsGroupedQueryLlama) {
  REQUIRE_STORIES_OR_SKIP(dir);
  const GPT2Config c = read_model_config(dir);
  EXPECT_EQ(c.model_type, "llama");
  EXPECT_EQ(c.n_head, 8);
  EXPECT_EQ(c.kv_heads(), 4);
  EXPECT_EQ(c.head_dim(), 8);
  EXPECT_TRUE(c.tie_word_embeddings);
}

TEST(Stories260K, WholeSequenceLogitsEqualLlama2c) {
  REQUIRE_STORIES_OR_SKIP(dir);
  auto model = load_model(dir);
  const int V = model->config().vocab_size;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto ids = read_ids(dir, c.name);
    const int T = static_cast<int>(ids.size());
    const auto want = read_llama2c_logits(dir, c.name, T, V);
    model->forward(ids.data(), nullptr, 1, T);
    const double diff = max_abs_diff(model->logits(), want, 0, want.size());
    RecordProperty("max_abs_logit_diff_" + c.name, std::to_string(diff));
    EXPECT_LE(diff, 1e-4);
  }
}

TEST(Stories260K, PerTokenLogLikelihoodsEqualLlama2c) {
  REQUIRE_STORIES_OR_SKIP(dir);
  auto model = load_model(dir);
  const int V = model->config().vocab_size;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto ids = read_ids(dir, c.name);
    const int T = static_cast<int>(ids.size());
    const auto want = read_llama2c_logits(dir, c.name, T, V);
    // Position t predicts token t + 1; the last position has no target.
    std::vector<int32_t> targets(ids.begin() + 1, ids.end());
    targets.push_back(-1);
    const float mean = model->forward(ids.data(), targets.data(), 1, T);
    double ref_sum = 0.0;
    for (int t = 0; t + 1 < T; ++t) {
      const double nll = nll_of_row(want.data() + static_cast<size_t>(t) * V, V, targets[t]);
      ref_sum += nll;
      EXPECT_NEAR(model->token_losses()[t], nll, 1e-4) << "position " << t;
    }
    EXPECT_NEAR(ref_sum / (T - 1), c.mean_nll, 2e-6) << "the README's value (reference check)";
    EXPECT_NEAR(mean, c.mean_nll, 1e-4);
  }
}

TEST(Stories260K, DecodeLogitsAndGreedyChoicesEqualLlama2c) {
  REQUIRE_STORIES_OR_SKIP(dir);
  auto model = load_model(dir);
  const int V = model->config().vocab_size;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto ids = read_ids(dir, c.name);
    const int T = static_cast<int>(ids.size());
    const auto want = read_llama2c_logits(dir, c.name, T, V);
    auto session = model->start_decoding();
    double worst = 0.0;
    int argmax_mismatch = 0;
    for (int t = 0; t < T; ++t) {
      const float* logits = session->step(ids[t]);
      const size_t row = static_cast<size_t>(t) * V;
      worst = std::max(worst, max_abs_diff(logits, want, row, V));
      if (argmax(logits, V) != argmax(want.data() + row, V)) ++argmax_mismatch;
    }
    EXPECT_LE(worst, 1e-4);
    EXPECT_EQ(argmax_mismatch, 0) << "greedy choices differ from run.c's";
  }
}

// The same per-token log-likelihoods through the CLI (issue 12: `gaincell perplexity --tokens`),
// from the JSON ids file and from a uint16 token file of the same ids: --no-eot scores the ids as
// given (position t predicts ids[t + 1]), one window of the model's 512 positions.
TEST(Stories260K, CliPerplexityPerTokenEqualsLlama2c) {
  REQUIRE_STORIES_OR_SKIP(dir);
  test_util::TempDir tmp;
  const int V = read_model_config(dir).vocab_size;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto ids = read_ids(dir, c.name);
    const int T = static_cast<int>(ids.size());
    const auto want = read_llama2c_logits(dir, c.name, T, V);
    const fs::path json_ids = dir / ("ids_" + c.name + ".json");
    const fs::path bin_ids = tmp.path() / (c.name + ".bin");
    write_token_file(bin_ids, ids, V);
    for (const fs::path& tokens : {json_ids, bin_ids}) {
      const auto r = cli_test::run_cli(
          tmp.path(), "perplexity --model " + cli_test::shell_quote(dir.string()) + " --tokens " +
                          cli_test::shell_quote(tokens.string()) + " --no-eot --per-token");
      ASSERT_EQ(r.exit_code, 0) << r.err;
      const auto j = nlohmann::json::parse(r.out);
      const auto nll = j.at("nll").get<std::vector<double>>();
      ASSERT_EQ(nll.size(), static_cast<size_t>(T - 1));
      EXPECT_EQ(j.at("tokens").get<int>(), T - 1);
      double worst = 0.0;
      for (int t = 0; t + 1 < T; ++t) {
        const double ref = nll_of_row(want.data() + static_cast<size_t>(t) * V, V, ids[t + 1]);
        worst = std::max(worst, std::abs(nll[t] - ref));
      }
      RecordProperty("cli_max_abs_nll_diff_" + c.name, std::to_string(worst));
      EXPECT_LE(worst, 1e-4) << tokens;
      EXPECT_NEAR(j.at("mean_nll").get<double>(), c.mean_nll, 1e-4);
    }
  }
}

// ids_s20 is llama2c's greedy continuation from BOS: greedy generation from any prefix of it
// reproduces the rest.
TEST(Stories260K, GreedyGenerationReproducesTheGreedySequence) {
  REQUIRE_STORIES_OR_SKIP(dir);
  auto model = load_model(dir);
  const int V = model->config().vocab_size;
  const auto ids = read_ids(dir, "s20");
  for (int prefix : {1, 5, 12}) {
    SCOPED_TRACE("prefix " + std::to_string(prefix));
    auto session = model->start_decoding();
    const float* logits = session->prefill(ids.data(), prefix);
    std::vector<int32_t> generated(ids.begin(), ids.begin() + prefix);
    while (generated.size() < ids.size()) {
      generated.push_back(static_cast<int32_t>(argmax(logits, V)));
      logits = session->step(generated.back());
    }
    EXPECT_EQ(generated, ids);
  }
}

// Issue 14 item 3: reduced-precision weights on a real pretrained model. The documented tolerance
// (docs/weights.md): the largest logit change stays below 3% (bf16) and 12% (q8, whose activations
// are quantised too) of the fp32 logits' standard deviation, whole sequence and decode alike; the
// mean NLL of each shipped sequence moves by less than 0.1% + 0.001 nats (bf16) and 0.5% + 0.005
// nats (q8); bf16 decode equals the whole-sequence forward with the same weights. (Measured: at
// most 1.8% / 8.3% of the std, NLL changes up to 0.0014 / 0.012 nats; s20's NLL is only 0.10
// nats, m100's 17.5.)
TEST(Stories260K, ReducedPrecisionWeightsStayCloseToFp32) {
  REQUIRE_STORIES_OR_SKIP(dir);
  auto model = load_model(dir);
  const int V = model->config().vocab_size;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto ids = read_ids(dir, c.name);
    const int T = static_cast<int>(ids.size());
    std::vector<int32_t> targets(ids.begin() + 1, ids.end());
    targets.push_back(-1);
    model->set_weight_format(WeightFormat::kF32);
    const double nll_f32 = model->forward(ids.data(), targets.data(), 1, T);
    model->forward(ids.data(), nullptr, 1, T);
    const std::vector<float> ref(model->logits(), model->logits() + static_cast<size_t>(T) * V);
    const double std_logits = logit_std(ref);
    for (auto [format, logit_tol, nll_tol] : {std::tuple{WeightFormat::kBF16, 0.03, 0.001},
                                              std::tuple{WeightFormat::kQ8, 0.12, 0.005}}) {
      SCOPED_TRACE(to_string(format));
      model->set_weight_format(format);
      const double nll = model->forward(ids.data(), targets.data(), 1, T);
      model->forward(ids.data(), nullptr, 1, T);
      const std::vector<float> whole(model->logits(), model->logits() + static_cast<size_t>(T) * V);
      const double rel = max_abs_diff(whole.data(), ref, 0, ref.size()) / std_logits;
      const double nll_change = nll - nll_f32;  // nats per token
      RecordProperty("rel_logit_err_" + to_string(format) + "_" + c.name, std::to_string(rel));
      RecordProperty("nll_change_" + to_string(format) + "_" + c.name, std::to_string(nll_change));
      EXPECT_GT(rel, 0.0) << "the packed weights were not used";
      EXPECT_LT(rel, logit_tol);
      EXPECT_LT(std::abs(nll_change), nll_tol * (1.0 + nll_f32)) << nll << " vs " << nll_f32;
      // Decode reads the same packed weights. bf16: token by token equals the whole sequence.
      // q8 quantises each product's input vector, and a value that decode and the whole-sequence
      // path compute a rounding apart can land on either side of a quantisation step, so the
      // two differ by about the activations' rounding: decode must stay within the same
      // tolerance of fp32 as the whole sequence.
      auto session = model->start_decoding();
      double worst = 0.0, worst_vs_f32 = 0.0;
      for (int t = 0; t < T; ++t) {
        const float* step = session->step(ids[t]);
        worst = std::max(worst, max_abs_diff(step, whole, static_cast<size_t>(t) * V, V));
        worst_vs_f32 =
            std::max(worst_vs_f32, max_abs_diff(step, ref, static_cast<size_t>(t) * V, V));
      }
      RecordProperty("decode_rel_logit_err_" + to_string(format) + "_" + c.name,
                     std::to_string(worst_vs_f32 / std_logits));
      if (format == WeightFormat::kBF16) {
        EXPECT_LE(worst, 1e-4) << "decode with packed weights differs from the whole sequence";
      }
      EXPECT_LT(worst_vs_f32 / std_logits, logit_tol) << "decode with packed weights";
    }
  }
}

// --kv-cache bf16 (issue 14): decode with every cached key and value rounded to bfloat16, on real
// weights, against the logits llama2c computed in fp32. The largest logit change stays below 10 %
// of the logits' standard deviation and the mean NLL moves by less than 0.1 % + 0.001 nats
// (measured: at most 6.3 % on l300, whose 300 positions and 512 logits each give the largest
// sample, and +0.0024 nats on m100's 17.47; docs/weights.md). The head dimension is 8, so a
// score sums only 8 rounded products: a wider model averages the rounding over more terms.
TEST(Stories260K, Bf16KvCacheDecodeStaysCloseToLlama2c) {
  REQUIRE_STORIES_OR_SKIP(dir);
  auto model = load_model(dir);
  const int V = model->config().vocab_size;
  for (const Case& c : kCases) {
    SCOPED_TRACE(c.name);
    const auto ids = read_ids(dir, c.name);
    const int T = static_cast<int>(ids.size());
    const auto want = read_llama2c_logits(dir, c.name, T, V);
    const double std_logits = logit_std(want);
    auto session = model->start_decoding(KvCacheFormat::kBf16);
    double worst = 0.0, nll_sum = 0.0, ref_nll_sum = 0.0;
    for (int t = 0; t < T; ++t) {
      const float* logits = session->step(ids[t]);
      const size_t row = static_cast<size_t>(t) * V;
      worst = std::max(worst, max_abs_diff(logits, want, row, V));
      if (t + 1 < T) {
        nll_sum += nll_of_row(logits, V, ids[t + 1]);
        ref_nll_sum += nll_of_row(want.data() + row, V, ids[t + 1]);
      }
    }
    const double nll = nll_sum / (T - 1), ref_nll = ref_nll_sum / (T - 1);
    RecordProperty("kv_bf16_rel_logit_err_" + c.name, std::to_string(worst / std_logits));
    RecordProperty("kv_bf16_mean_nll_" + c.name, std::to_string(nll));
    RecordProperty("kv_bf16_nll_change_" + c.name, std::to_string(nll - ref_nll));
    EXPECT_NEAR(ref_nll, c.mean_nll, 2e-6) << "the README's value (reference check)";
    EXPECT_GT(worst, 1e-4) << "the bf16 cache changed nothing: was it used?";
    EXPECT_LT(worst / std_logits, 0.10);
    EXPECT_LT(std::abs(nll - ref_nll), 0.001 * (1.0 + ref_nll)) << nll << " vs " << ref_nll;
  }
}

}  // namespace
}  // namespace gaincell
