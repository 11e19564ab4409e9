#include "gaincell/tools/sweep/evaluator.h"

#include <algorithm>

#include "gaincell/core/error.h"
#include "gaincell/model/data.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/eval/eval.h"
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

// "TASK=PATH" or a task name looked up in data_dir (as `gaincell eval --task-file/--data-dir`).
eval::TaskFile resolve_task(const std::string& entry, const EvaluationSpec& spec) {
  const size_t eq = entry.find('=');
  if (eq != std::string::npos) {
    require(eq > 0 && eq + 1 < entry.size(),
            "sweep: evaluation.tasks entry '" + entry + "' must be TASK or TASK=PATH");
    const std::string task = entry.substr(0, eq);
    eval::task_info(task);                // throws for an unknown name
    return {task, entry.substr(eq + 1)};  // made absolute by SweepSpec::parse
  }
  const eval::TaskInfo& info = eval::task_info(entry);
  require(!spec.data_dir.empty(), "sweep: evaluation.data_dir is required to find task '" + entry +
                                      "' (or write \"" + entry + "=PATH\")");
  return {entry, eval::find_task_file(info, spec.data_dir)};
}

bool is_accuracy(const std::string& metric) {
  return metric == "acc" || metric == "acc_norm";
}

// lm-eval's tasks through the evaluation harness's library API: the task files are read and their
// requests encoded once (eval::TaskEvaluator), every point's model scores the same requests.
// Metrics "TASK.METRIC" in lm-eval's order; with two or more accuracy tasks "avg_acc" (the mean
// of their acc, the paper table's average) comes first and is the primary metric.
class TasksEvaluator : public PointEvaluator {
 public:
  TasksEvaluator(const EvaluationSpec& spec, const GPT2Config& model) : spec_(spec) {
    std::vector<eval::TaskFile> files;
    for (const std::string& entry : spec.tasks) files.push_back(resolve_task(entry, spec));
    const Tokenizer tok = Tokenizer::by_name(model.tokenizer, spec.vocab);
    evaluator_ = std::make_unique<eval::TaskEvaluator>(tok, files, spec.limit > 0 ? spec.limit : -1,
                                                       model.block_size);
    for (const eval::TaskFile& f : files) files_[f.task] = f.file.string();
    int accuracy_tasks = 0;
    for (const eval::PreparedTask& t : evaluator_->tasks()) {
      for (const std::string& m : eval::task_info(t.task).metrics) {
        metrics_.push_back({t.task + "." + m, t.task + " " + m, "", is_accuracy(m)});
        if (m == "acc") ++accuracy_tasks;
      }
    }
    if (accuracy_tasks >= 2)
      metrics_.insert(metrics_.begin(), {"avg_acc", "Average accuracy", "", true});
    options_.batch_size = spec.batch_size;
    options_.bootstrap_iters = 0;  // the sweep's spread is over seeds; lm-eval's stderr unused
  }

  const std::vector<MetricInfo>& metrics() const override { return metrics_; }

  std::map<std::string, double> evaluate(GPT2Model& model) override {
    std::map<std::string, double> out;
    double acc_sum = 0.0;
    int acc_n = 0;
    for (const eval::TaskResult& r : evaluator_->evaluate(model, options_)) {
      for (const eval::MetricValue& m : r.metrics) out[r.task + "." + m.name] = m.value;
      if (const eval::MetricValue* acc = r.metric("acc")) {
        acc_sum += acc->value;
        ++acc_n;
      }
    }
    if (metrics_.front().name == "avg_acc") out["avg_acc"] = acc_sum / acc_n;
    return out;
  }

  nlohmann::json describe() const override {
    nlohmann::json docs = nlohmann::json::object();
    for (const eval::PreparedTask& t : evaluator_->tasks())
      docs[t.task] = {{"file", files_.at(t.task)},
                      {"num_docs", t.docs.size()},
                      {"num_requests", t.requests.size()}};
    return {{"type", "tasks"},
            {"tasks", docs},
            {"limit", spec_.limit > 0 ? nlohmann::json(spec_.limit) : nlohmann::json(nullptr)},
            {"batch_size", spec_.batch_size}};
  }

 private:
  EvaluationSpec spec_;
  std::unique_ptr<eval::TaskEvaluator> evaluator_;
  std::map<std::string, std::string> files_;
  eval::EvalOptions options_;
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
  if (spec.type == "tasks") return std::make_unique<TasksEvaluator>(spec, model);
  throw Error("sweep: unknown evaluation type '" + spec.type + "'");
}

}  // namespace gaincell::sweep
