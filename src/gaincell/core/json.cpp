#include "gaincell/core/json.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "gaincell/core/file_io.h"

namespace gaincell {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

// 1-based line and column of byte `offset` in `text`.
std::string line_column(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  size_t line = 1, column = 1;
  for (size_t i = 0; i < offset; ++i) {
    if (text[i] == '\n') {
      ++line;
      column = 1;
    } else {
      ++column;
    }
  }
  return "line " + std::to_string(line) + ", column " + std::to_string(column);
}

// nlohmann's messages start with "[json.exception.parse_error.101] parse error at line 1, column
// 2: "; the source and position are reported by us, so keep only the description.
std::string describe(const std::string& what) {
  if (what.rfind("[json.exception.", 0) != 0) return what;
  std::string rest = what.substr(what.find("] ") == std::string::npos ? 0 : what.find("] ") + 2);
  // Parse errors go on with "parse error at line L, column C: <description>".
  if (rest.rfind("parse error", 0) == 0 && rest.find(": ") != std::string::npos)
    rest = rest.substr(rest.find(": ") + 2);
  return rest;
}

// Builds the DOM iteratively (nlohmann's SAX parser keeps its own explicit stack), so the nesting
// depth is checked before any deep value exists, and tracks the JSON path of the value being read
// for error messages. `Json` is nlohmann::json or nlohmann::ordered_json (objects keep the order
// of the file).
template <typename Json>
class CheckedDomBuilder final : public nlohmann::json_sax<Json> {
 public:
  using json = Json;
  using typename nlohmann::json_sax<Json>::number_integer_t;
  using typename nlohmann::json_sax<Json>::number_unsigned_t;
  using typename nlohmann::json_sax<Json>::number_float_t;
  using typename nlohmann::json_sax<Json>::string_t;
  using typename nlohmann::json_sax<Json>::binary_t;

  CheckedDomBuilder(std::string_view text, const std::string& source, const JsonLimits& limits)
      : text_(text), source_(source), limits_(limits) {}

  json take() { return std::move(root_); }

  bool null() override { return add(json(nullptr)); }
  bool boolean(bool v) override { return add(json(v)); }
  bool number_integer(number_integer_t v) override { return add(json(v)); }
  bool number_unsigned(number_unsigned_t v) override { return add(json(v)); }
  bool number_float(number_float_t v, const string_t& s) override {
    if (!std::isfinite(v))
      throw Error(source_ + ": number " + s + " at " + path() + " is not finite");
    return add(json(v));
  }
  bool string(string_t& v) override { return add(json(std::move(v))); }
  bool binary(binary_t&) override { throw Error(source_ + ": binary values are not JSON"); }

  bool start_object(std::size_t) override { return open(json::object()); }
  bool start_array(std::size_t) override { return open(json::array()); }
  bool end_object() override { return close(); }
  bool end_array() override { return close(); }

  bool key(string_t& k) override {
    Frame& f = stack_.back();
    if (f.container->contains(k))
      throw Error(source_ + ": duplicate key '" + k + "' in " + path_of(stack_.size() - 1));
    f.key = std::move(k);
    return true;
  }

  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    const std::string where = line_column(text_, position > 0 ? position - 1 : 0);
    if (ex.id == 406)  // number overflow: the lexer's value is +-inf
      throw Error(source_ + ": " + describe(ex.what()) + " at " + path() + " (" + where +
                  "): numbers must be finite");
    throw Error(source_ + " is not valid JSON (" + where + "): " + describe(ex.what()));
  }

 private:
  struct Frame {
    json* container;
    std::string key;  // objects: the key of the value being read
  };

  bool add(json&& v) {
    if (stack_.empty()) {
      root_ = std::move(v);
      return true;
    }
    Frame& f = stack_.back();
    if (f.container->is_array()) {
      f.container->push_back(std::move(v));
    } else {
      (*f.container)[f.key] = std::move(v);
    }
    return true;
  }

  json* last_added() {
    if (stack_.empty()) return &root_;
    Frame& f = stack_.back();
    return f.container->is_array() ? &f.container->back() : &(*f.container)[f.key];
  }

  bool open(json&& empty) {
    if (static_cast<int>(stack_.size()) >= limits_.max_depth)
      throw Error(source_ + ": nesting deeper than " + std::to_string(limits_.max_depth) +
                  " levels at " + path());
    add(std::move(empty));
    stack_.push_back({last_added(), {}});
    return true;
  }

  bool close() {
    stack_.pop_back();
    return true;
  }

