// `gaincell generate --trace` records the simulated arrays' hardware events, and `gaincell cost
// --trace` turns them into an activity-based energy estimate (issues 3 and 5 joined).
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/gpt2.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using cli_test::run_cli;
using test_util::TempDir;

TEST(TraceCli, GenerateCountsArrayEventsThatCostReads) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  GPT2Config c = GPT2Config::named("gpt2");
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 32;
  c.block_size = 32;
  c.attention = "gaincell-nonlinear";
  GPT2Model m(c);
  m.init_random(5);
  save_model(m, dir.path() / "model");
  const fs::path trace = dir.path() / "trace.json";
  auto r = run_cli(dir.path(), "generate --model " + (dir.path() / "model").string() +
                                   " --prompt 'Hello there' --max-new-tokens 6 --no-stop --trace " +
                                   trace.string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto t = nlohmann::json::parse(read_text_file(trace));
  // "Hello there" is 2 tokens, then 6 generated ones are fed back: 8 tokens written.
  const int64_t tokens = t["tokens"].get<int64_t>();
  EXPECT_EQ(tokens, 8);
  EXPECT_EQ(t["heads"].get<int>(), 2);
  EXPECT_EQ(t["layers"].get<int>(), 2);
  // Every token writes one key and one value column of head_dim cells in every head and layer.
  EXPECT_EQ(t["events"]["cell_writes"].get<int64_t>(), tokens * 2 * 2 * 2 * 16);
  EXPECT_GT(t["events"]["q_pulses"].get<int64_t>(), 0);
  EXPECT_EQ(t["source"]["attention"], "gaincell-nonlinear");

  auto cost = run_cli(dir.path(), "cost --json --trace " + trace.string());
  ASSERT_EQ(cost.exit_code, 0) << cost.err;
  const auto j = nlohmann::json::parse(cost.out);
  EXPECT_NE(j.dump().find("activity"), std::string::npos) << j.dump(1).substr(0, 2000);

  // A software attention simulates no arrays: --trace is refused with a clear message.
  c.attention = "softmax";
  GPT2Model s(c);
  save_model(s, dir.path() / "softmax");
  auto bad = run_cli(dir.path(), "generate --model " + (dir.path() / "softmax").string() +
                                     " --max-new-tokens 2 --trace " + trace.string());
  EXPECT_EQ(bad.exit_code, 1);
  EXPECT_NE(bad.err.find("--trace"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace gaincell
