#include "gaincell/tools/fit/fit_report.h"

#include <cstdio>

#include "gaincell/core/file_io.h"
#include "gaincell/tools/plot/plot.h"

namespace gaincell::fit {

FitReport fit_all(const IvTable& table, double vin, double offset) {
  FitReport r;
  r.paper = fit_paper_polynomial(table, vin, offset);
  r.linear = fit_linear_slope(r.paper.alphas, offset);
  for (int order : {3, 4, 5}) r.surfaces.push_back(fit_surface(table, order, order, offset));
  return r;
}

nlohmann::json fit_report_json(const FitReport& r) {
  nlohmann::json surfaces = nlohmann::json::array();
  for (const auto& s : r.surfaces)
    surfaces.push_back({{"max_power_vstore", s.max_i},
                        {"max_power_vin", s.max_j},
                        {"basis", "(Vstore-offset)^i (Vin-offset)^j, 0<=i<=max_i, 1<=j<=max_j"},
                        {"coefficients_ua", s.coefficients},
                        {"rms_ua", s.rms_ua},
                        {"max_abs_ua", s.max_abs_ua}});
  return {{"coefficients", r.paper.coefficients},
          {"basis", "Vin^j (Vstore-offset)^i, i+j<=3, i outer, j inner (spec 2.3)"},
          {"vin", r.paper.vin},
          {"offset", r.paper.offset},
          {"alphas", r.paper.alphas},
          {"rms_ua", r.paper.rms_ua},
          {"max_abs_ua", r.paper.max_abs_ua},
          {"linear_slope", r.linear.slope},
          {"linear_intercept", r.linear.intercept},
          {"linear_rms", r.linear.rms},
          {"surface_fits", surfaces}};
}

std::string fit_report_text(const FitReport& r) {
  char buf[160];
  std::string out;
  std::snprintf(buf, sizeof buf, "paper fit at Vin = %.4g V, offset %.4g V (spec 2.3)\n",
                r.paper.vin, r.paper.offset);
  out += buf;
  for (size_t k = 0; k < 10; ++k) {
    std::snprintf(buf, sizeof buf, "  C_%d%d = %.8f\n", paper_basis()[k].i, paper_basis()[k].j,
                  r.paper.coefficients[k]);
    out += buf;
  }
  std::snprintf(buf, sizeof buf, "  alphas = %.6f %.6f %.6f %.6f\n", r.paper.alphas[0],
                r.paper.alphas[1], r.paper.alphas[2], r.paper.alphas[3]);
  out += buf;
  std::snprintf(buf, sizeof buf, "  residual RMS %.4f uA, max %.4f uA\n", r.paper.rms_ua,
                r.paper.max_abs_ua);
  out += buf;
  std::snprintf(buf, sizeof buf, "linear slope (spec 2.4): %.4f (intercept %.4f)\n", r.linear.slope,
                r.linear.intercept);
  out += buf;
  for (const auto& s : r.surfaces) {
    std::snprintf(buf, sizeof buf, "surface fit order (%d,%d): RMS %.4f uA, max %.4f uA\n", s.max_i,
                  s.max_j, s.rms_ua, s.max_abs_ua);
    out += buf;
  }
  return out;
}

void write_fit_plots(const FitReport& r, const IvTable& table, const std::filesystem::path& dir) {
  std::vector<double> xs, poly, lin;
  for (int k = 0; k <= 200; ++k) {
    const double v = table.vstore.front() + (table.vstore.back() - table.vstore.front()) * k / 200;
    xs.push_back(v);
    poly.push_back(eval_paper_polynomial(r.paper.coefficients, r.paper.vin, v, r.paper.offset));
    lin.push_back(r.linear.slope * (v - r.paper.offset));
  }
  const plot::Axis x_axis{"Stored voltage Vstore", "V", plot::Scale::kLinear};
  const plot::Axis y_axis{"Output current Iout", "µA", plot::Scale::kLinear};
  char title[128];
  std::snprintf(title, sizeof title, "Iout at Vin = %.3g V: data, cubic fit (RMS %.2g µA), linear",
                r.paper.vin, r.paper.rms_ua);
  plot::Chart c1{title, x_axis, y_axis, {}, {}, 720, 460};
  c1.series = {{"data", r.paper.vstore, r.paper.data_ua, {}, {}, plot::Style::kMarkers, "#000000"},
               {"cubic fit (C_ij)", xs, poly, {}, {}, plot::Style::kLine, "#e15759"},
               {"linear slope", xs, lin, {}, {}, plot::Style::kLine, "#4e79a7"}};
  write_file_atomic(dir / "fit_vin.svg", plot::render_svg(c1));

  if (r.surfaces.empty()) return;
  const SurfaceFit& sf = r.surfaces.back();
  std::snprintf(title, sizeof title, "Surface fit of order (%d,%d), RMS %.2g µA", sf.max_i,
                sf.max_j, sf.rms_ua);
  plot::Chart c2{title, x_axis, y_axis, {}, {}, 720, 460};
  for (int q = 0; q < 5; ++q) {
    const size_t col = (table.vin.size() - 1) * (q + 1) / 5;
    const std::string color = plot::palette(static_cast<size_t>(q));
    char label[64];
    std::snprintf(label, sizeof label, "Vin = %.3f V: data, fit", table.vin[col]);
    plot::Series data{label, table.vstore, {}, {}, {}, plot::Style::kMarkers, color};
    plot::Series model{"", xs, {}, {}, {}, plot::Style::kLine, color};
    for (size_t r2 = 0; r2 < table.vstore.size(); ++r2) data.y.push_back(table.at(r2, col) * 1e6);
    for (double v : xs) model.y.push_back(sf.eval_ua(v, table.vin[col]));
    c2.series.push_back(data);
    c2.series.push_back(model);
  }
  write_file_atomic(dir / "fit_surface.svg", plot::render_svg(c2));
}

}  // namespace gaincell::fit
