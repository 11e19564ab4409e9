#include "gaincell/tools/cost/events.h"

#include <cmath>
#include <string>

#include "gaincell/core/error.h"
#include "gaincell/core/json.h"

namespace gaincell::cost {

using nlohmann::json;

namespace {

constexpr const char* kFormat = "gaincell-hardware-events";
constexpr int kVersion = 1;

// The event fields in file order; one table drives to_json, from_json and validate.
struct IntField {
  const char* name;
  int64_t HardwareEventCounts::*member;
};
struct RealField {
  const char* name;
  double HardwareEventCounts::*member;
};

constexpr IntField kIntEvents[] = {
    {"cell_writes", &HardwareEventCounts::cell_writes},
    {"q_pulses", &HardwareEventCounts::q_pulses},
    {"phi_pulses", &HardwareEventCounts::phi_pulses},
    {"c2p_conversions", &HardwareEventCounts::c2p_conversions},
    {"output_conversions", &HardwareEventCounts::output_conversions},
    {"counter_increments", &HardwareEventCounts::counter_increments},
    {"tile_reads", &HardwareEventCounts::tile_reads},
    {"digital_adds", &HardwareEventCounts::digital_adds},
};
constexpr RealField kRealEvents[] = {
    {"q_pulse_width_sum_tmax", &HardwareEventCounts::q_pulse_width_sum_tmax},
    {"phi_pulse_width_sum_tmax", &HardwareEventCounts::phi_pulse_width_sum_tmax},
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

}  // namespace

void HardwareEventCounts::validate() const {
  for (const auto& f : kRunSize)
    require(this->*f.member >= 1, std::string("event trace: '") + f.name + "' must be at least 1");
  for (const auto& f : kIntEvents)
    require(this->*f.member >= 0, std::string("event trace: 'events.") + f.name + "' must be >= 0");
  for (const auto& f : kRealEvents)
    require(std::isfinite(this->*f.member) && this->*f.member >= 0.0,
            std::string("event trace: 'events.") + f.name + "' must be a finite value >= 0");
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
  for (const auto& f : kIntEvents) events[f.name] = this->*f.member;
  for (const auto& f : kRealEvents) events[f.name] = this->*f.member;
  json j = {{"format", kFormat}, {"version", kVersion}};
  for (const auto& f : kRunSize) j[f.name] = this->*f.member;
  j["events"] = std::move(events);
  return j;
}

HardwareEventCounts HardwareEventCounts::from_json(const json& j) {
  require(j.is_object(), "event trace: expected a JSON object");
  if (j.contains("format"))
    require(j.at("format") == kFormat,
            std::string("event trace: 'format' must be \"") + kFormat + "\"");
  if (j.contains("version"))
    require(j.at("version") == kVersion, "event trace: unsupported 'version' (this build reads " +
                                             std::to_string(kVersion) + ")");
  HardwareEventCounts c;
  for (const auto& f : kRunSize) c.*f.member = read_count(j, "", f.name);
  require(j.contains("events") && j.at("events").is_object(),
          "event trace: missing object 'events'");
  const json& events = j.at("events");
  for (const auto& [key, value] : events.items()) {
    bool known = false;
    for (const auto& f : kIntEvents) known = known || key == f.name;
    for (const auto& f : kRealEvents) known = known || key == f.name;
    require(known, "event trace: unknown key 'events." + key + "'");
  }
  for (const auto& f : kIntEvents) c.*f.member = read_count(events, "events.", f.name);
  for (const auto& f : kRealEvents) c.*f.member = read_real(events, "events.", f.name);
  c.validate();
  return c;
}

}  // namespace gaincell::cost
