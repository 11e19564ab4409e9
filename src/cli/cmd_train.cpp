// gaincell train: trains a GPT-2 on token files (gaincell prepare) with AdamW, warm-up + cosine
// LR, clipping, accumulation, periodic validation and atomic checkpoints into --out.
//   gaincell train --data DIR --out DIR [--config NAME|FILE | --init MODEL_DIR] [options]
//   gaincell train --resume DIR [--steps N]        (continues bit-identically)
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/command.h"
#include "cli/model_options.h"
#include "cli/tokenizer_options.h"
#include "gaincell/core/comm.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/model/memory_estimate.h"
#include "gaincell/train/trainer.h"

namespace gaincell::cli {
namespace {

namespace fs = std::filesystem;

struct TrainCliOptions {
  std::string data_dir;
  std::string out_dir;
  std::string config = "gpt2";
  std::string init_dir;
  std::string resume_dir;
  int n_layer = 0, n_head = 0, n_embd = 0, n_positions = 0;
  TrainOptions train;
  bool json = false;
  ModelCliOptions model;
  CLI::Option* steps_option = nullptr;
  CLI::Option* seq_len_option = nullptr;
};

GPT2Config config_from_cli(const TrainCliOptions& o) {
  GPT2Config c;
  std::error_code ec;  // a symlink loop or unreadable path is reported when read, not thrown here
  if (fs::is_regular_file(o.config, ec) || fs::is_symlink(o.config, ec)) {
    try {
      c = GPT2Config::from_json(read_json_file(o.config));
    } catch (const Error& e) {
      const std::string msg = e.what();
      // Parse errors already name the file; field errors get its name here.
      throw Error(msg.find(o.config) == std::string::npos ? o.config + ": " + msg : msg);
    }
  } else {
    c = GPT2Config::named(o.config);
  }
  if (o.n_layer) c.n_layer = o.n_layer;
  if (o.n_head) c.n_head = o.n_head;
  if (o.n_embd) c.n_embd = o.n_embd;
  if (o.n_positions) c.block_size = o.n_positions;
  o.model.overrides().apply(c);
  return c;
}

std::optional<TokenDataset> open_val(const fs::path& data_dir, int32_t vocab) {
  const auto path = data_dir / "val.bin";
  if (!fs::exists(path)) {
    std::cerr << "gaincell: no " << path.string() << "; training without validation\n";
    return std::nullopt;
  }
  return TokenDataset::open(path, vocab);
}

bool token_dir_is_hf(const fs::path& data_dir) {
  return token_dir_tokenizer(data_dir).starts_with("hf:");
}

// A new model takes the tokenizer of its token directory: a byte-level corpus needs a vocabulary
// of 257, and a directory prepared with a Hugging Face tokenizer.json (which prepare copies into
// it) the vocabulary of that file, whatever the named configuration says.
void adopt_token_dir_tokenizer(const fs::path& data_dir, GPT2Config& config) {
  const std::string name = token_dir_tokenizer(data_dir);
  if (name == Tokenizer::kBytes && config.tokenizer != Tokenizer::kBytes) {
    config.tokenizer = Tokenizer::kBytes;
    config.vocab_size = Tokenizer::bytes().vocab_size();
    std::cerr << "gaincell: byte-level token directory: vocabulary of " << config.vocab_size
              << " (256 bytes and <|endoftext|>)\n";
    return;
  }
  if (!name.starts_with("hf:")) return;
  const fs::path file = data_dir / "tokenizer.json";
  std::error_code ec;
  require(fs::is_regular_file(file, ec),
          "token directory '" + data_dir.string() + "' was made with a Hugging Face tokenizer (" +
              name +
              ") but holds no tokenizer.json (prepare copies it there; rerun prepare, "
              "or start from --init MODEL_DIR)");
  const Tokenizer tok = Tokenizer::load_hf(file);
  require(name == tok.name(), "'" + file.string() + "' is not the tokenizer the token files were " +
                                  "made with (meta.json says " + name + ", the file is " +
                                  tok.name() + ")");
  if (config.vocab_size != tok.vocab_size()) {
    std::cerr << "gaincell: vocabulary of " << tok.vocab_size() << " from " << file.string()
              << " (the configuration said " << config.vocab_size << ")\n";
  }
  config.vocab_size = tok.vocab_size();
  config.validate();
}

// The checks of the command line, before anything is locked, loaded or allocated: the options,
// the hardware file of --hw, the configuration a new model is made from (its file parsed, the
// memory of its training estimated) and, on --resume, the saved training state.
void check_train_command(const TrainCliOptions& o) {
  if (!o.resume_dir.empty()) {
    std::error_code ec;
    require(fs::is_directory(o.resume_dir, ec),
            "--resume '" + o.resume_dir + "' is not a training output directory");
    require(o.init_dir.empty(), "--resume and --init exclude each other");
    require(o.model.attention.empty() && o.model.window < 0 && o.model.hw.empty(),
            "--attention, --window and --hw cannot change on --resume (the checkpoint fixes them)");
    Trainer::saved_options(o.resume_dir).validate();
    return;
  }
  require(!o.data_dir.empty(), "--data DIR is required (train.bin, val.bin from gaincell prepare)");
  require(!o.out_dir.empty(), "--out DIR is required");
  o.train.validate();
  if (!o.init_dir.empty()) {
    o.model.overrides();  // reads and validates the --hw file
    return;
  }
  const GPT2Config config = config_from_cli(o);
  config.validate();
  // The check of GPT2Model's constructor (the same message), then the trainer's.
  char params[32];
  std::snprintf(params, sizeof params, "%.3g", estimated_param_count(config));
  require_memory(estimated_model_bytes(config, false), "the model",
                 std::string(params) + " float32 parameters");
  // As run_train clamps it: without --seq-len, at most the model's positions.
  const int seq_len = o.seq_len_option->count() == 0 ? std::min(o.train.seq_len, config.block_size)
                                                     : o.train.seq_len;
  require_memory(estimated_training_bytes(config, o.train.batch_size, seq_len), "training",
                 "weights, gradients, AdamW moments and the activations of a " +
                     std::to_string(o.train.batch_size) + " x " + std::to_string(seq_len) +
                     " batch");
}

void run_train(TrainCliOptions o) {
  check_train_command(o);
  std::unique_ptr<GPT2Model> model;
  TrainOptions options = o.train;
  const bool resuming = !o.resume_dir.empty();
  // Under mpirun (data parallel, docs/scale-out.md) rank 0 alone locks, writes and talks; the
  // other ranks read the same inputs.
  const bool root = world_comm().is_root();
  // One process per output directory: a second one gets a clear error, not interleaved files.
  DirectoryLock lock;
  auto acquire = [root](const std::string& dir, const std::string& what) {
    return root ? DirectoryLock::acquire(dir, what) : DirectoryLock();
  };
  if (resuming) {
    lock = acquire(o.resume_dir, "--resume");
    options = Trainer::saved_options(o.resume_dir);
    if (o.steps_option->count() > 0) options.steps = o.train.steps;
    options.out_dir = o.resume_dir;
    if (!o.data_dir.empty()) options.data_dir = o.data_dir;
    LoadModelOptions load;
    load.log = [root](const std::string& line) {
      if (root) std::cerr << "gaincell: " << line << "\n";
    };
    // The same checkpoint directory as trainer.resume() below (weights and optimizer state).
    model = load_model(Trainer::checkpoint_to_resume(o.resume_dir), load);
  } else {
    lock = acquire(o.out_dir, "--out");
    options.out_dir = o.out_dir;
    options.data_dir = o.data_dir;
    if (!o.init_dir.empty()) {
      LoadModelOptions load;
      load.overrides = o.model.overrides();
      load.layout = o.model.layout();
      load.allow_nonfinite = o.model.allow_nonfinite;
      load.log = [root](const std::string& line) {
        if (root) std::cerr << "gaincell: " << line << "\n";
      };
      model = load_model(o.init_dir, load);
    } else {
      GPT2Config config = config_from_cli(o);
      adopt_token_dir_tokenizer(options.data_dir, config);
      model = std::make_unique<GPT2Model>(config);
      model->init_random(options.seed);
    }
  }
  // Defaults work together: without --seq-len a model with fewer positions than the default
  // sequence length (e.g. --config tiny: 32) trains on its whole context.
  if (!resuming && o.seq_len_option->count() == 0 && options.seq_len > model->config().block_size) {
    options.seq_len = model->config().block_size;
    std::cerr << "gaincell: --seq-len " << options.seq_len << " (the model's n_positions)\n";
  }
  require(!options.data_dir.empty(),
          "the checkpoint does not record its data directory; give --data");
  // The directory the model comes from decides its tokenizer (its tokenizer.json, if any); a new
  // model takes the one its token directory carries.
  const std::filesystem::path source_dir = resuming              ? fs::path(o.resume_dir)
                                           : !o.init_dir.empty() ? fs::path(o.init_dir)
                                           : token_dir_is_hf(options.data_dir) ? options.data_dir
                                                                               : fs::path();
  check_token_dir_tokenizer(options.data_dir,
                            Tokenizer::name_for_model(source_dir, model->config().tokenizer));
  if (!resuming && root) copy_tokenizer_files(source_dir, options.out_dir);
  const int32_t vocab = model->config().vocab_size;
  const TokenDataset train = TokenDataset::open(options.data_dir / "train.bin", vocab);
  const std::optional<TokenDataset> val = open_val(options.data_dir, vocab);
  Trainer trainer(*model, train, val ? &*val : nullptr, options);
  if (resuming) {
    trainer.resume(o.resume_dir);
    if (root)
      std::cerr << "gaincell: resumed " << o.resume_dir << " at step " << trainer.step() << "\n";
  }
  if (world_comm().size() > 1 && root) {
    std::cerr << "gaincell: data parallel over " << world_comm().size() << " ranks, "
              << options.batch_size / world_comm().size() << " of " << options.batch_size
              << " sequences per rank\n";
  }
  if (root)
    std::cerr << "gaincell: training " << model->num_params() << " parameters ("
              << model->config().n_layer << " layers, " << model->config().n_embd
              << " dims, attention " << model->config().attention << ") on " << train.size()
              << " tokens for " << options.steps << " steps\n";
  const TrainResult r = trainer.run();
  if (o.json && root) {
    nlohmann::json j = r.to_json();
    j["out"] = options.out_dir.string();
    j["params"] = model->num_params();
    if (r.final_val_loss) j["final_val_ppl"] = std::exp(*r.final_val_loss);
    std::cout << j.dump() << "\n";
  }
}

void setup_train(CLI::App& app) {
  auto o = std::make_shared<TrainCliOptions>();
  TrainOptions& t = o->train;
  app.add_option("--data", o->data_dir,
                 "token directory (train.bin, val.bin) from gaincell prepare");
  app.add_option("--out", o->out_dir,
                 "checkpoint directory (a model directory plus training state)");
  app.add_option(
         "--config", o->config,
         "new model: gpt2, gpt2-medium, gpt2-large, gpt2-xl, tiny, llama-tiny, smollm-135m, or a "
         "config.json file (the vocabulary follows the token directory's tokenizer)")
      ->capture_default_str();
  app.add_option("--n-layer", o->n_layer, "override the config's n_layer");
  app.add_option("--n-head", o->n_head, "override the config's n_head");
  app.add_option("--n-embd", o->n_embd, "override the config's n_embd");
  app.add_option("--n-positions", o->n_positions, "override the config's n_positions");
  app.add_option("--init", o->init_dir, "start from this model directory instead of --config");
  app.add_option("--resume", o->resume_dir,
                 "continue the checkpoint in DIR bit-identically (options from its state; "
                 "--steps may extend the run)");
  o->steps_option =
      app.add_option("--steps", t.steps, "optimizer steps in total")->capture_default_str();
  app.add_option("--batch-size", t.batch_size, "sequences per micro-batch (B)")
      ->capture_default_str();
  o->seq_len_option =
      app.add_option("--seq-len", t.seq_len,
                     "tokens per sequence (T); the model's n_positions when that is smaller")
          ->capture_default_str();
  app.add_option("--grad-accum", t.grad_accum, "micro-batches per step")->capture_default_str();
  app.add_option("--lr", t.lr, "peak learning rate")->capture_default_str();
  app.add_option("--min-lr", t.min_lr, "learning rate at the end of the cosine")
      ->capture_default_str();
  app.add_option("--warmup", t.warmup_steps, "linear warm-up steps")->capture_default_str();
  app.add_option("--lr-decay-steps", t.lr_decay_steps, "end of the cosine (0 = --steps)")
      ->capture_default_str();
  app.add_option("--weight-decay", t.weight_decay, "AdamW weight decay (rank >= 2 tensors only)")
      ->capture_default_str();
  app.add_option("--grad-clip", t.grad_clip, "global gradient-norm clip (0 = off)")
      ->capture_default_str();
  app.add_option("--eval-interval", t.eval_interval, "validate every N steps (0 = at the end only)")
      ->capture_default_str();
  app.add_option("--eval-iters", t.eval_iters, "validation batches")->capture_default_str();
  app.add_option("--checkpoint-interval", t.checkpoint_interval,
                 "checkpoint every N steps (0 = at the end only)")
      ->capture_default_str();
  app.add_option("--log-interval", t.log_interval, "progress line every N steps (0 = quiet)")
      ->capture_default_str();
  app.add_option("--seed", t.seed, "seed of the initialisation and the batch order")
      ->capture_default_str();
  app.add_flag("--json", o->json, "print a JSON summary on stdout at the end");
  add_model_options(app, o->model);
  set_validation(app, [o] { check_train_command(*o); });
  app.callback([o] { run_train(*o); });
}

CommandRegistration reg({"train", "train or fine-tune a GPT-2 on token files (AdamW, resumable)",
                         setup_train});

}  // namespace
}  // namespace gaincell::cli
