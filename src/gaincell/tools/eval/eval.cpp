#include "gaincell/tools/eval/eval.h"

#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "gaincell/core/error.h"
#include "gaincell/tools/eval/metrics.h"
#include "gaincell/tools/eval/text_rules.h"

namespace gaincell::eval {

using nlohmann::json;

const MetricValue* TaskResult::metric(const std::string& name) const {
  for (const MetricValue& m : metrics) {
    if (m.name == name) return &m;
  }
  return nullptr;
}

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

std::string format_duration(double s) {
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.0f s", s);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%.1f min", s / 60);
  } else {
    std::snprintf(buf, sizeof buf, "%.1f h", s / 3600);
  }
  return buf;
}

// Progress in documents (requests done are mapped to documents in proportion), at most every 2 s.
std::function<void(int64_t, int64_t)> progress_reporter(const EvalOptions& options,
                                                        const std::string& task, int64_t docs) {
  if (!options.progress) return nullptr;
  auto start = Clock::now();
  auto last = std::make_shared<Clock::time_point>(start);
  return [=, progress = options.progress](int64_t done, int64_t total) {
    const auto now = Clock::now();
    if (done < total && std::chrono::duration<double>(now - *last).count() < 2.0) return;
    *last = now;
    const double elapsed = std::chrono::duration<double>(now - start).count();
    const double fraction = total > 0 ? static_cast<double>(done) / total : 1.0;
    const double docs_done = fraction * static_cast<double>(docs);
    const double rate = elapsed > 0 ? docs_done / elapsed : 0.0;
    const double eta = fraction > 0 ? elapsed * (1.0 - fraction) / fraction : 0.0;
    char line[256];
    std::snprintf(line, sizeof line, "%s: %lld/%lld docs, %.2f docs/s, elapsed %s, ETA %s",
                  task.c_str(), static_cast<long long>(std::llround(docs_done)),
                  static_cast<long long>(docs), rate, format_duration(elapsed).c_str(),
                  format_duration(eta).c_str());
    progress(line);
  };
}

// np.argmax: the first maximum.
int argmax(const std::vector<double>& values) {
  int best = 0;
  for (int i = 1; i < static_cast<int>(values.size()); i++) {
    if (values[i] > values[best]) best = i;
  }
  return best;
}

MetricValue mean_metric(const std::string& name, const std::vector<double>& items) {
  MetricValue m{name, mean(items), std::nullopt};
  if (items.size() > 1) m.stderr = mean_stderr(items);
  return m;
}

}  // namespace

Prediction predict_choice(std::span<const double> lls, std::span<const std::string> choices) {
  require(!lls.empty() && lls.size() == choices.size(),
          "multiple choice: one log-likelihood per choice needed");
  std::vector<double> raw(lls.begin(), lls.end()), normalised;
  for (size_t c = 0; c < lls.size(); c++) {
    normalised.push_back(lls[c] / static_cast<double>(python_len(choices[c])));
  }
  return {argmax(raw), argmax(normalised)};
}

PreparedTask prepare_task(const Tokenizer& tok, const std::string& task_name,
                          std::vector<EvalDoc> docs, int max_length) {
  const TaskInfo& task = task_info(task_name);
  require(!docs.empty(), "task " + task_name + ": no documents to evaluate");
  PreparedTask prepared;
  prepared.task = task_name;
  prepared.max_length = max_length;
  for (size_t d = 0; d < docs.size(); d++) {
    const EvalDoc& doc = docs[d];
    if (task.type == OutputType::kLoglikelihoodRolling) {
      const std::vector<int32_t> tokens = encode_text(tok, doc.requests.at(0).continuation);
      auto windows = rolling_requests(tokens, prefix_token(tok), max_length);
      for (size_t w = 0; w < windows.size(); w++) {
        prepared.requests.push_back(std::move(windows[w]));
        prepared.origin.emplace_back(d, static_cast<int>(w));
      }
      continue;
    }
    for (size_t r = 0; r < doc.requests.size(); r++) {
      try {
        prepared.requests.push_back(
            encode_request(tok, doc.requests[r].context, doc.requests[r].continuation));
      } catch (const Error& e) {
        throw Error("task " + task_name + ", document " + std::to_string(doc.index) + ": " +
                    e.what());
      }
      prepared.origin.emplace_back(d, static_cast<int>(r));
    }
  }
  prepared.docs = std::move(docs);
  return prepared;
}

TaskResult evaluate_task(GPT2Model& model, const Tokenizer& tok, const std::string& task_name,
                         const std::vector<EvalDoc>& docs, const EvalOptions& options) {
  const auto start = Clock::now();
  const PreparedTask prepared = prepare_task(tok, task_name, docs, model.config().block_size);
  TaskResult result = score_task(model, prepared, options);
  result.seconds = seconds_since(start);  // encoding included, as before
  return result;
}

