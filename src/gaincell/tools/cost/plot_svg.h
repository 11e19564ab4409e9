// `gaincell cost --plot DIR`: latency and energy against GPUs on log axes as in the paper's Fig. 5,
// and the component breakdowns on linear axes, drawn with the shared plotting module
// (tools/plot/plot.h).
#pragma once

#include <filesystem>
#include <vector>

#include "gaincell/tools/cost/cost_report.h"

namespace gaincell::cost {

// Writes latency.svg, energy.svg, breakdown_energy.svg and breakdown_area.svg, and with the
// serving comparison one serving_<gpu>.svg per GPU (speed-up and energy ratio over the batch), into
// `dir`
// (atomically, one file at a time). Returns the paths written.
std::vector<std::filesystem::path> write_cost_plots(const CostReport& report,
                                                    const std::filesystem::path& dir);

}  // namespace gaincell::cost
