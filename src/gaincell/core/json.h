// The one hardened JSON reader of the project. Every JSON input (model config.json, hardware and
// device files, training state, token meta, pipeline/demo markers, cost files, the safetensors
// header, ...) goes through parse_json / read_json_file, which
//   - limit the nesting depth (a file of thousands of '[' is an error, not a stack overflow when
//     the value is later copied, compared or destroyed),
//   - reject numbers that overflow a double (1e999) naming the source and the JSON path,
//   - reject duplicate object keys (which of two values a reader sees would be arbitrary),
//   - turn every failure into a gaincell::Error that names the source.
// The checked getters convert a value to a C++ type or throw: an integer field never silently
// wraps (4294967312 into a 32-bit field, -1 into an unsigned one) and a float field is finite.
#pragma once

#include <concepts>
#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "gaincell/core/error.h"

namespace gaincell {

struct JsonLimits {
  int max_depth = 64;                      // nested arrays/objects; real files need < 10
  uint64_t max_bytes = uint64_t{1} << 30;  // read_json_file only: larger files are refused
};

// Parses `text`; `source` names it in errors ("hardware config 'hw.json'", a file path, ...).
nlohmann::json parse_json(std::string_view text, const std::string& source,
                          const JsonLimits& limits = {});

// Reads and parses a file; errors (missing, a directory, a symlink loop, too large, invalid JSON)
// name the path.
nlohmann::json read_json_file(const std::filesystem::path& path, const JsonLimits& limits = {});

// The same checks, into an object type that keeps the keys in the order of the text (the sweep
// file's axes define the order of its points). The checked getters below take nlohmann::json:
// convert a scalar with nlohmann::json(value).
nlohmann::ordered_json parse_ordered_json(std::string_view text, const std::string& source,
                                          const JsonLimits& limits = {});
nlohmann::ordered_json read_ordered_json_file(const std::filesystem::path& path,
                                              const JsonLimits& limits = {});

namespace json_detail {
[[noreturn]] void throw_type_error(const nlohmann::json& v, const std::string& what,
                                   const char* expected);
[[noreturn]] void throw_range_error(const nlohmann::json& v, const std::string& what,
                                    const std::string& range);
std::string range_text(long double lo, long double hi);
}  // namespace json_detail

// An integer that fits T exactly. `what` names the field in errors ("config.json: 'n_layer'").
// Floats (even 3.0) are rejected: a field that is an integer in the format must be written as one.
template <std::integral T>
T json_int(const nlohmann::json& v, const std::string& what) {
  if constexpr (std::same_as<T, bool>) {
    static_assert(!std::same_as<T, bool>, "use json_bool");
  }
  constexpr T lo = std::numeric_limits<T>::min();
  constexpr T hi = std::numeric_limits<T>::max();
  if (v.is_number_unsigned()) {
    const uint64_t u = v.get<uint64_t>();
    if (u > static_cast<uint64_t>(hi))
      json_detail::throw_range_error(v, what, json_detail::range_text(lo, hi));
    return static_cast<T>(u);
  }
  if (v.is_number_integer()) {  // negative (non-negative integers parse as unsigned)
    const int64_t s = v.get<int64_t>();
    if constexpr (std::is_unsigned_v<T>) {
      json_detail::throw_range_error(v, what, "must not be negative");
    } else {
      if (s < static_cast<int64_t>(lo) || s > static_cast<int64_t>(hi))
        json_detail::throw_range_error(v, what, json_detail::range_text(lo, hi));
    }
    return static_cast<T>(s);
  }
  json_detail::throw_type_error(v, what, "an integer");
}

// An integer within [lo, hi] (inclusive).
template <std::integral T>
T json_int(const nlohmann::json& v, const std::string& what, T lo, T hi) {
  const T x = json_int<T>(v, what);
  if (x < lo || x > hi) json_detail::throw_range_error(v, what, json_detail::range_text(lo, hi));
  return x;
}

// A finite number (integers are accepted and converted).
double json_number(const nlohmann::json& v, const std::string& what);
// A finite number that also fits a float without overflowing.
float json_float(const nlohmann::json& v, const std::string& what);
std::string json_string(const nlohmann::json& v, const std::string& what);
bool json_bool(const nlohmann::json& v, const std::string& what);

// obj[key] as the checked type, or `fallback` when the key is absent. `what` names the object
// ("config.json"); errors say "<what>: '<key>' ...".
template <std::integral T>
T json_int_or(const nlohmann::json& obj, const char* key, T fallback, const std::string& what) {
  auto it = obj.find(key);
  return it == obj.end() ? fallback : json_int<T>(*it, what + ": '" + key + "'");
}

// obj[key] as a string, or `fallback` when obj is not an object or has no such key; a key that
// holds anything but a string is an error naming it (nlohmann's value() would throw its own
// type_error, which reaches users as an "internal error").
std::string json_string_or(const nlohmann::json& obj, const char* key, const std::string& fallback,
                           const std::string& what);

}  // namespace gaincell
