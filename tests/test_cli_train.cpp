// `gaincell train` as a user runs it: a new model, an interrupted run resumed from its checkpoint
// (same losses and weights as an uninterrupted run), and bad inputs.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>
#include <random>

#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using cli_test::run_cli;
using test_util::TempDir;

// A 1-layer model with the GPT-2 vocabulary, small enough for a test.
const std::string kModelArgs =
    "--config gpt2 --n-layer 1 --n-head 2 --n-embd 16 --n-positions 16 --seq-len 16 --batch-size 2";

void write_tokens(const fs::path& dir) {
  std::mt19937 rng(8);
  std::vector<int32_t> tokens(3000);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 300);
  fs::create_directories(dir);
  write_token_file(dir / "train.bin", std::vector<int32_t>(tokens.begin(), tokens.begin() + 2500));
  write_token_file(dir / "val.bin", std::vector<int32_t>(tokens.begin() + 2500, tokens.end()));
}

nlohmann::json state_of(const fs::path& dir) {
  return nlohmann::json::parse(read_text_file(dir / "training_state.json"));
}

TEST(TrainCli, HelpListsOptions) {
  TempDir dir;
  auto r = run_cli(dir.path(), "train --help");
  EXPECT_EQ(r.exit_code, 0);
  for (const char* opt :
       {"--resume", "--grad-accum", "--attention", "--hw", "--warmup", "--init"}) {
    EXPECT_NE(r.out.find(opt), std::string::npos) << opt;
  }
}

// Issue 11 item 9: the defaults work together: `--config tiny` (32 positions) trains without a
// --seq-len that fits it (the default is 64).
TEST(TrainCli, TinyConfigTrainsWithDefaultSequenceLength) {
  TempDir dir;
  std::mt19937 rng(3);
  std::vector<int32_t> tokens(400);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 101);  // the tiny vocabulary
  fs::create_directories(dir.path() / "tok");
  write_token_file(dir.path() / "tok/train.bin", tokens);
  auto r =
      run_cli(dir.path(), "train --config tiny --data " + (dir.path() / "tok").string() +
                              " --steps 1 --batch-size 2 --out " + (dir.path() / "m").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_EQ(state_of(dir.path() / "m")["options"]["seq_len"], 32) << r.err;
}

TEST(TrainCli, InterruptedAndResumedRunEqualsUninterruptedRun) {
  TempDir dir;
  write_tokens(dir.path() / "tok");
  const std::string common = "--data " + (dir.path() / "tok").string() + " " + kModelArgs +
                             " --lr 1e-2 --warmup 2 --lr-decay-steps 6 --eval-interval 3 "
                             "--eval-iters 2 --grad-accum 2 --seed 4 --log-interval 1";
  auto a = run_cli(dir.path(), "train " + common + " --steps 6 --out " +
                                   (dir.path() / "a").string() + " --json");
  ASSERT_EQ(a.exit_code, 0) << a.err;
  EXPECT_NE(a.err.find("step 6/6"), std::string::npos) << a.err;  // progress on stderr
  EXPECT_NE(a.err.find("tok/s"), std::string::npos);
  EXPECT_NE(a.err.find("ETA"), std::string::npos);
  auto summary = nlohmann::json::parse(a.out);
  EXPECT_EQ(summary["steps"], 6);

  auto b =
      run_cli(dir.path(), "train " + common + " --steps 3 --out " + (dir.path() / "b").string());
  ASSERT_EQ(b.exit_code, 0) << b.err;
  auto c = run_cli(dir.path(), "train --resume " + (dir.path() / "b").string() + " --steps 6");
  ASSERT_EQ(c.exit_code, 0) << c.err;
  EXPECT_NE(c.err.find("resumed"), std::string::npos) << c.err;

  const auto sa = state_of(dir.path() / "a"), sc = state_of(dir.path() / "b");
  ASSERT_EQ(sa["losses"].size(), 6u);
  EXPECT_EQ(sa["losses"], sc["losses"]);  // exact float equality through JSON
  EXPECT_EQ(sa["val_losses"], sc["val_losses"]);
  EXPECT_EQ(read_binary_file(dir.path() / "a/model.safetensors"),
            read_binary_file(dir.path() / "b/model.safetensors"));
  EXPECT_EQ(read_binary_file(dir.path() / "a/training_state.bin"),
            read_binary_file(dir.path() / "b/training_state.bin"));
  // The checkpoint is a model directory.
  auto model = load_model(dir.path() / "a");
  EXPECT_EQ(model->config().n_embd, 16);
}

TEST(TrainCli, InitFromModelDirWithOtherAttentionAndHw) {
  TempDir dir;
  write_tokens(dir.path() / "tok");
  const std::string data = "--data " + (dir.path() / "tok").string();
  ASSERT_EQ(run_cli(dir.path(), "train " + data + " " + kModelArgs + " --steps 1 --out " +
                                    (dir.path() / "base").string())
                .exit_code,
            0);
  auto r = run_cli(dir.path(), "train " + data + " --init " + (dir.path() / "base").string() +
                                   " --attention sliding --window 4 --hw paper-linear --seq-len 16"
                                   " --batch-size 2 --steps 1 --out " +
                                   (dir.path() / "ft").string());
  ASSERT_EQ(r.exit_code, 0) << r.err;
  auto cfg = nlohmann::json::parse(read_text_file(dir.path() / "ft/config.json"));
  EXPECT_EQ(cfg["gaincell_attention"], "sliding");
  EXPECT_EQ(cfg["gaincell_window"], 4);
  EXPECT_EQ(cfg["gaincell_hw"]["name"], "paper-linear");
}

