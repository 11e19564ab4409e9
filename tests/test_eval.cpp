// The evaluation harness on a real (tiny, random) GPT-2 with the GPT-2 vocabulary
// (tests/fixtures/eval_tiny): per-request agreement with the independent PyTorch reference
// (tests/reference/eval_reference.py -> tests/fixtures/eval_reference.json) for every task,
// batch-size independence, shared-context decoding = whole-pair scoring for every attention
// variant, DecodeSession::extend = step, and the `gaincell eval` / `perplexity --tokens` CLI.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/tools/eval/eval.h"
#include "gaincell/tools/eval/text_rules.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell::eval {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;
using test_util::TempDir;

const fs::path kRoot = GAINCELL_SOURCE_DIR;
const fs::path kModel = kRoot / "tests" / "fixtures" / "eval_tiny";
const fs::path kFixtures = kRoot / "tests" / "fixtures" / "eval";

bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci && std::string(ci) == "true";
}

// Shared data (../shared/data/eval) is optional locally, required in CI.
#define REQUIRE_FILE_OR_SKIP(path)                                                       \
  if (!fs::exists(path)) {                                                               \
    if (in_ci()) FAIL() << (path) << " is missing (CI=true requires the shared data)";   \
    GTEST_SKIP() << (path) << " not found (shared reference data absent); test skipped"; \
  }

std::unique_ptr<GPT2Model> load(const std::string& attention = "", int window = -1) {
  LoadModelOptions o;
  if (!attention.empty()) {
    o.overrides.attention = attention;
    if (is_gaincell_attention(attention)) o.overrides.hw = gaincell_default_hw(attention);
  }
  if (window >= 0) o.overrides.window = window;
  return load_model(kModel, o);
}

std::vector<SampleRecord> flat(const TaskResult& r) {
  std::vector<SampleRecord> out;
  for (const DocRecord& d : r.docs) out.insert(out.end(), d.requests.begin(), d.requests.end());
  return out;
}

void expect_same_requests(const TaskResult& a, const TaskResult& b, double tol,
                          const std::string& what) {
  const auto x = flat(a), y = flat(b);
  ASSERT_EQ(x.size(), y.size()) << what;
  for (size_t i = 0; i < x.size(); i++) {
    EXPECT_NEAR(x[i].loglikelihood, y[i].loglikelihood, tol) << what << ", request " << i;
    EXPECT_EQ(x[i].is_greedy, y[i].is_greedy) << what << ", request " << i;
  }
}

TEST(Eval, AgreesWithTheIndependentPyTorchReferencePerRequest) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *test_util::shared_tokenizer();
  const json ref =
      json::parse(read_text_file(kRoot / "tests" / "fixtures" / "eval_reference.json"));
  auto model = load();
  EvalOptions options;
  options.bootstrap_iters = ref["bootstrap_iters"].get<int>();
  int cases = 0;
  for (const json& c : ref["cases"]) {
    const std::string task = c["task"];
    const fs::path file = kRoot / c["file"].get<std::string>();
    if (!fs::exists(file)) {
      if (in_ci()) ADD_FAILURE() << file << " is missing (CI=true requires the shared data)";
      std::cerr << "skipping " << task << ": " << file << " not found\n";
      continue;
    }
    const int64_t limit = c["limit"].get<int64_t>() > 0 ? c["limit"].get<int64_t>() : -1;
    const TaskResult r =
        evaluate_task(*model, tok, task, load_task_docs(task_info(task), file, limit), options);
    const auto got = flat(r);
    ASSERT_EQ(got.size(), c["requests"].size()) << task << " " << file;
    for (size_t i = 0; i < got.size(); i++) {
      const json& e = c["requests"][i];
      const std::string where =
          task + " " + file.filename().string() + " request " + std::to_string(i);
      EXPECT_EQ(got[i].doc_index, e[0].get<int64_t>()) << where;
      EXPECT_EQ(got[i].request_index, e[1].get<int>()) << where;
      EXPECT_EQ(got[i].context_tokens, e[2].get<int64_t>()) << where;
      EXPECT_EQ(got[i].continuation_tokens, e[3].get<int64_t>()) << where;
      EXPECT_NEAR(got[i].loglikelihood, e[4].get<double>(), 1e-4) << where;
      EXPECT_EQ(got[i].is_greedy, e[5].get<bool>()) << where;
    }
    for (const auto& [name, value] : c["metrics"].items()) {
      const MetricValue* m = r.metric(name);
      ASSERT_NE(m, nullptr) << task << " " << name;
      const double expected = value[0].get<double>();
      EXPECT_NEAR(m->value, expected, 1e-4 * std::max(1.0, std::abs(expected)))
          << task << " " << name;
      if (value[1].is_null()) {
        EXPECT_FALSE(m->stderr.has_value()) << task << " " << name;
      } else {
        ASSERT_TRUE(m->stderr.has_value()) << task << " " << name;
        const double se = value[1].get<double>();
        EXPECT_NEAR(*m->stderr, se, 1e-4 * std::max(1.0, std::abs(se))) << task << " " << name;
      }
    }
    cases++;
  }
  EXPECT_GE(cases, 8);
}

