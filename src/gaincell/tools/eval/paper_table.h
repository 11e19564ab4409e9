// The paper's Table 1 in one command (issue 10 item 8): run the recipe (tools/pipeline: stage A
// linear hardware, B adaptation, C nonlinear fine-tuning), evaluate the public model, the linear
// hardware model (A), the adapted nonlinear model (B) and the fine-tuned nonlinear model (C) on the
// seven tasks with the lm-eval rules (eval.h), and lay the results out as the paper does (per-task
// metrics, the average accuracy) beside the paper's published figures (spec §8.1).
//
// Resumable like the pipeline: finished stages are skipped, and each model's evaluation is stored
// in out_dir/eval/<model>.json (atomically) and reused when the evaluation settings match.
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/tools/pipeline/pipeline.h"

namespace gaincell::eval {

struct PaperTableOptions {
  PipelineOptions pipeline;             // out_dir is set to out_dir / "pipeline"
  std::filesystem::path eval_data_dir;  // the tasks' data files (find_task_file names)
  std::filesystem::path out_dir;
  std::filesystem::path vocab_dir;  // GPT-2 vocabulary; empty = the default
  std::vector<std::string> tasks = {"arc_easy",       "arc_challenge", "winogrande", "hellaswag",
                                    "lambada_openai", "piqa",          "wikitext"};
  int64_t limit = -1;  // documents per task (< 0: all)
  int batch_size = 8;
  int bootstrap_iters = 100000;
};

// Runs (or resumes) everything; writes out_dir/table.md and out_dir/table.json and returns the
// JSON: {"models": [{"key", "label", "dir", "results": {task: {metric: value}}, "avg_acc"}],
// "paper": [...], "columns": [...]}.
nlohmann::json run_paper_table(const PaperTableOptions& options,
                               const std::function<void(const std::string&)>& log = {});

// The Markdown table of a run_paper_table() result.
std::string paper_table_markdown(const nlohmann::json& table);

}  // namespace gaincell::eval
