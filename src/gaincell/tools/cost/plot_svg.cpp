#include "gaincell/tools/cost/plot_svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"

namespace gaincell::cost {

namespace {

constexpr double kWidthPerBar = 90.0;
constexpr double kLeft = 90.0, kRight = 70.0, kTop = 50.0, kPlotHeight = 300.0, kBottom = 150.0;

std::string escape_xml(const std::string& s) {
  std::string out;
  for (char c : s) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string short_number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}

// Maps a value to a height fraction in [0, 1] along the axis.
struct Axis {
  bool log;
  double lo, hi;
  double frac(double v) const {
    if (log) return (std::log10(v) - lo) / (hi - lo);
    return (v - lo) / (hi - lo);
  }
};

Axis make_axis(const std::vector<Bar>& bars, bool log_axis) {
  double vmin = bars[0].value, vmax = bars[0].value;
  for (const auto& b : bars) {
    vmin = std::min(vmin, b.value);
    vmax = std::max(vmax, b.value);
  }
  if (log_axis) {
    double lo = std::floor(std::log10(vmin));
    double hi = std::ceil(std::log10(vmax));
    if (hi <= lo) hi = lo + 1.0;
    return {true, lo, hi};
  }
  // A "nice" linear top (1, 2 or 5 x 10^k) so that the five tick labels are round numbers.
  if (vmax <= 0.0) return {false, 0.0, 1.0};
  const double target = vmax * 1.05;
  const double decade = std::pow(10.0, std::floor(std::log10(target)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * decade >= target) return {false, 0.0, m * decade};
  return {false, 0.0, 10.0 * decade};
}

}  // namespace

std::string svg_bar_chart(const std::string& title, const std::string& axis_label,
                          const std::vector<Bar>& bars, bool log_axis) {
  require(!bars.empty(), "plot '" + title + "': no bars");
  for (const auto& b : bars) {
    require(std::isfinite(b.value) && b.value >= 0.0,
            "plot '" + title + "': bar '" + b.label + "' has an invalid value");
    require(!log_axis || b.value > 0.0,
            "plot '" + title + "': bar '" + b.label + "' must be > 0 on a log axis");
  }
  const Axis axis = make_axis(bars, log_axis);
  const double width = kLeft + kRight + kWidthPerBar * bars.size();
  const double height = kTop + kPlotHeight + kBottom;
  const double y0 = kTop + kPlotHeight;
  std::ostringstream os;
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
     << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  os << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  os << "<text x=\"" << width / 2 << "\" y=\"25\" text-anchor=\"middle\" font-size=\"15\">"
     << escape_xml(title) << "</text>\n";
  // Grid lines and tick labels: decades on a log axis, five steps on a linear one.
  const int ticks = log_axis ? static_cast<int>(axis.hi - axis.lo) : 5;
  for (int i = 0; i <= ticks; ++i) {
    const double f = double(i) / ticks;
    const double y = y0 - f * kPlotHeight;
    const double value = log_axis ? std::pow(10.0, axis.lo + i) : axis.lo + f * (axis.hi - axis.lo);
    os << "<line x1=\"" << kLeft << "\" x2=\"" << width - kRight << "\" y1=\"" << y << "\" y2=\""
       << y << "\" stroke=\"#ddd\"/>\n";
    os << "<text x=\"" << kLeft - 6 << "\" y=\"" << y + 4 << "\" text-anchor=\"end\">"
       << short_number(value) << "</text>\n";
  }
  os << "<text transform=\"translate(20," << kTop + kPlotHeight / 2
     << ") rotate(-90)\" text-anchor=\"middle\">" << escape_xml(axis_label)
     << (log_axis ? " (log scale)" : "") << "</text>\n";
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const double x = kLeft + kWidthPerBar * i + 15.0;
    const double h = std::max(0.0, std::min(1.0, axis.frac(b.value))) * kPlotHeight;
    os << "<rect x=\"" << x << "\" y=\"" << y0 - h << "\" width=\"" << kWidthPerBar - 30.0
       << "\" height=\"" << h << "\" fill=\"" << escape_xml(b.color) << "\"/>\n";
    os << "<text x=\"" << x + (kWidthPerBar - 30.0) / 2 << "\" y=\"" << y0 - h - 4
       << "\" text-anchor=\"middle\" font-size=\"10\">" << short_number(b.value) << "</text>\n";
    os << "<text transform=\"translate(" << x + (kWidthPerBar - 30.0) / 2 << "," << y0 + 12
       << ") rotate(40)\" font-size=\"11\">" << escape_xml(b.label) << "</text>\n";
  }
  os << "<line x1=\"" << kLeft << "\" x2=\"" << kLeft << "\" y1=\"" << kTop << "\" y2=\"" << y0
     << "\" stroke=\"black\"/>\n";
  os << "<line x1=\"" << kLeft << "\" x2=\"" << width - kRight << "\" y1=\"" << y0 << "\" y2=\""
     << y0 << "\" stroke=\"black\"/>\n";
  os << "</svg>\n";
  return os.str();
}

std::vector<std::filesystem::path> write_cost_plots(const CostReport& report,
                                                    const std::filesystem::path& dir) {
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
      energy_parts.push_back({c.name, c.energy_per_token_j * 1e12, "#9467bd"});
    if (c.area_mm2 > 0.0) area_parts.push_back({c.name, c.area_mm2, "#8c564b"});
  }
  const std::vector<std::pair<std::string, std::string>> files = {
      {"latency.svg",
       svg_bar_chart("Attention latency per token (one layer)", "seconds", latency, true)},
      {"energy.svg", svg_bar_chart("Attention energy per token per head", "joules", energy, true)},
      {"breakdown_energy.svg",
       svg_bar_chart("Energy per token per head by component", "pJ", energy_parts, false)},
      {"breakdown_area.svg", svg_bar_chart("Area per head by component", "mm²", area_parts, false)},
  };
  std::vector<std::filesystem::path> written;
  for (const auto& [name, svg] : files) {
    write_file_atomic(dir / name, svg);
    written.push_back(dir / name);
  }
  return written;
}

}  // namespace gaincell::cost
