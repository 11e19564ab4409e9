// gaincell characterize [--netlist FILE] [--converter-netlist FILE] [--params FILE] --out DIR:
// SPICE characterisation of a gain cell and a charge-to-pulse converter through the embedded
// ngspice (issue 6, point 3), followed by the paper's fit; progress on stderr.
#include <iostream>
#include <memory>

#include "cli/command.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/tools/fit/iv_table.h"
#include "gaincell/tools/spice/characterize.h"

namespace gaincell::cli {
namespace {

struct CharacterizeCli {
  // The netlists ship with gaincell (installed_dir: beside the binary).
  std::string netlist = (installed_dir("netlists") / "gain_cell.cir").string();
  std::string converter = (installed_dir("netlists") / "charge_to_pulse.cir").string();
  std::string params;
  std::string out;
  std::string reference;
  bool no_converter = false;
  bool quick = false;
  double timeout_s = 120;
};

void run_characterize(const CharacterizeCli& c) {
  spice::CharacterizeOptions o;
  o.gain_cell_netlist = read_text_file(c.netlist);
  o.gain_cell_name = c.netlist;
  if (!c.no_converter) {
    o.converter_netlist = read_text_file(c.converter);
    o.converter_name = c.converter;
  }
  if (c.quick) {  // coarse grid for smoke tests: 10 x 11 points, 3 pulses, short hold
    o.n_vstore = 10;
    o.n_vin = 11;
    o.pwm_vstore = {0.0};
    o.pwm_widths_s = {1e-9, 5e-9, 15e-9};
    o.retention_stop_s = 2e-3;
    o.n_charges = 5;
  }
  if (!c.params.empty()) {
    spice::apply_params_json(parse_json(read_text_file(c.params), "params file '" + c.params + "'"),
                             o);
  }
  o.timeout_s = c.timeout_s;
  o.progress = [](const std::string& msg) { std::cerr << msg << std::endl; };
  std::unique_ptr<fit::IvTable> reference;
  if (!c.reference.empty())
    reference = std::make_unique<fit::IvTable>(fit::read_iv_table(c.reference));
  const spice::Characterization result = spice::characterize(o);
  const nlohmann::json summary = spice::write_characterization(result, o, c.out, reference.get());
  std::cerr << "characterize: wrote " << c.out
            << "/{gain_cell_iv_table.csv, device.json, model_vs_spice.csv, "
            << "fit.json, pwm_check.csv, retention.csv, charge_to_pulse.csv, "
            << "characterization.json}" << std::endl;
  std::cout << summary.dump(2) << "\n";
}

void setup_characterize(CLI::App& app) {
  auto c = std::make_shared<CharacterizeCli>();
  app.add_option("--netlist", c->netlist, "gain-cell netlist (contract in docs/spice.md)")
      ->capture_default_str();
  app.add_option("--converter-netlist", c->converter, "charge-to-pulse converter netlist")
      ->capture_default_str();
  app.add_flag("--no-converter", c->no_converter, "skip the charge-to-pulse transfer curve");
  app.add_option("--params", c->params,
                 "JSON with netlist parameter overrides {\"gain_cell\": {...}, "
                 "\"charge_to_pulse\": {...}, \"time_per_token_s\": ...}");
  app.add_option("--out", c->out, "output directory")->required();
  app.add_option("--reference", c->reference,
                 "I-V table to report the RMS difference against (e.g. the paper's)");
  app.add_flag("--quick", c->quick, "coarse grid and short transients (smoke test)");
  app.add_option("--timeout", c->timeout_s, "limit per ngspice run (s)")->capture_default_str();
  app.callback([c] {
    if (!(c->timeout_s > 0)) throw Error("--timeout must be positive");
    run_characterize(*c);
  });
}

CommandRegistration reg({"characterize",
                         "SPICE-characterise a gain cell and a charge-to-pulse converter",
                         setup_characterize});

}  // namespace
}  // namespace gaincell::cli
