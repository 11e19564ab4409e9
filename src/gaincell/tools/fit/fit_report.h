// Everything `gaincell fit` computes from one table, as a struct, JSON, text and SVG plots.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/tools/fit/cell_fit.h"
#include "gaincell/tools/fit/iv_table.h"

namespace gaincell::fit {

struct FitReport {
  PaperFit paper;                    // spec §2.3
  LinearSlopeFit linear;             // spec §2.4
  std::vector<SurfaceFit> surfaces;  // 2-D fits (3,3), (4,4), (5,5) of spec §10
};

FitReport fit_all(const IvTable& table, double vin = kPaperVdd, double offset = kPaperZeroPoint);

// JSON with at least "coefficients" (ten C_ij, spec order), "rms_ua" and "linear_slope".
nlohmann::json fit_report_json(const FitReport& r);
std::string fit_report_text(const FitReport& r);

// Writes DIR/fit_vin.svg (data at vin against the polynomial and the linear fit) and
// DIR/fit_surface.svg (several Vin columns against the highest-order surface fit).
void write_fit_plots(const FitReport& r, const IvTable& table, const std::filesystem::path& dir);

}  // namespace gaincell::fit
