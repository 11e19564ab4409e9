// gaincell pipeline: the paper's three stages in one resumable command (spec §5, §6.2).
//   gaincell pipeline --init softmax_model --data data/fortunes --out runs/p1 --steps-a 300
//   --steps-c 300
// Rerunning the same command after an interruption continues where it stopped.
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "cli/command.h"
#include "gaincell/core/comm.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/tools/pipeline/pipeline.h"

namespace gaincell::cli {
namespace {

struct PipelineCliOptions {
  PipelineOptions p;
  std::string hw_linear, hw_nonlinear;
  int64_t steps_a = 300, steps_c = 300;
  float lr_a = 3e-4f, lr_c = 3e-4f;
  int batch = 8, seq_len = 128;
  int64_t warmup = 20, eval_interval = 100;
  int64_t checkpoint_interval = 50;
  bool reset = false, json = false;
};

TrainOptions stage_options(const PipelineCliOptions& o, int64_t steps, float lr) {
  TrainOptions t;
  t.steps = steps;
  t.lr = lr;
  t.min_lr = lr / 10;
  t.warmup_steps = std::min(o.warmup, steps);
  t.batch_size = o.batch;
  t.seq_len = o.seq_len;
  t.eval_interval = o.eval_interval;
  t.checkpoint_interval = o.checkpoint_interval;
  return t;
}

void run(PipelineCliOptions& o) {
  if (!o.hw_linear.empty()) o.p.hw_linear = HwConfig::load(o.hw_linear);
  if (!o.hw_nonlinear.empty()) o.p.hw_nonlinear = HwConfig::load(o.hw_nonlinear);
  o.p.stage_a = stage_options(o, o.steps_a, o.lr_a);
  o.p.stage_c = stage_options(o, o.steps_c, o.lr_c);
  o.p.adaptation.reset = o.reset;
  // One process per output directory (a second one gets a clear error, not mixed files). Under
  // mpirun (data parallel, docs/scale-out.md) rank 0 alone locks, writes and talks.
  const bool root = world_comm().is_root();
  const DirectoryLock lock = root ? DirectoryLock::acquire(o.p.out_dir) : DirectoryLock();
  world_comm().barrier();  // the directory exists before any rank looks into it
  const nlohmann::json s = run_pipeline(o.p, [root](const std::string& line) {
    if (root) std::cerr << "pipeline: " << line << "\n";
  });
  if (!root) return;
  if (o.json) {
    std::cout << s.dump(2) << "\n";
    return;
  }
  auto row = [](const char* what, const nlohmann::json& ppl) {
    if (ppl.is_number()) std::printf("  %-34s %10.2f\n", what, ppl.get<double>());
  };
  std::printf("validation perplexity\n");
  row("softmax (init)", s["init"]["val_ppl"]);
  if (s.contains("A")) row("linear hardware (A)", s["A"]["val_ppl"]);
  if (s.contains("B")) {
    const bool reset =
        s["B"].value("adaptation_options", nlohmann::json::object()).value("reset", false);
    if (reset) row("nonlinear, stage A scalers", s["B"]["unadapted_stage_a_scalers"]["val_ppl"]);
    row(reset ? "nonlinear, scalers reset (a=1, b=0)" : "nonlinear, before adaptation",
        s["B"]["unadapted"]["val_ppl"]);
    row("nonlinear, adapted (B)", s["B"]["val_ppl"]);
  }
  if (s.contains("C")) row("nonlinear, fine-tuned (C)", s["C"]["val_ppl"]);
}

void setup(CLI::App& app) {
  auto o = std::make_shared<PipelineCliOptions>();
  app.add_option("--init", o->p.init_dir, "softmax model directory to start from")->required();
  app.add_option("--data", o->p.data_dir, "token directory (train.bin, val.bin)")->required();
  app.add_option("--out", o->p.out_dir, "run directory: A/, B/, C/, pipeline.json")->required();
  app.add_option("--steps-a", o->steps_a, "stage A optimizer steps")->capture_default_str();
  app.add_option("--steps-c", o->steps_c, "stage C optimizer steps")->capture_default_str();
  app.add_option("--lr-a", o->lr_a, "stage A peak learning rate")->capture_default_str();
  app.add_option("--lr-c", o->lr_c, "stage C peak learning rate")->capture_default_str();
  app.add_option("--batch-size", o->batch, "sequences per step")->capture_default_str();
  app.add_option("--seq-len", o->seq_len, "tokens per sequence")->capture_default_str();
  app.add_option("--warmup", o->warmup, "warm-up steps of each stage")->capture_default_str();
  app.add_option("--checkpoint-interval", o->checkpoint_interval,
                 "commit a checkpoint of stages A and C every N steps (a rerun resumes from it)")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  app.add_option("--eval-interval", o->eval_interval, "validate every N steps")
      ->capture_default_str();
  app.add_option("--eval-tokens", o->p.eval_tokens, "validation tokens per reported perplexity")
      ->capture_default_str();
  app.add_option("--nonlinear", o->p.nonlinear_attention,
                 "stage B/C attention: gaincell-nonlinear or an ablation cell (gaincell-x3, "
                 "gaincell-x5, gaincell-sigmoid, gaincell-exp)")
      ->capture_default_str();
  app.add_option("--hw-linear", o->hw_linear, "hardware for stage A (default paper-linear)");
  app.add_option("--hw-nonlinear", o->hw_nonlinear,
                 "hardware for stages B and C (default paper-nonlinear)");
  app.add_option("--adapt-batch", o->p.adapt_batch, "sequences of the fixed adaptation batch")
      ->capture_default_str();
  app.add_flag("--reset", o->reset, "adaptation starts from a = 1, b = 0");
  app.add_option("--stop-after", o->p.stop_after, "stop after stage A or B");
  app.add_flag("--json", o->json, "print the summary as JSON");
  app.callback([o] { run(*o); });
}

CommandRegistration reg({"pipeline",
                         "the paper's recipe: linear stage A, adaptation B, nonlinear fine-tuning "
                         "C; resumable (spec §5, §6.2)",
                         setup});

}  // namespace
}  // namespace gaincell::cli
