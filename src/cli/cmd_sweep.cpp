// gaincell sweep: design-space exploration over hardware configurations (docs/sweeps.md).
//   gaincell sweep --model DIR --spec SWEEP.json --out DIR [--jobs N] [--resume] [--weights W]
//   gaincell sweep --model DIR --spec SWEEP.json --point K     (one point as one JSON line)
//   gaincell sweep --model DIR --spec SWEEP.json --list        (the points, one JSON line each)
#include <unistd.h>

#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "gaincell/core/error.h"
#include "gaincell/tools/sweep/sweep_driver.h"

namespace gaincell::cli {
namespace {

struct SweepOptions {
  std::string model_dir;
  std::string spec_file;
  std::string out_dir;
  int jobs = 1;
  bool resume = false;
  std::string tokens, train_tokens;
  int64_t limit = -1;
  int seeds = 0;
  std::string weights;  // empty: the sweep file's (default f32)
  int point = -1;
  bool list = false;
  std::string worker_dir;
  int kill_after = -1;
  bool quiet = false;
};

sweep::SweepSpec load_spec(const SweepOptions& o) {
  require(!o.spec_file.empty(), "sweep: --spec is required");
  sweep::SweepSpec spec = sweep::SweepSpec::load(o.spec_file);
  if (!o.tokens.empty()) spec.evaluation.tokens = std::filesystem::absolute(o.tokens);
  if (!o.train_tokens.empty()) spec.prepare.tokens = std::filesystem::absolute(o.train_tokens);
  if (o.limit >= 0) spec.evaluation.limit = o.limit;
  if (o.seeds > 0) spec.seeds = o.seeds;
  if (!o.weights.empty()) spec.weights = o.weights;
  require(o.tokens.empty() || spec.evaluation.type == "perplexity",
          "sweep: --tokens is for the perplexity evaluation; this sweep file evaluates tasks");
  return spec;
}

// What a sweep needs before it starts: a sweep file that parses (every point's hardware
// validated), and the options of the chosen mode.
sweep::SweepSpec check_sweep_command(const SweepOptions& o) {
  sweep::SweepSpec spec = load_spec(o);
  if (o.list) return spec;
  require(!o.model_dir.empty(), "sweep: --model is required");
  if (o.point < 0) require(!o.out_dir.empty(), "sweep: --out is required (or --point K / --list)");
  return spec;
}

void run_sweep_command(const SweepOptions& o) {
  if (!o.worker_dir.empty()) {
    sweep::run_worker(o.worker_dir, STDIN_FILENO, STDOUT_FILENO);
    return;
  }
  const sweep::SweepSpec spec = check_sweep_command(o);
  if (o.list) {
    for (const auto& p : spec.points())
      std::cout << nlohmann::json{{"point", p.index}, {"label", p.label()}, {"axes", p.axes_json()}}
                       .dump()
                << "\n";
    return;
  }
  sweep::LogFn log;
  if (!o.quiet) log = [](const std::string& line) { std::cerr << "gaincell: " << line << "\n"; };
  if (o.point >= 0) {
    auto ctx = sweep::open_sweep(spec, o.model_dir, log);
    std::cout << sweep::run_point(*ctx, o.point).dump() << "\n";
    return;
  }
  sweep::SweepRunOptions run;
  run.out_dir = o.out_dir;
  run.jobs = o.jobs;
  run.resume = o.resume;
  run.executable = "/proc/self/exe";
  run.kill_after = o.kill_after;
  run.log = log;
  const sweep::SweepOutcome r = sweep::run_sweep(spec, o.model_dir, run);
  std::cout << nlohmann::json{{"points", r.points},
                              {"ran", r.ran},
                              {"resumed", r.resumed},
                              {"failed", r.failed},
                              {"out", o.out_dir}}
                   .dump()
            << "\n";
}

void setup_sweep(CLI::App& app) {
  auto o = std::make_shared<SweepOptions>();
  app.footer(
      "The sweep file names a base hardware configuration, the axes (any hardware field by its "
      "JSON path, as a grid or a list of points), the evaluation, the per-point preparation "
      "(adaptation, fine-tune), the Monte-Carlo seeds and the cost preset (docs/sweeps.md). "
      "OUT receives results.jsonl (one line per point, appended as each finishes), summary.csv, "
      "pareto.json, SVG plots and report.md. A failed point is recorded and the others run.");
  app.add_option("--model", o->model_dir, "model directory (a gain-cell model, e.g. the demo's)");
  app.add_option("--spec", o->spec_file, "sweep file (JSON)");
  app.add_option("--out", o->out_dir, "output directory");
  app.add_option("--jobs", o->jobs, "worker processes running points in parallel")
      ->capture_default_str();
  app.add_flag("--resume", o->resume,
               "continue the sweep in --out: finished points are kept, the others run");
  app.add_option("--tokens", o->tokens, "evaluation token file (overrides evaluation.tokens)");
  app.add_option("--train-tokens", o->train_tokens,
                 "training token file for the adaptation/fine-tune (overrides prepare.tokens)");
  app.add_option("--limit", o->limit, "evaluation tokens (perplexity) or items per task");
  app.add_option("--seeds", o->seeds, "Monte-Carlo seeds per point (overrides seeds)");
  app.add_option("--weights", o->weights,
                 "storage of the digital layers' weights while scoring: f32, bf16 or q8 "
                 "(overrides the sweep file's \"weights\"; adaptation and fine-tune run in fp32)")
      ->check(CLI::IsMember({"f32", "bf16", "q8"}));
  app.add_option("--point", o->point,
                 "run only point K and print its result line (a plain job for a cluster "
                 "scheduler; collect the lines into OUT/results.jsonl and --resume)");
  app.add_flag("--list", o->list, "print the points of the sweep file and exit");
  app.add_flag("--quiet", o->quiet, "no progress on stderr");
  app.add_option("--worker", o->worker_dir, "internal: run as a worker of the sweep in DIR")
      ->group("");
  app.add_option("--kill-after", o->kill_after,
                 "testing: SIGKILL this process after N points were appended")
      ->group("");
  set_validation(app, [o] {
    if (o->worker_dir.empty()) check_sweep_command(*o);
  });
  app.callback([o] { run_sweep_command(*o); });
}

CommandRegistration reg({"sweep",
                         "design-space exploration: accuracy against energy, latency and area over "
                         "hardware configurations, with seed statistics and Pareto fronts",
                         setup_sweep});

}  // namespace
}  // namespace gaincell::cli
