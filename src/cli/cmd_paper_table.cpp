// gaincell paper-table: the paper's Table 1 in one command (tools/eval/paper_table.h): the recipe
// (stages A, B, C, with the paper's settings as defaults, spec §6.2) and the seven-task evaluation
// of the public, linear, adapted and fine-tuned models, printed in the paper's layout beside the
// published figures and written as OUT/table.md and OUT/table.json. Rerunning resumes.
//   gaincell paper-table --init GPT2_DIR --train-data TOKENS --eval-data DIR --out DIR
#include <iostream>
#include <memory>
#include <string>

#include "cli/command.h"
#include "gaincell/core/error.h"
#include "gaincell/tools/eval/paper_table.h"
#include "gaincell/tools/eval/text_rules.h"

namespace gaincell::cli {
namespace {

struct PaperTableCliOptions {
  eval::PaperTableOptions t;
  std::string tasks;
  std::string hw_linear, hw_nonlinear;
  // Spec §6.1/§6.2: 1024-token sequences, 1920 sequences per step (16 x 120 for A, 60 x 32 for C),
  // warm-up 2000 to 6e-4, cosine to 6e-5 at 600000 (so ~constant), 3000 steps (A), 13000 (C).
  int64_t steps_a = 3000, steps_c = 13000;
  int batch = 16, grad_accum_a = 120, grad_accum_c = 120, seq_len = 1024;
  float lr = 6e-4f, min_lr = 6e-5f;
  int64_t warmup = 2000, lr_decay = 600000, eval_interval = 100, checkpoint_interval = 100;
  bool json = false;
};

TrainOptions stage(const PaperTableCliOptions& o, int64_t steps, int grad_accum) {
  TrainOptions t;
  t.steps = steps;
  t.batch_size = o.batch;
  t.grad_accum = grad_accum;
  t.seq_len = o.seq_len;
  t.lr = o.lr;
  t.min_lr = o.min_lr;
  t.warmup_steps = std::min(o.warmup, steps);
  t.lr_decay_steps = std::max(o.lr_decay, steps);
  t.eval_interval = o.eval_interval;
  t.checkpoint_interval = o.checkpoint_interval;
  return t;
}

void run(PaperTableCliOptions& o) {
  if (!o.tasks.empty()) {
    o.t.tasks.clear();
    for (const std::string& t : eval::python_split(o.tasks, ","))
      o.t.tasks.push_back(eval::python_strip(t));
  }
  if (!o.hw_linear.empty()) o.t.pipeline.hw_linear = HwConfig::load(o.hw_linear);
  if (!o.hw_nonlinear.empty()) o.t.pipeline.hw_nonlinear = HwConfig::load(o.hw_nonlinear);
  o.t.pipeline.stage_a = stage(o, o.steps_a, o.grad_accum_a);
  o.t.pipeline.stage_c = stage(o, o.steps_c, o.grad_accum_c);
  const nlohmann::json table = eval::run_paper_table(
      o.t, [](const std::string& line) { std::cerr << "paper-table: " << line << "\n"; });
  if (o.json) {
    std::cout << table.dump(2) << "\n";
  } else {
    std::cout << eval::paper_table_markdown(table);
  }
}

void setup(CLI::App& app) {
  auto o = std::make_shared<PaperTableCliOptions>();
  app.footer(
      "Defaults are the paper's settings (spec §6.2; hours to days of compute on GPT-2 124M); "
      "every step count is an option. Stages live in OUT/pipeline/{A,B,C}, evaluations in "
      "OUT/eval/<model>.json; a rerun skips what is done. The table's accuracies follow "
      "lm-evaluation-harness (docs/evaluation.md).");
  app.add_option("--init", o->t.pipeline.init_dir, "public GPT-2 model directory")->required();
  app.add_option("--train-data", o->t.pipeline.data_dir, "token directory (train.bin, val.bin)")
      ->required();
  app.add_option("--eval-data", o->t.eval_data_dir, "directory with the tasks' data files")
      ->required();
  app.add_option("--out", o->t.out_dir, "run directory")->required();
  app.add_option("--tasks", o->tasks, "comma-separated tasks (default: the seven of the paper)");
  app.add_option("--limit", o->t.limit, "documents per task (default: all)");
  app.add_option("--eval-batch-size", o->t.batch_size, "requests per forward in evaluation")
      ->capture_default_str();
  app.add_option("--bootstrap-iters", o->t.bootstrap_iters, "bootstrap resamples (lm-eval: 100000)")
      ->capture_default_str();
  app.add_option("--steps-a", o->steps_a, "stage A optimizer steps")->capture_default_str();
  app.add_option("--steps-c", o->steps_c, "stage C optimizer steps")->capture_default_str();
  app.add_option("--batch-size", o->batch, "sequences per micro-batch")->capture_default_str();
  app.add_option("--grad-accum-a", o->grad_accum_a, "micro-batches per stage A step")
      ->capture_default_str();
  app.add_option("--grad-accum-c", o->grad_accum_c, "micro-batches per stage C step")
      ->capture_default_str();
  app.add_option("--seq-len", o->seq_len, "tokens per sequence")->capture_default_str();
  app.add_option("--lr", o->lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", o->min_lr, "final learning rate of the cosine")->capture_default_str();
  app.add_option("--warmup", o->warmup, "warm-up steps of each stage")->capture_default_str();
  app.add_option("--lr-decay-steps", o->lr_decay, "cosine length")->capture_default_str();
  app.add_option("--eval-interval", o->eval_interval, "validate every N steps")
      ->capture_default_str();
  app.add_option("--checkpoint-interval", o->checkpoint_interval, "checkpoint every N steps")
      ->capture_default_str();
  app.add_option("--eval-tokens", o->t.pipeline.eval_tokens,
                 "validation tokens per reported token perplexity")
      ->capture_default_str();
  app.add_option("--adapt-batch", o->t.pipeline.adapt_batch, "sequences of the adaptation batch")
      ->capture_default_str();
  app.add_option("--hw-linear", o->hw_linear, "hardware for stage A (default paper-linear)");
  app.add_option("--hw-nonlinear", o->hw_nonlinear,
                 "hardware for stages B, C (default paper-nonlinear)");
  app.add_option("--vocab", o->t.vocab_dir, "directory with encoder.json and vocab.bpe");
  app.add_flag("--json", o->json, "print the table as JSON");
  app.callback([o] { run(*o); });
}

CommandRegistration reg({"paper-table",
                         "the paper's Table 1: recipe (A, B, C) + seven-task evaluation of the "
                         "four models, beside the published figures (resumable)",
                         setup});

}  // namespace
}  // namespace gaincell::cli
