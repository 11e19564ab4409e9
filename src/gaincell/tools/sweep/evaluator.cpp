#include "gaincell/tools/sweep/evaluator.h"

#include <algorithm>

#include "gaincell/core/error.h"
#include "gaincell/model/data.h"
#include "gaincell/train/perplexity.h"

namespace gaincell::sweep {

namespace {

class PerplexityEvaluator : public PointEvaluator {
 public:
  PerplexityEvaluator(const EvaluationSpec& spec, const GPT2Config& model) : spec_(spec) {
    require(!spec.tokens.empty(),
            "sweep: evaluation.tokens (a token file such as DIR/val.bin) is required for the "
            "perplexity evaluation (or give --tokens)");
    const TokenDataset data = TokenDataset::open(spec.tokens, model.vocab_size);
    size_t n = data.size();
    if (spec.limit > 0) n = std::min<size_t>(n, static_cast<size_t>(spec.limit));
    require(n >= 2, "sweep: token file '" + spec.tokens.string() + "' holds " +
                        std::to_string(data.size()) + " tokens; at least 2 are needed");
    tokens_ = data.slice(0, n);
    context_ = spec.context > 0 ? spec.context : model.block_size;
    require(context_ <= model.block_size, "sweep: evaluation.context " + std::to_string(context_) +
                                              " exceeds the model's n_positions " +
                                              std::to_string(model.block_size));
    stride_ = spec.stride > 0 ? spec.stride : context_;
    require(stride_ <= context_, "sweep: evaluation.stride must not exceed the context");
    metrics_ = {{"ppl", "Validation perplexity", "", false},
                {"mean_nll", "Validation loss", "nats/token", false}};
  }

  const std::vector<MetricInfo>& metrics() const override { return metrics_; }

  std::map<std::string, double> evaluate(GPT2Model& model) override {
    const PerplexityResult r = rolling_perplexity(model, tokens_, context_, stride_);
    return {{"ppl", r.ppl}, {"mean_nll", r.mean_nll}};
  }

  nlohmann::json describe() const override {
    return {{"type", "perplexity"},     {"tokens_file", spec_.tokens.string()},
            {"tokens", tokens_.size()}, {"predicted_tokens", tokens_.size() - 1},
            {"context", context_},      {"stride", stride_}};
  }

 private:
  EvaluationSpec spec_;
  std::vector<int32_t> tokens_;
  int context_ = 0, stride_ = 0;
  std::vector<MetricInfo> metrics_;
};

}  // namespace

std::unique_ptr<PointEvaluator> make_perplexity_evaluator(const EvaluationSpec& spec,
                                                          const GPT2Config& model) {
  return std::make_unique<PerplexityEvaluator>(spec, model);
}

std::unique_ptr<PointEvaluator> make_evaluator(const EvaluationSpec& spec,
                                               const GPT2Config& model) {
  if (spec.type == "perplexity") return make_perplexity_evaluator(spec, model);
  throw Error("sweep: evaluation type '" + spec.type +
              "' needs the evaluation harness (gaincell eval), which this build does not have yet");
}

}  // namespace gaincell::sweep
