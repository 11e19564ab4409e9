// Hand-written SVG plots of data against fits (no plotting dependency): `gaincell fit --plot DIR`.
#pragma once

#include <string>
#include <vector>

namespace gaincell::fit {

struct Series {
  std::string label;
  std::string color;
  std::vector<double> x, y;
  bool markers = false;  // true: points, false: polyline
};

// A single x/y chart with axes, ticks, a legend and the given series.
std::string svg_chart(const std::string& title, const std::string& x_label,
                      const std::string& y_label, const std::vector<Series>& series);

}  // namespace gaincell::fit
