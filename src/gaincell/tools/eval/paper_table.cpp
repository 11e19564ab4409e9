#include "gaincell/tools/eval/paper_table.h"

#include <cmath>
#include <cstdio>
#include <map>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/eval/eval.h"

namespace gaincell::eval {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

struct ModelRow {
  const char* key;
  const char* label;
};

// The four models of the paper's table that the recipe produces, in the paper's order.
const ModelRow kRows[] = {
    {"public", "Public GPT-2 (softmax)"},
    {"linear", "Linear hardware model (A)"},
    {"adapted", "Nonlinear hardware model, adapted, no fine-tuning (B)"},
    {"finetuned", "Nonlinear hardware model, adapted + fine-tuned (C)"},
};

// The accuracy tasks averaged into "Avg accuracy" (the paper's six accuracy benchmarks, spec §7),
// and the table's columns: (task, metric, header).
const char* kAccuracyTasks[] = {"arc_easy",  "arc_challenge",  "winogrande",
                                "hellaswag", "lambada_openai", "piqa"};
struct Column {
  const char* task;
  const char* metric;
  const char* header;
};
const Column kColumns[] = {
    {"arc_easy", "acc", "ARC-E acc"},
    {"arc_challenge", "acc", "ARC-C acc"},
    {"winogrande", "acc", "WinoGr. acc"},
    {"hellaswag", "acc", "HellaS. acc"},
    {"lambada_openai", "acc", "LAMBADA acc"},
    {"piqa", "acc", "PIQA acc"},
    {"wikitext", "word_perplexity", "WikiText-2 word ppl"},
    {"lambada_openai", "perplexity", "LAMBADA ppl"},
};

// Spec §8.1: the figures the paper publishes (the per-benchmark values are not transcribed).
json paper_figures() {
  return json::array({{{"label", "Public GPT-2 (124M), paper"}, {"avg_acc", 43.02}, {"ppl", 36.26}},
                      {{"label", "GPT-2 trained from scratch (software, 13k it), paper"},
                       {"avg_acc", 41.46},
                       {"ppl", 43.82}}});
}

fs::path model_dir(const PaperTableOptions& o, const std::string& key) {
  if (key == "public") return o.pipeline.init_dir;
  const fs::path run = o.out_dir / "pipeline";
  if (key == "linear") return run / "A";
  if (key == "adapted") return run / "B";
  return run / "C";
}

// What an evaluation depends on besides the model: a stored one is reused only if this matches.
json eval_settings(const PaperTableOptions& o, const json& files) {
  return {{"tasks", o.tasks},
          {"limit", o.limit},
          {"files", files},
          {"bootstrap_iters", o.bootstrap_iters},
          {"num_fewshot", 0}};
}

json evaluate_model(const fs::path& dir, const Tokenizer& tok,
                    const std::vector<std::vector<EvalDoc>>& docs, const PaperTableOptions& o,
                    const std::function<void(const std::string&)>& log) {
  auto model = load_model(dir);
  EvalOptions e;
  e.batch_size = o.batch_size;
  e.bootstrap_iters = o.bootstrap_iters;
  e.progress = log;
  std::vector<TaskResult> results;
  for (size_t i = 0; i < o.tasks.size(); i++) {
    results.push_back(evaluate_task(*model, tok, o.tasks[i], docs[i], e));
  }
  json r = results_json(results)["results"];
  r["_attention"] = model->config().attention;
  return r;
}

double average_accuracy(const json& results) {
  double sum = 0;
  int n = 0;
  for (const char* task : kAccuracyTasks) {
    if (results.contains(task) && results[task].contains("acc")) {
      sum += results[task]["acc"].get<double>();
      n++;
    }
  }
  return n > 0 ? 100.0 * sum / n : NAN;
}

}  // namespace

