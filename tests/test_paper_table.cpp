// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// `gaincell paper-table` end to end on the tiny committed GPT-2 (tests/fixtures/eval_tiny) with a
// few steps per stage and --limit 2 over the task fixtures: all four models evaluated on the seven
// tasks, the table written as Markdown and JSON, and a rerun resuming (stages and evaluations
// reused, same table).
#include <gtest/gtest.h>

#include <filesystem>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "gaincell/core/file_io.h"
#include "gaincell/model/data.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kRoot = GAINCELL_SOURCE_DIR;

TEST(PaperTable, TinyRunEvaluatesFourModelsAndResumes) {
  if (test_util::sanitized()) GTEST_SKIP() << "slow under the sanitizers; the Release pass runs it";
  GAINCELL_REQUIRE_VOCAB();
  test_util::TempDir dir;
  std::mt19937_64 rng(3);
  for (const char* split : {"train.bin", "val.bin"}) {
    std::vector<int32_t> tokens(3000);
    for (int32_t& t : tokens) t = static_cast<int32_t>(rng() % 2000);  // common GPT-2 ids
    write_token_file(dir.path() / "tok" / split, tokens);
  }
  const fs::path out = dir.path() / "run";
  const std::string args =
      "paper-table --init " + cli_test::shell_quote((kRoot / "tests/fixtures/eval_tiny").string()) +
      " --train-data " + cli_test::shell_quote((dir.path() / "tok").string()) + " --eval-data " +
      cli_test::shell_quote((kRoot / "tests/fixtures/eval").string()) + " --out " +
      cli_test::shell_quote(out.string()) +
      " --steps-a 2 --steps-c 2 --batch-size 2 --grad-accum-a 1 --grad-accum-c 1 --seq-len 32"
      " --warmup 1 --eval-interval 2 --checkpoint-interval 2 --eval-tokens 64 --adapt-batch 2"
      " --limit 2 --bootstrap-iters 100";
  const auto first = cli_test::run_cli(dir.path(), args);
  ASSERT_EQ(first.exit_code, 0) << first.err;
  EXPECT_NE(first.out.find("| Public GPT-2 (softmax) |"), std::string::npos) << first.out;
  EXPECT_NE(first.out.find("43.02"), std::string::npos) << "the paper's published average";
  const json table = json::parse(read_text_file(out / "table.json"));
  ASSERT_EQ(table["models"].size(), 4u);
  const char* attention[] = {"softmax", "gaincell-linear", "gaincell-nonlinear",
                             "gaincell-nonlinear"};
  for (size_t m = 0; m < 4; m++) {
    const json& r = table["models"][m]["results"];
    EXPECT_EQ(r["_attention"], attention[m]) << m;
    for (const char* task : {"arc_easy", "arc_challenge", "winogrande", "hellaswag",
                             "lambada_openai", "piqa", "wikitext"}) {
      ASSERT_TRUE(r.contains(task)) << m << " " << task;
      EXPECT_EQ(r[task]["num_docs"], 2) << m << " " << task;
    }
    EXPECT_TRUE(table["models"][m]["avg_acc"].is_number());
  }
  EXPECT_EQ(read_text_file(out / "table.md"), first.out);

  const auto second = cli_test::run_cli(dir.path(), args);
  ASSERT_EQ(second.exit_code, 0) << second.err;
  EXPECT_NE(second.err.find("evaluation found"), std::string::npos) << second.err;
  EXPECT_EQ(second.out, first.out);
}

}  // namespace
}  // namespace gaincell
