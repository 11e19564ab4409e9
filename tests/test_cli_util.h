// Running the built `gaincell` binary (GAINCELL_CLI_PATH) from the CLI tests.
#pragma once

#include <cblas.h>
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
// The CLI runs with the OpenBLAS kernels of this test process (OPENBLAS_CORETYPE), so results it
// prints can be compared exactly with the same computation done here: by itself the CLI may ask
// for other kernels on a CPU OpenBLAS does not know (blas::better_openblas_core).
inline CliResult run_cli(const std::filesystem::path& dir, const std::string& args) {
  const auto out = dir / "cli.out", err = dir / "cli.err";
  const char* own_core = std::getenv("OPENBLAS_CORETYPE");
  const std::string core = own_core != nullptr ? own_core : openblas_get_corename();
  const std::string cmd = "OMP_NUM_THREADS=1 OPENBLAS_CORETYPE=" + shell_quote(core) + " " +
                          shell_quote(GAINCELL_CLI_PATH) + " " + args + " >" +
                          shell_quote(out.string()) + " 2>" + shell_quote(err.string());
  const int status = std::system(cmd.c_str());
  return {WIFEXITED(status) ? WEXITSTATUS(status) : -1, read_text_file(out), read_text_file(err)};
}

}  // namespace gaincell::cli_test
