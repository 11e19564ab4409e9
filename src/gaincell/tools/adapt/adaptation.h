// Stage B of the paper's recipe (spec §5): adapt the per-head range scalers of a nonlinear
// gain-cell model so that the statistics of every scaler's output match the targets recorded on
// the linear intermediate model. All layers, scalers (q, k, v, output) and heads are updated
// together from the same forward pass of one fixed batch (HEAD semantics, spec §12 item 6).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <span>
#include <string>
#include <vector>

#include "gaincell/core/comm.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/tools/adapt/statistics_matching.h"

namespace gaincell {

struct AdaptationOptions {
  StatisticsMatchingOptions matching;
  bool reset = false;  // start from a = 1, b = 0 (the test script and the 2024 code), spec §5.2
  nlohmann::json to_json() const;
};

struct AdaptationPass {
  int pass = 0;
  double alpha = 0;
  float loss = 0;  // of this pass's forward (before its update)
  int64_t statistics = 0;
  int64_t converged = 0;
  double worst_std_error = 0;
  double worst_mean_error = 0;
  nlohmann::json to_json() const;
};

struct AdaptationResult {
  std::vector<AdaptationPass> passes;
  bool converged = false;  // every statistic within the threshold
  float initial_loss = 0;  // first forward, before any update
  float final_loss = 0;    // forward after the last update
  // "h.3.attn.v_scaler head 5 std: 0.0123 vs target 0.0456" for every statistic left outside the
  // threshold by the final forward.
  std::vector<std::string> unconverged;
  nlohmann::json to_json() const;
};

// Sets a = 1, b = 0 on every adapted scaler (q, k, v, output) of every layer and head: the
// starting point of the paper's test script and of the 2024 code (spec §5.2), used by --reset.
void reset_adapted_scalers(GPT2Model& model);

// Runs the algorithm on `model` (a gain-cell attention variant whose checkpoint holds the
// target_mean / target_std buffers) with the fixed batch inputs/targets [B][T]. `progress` is
// called after every pass.
// Data parallel over `comm` (under mpirun; train/data_parallel.h): every rank passes the same
// batch and forwards its own rows; the statistics' sums and sums of squares and the losses are
// summed over the ranks, so every rank makes the updates of one process (collective: every rank
// calls it with the same arguments).
AdaptationResult adapt_scalers(GPT2Model& model, std::span<const int32_t> inputs,
                               std::span<const int32_t> targets, int B, int T,
                               const AdaptationOptions& options,
                               const std::function<void(const AdaptationPass&)>& progress = {},
                               Comm& comm = world_comm());

}  // namespace gaincell