// Every task's fixture, in one list (the shared PIQA/LAMBADA are covered by the reference test).
std::vector<std::pair<std::string, fs::path>> fixture_tasks() {
  return {{"wikitext", kFixtures / "wikitext_test.jsonl"},
          {"hellaswag", kFixtures / "hellaswag_validation.jsonl"},
          {"piqa", kFixtures / "piqa_validation.jsonl"},
          {"arc_easy", kFixtures / "arc_easy_test.jsonl"},
          {"arc_challenge", kFixtures / "ARC-Challenge-Test.jsonl"},
          {"winogrande", kFixtures / "winogrande_validation.jsonl"}};
}

TEST(Eval, ResultsDoNotDependOnBatchSize) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *test_util::shared_tokenizer();
  auto model = load();
  for (const auto& [task, file] : fixture_tasks()) {
    const auto docs = load_task_docs(task_info(task), file);
    EvalOptions one, eight;
    one.batch_size = 1;
    eight.batch_size = 8;
    one.share_context = eight.share_context = false;  // every request through the batched path
    one.bootstrap_iters = eight.bootstrap_iters = 0;
    expect_same_requests(evaluate_task(*model, tok, task, docs, one),
                         evaluate_task(*model, tok, task, docs, eight), 1e-5,
                         task + " batch 1 vs 8");
  }
}

TEST(Eval, SharedContextEqualsWholePairForEveryAttentionVariant) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *test_util::shared_tokenizer();
  const auto docs = load_task_docs(task_info("arc_easy"), kFixtures / "arc_easy_test.jsonl");
  for (const std::string& attention : attention_names()) {
    if (attention.rfind("test-", 0) == 0) continue;  // variants other tests register
    auto model = load(attention, attention == "sliding" ? 16 : -1);
    EvalOptions shared, whole;
    whole.share_context = false;
    const TaskResult a = evaluate_task(*model, tok, "arc_easy", docs, shared);
    const TaskResult b = evaluate_task(*model, tok, "arc_easy", docs, whole);
    EXPECT_EQ(a.stats.shared_groups, 3) << attention;
    EXPECT_EQ(b.stats.shared_groups, 0) << attention;
    // Cost: context once + every continuation, instead of choices x (context + continuation).
    EXPECT_LT(a.stats.forward_tokens, b.stats.forward_tokens) << attention;
    expect_same_requests(a, b, 1e-4, attention + " shared vs whole");
  }
}

TEST(Eval, DecodeExtendEqualsStepForEveryAttentionVariant) {
  GPT2Config c = GPT2Config::named("tiny");
  const std::vector<int32_t> prompt = {3, 14, 15, 92, 65}, more = {35, 89, 79, 32};
  for (const std::string& attention : attention_names()) {
    if (attention.rfind("test-", 0) == 0) continue;
    c.attention = attention;
    c.window = attention == "sliding" ? 4 : 0;
    if (is_gaincell_attention(attention)) c.hw = gaincell_default_hw(attention);
    GPT2Model model(c);
    model.init_random(7);
    auto a = model.start_decoding();
    a->prefill(prompt.data(), static_cast<int>(prompt.size()));
    auto b = a->clone();
    ASSERT_NE(b, nullptr) << attention;
    // A session that decoded something else, then set to a's state in place.
    auto d = model.start_decoding();
    d->prefill(more.data(), 2);
    ASSERT_TRUE(d->assign_from(*a)) << attention;
    std::vector<float> stepped;
    for (int32_t t : more) {
      const float* l = a->step(t);
      stepped.insert(stepped.end(), l, l + c.vocab_size);
    }
    const float* extended = b->extend(more.data(), static_cast<int>(more.size()));
    EXPECT_EQ(b->position(), a->position());
    const float* from_assigned = d->extend(more.data(), static_cast<int>(more.size()));
    const std::vector<float> assigned(from_assigned, from_assigned + stepped.size());
    for (size_t i = 0; i < stepped.size(); i++) {
      ASSERT_NEAR(extended[i], stepped[i], 1e-4) << attention << " logit " << i;
      ASSERT_EQ(assigned[i], extended[i]) << attention << " logit " << i;
    }
  }
}

