// `gaincell characterize`: SPICE sweeps of a gain cell and of a charge-to-pulse converter (issue 6,
// point 3). Every run goes through the embedded ngspice (ngspice.h).
//
// Gain-cell netlist contract (docs/spice.md): a storage node `store`, and the stimulus sources
// VWBL (write bit line), VWLW (write word line), VWLR (read word line) and VBL (bit-line bias),
// whose lines this code replaces; Iout = -i(VBL) (current drawn from the bit line, sign of spec
// §2.2). Converter netlist contract: current source IIN (replaced), `.param qin`, `.param qsat`,
// `.param tmax`, `.param t0` (start of the conversion window) and an output node `pulse`.
#pragma once

#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/tools/fit/iv_table.h"

namespace gaincell::spice {

struct CharacterizeOptions {
  std::string gain_cell_netlist;  // netlist text
  std::string converter_netlist;  // netlist text (empty: skip the transfer curve)
  std::string gain_cell_name = "gain_cell.cir";
  std::string converter_name = "charge_to_pulse.cir";
  std::map<std::string, std::string> gain_cell_params;  // .param overrides
  std::map<std::string, std::string> converter_params;

  // DC grid, same as the paper's table (spec §2.2): Vstore 0..0.9 (50), Vin 0.45..0.9 (51).
  int n_vstore = 50;
  int n_vin = 51;
  double vstore_min = 0.0, vstore_max = 0.9;
  double vin_min = 0.45, vin_max = 0.9;
  double vbl = 0.45;      // bit-line bias and idle word-line level
  double vwlw_on = 1.8;   // boosted write word line so that store = wbl
  double read_vin = 0.9;  // read amplitude of the PWM check (spec §2.1)

  std::vector<double> pwm_vstore = {0.0, 0.9};  // stored voltages of the PWM check
  std::vector<double> pwm_widths_s;             // default: 1..15 ns (16-level Q, spec §2.1)
  double edge_s = 50e-12;                       // word-line rise/fall time

  double retention_vstore = 0.9;     // value written before the retention transient
  double retention_stop_s = 25e-3;   // simulated hold time
  double time_per_token_s = 0.8e-6;  // spec §1.3: 0.8 us per token at tau = 5 ms

  int n_charges = 13;        // charge points of the converter transfer curve in [-0.2, 1.5] qsat
  double timeout_s = 120.0;  // per ngspice run
  std::function<void(const std::string&)> progress;  // stderr progress (may be empty)
};

struct PwmCheck {
  double vstore = 0;
  double dc_current_a = 0;       // Iout at read_vin from a DC operating point
  std::vector<double> width_s;   // nominal pulse widths
  std::vector<double> charge_c;  // integrated -i(VBL) per pulse
  double slope_a = 0;            // least-squares Q = slope * w + intercept
  double intercept_c = 0;
  double max_rel_dev = 0;  // max |Q - slope w - intercept| / max |Q|
};

struct RetentionResult {
  std::vector<double> time_s, vstore;
  double v_after_write = 0;  // right after the write word line closed
  double v_target = 0.45;    // relaxation target assumed by the fit (the idle write bit line)
  double tau_s = 0;          // from a log-linear fit of |V - v_target|
  double lambda_per_token = 0;
};

struct TransferCurve {
  double qsat_c = 0, tmax_s = 0;
  std::vector<double> charge_c, width_s, ideal_width_s;  // ideal: tmax * clip(q/qsat, 0, 1)
  double max_abs_dev_s = 0;
};

struct Characterization {
  fit::IvTable table;
  std::vector<PwmCheck> pwm;
  RetentionResult retention;
  TransferCurve transfer;
  bool has_transfer = false;
  nlohmann::json source;  // netlist names, hashes, parameter overrides
};

fit::IvTable sweep_iv(const CharacterizeOptions& o);
PwmCheck check_pwm(const CharacterizeOptions& o, double vstore);
RetentionResult retention_transient(const CharacterizeOptions& o);
TransferCurve transfer_curve(const CharacterizeOptions& o);
Characterization characterize(const CharacterizeOptions& o);

// Pulse width of a waveform: total time with v above `threshold` (linear interpolation).
double time_above(const std::vector<double>& t, const std::vector<double>& v, double threshold);
// Trapezoidal integral of y(t) over [t0, t1].
double integrate(const std::vector<double>& t, const std::vector<double>& y, double t0, double t1);

}  // namespace gaincell::spice

namespace gaincell::spice {

// Applies a --params JSON: {"gain_cell": {name: value}, "charge_to_pulse": {name: value},
// "time_per_token_s": s, "retention_stop_s": s, "n_vstore": n, "n_vin": n}. Values of netlist
// parameters are numbers or SPICE strings ("50u"). Unknown keys and wrong types are errors.
void apply_params_json(const nlohmann::json& j, CharacterizeOptions& o);

// Writes the outputs of a characterisation into `dir` (see docs/spice.md), each file atomically:
// gain_cell_iv_table.csv, device.json, model_vs_spice.csv (a hardware configuration naming
// device.json against the table at Vin), fit.json, pwm_check.csv, retention.csv,
// charge_to_pulse.csv, characterization.json. `reference` (optional, may be null) is a table to
// report the RMS difference against (e.g. the paper's). Returns the summary JSON.
nlohmann::json write_characterization(const Characterization& c, const CharacterizeOptions& o,
                                      const std::string& dir, const fit::IvTable* reference);

}  // namespace gaincell::spice
