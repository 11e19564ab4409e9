// The one typed hardware configuration of gaincell (spec: ../shared/spec/gain-cell-attention.md).
// Every simulator, cost model and tool reads its constants from here; the paper's values live only
// in the named presets of hw_config.cpp. Loaded from JSON, validated on load (errors name the
// field), and written into every result file (to_json()).
#pragma once

#include <array>
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

namespace gaincell {

// Clamp to [vmin, vmax], then Qz(x) = step * round_half_even(x / step), step =
// (vmax-vmin)/(levels-1). The grid is anchored at 0, not at vmin (spec §2.5). Disabled = clamp
// only.
struct QuantizerConfig {
  bool enabled = true;
  int levels = 16;
  double vmin = 0.0;
  double vmax = 1.0;
  double step() const { return (vmax - vmin) / (levels - 1); }
};

// How a gain cell turns (input pulse x, stored voltage V) into charge (spec §2.3, §2.4, §2.7).
enum class CellModel {
  kPolynomial,  // eq. 4: sum_i alpha_i (V-0.45)^i, alpha_i = sum_j C_ij Vin^j
  kLinear,      // linear_amplitude * (V - 0.45)
  kCubic,       // ablation: a*((V-0.45)^3 - g(0)), a = 19.3/range
  kQuintic,     // ablation: (V-0.45)^5
  kSigmoid,     // ablation: sigmoid(10 (V-0.45))
  kExp,         // ablation: exp(3 (V-0.45))
};

// Where the output stage clamps and quantises (spec §3.7, §12 item 4).
enum class OutputQuantMode {
  kPerTile,   // plain classes: clamp/quantise every 64-key sub-tile, then digital sum (reference)
  kTileMean,  // flash kernels: n * Qz(clamp(sum/n)), n = number of tiles
};

// Output grid (spec §12 item 3): the code grid k*2/31 with the +-32/31 quirk, or the hardware
// counter: sign + 16-level magnitude k/15.
enum class OutputGrid { kCode, kCounter };

// Sign convention of the circuit (spec §3.9, §12 item 15): inverted negates S and the output.
enum class Polarity { kNormal, kInverted };

// Stored-voltage leakage towards VDD/2 (spec §1.3): V(age) = 0.45 + (V0 - 0.45) exp(-lambda age).
// Either lambda per token directly, or retention time tau and time per token (lambda = dt / tau);
// tau is given, or taken from a storage technology (hw/technology.h).
// The paper: lambda = 1.6e-4 per token (its code), tau = 5 ms, dt = 0.8 us (spec §1.3).
struct LeakageConfig {
  bool enabled = true;
  double lambda_per_token = 1.6e-4;
  double retention_time_s = 0.0;     // > 0: derive lambda from tau and time_per_token_s
  double time_per_token_s = 0.8e-6;  // time between two tokens that lambda assumes
  // "" or a technology name ("si-cmos", "osfet-igzo"): its retention time when retention_time_s
  // is 0, and its cell area and write energy in the cost model.
  std::string technology;
  // Refresh policy: > 0 rewrites every stored K/V row with its written value this many tokens
  // after it was written (and again every as many tokens), so no cell ages beyond it; 0 = none
  // (the sliding window rewrites a slot every `window` tokens anyway).
  int64_t refresh_interval_tokens = 0;
  double effective_retention_s() const;  // retention_time_s, else the technology's, else 0
  // Age since the last write or refresh of a cell written `age` tokens ago.
  int64_t effective_age(int64_t age) const {
    return refresh_interval_tokens > 0 ? age % refresh_interval_tokens : age;
  }
  // Reproduction aid (off by default; the spec computes in fp32): round the QK-stage decay factor
  // exp(-lambda age) to bfloat16, as the authors' PyTorch classes do under GPU autocast, so
  // per-token log-likelihoods match their published code to rounding. The AV stage stays fp32.
  bool bf16_qk_decay = false;
  double effective_lambda() const;  // 0 when disabled
  // The factor the QK stage applies to a key of this age (tokens): exp(-lambda age), rounded to
  // bfloat16 when bf16_qk_decay is set.
  double qk_decay(double lambda, double age) const;
  // The retention time constant tau in seconds (the cost model's refresh reads it): the given one,
  // else time_per_token_s / lambda; infinite when disabled or lambda is 0. Throws when lambda is
  // given without a time per token (no time scale).
  double retention_s() const;
};

// Beyond the paper (all off in the paper presets). Relative noise scales with |signal|, absolute
// noise is in the units of S (uA * Tmax) or of the tile output A.
struct NoiseConfig {
  double read_noise_s = 0.0;        // std of additive noise on S
  double read_noise_a = 0.0;        // std of additive noise on each tile's A
  bool read_noise_relative = true;  // true: std = read_noise_* * |signal|
  double write_noise_kv = 0.0;      // std (volts) of noise on written K/V voltages
  double gain_variation = 0.0;      // cell-to-cell relative std of the stored-voltage gain
  double leakage_variation = 0.0;   // cell-to-cell relative std of lambda
  uint64_t seed = 0;
  bool any() const;
};

// The paper's cell voltages (spec §2.1): VDD = 0.9 V is the read amplitude Vin and the top of the
// stored-voltage range; its half, VDD/2 = 0.45 V, is the zero point of a stored weight. The
// presets, the fits and the device file default to these.
inline constexpr double kPaperVdd = 0.9;
inline constexpr double kPaperZeroPoint = kPaperVdd / 2;

// The paper's ten C_ij (spec §2.3 table), in the spec's order.
const std::array<double, 10>& paper_cell_coefficients();

// Defaults are the paper's nonlinear hardware (preset "paper-nonlinear", spec §3.6) under the
// name "custom", so a default-constructed configuration computes.
struct HwConfig {
  std::string name = "custom";

