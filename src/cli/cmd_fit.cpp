// gaincell fit --table CSV [--json] [--plot DIR] [--device-out FILE] [--hw CONFIG --report CSV]:
// fits of a gain-cell I-V table (spec §2.3, §2.4, §10) and, with --hw, a point-by-point comparison
// of a hardware configuration's cell model with the table (issue 6, point 5).
#include <iostream>
#include <memory>

#include "cli/command.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/fit/compare.h"
#include "gaincell/tools/fit/device.h"
#include "gaincell/tools/fit/fit_report.h"

namespace gaincell::cli {
namespace {

struct FitOptions {
  std::string table;
  double vin = kPaperVdd;
  double offset = kPaperZeroPoint;
  bool json = false;
  std::string plot_dir;
  std::string device_out;
  std::string hw;
  std::string report;
};

void run_fit(const FitOptions& o) {
  const fit::IvTable table = fit::read_iv_table(o.table);
  const fit::FitReport r = fit::fit_all(table, o.vin, o.offset);
  nlohmann::json j = fit::fit_report_json(r);
  j["table"] = {
      {"file", o.table}, {"rows_vstore", table.vstore.size()}, {"columns_vin", table.vin.size()}};
  if (!o.device_out.empty()) {
    fit::DeviceModel d = fit::device_from_fit(r.paper, r.linear);
    d.source = {{"tool", "gaincell fit"}, {"table", o.table}};
    write_file_atomic(o.device_out, d.to_json().dump(2) + "\n");
    j["device_file"] = o.device_out;
  }
  if (!o.hw.empty()) {
    HwConfig hw = HwConfig::load(o.hw);
    const fit::ModelComparison cmp = fit::compare_hw_to_table(hw, table);
    j["comparison"] = {{"hw", o.hw},
                       {"cell", to_string(hw.cell)},
                       {"vin", cmp.vin},
                       {"rms_ua", cmp.rms_ua},
                       {"max_abs_ua", cmp.max_abs_ua}};
    if (!o.report.empty()) write_file_atomic(o.report, cmp.csv());
  }
  if (!o.plot_dir.empty()) fit::write_fit_plots(r, table, o.plot_dir);
  if (o.json) {
    std::cout << j.dump(2) << "\n";
  } else {
    std::cout << fit::fit_report_text(r);
    if (j.contains("comparison"))
      std::cout << "model '" << o.hw << "' vs table at Vin = " << j["comparison"]["vin"]
                << " V: RMS " << j["comparison"]["rms_ua"] << " uA, max "
                << j["comparison"]["max_abs_ua"] << " uA\n";
  }
}

void setup_fit(CLI::App& app) {
  auto o = std::make_shared<FitOptions>();
  app.add_option("--table", o->table, "I-V table CSV (layout of gain_cell_iv_table.csv)")
      ->required();
  app.add_option("--vin", o->vin, "read amplitude of the paper fit (V)")->capture_default_str();
  app.add_option("--offset", o->offset, "zero point of the stored voltage (V)")
      ->capture_default_str();
  app.add_flag("--json", o->json, "print the results as JSON");
  app.add_option("--plot", o->plot_dir, "write fit_vin.svg and fit_surface.svg into DIR");
  app.add_option("--device-out", o->device_out, "write the fitted device JSON to FILE");
  app.add_option("--hw", o->hw,
                 "compare this hardware configuration (preset or JSON) with the table");
  app.add_option("--report", o->report, "with --hw: write the point-by-point comparison CSV");
  app.callback([o] {
    if (!o->report.empty() && o->hw.empty()) throw Error("--report needs --hw");
    run_fit(*o);
  });
}

CommandRegistration reg({"fit", "fit the behavioural cell model to an I-V table", setup_fit});

}  // namespace
}  // namespace gaincell::cli