  // "'quantization.q.levels'" or "'losses[3]'"; "the top level" for the root. Long paths (deep
  // nesting) are shortened.
  std::string path_of(size_t depth) const {
    std::string p;
    for (size_t i = 0; i < depth && i < stack_.size(); ++i) {
      const Frame& f = stack_[i];
      if (f.container->is_array()) {
        // Frames below the top hold their open child already; the top one is about to add one.
        const size_t open_child = i + 1 < stack_.size() ? 1 : 0;
        p += "[" + std::to_string(f.container->size() - open_child) + "]";
      } else {
        p += (p.empty() ? "" : ".") + f.key;
      }
      if (p.size() > 120) {
        p += "...";
        break;
      }
    }
    return p.empty() ? "the top level" : "'" + p + "'";
  }
  std::string path() const { return path_of(stack_.size()); }

  std::string_view text_;
  const std::string& source_;
  JsonLimits limits_;
  json root_;
  std::vector<Frame> stack_;
};

template <typename Json>
Json parse_checked(std::string_view text, const std::string& source, const JsonLimits& limits) {
  CheckedDomBuilder<Json> builder(text, source, limits);
  try {
    if (!Json::sax_parse(text.begin(), text.end(), &builder))
      throw Error(source + " is not valid JSON");
  } catch (const nlohmann::json::exception& e) {  // e.g. invalid UTF-8 in a string reported late
    throw Error(source + " is not valid JSON: " + describe(e.what()));
  }
  return builder.take();
}

// The file's text, after the checks that name the path (missing, a directory, too large).
std::string read_json_text(const fs::path& path, const JsonLimits& limits) {
  std::error_code ec;
  const auto status = fs::status(path, ec);
  if (ec) throw Error("cannot read '" + path.string() + "': " + ec.message());
  if (fs::is_directory(status)) throw Error("'" + path.string() + "' is a directory, not a file");
  if (fs::is_regular_file(status)) {
    const uintmax_t size = fs::file_size(path, ec);
    if (!ec && size > limits.max_bytes)
      throw Error("'" + path.string() + "' is " + std::to_string(size) + " bytes, more than the " +
                  std::to_string(limits.max_bytes) + " a JSON file may have");
  }
  return read_text_file(path);
}

}  // namespace

json parse_json(std::string_view text, const std::string& source, const JsonLimits& limits) {
  return parse_checked<json>(text, source, limits);
}

nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source,
                                          const JsonLimits& limits) {
  return parse_checked<nlohmann::ordered_json>(text, source, limits);
}

json read_json_file(const fs::path& path, const JsonLimits& limits) {
  return parse_json(read_json_text(path, limits), path.string(), limits);
}

nlohmann::ordered_json read_ordered_json_file(const fs::path& path, const JsonLimits& limits) {
  return parse_ordered_json(read_json_text(path, limits), path.string(), limits);
}

namespace json_detail {

std::string short_dump(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  if (s.size() > 40) s = s.substr(0, 40) + "...";
  return s;
}

void throw_type_error(const json& v, const std::string& what, const char* expected) {
  throw Error(what + " must be " + expected + ", got " + short_dump(v));
}

void throw_range_error(const json& v, const std::string& what, const std::string& range) {
  throw Error(what + " = " + short_dump(v) + " is out of range (" + range + ")");
}

std::string range_text(long double lo, long double hi) {
  auto text = [](long double x) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.0Lf", x);
    return std::string(buf);
  };
  return "allowed: " + text(lo) + " to " + text(hi);
}

}  // namespace json_detail

double json_number(const json& v, const std::string& what) {
  if (!v.is_number()) json_detail::throw_type_error(v, what, "a number");
  const double d = v.get<double>();
  if (!std::isfinite(d)) json_detail::throw_type_error(v, what, "a finite number");
  return d;
}

float json_float(const json& v, const std::string& what) {
  const double d = json_number(v, what);
  if (std::fabs(d) > static_cast<double>(std::numeric_limits<float>::max()))
    json_detail::throw_range_error(v, what, "it overflows a 32-bit float");
  return static_cast<float>(d);
}

std::string json_string(const json& v, const std::string& what) {
  if (!v.is_string()) json_detail::throw_type_error(v, what, "a string");
  return v.get<std::string>();
}

std::string json_string_or(const json& obj, const char* key, const std::string& fallback,
                           const std::string& what) {
  if (!obj.is_object()) return fallback;
  auto it = obj.find(key);
  return it == obj.end() ? fallback : json_string(*it, what + ": '" + key + "'");
}

bool json_bool(const json& v, const std::string& what) {
  if (!v.is_boolean()) json_detail::throw_type_error(v, what, "a boolean (true or false)");
  return v.get<bool>();
}

}  // namespace gaincell
