// Hand-written SVG bar charts for `gaincell cost --plot` (no plotting dependency): latency and
// energy on a log axis as in the paper's Fig. 5, and the component breakdowns on a linear axis.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

#include "gaincell/tools/cost/cost_report.h"

namespace gaincell::cost {

struct Bar {
  std::string label;
  double value = 0.0;  // must be > 0 on a log axis
  std::string color;   // SVG colour, e.g. "#1f77b4"
};

// A vertical bar chart; each bar carries its value as text. Throws gaincell::Error for an empty
// chart or a non-positive value on a log axis.
std::string svg_bar_chart(const std::string& title, const std::string& axis_label,
                          const std::vector<Bar>& bars, bool log_axis);

// Writes latency.svg, energy.svg, breakdown_energy.svg and breakdown_area.svg into `dir`
// (atomically, one file at a time). Returns the paths written.
std::vector<std::filesystem::path> write_cost_plots(const CostReport& report,
                                                    const std::filesystem::path& dir);

}  // namespace gaincell::cost
