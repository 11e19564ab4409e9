// The `gaincell tokenize` and `gaincell prepare` subcommands, run as a user would, checked
// against the library (whose ids are checked against the Python reference in test_tokenizer).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <nlohmann/json.hpp>

#include "gaincell/core/file_io.h"
#include "gaincell/model/data.h"
#include "gaincell/model/tokenizer.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using test_util::shared_tokenizer;
using test_util::TempDir;

struct CliResult {
  int exit_code;
  std::string out, err;
};

std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `gaincell ARGS` with stdout and stderr captured in files of `dir`.
CliResult run_cli(const TempDir& dir, const std::string& args, const std::string& env = "") {
  const auto out = dir.path() / "cli.out", err = dir.path() / "cli.err";
  const std::string cmd = env + " " + shell_quote(GAINCELL_CLI_PATH) + " " + args + " >" +
                          shell_quote(out.string()) + " 2>" + shell_quote(err.string());
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text_file(out), read_text_file(err)};
}

TEST(TokenizeCli, HelpWorks) {
  TempDir dir;
  EXPECT_EQ(run_cli(dir, "tokenize --help").exit_code, 0);
  EXPECT_EQ(run_cli(dir, "prepare --help").exit_code, 0);
}

TEST(TokenizeCli, JsonAndPlainIdsMatchTheLibrary) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const std::string text = "Hello, world! It's 2024 \xF0\x9F\x98\x80  spaces\n";
  const auto expected = shared_tokenizer()->encode(text);
  const auto json = run_cli(dir, "tokenize --json --string " + shell_quote(text));
  ASSERT_EQ(json.exit_code, 0) << json.err;
  EXPECT_EQ(nlohmann::json::parse(json.out).at("ids").get<std::vector<int32_t>>(), expected);
  const auto plain = run_cli(dir, "tokenize --string " + shell_quote(text));
  std::string want;
  for (size_t i = 0; i < expected.size(); ++i) {
    if (i) want += ' ';
    want += std::to_string(expected[i]);
  }
  EXPECT_EQ(plain.out, want + "\n");
}

TEST(TokenizeCli, FileWithInvalidUtf8RoundTripsThroughDecode) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const std::string bytes("caf\xE9 \xFF\xFE\x00 \xE2\x82 end\r\n", 16);
  write_file_atomic(dir.path() / "in.txt", bytes);
  const auto enc =
      run_cli(dir, "tokenize --json --text " + shell_quote((dir.path() / "in.txt").string()));
  ASSERT_EQ(enc.exit_code, 0) << enc.err;
  EXPECT_EQ(nlohmann::json::parse(enc.out).at("ids").get<std::vector<int32_t>>(),
            shared_tokenizer()->encode(bytes));
  write_file_atomic(dir.path() / "ids.json", enc.out);
  const auto dec =
      run_cli(dir, "tokenize --decode --text " + shell_quote((dir.path() / "ids.json").string()));
  ASSERT_EQ(dec.exit_code, 0) << dec.err;
  EXPECT_EQ(dec.out, bytes);
}

TEST(TokenizeCli, BadInputsAreErrors) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const auto out_of_range = run_cli(dir, "tokenize --decode --string '1 2 50257'");
  EXPECT_EQ(out_of_range.exit_code, 1);
  EXPECT_NE(out_of_range.err.find("gaincell: error:"), std::string::npos) << out_of_range.err;
  EXPECT_NE(out_of_range.err.find("50257"), std::string::npos) << out_of_range.err;
  EXPECT_EQ(run_cli(dir, "tokenize --decode --string '1 x2'").exit_code, 1);
  EXPECT_EQ(run_cli(dir, "tokenize --decode --string '[1, \"a\"]'").exit_code, 1);
  EXPECT_EQ(run_cli(dir, "tokenize --string a --text /dev/null").exit_code, 1);
  EXPECT_EQ(run_cli(dir, "tokenize").exit_code, 1);
  EXPECT_EQ(run_cli(dir, "tokenize --text /nonexistent/file").exit_code, 1);
}

