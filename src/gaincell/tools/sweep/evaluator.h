// The evaluation step of a sweep point behind one small interface, so that the sweep runner does
// not care whether a point is scored by validation perplexity on a token file or by tasks of the
// evaluation harness. An evaluator loads its data once (tokens, task files) and scores any number
// of models.
#pragma once

#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/model/gpt2.h"
#include "gaincell/tools/sweep/sweep_spec.h"

namespace gaincell::sweep {

struct MetricInfo {
  std::string name;   // key in the results, e.g. "ppl"
  std::string title;  // axis and table text, e.g. "Validation perplexity"
  std::string unit;   // for plot axes and tables, e.g. "nats/token"; "" for a pure number
  bool higher_is_better = false;
};

class PointEvaluator {
 public:
  virtual ~PointEvaluator() = default;
  // The metrics evaluate() returns; the first is the primary one (the default Pareto objective).
  virtual const std::vector<MetricInfo>& metrics() const = 0;
  // Scores one model. Throws gaincell::Error when the model cannot be scored.
  virtual std::map<std::string, double> evaluate(GPT2Model& model) = 0;
  // What is evaluated (data, sizes), for the results.
  virtual nlohmann::json describe() const = 0;
};

// Validation perplexity with rolling windows (train/perplexity.h) over the first `limit` tokens
// of a uint16 token file (all when limit is 0). Metrics: ppl, mean_nll.
std::unique_ptr<PointEvaluator> make_perplexity_evaluator(const EvaluationSpec& spec,
                                                          const GPT2Config& model);

// The evaluator the spec asks for.
std::unique_ptr<PointEvaluator> make_evaluator(const EvaluationSpec& spec, const GPT2Config& model);

}  // namespace gaincell::sweep
