#include "gaincell/tools/plot/plot.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

#include "gaincell/core/error.h"

namespace gaincell::plot {

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

std::string escape(const std::string& s) {
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

// Approximate rendered width of text in the charts' 12 px sans-serif (for layout only).
double text_width(const std::string& s, double font_px = 12.0) {
  size_t chars = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) ++chars;  // count UTF-8 code points
  return 0.6 * font_px * static_cast<double>(chars);
}

double nice_step(double raw) {
  const double p = std::pow(10.0, std::floor(std::log10(raw)));
  const double m = raw / p;
  // The 1-2-5 value nearest to the raw step (in the geometric sense), so the tick count stays
  // near the target.
  const double f = m < 1.5 ? 1.0 : m < 3.0 ? 2.0 : m < 7.0 ? 5.0 : 10.0;
  return f * p;
}

}  // namespace

std::string palette(size_t i) {
  static const char* colors[] = {"#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
                                 "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"};
  return colors[i % 10];
}

std::vector<double> linear_ticks(double lo, double hi, int target) {
  require(std::isfinite(lo) && std::isfinite(hi) && hi >= lo, "plot: invalid axis range");
  if (hi == lo) {
    const double pad = lo == 0.0 ? 1.0 : std::fabs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const double step = nice_step((hi - lo) / std::max(1, target - 1));
  const double first = std::floor(lo / step + 1e-9) * step;
  const double last = std::ceil(hi / step - 1e-9) * step;
  std::vector<double> ticks;
  for (int i = 0;; ++i) {
    double t = first + i * step;
    if (std::fabs(t) < step * 1e-9) t = 0.0;  // no -0 or 1e-17
    ticks.push_back(t);
    if (t >= last - step * 1e-9) break;
  }
  return ticks;
}

std::vector<double> log_ticks(double lo, double hi) {
  require(lo > 0 && hi >= lo && std::isfinite(hi), "plot: a log axis needs positive values");
  int d0 = static_cast<int>(std::floor(std::log10(lo) + 1e-9));
  int d1 = static_cast<int>(std::ceil(std::log10(hi) - 1e-9));
  if (d1 == d0) ++d1;
  std::vector<double> ticks;
  if (d1 - d0 < 3) {
    // Few decades: 1, 2, 5 per decade, trimmed to the data (one round tick beyond each end).
    std::vector<double> all;
    for (int d = d0; d <= d1; ++d)
      for (double m : {1.0, 2.0, 5.0}) all.push_back(m * std::pow(10.0, d));
    size_t a = 0, b = all.size() - 1;
    while (a + 1 < all.size() && all[a + 1] <= lo * (1 + 1e-9)) ++a;
    while (b > 0 && all[b - 1] >= hi * (1 - 1e-9)) --b;
    ticks.assign(all.begin() + a, all.begin() + b + 1);
  } else {
    for (int d = d0; d <= d1; ++d) ticks.push_back(std::pow(10.0, d));
  }
  return ticks;
}

std::string format_tick(double value, double step) {
  if (std::fabs(value) < std::fabs(step) * 1e-9) value = 0.0;
  int decimals = 0;
  if (step > 0 && step < 1) decimals = static_cast<int>(-std::floor(std::log10(step) + 1e-9));
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, value);
  std::string s = buf;
  if (s.rfind("-", 0) == 0 && s.find_first_not_of("-0.") == std::string::npos) s = s.substr(1);
  return s;
}

std::pair<double, std::string> si_scale(double max_abs, const std::string& unit) {
  static const char* si_units[] = {"J", "s", "W", "V", "A", "F", "Hz", "m"};
  bool takes_prefix = false;
  for (const char* u : si_units) takes_prefix = takes_prefix || unit == u;
  if (!takes_prefix || !(max_abs > 0) || !std::isfinite(max_abs)) return {1.0, unit};
  static const char* prefixes[] = {"f", "p", "n", "µ", "m", "", "k", "M", "G"};
  int e3 = static_cast<int>(std::floor(std::log10(max_abs) / 3.0 + 1e-9));
  e3 = std::clamp(e3, -5, 3);
  // 1000 nJ reads better as 1 µJ, but 0.5 µJ better as 500 nJ: the largest value sits in [1, 1000).
  return {std::pow(10.0, 3 * e3), std::string(prefixes[e3 + 5]) + unit};
}

