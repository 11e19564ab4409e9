#include "gaincell/tools/cost/cost_config.h"

#include <cmath>
#include <filesystem>
#include <sstream>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"

namespace gaincell::cost {

using nlohmann::json;

namespace {

// What values a parameter accepts.
enum class Range { kNonNegative, kPositive, kFraction, kCountAtLeastOne, kLevels };

struct ParamInfo {
  const char* key;
  Param CostConfig::*member;
  Range range;
};

constexpr ParamInfo kParams[] = {
    {"cell_area_mm2", &CostConfig::cell_area_mm2, Range::kPositive},
    {"stack_layers", &CostConfig::stack_layers, Range::kCountAtLeastOne},
    {"stacked_cell_area_mm2", &CostConfig::stacked_cell_area_mm2, Range::kPositive},
    {"qk_read_energy_per_cell_tmax_j", &CostConfig::qk_read_energy_per_cell_tmax_j,
     Range::kNonNegative},
    {"av_read_energy_per_cell_tmax_j", &CostConfig::av_read_energy_per_cell_tmax_j,
     Range::kNonNegative},
    {"read_energy_ref_tmax_s", &CostConfig::read_energy_ref_tmax_s, Range::kPositive},
    {"typical_q_width_tmax", &CostConfig::typical_q_width_tmax, Range::kFraction},
    {"typical_phi_width_tmax", &CostConfig::typical_phi_width_tmax, Range::kFraction},
    {"cell_static_power_w", &CostConfig::cell_static_power_w, Range::kNonNegative},
    {"write_energy_per_cell_j", &CostConfig::write_energy_per_cell_j, Range::kNonNegative},
    {"write_ref_levels", &CostConfig::write_ref_levels, Range::kLevels},
    {"dac_area_mm2", &CostConfig::dac_area_mm2, Range::kNonNegative},
    {"c2p_energy_j", &CostConfig::c2p_energy_j, Range::kNonNegative},
    {"c2p_area_mm2", &CostConfig::c2p_area_mm2, Range::kNonNegative},
    {"out_c2p_energy_j", &CostConfig::out_c2p_energy_j, Range::kNonNegative},
    {"out_c2p_area_mm2", &CostConfig::out_c2p_area_mm2, Range::kNonNegative},
    {"counter_energy_per_increment_j", &CostConfig::counter_energy_per_increment_j,
     Range::kNonNegative},
    {"counter_period_s", &CostConfig::counter_period_s, Range::kPositive},
    {"counter_area_mm2", &CostConfig::counter_area_mm2, Range::kNonNegative},
    {"typical_count_fraction", &CostConfig::typical_count_fraction, Range::kFraction},
    {"adder_energy_j", &CostConfig::adder_energy_j, Range::kNonNegative},
    {"adder_delay_s", &CostConfig::adder_delay_s, Range::kNonNegative},
    {"adder_area_mm2", &CostConfig::adder_area_mm2, Range::kNonNegative},
    {"control_energy_j", &CostConfig::control_energy_j, Range::kNonNegative},
    {"control_latency_s", &CostConfig::control_latency_s, Range::kNonNegative},
    {"control_area_mm2", &CostConfig::control_area_mm2, Range::kNonNegative},
    {"control_static_power_w", &CostConfig::control_static_power_w, Range::kNonNegative},
    {"refresh_margin", &CostConfig::refresh_margin, Range::kFraction},
    {"token_interval_s", &CostConfig::token_interval_s, Range::kNonNegative},
};

std::string format_number(double v) {
  std::ostringstream os;
  os.precision(6);
  os << v;
  return os.str();
}

// --- The `paper` preset -------------------------------------------------------------------------
// The paper reports stage totals only (spec §9.1, §12 item 12). The split of each stage into the
// array read and its converters is an assumption (kArrayShare, kCounterShare); it does not change
// any total at the paper's operating point, only how the totals scale with the configuration.
constexpr double kQkStageJ = 1120e-12;            // spec §9.1, utils/plot_energy.py
constexpr double kAvStageJ = 700e-12;             // spec §9.1
constexpr double kDigitalJ = 4e-9;                // spec §9.1 (113.7 mW per head)
constexpr double kDacJ = 330e-12;                 // spec §9.1
constexpr double kLatencyS = 65e-9;               // spec §9.1, plot_energy.py latency_IMC
constexpr double kHeadAreaMm2 = 0.5;              // spec §9.2
constexpr double kArrayAreaMm2 = 15.7e-3;         // spec §9.2
constexpr double kStackedArrayAreaMm2 = 36.7e-3;  // spec §9.2 (36.7e-3/N mm² with N layers)
constexpr double kArrayShare = 0.5;    // assumption: array read vs converter share of a stage
constexpr double kCounterShare = 0.1;  // assumption: counter share of the output stage
constexpr double kTypicalWidth = 0.5;  // assumption: mid-scale mean pulse width (calibration point)
constexpr double kTypicalCount = 0.5;  // assumption: mid-scale mean |count| (calibration point)
constexpr double kCounterPeriodS = 1e-9;  // spec §10: 16 levels in a <= 15 ns pulse ⇒ ≈ 1 ns
constexpr double kAdderJ =
    0.05e-12;  // Horowitz ISSCC 2014 (45 nm): 8-bit add 0.03 pJ, 32-bit 0.1 pJ
constexpr double kAdderDelayS = 0.25e-9;  // assumption: one ~10-bit adder stage per 0.25 ns
constexpr double kC2pAreaMm2 = 50e-6;  // assumption: integrating capacitor + comparator ≈ 50 µm²
constexpr double kOutC2pAreaMm2 = 50e-6;   // assumption: as the first-stage converter
constexpr double kCounterAreaMm2 = 20e-6;  // assumption: 5-bit counter ≈ 20 µm²
constexpr double kDacAreaMm2 = 20e-6;      // assumption: 3-bit DAC ≈ 20 µm²
constexpr double kAdderAreaMm2 = 10e-6;    // assumption: ~10-bit adder ≈ 10 µm²

CostConfig make_paper() {
  const ReferencePoint ref;
  const HwConfig& hw = ref.hw;
  const double cells_per_stage = double(ref.head_dim) * hw.window;  // 65,536
  const double cells_per_head = 2.0 * cells_per_stage;              // 131,072
  const double tiles = double(hw.window) / hw.array_size;           // 16
  const double c2p_count = hw.window;                               // 1,024
  const double out_count = ref.head_dim * tiles;                    // 1,024
  const double count_steps = 15.0;  // sign + 16 levels: |count| in 0..15 (spec §1.2 step 7)
  const double increments = out_count * count_steps * kTypicalCount;  // 7,680
  const double writes = 2.0 * ref.head_dim;                           // 128
  const double dacs = 2.0 * ref.head_dim;                             // 128
  const double adds = ref.head_dim * (tiles - 1.0);                   // 960
  const double adder_stages = std::ceil(std::log2(tiles));            // 4

  CostConfig c;
  c.name = "paper";
  c.cell_area_mm2 = {kArrayAreaMm2 / cells_per_head, "mm2",
                     "calibrated: 15.7e-3 mm² of arrays per head (spec §9.2) / 131,072 cells; "
                     "differs from the 1 µm² 6T cell (spec §12 item 11)"};
  c.stack_layers = {1.0, "layers",
                    "paper default: planar arrays (stacking is an option, spec §9.2)"};
  c.stacked_cell_area_mm2 = {kStackedArrayAreaMm2 / cells_per_head, "mm2",
                             "calibrated: 36.7e-3/N mm² per head with N stacked layers (spec §9.2) "
                             "/ 131,072 cells"};
  c.qk_read_energy_per_cell_tmax_j = {
      kArrayShare * kQkStageJ / (cells_per_stage * kTypicalWidth), "J",
      "calibrated: 0.5 (assumed array share) x 1120 pJ (spec §9.1) / (65,536 cells x 0.5 typical "
      "Q width)"};
  c.av_read_energy_per_cell_tmax_j = {
      kArrayShare * kAvStageJ / (cells_per_stage * kTypicalWidth), "J",
      "calibrated: 0.5 (assumed array share) x 700 pJ (spec §9.1) / (65,536 cells x 0.5 typical "
      "φ width)"};
  c.read_energy_ref_tmax_s = {hw.tmax_s, "s",
                              "spec §2.4: Tmax = 15 ns (hw preset paper-nonlinear)"};
  c.typical_q_width_tmax = {kTypicalWidth, "Tmax",
                            "assumption: mid-scale calibration point of the activity model"};
  c.typical_phi_width_tmax = {kTypicalWidth, "Tmax",
                              "assumption: mid-scale calibration point of the activity model"};
  c.cell_static_power_w = {0.0, "W", "not reported by the paper (spec §12 item 12); set to 0"};
  c.write_energy_per_cell_j = {kDacJ / writes, "J",
                               "calibrated: 330 pJ DAC energy (spec §9.1) / 128 cells written per "
                               "token per head (one K column + one V row)"};
  c.write_ref_levels = {double(hw.k.levels), "levels",
                        "spec §2.1: 3-bit K/V (8 levels, hw preset paper-nonlinear)"};
  c.dac_area_mm2 = {kDacAreaMm2, "mm2", "assumption: 3-bit DAC ≈ 20 µm² (not in the paper)"};
  c.c2p_energy_j = {(1.0 - kArrayShare) * kQkStageJ / c2p_count, "J",
                    "calibrated: 0.5 (assumed converter share) x 1120 pJ (spec §9.1) / 1,024 "
                    "conversions"};
  c.c2p_area_mm2 = {kC2pAreaMm2, "mm2",
                    "assumption: integrating capacitor + comparator ≈ 50 µm² (not in the paper)"};
  c.out_c2p_energy_j = {(1.0 - kArrayShare - kCounterShare) * kAvStageJ / out_count, "J",
                        "calibrated: 0.4 (assumed signed-converter share) x 700 pJ (spec §9.1) / "
                        "1,024 conversions"};
  c.out_c2p_area_mm2 = {kOutC2pAreaMm2, "mm2",
                        "assumption: as the first-stage converter, 50 µm² (not in the paper)"};
  c.counter_energy_per_increment_j = {kCounterShare * kAvStageJ / increments, "J",
                                      "calibrated: 0.1 (assumed counter share) x 700 pJ (spec "
                                      "§9.1) / (1,024 counters x 15 steps x 0.5 typical count)"};
  c.counter_period_s = {kCounterPeriodS, "s",
                        "spec §10 [INFERRED]: 16 levels in a <= 15 ns pulse ⇒ ≈ 1 ns"};
  c.counter_area_mm2 = {kCounterAreaMm2, "mm2", "assumption: 5-bit counter ≈ 20 µm²"};
  c.typical_count_fraction = {kTypicalCount, "fraction",
                              "assumption: mid-scale calibration point of the activity model"};
  c.adder_energy_j = {kAdderJ, "J",
                      "Horowitz, ISSCC 2014 (45 nm): 8-bit add 0.03 pJ, 32-bit add 0.1 pJ; "
                      "~10-bit add taken as 0.05 pJ"};
  c.adder_delay_s = {kAdderDelayS, "s", "assumption: one adder-tree stage ≈ 0.25 ns"};
  c.adder_area_mm2 = {kAdderAreaMm2, "mm2", "assumption: ~10-bit adder ≈ 10 µm²"};
  c.control_energy_j = {kDigitalJ - adds * kAdderJ, "J",
                        "calibrated: 4 nJ digital control & routing (spec §9.1) minus the 960 "
                        "sub-tile additions (48 pJ) counted as adders"};
  const double critical_path =
      2.0 * hw.tmax_s + count_steps * kCounterPeriodS + adder_stages * kAdderDelayS;
  c.control_latency_s = {kLatencyS - critical_path, "s",
                         "calibrated: 65 ns (spec §9.1) minus 2 Tmax pulses, 15 counter periods "
                         "and 4 adder stages (46 ns): control, K/V write and routing"};
  const double periphery = c2p_count * kC2pAreaMm2 +
                           out_count * (kOutC2pAreaMm2 + kCounterAreaMm2) + dacs * kDacAreaMm2 +
                           adds * kAdderAreaMm2;
  c.control_area_mm2 = {kHeadAreaMm2 - kArrayAreaMm2 - periphery, "mm2",
                        "calibrated: 0.5 mm² per head incl. control (spec §9.2) minus arrays "
                        "(15.7e-3 mm²) and the assumed converter, counter, DAC and adder areas"};
  c.control_static_power_w = {0.0, "W",
                              "not reported separately: the 113.7 mW of digital control (spec "
                              "§1.4) is counted as energy per token"};
  c.refresh_margin = {1.0, "fraction",
                      "spec §1.3: no refresh while the window is rewritten within the retention "
                      "time (margin 1)"};
  c.token_interval_s = {0.0, "s", "0 = derived: layers x latency per layer (spec §1.3, 0.8 µs)"};
  return c;
}

const ParamInfo* find_param(const std::string& key) {
  for (const auto& p : kParams)
    if (key == p.key) return &p;
  return nullptr;
}

void set_param(Param& p, const std::string& key, const json& v, const std::string& origin) {
  const std::string field = "cost." + key;
  if (v.is_number()) {
    p.value = v.get<double>();
    p.source = "set in " + origin;
    return;
  }
  require(v.is_object(), field + ": expected a number or {\"value\", \"source\"}");
  for (const auto& [k, _] : v.items())
    require(k == "value" || k == "unit" || k == "source", field + ": unknown key '" + k + "'");
  require(v.contains("value") && v.at("value").is_number(), field + ".value: expected a number");
  p.value = v.at("value").get<double>();
  if (v.contains("unit")) {
    require(v.at("unit").is_string() && v.at("unit").get<std::string>() == p.unit,
            field + ".unit: expected \"" + p.unit + "\"");
  }
  if (v.contains("source")) {
    require(v.at("source").is_string(), field + ".source: expected a string");
    p.source = v.at("source").get<std::string>();
  } else {
    p.source = "set in " + origin;
  }
}

}  // namespace

std::vector<std::pair<std::string, const Param*>> CostConfig::params() const {
  std::vector<std::pair<std::string, const Param*>> out;
  for (const auto& p : kParams) out.emplace_back(p.key, &(this->*p.member));
  return out;
}

void CostConfig::validate() const {
  for (const auto& info : kParams) {
    const double v = (this->*info.member).value;
    const std::string field = std::string("cost.") + info.key;
    require(std::isfinite(v), field + ": must be finite (got " + format_number(v) + ")");
    switch (info.range) {
      case Range::kNonNegative:
        require(v >= 0.0, field + ": must be >= 0 (got " + format_number(v) + ")");
        break;
      case Range::kPositive:
        require(v > 0.0, field + ": must be > 0 (got " + format_number(v) + ")");
        break;
      case Range::kFraction:
        require(v > 0.0 && v <= 1.0, field + ": must be in (0, 1] (got " + format_number(v) + ")");
        break;
      case Range::kCountAtLeastOne:
        require(v >= 1.0 && v == std::floor(v) && v <= 1024.0,
                field + ": must be an integer in [1, 1024] (got " + format_number(v) + ")");
        break;
      case Range::kLevels:
        require(v >= 2.0 && v == std::floor(v),
                field + ": must be an integer >= 2 (got " + format_number(v) + ")");
        break;
    }
  }
}

json CostConfig::to_json() const {
  json params_json = json::object();
  for (const auto& info : kParams) {
    const Param& p = this->*info.member;
    params_json[info.key] = {{"value", p.value}, {"unit", p.unit}, {"source", p.source}};
  }
  return {{"name", name}, {"params", params_json}};
}

CostConfig CostConfig::from_json(const json& j, const std::string& origin) {
  require(j.is_object(), "cost configuration: expected a JSON object");
  for (const auto& [key, _] : j.items())
    require(key == "name" || key == "preset" || key == "params",
            "cost configuration: unknown key '" + key + "'");
  std::string base = "paper";
  if (j.contains("preset")) {
    require(j.at("preset").is_string(), "cost.preset: expected a string");
    base = j.at("preset").get<std::string>();
  }
  CostConfig c = preset(base);
  c.name = "custom";
  if (j.contains("name")) {
    require(j.at("name").is_string(), "cost.name: expected a string");
    c.name = j.at("name").get<std::string>();
  }
  if (j.contains("params")) {
    const json& params_json = j.at("params");
    require(params_json.is_object(), "cost.params: expected an object");
    for (const auto& [key, value] : params_json.items()) {
      const ParamInfo* info = find_param(key);
      require(key != "retention_time_s",
              "cost.params.retention_time_s: the retention time belongs to the hardware "
              "configuration now (--hw JSON: leakage.retention_time_s, or lambda_per_token with "
              "time_per_token_s)");
      require(info != nullptr, "cost.params: unknown parameter '" + key + "'");
      set_param(c.*(info->member), key, value, origin);
    }
  }
  c.validate();
  return c;
}

CostConfig CostConfig::preset(std::string_view name) {
  if (name == "paper") return make_paper();
  std::string known;
  for (const auto& n : preset_names()) known += (known.empty() ? "" : ", ") + n;
  throw Error("unknown cost preset '" + std::string(name) + "' (known: " + known + ")");
}

std::vector<std::string> CostConfig::preset_names() {
  return {"paper"};
}

CostConfig CostConfig::load(const std::string& name_or_file) {
  for (const auto& n : preset_names())
    if (name_or_file == n) return preset(n);
  std::error_code ec;
  if (!std::filesystem::is_regular_file(name_or_file, ec)) {
    throw Error("cost preset '" + name_or_file +
                "' is neither a preset name (paper) nor a readable JSON file");
  }
  const json j =
      parse_json(read_text_file(name_or_file), "cost configuration '" + name_or_file + "'");
  return from_json(j, name_or_file);
}

}  // namespace gaincell::cost
