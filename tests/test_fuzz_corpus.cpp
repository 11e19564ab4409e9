// Replays every committed fuzz input (fuzz/corpus/<target>/*: seeds, inputs libFuzzer kept for
// new coverage, and the crashes found, renamed crash-*) through the same target functions the
// fuzzers run (fuzz/targets.cpp). Each must be accepted or rejected with gaincell::Error: no other
// exception, no crash, no sanitizer report (the ASan/UBSan pass of scripts/test.sh runs it too).
#include <gtest/gtest.h>

#include <filesystem>
#include <set>

#include "../fuzz/targets.h"
#include "cli/app.h"
#include "gaincell/core/file_io.h"
#include "test_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;

const fs::path kCorpus = "fuzz/corpus";  // tests run in the source directory

class FuzzCorpus : public ::testing::TestWithParam<std::string> {};

TEST_P(FuzzCorpus, EveryCommittedInputIsHandled) {
  const fuzz::Target* target = fuzz::find_target(GetParam());
  ASSERT_NE(target, nullptr);
  const fs::path dir = kCorpus / GetParam();
  ASSERT_TRUE(fs::is_directory(dir)) << dir << ": every target has a committed seed corpus";
  int inputs = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (!entry.is_regular_file()) continue;
    const std::vector<uint8_t> bytes = read_binary_file(entry.path());
    SCOPED_TRACE(entry.path().string());
    try {
      target->run(bytes.data(), bytes.size());
    } catch (const std::exception& e) {
      ADD_FAILURE() << entry.path() << " escaped with " << typeid(e).name() << ": " << e.what();
    }
    ++inputs;
  }
  EXPECT_GT(inputs, 0) << dir;
}

INSTANTIATE_TEST_SUITE_P(Targets, FuzzCorpus, ::testing::ValuesIn([] {
                           std::vector<std::string> names;
                           for (const auto& t : fuzz::targets()) names.push_back(t.name);
                           return names;
                         }()),
                         [](const auto& info) { return info.param; });

TEST(FuzzCorpusLayout, EveryCorpusDirectoryHasATarget) {
  std::set<std::string> names;
  for (const auto& t : fuzz::targets()) names.insert(t.name);
  for (const auto& entry : fs::directory_iterator(kCorpus))
    EXPECT_TRUE(names.count(entry.path().filename().string())) << entry.path();
}

// The cli_args target's entry point parses like the executable (its usage errors are usage errors
// here) and runs nothing: `hw show` would print, `train` would fail on the missing files.
TEST(FuzzCorpusCli, ParseWithoutRunningAcceptsAndRejectsLikeTheCli) {
  using Args = std::vector<std::string>;
  testing::internal::CaptureStdout();
  EXPECT_EQ(cli::parse_without_running(Args{"hw", "show", "--hw", "paper-linear"}), 0);
  EXPECT_EQ(cli::parse_without_running(Args{"--threads", "2", "train", "--data", "/nonexistent",
                                            "--out", "/nonexistent/o", "--steps", "3"}),
            0);
  EXPECT_EQ(cli::parse_without_running(Args{"--version"}), 0);
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "");
  EXPECT_EQ(cli::parse_without_running(Args{"pipeline", "--data", "d", "--out", "o"}), 2);
  EXPECT_EQ(cli::parse_without_running(Args{"--threads", "0", "hw", "show"}), 2);
  EXPECT_EQ(cli::parse_without_running(Args{"--threads", "5000", "hw", "show"}), 2);
  EXPECT_EQ(cli::parse_without_running(Args{"train", "--steps", "x"}), 2);
  EXPECT_EQ(cli::parse_without_running(Args{"frobnicate"}), 2);
  EXPECT_EQ(cli::parse_without_running(Args{}), 2);
}

// The cli_args target also runs the parsed command's own checks (cli/app.h
// validate_without_running): option values and the files the options name are checked, and 1 is
// the answer when they fail, as the executable's exit status; nothing runs, prints or is written.
TEST(FuzzCorpusCli, ValidateWithoutRunningChecksOptionsAndTheFilesTheyName) {
  using Args = std::vector<std::string>;
  test_util::TempDir dir;
  const std::string out = (dir.path() / "out").string();
  const std::string train[] = {"train", "--data", (dir.path() / "none").string(), "--out", out};
  auto train_with = [&](Args more) {
    Args args(std::begin(train), std::end(train));
    args.insert(args.end(), more.begin(), more.end());
    return cli::validate_without_running(args);
  };
  testing::internal::CaptureStdout();
  EXPECT_EQ(train_with({"--config", "tests/fixtures/gpt2_tiny/config.json", "--steps", "2"}), 0);
  EXPECT_EQ(train_with({"--config", "tiny", "--attention", "gaincell-linear", "--hw",
                        "fuzz/corpus/hw_config/seed-linear"}),
            0);
  EXPECT_EQ(cli::validate_without_running(Args{"hw", "show", "--hw", "paper-linear"}), 0);
  EXPECT_EQ(cli::validate_without_running(
                Args{"sweep", "--list", "--spec", "examples/sweeps/paper-bits.json"}),
            0);
  EXPECT_EQ(cli::validate_without_running(Args{"cost", "--model", "tests/fixtures/gpt2_tiny"}), 0);
  EXPECT_EQ(testing::internal::GetCapturedStdout(), "");
  EXPECT_FALSE(fs::exists(out)) << "the checks created the output directory";

  // Option values a parse alone accepts.
  EXPECT_EQ(train_with({"--config", "tiny", "--lr", "-1"}), 1);
  EXPECT_EQ(train_with({"--config", "tiny", "--eval-iters", "0"}), 1);
  EXPECT_EQ(cli::validate_without_running(Args{"train", "--out", out}), 1);  // no --data
  EXPECT_EQ(cli::validate_without_running(Args{"cost", "--serving", "--batches", "8,0"}), 1);
  EXPECT_EQ(
      cli::validate_without_running(Args{"sweep", "--spec", "examples/sweeps/paper-bits.json"}),
      1);  // neither --list nor --model
  // Files the options name: read and validated.
  EXPECT_EQ(train_with({"--config", "fuzz/corpus/model_config/seed-negative"}), 1);
  EXPECT_EQ(train_with({"--config", "fuzz/corpus/model_config/seed-huge"}), 1);  // memory estimate
  EXPECT_EQ(train_with({"--config", "tiny", "--hw", "fuzz/corpus/hw_config/seed-levels_overflow"}),
            1);
  EXPECT_EQ(cli::validate_without_running(Args{"train", "--resume", "tests/fixtures/gpt2_tiny"}),
            1);  // a model directory without a training state
  EXPECT_EQ(cli::validate_without_running(Args{"hw", "show", "--hw", "/nonexistent/hw.json"}), 1);
  EXPECT_EQ(cli::validate_without_running(
                Args{"sweep", "--list", "--spec", "fuzz/corpus/sweep_file/seed-huge_grid"}),
            1);
  EXPECT_EQ(cli::validate_without_running(Args{"cost", "--hw", "fuzz/corpus/json/seed-deep"}), 1);
  // Usage errors stay usage errors; --help and --version check nothing.
  EXPECT_EQ(cli::validate_without_running(Args{"cost", "--window", "abc"}), 2);
  testing::internal::CaptureStdout();
  EXPECT_EQ(cli::validate_without_running(Args{"--version"}), 0);
  testing::internal::GetCapturedStdout();
  EXPECT_FALSE(fs::exists(out));
}

}  // namespace
}  // namespace gaincell