TaskResult score_task(GPT2Model& model, const PreparedTask& prepared, const EvalOptions& options) {
  const std::string& task_name = prepared.task;
  const TaskInfo& task = task_info(task_name);
  require(model.config().block_size == prepared.max_length,
          "task " + task_name + ": requests were built for n_positions " +
              std::to_string(prepared.max_length) + ", the model has " +
              std::to_string(model.config().block_size));
  const auto start = Clock::now();
  const std::vector<EvalDoc>& docs = prepared.docs;
  const std::vector<TokenRequest>& requests = prepared.requests;
  ScoreOptions score_options;
  score_options.batch_size = options.batch_size;
  score_options.share_context = options.share_context;
  score_options.progress = progress_reporter(options, task_name, static_cast<int64_t>(docs.size()));
  TaskResult result;
  result.task = task_name;
  result.num_docs = static_cast<int64_t>(docs.size());
  result.num_requests = static_cast<int64_t>(requests.size());
  const std::vector<LoglikelihoodResult> scores =
      score_requests(model, requests, score_options, &result.stats);

  result.docs.resize(docs.size());
  for (size_t d = 0; d < docs.size(); d++) {
    result.docs[d].doc_index = docs[d].index;
    result.docs[d].gold = docs[d].gold;
  }
  for (size_t i = 0; i < requests.size(); i++) {
    SampleRecord s;
    const auto [doc, index] = prepared.origin[i];
    s.doc_index = docs[doc].index;
    s.request_index = index;
    s.context_tokens = static_cast<int64_t>(requests[i].context.size());
    s.continuation_tokens = static_cast<int64_t>(requests[i].continuation.size());
    s.loglikelihood = scores[i].logprob;
    s.is_greedy = scores[i].is_greedy;
    result.docs[doc].requests.push_back(s);
  }

  if (task.type == OutputType::kLoglikelihood) {
    std::vector<double> lls, acc;
    for (const DocRecord& d : result.docs) {
      lls.push_back(d.requests.at(0).loglikelihood);
      acc.push_back(d.requests.at(0).is_greedy ? 1.0 : 0.0);
    }
    MetricValue ppl{"perplexity", perplexity(lls), std::nullopt};
    if (lls.size() > 1 && options.bootstrap_iters > 0) {
      ppl.stderr = bootstrap_stderr_perplexity(lls, options.bootstrap_iters);
    }
    result.metrics = {ppl, mean_metric("acc", acc)};
  } else if (task.type == OutputType::kMultipleChoice) {
    std::vector<double> acc, acc_norm;
    for (size_t d = 0; d < docs.size(); d++) {
      DocRecord& rec = result.docs[d];
      std::vector<double> lls;
      for (const SampleRecord& s : rec.requests) lls.push_back(s.loglikelihood);
      // acc_norm divides by the choice's length in characters (not tokens, not bytes).
      const Prediction p = predict_choice(lls, docs[d].choices);
      rec.chosen = p.chosen;
      rec.chosen_norm = p.chosen_norm;
      acc.push_back(rec.chosen == rec.gold ? 1.0 : 0.0);
      acc_norm.push_back(rec.chosen_norm == rec.gold ? 1.0 : 0.0);
    }
    result.metrics.push_back(mean_metric("acc", acc));
    if (task.metrics.size() > 1) result.metrics.push_back(mean_metric("acc_norm", acc_norm));
  } else {
    std::vector<std::pair<double, double>> by_word, by_byte;
    for (size_t d = 0; d < docs.size(); d++) {
      double ll = 0.0;
      for (const SampleRecord& s : result.docs[d].requests) ll += s.loglikelihood;
      by_word.emplace_back(ll, static_cast<double>(docs[d].words));
      by_byte.emplace_back(ll, static_cast<double>(docs[d].bytes));
    }
    result.metrics = {{"word_perplexity", weighted_perplexity(by_word), std::nullopt},
                      {"byte_perplexity", weighted_perplexity(by_byte), std::nullopt},
                      {"bits_per_byte", bits_per_byte(by_byte), std::nullopt}};
  }
  result.seconds = seconds_since(start);
  return result;
}

std::vector<TaskResult> evaluate(GPT2Model& model, const Tokenizer& tok,
                                 const std::vector<TaskFile>& tasks, int64_t limit,
                                 const EvalOptions& options) {
  return TaskEvaluator(tok, tasks, limit, model.config().block_size).evaluate(model, options);
}

TaskEvaluator::TaskEvaluator(const Tokenizer& tok, const std::vector<TaskFile>& tasks,
                             int64_t limit, int max_length) {
  require(limit != 0, "limit must be a positive number of documents (or < 0 for all)");
  require(!tasks.empty(), "no tasks to evaluate");
  // Every file is read before any is encoded, so a bad file fails fast.
  std::vector<std::vector<EvalDoc>> docs;
  for (const TaskFile& t : tasks) docs.push_back(load_task_docs(task_info(t.task), t.file, limit));
  for (size_t i = 0; i < tasks.size(); i++)
    tasks_.push_back(prepare_task(tok, tasks[i].task, std::move(docs[i]), max_length));
}

