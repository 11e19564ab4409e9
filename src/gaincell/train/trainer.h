// The training loop (issue 2 item 6): AdamW (optimizer.h), warm-up + cosine LR, global-norm
// clipping, gradient accumulation, periodic validation, atomic checkpoints and a bit-identical
// resume. Deterministic given the model's initial weights and options.seed.
//
// A checkpoint directory is a model directory (checkpoint.h: config.json, model.safetensors) plus
//   training_state.bin   "GCTRAIN1", u32 version 1, u32 0, i64 step, u64 n, f32 m[n], f32 v[n]
//   training_state.json  step, the options, the batch sampler state, loss history, and the size +
//                        64-bit FNV-1a hash of model.safetensors and training_state.bin.
// Checkpoints are committed whole into an output directory (checkpoint_store.h: a new directory,
// then an atomic switch of `latest`); a resume also checks the recorded sizes and hashes and
// refuses a checkpoint whose files do not belong together (damaged or edited afterwards).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gaincell/core/comm.h"
#include "gaincell/model/data.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/train/data_parallel.h"
#include "gaincell/train/optimizer.h"

namespace gaincell {

struct TrainOptions {
  int64_t steps = 1000;  // optimizer steps in total (a resumed run continues to this step)
  int batch_size = 4;    // B, sequences per micro-batch
  int seq_len = 64;      // T
  int grad_accum = 1;    // micro-batches per step
  float lr = 6e-4f;
  float min_lr = 6e-5f;
  int64_t warmup_steps = 100;
  int64_t lr_decay_steps = 0;  // cosine ends here; 0 = steps
  float weight_decay = 0.1f;
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float grad_clip = 1.0f;           // 0 = no clipping
  int64_t eval_interval = 100;      // validate every N steps and at the end; 0 = only at the end
  int eval_iters = 10;              // validation batches (the same fixed batches every time)
  int64_t checkpoint_interval = 0;  // checkpoint every N steps; always at the end if out_dir set
  uint64_t seed = 1337;             // batch order
  std::filesystem::path out_dir;    // checkpoint directory; empty = none
  int64_t log_interval = 10;        // progress line on stderr every N steps; 0 = quiet
  std::filesystem::path data_dir;   // recorded in the state for `train --resume` (informational)

  void validate() const;  // throws gaincell::Error naming the option
  nlohmann::json to_json() const;
  static TrainOptions from_json(const nlohmann::json& j);
  LrSchedule schedule() const;
};

struct StepInfo {
  int64_t step = 0;  // 1-based number of the step just done
  float loss = 0;    // mean training loss of the step's micro-batches
  float lr = 0;
  double grad_norm = 0;  // before clipping
  double tokens_per_s = 0;
  double elapsed_s = 0;  // since run() started
  std::optional<float> val_loss;
};

struct TrainResult {
  int64_t steps = 0;  // final step
  float final_loss = 0;
  std::optional<float> final_val_loss;
  double seconds = 0;
  int64_t tokens = 0;  // trained this run
  nlohmann::json to_json() const;
};

class Trainer {
 public:
  using StepCallback = std::function<void(Trainer&, const StepInfo&)>;

  // `train` and `val` must outlive the trainer; `val` may be null (no validation).
  // Data parallel over `comm` (default: world_comm(), one process unless started by mpirun;
  // data_parallel.h): options.batch_size is the global batch, each rank computes its rows, and
  // the trainer checks that every rank runs the same binary and options, then starts every rank
  // from rank 0's weights. Rank 0 alone logs and writes checkpoints. Every rank must call the
  // same methods in the same order (they are collective).
  Trainer(GPT2Model& model, const TokenDataset& train, const TokenDataset* val,
          const TrainOptions& options, Comm& comm = world_comm());

  // Restores optimizer, step, batch order and loss history from a checkpoint directory whose
  // weights the model already holds (load_model(dir)). Throws when the directory is incomplete,
  // inconsistent, or was written for another model size.
  // `out_dir` is a training output directory (checkpoint_store.h); the checkpoint read is
  // checkpoint_to_resume(out_dir).
  void resume(const std::filesystem::path& out_dir);
  // The options stored in the checkpoint a resume would read (for `train --resume DIR`).
  static TrainOptions saved_options(const std::filesystem::path& out_dir);
  // The complete checkpoint of the highest step in `out_dir`; an Error naming the problem when
  // there is none.
  static std::filesystem::path checkpoint_to_resume(const std::filesystem::path& out_dir);

  // Called after every step (later work plugs statistics and adaptation in here).
  void add_step_callback(StepCallback callback) { callbacks_.push_back(std::move(callback)); }

  // Replaces the training batch sampler (e.g. one fixed batch, as the reference test and the
  // adaptation use). fn fills inputs and targets, [B][T] each. Its state is not checkpointed, so
  // a resume is bit-identical only with the default sampler.
  using BatchSource = std::function<void(int32_t* inputs, int32_t* targets)>;
  void set_batch_source(BatchSource source) { batch_source_ = std::move(source); }

  // Trains from the current step to options.steps.
  TrainResult run();
  // One optimizer step (all micro-batches); returns its info (no validation, no checkpoint).
  StepInfo train_step();
  // Mean validation loss over options.eval_iters fixed batches.
  float evaluate();
  // Commits a checkpoint of the current step to the output directory `dir` (checkpoint_store.h:
  // a new directory, then `latest` switches; the previous checkpoint stays until then).
  void save_checkpoint(const std::filesystem::path& dir) const;

  int64_t step() const { return optimizer_.step_count(); }
  const std::vector<float>& loss_history() const { return losses_; }  // one per step, from 1
  const std::vector<std::pair<int64_t, float>>& val_history() const { return val_losses_; }
  GPT2Model& model() { return model_; }
  const TrainOptions& options() const { return options_; }
  const Comm& comm() const { return comm_; }
  // Communication time of the gradient all-reduce so far (data_parallel.h).
  const GradientAllReduce& gradient_sync() const { return grad_sync_; }

 private:
  void log_progress(const StepInfo& info, double eta_s) const;
  void write_checkpoint(const std::filesystem::path& dir) const;  // the files, into `dir`

  GPT2Model& model_;
  const TokenDataset& train_;
  const TokenDataset* val_;
  TrainOptions options_;
  Comm& comm_;
  BatchShard shard_;                    // this rank's rows of every global batch
  std::filesystem::path resumed_from_;  // the checkpoint resume() read (empty: a fresh run)
  GradientAllReduce grad_sync_;
  std::vector<ParamSegment> segments_;
  AdamW optimizer_;
  BatchSampler sampler_;
  std::vector<int32_t> inputs_, targets_;
  std::vector<float> losses_;
  std::vector<std::pair<int64_t, float>> val_losses_;
  std::vector<StepCallback> callbacks_;
  BatchSource batch_source_;
};

// 64-bit FNV-1a over 8-byte little-endian words (tail bytes zero-padded), plus the length.
uint64_t file_hash(const std::filesystem::path& path);

}  // namespace gaincell