json run_paper_table(const PaperTableOptions& o,
                     const std::function<void(const std::string&)>& log) {
  require(!o.out_dir.empty(), "paper-table: an output directory is required");
  require(!o.tasks.empty(), "paper-table: no tasks");
  require(o.limit != 0, "paper-table: --limit must be positive (or omitted for all documents)");
  auto say = [&](const std::string& line) {
    if (log) log(line);
  };
  // Every data file is read first, so a missing one fails before hours of training.
  std::vector<std::vector<EvalDoc>> docs;
  json files = json::object();
  for (const std::string& task : o.tasks) {
    const TaskInfo& info = task_info(task);
    const fs::path file = find_task_file(info, o.eval_data_dir);
    docs.push_back(load_task_docs(info, file, o.limit));
    files[task] = file.string();
  }
  PipelineOptions p = o.pipeline;
  p.out_dir = o.out_dir / "pipeline";
  const json pipeline = run_pipeline(p, [&](const std::string& line) { say("pipeline: " + line); });

  const Tokenizer tok =
      Tokenizer::by_name(read_model_config(o.pipeline.init_dir).tokenizer, o.vocab_dir);
  const json settings = eval_settings(o, files);
  fs::create_directories(o.out_dir / "eval");
  json table = {{"models", json::array()},
                {"paper", paper_figures()},
                {"columns", json::array()},
                {"settings", settings},
                {"gaincell_version", GAINCELL_VERSION}};
  for (const Column& c : kColumns)
    table["columns"].push_back({{"task", c.task}, {"metric", c.metric}, {"header", c.header}});
  const std::map<std::string, const char*> stage_of = {
      {"public", "init"}, {"linear", "A"}, {"adapted", "B"}, {"finetuned", "C"}};
  for (const ModelRow& row : kRows) {
    const fs::path dir = model_dir(o, row.key);
    const fs::path cache = o.out_dir / "eval" / (std::string(row.key) + ".json");
    json results;
    if (fs::exists(cache)) {
      json stored;
      try {
        stored = read_json_file(cache);
      } catch (const Error& e) {  // a damaged cache is evaluated again, and rewritten
        say(std::string(e.what()) + "; evaluating again");
      }
      if (stored.is_object() && stored.value("settings", json()) == settings &&
          stored.contains("results")) {
        results = stored["results"];
        say(std::string(row.key) + ": evaluation found in " + cache.string());
      }
    }
    if (results.is_null()) {
      say(std::string(row.key) + ": evaluating " + dir.string());
      results = evaluate_model(dir, tok, docs, o, say);
      write_file_atomic(cache, json({{"settings", settings}, {"results", results}}).dump(2) + "\n");
    }
    json entry = {{"key", row.key},
                  {"label", row.label},
                  {"dir", dir.string()},
                  {"results", results},
                  {"avg_acc", average_accuracy(results)}};
    const json& stage = pipeline.value(stage_of.at(row.key), json::object());
    if (stage.contains("val_ppl")) entry["val_ppl"] = stage["val_ppl"];
    table["models"].push_back(entry);
  }
  write_file_atomic(o.out_dir / "table.json", table.dump(2) + "\n");
  write_file_atomic(o.out_dir / "table.md", paper_table_markdown(table));
  return table;
}

std::string paper_table_markdown(const json& table) {
  auto cell = [](const json& v, bool percent) {
    if (!v.is_number() || !std::isfinite(v.get<double>())) return std::string("—");
    char b[32];
    std::snprintf(b, sizeof b, "%.2f", percent ? 100.0 * v.get<double>() : v.get<double>());
    return std::string(b);
  };
  // Appended piece by piece (GCC 12 warns falsely on chains of string + literal).
  std::string md = "| Model |";
  std::string rule = "|---|";
  auto add_cell = [&md](const std::string& text) {
    md += ' ';
    md += text;
    md += " |";
  };
  for (const json& c : table["columns"]) {
    add_cell(c["header"].get<std::string>());
    rule += "---:|";
  }
  add_cell("Avg acc");
  add_cell("val ppl (token)");
  md += '\n';
  md += rule;
  md += "---:|---:|\n";
  for (const json& m : table["models"]) {
    md += '|';
    add_cell(m["label"].get<std::string>());
    for (const json& c : table["columns"]) {
      const std::string task = c["task"], metric = c["metric"];
      const json& r = m["results"];
      const json v = r.contains(task) && r[task].contains(metric) ? r[task][metric] : json();
      add_cell(cell(v, metric == "acc"));
    }
    add_cell(cell(m["avg_acc"], false));
    add_cell(cell(m.value("val_ppl", json()), false));
    md += '\n';
  }
  for (const json& p : table["paper"]) {
    md += '|';
    add_cell(p["label"].get<std::string>());
    for (size_t i = 0; i < table["columns"].size(); i++) add_cell("");
    add_cell(cell(p["avg_acc"], false));
    add_cell(cell(p["ppl"], false) + " (as given)");
    md += '\n';
  }
  md +=
      "\nAccuracies in %, zero-shot, scored with lm-evaluation-harness's rules "
      "(docs/evaluation.md); "
      "Avg acc = mean acc of ARC-E, ARC-C, WinoGrande, HellaSwag, LAMBADA, PIQA. The paper's "
      "per-benchmark values are not transcribed (spec §8.1); its \"ppl\" column is as given.\n";
  return md;
}

}  // namespace gaincell::eval
