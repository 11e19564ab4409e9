#include "gaincell/tools/cost/plot_svg.h"

#include <cctype>
#include <string>
#include <vector>

#include "gaincell/core/file_io.h"
#include "gaincell/tools/plot/plot.h"

namespace gaincell::cost {

namespace {

// File name of one GPU's serving plot: "serving_rtx_4090.svg".
std::string serving_file_name(const std::string& gpu) {
  std::string name = "serving_";
  for (char c : gpu)
    name += std::isalnum(static_cast<unsigned char>(c)) ? char(std::tolower(c)) : '_';
  return name + ".svg";
}

// Speed-up and energy ratio against one GPU over the batch size (docs/cost-model.md §5): two
// panels over one log batch axis, one series per comparison.
std::string serving_svg(const ServingComparison& c) {
  std::vector<double> batch;
  std::vector<double> attn_speed, attn_area, model_speed, acc_speed;
  std::vector<double> attn_energy, model_energy, acc_energy;
  for (const auto& p : c.points) {
    batch.push_back(double(p.batch));
    attn_speed.push_back(p.attention_speedup);
    attn_area.push_back(p.attention_throughput_per_area_ratio);
    model_speed.push_back(p.model_speedup_gpu_rest);
    acc_speed.push_back(p.model_speedup_accelerator_rest);
    attn_energy.push_back(p.attention_energy_ratio);
    model_energy.push_back(p.model_energy_ratio_gpu_rest);
    acc_energy.push_back(p.model_energy_ratio_accelerator_rest);
  }
  using plot::Axis;
  using plot::Scale;
  using plot::Series;
  const Axis x{"Batch size (sequences decoded together)", "", Scale::kLog};
  plot::Chart speed;
  speed.title = "Gain-cell attention against the " + c.gpu + ": speed-up per decode step";
  speed.x = x;
  speed.y = Axis{"Speed-up (GPU step / gain-cell step)", "", Scale::kLog};
  speed.series = {Series{"attention, one array set per sequence", batch, attn_speed},
                  Series{"attention throughput per mm²", batch, attn_area},
                  Series{"whole model, rest on the GPU", batch, model_speed},
                  Series{"whole model, rest on a digital accelerator", batch, acc_speed}};
  plot::Chart energy;
  energy.title = "Energy per generated token: GPU / gain-cell";
  energy.x = x;
  energy.y = Axis{"Energy ratio (GPU / gain-cell)", "", Scale::kLog};
  energy.series = {Series{"attention", batch, attn_energy},
                   Series{"whole model, rest on the GPU", batch, model_energy},
                   Series{"whole model, rest on a digital accelerator", batch, acc_energy}};
  return plot::render_svg(std::vector<plot::Chart>{speed, energy});
}

}  // namespace

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
  std::vector<std::pair<std::string, std::string>> all = files;
  for (const auto& c : report.serving) all.push_back({serving_file_name(c.gpu), serving_svg(c)});
  std::vector<std::filesystem::path> written;
  for (const auto& [name, svg] : all) {
    write_file_atomic(dir / name, svg);
    written.push_back(dir / name);
  }
  return written;
}

}  // namespace gaincell::cost
