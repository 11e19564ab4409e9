// The least-squares fits of the tools: a straight line (simple regression), and minimum-norm linear
// least squares in double precision through a one-sided Jacobi SVD.
// The paper's cell basis is rank deficient (spec §2.3: at a constant Vin the columns Vin^j
// (V-0.45)^i of one i are proportional), so the plain normal equations are singular; the
// pseudo-inverse picks the minimum-norm solution, which is what numpy.linalg.lstsq returned for the
// published C_ij.
#pragma once

#include <cstddef>
#include <vector>

namespace gaincell::fit {

struct LstsqResult {
  std::vector<double> x;                // n unknowns
  std::vector<double> singular_values;  // descending
  int rank = 0;
};

// Solves min ||A x - b|| with minimum ||x||. A is m x n, row-major. Singular values below
// rcond * max singular value are treated as zero. Throws gaincell::Error on bad shapes or NaN.
struct LineFit {
  double slope = 0, intercept = 0;
};

// y ~ slope * x + intercept in the least-squares sense. Throws gaincell::Error when the x are all
// equal or the lengths differ.
LineFit fit_line(const std::vector<double>& x, const std::vector<double>& y);

LstsqResult min_norm_lstsq(const std::vector<double>& a, size_t m, size_t n,
                           const std::vector<double>& b, double rcond = 1e-10);

}  // namespace gaincell::fit