// extend_together() (the multiple-choice path: many continuations through the digital layers at
// once) equals extend() on each session in turn, for every attention variant, for GPT-2 and for a
// grouped-query Llama shape; contexts longer than the KV cache's first allocation (32 rows) and
// sessions set with assign_from() from a longer or shorter one.
TEST(Eval, ExtendTogetherEqualsExtendPerSessionForEveryAttentionVariant) {
  for (const char* shape : {"tiny", "llama-tiny"}) {
    GPT2Config c = GPT2Config::named(shape);
    c.block_size = 96;
    std::vector<int32_t> prompt(40), other(70);
    for (size_t i = 0; i < prompt.size(); i++) prompt[i] = static_cast<int32_t>((i * 37 + 5) % 101);
    for (size_t i = 0; i < other.size(); i++) other[i] = static_cast<int32_t>((i * 11 + 3) % 101);
    const std::vector<std::vector<int32_t>> conts = {{7, 8, 9}, {40}, {1, 2, 3, 4, 5, 6}};
    for (const std::string& attention : attention_names()) {
      if (attention.rfind("test-", 0) == 0) continue;
      const std::string where = std::string(shape) + " " + attention;
      c.attention = attention;
      c.window = attention == "sliding" ? 16 : 0;
      if (is_gaincell_attention(attention)) c.hw = gaincell_default_hw(attention);
      GPT2Model model(c);
      model.init_random(11);
      auto context = model.start_decoding();
      const float* last = context->prefill(prompt.data(), static_cast<int>(prompt.size()));
      const std::vector<float> prefill_last(last, last + c.vocab_size);
      std::vector<float> one_by_one;
      for (const auto& cont : conts) {
        auto branch = context->clone();
        ASSERT_NE(branch, nullptr) << where;
        const float* l = branch->extend(cont.data(), static_cast<int>(cont.size()));
        one_by_one.insert(one_by_one.end(), l, l + cont.size() * c.vocab_size);
      }
      // Branches that held a longer and a shorter sequence before, set to the context's state.
      std::vector<std::unique_ptr<DecodeSession>> branches;
      std::vector<DecodeSession*> sessions;
      std::vector<std::span<const int32_t>> tokens;
      for (size_t b = 0; b < conts.size(); b++) {
        branches.push_back(model.start_decoding());
        branches.back()->prefill(other.data(), b == 0 ? 70 : 3);
        ASSERT_TRUE(branches.back()->assign_from(*context)) << where;
        sessions.push_back(branches.back().get());
        tokens.emplace_back(conts[b]);
      }
      const float* together = DecodeSession::extend_together(sessions, tokens);
      for (size_t i = 0; i < one_by_one.size(); i++) {
        ASSERT_NEAR(together[i], one_by_one[i], 1e-5f * std::max(1.0f, std::abs(one_by_one[i])))
            << where << " logit " << i;
      }
      for (size_t b = 0; b < conts.size(); b++) {
        EXPECT_EQ(sessions[b]->position(), static_cast<int64_t>(prompt.size() + conts[b].size()))
            << where;
      }
      // Contexts through extend (token by token attention) equal prefill's whole-sequence form;
      // last_rows_only returns one row per session.
      auto fresh_a = model.start_decoding(), fresh_b = model.start_decoding();
      DecodeSession* both[] = {fresh_a.get(), fresh_b.get()};
      const std::span<const int32_t> contexts[] = {prompt, std::span(prompt).first(5)};
      const float* lasts = DecodeSession::extend_together(both, contexts, true);
      for (int v = 0; v < c.vocab_size; v++) {
        ASSERT_NEAR(lasts[v], prefill_last[v], 1e-4f) << where << " logit " << v;
      }
      auto short_context = model.start_decoding();
      const float* short_last = short_context->prefill(prompt.data(), 5);
      const std::vector<float> expected_short(short_last, short_last + c.vocab_size);
      for (int v = 0; v < c.vocab_size; v++) {
        ASSERT_NEAR(lasts[c.vocab_size + v], expected_short[v], 1e-4f) << where << " logit " << v;
      }
    }
  }
}

