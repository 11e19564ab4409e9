#include "gaincell/tools/cost/events.h"

#include <cmath>
#include <string>
#include <type_traits>

#include "gaincell/core/error.h"
#include "gaincell/core/json.h"

namespace gaincell::cost {

using nlohmann::json;

namespace {

constexpr const char* kFormat = "gaincell-hardware-events";
constexpr int kVersion = 1;

// The run-size fields; the events come from HardwareEvents::for_each_field.
struct IntField {
  const char* name;
  int64_t HardwareEventCounts::*member;
};
constexpr IntField kRunSize[] = {
    {"tokens", &HardwareEventCounts::tokens},
    {"heads", &HardwareEventCounts::heads},
    {"layers", &HardwareEventCounts::layers},
};

int64_t read_count(const json& obj, const std::string& path, const char* key) {
  if (!obj.contains(key)) throw Error("event trace: missing key '" + path + key + "'");
  const json& v = obj.at(key);
  if (v.is_number_integer()) return json_int<int64_t>(v, "event trace: '" + path + key + "'");
  if (v.is_number_float()) {
    const double d = v.get<double>();
    // Large counts may have been written as doubles; accept them only when they are integers.
    if (std::isfinite(d) && d == std::floor(d) && std::fabs(d) < 9.0e18)
      return static_cast<int64_t>(d);
  }
  throw Error("event trace: '" + path + key + "' must be an integer count");
}

double read_real(const json& obj, const std::string& path, const char* key) {
  if (!obj.contains(key)) throw Error("event trace: missing key '" + path + key + "'");
  const json& v = obj.at(key);
  if (!v.is_number()) throw Error("event trace: '" + path + key + "' must be a number");
  return v.get<double>();
}

template <typename T>
T read_field(const json& obj, const std::string& path, const char* key) {
  if constexpr (std::is_same_v<T, double>) {
    return read_real(obj, path, key);
  } else {
    return read_count(obj, path, key);
  }
}

}  // namespace

void HardwareEventCounts::validate() const {
  for (const auto& f : kRunSize)
    require(this->*f.member >= 1, std::string("event trace: '") + f.name + "' must be at least 1");
  for_each_field([this](const char* name, auto member) {
    const double v = static_cast<double>(this->*member);
    require(std::isfinite(v) && v >= 0.0,
            std::string("event trace: 'events.") + name + "' must be a finite value >= 0");
  });
  // A pulse is at most Tmax wide, so the width sum cannot exceed the pulse count.
  require(q_pulse_width_sum_tmax <= static_cast<double>(q_pulses) * (1.0 + 1e-9),
          "event trace: 'events.q_pulse_width_sum_tmax' exceeds 'events.q_pulses' (a pulse is at "
          "most Tmax wide)");
  require(phi_pulse_width_sum_tmax <= static_cast<double>(phi_pulses) * (1.0 + 1e-9),
          "event trace: 'events.phi_pulse_width_sum_tmax' exceeds 'events.phi_pulses' (a pulse is "
          "at most Tmax wide)");
}

json HardwareEventCounts::to_json() const {
  json events = json::object();
  for_each_field([&](const char* name, auto member) { events[name] = this->*member; });
  json j = {{"format", kFormat}, {"version", kVersion}};
  for (const auto& f : kRunSize) j[f.name] = this->*f.member;
  j["events"] = std::move(events);
  return j;
}

namespace {

// Built by appending rather than by one `"..." + std::to_string(...) + ")"` expression: GCC 12
// reports a false -Warray-bounds on that expression when it targets AVX2 (-march=haswell,
// znver2-4), which -Werror turns into a failed build on those machines.
std::string unsupported_version_message() {
  std::string message = "event trace: unsupported 'version' (this build reads ";
  message.append(std::to_string(kVersion));
  message.push_back(')');
  return message;
}

}  // namespace

HardwareEventCounts HardwareEventCounts::from_json(const json& j) {
  require(j.is_object(), "event trace: expected a JSON object");
  if (j.contains("format"))
    require(j.at("format") == kFormat,
            std::string("event trace: 'format' must be \"") + kFormat + "\"");
  if (j.contains("version")) require(j.at("version") == kVersion, unsupported_version_message());
  HardwareEventCounts c;
  for (const auto& f : kRunSize) c.*f.member = read_count(j, "", f.name);
  require(j.contains("events") && j.at("events").is_object(),
          "event trace: missing object 'events'");
  const json& events = j.at("events");
  for (const auto& item : events.items()) {
    // A named variable, not a structured binding: clang 14 (the fuzz build) cannot capture those.
    const std::string& key = item.key();
    bool known = false;
    for_each_field([&](const char* name, auto) { known = known || key == name; });
    require(known, "event trace: unknown key 'events." + key + "'");
  }
  for_each_field([&](const char* name, auto member) {
    using T = std::remove_reference_t<decltype(c.*member)>;
    c.*member = read_field<T>(events, "events.", name);
  });
  c.validate();
  return c;
}

}  // namespace gaincell::cost
