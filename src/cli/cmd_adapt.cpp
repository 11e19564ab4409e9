// gaincell adapt: stage B of the paper's recipe (spec §5.2). Loads a linear intermediate model
// (stage A, with recorded target statistics), switches it to the nonlinear gain-cell attention,
// matches every range scaler's output statistics to its targets on one fixed training batch, and
// writes the adapted model directory.
//   gaincell adapt --model stageA --data data/fortunes --out stageB [--reset] [--json]
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/tokenizer_options.h"
#include "gaincell/core/comm.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/tools/adapt/adaptation.h"
#include "gaincell/tools/pipeline/pipeline.h"

namespace gaincell::cli {
namespace {

struct AdaptCliOptions {
  std::string model_dir;
  std::string data_dir;
  std::string out_dir;
  std::string attention = "gaincell-nonlinear";
  std::string hw;
  int batch = 8;
  int seq_len = 0;  // 0: the model's block size
  uint64_t seed = 1337;
  bool reset = false;
  bool json = false;
  int64_t eval_tokens = 0;  // validation tokens scored before and after; 0 = none
  AdaptationOptions adaptation;
};

void print_pass(const AdaptationPass& p) {
  std::fprintf(stderr,
               "adapt: pass %3d  alpha %.3f  loss %.4f  converged %lld/%lld  worst |std err| %.3g"
               "  worst |mean err| %.3g\n",
               p.pass, p.alpha, p.loss, static_cast<long long>(p.converged),
               static_cast<long long>(p.statistics), p.worst_std_error, p.worst_mean_error);
}

void run_adapt(const AdaptCliOptions& o) {
  require(o.batch >= 1, "--batch must be >= 1");
  // Under mpirun (docs/scale-out.md) every rank forwards its rows of the fixed batch; rank 0
  // alone talks and writes.
  const bool root = world_comm().is_root();
  LoadModelOptions load;
  load.overrides.attention = o.attention;
  if (!o.hw.empty()) load.overrides.hw = HwConfig::load(o.hw);
  load.log = [root](const std::string& line) {
    if (root) std::cerr << "adapt: " << line << "\n";
  };
  std::unique_ptr<GPT2Model> model = load_model(o.model_dir, load);
  const int T = o.seq_len > 0 ? o.seq_len : model->config().block_size;
  require(T <= model->config().block_size, "--seq-len exceeds the model's block size");

  check_token_dir_tokenizer(o.data_dir,
                            Tokenizer::name_for_model(o.model_dir, model->config().tokenizer));
  const TokenDataset train = TokenDataset::open(std::filesystem::path(o.data_dir) / "train.bin",
                                                model->config().vocab_size);
  require(o.eval_tokens >= 0, "--eval-tokens must be >= 0");
  std::optional<TokenDataset> val;
  if (o.eval_tokens > 0) {
    val = TokenDataset::open(std::filesystem::path(o.data_dir) / "val.bin",
                             model->config().vocab_size);
  }
  // Validation perplexity of the model as the algorithm finds it and leaves it.
  auto validate = [&](const char* when) {
    const StageEvaluation e = evaluate_on_tokens(*model, *val, T, o.eval_tokens);
    if (root)
      std::fprintf(stderr, "adapt: validation %s: loss %.4f, ppl %.3f over %lld tokens\n", when,
                   e.loss, e.ppl, static_cast<long long>(e.tokens));
    return nlohmann::json{{"val_loss", e.loss}, {"val_ppl", e.ppl}, {"tokens", e.tokens}};
  };
  BatchSampler sampler(train, o.batch, T, o.seed);
  std::vector<int32_t> x(static_cast<size_t>(o.batch) * T), y(x.size());
  sampler.next(x.data(), y.data());  // the one fixed batch of the algorithm

  AdaptationOptions options = o.adaptation;
  options.reset = o.reset;
  if (o.reset) reset_adapted_scalers(*model);
  const nlohmann::json val_before = val ? validate("before") : nlohmann::json();
  const AdaptationResult r =
      adapt_scalers(*model, x, y, o.batch, T, options, [root](const AdaptationPass& p) {
        if (root) print_pass(p);
      });
  const nlohmann::json val_after = val ? validate("after") : nlohmann::json();
  if (!root) return;
  std::fprintf(stderr, "adapt: %s after %zu passes; loss %.4f -> %.4f (ppl %.2f -> %.2f)\n",
               r.converged ? "converged" : "stopped at the pass limit", r.passes.size(),
               r.initial_loss, r.final_loss, std::exp(r.initial_loss), std::exp(r.final_loss));
  for (const std::string& line : r.unconverged)
    std::fprintf(stderr, "adapt: off target: %s\n", line.c_str());
  // One process per output directory (a second one gets a clear error, not mixed files); taken
  // only now, so that a refused input leaves no directory behind.
  const DirectoryLock lock = DirectoryLock::acquire(o.out_dir);
  save_model(*model, o.out_dir);
  copy_tokenizer_files(o.model_dir, o.out_dir);

  nlohmann::json summary = r.to_json();
  summary["model"] = o.model_dir;
  summary["out"] = o.out_dir;
  summary["attention"] = model->config().attention;
  summary["batch"] = {{"B", o.batch}, {"T", T}, {"seed", o.seed}};
  summary["options"] = options.to_json();
  summary["gaincell_hw"] = model->config().hw.to_json();
  if (val) summary["validation"] = {{"before", val_before}, {"after", val_after}};
  write_file_atomic(std::filesystem::path(o.out_dir) / "adaptation.json", summary.dump(2) + "\n");
  if (o.json) {
    std::cout << summary.dump(2) << "\n";
  } else {
    std::cout << "adapted model written to " << o.out_dir << " ("
              << (r.converged ? "converged" : "pass limit reached") << ", loss " << r.initial_loss
              << " -> " << r.final_loss << ")\n";
  }
}

void setup_adapt(CLI::App& app) {
  auto o = std::make_shared<AdaptCliOptions>();
  app.add_option("--model", o->model_dir, "linear intermediate model directory (stage A)")
      ->required();
  app.add_option("--data", o->data_dir, "token directory (train.bin) from `gaincell prepare`")
      ->required();
  app.add_option("--out", o->out_dir, "output model directory (also gets adaptation.json)")
      ->required();
  app.add_option("--attention", o->attention,
                 "nonlinear variant to adapt: gaincell-nonlinear, gaincell-x3, gaincell-x5, "
                 "gaincell-sigmoid, gaincell-exp")
      ->capture_default_str();
  app.add_option("--hw", o->hw, "hardware preset or JSON file (default: the model's own)");
  app.add_option("--batch", o->batch, "sequences in the fixed batch")->capture_default_str();
  app.add_option("--seq-len", o->seq_len, "tokens per sequence (default: block size)");
  app.add_option("--seed", o->seed, "seed choosing the fixed batch")->capture_default_str();
  app.add_flag("--reset", o->reset,
               "start from a = 1, b = 0 for every scaler (spec §5.2 variants)");
  app.add_option("--threshold", o->adaptation.matching.threshold, "convergence threshold")
      ->capture_default_str();
  app.add_option("--max-passes", o->adaptation.matching.max_passes, "forward passes at most")
      ->capture_default_str();
  app.add_option("--alpha-max", o->adaptation.matching.alpha_max)->capture_default_str();
  app.add_option("--alpha-min", o->adaptation.matching.alpha_min)->capture_default_str();
  app.add_option("--alpha-steps", o->adaptation.matching.schedule_steps,
                 "passes over which alpha falls linearly from alpha-max to alpha-min")
      ->capture_default_str();
  app.add_flag("--json", o->json, "print the whole trajectory as JSON");
  app.add_option("--eval-tokens", o->eval_tokens,
                 "score the first N tokens of val.bin before and after the adaptation (0 = no)")
      ->capture_default_str();
  app.callback([o] { run_adapt(*o); });
}

CommandRegistration reg({"adapt",
                         "stage B: adapt the range scalers of a nonlinear gain-cell model to the "
                         "statistics of its linear intermediate model (spec §5.2)",
                         setup_adapt});

}  // namespace
}  // namespace gaincell::cli
