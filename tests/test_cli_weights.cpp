// `--weights f32|bf16|q8` and `--threads N` as a user runs them: perplexity with q8 weights equals
// the library's forward with the same packed weights, generate runs with bf16, the global thread
// option is accepted before and after the subcommand, and bad values fail with a named problem.
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using cli_test::run_cli;
using test_util::shared_tokenizer;
using test_util::TempDir;

fs::path make_model(const TempDir& dir) {
  GPT2Config c = GPT2Config::named("gpt2");
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 32;
  c.block_size = 48;
  GPT2Model m(c);
  m.init_random(9);
  for (size_t i = 0; i < m.num_params(); ++i) m.param_data()[i] *= 10.0f;
  save_model(m, dir.path() / "model");
  return dir.path() / "model";
}

TEST(WeightsCli, PerplexityWithQ8MatchesTheLibraryAndStaysNearF32) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  const std::string text = "It was the best of times, it was the worst of times.\n";
  write_file_atomic(dir.path() / "t.txt", text);
  const std::string base =
      "perplexity --model " + model_dir.string() + " --text " + (dir.path() / "t.txt").string();
  auto f32 = run_cli(dir.path(), base + " --json");
  auto q8 = run_cli(dir.path(), "--threads 2 " + base + " --json --weights q8");
  ASSERT_EQ(f32.exit_code, 0) << f32.err;
  ASSERT_EQ(q8.exit_code, 0) << q8.err;
  const auto jf = nlohmann::json::parse(f32.out), jq = nlohmann::json::parse(q8.out);
  EXPECT_EQ(jf["weights"], "f32");
  EXPECT_EQ(jq["weights"], "q8");
  // Oracle: the library's forward with q8 weights over [EOT] + text[:-1].
  const std::vector<int32_t> body = shared_tokenizer()->encode(text);
  std::vector<int32_t> x = {50256};
  x.insert(x.end(), body.begin(), body.end() - 1);
  LoadModelOptions load;
  load.weights = WeightFormat::kQ8;
  auto model = load_model(model_dir, load);
  const float mean = model->forward(x.data(), body.data(), 1, static_cast<int>(x.size()));
  EXPECT_NEAR(jq["mean_nll"].get<double>(), mean, 1e-5 * (1 + mean));
  const double f = jf["mean_nll"].get<double>(), q = jq["mean_nll"].get<double>();
  EXPECT_NE(f, q);                         // the packed weights are used
  EXPECT_NEAR(q, f, 0.02 * std::fabs(f));  // and close to fp32
}

TEST(WeightsCli, GenerateWithBf16AndThreadsAfterTheSubcommand) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  auto r = run_cli(dir.path(), "generate --model " + model_dir.string() +
                                   " --prompt Hello --max-new-tokens 5 --weights bf16 --threads 1");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_FALSE(r.out.empty());
}

// --kv-cache bf16 (decode with the softmax KV cache in bfloat16): greedy generation runs and
// records its formats in --json; a gain-cell variant, which has no KV cache, and an unknown
// format fail with the problem named and no output.
TEST(WeightsCli, GenerateWithABf16KvCache) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  const std::string base = "generate --model " + model_dir.string() +
                           " --prompt Hello --max-new-tokens 8 --temperature 0 --json";
  auto f32 = run_cli(dir.path(), base);
  auto bf16 = run_cli(dir.path(), base + " --kv-cache bf16 --weights q8");
  ASSERT_EQ(f32.exit_code, 0) << f32.err;
  ASSERT_EQ(bf16.exit_code, 0) << bf16.err;
  const auto j = nlohmann::json::parse(bf16.out);
  EXPECT_EQ(j.at("kv_cache"), "bf16");
  EXPECT_EQ(j.at("weights"), "q8");
  EXPECT_EQ(nlohmann::json::parse(f32.out).at("kv_cache"), "f32");
  EXPECT_FALSE(j.at("tokens").empty());
  auto hardware = run_cli(dir.path(), base + " --kv-cache bf16 --attention gaincell-nonlinear");
  EXPECT_NE(hardware.exit_code, 0);
  EXPECT_NE(hardware.err.find("no KV cache"), std::string::npos) << hardware.err;
  EXPECT_TRUE(hardware.out.empty()) << hardware.out;
  auto unknown = run_cli(dir.path(), base + " --kv-cache q8");
  EXPECT_NE(unknown.exit_code, 0);
  EXPECT_NE(unknown.err.find("--kv-cache"), std::string::npos) << unknown.err;
}

TEST(WeightsCli, BadValuesFailWithNamedProblems) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  write_file_atomic(dir.path() / "t.txt", std::string("some text"));
  const std::string base =
      "perplexity --model " + model_dir.string() + " --text " + (dir.path() / "t.txt").string();
  for (const std::string& args : {base + " --weights q4", base + " --threads 0"}) {
    auto r = run_cli(dir.path(), args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_TRUE(r.err.find("--weights") != std::string::npos ||
                r.err.find("--threads") != std::string::npos)
        << args << "\n"
        << r.err;
  }
}

}  // namespace
}  // namespace gaincell
