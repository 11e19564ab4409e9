// Storage technologies of the gain cell (issue 13 item 4): what a technology implies for the
// simulator (its retention time, from which the leakage per token follows with the token rate,
// lambda = time_per_token / retention, spec §1.3) and for the cost model (retention, hence
// refresh; cell area; write energy). A hardware configuration names one in leakage.technology.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace gaincell {

struct Technology {
  std::string name;
  std::string description;
  double retention_time_s = 0.0;
  // Relative to the paper's calibrated silicon CMOS gain cell of the cost model (cost preset
  // "paper", docs/cost-model.md): footprint per cell and write energy per cell.
  double cell_area_factor = 1.0;
  double write_energy_factor = 1.0;
  nlohmann::json sources;  // field -> where the value comes from
  nlohmann::json to_json() const;
};

// The presets: "si-cmos" (the paper's gain cell, retention 5 ms) and "osfet-igzo" (oxide
// semiconductor 2T0C gain cell, retention of the order of 100 s).
const std::vector<Technology>& technologies();
// Throws gaincell::Error naming the known technologies.
const Technology& technology(std::string_view name);

}  // namespace gaincell