TEST(TokenizeCli, MissingVocabularySaysHowToGetIt) {
  TempDir dir;
  const auto r =
      run_cli(dir, "tokenize --string hi", "GAINCELL_DATA=" + shell_quote(dir.path().string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("scripts/setup.sh"), std::string::npos) << r.err;
}

TEST(PrepareCli, WritesSplitFilesAndReportsProgress) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  write_file_atomic(dir.path() / "a.txt", "To be, or not to be, that is the question.\n");
  write_file_atomic(dir.path() / "b.txt", "Whether 'tis nobler in the mind to suffer\n");
  const auto out = dir.path() / "data";
  const auto r = run_cli(dir, "prepare --text " + shell_quote((dir.path() / "a.txt").string()) +
                                  " " + shell_quote((dir.path() / "b.txt").string()) + " --out " +
                                  shell_quote(out.string()) + " --val-fraction 0.2");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.err.find("[2/2]"), std::string::npos) << r.err;
  const auto summary = nlohmann::json::parse(r.out);
  const auto lib = prepare_token_files(
      *shared_tokenizer(), {dir.path() / "a.txt", dir.path() / "b.txt"}, dir.path() / "lib", 0.2);
  EXPECT_EQ(summary.at("train_tokens").get<size_t>(), lib.train_tokens);
  EXPECT_EQ(summary.at("val_tokens").get<size_t>(), lib.val_tokens);
  EXPECT_EQ(read_binary_file(out / "train.bin"),
            read_binary_file(dir.path() / "lib" / "train.bin"));
  EXPECT_EQ(read_binary_file(out / "val.bin"), read_binary_file(dir.path() / "lib" / "val.bin"));
}

TEST(PrepareCli, FortunesDirectory) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  fs::create_directories(dir.path() / "fortunes");
  write_file_atomic(dir.path() / "fortunes" / "wisdom", "A.\n%\nB.\n%\nC.\n");
  write_file_atomic(dir.path() / "fortunes" / "wisdom.dat", "\x02\x00");
  const auto r = run_cli(dir, "prepare --fortunes --fortunes-dir " +
                                  shell_quote((dir.path() / "fortunes").string()) + " --out " +
                                  shell_quote((dir.path() / "data").string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto meta = nlohmann::json::parse(read_text_file(dir.path() / "data" / "meta.json"));
  EXPECT_EQ(meta.at("documents"), 3);
  EXPECT_EQ(meta.at("sources").size(), 1u);
}

TEST(PrepareCli, MissingInputWritesNothing) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const auto r = run_cli(
      dir, "prepare --text /nonexistent.txt --out " + shell_quote((dir.path() / "data").string()));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.err.find("nonexistent.txt"), std::string::npos) << r.err;
  EXPECT_FALSE(fs::exists(dir.path() / "data" / "train.bin"));
  EXPECT_EQ(run_cli(dir, "prepare --out x").exit_code, 1);
  EXPECT_NE(run_cli(dir, "prepare --text a.txt").exit_code, 0);  // --out is required
}

// ---------------------------------------------------------------------------------------------
// Hugging Face tokenizer.json: --tokenizer FILE, --model DIR, prepare's meta.json, bad files.

// A model-like directory holding the npm Llama 2 tokenizer files (data/tokenizers/llama2), or
// empty when setup.sh has not installed them.
fs::path llama2_tokenizer_dir() {
  const fs::path dir = default_data_dir() / "tokenizers" / "llama2";
  return fs::exists(dir / "tokenizer.json") ? dir : fs::path();
}

#define GAINCELL_REQUIRE_LLAMA2_TOKENIZER()                                                \
  if (llama2_tokenizer_dir().empty()) {                                                    \
    const char* ci = std::getenv("CI");                                                    \
    if (ci && std::string(ci) == "true") FAIL() << "data/tokenizers/llama2 missing in CI"; \
    GTEST_SKIP() << "data/tokenizers/llama2 not found (run scripts/setup.sh or export "    \
                    "GAINCELL_DATA=/work/main/data)";                                      \
  }

TEST(TokenizeCli, HuggingFaceTokenizerByFileAndByModelDirectory) {
  GAINCELL_REQUIRE_LLAMA2_TOKENIZER();
  TempDir dir;
  const fs::path model = dir.path() / "model";
  fs::create_directories(model);
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    fs::copy_file(llama2_tokenizer_dir() / name, model / name);
  }
  const std::string text = "Hello  world, 123 \xE4\xBD\xA0\xE5\xA5\xBD \xF0\x9F\xA6\x99\n";
  const auto expected = Tokenizer::load_hf(model / "tokenizer.json").encode(text);
  ASSERT_FALSE(expected.empty());
  const auto by_model = run_cli(dir, "tokenize --json --model " + shell_quote(model.string()) +
                                         " --string " + shell_quote(text));
  ASSERT_EQ(by_model.exit_code, 0) << by_model.err;
  EXPECT_EQ(nlohmann::json::parse(by_model.out).at("ids").get<std::vector<int32_t>>(), expected);
  const auto by_file = run_cli(dir, "tokenize --json --tokenizer " +
                                        shell_quote((model / "tokenizer.json").string()) +
                                        " --string " + shell_quote(text));
  ASSERT_EQ(by_file.exit_code, 0) << by_file.err;
  EXPECT_EQ(by_file.out, by_model.out);
  write_file_atomic(dir.path() / "ids.json", by_model.out);
  const auto decoded =
      run_cli(dir, "tokenize --decode --model " + shell_quote(model.string()) + " --text " +
                       shell_quote((dir.path() / "ids.json").string()));
  ASSERT_EQ(decoded.exit_code, 0) << decoded.err;
  EXPECT_EQ(decoded.out, text);
  EXPECT_NE(run_cli(dir, "tokenize --model " + shell_quote(model.string()) +
                             " --tokenizer bytes --string a")
                .exit_code,
            0);

  // prepare records the tokenizer.json's name; the ids are the library's.
  write_file_atomic(dir.path() / "a.txt", text);
  const auto data = dir.path() / "data";
  const auto r = run_cli(dir, "prepare --model " + shell_quote(model.string()) + " --text " +
                                  shell_quote((dir.path() / "a.txt").string()) + " --out " +
                                  shell_quote(data.string()) + " --val-fraction 0");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto meta = nlohmann::json::parse(read_text_file(data / "meta.json"));
  EXPECT_EQ(meta.at("tokenizer"), Tokenizer::name_for_model(model, "gpt2-bpe"));
  EXPECT_TRUE(meta.at("tokenizer").get<std::string>().starts_with("hf:"));
  EXPECT_EQ(meta.at("train_tokens").get<size_t>(), expected.size());
}

