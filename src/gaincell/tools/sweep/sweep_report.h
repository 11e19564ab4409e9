// Outputs of a finished sweep: summary.csv (one row per point), the Pareto fronts (objective
// against energy per token and against area), SVG plots (the fronts and one plot per axis with
// 95% confidence bars) and report.md, which embeds them with the sweep file and the table.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/tools/sweep/evaluator.h"
#include "gaincell/tools/sweep/sweep_spec.h"

namespace gaincell::sweep {

// The summary table as CSV text; `results` sorted by point. Columns: point, status, the axes,
// <metric>_mean/_std/_ci95_low/_ci95_high for every metric, the cost figures, pareto_energy,
// pareto_area, seeds, error.
std::string summary_csv(const SweepSpec& spec, const std::vector<MetricInfo>& metrics,
                        const std::vector<nlohmann::json>& results, const nlohmann::json& pareto);

// {"objective", "higher_is_better", "energy": [point...], "area": [point...]} over the points
// with status ok.
nlohmann::json pareto_sets(const std::vector<MetricInfo>& metrics, const std::string& objective,
                           const std::vector<nlohmann::json>& results);

}  // namespace gaincell::sweep