  // Quantizers (spec §2.5): Q as PWM in [0,1], K/V as capacitor voltages in [0,0.9], output.
  QuantizerConfig q{true, 16, 0.0, 1.0};
  QuantizerConfig k{true, 8, 0.0, kPaperVdd};
  QuantizerConfig v{true, 8, 0.0, kPaperVdd};
  QuantizerConfig out{true, 32, -1.0, 1.0};
  OutputGrid out_grid = OutputGrid::kCode;

  // Zero point of the stored weight: VDD/2 (spec §2.1).
  double k_offset = kPaperZeroPoint;
  double v_offset = kPaperZeroPoint;

  // Cell multiply (spec §2.3): ten C_ij, i outer (power of V-0.45), j inner (power of Vin).
  CellModel cell = CellModel::kPolynomial;
  std::array<double, 10> coefficients = paper_cell_coefficients();
  double vin = kPaperVdd;
  double linear_amplitude = 19.3;  // linear model slope and surrogate-gradient slope (spec §2.4)
  // Optional fitted device JSON (issue 6, format in hw/device_file.h). When set, from_json/load
  // take coefficients, vin, linear_amplitude and k/v offsets from it; a relative path is resolved
  // against the directory of the configuration file.
  std::string device_file;

  double s_sat = 80.0;  // first stage: phi = clip(S / s_sat, 0, 1)
  double a_sat = 40.0;  // second stage: out = clip(A / a_sat, -1, 1)

  int array_size = 64;    // rows = cols of one gain-cell array (sub-tile)
  int window = 1024;      // sliding window M (tokens)
  double tmax_s = 15e-9;  // max PWM pulse width

  LeakageConfig leakage;
  Polarity polarity = Polarity::kNormal;
  OutputQuantMode out_mode = OutputQuantMode::kPerTile;
  NoiseConfig noise;

  // alpha_i = sum_j C_ij * vin^j, i = 0..3 (spec §2.3).
  std::array<double, 4> alphas() const;

  // Throws gaincell::Error naming the first invalid field.
  void validate() const;

  nlohmann::json to_json() const;
  // Unknown keys and wrong types are errors. Missing keys take the value of `base` (default: the
  // preset named by the "preset" key if present, else paper-nonlinear).
  // `base_dir` resolves a relative cell.device_file (load() passes the config file's directory).
  static HwConfig from_json(const nlohmann::json& j, const std::string& base_dir = "");

  // Named presets: "paper-linear" (spec §3.5), "paper-nonlinear" (§3.6), "ideal".
  static HwConfig preset(std::string_view name);
  static std::vector<std::string> preset_names();

  // A preset name or a path to a JSON file.
  static HwConfig load(const std::string& name_or_file);
};

std::string to_string(CellModel m);
std::string to_string(OutputQuantMode m);
std::string to_string(OutputGrid g);
std::string to_string(Polarity p);

}  // namespace gaincell
