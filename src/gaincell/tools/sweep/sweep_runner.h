// Running sweep points (docs/sweeps.md). A SweepContext holds everything that does not depend on
// the hardware (the loaded weights, the tokenised evaluation data, the adaptation batch, the cost
// configuration) and is built once per process; run_point() then builds each point's model by
// copying the loaded weights into a model of the point's hardware, prepares it (adaptation,
// fine-tune), scores it for every Monte-Carlo seed and adds the cost model's figures. A point is a
// plain job: (model directory, sweep file, point index) in, one JSON line out.
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gaincell/model/data.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/weight_storage.h"
#include "gaincell/tools/cost/cost_config.h"
#include "gaincell/tools/cost/cost_model.h"
#include "gaincell/tools/sweep/evaluator.h"
#include "gaincell/tools/sweep/sweep_spec.h"

namespace gaincell::sweep {

using LogFn = std::function<void(const std::string&)>;

struct SweepContext {
  SweepSpec spec;
  std::filesystem::path model_dir;
  std::vector<SweepPoint> points;
  std::unique_ptr<GPT2Model> prototype;  // the loaded weights, on the base hardware
  std::unique_ptr<PointEvaluator> evaluator;
  std::optional<TokenDataset> train_tokens;  // adaptation batch and fine-tune data
  std::vector<int32_t> adapt_inputs, adapt_targets;
  int adapt_T = 0;
  WeightFormat weights = WeightFormat::kF32;  // storage of the digital weights while scoring
  cost::CostConfig cost;
  cost::ModelShape shape;
  LogFn log;

  ~SweepContext();
};

// Loads the model (with the sweep's attention variant and base hardware), the evaluation data and
// the adaptation batch, and checks every point against the model. Throws gaincell::Error before
// any point runs when something is missing or inconsistent.
std::unique_ptr<SweepContext> open_sweep(const SweepSpec& spec,
                                         const std::filesystem::path& model_dir, LogFn log = {});

// A model of `hw` holding the prototype's weights (no file is read).
std::unique_ptr<GPT2Model> model_with_hw(const SweepContext& ctx, const HwConfig& hw);

// Runs one point: {"point", "label", "axes", "status": "ok"|"failed", "error"?, "hw", "seeds",
// "metrics": {name: {mean, std, ci95, n, values}}, "per_seed", "adaptation"?, "cost", "timing"}.
// Failures of the point (a configuration the simulator refuses, a non-finite metric) are recorded
// in the line, not thrown. Everything except "timing" is a deterministic function of the inputs.
nlohmann::json run_point(SweepContext& ctx, int index);

// The cost model's figures for one point's hardware: per head and for the model, and the GPUs.
nlohmann::json point_cost(const SweepContext& ctx, const HwConfig& hw);

}  // namespace gaincell::sweep
