#include "gaincell/tools/fit/lstsq.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "gaincell/core/error.h"

namespace gaincell::fit {

namespace {

// Column-major working copy so that the Jacobi rotations touch contiguous columns.
struct Columns {
  size_t rows = 0, cols = 0;
  std::vector<double> data;
  double* col(size_t c) { return data.data() + c * rows; }
};

// Rotates columns p and q of U (and of V) until they are orthogonal (Hestenes' one-sided Jacobi).
// Returns true when a rotation was applied.
bool orthogonalize_pair(Columns& u, Columns& v, size_t p, size_t q) {
  double alpha = 0, beta = 0, gamma = 0;
  const double* up = u.col(p);
  const double* uq = u.col(q);
  for (size_t r = 0; r < u.rows; ++r) {
    alpha += up[r] * up[r];
    beta += uq[r] * uq[r];
    gamma += up[r] * uq[r];
  }
  if (gamma == 0.0 || std::fabs(gamma) <= 1e-15 * std::sqrt(alpha * beta)) return false;
  const double zeta = (beta - alpha) / (2.0 * gamma);
  const double t = std::copysign(1.0, zeta) / (std::fabs(zeta) + std::sqrt(1.0 + zeta * zeta));
  const double c = 1.0 / std::sqrt(1.0 + t * t);
  const double s = c * t;
  auto rotate = [c, s](double* x, double* y, size_t len) {
    for (size_t r = 0; r < len; ++r) {
      const double xr = x[r], yr = y[r];
      x[r] = c * xr - s * yr;
      y[r] = s * xr + c * yr;
    }
  };
  rotate(u.col(p), u.col(q), u.rows);
  rotate(v.col(p), v.col(q), v.rows);
  return true;
}

}  // namespace

LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y) {
  require(x.size() == y.size() && x.size() >= 2,
          "line fit: needs at least 2 points and as many y as x");
  const double n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    mx += x[k] / n;
    my += y[k] / n;
  }
  double sxx = 0, sxy = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    sxx += (x[k] - mx) * (x[k] - mx);
    sxy += (x[k] - mx) * (y[k] - my);
  }
  require(sxx > 0, "line fit: all abscissae are equal");
  return {sxy / sxx, my - sxy / sxx * mx};
}

LstsqResult min_norm_lstsq(const std::vector<double>& a, size_t m, size_t n,
                           const std::vector<double>& b, double rcond) {
  require(m >= 1 && n >= 1, "least squares: empty system");
  require(a.size() == m * n, "least squares: matrix has " + std::to_string(a.size()) +
                                 " entries, expected " + std::to_string(m * n));
  require(b.size() == m, "least squares: right-hand side has " + std::to_string(b.size()) +
                             " entries, expected " + std::to_string(m));
  for (double x : a) require(std::isfinite(x), "least squares: matrix contains NaN or Inf");
  for (double x : b) require(std::isfinite(x), "least squares: data contains NaN or Inf");

  Columns u{m, n, std::vector<double>(m * n)};
  for (size_t r = 0; r < m; ++r)
    for (size_t c = 0; c < n; ++c) u.data[c * m + r] = a[r * n + c];
  Columns v{n, n, std::vector<double>(n * n, 0.0)};
  for (size_t c = 0; c < n; ++c) v.data[c * n + c] = 1.0;

  for (int sweep = 0; sweep < 100; ++sweep) {
    bool rotated = false;
    for (size_t p = 0; p + 1 < n; ++p)
      for (size_t q = p + 1; q < n; ++q) rotated |= orthogonalize_pair(u, v, p, q);
    if (!rotated) break;
  }

  std::vector<double> sigma(n);
  for (size_t c = 0; c < n; ++c) {
    const double* col = u.col(c);
    sigma[c] = std::sqrt(std::inner_product(col, col + m, col, 0.0));
  }
  const double sigma_max = *std::max_element(sigma.begin(), sigma.end());
  LstsqResult res;
  res.x.assign(n, 0.0);
  for (size_t c = 0; c < n; ++c) {
    if (sigma_max == 0.0 || sigma[c] <= rcond * sigma_max) continue;
    ++res.rank;
    // x += v_c (u_c . b) / sigma_c^2, where u.col(c) = sigma_c * u_c.
    const double* col = u.col(c);
    const double coef = std::inner_product(col, col + m, b.begin(), 0.0) / (sigma[c] * sigma[c]);
    for (size_t k = 0; k < n; ++k) res.x[k] += coef * v.col(c)[k];
  }
  res.singular_values = sigma;
  std::sort(res.singular_values.rbegin(), res.singular_values.rend());
  return res;
}

}  // namespace gaincell::fit
