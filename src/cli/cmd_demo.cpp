// gaincell demo: the first version of the main job. Tokenizes Debian's fortunes (installed by
// scripts/setup.sh), trains a small GPT-2 for a few minutes on 2 cores, reports the validation
// perplexity and a greedy sample. Outputs in --out (tokens/, model/, summary.json).
#include <iostream>
#include <memory>

#include "cli/command.h"
#include "cli/model_options.h"
#include "gaincell/core/error.h"
#include "gaincell/tools/demo.h"

namespace gaincell::cli {
namespace {

struct DemoCliOptions {
  DemoOptions demo;
  ModelCliOptions model;
  bool json = false;
};

void run_demo_command(DemoCliOptions o) {
  if (!o.model.attention.empty()) o.demo.attention = o.model.attention;
  if (o.model.window >= 0) o.demo.window = o.model.window;
  if (!o.model.hw.empty()) o.demo.hw = HwConfig::load(o.model.hw);
  const auto summary = run_demo(o.demo, [](const std::string& line) { std::cerr << line << "\n"; });
  if (o.json) {
    std::cout << summary.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
    return;
  }
  std::cout << "validation perplexity: " << summary["val"]["ppl"].get<double>() << " over "
            << summary["val"]["tokens"] << " tokens (mean NLL "
            << summary["val"]["mean_nll"].get<double>() << " nats)\n"
            << "greedy sample: " << summary["sample"]["prompt"].get<std::string>()
            << summary["sample"]["greedy"].get<std::string>() << "\n"
            << "model: " << summary["model"]["dir"].get<std::string>() << "  ("
            << summary["seconds"].get<double>() << " s)\n";
}

void setup_demo(CLI::App& app) {
  auto o = std::make_shared<DemoCliOptions>();
  DemoOptions& d = o->demo;
  app.add_option("--out", d.out_dir, "output directory (tokens/, model/, summary.json)")
      ->capture_default_str();
  app.add_option("--corpus-dir", d.corpus_dir, "directory of fortune(6) files")
      ->capture_default_str();
  app.add_option("--vocab", d.vocab_dir,
                 "directory with encoder.json and vocab.bpe (default: $GAINCELL_DATA/vocab)");
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
  app.callback([o] { run_demo_command(*o); });
}

CommandRegistration reg({"demo",
                         "train a small GPT-2 on Debian's fortunes, report perplexity and a sample",
                         setup_demo});

}  // namespace
}  // namespace gaincell::cli
