// The paper's recipe as one resumable command (spec §5, §6.2; issue 4):
//   A  fine-tune the softmax checkpoint with the linear gain-cell attention, recording the target
//      statistics of every range scaler (EMA 0.1 on every training forward, spec §5.1);
//   B  move the weights to the nonlinear gain-cell attention and adapt the scalers (spec §5.2);
//   C  fine-tune the adapted nonlinear model (hardware-aware training).
// Each stage's output is a standard model directory (config.json with gaincell_hw,
// model.safetensors with the scalers and targets) under out_dir/{A,B,C}; a stage is done when its
// stage.json exists. A rerun skips finished stages and resumes an interrupted training stage from
// its last checkpoint, so an interrupted pipeline ends with the same result as an uninterrupted
// one.
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/adapt/adaptation.h"
#include "gaincell/train/trainer.h"

namespace gaincell {

struct PipelineOptions {
  std::filesystem::path init_dir;  // softmax model directory
  std::filesystem::path data_dir;  // train.bin, val.bin
  std::filesystem::path out_dir;
  std::string linear_attention = "gaincell-linear";
  std::string nonlinear_attention = "gaincell-nonlinear";  // or an ablation cell (x3, x5, ...)
  std::optional<HwConfig> hw_linear;                       // default: preset paper-linear
  std::optional<HwConfig> hw_nonlinear;                    // default: preset paper-nonlinear
  TrainOptions stage_a;  // out_dir and data_dir are set by the pipeline
  TrainOptions stage_c;
  AdaptationOptions adaptation;
  int adapt_batch = 8;          // sequences of the fixed adaptation batch (T = stage_a.seq_len)
  uint64_t adapt_seed = 1337;   // which batch
  int64_t eval_tokens = 16384;  // validation tokens scored for each reported perplexity (0 = all)
  std::string stop_after;       // "", "A" or "B": stop early (for tests and staged runs)

  void validate() const;
  nlohmann::json to_json() const;
};

// Validation perplexity (rolling windows of the stage's T over the first eval_tokens of val.bin).
struct StageEvaluation {
  double loss = 0;
  double ppl = 0;
  int64_t tokens = 0;
};

// Runs (or resumes) the pipeline; returns the summary also written to out_dir/pipeline.json:
// val_ppl of the init model, linear (A), nonlinear unadapted and adapted (B), finetuned (C), the
// adaptation trajectory, each stage's training curve and configuration. "Unadapted" is the
// algorithm's starting point (ppl_nonlinear_unadapted: stage A's scalers, or a = 1, b = 0 with
// adaptation.reset); ppl_nonlinear_stage_a_scalers is always stage A's scalers on the cell.
nlohmann::json run_pipeline(const PipelineOptions& options,
                            const std::function<void(const std::string&)>& log = {});

// True when options.out_dir already holds a run made with other options (pipeline_options.json),
// which run_pipeline refuses to continue.
bool holds_other_pipeline_run(const PipelineOptions& options);

// Rolling-window validation loss of a model directory's model on the first max_tokens tokens.
StageEvaluation evaluate_on_tokens(GPT2Model& model, const TokenDataset& val, int context,
                                   int64_t max_tokens);

}  // namespace gaincell
