#include "gaincell/hw/device_file.h"

#include <cmath>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"

namespace gaincell {

using nlohmann::json;

json DeviceModel::to_json() const {
  return {{"format", kDeviceFormat},
          {"version", kDeviceVersion},
          {"coefficients", coefficients},
          {"vin", vin},
          {"offset", offset},
          {"linear_slope", linear_slope},
          {"linear_intercept", linear_intercept},
          {"rms_ua", rms_ua},
          {"max_abs_ua", max_abs_ua},
          {"tau_s", tau_s},
          {"time_per_token_s", time_per_token_s},
          {"lambda_per_token", lambda_per_token},
          {"source", source}};
}

DeviceModel DeviceModel::from_json(const json& j) {
  require(j.is_object(), "device file: must be a JSON object");
  // find, not value(): value() throws nlohmann's type_error on a non-string 'format' (found by
  // the device_file fuzz target: fuzz/corpus/device_file/crash-format-array).
  const auto format = j.find("format");
  require(format != j.end() && format->is_string() &&
              format->get<std::string>() == std::string(kDeviceFormat),
          "device file: field 'format' must be \"gaincell-device\"");
  require(j.contains("version") &&
              json_int<int64_t>(j["version"], "device file: field 'version'") == kDeviceVersion,
          "device file: unsupported 'version' (expected 1)");
  auto number = [&j](const char* key, bool required) {
    if (!j.contains(key)) {
      require(!required, std::string("device file: missing field '") + key + "'");
      return 0.0;
    }
    require(j[key].is_number(), std::string("device file: field '") + key + "' must be a number");
    const double v = j[key].get<double>();
    require(std::isfinite(v), std::string("device file: field '") + key + "' must be finite");
    return v;
  };
  DeviceModel d;
  require(
      j.contains("coefficients") && j["coefficients"].is_array() && j["coefficients"].size() == 10,
      "device file: field 'coefficients' must be an array of 10 numbers");
  for (size_t k = 0; k < 10; ++k) {
    const json& c = j["coefficients"][k];
    require(c.is_number() && std::isfinite(c.get<double>()),
            "device file: coefficients[" + std::to_string(k) + "] must be a finite number");
    d.coefficients[k] = c.get<double>();
  }
  d.vin = number("vin", true);
  d.offset = number("offset", true);
  d.linear_slope = number("linear_slope", true);
  d.linear_intercept = number("linear_intercept", false);
  d.rms_ua = number("rms_ua", false);
  d.max_abs_ua = number("max_abs_ua", false);
  d.tau_s = number("tau_s", false);
  d.time_per_token_s = number("time_per_token_s", false);
  d.lambda_per_token = number("lambda_per_token", false);
  if (j.contains("source"))
    d.source = j["source"];  // any JSON value (a string or {"netlist": ...})
  return d;
}

DeviceModel read_device_file(const std::filesystem::path& path) {
  const json j = parse_json(read_text_file(path), "device file '" + path.string() + "'");
  try {
    return DeviceModel::from_json(j);
  } catch (const Error& e) {
    throw Error(std::string(e.what()) + " ('" + path.string() + "')");
  }
}

}  // namespace gaincell
