// The evaluation tasks of lm-evaluation-harness that the paper's table uses (zero-shot, the
// harness's names, prompts and metrics; lm_eval/tasks/<task>/*.yaml), and readers for the files
// users have: the Hugging Face datasets' JSON lines and the original releases.
//
// A task turns each data row into an EvalDoc: the (context, continuation) strings lm-eval would
// request, the choice strings (acc_norm divides by their length in characters) and the gold index.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace gaincell::eval {

// lm-eval's output_type.
enum class OutputType { kLoglikelihood, kMultipleChoice, kLoglikelihoodRolling };

// One (context, continuation) request as strings; an empty context means lm-eval's prefix token.
struct TextRequest {
  std::string context;
  std::string continuation;
};

struct EvalDoc {
  int64_t index = 0;                  // row in the data file (0-based)
  std::vector<TextRequest> requests;  // loglikelihood and rolling: 1; multiple choice: 1 per choice
  std::vector<std::string> choices;   // multiple choice: doc_to_choice (without the delimiter)
  int gold = -1;                      // multiple choice: the correct choice
  // loglikelihood_rolling: words (len(re.split(r"\s+", page))) and UTF-8 bytes of the original,
  // undetokenised page.
  int64_t words = 0;
  int64_t bytes = 0;
};

struct TaskInfo {
  std::string name;  // lm-eval's task name
  OutputType type;
  std::vector<std::string> metrics;  // in lm-eval's order
  std::string split;                 // the split lm-eval scores
  // File names looked for in --data-dir, first match wins (the HF export, then the original).
  std::vector<std::string> file_names;
};

// wikitext, lambada_openai, hellaswag, piqa, arc_easy, arc_challenge, winogrande.
const std::vector<TaskInfo>& task_infos();
// Throws gaincell::Error listing the known names for an unknown one.
const TaskInfo& task_info(const std::string& name);

// The data file of a task in `data_dir` (the first of TaskInfo::file_names that exists); throws
// naming the files looked for.
std::filesystem::path find_task_file(const TaskInfo& task, const std::filesystem::path& data_dir);

// Reads a task's documents. Formats (by content, not by name):
//   wikitext        JSON lines {"page": ...} (EleutherAI/wikitext_document_level), or a raw file
//                   such as wiki.test.raw (not ending in .jsonl / .json), split into documents
//                   exactly as that dataset's script does (split_wikitext_documents)
//   lambada_openai  {"text": ...}
//   hellaswag       {"activity_label", "ctx_a", "ctx_b", "endings": [...], "label": 2 or "2"}
//   piqa            {"goal", "sol1", "sol2", "label"} (baber/piqa); or the original valid.jsonl
//                   without "label" and its labels file beside it: <stem>-labels.lst or
//                   <stem>_labels.lst (one 0/1 per line)
//   arc_*           {"question": str, "choices": {"text": [...], "label": [...]}, "answerKey"}
//                   (allenai/ai2_arc) or the original {"question": {"stem", "choices": [{"text",
//                   "label"}]}, "answerKey"}; numeric keys ("1".."5") are labels like any other
//   winogrande      {"sentence" with one "_", "option1", "option2", "answer": "1"/"2" or 1/2}
// `limit` >= 0 keeps the first `limit` rows (lm-eval's --limit); < 0 keeps all. Every malformed
// row is an error naming the file, line and field; an empty data set is an error.
std::vector<EvalDoc> load_task_docs(const TaskInfo& task, const std::filesystem::path& file,
                                    int64_t limit = -1);

}  // namespace gaincell::eval
