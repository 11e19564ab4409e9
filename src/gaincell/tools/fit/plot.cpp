#include "gaincell/tools/fit/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

namespace gaincell::fit {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

}  // namespace

std::string svg_chart(const std::string& title, const std::string& x_label,
                      const std::string& y_label, const std::vector<Series>& series) {
  const double W = 720, H = 480, left = 70, right = 170, top = 40, bottom = 55;
  double xmin = std::numeric_limits<double>::infinity(), xmax = -xmin, ymin = xmin, ymax = -xmin;
  for (const auto& s : series)
    for (size_t k = 0; k < s.x.size(); ++k) {
      if (!std::isfinite(s.x[k]) || !std::isfinite(s.y[k])) continue;
      xmin = std::min(xmin, s.x[k]);
      xmax = std::max(xmax, s.x[k]);
      ymin = std::min(ymin, s.y[k]);
      ymax = std::max(ymax, s.y[k]);
    }
  if (!(xmax > xmin)) xmin = 0, xmax = 1;
  if (!(ymax > ymin)) ymin = -1, ymax = 1;
  const double pad = 0.05 * (ymax - ymin);
  ymin -= pad;
  ymax += pad;
  const double pw = W - left - right, ph = H - top - bottom;
  auto px = [&](double x) { return left + (x - xmin) / (xmax - xmin) * pw; };
  auto py = [&](double y) { return top + (ymax - y) / (ymax - ymin) * ph; };

  std::string svg = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + fmt("%.0f", W) +
                    "\" height=\"" + fmt("%.0f", H) +
                    "\" font-family=\"sans-serif\" "
                    "font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  svg += "<text x=\"" + fmt("%.1f", left) + "\" y=\"22\" font-size=\"15\">" + escape(title) +
         "</text>\n";
  svg += "<rect x=\"" + fmt("%.1f", left) + "\" y=\"" + fmt("%.1f", top) + "\" width=\"" +
         fmt("%.1f", pw) + "\" height=\"" + fmt("%.1f", ph) +
         "\" fill=\"none\" stroke=\"black\"/>\n";
  for (int k = 0; k <= 5; ++k) {
    const double x = xmin + (xmax - xmin) * k / 5, y = ymin + (ymax - ymin) * k / 5;
    svg += "<text x=\"" + fmt("%.1f", px(x)) + "\" y=\"" + fmt("%.1f", top + ph + 16) +
           "\" text-anchor=\"middle\">" + fmt("%.3g", x) + "</text>\n";
    svg += "<text x=\"" + fmt("%.1f", left - 6) + "\" y=\"" + fmt("%.1f", py(y) + 4) +
           "\" text-anchor=\"end\">" + fmt("%.3g", y) + "</text>\n";
    svg += "<line x1=\"" + fmt("%.1f", left) + "\" x2=\"" + fmt("%.1f", left + pw) + "\" y1=\"" +
           fmt("%.1f", py(y)) + "\" y2=\"" + fmt("%.1f", py(y)) + "\" stroke=\"#ddd\"/>\n";
  }
  svg += "<text x=\"" + fmt("%.1f", left + pw / 2) + "\" y=\"" + fmt("%.1f", H - 12) +
         "\" text-anchor=\"middle\">" + escape(x_label) + "</text>\n";
  svg += "<text transform=\"translate(16," + fmt("%.1f", top + ph / 2) +
         ") rotate(-90)\" text-anchor=\"middle\">" + escape(y_label) + "</text>\n";
  int legend_rows = 0;
  for (size_t s = 0; s < series.size(); ++s) {
    const auto& se = series[s];
    if (se.markers) {
      for (size_t k = 0; k < se.x.size(); ++k)
        svg += "<circle cx=\"" + fmt("%.1f", px(se.x[k])) + "\" cy=\"" + fmt("%.1f", py(se.y[k])) +
               "\" r=\"2.5\" fill=\"" + se.color + "\"/>\n";
    } else {
      svg += "<polyline fill=\"none\" stroke=\"" + se.color + "\" stroke-width=\"1.5\" points=\"";
      for (size_t k = 0; k < se.x.size(); ++k)
        svg += fmt("%.1f", px(se.x[k])) + "," + fmt("%.1f", py(se.y[k])) + " ";
      svg += "\"/>\n";
    }
    if (se.label.empty()) continue;
    const double ly = top + 14 + 18 * legend_rows++;
    svg += "<rect x=\"" + fmt("%.1f", left + pw + 10) + "\" y=\"" + fmt("%.1f", ly - 8) +
           "\" width=\"12\" height=\"8\" fill=\"" + se.color + "\"/>\n";
    svg += "<text x=\"" + fmt("%.1f", left + pw + 28) + "\" y=\"" + fmt("%.1f", ly) + "\">" +
           escape(se.label) + "</text>\n";
  }
  svg += "</svg>\n";
  return svg;
}

}  // namespace gaincell::fit
