#include "gaincell/tools/spice/characterize.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "gaincell/core/error.h"
#include "gaincell/tools/fit/lstsq.h"
#include "gaincell/tools/spice/netlist.h"
#include "gaincell/tools/spice/ngspice.h"

namespace gaincell::spice {

namespace {

std::string num(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

// "DC <value>" (built with append: GCC 12 warns falsely on literal + temporary string).
std::string dc_value(double v) {
  std::string s = "DC ";
  s.append(num(v));
  return s;
}

void report(const CharacterizeOptions& o, const std::string& msg) {
  if (o.progress) o.progress(msg);
}

std::vector<double> linspace(double a, double b, int n) {
  std::vector<double> v(n);
  for (int k = 0; k < n; ++k) v[k] = n == 1 ? a : a + (b - a) * k / (n - 1);
  return v;
}

// The gain-cell netlist with its parameter overrides and the four stimulus sources replaced.
std::string gain_cell_with_sources(const CharacterizeOptions& o, const std::string& vwbl,
                                   const std::string& vwlw, const std::string& vwlr) {
  std::string net = apply_params(o.gain_cell_netlist, o.gain_cell_params);
  net = replace_element(net, "VWBL", "VWBL wbl 0 " + vwbl);
  net = replace_element(net, "VWLW", "VWLW wlw 0 " + vwlw);
  net = replace_element(net, "VWLR", "VWLR wlr 0 " + vwlr);
  net = replace_element(net, "VBL", "VBL bl 0 DC " + num(o.vbl));
  return net;
}

void run_netlist(const CharacterizeOptions& o, const std::string& netlist) {
  NgSpice& sim = NgSpice::instance();
  sim.load_circuit(netlist);
  sim.run(o.timeout_s);
}

using fit::fit_line;
using fit::LineFit;

}  // namespace

double time_above(const std::vector<double>& t, const std::vector<double>& v, double threshold) {
  require(t.size() == v.size(), "time_above: time and value vectors differ in length");
  double total = 0;
  for (size_t k = 1; k < t.size(); ++k) {
    const double a = v[k - 1] - threshold, b = v[k] - threshold, dt = t[k] - t[k - 1];
    if (a >= 0 && b >= 0)
      total += dt;
    else if (a >= 0 && b < 0)
      total += dt * a / (a - b);
    else if (a < 0 && b >= 0)
      total += dt * b / (b - a);
  }
  return total;
}

double integrate(const std::vector<double>& t, const std::vector<double>& y, double t0, double t1) {
  require(t.size() == y.size(), "integrate: time and value vectors differ in length");
  double sum = 0;
  for (size_t k = 1; k < t.size(); ++k) {
    const double a = std::max(t[k - 1], t0), b = std::min(t[k], t1);
    if (b <= a) continue;
    auto at = [&](double x) {
      return y[k - 1] + (y[k] - y[k - 1]) * (x - t[k - 1]) / (t[k] - t[k - 1]);
    };
    sum += 0.5 * (at(a) + at(b)) * (b - a);
  }
  return sum;
}

fit::IvTable sweep_iv(const CharacterizeOptions& o) {
  require(o.n_vstore >= 2 && o.n_vin >= 2, "characterize: the DC grid needs at least 2x2 points");
  require(o.vstore_max > o.vstore_min && o.vin_max > o.vin_min,
          "characterize: sweep ranges must be increasing");
  fit::IvTable t;
  t.vstore = linspace(o.vstore_min, o.vstore_max, o.n_vstore);
  t.vin = linspace(o.vin_min, o.vin_max, o.n_vin);
  const double s1 = (o.vstore_max - o.vstore_min) / (o.n_vstore - 1);
  const double s2 = (o.vin_max - o.vin_min) / (o.n_vin - 1);
  // Stop a thousandth of a step beyond the last point so that rounding neither drops nor adds one.
  const std::string card = ".dc VWBL " + num(o.vstore_min) + " " + num(o.vstore_max + 1e-3 * s1) +
                           " " + num(s1) + " VWLR " + num(o.vin_min) + " " +
                           num(o.vin_max + 1e-3 * s2) + " " + num(s2);
  run_netlist(o,
              with_cards(gain_cell_with_sources(o, "DC 0", dc_value(o.vwlw_on), "DC 0.45"), card));
  NgSpice& sim = NgSpice::instance();
  const auto wbl = sim.vector("wbl"), wlr = sim.vector("wlr"), ibl = sim.vector("vbl#branch");
  const size_t n = t.vstore.size() * t.vin.size();
  require(ibl.size() == n && wbl.size() == n && wlr.size() == n,
          "characterize: DC sweep returned " + std::to_string(ibl.size()) + " points, expected " +
              std::to_string(n));
  t.iout.assign(n, 0.0);
  for (size_t c = 0; c < t.vin.size(); ++c) {
    for (size_t r = 0; r < t.vstore.size(); ++r) {
      const size_t k = c * t.vstore.size() + r;  // the first sweep source varies fastest
      require(std::fabs(wbl[k] - t.vstore[r]) < 1e-6 && std::fabs(wlr[k] - t.vin[c]) < 1e-6,
              "characterize: DC sweep point order is not the expected one");
      t.iout[r * t.vin.size() + c] = -ibl[k];  // Iout = -i(VBL), spec §2.2 sign
    }
  }
  t.comments = {
      "Gain-cell read current Iout (ampere) vs stored voltage Vstore (V) and read word-line "
      "voltage Vin (V).",
      "ngspice DC sweep of " + o.gain_cell_name +
          " by gaincell characterize; rows: Vstore, "
          "columns: Vin."};
  return t;
}

PwmCheck check_pwm(const CharacterizeOptions& o, double vstore) {
  PwmCheck p;
  p.vstore = vstore;
  p.width_s = o.pwm_widths_s;
  if (p.width_s.empty())
    for (int k = 1; k <= 15; ++k) p.width_s.push_back(k * 1e-9);
  for (double w : p.width_s)
    require(w > o.edge_s, "characterize: PWM widths must exceed the edge time");

  // DC reference current at the read amplitude.
  run_netlist(o, with_cards(gain_cell_with_sources(o, dc_value(vstore), dc_value(o.vwlw_on),
                                                   dc_value(o.read_vin)),
                            ".op"));
  p.dc_current_a = -NgSpice::instance().vector("vbl#branch").at(0);

  // One transient with all pulses, separated by idle gaps. The width is measured between the
  // 50 % points of the edges.
  const double gap = 10e-9;
  std::string pwl = "PWL(0 " + num(o.vbl);
  std::vector<std::pair<double, double>> windows;
  double t = 2e-9;
  for (double w : p.width_s) {
    for (double x :
         {t, o.vbl, t + o.edge_s, o.read_vin, t + w, o.read_vin, t + w + o.edge_s, o.vbl})
      pwl.append(" ").append(num(x));
    windows.push_back({t - gap / 2, t + w + o.edge_s + gap / 2});
    t += w + gap;
  }
  pwl += ")";
  const double stop = t;
  run_netlist(o, with_cards(gain_cell_with_sources(o, dc_value(vstore), dc_value(o.vwlw_on), pwl),
                            ".tran 10p " + num(stop) + " 0 20p"));
  NgSpice& sim = NgSpice::instance();
  const auto time = sim.vector("time");
  auto ibl = sim.vector("vbl#branch");
  for (auto& i : ibl) i = -i;
  for (const auto& [a, b] : windows) p.charge_c.push_back(integrate(time, ibl, a, b));

  const LineFit lf = fit_line(p.width_s, p.charge_c);
  p.slope_a = lf.slope;
  p.intercept_c = lf.intercept;
  double qmax = 0, dev = 0;
  for (size_t k = 0; k < p.width_s.size(); ++k) {
    qmax = std::max(qmax, std::fabs(p.charge_c[k]));
    dev = std::max(dev, std::fabs(p.charge_c[k] - lf.slope * p.width_s[k] - lf.intercept));
  }
  p.max_rel_dev = qmax > 0 ? dev / qmax : 0;
  return p;
}

RetentionResult retention_transient(const CharacterizeOptions& o) {
  require(o.retention_stop_s > 100e-9, "characterize: retention time must exceed 100 ns");
  RetentionResult r;
  r.v_target = o.vbl;
  const double t_close = 10e-9, t_idle = 12e-9;
  const std::string wlw = "PWL(0 " + num(o.vwlw_on) + " " + num(t_close) + " " + num(o.vwlw_on) +
                          " " + num(t_close + 100e-12) + " 0)";
  const std::string wbl = "PWL(0 " + num(o.retention_vstore) + " " + num(t_idle) + " " +
                          num(o.retention_vstore) + " " + num(t_idle + 100e-12) + " " + num(o.vbl) +
                          ")";
  const double stop = o.retention_stop_s;
  run_netlist(o,
              with_cards(gain_cell_with_sources(o, wbl, wlw, dc_value(o.vbl)),
                         ".tran " + num(stop / 1000) + " " + num(stop) + " 0 " + num(stop / 500)));
  NgSpice& sim = NgSpice::instance();
  r.time_s = sim.vector("time");
  r.vstore = sim.vector("store");
  require(r.time_s.size() == r.vstore.size() && r.time_s.size() > 10,
          "characterize: retention transient returned too few points");

  // tau from ln|V - target| = ln|V0 - target| - t / tau, fitted after the write has settled.
  const double t_fit = 2 * t_idle;
  std::vector<double> ts, logs;
  double dv0 = 0;
  for (size_t k = 0; k < r.time_s.size(); ++k) {
    if (r.time_s[k] < t_fit) continue;
    const double dv = std::fabs(r.vstore[k] - r.v_target);
    if (dv0 == 0) {
      dv0 = dv;
      r.v_after_write = r.vstore[k];
    }
    if (dv > 1e-3 * dv0 && dv > 1e-9) {
      ts.push_back(r.time_s[k]);
      logs.push_back(std::log(dv));
    }
  }
  require(ts.size() >= 3,
          "characterize: the stored voltage did not stay away from the target "
          "long enough to fit a retention time");
  const LineFit lf = fit_line(ts, logs);
  r.tau_s = lf.slope < 0 ? -1.0 / lf.slope : INFINITY;
  r.lambda_per_token = std::isfinite(r.tau_s) ? o.time_per_token_s / r.tau_s : 0.0;
  return r;
}

TransferCurve transfer_curve(const CharacterizeOptions& o) {
  require(o.n_charges >= 2, "characterize: the transfer curve needs at least 2 charges");
  TransferCurve tc;
  const std::string base = apply_params(o.converter_netlist, o.converter_params);
  tc.qsat_c = parse_spice_number(param_value(base, "qsat"));
  tc.tmax_s = parse_spice_number(param_value(base, "tmax"));
  const double t0 = parse_spice_number(param_value(base, "t0"));
  const double vdd = parse_spice_number(param_value(base, "vdd"));
  require(tc.qsat_c > 0 && tc.tmax_s > 0, "converter netlist: qsat and tmax must be positive");
  for (double f : linspace(-0.2, 1.5, o.n_charges)) {
    const double q = f * tc.qsat_c;
    const std::string net = apply_params(base, {{"qin", num(q)}});
    run_netlist(o, with_cards(net, ".tran 5p " + num(t0 + tc.tmax_s + 5e-9) + " 0 5p"));
    NgSpice& sim = NgSpice::instance();
    const double width = time_above(sim.vector("time"), sim.vector("pulse"), vdd / 2);
    const double ideal = tc.tmax_s * std::clamp(q / tc.qsat_c, 0.0, 1.0);
    tc.charge_c.push_back(q);
    tc.width_s.push_back(width);
    tc.ideal_width_s.push_back(ideal);
    tc.max_abs_dev_s = std::max(tc.max_abs_dev_s, std::fabs(width - ideal));
  }
  return tc;
}

Characterization characterize(const CharacterizeOptions& o) {
  Characterization c;
  NgSpice::instance();  // fail early and clearly when the library is missing
  report(o, "characterize: DC sweep Iout(Vstore, Vin), " + std::to_string(o.n_vstore) + " x " +
                std::to_string(o.n_vin) + " points");
  c.table = sweep_iv(o);
  for (double vs : o.pwm_vstore) {
    report(o, "characterize: PWM read transient at Vstore = " + num(vs) + " V");
    c.pwm.push_back(check_pwm(o, vs));
  }
  report(o, "characterize: retention transient over " + num(o.retention_stop_s) + " s");
  c.retention = retention_transient(o);
  if (!o.converter_netlist.empty()) {
    report(o, "characterize: charge-to-pulse transfer curve, " + std::to_string(o.n_charges) +
                  " charges");
    c.transfer = transfer_curve(o);
    c.has_transfer = true;
  }
  nlohmann::json gc_params = o.gain_cell_params, cv_params = o.converter_params;
  c.source = {{"tool", "gaincell characterize"},
              {"gain_cell",
               {{"netlist", o.gain_cell_name},
                {"hash_fnv1a64", netlist_hash(o.gain_cell_netlist)},
                {"params", gc_params}}},
              {"time_per_token_s", o.time_per_token_s}};
  if (!o.converter_netlist.empty())
    c.source["charge_to_pulse"] = {{"netlist", o.converter_name},
                                   {"hash_fnv1a64", netlist_hash(o.converter_netlist)},
                                   {"params", cv_params}};
  return c;
}

}  // namespace gaincell::spice

// ---------------------------------------------------------------------------------------------
// Parameters file and outputs

#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/fit/compare.h"
#include "gaincell/tools/fit/device.h"
#include "gaincell/tools/fit/fit_report.h"

namespace gaincell::spice {

namespace {

std::map<std::string, std::string> read_param_map(const nlohmann::json& j, const std::string& key) {
  require(j.is_object(), "params file: '" + key + "' must be an object of name: value");
  std::map<std::string, std::string> out;
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it->is_number()) {
      const double v = it->get<double>();
      require(std::isfinite(v), "params file: '" + key + "." + it.key() + "' must be finite");
      out[it.key()] = num(v);
    } else if (it->is_string()) {
      out[it.key()] = it->get<std::string>();
      parse_spice_number(out[it.key()]);  // reject garbage early with a clear message
    } else {
      throw Error("params file: '" + key + "." + it.key() + "' must be a number or a string");
    }
  }
  return out;
}

double positive_number(const nlohmann::json& j, const std::string& key) {
  require(j.is_number() && std::isfinite(j.get<double>()) && j.get<double>() > 0,
          "params file: '" + key + "' must be a positive number");
  return j.get<double>();
}

std::string csv_line(std::initializer_list<double> values) {
  std::string out;
  char buf[40];
  for (double v : values) {
    std::snprintf(buf, sizeof buf, "%s%.9g", out.empty() ? "" : ",", v);
    out += buf;
  }
  return out + "\n";
}

}  // namespace

