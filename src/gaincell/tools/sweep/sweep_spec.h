// The sweep file of `gaincell sweep` (docs/sweeps.md): a base hardware configuration, the axes
// (any HwConfig field by its JSON path, as a grid or an explicit list of points), the evaluation,
// what to do per point before scoring (nothing, re-adapt the scalers, a short fine-tune), the
// Monte-Carlo seeds and the cost model. Parsing validates everything, including every point's
// hardware configuration, so a bad file fails before any work starts.
#pragma once

#include <cstdint>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/hw/hw_config.h"

namespace gaincell::sweep {

// A sweep holds at most this many points (a grid's product is checked before it is expanded).
constexpr int kMaxSweepPoints = 100000;

// One axis: a JSON path into HwConfig::to_json() ("quantization.k.levels") and its values.
struct Axis {
  std::string field;
  std::vector<nlohmann::json> values;
};

// Validation perplexity on a token file (uint16, the `prepare` layout), or tasks through the
// evaluation harness (type "tasks").
struct EvaluationSpec {
  std::string type = "perplexity";  // "perplexity" | "tasks"
  std::filesystem::path tokens;     // perplexity: token file (val.bin)
  int64_t limit = 0;                // perplexity: first N tokens (0 = all); tasks: items per task
  int context = 0;                  // perplexity window (0 = the model's n_positions)
  int stride = 0;                   // 0 = context
  // tasks: lm-eval task names ("piqa": its file is looked for in data_dir, as `gaincell eval
  // --data-dir` does) or "TASK=PATH" (as --task-file; PATH relative to the sweep file).
  std::vector<std::string> tasks;
  std::filesystem::path data_dir;  // tasks: directory of the tasks' data files
  std::filesystem::path vocab;     // tasks: tokenizer vocabulary directory (default: the usual)
  int batch_size = 8;              // tasks: requests per forward (as `gaincell eval --batch-size`)
  nlohmann::ordered_json to_json() const;
};

// What happens to a point's model before it is scored. Adaptation needs the stage-A target
// statistics in the model (a model from `gaincell pipeline` or the demo).
struct PrepareSpec {
  std::string adapt = "none";    // "none" | "from-model" (the model's scalers) | "from-reset"
  std::filesystem::path tokens;  // training tokens for the adaptation batch and the fine-tune
  int batch = 8;                 // adaptation batch (sequences)
  int seq_len = 0;               // 0 = the model's n_positions
  uint64_t batch_seed = 0;       // which fixed batch the adaptation sees
  int max_passes = 101;          // statistics-matching forward passes (spec §5)
  int64_t finetune_steps = 0;    // stage-C fine-tune after the adaptation (0 = none)
  float finetune_lr = 1e-4f;
  int finetune_batch = 4;
  nlohmann::ordered_json to_json() const;
  bool any() const { return adapt != "none" || finetune_steps > 0; }
};

struct CostSpec {
  std::string preset = "paper";  // cost preset or cost-config JSON file
  int64_t tokens = 1024;         // tokens per sequence of the GPU comparison
  int64_t batch = 64;
  nlohmann::ordered_json to_json() const;
};

// One point of the sweep: its index, the axis values that define it, and its hardware.
struct SweepPoint {
  int index = 0;
  std::vector<std::pair<std::string, nlohmann::json>> values;  // (field, value) in axis order
  HwConfig hw;
  nlohmann::json axes_json() const;  // {field: value, ...}
  std::string label() const;         // "quantization.k.levels=8, array_size=64"
};

struct SweepSpec {
  std::string name = "sweep";
  nlohmann::json base;        // preset name, file path, or inline object (as written)
  std::string attention;      // gain-cell variant; empty = the model's
  std::string mode = "grid";  // "grid" (cartesian product of the axes) | "list" (explicit points)
  std::vector<Axis> axes;     // grid axes, or the union of the fields of a list
  std::vector<nlohmann::ordered_json> list_points;  // list mode: {field: value} objects
  EvaluationSpec evaluation;
  PrepareSpec prepare;
  int seeds = 1;  // Monte-Carlo seeds: noise.seed = the point's seed + s, s < seeds
  // Storage of the digital layers' weights while scoring ("f32", "bf16", "q8"; as --weights of
  // `gaincell eval`); adaptation and fine-tune run on the fp32 weights before packing.
  std::string weights = "f32";
  CostSpec cost;
  std::string objective;      // metric for the Pareto fronts (default: the evaluation's primary)
  std::filesystem::path dir;  // directory relative paths in the file resolve against

  // The base hardware configuration (validated).
  HwConfig base_hw() const;
  // Every point with its validated hardware configuration. Throws gaincell::Error naming the
  // point and the field when one is invalid.
  std::vector<SweepPoint> points() const;
  // The resolved sweep in the file format (paths absolute): parse(to_json().dump()) gives the
  // same sweep. Written to OUT/sweep.json for --resume's "same sweep" check and the workers.
  nlohmann::ordered_json to_json() const;

  // Parses and validates a sweep file. Unknown keys, empty axes, unknown fields and invalid
  // values are errors; `dir` resolves relative paths.
  static SweepSpec parse(const std::string& text, const std::filesystem::path& dir);
  static SweepSpec load(const std::filesystem::path& file);
};

// Sets `value` at a dotted path ("quantization.k.levels", "cell.coefficients.3") inside `config`
// (a HwConfig::to_json() object). Every segment must exist; derived fields are rejected.
void set_hw_field(nlohmann::json& config, const std::string& field, const nlohmann::json& value);

}  // namespace gaincell::sweep