TEST(Eval, EveryTaskRunsOnEveryAttentionVariant) {
  if (test_util::sanitized()) GTEST_SKIP() << "slow under the sanitizers; the Release pass runs it";
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *test_util::shared_tokenizer();
  for (const std::string& attention : attention_names()) {
    if (attention.rfind("test-", 0) == 0) continue;
    auto model = load(attention, attention == "sliding" ? 16 : -1);
    EvalOptions options;
    options.bootstrap_iters = 0;
    for (const auto& [task, file] : fixture_tasks()) {
      const TaskResult r =
          evaluate_task(*model, tok, task, load_task_docs(task_info(task), file, 1), options);
      for (const MetricValue& m : r.metrics)
        EXPECT_TRUE(std::isfinite(m.value)) << attention << " " << task << " " << m.name;
    }
  }
}

TEST(Eval, LibraryEntryPointReadsFilesAndEvaluatesInOrder) {
  GAINCELL_REQUIRE_VOCAB();
  auto model = load();
  EvalOptions options;
  options.bootstrap_iters = 0;
  const auto results = evaluate(*model, *test_util::shared_tokenizer(),
                                {{"winogrande", kFixtures / "winogrande_validation.jsonl"},
                                 {"arc_easy", kFixtures / "arc_easy_test.jsonl"}},
                                2, options);
  ASSERT_EQ(results.size(), 2u);
  EXPECT_EQ(results[0].task, "winogrande");
  EXPECT_EQ(results[1].num_docs, 2);
  EXPECT_NE(results[1].metric("acc_norm"), nullptr);
  EXPECT_EQ(results[0].metric("acc_norm"), nullptr);  // WinoGrande reports acc only
}

// The sweep's path: requests encoded once, scored on several models, equal to evaluating each
// model from the documents (every request, bit for bit).
TEST(Eval, TaskEvaluatorEncodesOnceAndScoresAnyModelAsEvaluateTaskDoes) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *test_util::shared_tokenizer();
  const std::vector<TaskFile> files = {{"piqa", kFixtures / "piqa_validation.jsonl"},
                                       {"wikitext", kFixtures / "wikitext_test.jsonl"}};
  auto softmax = load();
  const TaskEvaluator evaluator(tok, files, 2, softmax->config().block_size);
  ASSERT_EQ(evaluator.tasks().size(), 2u);
  EvalOptions options;
  options.bootstrap_iters = 0;
  auto nonlinear = load("gaincell-nonlinear");
  for (GPT2Model* model : {softmax.get(), nonlinear.get(), softmax.get()}) {
    const auto results = evaluator.evaluate(*model, options);
    ASSERT_EQ(results.size(), 2u);
    for (size_t t = 0; t < files.size(); t++) {
      const TaskResult direct =
          evaluate_task(*model, tok, files[t].task,
                        load_task_docs(task_info(files[t].task), files[t].file, 2), options);
      expect_same_requests(results[t], direct, 0.0, files[t].task);
      ASSERT_EQ(results[t].metrics.size(), direct.metrics.size());
      for (size_t m = 0; m < direct.metrics.size(); m++)
        EXPECT_EQ(results[t].metrics[m].value, direct.metrics[m].value) << direct.metrics[m].name;
    }
  }
  EXPECT_THROW(TaskEvaluator(tok, files, 0, 64), Error);  // --limit 0
}

// ---------------------------------------------------------------------------------------------
// CLI

using cli_test::run_cli;
using cli_test::shell_quote;

std::string model_arg() {
  return "--model " + shell_quote(kModel.string()) + " ";
}

