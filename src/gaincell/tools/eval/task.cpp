#include "gaincell/tools/eval/task.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/tools/eval/text_rules.h"

namespace gaincell::eval {

using nlohmann::json;

const std::vector<TaskInfo>& task_infos() {
  static const std::vector<TaskInfo> tasks = {
      {"wikitext",
       OutputType::kLoglikelihoodRolling,
       {"word_perplexity", "byte_perplexity", "bits_per_byte"},
       "test",
       {"wikitext_test.jsonl", "wikitext-2-raw-v1_test.jsonl", "wiki.test.raw"}},
      {"lambada_openai",
       OutputType::kLoglikelihood,
       {"perplexity", "acc"},
       "test",
       {"lambada_openai_test.jsonl", "lambada_test.jsonl"}},
      {"hellaswag",
       OutputType::kMultipleChoice,
       {"acc", "acc_norm"},
       "validation",
       {"hellaswag_validation.jsonl", "hellaswag_val.jsonl"}},
      {"piqa",
       OutputType::kMultipleChoice,
       {"acc", "acc_norm"},
       "validation",
       {"piqa_validation.jsonl", "piqa_valid.jsonl", "valid.jsonl"}},
      {"arc_easy",
       OutputType::kMultipleChoice,
       {"acc", "acc_norm"},
       "test",
       {"arc_easy_test.jsonl", "ARC-Easy-Test.jsonl"}},
      {"arc_challenge",
       OutputType::kMultipleChoice,
       {"acc", "acc_norm"},
       "test",
       {"arc_challenge_test.jsonl", "ARC-Challenge-Test.jsonl"}},
      {"winogrande",
       OutputType::kMultipleChoice,
       {"acc"},
       "validation",
       {"winogrande_validation.jsonl", "winogrande_xl_validation.jsonl", "dev.jsonl"}},
  };
  return tasks;
}

const TaskInfo& task_info(const std::string& name) {
  for (const TaskInfo& t : task_infos()) {
    if (t.name == name) return t;
  }
  std::string names;
  for (const TaskInfo& t : task_infos()) names += (names.empty() ? "" : ", ") + t.name;
  throw Error("unknown task '" + name + "' (known: " + names + ")");
}

std::filesystem::path find_task_file(const TaskInfo& task, const std::filesystem::path& data_dir) {
  std::string tried;
  for (const std::string& name : task.file_names) {
    const auto path = data_dir / name;
    if (std::filesystem::is_regular_file(path)) return path;
    tried += (tried.empty() ? "" : ", ") + name;
  }
  throw Error("task " + task.name + ": no data file in " + data_dir.string() + " (looked for " +
              tried + "; docs/evaluation.md says how to obtain it)");
}

namespace {

// One JSON row and where it came from, for error messages.
struct Row {
  const std::filesystem::path* file;
  int64_t line;  // 1-based
  json value;