std::vector<TaskResult> TaskEvaluator::evaluate(GPT2Model& model,
                                                const EvalOptions& options) const {
  std::vector<TaskResult> results;
  for (const PreparedTask& t : tasks_) results.push_back(score_task(model, t, options));
  return results;
}

TaskResult evaluate_token_stream(GPT2Model& model, std::span<const int32_t> tokens, int32_t prefix,
                                 const EvalOptions& options) {
  const auto start = Clock::now();
  std::span<const int32_t> body = tokens;
  if (prefix < 0) {
    require(tokens.size() >= 2, "a token stream without a prefix token needs at least 2 tokens");
    prefix = tokens[0];
    body = tokens.subspan(1);
  }
  require(!body.empty(), "the token stream is empty");
  const std::vector<TokenRequest> requests =
      rolling_requests(body, prefix, model.config().block_size);
  ScoreOptions score_options;
  score_options.batch_size = options.batch_size;
  score_options.share_context = false;
  score_options.progress = progress_reporter(options, "tokens", 1);
  TaskResult result;
  result.task = "tokens";
  result.num_docs = 1;
  result.num_requests = static_cast<int64_t>(requests.size());
  const auto scores = score_requests(model, requests, score_options, &result.stats);
  DocRecord rec;
  double ll = 0.0;
  for (size_t w = 0; w < requests.size(); w++) {
    SampleRecord s{0,
                   static_cast<int>(w),
                   static_cast<int64_t>(requests[w].context.size()),
                   static_cast<int64_t>(requests[w].continuation.size()),
                   scores[w].logprob,
                   scores[w].is_greedy};
    rec.requests.push_back(s);
    ll += scores[w].logprob;
  }
  result.docs.push_back(rec);
  const double n = static_cast<double>(body.size());
  result.metrics = {{"token_perplexity", std::exp(-ll / n), std::nullopt},
                    {"nll_per_token", -ll / n, std::nullopt},
                    {"tokens", n, std::nullopt}};
  result.seconds = seconds_since(start);
  return result;
}

json results_json(const std::vector<TaskResult>& results) {
  json out = {{"results", json::object()}, {"n-samples", json::object()}};
  for (const TaskResult& r : results) {
    json task = json::object();
    for (const MetricValue& m : r.metrics) {
      task[m.name] = m.value;
      if (m.name != "tokens") {
        task[m.name + "_stderr"] = m.stderr ? json(*m.stderr) : json("N/A");
      }
    }
    task["num_docs"] = r.num_docs;
    task["num_requests"] = r.num_requests;
    task["forward_tokens"] = r.stats.forward_tokens;
    task["seconds"] = r.seconds;
    out["results"][r.task] = task;
    out["n-samples"][r.task] = {{"effective", r.num_docs}};
  }
  return out;
}

std::string samples_jsonl(const std::vector<TaskResult>& results) {
  std::string out;
  for (const TaskResult& r : results) {
    for (const DocRecord& d : r.docs) {
      for (const SampleRecord& s : d.requests) {
        json line = {{"task", r.task},
                     {"doc_id", d.doc_index},
                     {"request", s.request_index},
                     {"context_tokens", s.context_tokens},
                     {"continuation_tokens", s.continuation_tokens},
                     {"loglikelihood", s.loglikelihood},
                     {"is_greedy", s.is_greedy}};
        if (d.gold >= 0) {
          line["chosen"] = d.chosen;
          line["chosen_norm"] = d.chosen_norm;
          line["gold"] = d.gold;
        }
        out += line.dump() + "\n";
      }
    }
  }
  return out;
}

std::string format_table(const std::vector<TaskResult>& results) {
  auto higher_is_better = [](const std::string& metric) {
    return metric == "acc" || metric == "acc_norm";
  };
  std::string out =
      "|    Tasks     |Version|n-shot|     Metric     |   |  Value   |   |Stderr|\n"
      "|--------------|------:|-----:|----------------|---|---------:|---|-----:|\n";
  char line[256];
  for (const TaskResult& r : results) {
    bool first = true;
    for (const MetricValue& m : r.metrics) {
      const std::string version = r.task == "wikitext" ? "2" : "1";
      const std::string stderr_text = m.stderr ? [&] {
        char b[32];
        std::snprintf(b, sizeof b, "%.4f", *m.stderr);
        return std::string(b);
      }()
                                               : std::string("   N/A");
      std::snprintf(line, sizeof line, "|%-14s|%7s|%6s|%-16s|%s  |%10.4f|±  |%6s|\n",
                    first ? r.task.c_str() : "", first ? version.c_str() : "", first ? "0" : "",
                    m.name.c_str(), higher_is_better(m.name) ? "↑" : "↓", m.value,
                    stderr_text.c_str());
      out += line;
      first = false;
    }
  }
  return out;
}

}  // namespace gaincell::eval
