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

}  // namespace
}  // namespace gaincell
