// Thread-runtime settings that libgomp and OpenBLAS read when they are loaded, before main: the
// CLI and the benchmarks restart themselves once with them set, so that a benchmark measures what
// users run. A user's own settings are always kept.
//
// - OMP_WAIT_POLICY=passive. gaincell runs two thread pools: OpenMP's (elementwise passes,
//   attention heads) and OpenBLAS's (pthread build, the GEMMs). With libgomp's default policy an
//   OpenMP thread spins for up to 300,000 pause instructions after each parallel region (several
//   milliseconds on recent Intel cores, where a pause takes ~140 cycles), and on a machine with
//   as many threads as cores it takes a core from OpenBLAS's thread in the GEMM that follows.
//   Measured: bench/README.md, "Issue 14: fusion"; the demo model trained at 7.2k tokens/s with
//   the default policy and 17.4k with the passive one.
// - OPENBLAS_CORETYPE, only where OpenBLAS fell back to its SSE3 kernels on a CPU it does not
//   know (blas::better_openblas_core): 4x faster sgemm on such machines.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <string>

#include "gaincell/core/blas.h"

namespace gaincell {

// Set (to "1") in the restarted process when gaincell, not the user, chose OMP_WAIT_POLICY.
inline constexpr const char* kDefaultedWaitPolicyVariable = "GAINCELL_DEFAULT_OMP_WAIT_POLICY";

// Sets the defaults above where the user has not, and restarts the process once with them
// (execv of /proc/self/exe with the same arguments); returns without restarting when nothing
// changed, or when the restart fails (the process then runs as it is).
inline void apply_runtime_defaults_and_restart(char** argv) {
  bool restart = false;
  if (std::getenv("OMP_WAIT_POLICY") == nullptr) {
    setenv("OMP_WAIT_POLICY", "passive", 1);
    setenv(kDefaultedWaitPolicyVariable, "1", 1);
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

// The wait policy in effect and who chose it, for benchmark records: "passive (gaincell
// default)", "active (user)", ... or "libgomp default" when neither did (a failed restart).
inline std::string omp_wait_policy_description() {
  const char* policy = std::getenv("OMP_WAIT_POLICY");
  if (policy == nullptr) return "libgomp default";
  const bool defaulted = std::getenv(kDefaultedWaitPolicyVariable) != nullptr;
  return std::string(policy) + (defaulted ? " (gaincell default)" : " (user)");
}

}  // namespace gaincell