TEST(TokenizeCli, UnsupportedTokenizerJsonNamesFileAndKey) {
  TempDir dir;
  const fs::path file = dir.path() / "tokenizer.json";
  write_file_atomic(file, R"({"model": {"type": "Unigram", "vocab": [["a", 0.0]]}})");
  const auto r = run_cli(dir, "tokenize --tokenizer " + shell_quote(file.string()) + " --string a");
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find(file.string()), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("'model.type'"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("Unigram"), std::string::npos) << r.err;
  const auto missing = run_cli(dir, "tokenize --tokenizer nonexistent.json --string a");
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("nonexistent.json"), std::string::npos) << missing.err;
}

// A new Llama-family model trained on a token directory made with a tokenizer.json (Llama 3's
// 128256 ids: uint32 token files): prepare copies the tokenizer into the directory, train takes
// its vocabulary from it and copies it into the model, which then tokenizes text the same way.
TEST(TokenizeCli, NewModelTrainsOnAHuggingFaceTokenDirectory) {
  const fs::path llama3 = default_data_dir() / "tokenizers" / "llama3";
  if (!fs::exists(llama3 / "tokenizer.json")) {
    GAINCELL_SKIP_UNLESS_CI("data/tokenizers/llama3 not found (run scripts/setup.sh)");
  }
  TempDir dir;
  std::string text;
  for (int i = 0; i < 40; ++i) {
    text += "Document " + std::to_string(i) +
            ": \xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82, "
            "the quick brown fox jumps over the lazy dog.\n";
  }
  write_file_atomic(dir.path() / "a.txt", text);
  const fs::path data = dir.path() / "data", model = dir.path() / "model";
  const auto prep =
      run_cli(dir, "prepare --tokenizer " + shell_quote((llama3 / "tokenizer.json").string()) +
                       " --text " + shell_quote((dir.path() / "a.txt").string()) + " --out " +
                       shell_quote(data.string()) + " --val-fraction 0.2");
  ASSERT_EQ(prep.exit_code, 0) << prep.err;
  const auto meta = nlohmann::json::parse(read_text_file(data / "meta.json"));
  EXPECT_EQ(meta.at("dtype"), "uint32");
  EXPECT_EQ(read_text_file(data / "tokenizer.json"), read_text_file(llama3 / "tokenizer.json"));
  EXPECT_TRUE(fs::exists(data / "tokenizer_config.json"));

  const std::string train = "train --config llama-tiny --data " + shell_quote(data.string()) +
                            " --steps 2 --batch-size 2 --seq-len 16 --eval-iters 1 --out ";
  const auto r = run_cli(dir, train + shell_quote(model.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto config = nlohmann::json::parse(read_text_file(model / "config.json"));
  EXPECT_EQ(config.at("model_type"), "llama");
  EXPECT_EQ(config.at("vocab_size"), 128256) << "the vocabulary comes from the tokenizer";
  EXPECT_EQ(Tokenizer::name_for_model(model, "gpt2-bpe"), meta.at("tokenizer"));
  // The trained model scores text through its own tokenizer.json.
  const auto ppl = run_cli(dir, "perplexity --json --model " + shell_quote(model.string()) +
                                    " --text " + shell_quote((dir.path() / "a.txt").string()));
  ASSERT_EQ(ppl.exit_code, 0) << ppl.err;
  EXPECT_GT(nlohmann::json::parse(ppl.out).at("tokens").get<int>(), 100);

  // Without the tokenizer file the directory cannot make a new model: a clear error.
  fs::remove(data / "tokenizer.json");
  const auto missing = run_cli(dir, train + shell_quote((dir.path() / "m2").string()));
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("tokenizer.json"), std::string::npos) << missing.err;
  EXPECT_FALSE(fs::exists(dir.path() / "m2" / "config.json"));
}

}  // namespace
}  // namespace gaincell