void apply_params_json(const nlohmann::json& j, CharacterizeOptions& o) {
  require(j.is_object(), "params file: must be a JSON object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& k = it.key();
    if (k == "gain_cell")
      o.gain_cell_params = read_param_map(*it, k);
    else if (k == "charge_to_pulse")
      o.converter_params = read_param_map(*it, k);
    else if (k == "time_per_token_s")
      o.time_per_token_s = positive_number(*it, k);
    else if (k == "retention_stop_s")
      o.retention_stop_s = positive_number(*it, k);
    else if (k == "n_vstore" || k == "n_vin") {
      (k == "n_vstore" ? o.n_vstore : o.n_vin) =
          json_int<int>(*it, "params file: '" + k + "'", 2, 1000);
    } else {
      throw Error("params file: unknown key '" + k +
                  "' (allowed: gain_cell, charge_to_pulse, time_per_token_s, retention_stop_s, "
                  "n_vstore, n_vin)");
    }
  }
}

nlohmann::json write_characterization(const Characterization& c, const CharacterizeOptions& o,
                                      const std::string& dir_name, const fit::IvTable* reference) {
  const std::filesystem::path dir(dir_name);
  // Fit first: nothing is written when the fit fails.
  const fit::FitReport fr = fit::fit_all(c.table, o.read_vin, o.vbl);
  fit::DeviceModel dev = fit::device_from_fit(fr.paper, fr.linear);
  dev.tau_s = std::isfinite(c.retention.tau_s) ? c.retention.tau_s : 0.0;
  dev.time_per_token_s = o.time_per_token_s;
  dev.lambda_per_token = c.retention.lambda_per_token;
  dev.source = c.source;

  nlohmann::json summary;
  summary["source"] = c.source;
  summary["iv"] = {
      {"rows_vstore", c.table.vstore.size()},
      {"columns_vin", c.table.vin.size()},
      {"zero_crossing_vstore_at_read_vin", fit::zero_crossing_vstore(c.table, o.read_vin)},
      {"monotone_at_read_vin", fit::is_monotone_increasing(c.table, o.read_vin)},
      {"iout_ua_at_vstore_min", c.table.at(0, c.table.column_of(o.read_vin)) * 1e6},
      {"iout_ua_at_vstore_max",
       c.table.at(c.table.vstore.size() - 1, c.table.column_of(o.read_vin)) * 1e6}};
  if (reference) {
    const auto all = fit::compare_tables(c.table, *reference);
    const auto col = fit::compare_tables(c.table, *reference, o.read_vin);
    summary["vs_reference"] = {{"rms_ua_all", all.rms_ua},
                               {"max_abs_ua_all", all.max_abs_ua},
                               {"rms_ua_read_vin", col.rms_ua},
                               {"max_abs_ua_read_vin", col.max_abs_ua}};
  }
  summary["fit"] = fit::fit_report_json(fr);
  std::string pwm_csv = "vstore_v,width_s,charge_c,line_fit_c\n";
  nlohmann::json pwm = nlohmann::json::array();
  for (const auto& p : c.pwm) {
    for (size_t k = 0; k < p.width_s.size(); ++k)
      pwm_csv += csv_line(
          {p.vstore, p.width_s[k], p.charge_c[k], p.slope_a * p.width_s[k] + p.intercept_c});
    pwm.push_back({{"vstore", p.vstore},
                   {"dc_current_a", p.dc_current_a},
                   {"slope_a", p.slope_a},
                   {"intercept_c", p.intercept_c},
                   {"max_rel_dev", p.max_rel_dev}});
  }
  summary["pwm"] = pwm;
  std::string ret_csv = "time_s,vstore_v\n";
  const size_t stride = std::max<size_t>(1, c.retention.time_s.size() / 2000);
  for (size_t k = 0; k < c.retention.time_s.size(); k += stride)
    ret_csv += csv_line({c.retention.time_s[k], c.retention.vstore[k]});
  summary["retention"] = {{"v_after_write", c.retention.v_after_write},
                          {"v_target", c.retention.v_target},
                          {"tau_s", dev.tau_s},
                          {"time_per_token_s", o.time_per_token_s},
                          {"lambda_per_token", c.retention.lambda_per_token}};
  std::string c2p_csv = "charge_c,width_s,ideal_width_s\n";
  if (c.has_transfer) {
    for (size_t k = 0; k < c.transfer.charge_c.size(); ++k)
      c2p_csv +=
          csv_line({c.transfer.charge_c[k], c.transfer.width_s[k], c.transfer.ideal_width_s[k]});
    summary["charge_to_pulse"] = {{"qsat_c", c.transfer.qsat_c},
                                  {"tmax_s", c.transfer.tmax_s},
                                  {"max_abs_dev_s", c.transfer.max_abs_dev_s}};
  }

  write_file_atomic(dir / "gain_cell_iv_table.csv", fit::format_iv_table(c.table));
  write_file_atomic(dir / "device.json", dev.to_json().dump(2) + "\n");
  // Close the loop through the real path: a hardware configuration naming the device file,
  // compared point by point with the SPICE table (issue 6, point 5).
  const HwConfig hw =
      HwConfig::from_json({{"cell", {{"device_file", (dir / "device.json").string()}}}});
  const fit::ModelComparison cmp = fit::compare_hw_to_table(hw, c.table);
  summary["model_vs_spice"] = {{"hw", "paper-nonlinear with cell.device_file = device.json"},
                               {"vin", cmp.vin},
                               {"rms_ua", cmp.rms_ua},
                               {"max_abs_ua", cmp.max_abs_ua}};
  write_file_atomic(dir / "model_vs_spice.csv", cmp.csv());
  write_file_atomic(dir / "fit.json", fit::fit_report_json(fr).dump(2) + "\n");
  write_file_atomic(dir / "pwm_check.csv", pwm_csv);
  write_file_atomic(dir / "retention.csv", ret_csv);
  if (c.has_transfer) write_file_atomic(dir / "charge_to_pulse.csv", c2p_csv);
  write_file_atomic(dir / "characterization.json", summary.dump(2) + "\n");
  return summary;
}

}  // namespace gaincell::spice
