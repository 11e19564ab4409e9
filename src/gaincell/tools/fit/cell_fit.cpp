#include "gaincell/tools/fit/cell_fit.h"

#include <cmath>

#include "gaincell/core/error.h"
#include "gaincell/tools/fit/lstsq.h"

namespace gaincell::fit {

namespace {

constexpr double kMicro = 1e6;  // A -> uA: the C_ij are fitted in uA (spec §2.3)

void summarize_residuals(const std::vector<double>& residuals, double& rms, double& max_abs) {
  double sum_sq = 0;
  max_abs = 0;
  for (double r : residuals) {
    sum_sq += r * r;
    max_abs = std::max(max_abs, std::fabs(r));
  }
  rms = residuals.empty() ? 0.0 : std::sqrt(sum_sq / residuals.size());
}

}  // namespace

const std::array<BasisTerm, 10>& paper_basis() {
  static const std::array<BasisTerm, 10> terms = [] {
    std::array<BasisTerm, 10> t{};
    int idx = 0;
    for (int i = 0; i <= 3; ++i)
      for (int j = 0; j <= 3 - i; ++j) t[idx++] = {i, j};
    return t;
  }();
  return terms;
}

double eval_paper_polynomial(const std::array<double, 10>& c, double vin, double vstore,
                             double offset) {
  double sum = 0;
  for (size_t k = 0; k < c.size(); ++k) {
    const auto [i, j] = paper_basis()[k];
    sum += c[k] * std::pow(vstore - offset, i) * std::pow(vin, j);
  }
  return sum;
}

std::array<double, 4> paper_alphas(const std::array<double, 10>& c, double vin) {
  std::array<double, 4> a{};
  for (size_t k = 0; k < c.size(); ++k)
    a[paper_basis()[k].i] += c[k] * std::pow(vin, paper_basis()[k].j);
  return a;
}

PaperFit fit_paper_polynomial(const IvTable& table, double vin, double offset) {
  require(std::isfinite(vin) && vin > 0, "fit: Vin must be a positive voltage");
  require(std::isfinite(offset), "fit: offset must be finite");
  const size_t col = table.column_of(vin);
  const size_t m = table.vstore.size();
  require(m >= 4,
          "fit: the cubic needs at least 4 Vstore rows, the table has " + std::to_string(m));
  PaperFit fit;
  fit.vin = vin;
  fit.offset = offset;
  fit.vstore = table.vstore;
  std::vector<double> a(m * 10);
  for (size_t r = 0; r < m; ++r) {
    fit.data_ua.push_back(table.at(r, col) * kMicro);
    for (size_t k = 0; k < 10; ++k) {
      const auto [i, j] = paper_basis()[k];
      a[r * 10 + k] = std::pow(vin, j) * std::pow(table.vstore[r] - offset, i);
    }
  }
  const LstsqResult sol = min_norm_lstsq(a, m, 10, fit.data_ua);
  for (size_t k = 0; k < 10; ++k) fit.coefficients[k] = sol.x[k];
  fit.alphas = paper_alphas(fit.coefficients, vin);
  for (size_t r = 0; r < m; ++r) {
    fit.residuals_ua.push_back(
        eval_paper_polynomial(fit.coefficients, vin, table.vstore[r], offset) - fit.data_ua[r]);
  }
  summarize_residuals(fit.residuals_ua, fit.rms_ua, fit.max_abs_ua);
  return fit;
}

LinearSlopeFit fit_linear_slope(const std::array<double, 4>& alphas, double offset, int grid,
                                double vmax) {
  require(grid >= 2, "linear slope fit: grid must have at least 2 points per axis");
  // Simple regression z = b0 + b1 * w with w = x (y - offset), z = x f(y - offset).
  std::vector<double> w, z;
  for (int a = 0; a < grid; ++a) {
    const double y = vmax * a / (grid - 1) - offset;
    const double f = alphas[0] + y * (alphas[1] + y * (alphas[2] + y * alphas[3]));
    for (int b = 0; b < grid; ++b) {
      const double x = static_cast<double>(b) / (grid - 1);
      w.push_back(x * y);
      z.push_back(x * f);
    }
  }
  const LineFit line = fit_line(w, z);
  LinearSlopeFit fit;
  fit.slope = line.slope;
  fit.intercept = line.intercept;
  double sum_sq = 0;
  for (size_t k = 0; k < w.size(); ++k) {
    const double r = fit.intercept + fit.slope * w[k] - z[k];
    sum_sq += r * r;
  }
  fit.rms = std::sqrt(sum_sq / static_cast<double>(w.size()));
  return fit;
}

double SurfaceFit::eval_ua(double vstore, double vin) const {
  const double y = vstore - offset, u = vin - offset;
  double sum = 0;
  size_t k = 0;
  for (int i = 0; i <= max_i; ++i)
    for (int j = 1; j <= max_j; ++j) sum += coefficients[k++] * std::pow(y, i) * std::pow(u, j);
  return sum;
}

SurfaceFit fit_surface(const IvTable& table, int max_i, int max_j, double offset) {
  require(max_i >= 0 && max_i <= 8 && max_j >= 1 && max_j <= 8,
          "surface fit: orders must be 0..8 in Vstore and 1..8 in Vin");
  SurfaceFit fit;
  fit.max_i = max_i;
  fit.max_j = max_j;
  fit.offset = offset;
  const size_t n = static_cast<size_t>((max_i + 1) * max_j);
  const size_t m = table.vstore.size() * table.vin.size();
  require(m >= n, "surface fit: more unknowns than table points");
  std::vector<double> a(m * n), b(m);
  size_t row = 0;
  for (size_t r = 0; r < table.vstore.size(); ++r) {
    for (size_t c = 0; c < table.vin.size(); ++c, ++row) {
      b[row] = table.at(r, c) * kMicro;
      size_t k = 0;
      for (int i = 0; i <= max_i; ++i)
        for (int j = 1; j <= max_j; ++j)
          a[row * n + k++] =
              std::pow(table.vstore[r] - offset, i) * std::pow(table.vin[c] - offset, j);
    }
  }
  fit.coefficients = min_norm_lstsq(a, m, n, b).x;
  std::vector<double> residuals(m);
  row = 0;
  for (size_t r = 0; r < table.vstore.size(); ++r)
    for (size_t c = 0; c < table.vin.size(); ++c, ++row)
      residuals[row] = fit.eval_ua(table.vstore[r], table.vin[c]) - b[row];
  summarize_residuals(residuals, fit.rms_ua, fit.max_abs_ua);
  return fit;
}

}  // namespace gaincell::fit
