// The CLI's exit status convention (issue 11 defect 5; README "Commands", --help): 0 success,
// 1 failure, 2 usage error. CLI11's own codes (105-109) must not leak out.
#include <gtest/gtest.h>

#include <string>

#include "test_cli_util.h"
#include "test_util.h"

using gaincell::cli_test::run_cli;
using gaincell::test_util::TempDir;

TEST(CliExitCodes, UsageErrorsExitWithTwo) {
  TempDir dir;
  for (const std::string args : {
           "",                       // no subcommand
           "no-such-command",        // unknown subcommand
           "cost --no-such-option",  // unknown option
           "cost --window",          // option without its value
           "cost --window abc",      // value of the wrong type
           "prepare --text a.txt",   // required --out missing
       }) {
    const auto r = run_cli(dir.path(), args);
    EXPECT_EQ(r.exit_code, 2) << "gaincell " << args << "\n" << r.err;
  }
}

TEST(CliExitCodes, AnUnknownCommandIsNamedWithTheCommandsThereAre) {
  TempDir dir;
  for (const std::string args : {"trian --steps 3", "--threads 1 no-such-command"}) {
    const auto r = run_cli(dir.path(), args);
    EXPECT_EQ(r.exit_code, 2) << r.err;
    const std::string word = args.substr(0, 5) == "trian" ? "'trian'" : "'no-such-command'";
    EXPECT_NE(r.err.find("unknown command " + word), std::string::npos) << r.err;
    EXPECT_NE(r.err.find("train"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("A subcommand is required"), std::string::npos) << r.err;
  }
  // With no word at all, CLI11's message stays: there is nothing to name.
  const auto none = run_cli(dir.path(), "");
  EXPECT_NE(none.err.find("subcommand is required"), std::string::npos) << none.err;
}

TEST(CliExitCodes, FailuresExitWithOneAndSayWhy) {
  TempDir dir;
  const auto r = run_cli(dir.path(), "cost --hw /nonexistent/hw.json");
  EXPECT_EQ(r.exit_code, 1) << r.err;
  EXPECT_NE(r.err.find("gaincell: error:"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("/nonexistent/hw.json"), std::string::npos) << r.err;
}

TEST(CliExitCodes, HelpAndVersionSucceedAndHelpDocumentsTheCodes) {
  TempDir dir;
  const auto help = run_cli(dir.path(), "--help");
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_NE(help.out.find("Exit status: 0 success, 1 failure"), std::string::npos) << help.out;
  EXPECT_NE(help.out.find("2 usage error"), std::string::npos) << help.out;
  EXPECT_EQ(run_cli(dir.path(), "cost --help").exit_code, 0);
  EXPECT_EQ(run_cli(dir.path(), "--version").exit_code, 0);
}