  std::string where() const { return file->string() + ":" + std::to_string(line); }
  [[noreturn]] void fail(const std::string& field, const std::string& problem) const {
    throw Error(where() + ": field '" + field + "' " + problem);
  }
  const json& field(const json& object, const std::string& key, const std::string& path) const {
    if (!object.is_object() || !object.contains(key)) fail(path, "is missing");
    return object.at(key);
  }
  std::string string(const json& object, const std::string& key, const std::string& path) const {
    const json& v = field(object, key, path);
    if (!v.is_string()) fail(path, "must be a string");
    return v.get<std::string>();
  }
  std::string string(const std::string& key) const { return string(value, key, key); }
  std::vector<std::string> strings(const json& object, const std::string& key,
                                   const std::string& path) const {
    const json& v = field(object, key, path);
    if (!v.is_array() || v.empty()) fail(path, "must be a non-empty list of strings");
    std::vector<std::string> out;
    for (const json& s : v) {
      if (!s.is_string()) fail(path, "must be a non-empty list of strings");
      out.push_back(s.get<std::string>());
    }
    return out;
  }
  // int(x) of an integer or a string holding one (as lm-eval's templates convert labels).
  int64_t integer(const std::string& key) const {
    const json& v = field(value, key, key);
    if (v.is_number_integer()) return json_int<int64_t>(v, where() + ": field '" + key + "'");
    if (v.is_string()) {
      const std::string s = python_strip(v.get<std::string>());
      if (!s.empty() && s.size() < 10 &&
          std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        return std::stoll(s);
      }
    }
    fail(key, "must be an integer or a string holding one");
  }
};

bool is_blank(const std::string& line) {
  return python_strip(line).empty();
}

// The rows of a JSON-lines file; a blank line is an error except at the very end.
std::vector<Row> read_json_lines(const std::filesystem::path& file, int64_t limit) {
  const std::string text = read_text_file(file);
  std::vector<std::string> lines = python_split(text, "\n");
  while (!lines.empty() && is_blank(lines.back())) lines.pop_back();
  std::vector<Row> rows;
  for (size_t i = 0; i < lines.size(); i++) {
    if (limit >= 0 && static_cast<int64_t>(rows.size()) >= limit) break;
    const int64_t line = static_cast<int64_t>(i) + 1;
    if (is_blank(lines[i])) {
      throw Error(file.string() + ":" + std::to_string(line) + ": empty line in a JSON-lines file");
    }
    Row row{&file, line, {}};
    // The hardened reader: nesting limit, 1e999 and duplicate keys are errors naming the line.
    row.value = parse_json(lines[i], row.where());
    if (!row.value.is_object()) {
      throw Error(file.string() + ":" + std::to_string(line) + ": expected a JSON object");
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

bool is_json_lines_name(const std::filesystem::path& file) {
  const std::string ext = file.extension().string();
  return ext == ".jsonl" || ext == ".json";
}

// The multiple-choice requests of lm-eval: (context, target_delimiter + choice) per choice.
EvalDoc multiple_choice_doc(int64_t index, const std::string& context,
                            std::vector<std::string> choices, int64_t gold, const Row& row,
                            const std::string& gold_field) {
  if (gold < 0 || gold >= static_cast<int64_t>(choices.size())) {
    row.fail(gold_field, "gives the answer " + std::to_string(gold) + ", outside the " +
                             std::to_string(choices.size()) + " choices");
  }
  EvalDoc doc;
  doc.index = index;
  for (const std::string& choice : choices) doc.requests.push_back({context, " " + choice});
  doc.choices = std::move(choices);
  doc.gold = static_cast<int>(gold);
  return doc;
}

EvalDoc wikitext_doc(int64_t index, const std::string& page) {
  EvalDoc doc;
  doc.index = index;
  doc.requests.push_back({"", wikitext_detokenizer(page)});
  doc.words = count_words(page);
  doc.bytes = static_cast<int64_t>(page.size());
  return doc;
}

std::vector<EvalDoc> load_wikitext(const std::filesystem::path& file, int64_t limit) {
  std::vector<EvalDoc> docs;
  if (!is_json_lines_name(file)) {
    const std::vector<std::string> pages = split_wikitext_documents(read_text_file(file));
    for (size_t i = 0; i < pages.size(); i++) {
      if (limit >= 0 && static_cast<int64_t>(docs.size()) >= limit) break;
      docs.push_back(wikitext_doc(static_cast<int64_t>(i), pages[i]));
    }
    return docs;
  }
  const std::vector<Row> rows = read_json_lines(file, limit);
  for (size_t i = 0; i < rows.size(); i++) {
    docs.push_back(wikitext_doc(static_cast<int64_t>(i), rows[i].string("page")));
  }
  return docs;
}

std::vector<EvalDoc> load_lambada(const std::filesystem::path& file, int64_t limit) {
  std::vector<EvalDoc> docs;
  const std::vector<Row> rows = read_json_lines(file, limit);
  for (size_t i = 0; i < rows.size(); i++) {
    // doc_to_text "{{text.split(' ')[:-1]|join(' ')}}", doc_to_target "{{' '+text.split(' ')[-1]}}"
    const std::vector<std::string> words = python_split(rows[i].string("text"), " ");
    std::string context;
    for (size_t w = 0; w + 1 < words.size(); w++) context += (w ? " " : "") + words[w];
    EvalDoc doc;
    doc.index = static_cast<int64_t>(i);
    doc.requests.push_back({context, " " + words.back()});
    docs.push_back(std::move(doc));
  }
  return docs;
}

std::vector<EvalDoc> load_hellaswag(const std::filesystem::path& file, int64_t limit) {
  std::vector<EvalDoc> docs;
  const std::vector<Row> rows = read_json_lines(file, limit);
  for (size_t i = 0; i < rows.size(); i++) {
    const Row& r = rows[i];
    const std::string ctx = r.string("ctx_a") + " " + python_capitalize(r.string("ctx_b"));
    const std::string query = hellaswag_preprocess(r.string("activity_label") + ": " + ctx);
    std::vector<std::string> choices;
    for (const std::string& ending : r.strings(r.value, "endings", "endings")) {
      choices.push_back(hellaswag_preprocess(ending));
    }
    docs.push_back(multiple_choice_doc(static_cast<int64_t>(i), query, std::move(choices),
                                       r.integer("label"), r, "label"));
  }
  return docs;
}

// The labels file of the original PIQA release beside `file` (valid.jsonl -> valid-labels.lst).
std::vector<int64_t> read_piqa_labels(const std::filesystem::path& file) {
  const std::string stem = file.stem().string();
  std::filesystem::path labels;
  for (const char* suffix : {"-labels.lst", "_labels.lst"}) {
    const auto candidate = file.parent_path() / (stem + suffix);
    if (std::filesystem::is_regular_file(candidate)) {
      labels = candidate;
      break;
    }
  }
  if (labels.empty()) {
    throw Error(file.string() + ": rows have no 'label' and no labels file " + stem +
                "-labels.lst or " + stem + "_labels.lst is beside it");
  }
  std::vector<std::string> lines = python_split(read_text_file(labels), "\n");
  while (!lines.empty() && is_blank(lines.back())) lines.pop_back();
  std::vector<int64_t> out;
  for (size_t i = 0; i < lines.size(); i++) {
    const std::string s = python_strip(lines[i]);
    if (s != "0" && s != "1") {
      throw Error(labels.string() + ":" + std::to_string(i + 1) + ": label must be 0 or 1, got '" +
                  s + "'");
    }
    out.push_back(s == "1");
  }
  return out;
}

std::vector<EvalDoc> load_piqa(const std::filesystem::path& file, int64_t limit) {
  std::vector<EvalDoc> docs;
  const std::vector<Row> rows = read_json_lines(file, limit);
  std::vector<int64_t> labels;
  const bool labels_in_rows = !rows.empty() && rows[0].value.contains("label");
  if (!labels_in_rows && !rows.empty()) {
    labels = read_piqa_labels(file);
    const size_t total_rows = read_json_lines(file, -1).size();
    require(labels.size() == total_rows, file.string() + ": " + std::to_string(total_rows) +
                                             " rows but the labels file has " +
                                             std::to_string(labels.size()) + " labels");
  }
  for (size_t i = 0; i < rows.size(); i++) {
    const Row& r = rows[i];
    const int64_t gold = labels_in_rows ? r.integer("label") : labels[i];
    docs.push_back(multiple_choice_doc(static_cast<int64_t>(i),
                                       "Question: " + r.string("goal") + "\nAnswer:",
                                       {r.string("sol1"), r.string("sol2")}, gold, r, "label"));
  }
  return docs;
}

std::vector<EvalDoc> load_arc(const std::filesystem::path& file, int64_t limit) {
  std::vector<EvalDoc> docs;
  const std::vector<Row> rows = read_json_lines(file, limit);
  for (size_t i = 0; i < rows.size(); i++) {
    const Row& r = rows[i];
    std::string question;
    std::vector<std::string> texts, labels;
    const json& q = r.field(r.value, "question", "question");
    if (q.is_object()) {  // the original release: question.stem, question.choices[{text, label}]
      question = r.string(q, "stem", "question.stem");
      const json& choices = r.field(q, "choices", "question.choices");
      if (!choices.is_array() || choices.empty()) {
        r.fail("question.choices", "must be a non-empty list");
      }
      for (const json& c : choices) {
        texts.push_back(r.string(c, "text", "question.choices.text"));
        labels.push_back(r.string(c, "label", "question.choices.label"));
      }
    } else {  // allenai/ai2_arc: question, choices.text, choices.label
      question = r.string("question");
      const json& choices = r.field(r.value, "choices", "choices");
      texts = r.strings(choices, "text", "choices.text");
      labels = r.strings(choices, "label", "choices.label");
      if (texts.size() != labels.size()) {
        r.fail("choices", "has " + std::to_string(texts.size()) + " texts but " +
                              std::to_string(labels.size()) + " labels");
      }
    }
    // doc_to_target "{{choices.label.index(answerKey)}}"
    const std::string key = r.string("answerKey");
    const auto it = std::find(labels.begin(), labels.end(), key);
    if (it == labels.end()) r.fail("answerKey", "'" + key + "' is not one of the choice labels");
    docs.push_back(multiple_choice_doc(static_cast<int64_t>(i),
                                       "Question: " + question + "\nAnswer:", std::move(texts),
                                       it - labels.begin(), r, "answerKey"));
  }
  return docs;
}

std::vector<EvalDoc> load_winogrande(const std::filesystem::path& file, int64_t limit) {
  std::vector<EvalDoc> docs;
  const std::vector<Row> rows = read_json_lines(file, limit);
  for (size_t i = 0; i < rows.size(); i++) {
    const Row& r = rows[i];
    const std::string sentence = r.string("sentence");
    const size_t blank = sentence.find('_');
    if (blank == std::string::npos) r.fail("sentence", "has no '_' blank");
    // preprocess_winogrande.py: one context per option (sentence[:blank] + option), the shared
    // continuation " " + sentence[blank + 1:].strip(), gold = answer - 1.
    const std::string target = python_strip(std::string_view(sentence).substr(blank + 1));
    const int64_t answer = r.integer("answer");
    if (answer != 1 && answer != 2) r.fail("answer", "must be 1 or 2");
    EvalDoc doc;
    doc.index = static_cast<int64_t>(i);
    for (const std::string& option : {r.string("option1"), r.string("option2")}) {
      doc.choices.push_back(sentence.substr(0, blank) + option);
      doc.requests.push_back({doc.choices.back(), " " + target});
    }
    doc.gold = static_cast<int>(answer - 1);
    docs.push_back(std::move(doc));
  }
  return docs;
}

}  // namespace

std::vector<EvalDoc> load_task_docs(const TaskInfo& task, const std::filesystem::path& file,
                                    int64_t limit) {
  require(std::filesystem::exists(file),
          "task " + task.name + ": data file " + file.string() + " does not exist");
  std::vector<EvalDoc> docs;
  if (task.name == "wikitext") {
    docs = load_wikitext(file, limit);
  } else if (task.name == "lambada_openai") {
    docs = load_lambada(file, limit);
  } else if (task.name == "hellaswag") {
    docs = load_hellaswag(file, limit);
  } else if (task.name == "piqa") {
    docs = load_piqa(file, limit);
  } else if (task.name == "arc_easy" || task.name == "arc_challenge") {
    docs = load_arc(file, limit);
  } else if (task.name == "winogrande") {
    docs = load_winogrande(file, limit);
  } else {
    throw Error("task " + task.name + " has no reader");
  }
  require(!docs.empty(), "task " + task.name + ": " + file.string() + " holds no documents");
  return docs;
}

}  // namespace gaincell::eval
