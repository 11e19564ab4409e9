// Typed parameters of the gain-cell hardware cost model (docs/cost-model.md). Every parameter is
// a value with its unit and its source; the `paper` preset is calibrated so that the component
// model reproduces spec §9.1 (1120 + 700 + 4000 + 330 pJ per token per head, 65 ns) and §9.2
// (0.5 mm² per head, 15.7e-3 mm² of arrays per head) at the paper's operating point. Loaded from
// and written to JSON, validated on load (errors name the field).
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "gaincell/hw/hw_config.h"

namespace gaincell::cost {

// One model parameter: value, unit and where the value comes from.
struct Param {
  double value = 0.0;
  std::string unit;
  std::string source;
};

// The operating point the `paper` preset was calibrated at: the paper's hardware (HwConfig preset
// "paper-nonlinear": array size, window, K/V levels, Tmax, retention) running GPT-2's heads of
// dimension 64 (spec §1.1). Scaling rules of the component model express every other
// configuration relative to it.
struct ReferencePoint {
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  int head_dim = 64;  // GPT-2 124M: n_embd 768 / 12 heads
};

struct CostConfig {
  std::string name = "paper";

  // Gain-cell arrays (spec §9.1 stages "Φ(Q·K^T)" and "Φ(S)·V", §9.2 area).
  Param cell_area_mm2;                   // footprint of one gain cell inside an array
  Param stack_layers;                    // 3D stacking of N array layers (1 = planar)
  Param stacked_cell_area_mm2;           // footprint per cell with stacking, before dividing by N
  Param qk_read_energy_per_cell_tmax_j;  // K-array read: one cell, one pulse of width Tmax
  Param av_read_energy_per_cell_tmax_j;  // V-array read: one cell, one pulse of width Tmax
  Param read_energy_ref_tmax_s;          // Tmax the read energies were calibrated at
  Param typical_q_width_tmax;            // mean Q pulse width at the calibration point
  Param typical_phi_width_tmax;          // mean φ pulse width at the calibration point
  Param cell_static_power_w;             // leakage power per cell
  // Cell write through the DAC.
  Param write_energy_per_cell_j;
  Param write_ref_levels;  // K/V levels the write energy was calibrated at
  Param dac_area_mm2;
  // First-stage charge-to-pulse converter (HardSigmoid), one per key column.
  Param c2p_energy_j;
  Param c2p_area_mm2;
  // Output stage: signed charge-to-pulse converter and pulse counter, one per output column and
  // sub-tile.
  Param out_c2p_energy_j;
  Param out_c2p_area_mm2;
  Param counter_energy_per_increment_j;
  Param counter_period_s;
  Param counter_area_mm2;
  Param typical_count_fraction;  // mean |count| / full scale at the calibration point
  // Digital adders summing the sub-tile outputs.
  Param adder_energy_j;
  Param adder_delay_s;
  Param adder_area_mm2;
  // Digital control, routing, PWM generation and K/V write sequencing.
  Param control_energy_j;
  Param control_latency_s;
  Param control_area_mm2;
  Param control_static_power_w;
  // Refresh (spec §1.3): needed only when a slot lives longer than the refresh interval. The
  // retention time is the hardware's (HwConfig leakage.retention_s()).
  Param refresh_margin;    // refresh interval = hw retention time * refresh_margin
  Param token_interval_s;  // time between tokens; 0 = layers x latency per layer

  // Throws gaincell::Error naming the first invalid parameter ("cost.<name>: ...").
  void validate() const;

  // {"name": ..., "params": {"<param>": {"value": v, "unit": u, "source": s}, ...}}.
  nlohmann::json to_json() const;
  // Accepts to_json()'s format. A parameter may be a number or {"value", "source"?, "unit"?};
  // missing parameters take the value of the preset named by "preset" (default "paper").
  // Unknown parameters, wrong units and wrong types are errors. `origin` names the file in the
  // source of values given without one.
  static CostConfig from_json(const nlohmann::json& j, const std::string& origin = "user JSON");

  static CostConfig preset(std::string_view name);
  static std::vector<std::string> preset_names();
  // A preset name or a path to a JSON file.
  static CostConfig load(const std::string& name_or_file);

  // All parameters with their JSON names, in output order.
  std::vector<std::pair<std::string, const Param*>> params() const;
};

}  // namespace gaincell::cost