// A character-level run: prepare --tokenizer bytes, then train takes the token directory's
// tokenizer (vocabulary 257), and generate / perplexity read text through it. A model of another
// tokenizer is refused on that directory.
TEST(TrainCli, ByteLevelCorpusEndToEnd) {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 200; ++i) text += "To be, or not to be, that is the question. ";
  write_file_atomic(dir.path() / "text.txt", text);
  const fs::path tok = dir.path() / "bytes";
  auto p = run_cli(dir.path(), "prepare --tokenizer bytes --text " +
                                   (dir.path() / "text.txt").string() + " --out " + tok.string());
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const auto meta = nlohmann::json::parse(read_text_file(tok / "meta.json"));
  EXPECT_EQ(meta["tokenizer"], "bytes");
  EXPECT_EQ(meta["vocab_size"], 257);
  EXPECT_EQ(meta["train_tokens"].get<size_t>() + meta["val_tokens"].get<size_t>(), text.size());

  auto t = run_cli(dir.path(), "train --data " + tok.string() + " " + kModelArgs +
                                   " --steps 2 --out " + (dir.path() / "m").string());
  ASSERT_EQ(t.exit_code, 0) << t.err;
  EXPECT_NE(t.err.find("vocabulary of 257"), std::string::npos) << t.err;
  const auto cfg = nlohmann::json::parse(read_text_file(dir.path() / "m/config.json"));
  EXPECT_EQ(cfg["vocab_size"], 257);
  EXPECT_EQ(cfg["gaincell_tokenizer"], "bytes");

  auto g = run_cli(dir.path(), "generate --model " + (dir.path() / "m").string() +
                                   " --prompt 'To be' --max-new-tokens 5 --json --no-stop");
  ASSERT_EQ(g.exit_code, 0) << g.err;
  const auto gj = nlohmann::json::parse(g.out);
  EXPECT_EQ(gj["tokens"].size(), 5u) << g.out;  // one byte per token
  auto ppl = run_cli(dir.path(), "perplexity --model " + (dir.path() / "m").string() + " --text " +
                                     (dir.path() / "text.txt").string() + " --json");
  ASSERT_EQ(ppl.exit_code, 0) << ppl.err;
  const auto pj = nlohmann::json::parse(ppl.out);
  EXPECT_EQ(pj["tokens"].get<size_t>(), text.size());
  EXPECT_NE(pj["metric"].get<std::string>().find("bytes"), std::string::npos);

  // A GPT-2-vocabulary model on the byte-level directory: refused, naming both tokenizers.
  write_tokens(dir.path() / "tok");
  ASSERT_EQ(run_cli(dir.path(), "train --data " + (dir.path() / "tok").string() + " " + kModelArgs +
                                    " --steps 1 --out " + (dir.path() / "bpe").string())
                .exit_code,
            0);
  auto bad =
      run_cli(dir.path(),
              "train --data " + tok.string() + " --init " + (dir.path() / "bpe").string() +
                  " --seq-len 16 --batch-size 2 --steps 1 --out " + (dir.path() / "x").string());
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("'bytes' tokenizer, the model uses 'gpt2-bpe'"), std::string::npos)
      << bad.err;
  EXPECT_FALSE(fs::exists(dir.path() / "x" / "model.safetensors"));
}

TEST(TrainCli, BadInputsFailWithNamedProblems) {
  TempDir dir;
  write_tokens(dir.path() / "tok");
  const std::string data = "--data " + (dir.path() / "tok").string();
  const std::string out = " --out " + (dir.path() / "o").string();
  struct Case {
    std::string args, needle;
  };
  // A token file of odd length and one with an out-of-vocabulary id.
  fs::create_directories(dir.path() / "odd");
  write_file_atomic(dir.path() / "odd/train.bin", std::string("abc"));
  fs::create_directories(dir.path() / "big");
  write_file_atomic(dir.path() / "big/train.bin", std::string("\xff\xff\xff\xff", 4));
  write_file_atomic(dir.path() / "bad_config.json", std::string("{\"n_layer\": 0}"));
  write_file_atomic(dir.path() / "junk_config.json", std::string("\x01\x02garbage"));
  const std::vector<Case> cases = {
      {"train " + kModelArgs + out, "--data"},
      {"train " + data + " " + kModelArgs, "--out"},
      {"train --data " + (dir.path() / "none").string() + " " + kModelArgs + out, "none"},
      {"train --data " + (dir.path() / "odd").string() + " " + kModelArgs + out, "odd"},
      {"train --data " + (dir.path() / "big").string() + " " + kModelArgs + out, "65535"},
      {"train " + data + " --config " + (dir.path() / "bad_config.json").string() + out, "n_layer"},
      {"train " + data + " --config " + (dir.path() / "junk_config.json").string() + out,
       "not valid JSON"},
      {"train " + data + " --config gpt3" + out, "unknown model name 'gpt3'"},
      {"train " + data + " " + kModelArgs + " --attention nonesuch" + out,
       "unknown attention 'nonesuch'"},
      {"train " + data + " " + kModelArgs + " --hw nonesuch" + out, "nonesuch"},
      {"train " + data + " " + kModelArgs + " --lr -1" + out, "learning rate"},
      {"train " + data +
           " --config gpt2 --n-layer 1 --n-head 2 --n-embd 16 --n-positions 16 --seq-len 64" + out,
       "n_positions"},
      {"train --resume " + (dir.path() / "nothing").string(), "nothing"},
      {"train " + data + " --init " + (dir.path() / "nothing").string() + out, "nothing"},
  };
  for (const auto& c : cases) {
    auto r = run_cli(dir.path(), c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.needle), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
  }
  EXPECT_FALSE(fs::exists(dir.path() / "o/model.safetensors"));
}

}  // namespace
}  // namespace gaincell
