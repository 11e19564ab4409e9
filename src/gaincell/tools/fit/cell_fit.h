// Fits of the gain-cell characterisation table (spec §2.3, §2.4, §10):
//  * the paper's fit: minimum-norm least squares of Iout(Vstore) at Vin = 0.9 V (in uA) on the
//  basis
//    Vin^j (Vstore - 0.45)^i, i + j <= 3, ordered i outer, j inner (the ten C_ij of spec §2.3);
//  * the linear slope (19.3 of spec §2.4): least squares of z = x f(y - 0.45) on a 100 x 100 grid
//    x in [0, 1], y in [0, 0.9] with basis {1, x (y - 0.45)}, f the fitted cell polynomial;
//  * 2-D surface fits of the whole table on y^i u^j, y = Vstore - 0.45, u = Vin - 0.45, j >= 1 (so
//  the
//    current vanishes at the idle word-line level u = 0, spec §10).
#pragma once

#include <array>
#include <vector>

#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/fit/iv_table.h"

namespace gaincell::fit {

struct BasisTerm {
  int i;  // power of (Vstore - offset)
  int j;  // power of Vin
};

// The ten (i, j) of spec §2.3 in the spec's order: i = 0..3 outer, j = 0..3-i inner.
const std::array<BasisTerm, 10>& paper_basis();

// f(Vstore) in uA for the ten C_ij at read amplitude vin (spec §2.3 eq. 4, one cell).
double eval_paper_polynomial(const std::array<double, 10>& c, double vin, double vstore,
                             double offset);
// alpha_i = sum_j C_ij vin^j.
std::array<double, 4> paper_alphas(const std::array<double, 10>& c, double vin);

struct PaperFit {
  std::array<double, 10> coefficients{};
  std::array<double, 4> alphas{};
  double vin = kPaperVdd;
  double offset = kPaperZeroPoint;
  double rms_ua = 0;
  double max_abs_ua = 0;
  std::vector<double> vstore;        // fitted points
  std::vector<double> data_ua;       // Iout at vin, uA
  std::vector<double> residuals_ua;  // model - data
};

// Throws gaincell::Error when the table has no column at `vin` or fewer than 4 rows.
PaperFit fit_paper_polynomial(const IvTable& table, double vin = kPaperVdd,
                              double offset = kPaperZeroPoint);

struct LinearSlopeFit {
  double slope = 0;  // the paper's 19.3 (spec §2.4)
  double intercept = 0;
  double rms = 0;  // of the grid fit, in uA * Tmax units
};

// Spec §2.4 procedure on a grid x grid mesh (x in [0, 1], y in [0, vmax]).
LinearSlopeFit fit_linear_slope(const std::array<double, 4>& alphas,
                                double offset = kPaperZeroPoint, int grid = 100,
                                double vmax = kPaperVdd);

struct SurfaceFit {
  int max_i = 0;  // powers of y = Vstore - offset: 0..max_i
  int max_j = 0;  // powers of u = Vin - offset: 1..max_j
  double offset = kPaperZeroPoint;
  std::vector<double> coefficients;  // [i][j-1], uA
  double rms_ua = 0;
  double max_abs_ua = 0;
  double eval_ua(double vstore, double vin) const;
};

SurfaceFit fit_surface(const IvTable& table, int max_i, int max_j, double offset = kPaperZeroPoint);

}  // namespace gaincell::fit
