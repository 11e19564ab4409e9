// gaincell: GPT-2 on simulated gain-cell analog attention hardware. Entry point; the subcommands
// are in cmd_*.cpp.
#include <omp.h>
#include <unistd.h>

#include <clocale>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <new>

#include "cli/app.h"
#include "cli/command.h"
#include "gaincell/core/blas.h"
#include "gaincell/core/error.h"

namespace gaincell::cli {

namespace {

// Two settings that libgomp and OpenBLAS read when they are loaded, before main, so the process
// restarts itself once with them set (a user's own settings are kept):
// - OMP_WAIT_POLICY=passive: OpenMP threads that spin after a parallel region take the cores from
//   OpenBLAS's own threads (two thread pools on two cores): training the demo model ran at 7.2k
//   tokens/s with the default policy and 17.4k with the passive one.
// - OPENBLAS_CORETYPE, only where OpenBLAS fell back to its SSE3 kernels on a CPU it does not know
//   (blas::better_openblas_core): 4x faster sgemm on such machines.
void configure_and_restart(char** argv) {
  bool restart = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    restart = true;
  }
  if (std::getenv("OPENBLAS_CORETYPE") == nullptr) {
    if (const char* core = blas::better_openblas_core()) {
      setenv("OPENBLAS_CORETYPE", core, 1);
      restart = true;
    }
  }
  if (restart) execv("/proc/self/exe", argv);  // returns only on failure: run as we are
}

}  // namespace

// Exit status (README "Commands", --help): 0 success; 1 a failure (bad input, missing file, an
// error in the run; the message is on stderr); 2 a usage error (the command line does not parse:
// unknown option, missing required option or value, a value of the wrong type).
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

}  // namespace gaincell::cli

int main(int argc, char** argv) {
  gaincell::cli::configure_and_restart(argv);
  std::setlocale(LC_ALL, "C");
  CLI::App app{
      "gaincell: large language models on simulated gain-cell in-memory attention hardware",
      "gaincell"};
  gaincell::cli::build_app(app, [](int n) {
    omp_set_num_threads(n);              // gaincell's OpenMP loops
    gaincell::blas::set_num_threads(n);  // OpenBLAS's own pool (GEMM, GEMV)
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive here too, with CLI11's success code; CLI11's own error codes
    // (105-109 and so on) become the one usage code.
    const int code = app.exit(e);
    return code == 0 ? 0 : gaincell::cli::kExitUsage;
  } catch (const gaincell::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gaincell: error: %s\n", e.what());
    return gaincell::cli::kExitFailure;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the user gave (a symlink loop, no permission, a full disk): its message names it.
    std::fflush(stdout);
    std::fprintf(stderr, "gaincell: error: %s\n", e.what());
    return gaincell::cli::kExitFailure;
  } catch (const std::bad_alloc&) {
    std::fflush(stdout);
    std::fprintf(stderr,
                 "gaincell: error: out of memory (the model, batch or input is too large for "
                 "this machine)\n");
    return gaincell::cli::kExitFailure;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gaincell: internal error: %s\n", e.what());
    return gaincell::cli::kExitFailure;
  }
  return 0;
}
