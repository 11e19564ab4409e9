#include "gaincell/tools/cost/plot_svg.h"

#include "gaincell/core/file_io.h"
#include "gaincell/tools/plot/plot.h"

namespace gaincell::cost {

std::vector<std::filesystem::path> write_cost_plots(const CostReport& report,
                                                    const std::filesystem::path& dir) {
  using plot::Bar;
  const CostEstimate& e = report.estimate;
  const char* kGainCell = "#2ca02c";
  const char* kMeasured = "#d62728";
  const char* kModel = "#1f77b4";
  std::vector<Bar> latency{{"gain cell", e.latency_per_token_s, kGainCell}};
  // Energy per head, so that GPU figures measured at another head count stay unscaled.
  std::vector<Bar> energy{{"gain cell", e.energy_per_token_per_head_j, kGainCell}};
  for (const auto& g : report.gpus) {
    const std::string label = g.gpu + (g.source == "measured" ? " (measured)" : " (model)");
    const char* color = g.source == "measured" ? kMeasured : kModel;
    latency.push_back({label, g.latency_per_token_s, color});
    energy.push_back({label, g.energy_per_token_j / g.heads, color});
  }
  std::vector<Bar> energy_parts, area_parts;
  for (const auto& c : e.components) {
    if (c.energy_per_token_j > 0.0)
      energy_parts.push_back({c.name, c.energy_per_token_j, "#9467bd"});
    if (c.area_mm2 > 0.0) area_parts.push_back({c.name, c.area_mm2, "#8c564b"});
  }
  using plot::Axis;
  using plot::Scale;
  const std::vector<std::pair<std::string, std::string>> files = {
      {"latency.svg", plot::bar_chart_svg("Attention latency per token (one layer)",
                                          Axis{"Latency per token", "s", Scale::kLog}, latency)},
      {"energy.svg",
       plot::bar_chart_svg("Attention energy per token per head",
                           Axis{"Energy per token per head", "J", Scale::kLog}, energy)},
      {"breakdown_energy.svg",
       plot::bar_chart_svg("Energy per token per head by component",
                           Axis{"Energy per token per head", "J", Scale::kLinear}, energy_parts)},
      {"breakdown_area.svg",
       plot::bar_chart_svg("Area per head by component",
                           Axis{"Area per head", "mm²", Scale::kLinear}, area_parts)},
  };
  std::vector<std::filesystem::path> written;
  for (const auto& [name, svg] : files) {
    write_file_atomic(dir / name, svg);
    written.push_back(dir / name);
  }
  return written;
}

}  // namespace gaincell::cost
