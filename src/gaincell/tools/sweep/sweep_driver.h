// `gaincell sweep`: runs every point of a sweep file into an output directory (docs/sweeps.md).
//   OUT/sweep.json     the resolved sweep (file, model, base directory): what --resume checks
//   OUT/results.jsonl  one line per finished point, appended as each point finishes (the file is
//                      rewritten through a temporary file and a rename, so a kill leaves either
//                      the old or the new file, never a torn line)
//   OUT/summary.csv, OUT/pareto.json, OUT/*.svg, OUT/report.md   written when every point is done
// Points run in this process (jobs = 1) or in `jobs` worker processes (`gaincell sweep --worker
// OUT`), each of which loads the model once and runs the point indices it reads on stdin.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/tools/sweep/sweep_runner.h"
#include "gaincell/tools/sweep/sweep_spec.h"

namespace gaincell::sweep {

struct SweepRunOptions {
  std::filesystem::path out_dir;
  int jobs = 1;
  bool resume = false;
  std::filesystem::path executable;  // the gaincell binary the workers run (jobs > 1)
  // Testing aid: stop with SIGKILL right after this many points were appended (-1: never), to
  // test --resume on a process killed between points.
  int kill_after = -1;
  LogFn log;
};

struct SweepOutcome {
  int points = 0;
  int ran = 0;                               // points run by this invocation
  int resumed = 0;                           // points found finished in results.jsonl
  int failed = 0;                            // points recorded as failed (all invocations)
  std::vector<std::filesystem::path> files;  // outputs written
};

SweepOutcome run_sweep(const SweepSpec& spec, const std::filesystem::path& model_dir,
                       const SweepRunOptions& options);

// The worker loop: opens OUT/sweep.json, then for every point index read from `in` (one per
// line) writes the point's result as one JSON line to `out`, until end of input.
void run_worker(const std::filesystem::path& out_dir, int in_fd, int out_fd);

// Result lines of OUT/results.jsonl (a line that does not parse is an error naming it).
std::vector<nlohmann::json> read_results(const std::filesystem::path& file);
// Appends one line by rewriting the file atomically (temporary file + rename).
void append_result(const std::filesystem::path& file, const nlohmann::json& line);

// summary.csv, pareto.json, the plots and report.md from finished results (sorted by point).
std::vector<std::filesystem::path> write_sweep_outputs(const SweepSpec& spec,
                                                       const std::vector<MetricInfo>& metrics,
                                                       std::vector<nlohmann::json> results,
                                                       const std::filesystem::path& out_dir);

// Indices of the non-dominated points of (objective, cost): lower cost is better, the objective
// is better when higher (higher_is_better) or lower. Points with equal pairs are all kept.
std::vector<size_t> pareto_front(const std::vector<double>& objective,
                                 const std::vector<double>& cost, bool higher_is_better);

}  // namespace gaincell::sweep