std::string axis_title(const std::string& quantity, const std::string& unit) {
  return unit.empty() ? quantity : quantity + " (" + unit + ")";
}

namespace {

// One axis resolved for drawing: range, ticks, scale, SI factor.
struct ResolvedAxis {
  bool log = false;
  double lo = 0, hi = 1;  // in data units
  std::vector<double> ticks;
  std::vector<std::string> labels;  // SVG text (may hold a <tspan> superscript)
  std::string title;
  double map(double v, double p0, double p1) const {  // data -> pixels
    const double a = log ? std::log10(lo) : lo, b = log ? std::log10(hi) : hi;
    const double x = log ? std::log10(v) : v;
    return p0 + (x - a) / (b - a) * (p1 - p0);
  }
};

std::string log_label(double v, double factor) {
  const double shown = v / factor;
  const double e = std::log10(shown);
  const double er = std::round(e);
  if (std::fabs(e - er) < 1e-9 && (er < -3 || er > 4))
    return "10<tspan dy=\"-6\" font-size=\"9\">" + fmt("%.0f", er) + "</tspan>";
  return fmt("%g", shown);
}

ResolvedAxis resolve(const Axis& axis, std::vector<double> values) {
  ResolvedAxis r;
  values.erase(
      std::remove_if(values.begin(), values.end(), [](double v) { return !std::isfinite(v); }),
      values.end());
  require(!values.empty() || (axis.min && axis.max), "plot: an axis has no finite data");
  double lo = axis.min ? *axis.min : *std::min_element(values.begin(), values.end());
  double hi = axis.max ? *axis.max : *std::max_element(values.begin(), values.end());
  if (!values.empty()) {
    lo = std::min(lo, *std::min_element(values.begin(), values.end()));
    hi = std::max(hi, *std::max_element(values.begin(), values.end()));
  }
  if (axis.include_zero) {
    lo = std::min(lo, 0.0);
    hi = std::max(hi, 0.0);
  }
  const bool positive = lo > 0;
  r.log = axis.scale == Scale::kLog || (axis.scale == Scale::kAuto && positive && hi / lo > 100.0);
  if (r.log) {
    require(positive, "plot: log axis '" + axis.quantity + "' has values <= 0");
    r.ticks = log_ticks(lo, hi);
  } else {
    r.ticks = linear_ticks(lo, hi);
  }
  r.lo = r.ticks.front();
  r.hi = r.ticks.back();
  // The prefix puts the largest tick in [1, 1000).
  double max_abs = 0;
  for (double t : r.ticks) max_abs = std::max(max_abs, std::fabs(t));
  const auto [factor, unit] = si_scale(max_abs, axis.unit);
  const double step = r.ticks.size() > 1 ? (r.ticks[1] - r.ticks[0]) / factor : 1.0;
  for (double t : r.ticks)
    r.labels.push_back(r.log ? log_label(t, factor) : format_tick(t / factor, step));
  r.title = axis_title(axis.quantity, unit);
  return r;
}

void check_series(const Series& s, bool has_categories, size_t n_categories) {
  require(s.x.size() == s.y.size(), "plot: series '" + s.label + "' has x and y of unequal size");
  require(s.y_low.empty() || (s.y_low.size() == s.y.size() && s.y_high.size() == s.y.size()),
          "plot: series '" + s.label + "' error bars do not match its points");
  require(s.point_labels.empty() || s.point_labels.size() == s.x.size(),
          "plot: series '" + s.label + "' point labels do not match its points");
  for (size_t i = 0; i < s.x.size(); ++i) {
    require(std::isfinite(s.x[i]) && std::isfinite(s.y[i]),
            "plot: series '" + s.label + "' holds a non-finite value");
    if (has_categories)
      require(s.x[i] >= 0 && s.x[i] < static_cast<double>(n_categories),
              "plot: series '" + s.label + "' has an x outside the categories");
  }
}

double legend_width(const Chart& c) {
  double w = 0;
  for (const Series& s : c.series) w = std::max(w, text_width(s.label));
  return w;
}

// Draws one chart into `out` at vertical offset `top`; `legend_w` reserves the legend's width
// (stacked panels share one, so that their plot areas line up).
void draw_chart(std::ostringstream& out, const Chart& c, double top, double legend_w) {
  const bool categorical = !c.x_categories.empty();
  std::vector<double> xs, ys;
  bool any_point = false;
  for (const Series& s : c.series) {
    check_series(s, categorical, c.x_categories.size());
    xs.insert(xs.end(), s.x.begin(), s.x.end());
    ys.insert(ys.end(), s.y.begin(), s.y.end());
    ys.insert(ys.end(), s.y_low.begin(), s.y_low.end());
    ys.insert(ys.end(), s.y_high.begin(), s.y_high.end());
    any_point = any_point || !s.x.empty();
  }
  require(any_point, "plot: chart '" + c.title + "' has no data");
  ResolvedAxis ax;
  if (categorical) {
    ax.lo = -0.5;
    ax.hi = static_cast<double>(c.x_categories.size()) - 0.5;
    for (size_t i = 0; i < c.x_categories.size(); ++i) {
      ax.ticks.push_back(static_cast<double>(i));
      ax.labels.push_back(escape(c.x_categories[i]));
    }
    ax.title = axis_title(c.x.quantity, c.x.unit);
  } else {
    ax = resolve(c.x, xs);
  }
  const ResolvedAxis ay = resolve(c.y, ys);

  const bool legend = legend_w > 0;
  double tick_w = 0;
  for (const auto& l : ay.labels) tick_w = std::max(tick_w, text_width(l.substr(0, l.find('<'))));
  // A minimum tick-label width keeps stacked panels aligned for the usual short labels.
  const double x0 = 30 + std::max(tick_w, 40.0) + 16, x1 = c.width - (legend ? legend_w + 56 : 24);
  const double y0 = top + 40, y1 = top + c.height - 56;
  auto px = [&](double v) { return ax.map(v, x0, x1); };
  auto py = [&](double v) { return ay.map(v, y1, y0); };

  out << "<text x=\"" << (x0 + x1) / 2 << "\" y=\"" << top + 24
      << "\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">" << escape(c.title)
      << "</text>\n";
  // Grid, ticks and tick labels.
  for (size_t i = 0; i < ay.ticks.size(); ++i) {
    const double y = py(ay.ticks[i]);
    out << "<line x1=\"" << x0 << "\" y1=\"" << y << "\" x2=\"" << x1 << "\" y2=\"" << y
        << "\" stroke=\"#e5e5e5\"/>\n<text x=\"" << x0 - 6 << "\" y=\"" << y + 4
        << "\" text-anchor=\"end\">" << ay.labels[i] << "</text>\n";
  }
  for (size_t i = 0; i < ax.ticks.size(); ++i) {
    const double x = px(ax.ticks[i]);
    out << "<line x1=\"" << x << "\" y1=\"" << y0 << "\" x2=\"" << x << "\" y2=\"" << y1
        << "\" stroke=\"#f0f0f0\"/>\n<line x1=\"" << x << "\" y1=\"" << y1 << "\" x2=\"" << x
        << "\" y2=\"" << y1 + 5 << "\" stroke=\"#333\"/>\n<text x=\"" << x << "\" y=\"" << y1 + 18
        << "\" text-anchor=\"middle\">" << ax.labels[i] << "</text>\n";
  }
  out << "<rect x=\"" << x0 << "\" y=\"" << y0 << "\" width=\"" << x1 - x0 << "\" height=\""
      << y1 - y0 << "\" fill=\"none\" stroke=\"#333\"/>\n";
  out << "<text x=\"" << (x0 + x1) / 2 << "\" y=\"" << y1 + 40 << "\" text-anchor=\"middle\">"
      << escape(ax.title) << "</text>\n";
  out << "<text transform=\"translate(16," << (y0 + y1) / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << escape(ay.title) << "</text>\n";

  // Series.
  for (size_t si = 0; si < c.series.size(); ++si) {
    const Series& s = c.series[si];
    const std::string color = s.color.empty() ? palette(si) : s.color;
    if (s.style != Style::kMarkers && s.x.size() > 1) {
      out << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.8\""
          << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << " points=\"";
      for (size_t i = 0; i < s.x.size(); ++i) out << px(s.x[i]) << "," << py(s.y[i]) << " ";
      out << "\"/>\n";
    }
    for (size_t i = 0; i < s.x.size(); ++i) {
      const double x = px(s.x[i]), y = py(s.y[i]);
      if (!s.y_low.empty()) {
        const double lo = py(s.y_low[i]), hi = py(s.y_high[i]);
        out << "<path d=\"M" << x << "," << lo << "V" << hi << "M" << x - 4 << "," << lo << "h8M"
            << x - 4 << "," << hi << "h8\" stroke=\"" << color << "\" stroke-width=\"1.3\"/>\n";
      }
      if (s.style != Style::kLine)
        out << "<circle cx=\"" << x << "\" cy=\"" << y << "\" r=\"3.5\" fill=\"" << color
            << "\"/>\n";
      if (!s.point_labels.empty() && !s.point_labels[i].empty())
        out << "<text x=\"" << x + 6 << "\" y=\"" << y - 6 << "\" font-size=\"10\" fill=\"#333\">"
            << escape(s.point_labels[i]) << "</text>\n";
    }
  }
  // Legend, right of the plot area.
  if (legend) {
    double ly = y0 + 8;
    for (size_t si = 0; si < c.series.size(); ++si) {
      const Series& s = c.series[si];
      if (s.label.empty()) continue;
      const std::string color = s.color.empty() ? palette(si) : s.color;
      const double lx = x1 + 14;
      if (s.style != Style::kMarkers)
        out << "<line x1=\"" << lx << "\" y1=\"" << ly << "\" x2=\"" << lx + 22 << "\" y2=\"" << ly
            << "\" stroke=\"" << color << "\" stroke-width=\"1.8\""
            << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << "/>\n";
      if (s.style != Style::kLine)
        out << "<circle cx=\"" << lx + 11 << "\" cy=\"" << ly << "\" r=\"3.5\" fill=\"" << color
            << "\"/>\n";
      out << "<text x=\"" << lx + 28 << "\" y=\"" << ly + 4 << "\">" << escape(s.label)
          << "</text>\n";
      ly += 18;
    }
  }
}

std::string svg_open(int width, double height) {
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << height
      << "\" viewBox=\"0 0 " << width << " " << height
      << "\" font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
      << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  return out.str();
}

}  // namespace

