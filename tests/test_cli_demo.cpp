// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// `gaincell demo` end to end on a small fortune corpus with a tiny model (the real run uses
// Debian's fortunes and the defaults; see the report for its timing).
#include <gtest/gtest.h>

#include <cmath>
#include <nlohmann/json.hpp>

#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/train/perplexity.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using cli_test::run_cli;
using test_util::TempDir;

void write_corpus(const fs::path& dir, int copies) {
  fs::create_directories(dir);
  std::string text;
  for (int i = 0; i < copies; ++i) {
    text += "A penny saved is a penny earned.\n%\nThe early bird catches the worm, number " +
            std::to_string(i) + ".\n%\nAll that glitters is not gold.\n%\n";
  }
  write_file_atomic(dir / "proverbs", text);
  write_file_atomic(dir / "proverbs.dat", std::string("\x01\x02 index, not text"));
}

TEST(DemoCli, TrainsReportsPerplexityAndSampleAndCachesTokens) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  write_corpus(dir.path() / "corpus", 40);
  const std::string args =
      "demo --out " + (dir.path() / "out").string() + " --corpus-dir " +
      (dir.path() / "corpus").string() +
      " --steps 3 --n-layer 1 --n-head 2 --n-embd 16 --seq-len 16 --batch-size 2"
      " --eval-interval 1 --eval-tokens 300 --sample-tokens 5 --prompt 'A penny' --json"
      " --steps-a 2 --steps-c 2";
  auto r = run_cli(dir.path(), args);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("tokenizing"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("step 3/3"), std::string::npos) << r.err;
  auto s = nlohmann::json::parse(r.out);
  EXPECT_EQ(s, nlohmann::json::parse(read_text_file(dir.path() / "out/summary.json")));
  EXPECT_EQ(s["train"]["steps"], 3);
  EXPECT_EQ(s["model"]["config"]["n_positions"], 16);
  // The reported perplexity is the rolling perplexity of the saved model on the saved val tokens.
  auto model = load_model(dir.path() / "out/model");
  auto val = TokenDataset::open(dir.path() / "out/tokens/val.bin");
  const size_t n = std::min<size_t>(val.size(), 300);
  std::vector<int32_t> tokens = val.slice(0, n);
  const auto ppl = rolling_perplexity(*model, tokens, 16, 16);
  EXPECT_EQ(s["val"]["tokens"].get<int64_t>(), ppl.tokens);
  EXPECT_NEAR(s["val"]["ppl"].get<double>(), ppl.ppl, 1e-6 * ppl.ppl);
  EXPECT_TRUE(s["sample"]["greedy"].is_string());
  // The paper's stages ran on top of the softmax model and produced their report.
  for (const char* key :
       {"ppl_softmax", "ppl_linear", "ppl_nonlinear_stage_a_scalers", "ppl_nonlinear_unadapted",
        "ppl_nonlinear_adapted", "ppl_nonlinear_finetuned"}) {
    ASSERT_TRUE(s.contains(key)) << key;
    EXPECT_GT(s[key].get<double>(), 1.0) << key;
  }
  EXPECT_DOUBLE_EQ(s["ppl_softmax"].get<double>(), s["val"]["ppl"].get<double>());
  EXPECT_TRUE(fs::exists(dir.path() / "out/report.md"));
  EXPECT_TRUE(fs::exists(dir.path() / "out/loss_curves.svg"));
  EXPECT_TRUE(fs::exists(dir.path() / "out/adaptation.svg"));
  // By default stage B starts from reset scalers (the paper's Fig. 4c): six models reported.
  EXPECT_TRUE(s["adaptation_reset"].get<bool>());
  EXPECT_TRUE(s["pipeline"]["B"]["adaptation_options"]["reset"].get<bool>());
  EXPECT_EQ(s["samples"].size(), 6u);
  EXPECT_TRUE(s["cost"].contains("energy_per_token_per_head_j"));
  EXPECT_EQ(s["sample"]["prompt"], "A penny");

  // Second run: cached tokens and softmax model; the stages rerun with the other adaptation
  // start (the run directory of the first would be refused by the pipeline). A changed corpus:
  // tokenized again.
  auto again = run_cli(dir.path(), args + " --no-reset");
  ASSERT_EQ(again.exit_code, 0) << again.err;
  EXPECT_NE(again.err.find("using the cached tokens"), std::string::npos) << again.err;
  EXPECT_NE(again.err.find("reusing the softmax model"), std::string::npos) << again.err;
  const auto s2 = nlohmann::json::parse(again.out);
  EXPECT_EQ(s2["val"], s["val"]);  // deterministic
  EXPECT_FALSE(s2["adaptation_reset"].get<bool>());
  EXPECT_EQ(s2["samples"].size(), 5u);
  EXPECT_DOUBLE_EQ(s2["ppl_linear"].get<double>(), s["ppl_linear"].get<double>());
  EXPECT_DOUBLE_EQ(s2["ppl_nonlinear_unadapted"].get<double>(),
                   s["ppl_nonlinear_stage_a_scalers"].get<double>());
  write_corpus(dir.path() / "corpus", 41);
  auto changed = run_cli(dir.path(), args);
  ASSERT_EQ(changed.exit_code, 0) << changed.err;
  EXPECT_NE(changed.err.find("tokenizing"), std::string::npos) << changed.err;
}

// --quick: fixed small sizes, outputs under OUT/quick, the user's corpus; the JSON summary holds
// the five perplexities the issue names.
TEST(DemoCli, QuickRunsTheWholeRecipeIntoOutQuick) {
  TempDir dir;
  write_corpus(dir.path() / "corpus", 40);
  auto r = run_cli(dir.path(), "demo --quick --json --out " + (dir.path() / "out").string() +
                                   " --corpus-dir " + (dir.path() / "corpus").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto s = nlohmann::json::parse(r.out);
  EXPECT_TRUE(fs::exists(dir.path() / "out/quick/report.md"));
  EXPECT_EQ(s["model"]["config"]["n_layer"], 2);
  EXPECT_EQ(s["train"]["steps"], 100);
  EXPECT_EQ(s["data"]["corpus"], (dir.path() / "corpus").string());
  EXPECT_EQ(s["data"]["tokenizer"], "bytes");
  for (const char* key : {"ppl_softmax", "ppl_linear", "ppl_nonlinear_unadapted",
                          "ppl_nonlinear_adapted", "ppl_nonlinear_finetuned"})
    EXPECT_TRUE(std::isfinite(s[key].get<double>())) << key;
}

TEST(DemoCli, MissingCorpusIsANamedError) {
  TempDir dir;
  fs::create_directories(dir.path() / "empty");
  auto r = run_cli(dir.path(), "demo --out " + (dir.path() / "out").string() + " --corpus-dir " +
                                   (dir.path() / "empty").string() + " --steps 1");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("empty"), std::string::npos) << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gaincell
