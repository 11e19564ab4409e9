// gaincell eval: lm-evaluation-harness's zero-shot tasks (wikitext, lambada_openai, hellaswag,
// piqa, arc_easy, arc_challenge, winogrande) scored with the harness's rules
// (tools/eval/eval.h, docs/evaluation.md).
//   gaincell eval --model DIR --tasks LIST [--data-dir DIR | --task-file TASK=PATH ...]
//                 [--tokens FILE] [--limit N] [--batch-size B] [--attention ... --hw ...]
//                 [--json] [--output FILE] [--log-samples FILE]
#include <cstdio>
#include <iostream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/model_options.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/eval/eval.h"
#include "gaincell/tools/eval/requests.h"
#include "gaincell/tools/eval/text_rules.h"
#include "gaincell/tools/eval/token_file.h"

namespace gaincell::cli {
namespace {

struct EvalCliOptions {
  std::string model_dir;
  std::string tasks;
  std::string data_dir;
  std::vector<std::string> task_files;
  std::string tokens_file;
  std::string tokens_format = "auto";
  int64_t limit = -1;
  int batch_size = 8;
  int bootstrap_iters = 100000;
  bool no_share_context = false;
  bool json = false;
  bool quiet = false;
  std::string output;
  std::string log_samples;
  std::string vocab_dir;
  ModelCliOptions model;
};

struct TaskSource {
  std::string task;
  std::filesystem::path file;
};

// --tasks and --task-file resolved to one data file per task (a --task-file names its task too).
std::vector<TaskSource> task_sources(const EvalCliOptions& o) {
  std::map<std::string, std::filesystem::path> explicit_files;
  std::vector<std::string> order;
  for (const std::string& spec : o.task_files) {
    const size_t eq = spec.find('=');
    require(eq != std::string::npos && eq > 0 && eq + 1 < spec.size(),
            "--task-file expects TASK=PATH, got '" + spec + "'");
    const std::string task = spec.substr(0, eq);
    eval::task_info(task);  // throws for an unknown name
    if (!explicit_files.count(task)) order.push_back(task);
    explicit_files[task] = spec.substr(eq + 1);
  }
  std::vector<std::string> names;
  if (!o.tasks.empty()) {
    for (const std::string& t : eval::python_split(o.tasks, ",")) {
      const std::string name = eval::python_strip(t);
      require(!name.empty(), "--tasks has an empty name in '" + o.tasks + "'");
      names.push_back(name);
    }
  }
  for (const std::string& t : order) {
    if (std::find(names.begin(), names.end(), t) == names.end()) names.push_back(t);
  }
  std::vector<TaskSource> sources;
  for (const std::string& name : names) {
    const eval::TaskInfo& info = eval::task_info(name);
    if (explicit_files.count(name)) {
      sources.push_back({name, explicit_files[name]});
    } else {
      require(!o.data_dir.empty(),
              "task " + name + ": give --data-dir DIR or --task-file " + name + "=PATH");
      sources.push_back({name, eval::find_task_file(info, o.data_dir)});
    }
  }
  return sources;
}

void run_eval(const EvalCliOptions& o) {
  require(o.limit != 0, "--limit must be a positive number of documents (or omitted for all)");
  require(o.limit >= -1, "--limit must be positive");
  require(o.batch_size >= 1, "--batch-size must be >= 1");
  require(o.bootstrap_iters >= 0, "--bootstrap-iters must be >= 0");
  const std::vector<TaskSource> sources = task_sources(o);
  require(!sources.empty() || !o.tokens_file.empty(),
          "nothing to evaluate: give --tasks (and --data-dir / --task-file) or --tokens FILE");
  // Read every data file before loading the model, so a bad file fails fast.
  std::vector<std::vector<eval::EvalDoc>> docs;
  for (const TaskSource& s : sources) {
    docs.push_back(eval::load_task_docs(eval::task_info(s.task), s.file, o.limit));
  }

  LoadModelOptions load;
  load.overrides = o.model.overrides();
  load.layout = o.model.layout();
  load.weights = o.model.weight_format();
  load.log = [](const std::string& line) { std::cerr << "gaincell: " << line << "\n"; };
  auto model = load_model(o.model_dir, load);
  const GPT2Config& config = model->config();

  eval::EvalOptions options;
  options.batch_size = o.batch_size;
  options.share_context = !o.no_share_context;
  options.bootstrap_iters = o.bootstrap_iters;
  if (!o.quiet) options.progress = [](const std::string& line) { std::cerr << line << "\n"; };

  std::vector<eval::TaskResult> results;
  if (!o.tokens_file.empty()) {
    const auto ids = eval::read_token_file(
        o.tokens_file, eval::parse_token_file_format(o.tokens_format), config.vocab_size);
    results.push_back(eval::evaluate_token_stream(*model, ids, -1, options));
  }
  if (!sources.empty()) {
    const Tokenizer tok = Tokenizer::by_name(config.tokenizer, o.vocab_dir);
    for (size_t i = 0; i < sources.size(); i++) {
      results.push_back(eval::evaluate_task(*model, tok, sources[i].task, docs[i], options));
    }
  }

  nlohmann::json report = eval::results_json(results);
  nlohmann::json data_files = nlohmann::json::object();
  for (const TaskSource& s : sources) data_files[s.task] = s.file.string();
  if (!o.tokens_file.empty()) data_files["tokens"] = o.tokens_file;
  report["config"] = {{"model", o.model_dir},
                      {"attention", config.attention},
                      {"window", config.window},
                      {"weights", o.model.weights},
                      {"hw", config.hw.to_json()},
                      {"noise_seed", config.hw.noise.seed},
                      {"n_positions", config.block_size},
                      {"tokenizer", config.tokenizer},
                      {"limit", o.limit > 0 ? nlohmann::json(o.limit) : nlohmann::json(nullptr)},
                      {"batch_size", o.batch_size},
                      {"share_context", !o.no_share_context},
                      {"bootstrap_iters", o.bootstrap_iters},
                      {"bootstrap_seeds", "chunk i of 1000 resamples uses random.Random(i)"},
                      {"num_fewshot", 0},
                      {"data_files", data_files},
                      {"gaincell_version", GAINCELL_VERSION}};
  // Every output is complete before any is written, and each is written atomically.
  if (!o.log_samples.empty()) write_file_atomic(o.log_samples, eval::samples_jsonl(results));
  if (!o.output.empty()) write_file_atomic(o.output, report.dump(2) + "\n");
  if (o.json) {
    std::cout << report.dump(2) << "\n";
  } else {
    std::cout << eval::format_table(results);
  }
}

void setup_eval(CLI::App& app) {
  auto o = std::make_shared<EvalCliOptions>();
  std::string task_names;
  for (const auto& t : eval::task_infos()) task_names += (task_names.empty() ? "" : ", ") + t.name;
  app.footer(
      "Zero-shot, scored exactly as lm-evaluation-harness scores them (docs/evaluation.md): "
      "pair encoding with the trailing space moved, left truncation to n_positions + 1, disjoint "
      "rolling windows for wikitext, acc_norm by characters, lm-eval's stderrs (bootstrap for "
      "lambada perplexity). Data files: Hugging Face JSON lines or the original releases; "
      "--data-dir looks for the names listed in docs/evaluation.md. Progress goes to stderr, "
      "the table (or --json) to stdout.");
  app.add_option("--model", o->model_dir, "model directory (config.json, model.safetensors)")
      ->required();
  app.add_option("--tasks", o->tasks, "comma-separated tasks: " + task_names);
  app.add_option("--data-dir", o->data_dir, "directory holding the tasks' data files");
  app.add_option("--task-file", o->task_files,
                 "TASK=PATH: the data file of one task (repeatable; adds the task)");
  app.add_option("--tokens", o->tokens_file,
                 "also score a pre-tokenised file as one rolling document (task 'tokens': "
                 "token_perplexity); JSON {\"ids\": [...]} or uint16/uint32 ids");
  app.add_option("--tokens-format", o->tokens_format,
                 "auto (JSON, a GCTOKENS header, else uint16), uint16, uint32 (headerless)");
  app.add_option("--limit", o->limit, "score only the first N documents of each task");
  app.add_option("--batch-size", o->batch_size, "requests per whole-sequence forward (default 8)");
  app.add_option("--bootstrap-iters", o->bootstrap_iters,
                 "bootstrap resamples for lambada's perplexity stderr (lm-eval: 100000; 0: none)");
  app.add_flag("--no-share-context", o->no_share_context,
               "score every multiple-choice pair whole instead of reusing the context's decode "
               "state (same numbers, slower)");
  app.add_flag("--json", o->json, "print the JSON report instead of the table");
  app.add_option("--output", o->output, "also write the JSON report to FILE (atomically)");
  app.add_option("--log-samples", o->log_samples,
                 "write one JSON line per scored request to FILE (atomically)");
  app.add_flag("--quiet", o->quiet, "no progress lines on stderr");
  app.add_option("--vocab", o->vocab_dir,
                 "directory with encoder.json and vocab.bpe (default: $GAINCELL_DATA/vocab)");
  add_model_options(app, o->model);
  add_weights_option(app, o->model);
  app.callback([o] { run_eval(*o); });
}

CommandRegistration reg({"eval",
                         "lm-evaluation-harness tasks (ARC, HellaSwag, LAMBADA, PIQA, "
                         "WikiText, WinoGrande) scored as the harness scores them",
                         setup_eval});

}  // namespace
}  // namespace gaincell::cli
