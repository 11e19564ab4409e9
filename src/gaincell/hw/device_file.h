// The fitted device file ("gaincell-device", version 1): what a hardware configuration needs from a
// characterised gain cell (issue 6, point 5). HwConfig names it with cell.device_file and takes the
// coefficients, vin, offset and linear slope from it. The format lives here, in the hardware
// layer; the fit that produces it is tools/fit (device_from_fit in tools/fit/device.h).
//
// {"format": "gaincell-device", "version": 1,
//  "coefficients": [10 C_ij, spec §2.3 order], "vin": 0.9, "offset": 0.45,
//  "linear_slope": 19.32, "linear_intercept": 0.17, "rms_ua": 0.1296, "max_abs_ua": ...,
//  "tau_s": ..., "time_per_token_s": ..., "lambda_per_token": ...   (0 when not characterised),
//  "source": {...where the table came from: file, netlist hash, parameters...}}
#pragma once

#include <array>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "gaincell/hw/hw_config.h"

namespace gaincell {

inline constexpr const char* kDeviceFormat = "gaincell-device";
inline constexpr int kDeviceVersion = 1;

struct DeviceModel {
  std::array<double, 10> coefficients{};
  double vin = kPaperVdd;
  double offset = kPaperZeroPoint;
  double linear_slope = 0;
  double linear_intercept = 0;
  double rms_ua = 0;
  double max_abs_ua = 0;
  double tau_s = 0;             // storage-node retention time constant (0: unknown)
  double time_per_token_s = 0;  // assumed time per token for lambda
  double lambda_per_token = 0;  // time_per_token_s / tau_s
  nlohmann::json source = nlohmann::json::object();

  nlohmann::json to_json() const;
  static DeviceModel from_json(const nlohmann::json& j);  // throws gaincell::Error
};

DeviceModel read_device_file(const std::filesystem::path& path);

}  // namespace gaincell
