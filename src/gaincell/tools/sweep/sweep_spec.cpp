#include "gaincell/tools/sweep/sweep_spec.h"

#include <algorithm>
#include <set>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/weight_storage.h"
#include "gaincell/tools/eval/task.h"

namespace gaincell::sweep {

using nlohmann::json;
using nlohmann::ordered_json;
namespace fs = std::filesystem;

namespace {

// Reads one JSON object of the sweep file: typed getters that name the field, and a check that
// no key was left unread (a misspelt key is an error, not a silent default).
class SpecReader {
 public:
  SpecReader(const ordered_json& j, std::string path) : j_(j), path_(std::move(path)) {
    if (!j_.is_object()) fail(where(), "must be a JSON object");
  }

  const ordered_json* find(const char* key) {
    seen_.insert(key);
    auto it = j_.find(key);
    return it == j_.end() ? nullptr : &*it;
  }
  void get(const char* key, std::string& out) {
    if (const auto* v = find(key)) {
      if (!v->is_string()) fail(field(key), "must be a string");
      out = v->get<std::string>();
    }
  }
  // An integer that fits T exactly (4294967312 into an int, -1 into a uint64_t are errors, not
  // wrapped values) and is >= min.
  template <typename T>
  void get_int(const char* key, T& out, std::type_identity_t<T> min) {
    if (const auto* v = find(key)) {
      if (!v->is_number_integer()) fail(field(key), "must be an integer");
      const T x = json_int<T>(json(*v), "sweep file: '" + field(key) + "'");
      if (x < min) fail(field(key), "must be >= " + std::to_string(min));
      out = x;
    }
  }
  void get_positive(const char* key, float& out) {
    if (const auto* v = find(key)) {
      if (!v->is_number() || !(v->get<double>() > 0.0)) fail(field(key), "must be a number > 0");
      out = json_float(json(*v), "sweep file: '" + field(key) + "'");
    }
  }
  void get_path(const char* key, fs::path& out, const fs::path& dir) {
    std::string s;
    get(key, s);
    if (!s.empty()) out = fs::path(s).is_absolute() ? fs::path(s) : dir / s;
  }
  void reject_unknown() const {
    for (auto it = j_.begin(); it != j_.end(); ++it)
      if (!seen_.count(it.key())) fail(field(it.key().c_str()), "is not a known sweep-file key");
  }
  std::string field(const char* key) const { return path_.empty() ? key : path_ + "." + key; }
  std::string where() const { return path_.empty() ? "<top level>" : path_; }
  [[noreturn]] static void fail(const std::string& field, const std::string& why) {
    throw Error("sweep file: '" + field + "' " + why);
  }

