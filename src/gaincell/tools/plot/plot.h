// The one plotting module of gaincell (hand-written SVG, no dependency): line/marker charts with
// optional confidence bars, and bar charts, used by the demo, `cost --plot`, `fit --plot` and
// `sweep`. The rules a figure for a paper needs are built in:
//   - tick values are round: 1, 2 or 5 times a power of ten on linear axes, decades (with 2 and 5
//     when few decades are shown) on log axes; never 1.24e+03 or -0.176;
//   - an axis is logarithmic when asked, or (Scale::kAuto) when its positive data span more than
//     two decades;
//   - one quantity per axis: the axis label names it and its unit; values with an SI unit take a
//     prefix (nJ, µs) chosen from the axis range, so tick labels stay short;
//   - the legend names every series.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace gaincell::plot {

enum class Scale { kAuto, kLinear, kLog };

struct Axis {
  Axis(std::string quantity_ = {}, std::string unit_ = {}, Scale scale_ = Scale::kAuto,
       std::optional<double> min_ = {}, std::optional<double> max_ = {})
      : quantity(std::move(quantity_)),
        unit(std::move(unit_)),
        scale(scale_),
        min(min_),
        max(max_) {}
  std::string quantity;  // "Energy per token"
  std::string unit;      // "J" (SI units get a prefix), "nats/token", "" for a pure number
  Scale scale = Scale::kAuto;
  std::optional<double> min, max;  // forced range (else from the data, padded to round ticks)
  bool include_zero = false;       // linear axes: extend the range to 0
};

enum class Style { kLine, kMarkers, kLineMarkers };

struct Series {
  Series(std::string label_ = {}, std::vector<double> x_ = {}, std::vector<double> y_ = {},
         std::vector<double> y_low_ = {}, std::vector<double> y_high_ = {},
         Style style_ = Style::kLineMarkers, std::string color_ = {})
      : label(std::move(label_)),
        x(std::move(x_)),
        y(std::move(y_)),
        y_low(std::move(y_low_)),
        y_high(std::move(y_high_)),
        style(style_),
        color(std::move(color_)) {}
  std::string label;  // legend text
  std::vector<double> x, y;
  // Optional error bars: absolute lower and upper ends (same size as y), e.g. a 95% CI.
  std::vector<double> y_low, y_high;
  Style style = Style::kLineMarkers;
  std::string color;                      // empty: the palette's next colour
  std::vector<std::string> point_labels;  // optional text next to each point
  bool dashed = false;
};

struct Chart {
  std::string title;
  Axis x, y;
  std::vector<Series> series;
  // Categorical x axis: x values are indices 0..n-1 into these labels (e.g. "4", "8", "16").
  std::vector<std::string> x_categories;
  int width = 720, height = 440;
};

// One chart as an SVG document. Throws gaincell::Error for a chart without data, mismatched
// sizes, non-finite values, or non-positive values on a log axis.
std::string render_svg(const Chart& chart);
// Several charts stacked vertically in one SVG document (e.g. two quantities over one x axis).
std::string render_svg(const std::vector<Chart>& panels);

struct Bar {
  std::string label;
  double value = 0.0;  // > 0 on a log axis
  std::string color;   // empty: the palette
};
// A vertical bar chart with each bar's value printed on it.
std::string bar_chart_svg(const std::string& title, const Axis& y, const std::vector<Bar>& bars);

// ---- building blocks (exposed for tests) ----

// Round ticks covering [lo, hi] on a linear axis: step 1, 2 or 5 x 10^k, about `target` ticks;
// the first tick <= lo and the last >= hi.
std::vector<double> linear_ticks(double lo, double hi, int target = 6);
// Ticks covering [lo, hi] (lo > 0) on a log axis: powers of ten; with 1, 2, 5 per decade when the
// range spans fewer than three decades.
std::vector<double> log_ticks(double lo, double hi);
// A tick value printed with the decimals its step needs ("0.25", "-0.2", "1000"); no "-0".
std::string format_tick(double value, double step);
// SI prefix for values up to `max_abs` in `unit` when the unit takes one (J, s, W, V, A, F, Hz,
// m): returns the scale factor (value / factor is shown) and the prefixed unit ("nJ").
std::pair<double, std::string> si_scale(double max_abs, const std::string& unit);
// The axis title: "Energy per token (nJ)", or the quantity alone without a unit.
std::string axis_title(const std::string& quantity, const std::string& unit);
// Palette colour i (colour-blind-safe Tableau 10 order).
std::string palette(size_t i);

}  // namespace gaincell::plot
