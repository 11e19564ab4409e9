// gaincell's evaluation harness (issue 10): lm-evaluation-harness's zero-shot tasks scored with
// the harness's rules on any model and attention variant. The library entry point for the CLI
// (`gaincell eval`), sweeps and the Python module:
//
//   auto docs = eval::load_task_docs(eval::task_info("piqa"), "piqa_valid.jsonl", limit);
//   eval::TaskResult r = eval::evaluate_task(model, tokenizer, "piqa", docs, options);
//   r.metric("acc")->value, r.metric("acc")->stderr
//
// Per task: build lm-eval's string requests (task.h), encode them (requests.h), score them
// (scorer.h), turn per-request log-likelihoods into per-document values (acc, acc_norm,
// log-likelihood, word/byte weights) and aggregate them with lm-eval's stderrs (metrics.h).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "gaincell/model/gpt2.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/eval/requests.h"
#include "gaincell/tools/eval/scorer.h"
#include "gaincell/tools/eval/task.h"

namespace gaincell::eval {

struct EvalOptions {
  int batch_size = 8;
  bool share_context = true;
  // lm-eval's default; the perplexity of lambada_openai is the only bootstrapped metric here.
  int bootstrap_iters = 100000;
  // Progress lines (documents/s, ETA) for long runs; null: silent.
  std::function<void(const std::string&)> progress;
};

// One scored request, for --log-samples (compare with lm-eval's --log_samples request by request).
struct SampleRecord {
  int64_t doc_index = 0;
  int request_index = 0;  // choice (multiple choice) or window (rolling)
  int64_t context_tokens = 0;
  int64_t continuation_tokens = 0;
  double loglikelihood = 0.0;
  bool is_greedy = false;
};

struct DocRecord {
  int64_t doc_index = 0;
  std::vector<SampleRecord> requests;
  int chosen = -1;       // multiple choice: argmax of the log-likelihoods (acc's prediction)
  int chosen_norm = -1;  // argmax of log-likelihood / characters (acc_norm's prediction)
  int gold = -1;
};

struct MetricValue {
  std::string name;
  double value = 0.0;
  std::optional<double> stderr;  // nullopt where lm-eval reports "N/A"
};

struct TaskResult {
  std::string task;
  int64_t num_docs = 0;
  int64_t num_requests = 0;
  std::vector<MetricValue> metrics;  // in lm-eval's order
  std::vector<DocRecord> docs;
  ScoreStats stats;
  double seconds = 0.0;
  const MetricValue* metric(const std::string& name) const;  // null if absent
};

// The multiple-choice predictions: acc's is the first arg-max of the log-likelihoods; acc_norm's
// divides each by its choice's length in characters (code points, without the delimiter).
struct Prediction {
  int chosen = -1;
  int chosen_norm = -1;
};
Prediction predict_choice(std::span<const double> lls, std::span<const std::string> choices);

// Scores one task's documents (load_task_docs) and aggregates lm-eval's metrics
// (= score_task(model, prepare_task(tok, task, docs, n_positions), options)).
TaskResult evaluate_task(GPT2Model& model, const Tokenizer& tok, const std::string& task,
                         const std::vector<EvalDoc>& docs, const EvalOptions& options = {});

// A task's documents with their token requests. Encoding depends only on the tokenizer and the
// model's context length, not on its weights or hardware, so a sweep encodes once and scores the
// same requests on every point's model.
struct PreparedTask {
  std::string task;
  std::vector<EvalDoc> docs;
  std::vector<TokenRequest> requests;
  // Per request: its document (index into docs) and its index there (choice or window).
  std::vector<std::pair<size_t, int>> origin;
  int max_length = 0;  // the n_positions the requests were built for
};
PreparedTask prepare_task(const Tokenizer& tok, const std::string& task, std::vector<EvalDoc> docs,
                          int max_length);
// Throws when the model's n_positions is not the one the requests were built for.
TaskResult score_task(GPT2Model& model, const PreparedTask& task, const EvalOptions& options = {});

// Convenience for callers (sweeps, Python): reads each task's file (load_task_docs, `limit` docs
// per task, < 0 = all) and evaluates the tasks in order. All files are read before scoring.
struct TaskFile {
  std::string task;
  std::filesystem::path file;
};
std::vector<TaskResult> evaluate(GPT2Model& model, const Tokenizer& tok,
                                 const std::vector<TaskFile>& tasks, int64_t limit = -1,
                                 const EvalOptions& options = {});

// Tasks read and encoded once, then scored on any number of models of one context length (the
// sweep's "tasks" evaluation, the Python module). evaluate(model) equals the free evaluate() on
// the same files, limit and options.
class TaskEvaluator {
 public:
  // Reads every task file (`limit` docs per task, < 0 = all; 0 is an error) and encodes the
  // requests for models with n_positions `max_length`.
  TaskEvaluator(const Tokenizer& tok, const std::vector<TaskFile>& tasks, int64_t limit,
                int max_length);
  std::vector<TaskResult> evaluate(GPT2Model& model, const EvalOptions& options = {}) const;
  const std::vector<PreparedTask>& tasks() const { return tasks_; }

 private:
  std::vector<PreparedTask> tasks_;
};

// Scores a pre-tokenised stream as one rolling-loglikelihood document (lm-eval's windows, the
// prefix token first): task "tokens" with metrics token_perplexity and nll_per_token (no word or
// byte counts exist without text). `prefix` < 0 scores the stream as given (its first token is
// then only context).
TaskResult evaluate_token_stream(GPT2Model& model, std::span<const int32_t> tokens, int32_t prefix,
                                 const EvalOptions& options = {});

// {"results": {task: {metric: value, metric_stderr: value or "N/A", "num_docs": n}}} plus
// "samples_per_task". The CLI adds the run's configuration.
nlohmann::json results_json(const std::vector<TaskResult>& results);
// One JSON line per scored request (doc, request, token counts, log-likelihood, is_greedy, and
// for multiple choice chosen / gold).
std::string samples_jsonl(const std::vector<TaskResult>& results);
// A table in the layout of lm-eval's printed results (Tasks, Version, n-shot, Metric, Value,
// Stderr).
std::string format_table(const std::vector<TaskResult>& results);

}  // namespace gaincell::eval
