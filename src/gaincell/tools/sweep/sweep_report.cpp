#include "gaincell/tools/sweep/sweep_report.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <map>
#include <set>
#include <sstream>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/tools/plot/plot.h"
#include "gaincell/tools/sweep/sweep_driver.h"

namespace gaincell::sweep {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

bool ok(const json& r) {
  return json_string_or(r, "status", "", "sweep result") == "ok";
}

const MetricInfo& find_metric(const std::vector<MetricInfo>& metrics, const std::string& name) {
  for (const MetricInfo& m : metrics)
    if (m.name == name) return m;
  std::string known;
  for (const MetricInfo& m : metrics) known += (known.empty() ? "" : ", ") + m.name;
  throw Error("sweep: objective '" + name + "' is not a metric of the evaluation (" + known + ")");
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string q = "\"";
  for (char c : s) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

std::string number(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.9g", v);
  return buf;
}

std::string value_text(const json& v) {
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// Cost figures shown in the table and plots: key in the result's "cost", title, unit.
struct CostColumn {
  const char* key;
  const char* title;
  const char* unit;
};
constexpr CostColumn kCostColumns[] = {
    {"energy_per_token_j", "Attention energy per token (model)", "J"},
    {"latency_per_token_s", "Attention latency per token (model)", "s"},
    {"area_mm2", "Attention area (model)", "mm²"},
    {"energy_per_token_per_head_j", "Energy per token per head", "J"},
    {"area_per_head_mm2", "Area per head", "mm²"}};

double cost_of(const json& r, const char* key) {
  return r.contains("cost") ? r["cost"].value(key, std::nan("")) : std::nan("");
}

bool in_set(const json& set, int point) {
  for (const json& p : set)
    if (p.get<int>() == point) return true;
  return false;
}

std::string safe_name(const std::string& field) {
  std::string s;
  for (char c : field) s += std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
  return s;
}

// Objective against a cost, all points and the front.
std::string pareto_plot(const std::vector<json>& results, const MetricInfo& m, const json& front,
                        const CostColumn& cost) {
  plot::Series all{"design points", {}, {}, {}, {}, plot::Style::kMarkers, "#9aa5b1"};
  plot::Series best{"Pareto front", {}, {}, {}, {}, plot::Style::kLineMarkers, "#e15759"};
  std::vector<std::pair<double, const json*>> on_front;
  for (const json& r : results) {
    if (!ok(r)) continue;
    const json& s = r["metrics"][m.name];
    const double x = cost_of(r, cost.key), y = s["mean"].get<double>();
    all.x.push_back(x);
    all.y.push_back(y);
    const bool ci = s["ci95"].is_array();
    all.y_low.push_back(ci ? s["ci95"][0].get<double>() : y);
    all.y_high.push_back(ci ? s["ci95"][1].get<double>() : y);
    if (in_set(front, r["point"].get<int>())) on_front.emplace_back(x, &r);
  }
  std::sort(on_front.begin(), on_front.end(),
            [](const auto& a, const auto& b) { return a.first < b.first; });
  for (const auto& [x, r] : on_front) {
    best.x.push_back(x);
    best.y.push_back((*r)["metrics"][m.name]["mean"].get<double>());
    best.point_labels.push_back(
        std::string(1, '#').append(std::to_string((*r)["point"].get<int>())));
  }
  plot::Chart c;
  std::string what = cost.title;
  what[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(what[0])));
  c.title = m.title + " against " + what;
  c.x = {cost.title, cost.unit};
  c.y = {m.title, m.unit};
  c.series = {all, best};
  return plot::render_svg(c);
}

// The objective against one axis; one series per combination of the other axes' values.
std::string axis_plot(const SweepSpec& spec, const std::vector<json>& results, const MetricInfo& m,
                      const Axis& axis) {
  std::vector<json> distinct;
  for (const json& v : axis.values)
    if (std::find(distinct.begin(), distinct.end(), v) == distinct.end()) distinct.push_back(v);
  const bool numeric =
      std::all_of(distinct.begin(), distinct.end(), [](const json& v) { return v.is_number(); });
  plot::Chart c;
  c.title = m.title + " against " + axis.field;
  c.x = {axis.field, ""};
  c.y = {m.title, m.unit};
  if (!numeric)
    for (const json& v : distinct) c.x_categories.push_back(value_text(v));
  std::map<std::string, plot::Series> by_rest;
  std::vector<std::string> order;
  for (const json& r : results) {
    if (!ok(r) || !r["axes"].contains(axis.field)) continue;
    std::string rest;
    for (const Axis& other : spec.axes)
      if (other.field != axis.field && r["axes"].contains(other.field))
        rest += (rest.empty() ? "" : ", ") + other.field + "=" + value_text(r["axes"][other.field]);
    if (!by_rest.count(rest)) {
      order.push_back(rest);
      by_rest[rest].label = rest;
    }
    plot::Series& s = by_rest[rest];
    const json& v = r["axes"][axis.field];
    const double x = numeric ? v.get<double>()
                             : static_cast<double>(std::find(distinct.begin(), distinct.end(), v) -
                                                   distinct.begin());
    const json& st = r["metrics"][m.name];
    const double y = st["mean"].get<double>();
    const bool ci = st["ci95"].is_array();
    s.x.push_back(x);
    s.y.push_back(y);
    s.y_low.push_back(ci ? st["ci95"][0].get<double>() : y);
    s.y_high.push_back(ci ? st["ci95"][1].get<double>() : y);
  }
  for (const std::string& key : order) {
    plot::Series s = by_rest[key];
    if (s.x.size() < 2) continue;  // a single point shows no trend along this axis
    std::vector<size_t> idx(s.x.size());
    for (size_t i = 0; i < idx.size(); ++i) idx[i] = i;
    std::sort(idx.begin(), idx.end(), [&](size_t a, size_t b) { return s.x[a] < s.x[b]; });
    plot::Series sorted = s;
    for (size_t i = 0; i < idx.size(); ++i) {
      sorted.x[i] = s.x[idx[i]];
      sorted.y[i] = s.y[idx[i]];
      sorted.y_low[i] = s.y_low[idx[i]];
      sorted.y_high[i] = s.y_high[idx[i]];
    }
    c.series.push_back(std::move(sorted));
  }
  if (c.series.size() == 1 && c.series[0].label.empty()) c.series[0].label = m.title;
  if (c.series.empty()) return "";
  return plot::render_svg(c);
}

std::string report_markdown(const SweepSpec& spec, const std::vector<json>& results,
                            const MetricInfo& m, const json& pareto,
                            const std::vector<std::string>& plots) {
  std::ostringstream md;
  md << "# Sweep: " << spec.name << "\n\n";
  int failed = 0;
  for (const json& r : results) failed += ok(r) ? 0 : 1;
  md << results.size() << " points, " << spec.seeds << " seed(s) each"
     << (failed ? ", " + std::to_string(failed) + " failed" : "") << ". Objective: " << m.title
     << " (" << m.name << ", " << (m.higher_is_better ? "higher" : "lower")
     << " is better); mean over seeds with the 95% confidence interval of the mean "
        "(Student's t). Energy, latency and area are the cost model's figures for the "
        "attention of the whole model per token (`gaincell cost`, preset "
     << spec.cost.preset << ").\n\n";
  md << "| point | ";
  for (const Axis& a : spec.axes) md << a.field << " | ";
  md << m.name << " | 95% CI | energy/token (J) | latency/token (s) | area (mm²) | Pareto |\n|";
  for (size_t i = 0; i < spec.axes.size() + 7; ++i) md << "---|";
  md << "\n";
  for (const json& r : results) {
    const int p = r["point"].get<int>();
    md << "| " << p << " | ";
    for (const Axis& a : spec.axes)
      md << (r["axes"].contains(a.field) ? value_text(r["axes"][a.field]) : "") << " | ";
    if (ok(r)) {
      const json& s = r["metrics"][m.name];
      char buf[64];
      std::snprintf(buf, sizeof buf, "%.6g", s["mean"].get<double>());
      md << buf << " | ";
      if (s["ci95"].is_array()) {
        std::snprintf(buf, sizeof buf, "[%.6g, %.6g]", s["ci95"][0].get<double>(),
                      s["ci95"][1].get<double>());
        md << buf;
      } else {
        md << "-";
      }
      std::snprintf(buf, sizeof buf, " | %.3g | %.3g | %.3g | ", cost_of(r, "energy_per_token_j"),
                    cost_of(r, "latency_per_token_s"), cost_of(r, "area_mm2"));
      md << buf;
      std::string marks;
      if (in_set(pareto["energy"], p)) marks += "energy";
      if (in_set(pareto["area"], p)) marks += std::string(marks.empty() ? "" : ", ") + "area";
      md << marks << " |\n";
    } else {
      md << "failed | | | | | |\n";
    }
  }
  if (failed) {
    md << "\n## Failed points\n\n";
    for (const json& r : results)
      if (!ok(r))
        md << "- point " << r["point"].get<int>() << " ("
           << json_string_or(r, "label", "", "sweep result")
           << "): " << json_string_or(r, "error", "", "sweep result") << "\n";
  }
  md << "\n## Plots\n\n";
  for (const std::string& p : plots) md << "![" << p << "](" << p << ")\n\n";
  md << "## Sweep file (resolved)\n\n```json\n" << spec.to_json().dump(2) << "\n```\n";
  return md.str();
}

}  // namespace

json pareto_sets(const std::vector<MetricInfo>& metrics, const std::string& objective,
                 const std::vector<json>& results) {
  const MetricInfo& m = find_metric(metrics, objective.empty() ? metrics.front().name : objective);
  std::vector<int> points;
  std::vector<double> obj, energy, area;
  for (const json& r : results) {
    if (!ok(r)) continue;
    const double e = cost_of(r, "energy_per_token_j"), a = cost_of(r, "area_mm2");
    if (!std::isfinite(e) || !std::isfinite(a)) continue;
    points.push_back(r["point"].get<int>());
    obj.push_back(r["metrics"][m.name]["mean"].get<double>());
    energy.push_back(e);
    area.push_back(a);
  }
  auto to_points = [&](const std::vector<size_t>& idx) {
    json j = json::array();
    for (size_t i : idx) j.push_back(points[i]);
    return j;
  };
  return {{"objective", m.name},
          {"higher_is_better", m.higher_is_better},
          {"energy", to_points(pareto_front(obj, energy, m.higher_is_better))},
          {"area", to_points(pareto_front(obj, area, m.higher_is_better))}};
}

std::string summary_csv(const SweepSpec& spec, const std::vector<MetricInfo>& metrics,
                        const std::vector<json>& results, const json& pareto) {
  std::ostringstream csv;
  csv << "point,status";
  for (const Axis& a : spec.axes) csv << "," << csv_field(a.field);
  for (const MetricInfo& m : metrics)
    csv << "," << m.name << "_mean," << m.name << "_std," << m.name << "_ci95_low," << m.name
        << "_ci95_high";
  for (const CostColumn& c : kCostColumns) csv << "," << c.key;
  csv << ",pareto_energy,pareto_area,seeds,error\n";
  for (const json& r : results) {
    const int p = r["point"].get<int>();
    csv << p << "," << json_string_or(r, "status", "", "sweep result");
    for (const Axis& a : spec.axes)
      csv << "," << (r["axes"].contains(a.field) ? csv_field(value_text(r["axes"][a.field])) : "");
    for (const MetricInfo& m : metrics) {
      if (ok(r)) {
        const json& s = r["metrics"][m.name];
        csv << "," << number(s["mean"].get<double>()) << "," << number(s["std"].get<double>());
        if (s["ci95"].is_array())
          csv << "," << number(s["ci95"][0].get<double>()) << ","
              << number(s["ci95"][1].get<double>());
        else
          csv << ",,";
      } else {
        csv << ",,,,";
      }
    }
    for (const CostColumn& c : kCostColumns) {
      const double v = cost_of(r, c.key);
      csv << "," << (std::isfinite(v) ? number(v) : "");
    }
    csv << "," << (in_set(pareto["energy"], p) ? 1 : 0) << ","
        << (in_set(pareto["area"], p) ? 1 : 0) << ","
        << (r.contains("seeds") ? r["seeds"].size() : 0) << ","
        << csv_field(json_string_or(r, "error", "", "sweep result")) << "\n";
  }
  return csv.str();
}

std::vector<fs::path> write_sweep_outputs(const SweepSpec& spec,
                                          const std::vector<MetricInfo>& metrics,
                                          std::vector<json> results, const fs::path& out_dir) {
  std::sort(results.begin(), results.end(), [](const json& a, const json& b) {
    return a["point"].get<int>() < b["point"].get<int>();
  });
  const json pareto = pareto_sets(metrics, spec.objective, results);
  const MetricInfo& m = find_metric(metrics, pareto["objective"].get<std::string>());
  std::vector<fs::path> files;
  auto write = [&](const std::string& name, const std::string& text) {
    write_file_atomic(out_dir / name, text);
    files.push_back(out_dir / name);
  };
  write("summary.csv", summary_csv(spec, metrics, results, pareto));
  write("pareto.json", pareto.dump(2) + "\n");
  std::vector<std::string> plots;
  const bool any_ok = std::any_of(results.begin(), results.end(), ok);
  if (any_ok) {
    write("pareto_energy.svg", pareto_plot(results, m, pareto["energy"], kCostColumns[0]));
    write("pareto_area.svg", pareto_plot(results, m, pareto["area"], kCostColumns[2]));
    plots = {"pareto_energy.svg", "pareto_area.svg"};
    for (const Axis& a : spec.axes) {
      std::set<std::string> distinct;
      for (const json& v : a.values) distinct.insert(v.dump());
      if (distinct.size() < 2) continue;
      const std::string svg = axis_plot(spec, results, m, a);
      if (svg.empty()) continue;
      const std::string name = "axis_" + safe_name(a.field) + ".svg";
      write(name, svg);
      plots.push_back(name);
    }
  }
  write("report.md", report_markdown(spec, results, m, pareto, plots));
  return files;
}

}  // namespace gaincell::sweep