TEST(EvalCli, JsonReportLogSamplesAndTable) {
  GAINCELL_REQUIRE_VOCAB();
  TempDir dir;
  const fs::path out = dir.path() / "r.json", samples = dir.path() / "s.jsonl";
  auto r =
      run_cli(dir.path(),
              "eval " + model_arg() + "--tasks arc_easy,winogrande --data-dir " +
                  shell_quote(kFixtures.string()) +
                  " --limit 2 --attention gaincell-nonlinear --hw paper-nonlinear --output " +
                  shell_quote(out.string()) + " --log-samples " + shell_quote(samples.string()));
  ASSERT_EQ(r.exit_code, 0) << r.err;
  EXPECT_NE(r.out.find("|arc_easy"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("acc_norm"), std::string::npos);
  EXPECT_NE(r.err.find("docs/s"), std::string::npos) << "progress on stderr";
  const json j = json::parse(read_text_file(out));
  EXPECT_EQ(j["results"]["arc_easy"]["num_docs"], 2);
  EXPECT_TRUE(j["results"]["arc_easy"].contains("acc_norm_stderr"));
  EXPECT_EQ(j["config"]["attention"], "gaincell-nonlinear");
  EXPECT_EQ(j["config"]["limit"], 2);
  EXPECT_TRUE(j["config"]["hw"].is_object());
  EXPECT_TRUE(j["config"].contains("gaincell_version"));
  // arc_easy: 4 + 3 choices, winogrande: 2 + 2 contexts.
  const auto lines = python_split(read_text_file(samples), "\n");
  ASSERT_EQ(lines.size(), 12u);  // 11 lines and the empty piece after the last newline
  const json first = json::parse(lines[0]);
  for (const char* key : {"task", "doc_id", "context_tokens", "continuation_tokens",
                          "loglikelihood", "is_greedy", "chosen", "gold"}) {
    EXPECT_TRUE(first.contains(key)) << key;
  }
}

TEST(EvalCli, BadInputIsAnErrorAndNeverAPartialOutput) {
  TempDir dir;
  const fs::path out = dir.path() / "r.json";
  const std::string data =
      " --data-dir " + shell_quote(kFixtures.string()) + " --output " + shell_quote(out.string());
  struct Case {
    std::string args, message;
  };
  // A last word of 300 characters that BPE splits into far more than 64 tokens.
  std::string word;
  for (int i = 0; i < 100; i++) word += "xqj";
  write_file_atomic(dir.path() / "long.jsonl", "{\"text\": \"a " + word + "\"}\n");
  const std::vector<Case> cases = {
      {"--tasks mmlu" + data, "unknown task 'mmlu'"},
      {"--tasks hellaswag --data-dir " + shell_quote(dir.path().string()) + " --output " +
           shell_quote(out.string()),
       "hellaswag_validation.jsonl"},
      {"--task-file piqa=" + shell_quote((dir.path() / "none.jsonl").string()) + " --output " +
           shell_quote(out.string()),
       "does not exist"},
      {"--tasks arc_easy --limit 0" + data, "--limit"},
      {"--tasks arc_easy --batch-size 0" + data, "--batch-size"},
      {"--task-file winogrande=" + shell_quote((kFixtures / "arc_easy_test.jsonl").string()) +
           " --output " + shell_quote(out.string()),
       "'sentence'"},
      {"--task-file lambada_openai=" + shell_quote((dir.path() / "long.jsonl").string()) +
           " --output " + shell_quote(out.string()),
       "does not fit the model's context of 64"},
      {"--output " + shell_quote(out.string()), "nothing to evaluate"},
  };
  for (const Case& c : cases) {
    auto r = run_cli(dir.path(), "eval " + model_arg() + c.args);
    EXPECT_NE(r.exit_code, 0) << c.args;
    EXPECT_NE(r.err.find(c.message), std::string::npos) << c.args << "\n" << r.err;
    EXPECT_FALSE(fs::exists(out)) << "partial output after: " << c.args;
  }
}

TEST(EvalCli, PreTokenisedInputForEvalAndPerplexity) {
  TempDir dir;
  std::string ids;
  for (int i = 0; i < 150; i++) {
    if (i > 0) ids += ",";
    ids += std::to_string((i * 7919) % 50000);
  }
  write_file_atomic(dir.path() / "t.json", "{\"ids\": [" + ids + "]}");
  auto e = run_cli(dir.path(), "eval " + model_arg() + "--tokens " +
                                   shell_quote((dir.path() / "t.json").string()) + " --json");
  ASSERT_EQ(e.exit_code, 0) << e.err;
  const json j = json::parse(e.out);
  const double eval_ppl = j["results"]["tokens"]["token_perplexity"];
  EXPECT_EQ(j["results"]["tokens"]["tokens"], 149);  // the first id is the context of the rest
  auto p =
      run_cli(dir.path(), "perplexity " + model_arg() + "--tokens " +
                              shell_quote((dir.path() / "t.json").string()) + " --no-eot --json");
  ASSERT_EQ(p.exit_code, 0) << p.err;
  const json pj = json::parse(p.out);
  EXPECT_EQ(pj["tokens"], 149);
  EXPECT_NEAR(pj["ppl"].get<double>(), eval_ppl, 1e-4 * eval_ppl);
  write_file_atomic(dir.path() / "bad.json", "{\"ids\": [1, 60000]}");
  auto bad = run_cli(dir.path(), "eval " + model_arg() + "--tokens " +
                                     shell_quote((dir.path() / "bad.json").string()));
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("outside the model's vocabulary"), std::string::npos) << bad.err;
}

}  // namespace
}  // namespace gaincell::eval
