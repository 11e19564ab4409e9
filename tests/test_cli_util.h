// Running the built `gaincell` binary (GAINCELL_CLI_PATH) from the CLI tests.
#pragma once

#include <sys/wait.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "gaincell/core/file_io.h"

namespace gaincell::cli_test {

struct CliResult {
  int exit_code;
  std::string out, err;
};

inline std::string shell_quote(const std::string& s) {
  std::string q = "'";
  for (const char c : s) q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

// Runs `gaincell ARGS` (single-threaded) with stdout and stderr captured in files of `dir`.
inline CliResult run_cli(const std::filesystem::path& dir, const std::string& args) {
  const auto out = dir / "cli.out", err = dir / "cli.err";
  const std::string cmd = "OMP_NUM_THREADS=1 " + shell_quote(GAINCELL_CLI_PATH) + " " + args +
                          " >" + shell_quote(out.string()) + " 2>" + shell_quote(err.string());
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text_file(out), read_text_file(err)};
}

}  // namespace gaincell::cli_test
