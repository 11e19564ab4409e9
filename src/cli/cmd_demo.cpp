// gaincell demo: the main job, the paper in miniature. Tokenizes Debian's fortunes (installed by
// scripts/setup.sh), trains (or reuses) a small softmax GPT-2, runs the paper's recipe (linear
// stage A, adaptation B, nonlinear fine-tuning C), and prints a table of validation perplexities
// and samples with the gain-cell attention cost against GPUs. Outputs in --out (tokens/, model/,
// pipeline/, report.md, loss_curves.svg, adaptation.svg, summary.json). --softmax-only stops
// after the softmax model (the first version of the demo).
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "cli/command.h"
#include "cli/model_options.h"
#include "cli/tokenizer_options.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/demo.h"
#include "gaincell/tools/paper_demo.h"

namespace gaincell::cli {
namespace {

struct DemoCliOptions {
  PaperDemoOptions paper;
  bool quick = false;
  bool softmax_only = false;
  bool no_reset = false;
  ModelCliOptions model;
  bool json = false;
};

void run_demo_command(DemoCliOptions& o) {
  DemoOptions& demo = o.paper.demo;
  if (!o.model.attention.empty()) demo.attention = o.model.attention;
  if (o.model.window >= 0) demo.window = o.model.window;
  if (!o.model.hw.empty()) demo.hw = HwConfig::load(o.model.hw);
  const auto log = [](const std::string& line) { std::cerr << line << "\n"; };
  // One process per output directory (a second one gets a clear error, not mixed files).
  const DirectoryLock lock = DirectoryLock::acquire(demo.out_dir);
  if (o.softmax_only) {
    const auto summary = run_demo(demo, log);
    if (o.json) {
      std::cout << summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
      return;
    }
    std::cout << "validation perplexity: " << summary["val"]["ppl"].get<double>() << " over "
              << summary["val"]["tokens"] << " tokens\n"
              << "greedy sample: " << summary["sample"]["greedy"].get<std::string>() << "\n";
    return;
  }
  const auto s = run_paper_demo(o.paper, log);
  if (o.json) {
    std::cout << s.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  std::printf("%-42s %9s %9s   %s\n", "model", "val loss", "val ppl", "greedy sample");
  for (const auto& [label, key] : demo_model_rows(s)) {
    std::string sample = s["samples"][key].get<std::string>();
    for (char& c : sample)
      if (c == '\n' || c == '\t') c = ' ';
    if (sample.size() > 60) sample = sample.substr(0, 60) + "...";
    const double ppl = s[std::string("ppl_") + key].get<double>();
    std::printf("%-42s %9.4f %9.3f   %s\n", label, std::log(ppl), ppl, sample.c_str());
  }
  const auto& c = s["cost"];
  std::printf("\ngain-cell attention per token per head: %.2f nJ, %.0f ns (paper preset)\n",
              c["energy_per_token_per_head_j"].get<double>() * 1e9,
              c["latency_per_token_s"].get<double>() * 1e9);
  for (const auto& g : c["gpus"])
    std::printf("  vs %-12s %-8s x%-6.0f faster, x%-7.0f less energy  (%s)\n",
                g["gpu"].get<std::string>().c_str(), g["source"].get<std::string>().c_str(),
                g["speedup"].get<double>(), g["energy_reduction"].get<double>(),
                g.value("setting", std::string()).c_str());
  std::printf("\nreport: %s (%.0f s)\n", s["report"].get<std::string>().c_str(),
              s["seconds"].get<double>());
}

void setup_demo(CLI::App& app) {
  auto o = std::make_shared<DemoCliOptions>();
  DemoOptions& d = o->paper.demo;
  app.add_option("--out", d.out_dir, "output directory (tokens/, model/, summary.json)")
      ->capture_default_str();
  app.add_option("--corpus-dir", d.corpus_dir, "directory of fortune(6) files")
      ->capture_default_str();
  add_tokenizer_options(app, d.tokenizer, d.vocab_dir);
  app.add_option("--steps", d.train.steps, "training steps")->capture_default_str();
  app.add_option("--batch-size", d.train.batch_size, "sequences per step")->capture_default_str();
  app.add_option("--seq-len", d.train.seq_len, "context length (also the model's n_positions)")
      ->capture_default_str();
  app.add_option("--lr", d.train.lr, "peak learning rate")->capture_default_str();
  app.add_option("--warmup", d.train.warmup_steps, "warm-up steps")->capture_default_str();
  app.add_option("--eval-interval", d.train.eval_interval, "validate every N steps")
      ->capture_default_str();
  app.add_option("--seed", d.train.seed, "seed of initialisation and batches")
      ->capture_default_str();
  app.add_option("--n-layer", d.n_layer, "layers")->capture_default_str();
  app.add_option("--n-head", d.n_head, "heads")->capture_default_str();
  app.add_option("--n-embd", d.n_embd, "embedding width")->capture_default_str();
  app.add_option("--eval-tokens", d.eval_tokens,
                 "validation tokens for the final perplexity (0 = all)")
      ->capture_default_str();
  app.add_option("--prompt", d.prompt, "prompt of the greedy sample (default: <|endoftext|>)");
  app.add_option("--sample-tokens", d.sample_tokens, "tokens in the sample")->capture_default_str();
  app.add_flag("--json", o->json, "print the summary JSON on stdout");
  add_model_options(app, o->model, /*with_layout=*/false);
  app.add_option("--steps-a", o->paper.steps_a, "stage A (linear hardware) steps")
      ->capture_default_str();
  app.add_option("--steps-c", o->paper.steps_c, "stage C (nonlinear hardware) steps")
      ->capture_default_str();
  app.add_option("--lr-hw", o->paper.lr_hardware, "peak learning rate of stages A and C")
      ->capture_default_str();
  app.add_option("--nonlinear", o->paper.nonlinear_attention,
                 "nonlinear cell of stages B and C (gaincell-nonlinear, gaincell-x3, ...)")
      ->capture_default_str();
  app.add_flag("--no-reset", o->no_reset,
               "stage B starts from stage A's scalers (the HEAD code) instead of a = 1, b = 0 "
               "(the paper's Fig. 4c)");
  app.add_flag("--quick", o->quick,
               "a small, fast run for smoke tests (fixed sizes and steps; outputs in OUT/quick)");
  app.add_flag("--softmax-only", o->softmax_only,
               "train and report the softmax model only (no hardware stages)");
  app.callback([o] {
    if (o->quick) {
      // --quick fixes the sizes and steps (PaperDemoOptions::quick) and keeps its outputs in
      // OUT/quick, apart from the full run's cache.
      const DemoOptions given = o->paper.demo;
      o->paper = PaperDemoOptions::quick();
      o->paper.demo.out_dir = given.out_dir / "quick";
      o->paper.demo.corpus_dir = given.corpus_dir;  // where the data is stays the user's choice
      o->paper.demo.vocab_dir = given.vocab_dir;
      o->paper.demo.tokenizer = given.tokenizer;
      o->paper.demo.prompt = given.prompt;
    }
    o->paper.reset_scalers = !o->no_reset;
    run_demo_command(*o);
  });
}

CommandRegistration reg({"demo",
                         "the paper in miniature: a small GPT-2 on Debian's fortunes through the "
                         "linear stage, adaptation and nonlinear fine-tuning",
                         setup_demo});

}  // namespace
}  // namespace gaincell::cli