std::string render_svg(const std::vector<Chart>& panels) {
  require(!panels.empty(), "plot: no chart to draw");
  int width = 0;
  double height = 0;
  for (const Chart& c : panels) {
    width = std::max(width, c.width);
    height += c.height;
  }
  std::ostringstream out;
  out << svg_open(width, height);
  double legend_w = 0;
  for (const Chart& c : panels) legend_w = std::max(legend_w, legend_width(c));
  double top = 0;
  for (const Chart& c : panels) {
    draw_chart(out, c, top, legend_w);
    top += c.height;
  }
  out << "</svg>\n";
  return out.str();
}

std::string render_svg(const Chart& chart) {
  return render_svg(std::vector<Chart>{chart});
}

std::string bar_chart_svg(const std::string& title, const Axis& y, const std::vector<Bar>& bars) {
  require(!bars.empty(), "plot: bar chart '" + title + "' has no bars");
  std::vector<double> values;
  for (const Bar& b : bars) {
    require(std::isfinite(b.value), "plot: bar '" + b.label + "' is not finite");
    values.push_back(b.value);
  }
  Axis axis = y;
  const bool log =
      axis.scale == Scale::kLog ||
      (axis.scale == Scale::kAuto && *std::min_element(values.begin(), values.end()) > 0 &&
       *std::max_element(values.begin(), values.end()) /
               *std::min_element(values.begin(), values.end()) >
           100.0);
  if (log) {
    for (const Bar& b : bars)
      require(b.value > 0, "plot: bar '" + b.label + "' must be > 0 on a log axis");
    axis.scale = Scale::kLog;
    // Start below the smallest bar so that it stays visible.
    if (!axis.min) axis.min = *std::min_element(values.begin(), values.end()) / 3.0;
  } else {
    axis.scale = Scale::kLinear;
    axis.include_zero = true;
  }
  const ResolvedAxis ay = resolve(axis, values);
  const double label_w = [&] {
    double w = 0;
    for (const Bar& b : bars) w = std::max(w, text_width(b.label, 11));
    return w;
  }();
  const int width =
      std::max(480, static_cast<int>(110 + bars.size() * std::max(64.0, label_w + 12)));
  const int height = 440;
  double tick_w = 0;
  for (const auto& l : ay.labels) tick_w = std::max(tick_w, text_width(l.substr(0, l.find('<'))));
  const double x0 = 30 + tick_w + 16, x1 = width - 20, y0 = 44, y1 = height - 70;
  auto py = [&](double v) { return ay.map(v, y1, y0); };
  std::ostringstream out;
  out << svg_open(width, height);
  out << "<text x=\"" << (x0 + x1) / 2
      << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">"
      << escape(title) << "</text>\n";
  for (size_t i = 0; i < ay.ticks.size(); ++i) {
    const double yy = py(ay.ticks[i]);
    out << "<line x1=\"" << x0 << "\" y1=\"" << yy << "\" x2=\"" << x1 << "\" y2=\"" << yy
        << "\" stroke=\"#e5e5e5\"/>\n<text x=\"" << x0 - 6 << "\" y=\"" << yy + 4
        << "\" text-anchor=\"end\">" << ay.labels[i] << "</text>\n";
  }
  out << "<text transform=\"translate(16," << (y0 + y1) / 2
      << ") rotate(-90)\" text-anchor=\"middle\">" << escape(ay.title) << "</text>\n";
  double max_abs = 0;
  for (double t : ay.ticks) max_abs = std::max(max_abs, std::fabs(t));
  const auto [factor, unit] = si_scale(max_abs, y.unit);
  const double slot = (x1 - x0) / static_cast<double>(bars.size());
  const double base = log ? ay.lo : 0.0;
  for (size_t i = 0; i < bars.size(); ++i) {
    const Bar& b = bars[i];
    const double cx = x0 + slot * (i + 0.5), w = slot * 0.6;
    const double top = py(b.value), bottom = py(base);
    const std::string color = b.color.empty() ? palette(i) : b.color;
    out << "<rect x=\"" << cx - w / 2 << "\" y=\"" << std::min(top, bottom) << "\" width=\"" << w
        << "\" height=\"" << std::fabs(bottom - top) << "\" fill=\"" << color << "\"/>\n";
    out << "<text x=\"" << cx << "\" y=\"" << std::min(top, bottom) - 5
        << "\" text-anchor=\"middle\" font-size=\"11\">" << fmt("%.3g", b.value / factor)
        << (unit.empty() ? "" : " ") << escape(unit) << "</text>\n";
    out << "<text x=\"" << cx << "\" y=\"" << y1 + 18
        << "\" text-anchor=\"middle\" font-size=\"11\">" << escape(b.label) << "</text>\n";
  }
  out << "<line x1=\"" << x0 << "\" y1=\"" << y1 << "\" x2=\"" << x1 << "\" y2=\"" << y1
      << "\" stroke=\"#333\"/>\n<line x1=\"" << x0 << "\" y1=\"" << y0 << "\" x2=\"" << x0
      << "\" y2=\"" << y1 << "\" stroke=\"#333\"/>\n</svg>\n";
  return out.str();
}

}  // namespace gaincell::plot
