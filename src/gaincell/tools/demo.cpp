#include "gaincell/tools/demo.h"

#include <chrono>
#include <cmath>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/train/perplexity.h"

namespace gaincell {

namespace fs = std::filesystem;
using json = nlohmann::json;

TrainOptions DemoOptions::default_train_options() {
  TrainOptions t;
  t.steps = 1000;
  t.batch_size = 16;
  t.seq_len = 128;
  t.grad_accum = 1;
  t.lr = 2e-3f;
  t.min_lr = 2e-4f;
  t.warmup_steps = 50;
  t.weight_decay = 0.1f;
  t.grad_clip = 1.0f;
  t.eval_interval = 500;
  t.eval_iters = 8;
  t.log_interval = 10;
  t.seed = 1337;
  return t;
}

namespace {

// The corpus files with their sizes: the token cache is reused only for the same corpus.
json corpus_fingerprint(const std::vector<fs::path>& files, double val_fraction,
                        const Tokenizer& tok) {
  json list = json::array();
  for (const auto& f : files) list.push_back({{"path", f.string()}, {"bytes", fs::file_size(f)}});
  return {{"files", list},
          {"val_fraction", val_fraction},
          {"split_fortunes", true},
          {"tokenizer", tok.name()}};
}

// Returns true when the cached tokens were reused.
bool prepare_tokens(const Tokenizer& tok, const DemoOptions& o, const fs::path& dir,
                    const std::function<void(const std::string&)>& log) {
  const std::vector<fs::path> files = default_corpus_files(o.corpus_dir);
  const json fingerprint = corpus_fingerprint(files, o.val_fraction, tok);
  const fs::path marker = dir / "corpus.json";
  if (fs::exists(marker) && fs::exists(dir / "train.bin") && fs::exists(dir / "val.bin")) {
    json cached;
    try {
      cached = read_json_file(marker);
    } catch (const Error&) {
      // A corrupt marker means a stale cache: the tokens are made again below.
    }
    if (cached == fingerprint) {
      log("demo: using the cached tokens in " + dir.string());
      return true;
    }
  }
  log("demo: tokenizing " + std::to_string(files.size()) + " fortune files from " +
      o.corpus_dir.string());
  PrepareOptions p;
  p.val_fraction = o.val_fraction;
  p.split_fortunes = true;
  p.progress = log;
  prepare_token_files(tok, files, dir, p);
  write_file_atomic(marker, fingerprint.dump(1) + "\n");  // last: marks a complete cache
  return false;
}

}  // namespace

std::string greedy_sample(GPT2Model& model, const Tokenizer& tok, const std::string& prompt,
                          int max_tokens) {
  std::vector<int32_t> ids = tok.encode(prompt);
  if (ids.empty()) ids.push_back(tok.end_of_text());
  const int block = model.config().block_size;
  if (static_cast<int>(ids.size()) > block / 2) ids.erase(ids.begin(), ids.end() - block / 2);
  auto session = model.start_decoding();
  session->reserve(static_cast<int64_t>(ids.size()) + max_tokens);
  const float* logits = session->prefill(ids.data(), static_cast<int>(ids.size()));
  std::vector<int32_t> out;
  for (int i = 0; i < max_tokens && session->position() < block; ++i) {
    int32_t best = 0;
    for (int32_t v = 1; v < model.config().vocab_size; ++v) {
      if (logits[v] > logits[best]) best = v;
    }
    if (best == tok.end_of_text()) break;
    out.push_back(best);
    if (session->position() >= block) break;
    logits = session->step(best);
  }
  return tok.decode(out);
}

// True when dir holds a checkpoint of this configuration trained with these options.
bool checkpoint_matches(const fs::path& dir, const GPT2Config& config,
                        const TrainOptions& options) {
  if (!fs::exists(dir / "training_state.json")) return false;
  try {
    return Trainer::saved_options(dir).to_json() == options.to_json() &&
           read_model_config(dir).to_json() == config.to_json();
  } catch (const Error&) {
    return false;  // an unreadable or foreign checkpoint is retrained, not reused
  }
}

json run_demo(const DemoOptions& o, const std::function<void(const std::string&)>& log_fn) {
  const auto log = [&](const std::string& line) {
    if (log_fn) log_fn(line);
  };
  const auto start = std::chrono::steady_clock::now();
  require(o.sample_tokens >= 0, "demo: sample tokens must be >= 0");
  require(o.eval_tokens >= 0, "demo: eval tokens must be >= 0");
  default_corpus_files(o.corpus_dir);  // a missing corpus is reported before the slow steps
  const Tokenizer tok = Tokenizer::by_name(o.tokenizer, o.vocab_dir);
  fs::create_directories(o.out_dir);
  const fs::path token_dir = o.out_dir / "tokens";
  const bool tokens_reused = prepare_tokens(tok, o, token_dir, log);

  GPT2Config config = GPT2Config::named("gpt2");
  config.n_layer = o.n_layer;
  config.n_head = o.n_head;
  config.n_embd = o.n_embd;
  config.block_size = o.train.seq_len;
  config.vocab_size = tok.vocab_size();
  config.tokenizer = tok.name();
  config.attention = o.attention;
  config.window = o.window;
  if (o.hw) config.hw = *o.hw;
  config.validate();

  const TokenDataset train = TokenDataset::open(token_dir / "train.bin", config.vocab_size);
  const TokenDataset val = TokenDataset::open(token_dir / "val.bin", config.vocab_size);
  TrainOptions topt = o.train;
  topt.out_dir = o.out_dir / "model";
  topt.data_dir = token_dir;
  // A finished (or interrupted) run with the same configuration and options is reused: resuming
  // it trains only the missing steps, none when it is complete.
  const bool cached = tokens_reused && checkpoint_matches(topt.out_dir, config, topt);
  std::unique_ptr<GPT2Model> model_ptr =
      cached ? load_model(topt.out_dir) : std::make_unique<GPT2Model>(config);
  GPT2Model& model = *model_ptr;
  if (!cached) model.init_random(o.train.seed);
  Trainer trainer(model, train, &val, topt);
  if (cached) {
    trainer.resume(topt.out_dir);
    log("demo: reusing the softmax model in " + topt.out_dir.string() + " (step " +
        std::to_string(trainer.step()) + " of " + std::to_string(topt.steps) + ")");
  }
  log("demo: training a " + std::to_string(model.num_params()) + "-parameter GPT-2 (" +
      std::to_string(config.n_layer) + " layers, " + std::to_string(config.n_head) + " heads, " +
      std::to_string(config.n_embd) + " dims, context " + std::to_string(config.block_size) +
      ", attention " + config.attention + ") on " + std::to_string(train.size()) + " tokens for " +
      std::to_string(topt.steps) + " steps");
  const TrainResult result = trainer.run();

  // Validation perplexity over (a prefix of) the whole validation split, rolling windows.
  const size_t n_val = o.eval_tokens > 0 ? std::min<size_t>(val.size(), o.eval_tokens) : val.size();
  std::vector<int32_t> val_tokens = val.slice(0, n_val);
  log("demo: validation perplexity over " + std::to_string(n_val) + " tokens");
  const PerplexityResult ppl =
      rolling_perplexity(model, val_tokens, config.block_size, config.block_size);

  const std::string sample = greedy_sample(model, tok, o.prompt, o.sample_tokens);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  json summary;
  summary["model"] = {
      {"dir", topt.out_dir.string()}, {"params", model.num_params()}, {"config", config.to_json()}};
  summary["data"] = {{"dir", token_dir.string()},
                     {"corpus", o.corpus_dir.string()},
                     {"tokenizer", tok.name()},
                     {"train_tokens", train.size()},
                     {"val_tokens", val.size()}};
  summary["train"] = result.to_json();
  summary["train"]["tokens_per_s"] = result.seconds > 0 ? result.tokens / result.seconds : 0.0;
  summary["train"]["options"] = topt.to_json();
  summary["train"]["cached"] = cached;
  summary["train"]["loss_history"] = trainer.loss_history();
  summary["val"] = {{"metric", "token-level perplexity, rolling windows of the model's context"},
                    {"tokens", ppl.tokens},
                    {"mean_nll", ppl.mean_nll},
                    {"ppl", ppl.ppl}};
  summary["sample"] = {{"prompt", o.prompt}, {"greedy", sample}};
  summary["seconds"] = seconds;
  write_file_atomic(o.out_dir / "summary.json",
                    summary.dump(2, ' ', false, json::error_handler_t::replace) + "\n");
  return summary;
}

}  // namespace gaincell
