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
#include <string>

#include "cli/app.h"
#include "cli/command.h"
#include "gaincell/core/blas.h"
#include "gaincell/core/comm.h"
#include "gaincell/core/error.h"

namespace gaincell::cli {

// Subcommands that run data-parallel under mpirun (docs/scale-out.md); the others refuse to
// start with more than one rank (every rank would do the same work and write the same files).
bool runs_data_parallel(const std::string& command) {
  return command == "train" || command == "adapt" || command == "pipeline";
}

// The error line; under mpirun it names the rank, and the job ends on every rank (a rank that
// failed alone would leave the others waiting in a collective).
[[noreturn]] void fail(const std::string& message, int code) {
  std::fflush(stdout);
  gaincell::Comm& comm = gaincell::world_comm();
  if (comm.size() > 1) {
    std::fprintf(stderr, "gaincell (rank %d of %d): %s\n", comm.rank(), comm.size(),
                 message.c_str());
    std::fflush(stderr);
    gaincell::abort_world_comm(code);
  }
  std::fprintf(stderr, "gaincell: %s\n", message.c_str());
  std::exit(code);
}

// Exit status (README "Commands", --help): 0 success; 1 a failure (bad input, missing file, an
// error in the run; the message is on stderr); 2 a usage error (the command line does not parse:
// unknown option, missing required option or value, a value of the wrong type).
constexpr int kExitFailure = 1;
constexpr int kExitUsage = 2;

}  // namespace gaincell::cli

int main(int argc, char** argv) {
  gaincell::blas::configure_threads_and_restart(argv);
  std::setlocale(LC_ALL, "C");
  try {
    gaincell::init_world_comm(&argc, &argv);
  } catch (const gaincell::Error& e) {
    std::fprintf(stderr, "gaincell: error: %s\n", e.what());
    return gaincell::cli::kExitFailure;
  }
  CLI::App app{
      "gaincell: large language models on simulated gain-cell in-memory attention hardware",
      "gaincell"};
  gaincell::cli::build_app(app, [](int n) {
    omp_set_num_threads(n);              // gaincell's OpenMP loops
    gaincell::blas::set_num_threads(n);  // OpenBLAS's own pool (GEMM, GEMV)
  });
  for (CLI::App* sub : app.get_subcommands([](CLI::App*) { return true; })) {
    if (!sub->get_name().empty() && !gaincell::cli::runs_data_parallel(sub->get_name())) {
      sub->preparse_callback([name = sub->get_name()](std::size_t) {
        const int ranks = gaincell::world_comm().size();
        gaincell::require(
            ranks == 1,
            "'" + name + "' does not run data-parallel, but mpirun " + "started " +
                std::to_string(ranks) +
                " ranks: run it without mpirun (data-parallel: train, adapt, pipeline)");
      });
    }
  }
  using gaincell::cli::fail;
  using gaincell::cli::kExitFailure;
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help and --version arrive here too, with CLI11's success code; CLI11's own error codes
    // (105-109 and so on) become the one usage code.
    int code = 2;
    const std::string unknown =
        e.get_exit_code() == 0 ? "" : gaincell::cli::unknown_command_message(app);
    if (!unknown.empty()) {
      std::fprintf(stderr, "gaincell: error: %s\n", unknown.c_str());
    } else {
      code = app.exit(e);
    }
    if (gaincell::world_comm().size() > 1) gaincell::abort_world_comm(code == 0 ? 0 : 2);
    return code == 0 ? 0 : gaincell::cli::kExitUsage;
  } catch (const gaincell::Error& e) {
    fail(std::string("error: ") + e.what(), kExitFailure);
  } catch (const std::filesystem::filesystem_error& e) {
    // A path the user gave (a symlink loop, no permission, a full disk): its message names it.
    fail(std::string("error: ") + e.what(), kExitFailure);
  } catch (const std::bad_alloc&) {
    fail("error: out of memory (the model, batch or input is too large for this machine)",
         kExitFailure);
  } catch (const std::exception& e) {
    fail(std::string("internal error: ") + e.what(), kExitFailure);
  }
  gaincell::finalize_world_comm();
  return 0;
}