 private:
  const ordered_json& j_;
  std::string path_;
  std::set<std::string> seen_;
};

json to_plain(const ordered_json& j) {
  return json(j);
}

std::vector<json> axis_values(const ordered_json& v, const std::string& field) {
  if (!v.is_array()) SpecReader::fail("axes." + field, "must be an array of values");
  if (v.empty()) SpecReader::fail("axes." + field, "is empty (an axis needs at least one value)");
  std::vector<json> out;
  for (const auto& x : v) {
    if (!x.is_primitive() || x.is_null())
      SpecReader::fail("axes." + field, "holds a value that is not a number, string or boolean");
    out.push_back(to_plain(x));
  }
  return out;
}

// Fields HwConfig::to_json() writes for readers but from_json() ignores.
bool is_derived_field(const std::string& field) {
  for (const char* derived : {"cell.alphas", "leakage.effective_lambda", "name"}) {
    const std::string d = derived;
    if (field == d || field.rfind(d + ".", 0) == 0) return true;
  }
  return false;
}

std::vector<std::string> split_path(const std::string& field) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    const size_t dot = field.find('.', start);
    parts.push_back(field.substr(start, dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

}  // namespace

void set_hw_field(json& config, const std::string& field, const json& value) {
  require(!field.empty(), "sweep file: an axis has an empty field name");
  if (is_derived_field(field))
    throw Error("sweep file: hardware field '" + field +
                "' is derived or descriptive and cannot be swept");
  json* node = &config;
  std::string walked;
  for (const std::string& part : split_path(field)) {
    const std::string parent = walked.empty() ? "<top level>" : walked;
    walked += (walked.empty() ? "" : ".") + part;
    if (node->is_array()) {
      size_t pos = 0;
      size_t index = 0;
      try {
        index = std::stoul(part, &pos);
      } catch (const std::exception&) {
        pos = 0;
      }
      if (pos != part.size() || part.empty() || index >= node->size())
        throw Error("sweep file: hardware field '" + field + "': '" + part +
                    "' is not an index of the array '" + parent + "' (size " +
                    std::to_string(node->size()) + ")");
      node = &(*node)[index];
      continue;
    }
    if (!node->is_object() || !node->contains(part)) {
      std::string known;
      if (node->is_object())
        for (auto it = node->begin(); it != node->end(); ++it)
          known += (known.empty() ? "" : ", ") + it.key();
      throw Error("sweep file: unknown hardware field '" + field + "'" +
                  (known.empty() ? "" : " (fields of " + parent + ": " + known + ")"));
    }
    node = &(*node)[part];
  }
  if (node->is_object() || node->is_array())
    throw Error("sweep file: hardware field '" + field +
                "' is a group; name one of its fields (e.g. '" + field + "." +
                (node->is_object() && !node->empty() ? node->begin().key() : std::string("0")) +
                "')");
  *node = value;
}

ordered_json EvaluationSpec::to_json() const {
  ordered_json j = {{"type", type}, {"limit", limit}};
  if (type == "perplexity") {
    if (!tokens.empty()) j["tokens"] = tokens.string();
    j["context"] = context;
    j["stride"] = stride;
  } else {
    j["tasks"] = tasks;
    if (!data_dir.empty()) j["data_dir"] = data_dir.string();
    if (!vocab.empty()) j["vocab"] = vocab.string();
    j["batch_size"] = batch_size;
  }
  return j;
}

ordered_json PrepareSpec::to_json() const {
  ordered_json j = {{"adapt", adapt}};
  if (!tokens.empty()) j["tokens"] = tokens.string();
  j["batch"] = batch;
  j["seq_len"] = seq_len;
  j["batch_seed"] = batch_seed;
  j["max_passes"] = max_passes;
  j["finetune_steps"] = finetune_steps;
  j["finetune_lr"] = finetune_lr;
  j["finetune_batch"] = finetune_batch;
  return j;
}

ordered_json CostSpec::to_json() const {
  return {{"preset", preset}, {"tokens", tokens}, {"batch", batch}};
}

json SweepPoint::axes_json() const {
  json j = json::object();
  for (const auto& [field, value] : values) j[field] = value;
  return j;
}

std::string SweepPoint::label() const {
  std::string s;
  for (const auto& [field, value] : values)
    s += (s.empty() ? "" : ", ") + field + "=" +
         (value.is_string() ? value.get<std::string>() : value.dump());
  return s.empty() ? "base" : s;
}

HwConfig SweepSpec::base_hw() const {
  try {
    if (base.is_object()) return HwConfig::from_json(base, dir.string());
    const std::string name = base.get<std::string>();
    for (const auto& preset : HwConfig::preset_names())
      if (preset == name) return HwConfig::preset(name);
    const fs::path file = fs::path(name).is_absolute() ? fs::path(name) : dir / name;
    return HwConfig::load(file.string());
  } catch (const Error& e) {
    throw Error(std::string("sweep file: 'base': ") + e.what());
  }
}

std::vector<SweepPoint> SweepSpec::points() const {
  const HwConfig base_config = base_hw();
  const json base_json = base_config.to_json();
  std::vector<std::vector<std::pair<std::string, json>>> combos;
  if (mode == "grid") {
    // The product is checked before it is built: a few long axes would otherwise exhaust memory
    // (and no machine runs that many points).
    double count = 1;
    for (const Axis& axis : axes) count *= static_cast<double>(axis.values.size());
    if (count > kMaxSweepPoints)
      throw Error("sweep file: the grid has " +
                  std::to_string(static_cast<unsigned long long>(std::min(count, 1e18))) +
                  " points, more than " + std::to_string(kMaxSweepPoints) +
                  "; use fewer or shorter axes (or a list of points)");
    combos.emplace_back();
    for (const Axis& axis : axes) {
      std::vector<std::vector<std::pair<std::string, json>>> next;
      for (const auto& combo : combos) {
        for (const json& v : axis.values) {
          next.push_back(combo);
          next.back().emplace_back(axis.field, v);
        }
      }
      combos = std::move(next);
    }
  } else {
    for (const ordered_json& p : list_points) {
      std::vector<std::pair<std::string, json>> combo;
      for (const Axis& axis : axes)
        if (p.contains(axis.field)) combo.emplace_back(axis.field, to_plain(p.at(axis.field)));
      combos.push_back(std::move(combo));
    }
  }
  std::vector<SweepPoint> out;
  for (size_t i = 0; i < combos.size(); ++i) {
    SweepPoint point;
    point.index = static_cast<int>(i);
    point.values = combos[i];
    json config = base_json;
    try {
      for (const auto& [field, value] : point.values) set_hw_field(config, field, value);
      point.hw = HwConfig::from_json(config, dir.string());
    } catch (const Error& e) {
      throw Error("sweep point " + std::to_string(i) + " (" + point.label() + "): " + e.what());
    }
    out.push_back(std::move(point));
  }
  return out;
}

ordered_json SweepSpec::to_json() const {
  ordered_json j;
  j["name"] = name;
  j["base"] = ordered_json(base);
  if (!attention.empty()) j["attention"] = attention;
  if (mode == "grid") {
    ordered_json a = ordered_json::object();
    for (const Axis& axis : axes) a[axis.field] = ordered_json(json(axis.values));
    j["axes"] = a;
  } else {
    j["points"] = list_points;
  }
  j["evaluation"] = evaluation.to_json();
  j["prepare"] = prepare.to_json();
  j["seeds"] = seeds;
  if (weights != "f32") j["weights"] = weights;  // absent = f32: older sweep records still match
  j["cost"] = cost.to_json();
  if (!objective.empty()) j["objective"] = objective;
  return j;
}

namespace {

void read_evaluation(const ordered_json& j, const fs::path& dir, EvaluationSpec& e) {
  SpecReader r(j, "evaluation");
  r.get("type", e.type);
  if (e.type != "perplexity" && e.type != "tasks")
    SpecReader::fail("evaluation.type", "must be 'perplexity' or 'tasks' (got '" + e.type + "')");
  r.get_path("tokens", e.tokens, dir);
  r.get_int("limit", e.limit, 0);
  r.get_int("context", e.context, 0);
  r.get_int("stride", e.stride, 0);
  r.get_path("data_dir", e.data_dir, dir);
  r.get_path("vocab", e.vocab, dir);
  r.get_int("batch_size", e.batch_size, 1);
  if (const auto* t = r.find("tasks")) {
    if (!t->is_array() || t->empty())
      SpecReader::fail("evaluation.tasks", "must be a non-empty array of task names or files");
    for (const auto& x : *t) {
      if (!x.is_string()) SpecReader::fail("evaluation.tasks", "must hold strings");
      std::string entry = x.get<std::string>();
      try {
        eval::task_info(entry.substr(0, entry.find('=')));
      } catch (const Error& err) {
        SpecReader::fail("evaluation.tasks", err.what());
      }
      // TASK=PATH: the path resolves against the sweep file's directory, like every path.
      if (const size_t eq = entry.find('='); eq != std::string::npos && eq + 1 < entry.size()) {
        const fs::path file = entry.substr(eq + 1);
        if (file.is_relative()) entry = entry.substr(0, eq + 1) + (dir / file).string();
      }
      e.tasks.push_back(entry);
    }
  }
  r.reject_unknown();
  if (e.type == "tasks" && e.tasks.empty())
    SpecReader::fail("evaluation.tasks", "is required when evaluation.type is 'tasks'");
  if (e.type == "perplexity" && !e.tasks.empty())
    SpecReader::fail("evaluation.tasks", "is only used with evaluation.type 'tasks'");
  if (e.type == "perplexity" && (!e.data_dir.empty() || !e.vocab.empty()))
    SpecReader::fail(e.data_dir.empty() ? "evaluation.vocab" : "evaluation.data_dir",
                     "is only used with evaluation.type 'tasks'");
  if (e.type == "tasks" && (!e.tokens.empty() || e.context > 0 || e.stride > 0))
    SpecReader::fail(!e.tokens.empty()
                         ? "evaluation.tokens"
                         : (e.context > 0 ? "evaluation.context" : "evaluation.stride"),
                     "is only used with evaluation.type 'perplexity'");
  if (e.stride > 0 && e.context > 0 && e.stride > e.context)
    SpecReader::fail("evaluation.stride", "must not exceed evaluation.context");
}

void read_prepare(const ordered_json& j, const fs::path& dir, PrepareSpec& p) {
  SpecReader r(j, "prepare");
  r.get("adapt", p.adapt);
  if (p.adapt != "none" && p.adapt != "from-model" && p.adapt != "from-reset")
    SpecReader::fail("prepare.adapt",
                     "must be 'none', 'from-model' or 'from-reset' (got '" + p.adapt + "')");
  r.get_path("tokens", p.tokens, dir);
  r.get_int("batch", p.batch, 1);
  r.get_int("seq_len", p.seq_len, 0);
  r.get_int("batch_seed", p.batch_seed, 0);
  r.get_int("max_passes", p.max_passes, 1);
  r.get_int("finetune_steps", p.finetune_steps, 0);
  r.get_positive("finetune_lr", p.finetune_lr);
  r.get_int("finetune_batch", p.finetune_batch, 1);
  r.reject_unknown();
}

void read_cost(const ordered_json& j, CostSpec& c) {
  SpecReader r(j, "cost");
  r.get("preset", c.preset);
  r.get_int("tokens", c.tokens, 1);
  r.get_int("batch", c.batch, 1);
  r.reject_unknown();
}

}  // namespace

SweepSpec SweepSpec::parse(const std::string& text, const fs::path& dir) {
  // Ordered: the axes keep the order of the file. The hardened reader: a nesting limit, numbers
  // that overflow a double and duplicate keys are errors.
  const ordered_json j = parse_ordered_json(text, "sweep file");
  SweepSpec s;
  s.dir = dir;
  SpecReader r(j, "");
  r.get("name", s.name);
  if (const auto* b = r.find("base")) {
    if (!b->is_string() && !b->is_object())
      SpecReader::fail("base", "must be a preset name, a file name or a hardware-config object");
    s.base = to_plain(*b);
  } else {
    s.base = "paper-nonlinear";
  }
  r.get("attention", s.attention);
  const auto* axes = r.find("axes");
  const auto* points = r.find("points");
  if (axes && points) SpecReader::fail("axes", "and 'points' exclude each other (grid or list)");
  if (!axes && !points) SpecReader::fail("axes", "or 'points' is required");
  if (axes) {
    s.mode = "grid";
    if (!axes->is_object() || axes->empty())
      SpecReader::fail("axes", "must be a non-empty object {\"field.path\": [values], ...}");
    for (auto it = axes->begin(); it != axes->end(); ++it)
      s.axes.push_back({it.key(), axis_values(it.value(), it.key())});
  } else {
    s.mode = "list";
    if (!points->is_array() || points->empty())
      SpecReader::fail("points", "must be a non-empty array of {\"field.path\": value} objects");
    if (points->size() > static_cast<size_t>(kMaxSweepPoints))
      SpecReader::fail("points", "holds more than " + std::to_string(kMaxSweepPoints) + " points");
    for (size_t i = 0; i < points->size(); ++i) {
      const auto& p = (*points)[i];
      if (!p.is_object())
        SpecReader::fail("points[" + std::to_string(i) + "]", "must be an object");
      for (auto it = p.begin(); it != p.end(); ++it) {
        const std::string where = "points[" + std::to_string(i) + "]." + it.key();
        if (!it.value().is_primitive() || it.value().is_null())
          SpecReader::fail(where, "must be a number, string or boolean");
        bool known = false;
        for (Axis& a : s.axes) {
          if (a.field == it.key()) {
            known = true;
            a.values.push_back(to_plain(it.value()));
          }
        }
        if (!known) s.axes.push_back({it.key(), {to_plain(it.value())}});
      }
      s.list_points.push_back(p);
    }
  }
  if (const auto* e = r.find("evaluation")) read_evaluation(*e, dir, s.evaluation);
  if (const auto* p = r.find("prepare")) read_prepare(*p, dir, s.prepare);
  r.get_int("seeds", s.seeds, 1);
  r.get("weights", s.weights);
  try {
    parse_weight_format(s.weights);
  } catch (const Error& e) {
    SpecReader::fail("weights", e.what());
  }
  if (const auto* c = r.find("cost")) read_cost(*c, s.cost);
  r.get("objective", s.objective);
  r.reject_unknown();
  s.points();  // every point's hardware configuration must validate before any work starts
  return s;
}

SweepSpec SweepSpec::load(const fs::path& file) {
  std::error_code ec;
  require(fs::is_regular_file(file, ec), "sweep file '" + file.string() + "' does not exist");
  try {
    return parse(read_text_file(file), fs::absolute(file).parent_path());
  } catch (const Error& e) {
    throw Error(file.string() + ": " + e.what());
  }
}

}  // namespace gaincell::sweep
