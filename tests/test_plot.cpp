// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// The shared plotting module (tools/plot/plot.h): round ticks, log axes, SI-prefixed units, bar
// heights, and the errors for data a chart cannot show.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "gaincell/core/error.h"
#include "gaincell/tools/plot/plot.h"

namespace gaincell::plot {
namespace {

// A tick is "round" when it is an integer multiple of 1, 2 or 5 x 10^k for the step between ticks.
void expect_round_ticks(const std::vector<double>& t) {
  ASSERT_GE(t.size(), 2u);
  const double step = t[1] - t[0];
  const double mantissa = step / std::pow(10.0, std::floor(std::log10(step) + 1e-9));
  EXPECT_TRUE(std::fabs(mantissa - 1) < 1e-9 || std::fabs(mantissa - 2) < 1e-9 ||
              std::fabs(mantissa - 5) < 1e-9)
      << step;
  for (size_t i = 0; i < t.size(); ++i) {
    EXPECT_NEAR(t[i], t[0] + i * step, step * 1e-9);
    EXPECT_NEAR(t[i] / step, std::round(t[i] / step), 1e-6);
  }
}

TEST(PlotTicks, LinearTicksAreRoundAndCoverTheData) {
  for (auto [lo, hi] : std::vector<std::pair<double, double>>{
           {0, 1240}, {-0.176, 0.93}, {3.7, 3.71}, {-5e-9, 2e-8}, {12, 97}, {0.5, 0.5}}) {
    const auto t = linear_ticks(lo, hi);
    expect_round_ticks(t);
    EXPECT_LE(t.front(), lo);
    EXPECT_GE(t.back(), hi);
    EXPECT_LE(t.size(), 12u);
  }
  EXPECT_EQ(linear_ticks(0, 1240), (std::vector<double>{0, 200, 400, 600, 800, 1000, 1200, 1400}));
  EXPECT_EQ(linear_ticks(-0.176, 0.93).front(), -0.2);
}

TEST(PlotTicks, TickLabelsHaveNoExponentsAndNoNegativeZero) {
  EXPECT_EQ(format_tick(1200, 200), "1200");
  EXPECT_EQ(format_tick(-0.2, 0.2), "-0.2");
  EXPECT_EQ(format_tick(0.25, 0.05), "0.25");
  EXPECT_EQ(format_tick(-1e-17, 0.1), "0.0");
  EXPECT_EQ(format_tick(3.705, 0.005), "3.705");
}

TEST(PlotTicks, LogTicksAreDecadesOrOneTwoFive) {
  EXPECT_EQ(log_ticks(2e-9, 3e-5), (std::vector<double>{1e-9, 1e-8, 1e-7, 1e-6, 1e-5, 1e-4}));
  const auto few = log_ticks(3, 40);
  EXPECT_EQ(few.front(), 2);
  EXPECT_EQ(few.back(), 50);
  for (double t : few) {
    const double m = t / std::pow(10.0, std::floor(std::log10(t) + 1e-9));
    EXPECT_TRUE(std::fabs(m - 1) < 1e-9 || std::fabs(m - 2) < 1e-9 || std::fabs(m - 5) < 1e-9);
  }
  EXPECT_THROW(log_ticks(0, 1), Error);
}

TEST(PlotUnits, SiPrefixFromTheRangeAndAxisTitles) {
  EXPECT_EQ(si_scale(3.2e-9, "J").second, "nJ");
  EXPECT_DOUBLE_EQ(si_scale(3.2e-9, "J").first, 1e-9);
  EXPECT_EQ(si_scale(650e-9, "J").second, "nJ");
  EXPECT_EQ(si_scale(2e-6, "s").second, "µs");
  EXPECT_EQ(si_scale(5.0, "mm²").second, "mm²");  // not an SI base unit: unchanged
  EXPECT_EQ(axis_title("Energy per token", "nJ"), "Energy per token (nJ)");
  EXPECT_EQ(axis_title("Perplexity", ""), "Perplexity");
}

TEST(PlotChart, RendersRoundTicksUnitsLegendAndErrorBars) {
  Chart c;
  c.title = "t";
  c.x = {"Energy per token", "J"};
  c.y = {"Perplexity", ""};
  c.series = {{"front", {1e-9, 4e-9, 2e-8}, {5.2, 4.1, 3.9}, {5.0, 4.0, 3.8}, {5.4, 4.2, 4.0}}};
  const std::string svg = render_svg(c);
  EXPECT_EQ(svg.rfind("<svg", 0), 0u);
  EXPECT_NE(svg.find("Energy per token (nJ)"), std::string::npos);
  EXPECT_NE(svg.find(">front<"), std::string::npos);
  EXPECT_EQ(svg.find("e+"), std::string::npos);
  EXPECT_EQ(svg.find("e-0"), std::string::npos);
  // 1..20 nJ spans more than a decade but not two: linear axis with round ticks 0, 5, ... 20.
  EXPECT_NE(svg.find(">20<"), std::string::npos);
  // Error bars: one path per point.
  size_t paths = 0;
  for (size_t at = svg.find("<path"); at != std::string::npos; at = svg.find("<path", at + 1))
    ++paths;
  EXPECT_EQ(paths, 3u);
}

TEST(PlotChart, LogAxisWhenTheDataSpanDecades) {
  Chart c{"t", {"Retention time", "s"}, {"Loss", "nats/token"}, {}, {}, 720, 440};
  c.series = {{"loss", {1e-3, 1e-1, 10}, {3, 2.5, 2.4}}};
  const std::string svg = render_svg(c);
  EXPECT_NE(svg.find("Retention time (s)"), std::string::npos);
  EXPECT_NE(svg.find(">0.001<"), std::string::npos);
  EXPECT_NE(svg.find(">10<"), std::string::npos);
  c.x.scale = Scale::kLog;
  c.series[0].x[0] = 0.0;
  EXPECT_THROW(render_svg(c), Error);
  c.series[0].x[0] = NAN;
  c.x.scale = Scale::kLinear;
  EXPECT_THROW(render_svg(c), Error);
  EXPECT_THROW(render_svg(Chart{}), Error);
}

TEST(PlotBars, LogAxisBarHeightsFollowDecades) {
  // 1e-9, 1e-8 and 1e-6: bar tops one and three decades above the first on a log axis.
  const std::string svg =
      bar_chart_svg("t", Axis{"Latency", "s", Scale::kLog},
                    {{"a", 1e-9, "red"}, {"b", 1e-8, "red"}, {"c", 1e-6, "red"}});
  // The heights of the filled <rect> elements placed by x (the bars), in document order.
  std::vector<double> h;
  const std::string rect_start = "<rect x=\"", height_key = "height=\"";
  for (std::size_t at = svg.find(rect_start); at != std::string::npos;
       at = svg.find(rect_start, at + 1)) {
    const std::size_t end = svg.find('>', at);
    const std::size_t height_at = svg.find(height_key, at);
    const std::string element = svg.substr(at, end - at);
    if (height_at == std::string::npos || height_at > end ||
        element.find("fill=\"none\"") != std::string::npos)
      continue;
    h.push_back(std::stod(svg.substr(height_at + height_key.size())));
  }
  ASSERT_EQ(h.size(), 3u);
  EXPECT_GT(h[0], 0.0);  // the smallest bar is visible
  EXPECT_NEAR((h[2] - h[1]) / (h[1] - h[0]), 2.0, 1e-6);
  EXPECT_NE(svg.find("Latency (µs)"), std::string::npos);
  EXPECT_THROW(bar_chart_svg("t", Axis{"x", "s", Scale::kLog}, {{"z", 0.0, "red"}}), Error);
  EXPECT_THROW(bar_chart_svg("t", Axis{"x", "s"}, {}), Error);
}

}  // namespace
}  // namespace gaincell::plot
