// `gaincell generate` and `gaincell perplexity` as a user runs them, checked against the library
// (greedy decoding against whole-sequence argmax; perplexity against one forward pass).
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
using cli_test::shell_quote;
using test_util::shared_tokenizer;
using test_util::TempDir;

// A small random model with the GPT-2 vocabulary; weights scaled up so its predictions are
// confident and context-dependent.
fs::path make_model(const TempDir& dir) {
  GPT2Config c = GPT2Config::named("gpt2");
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = 48;
  GPT2Model m(c);
  m.init_random(5);
  for (size_t i = 0; i < m.num_params(); ++i) m.param_data()[i] *= 20.0f;
  save_model(m, dir.path() / "model");
  return dir.path() / "model";
}

TEST(GenerateCli, GreedyMatchesWholeSequenceArgmaxAndIsReproducible) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  const std::string prompt = "The quick brown fox";
  const std::string args = "generate --model " + model_dir.string() + " --prompt " +
                           shell_quote(prompt) +
                           " --max-new-tokens 12 --temperature 0 --no-stop --json";
  auto r = run_cli(dir.path(), args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  const auto tokens = j["tokens"].get<std::vector<int32_t>>();
  ASSERT_EQ(tokens.size(), 12u);
  // Oracle: re-run the whole sequence each step and take the argmax of the last position.
  auto model = load_model(model_dir);
  std::vector<int32_t> seq = shared_tokenizer()->encode(prompt);
  for (int32_t want : tokens) {
    model->forward(seq.data(), nullptr, 1, static_cast<int>(seq.size()));
    const float* last = model->logits() + (seq.size() - 1) * model->config().vocab_size;
    int32_t best = 0;
    for (int32_t v = 1; v < model->config().vocab_size; ++v) {
      if (last[v] > last[best]) best = v;
    }
    EXPECT_EQ(best, want);
    seq.push_back(want);
  }
  EXPECT_EQ(j["completion"], shared_tokenizer()->decode(tokens));
  // Plain-text output: the prompt followed by the same completion; reproducible.
  auto plain = run_cli(dir.path(), "generate --model " + model_dir.string() + " --prompt " +
                                       shell_quote(prompt) +
                                       " --max-new-tokens 12 --temperature 0 --no-stop");
  ASSERT_EQ(plain.exit_code, 0) << plain.err;
  EXPECT_EQ(plain.out, prompt + j["completion"].get<std::string>() + "\n");
}

TEST(GenerateCli, SeededSamplingIsReproducibleAndSeedMatters) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  auto run = [&](int seed) {
    auto r = run_cli(
        dir.path(), "generate --model " + model_dir.string() +
                        " --prompt Hello --max-new-tokens 16 --temperature 1.5 --top-k 50 --no-stop"
                        " --json --seed " +
                        std::to_string(seed));
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return nlohmann::json::parse(r.out)["tokens"].get<std::vector<int32_t>>();
  };
  EXPECT_EQ(run(1), run(1));
  EXPECT_NE(run(1), run(2));
}

TEST(GenerateCli, BadInputsFailWithNamedProblems) {
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  const std::string m = " --model " + model_dir.string();
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {"generate --model " + (dir.path() / "absent").string() + " --prompt hi", "absent"},
      {"generate" + m + " --prompt hi --temperature -1", "temperature"},
      {"generate" + m + " --prompt hi --top-k -2", "top-k"},
      {"generate" + m + " --prompt hi --max-new-tokens -5", "max-new-tokens"},
      {"generate" + m + " --prompt hi --attention nonesuch", "unknown attention"},
      {"generate" + m + " --prompt hi --vocab " + (dir.path() / "novocab").string(), "novocab"},
  };
  for (const auto& c : cases) {
    auto r = run_cli(dir.path(), c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  }
}

TEST(PerplexityCli, JsonMatchesOneForwardPassAndCountsTokens) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  const std::string text = "It was the best of times, it was the worst of times.\n";
  write_file_atomic(dir.path() / "t.txt", text);
  const std::vector<int32_t> body = shared_tokenizer()->encode(text);
  auto r = run_cli(dir.path(), "perplexity --model " + model_dir.string() + " --text " +
                                   (dir.path() / "t.txt").string() + " --json --per-token");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j["tokens"].get<size_t>(), body.size());  // EOT prepended: every text token predicted
  EXPECT_EQ(j["prepend_eot"], true);
  ASSERT_EQ(j["nll"].size(), body.size());
  // Oracle: the text fits one window; one forward over [EOT] + text[:-1].
  std::vector<int32_t> x = {50256};
  x.insert(x.end(), body.begin(), body.end() - 1);
  auto model = load_model(model_dir);
  const float mean = model->forward(x.data(), body.data(), 1, static_cast<int>(x.size()));
  EXPECT_NEAR(j["mean_nll"].get<double>(), mean, 1e-5 * (1 + mean));
  EXPECT_NEAR(j["ppl"].get<double>(), std::exp(j["mean_nll"].get<double>()),
              1e-9 * j["ppl"].get<double>());
  for (size_t i = 0; i < body.size(); ++i) {
    EXPECT_NEAR(j["nll"][i].get<double>(), model->token_losses()[i],
                1e-5 * (1 + model->token_losses()[i]));
  }
  // Without the EOT the first token is not predicted.
  auto no_eot = run_cli(dir.path(), "perplexity --model " + model_dir.string() + " --text " +
                                        (dir.path() / "t.txt").string() + " --json --no-eot");
  ASSERT_EQ(no_eot.exit_code, 0) << no_eot.err;
  EXPECT_EQ(nlohmann::json::parse(no_eot.out)["tokens"].get<size_t>(), body.size() - 1);
  // Help says what is prepended.
  EXPECT_NE(run_cli(dir.path(), "perplexity --help").out.find("<|endoftext|> is prepended"),
            std::string::npos);
}

TEST(PerplexityCli, BadInputsFailWithNamedProblems) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path model_dir = make_model(dir);
  write_file_atomic(dir.path() / "empty.txt", std::string());
  write_file_atomic(dir.path() / "t.txt", std::string("some text here"));
  const std::string m = "perplexity --model " + model_dir.string();
  struct Case {
    std::string args, needle;
  };
  const std::vector<Case> cases = {
      {m + " --text " + (dir.path() / "missing.txt").string(), "missing.txt"},
      {m + " --text " + (dir.path() / "empty.txt").string(), "no text"},
      {m + " --text " + (dir.path() / "t.txt").string() + " --context 100", "n_positions"},
      {m + " --text " + (dir.path() / "t.txt").string() + " --context 8 --stride 9", "stride"},
      {"perplexity --model " + (dir.path() / "nomodel").string() + " --text " +
           (dir.path() / "t.txt").string(),
       "nomodel"},
  };
  for (const auto& c : cases) {
    auto r = run_cli(dir.path(), c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace gaincell
