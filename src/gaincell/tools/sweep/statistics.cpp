#include "gaincell/tools/sweep/statistics.h"

#include <cmath>

#include "gaincell/core/error.h"

namespace gaincell::sweep {

double student_t_975(int dof) {
  require(dof >= 1, "student_t_975: degrees of freedom must be >= 1");
  // t_{0.975, dof} for dof = 1..30 (standard tables, e.g. NIST/SEMATECH e-Handbook 1.3.6.7.2).
  static const double table[30] = {12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306,
                                   2.262,  2.228, 2.201, 2.179, 2.160, 2.145, 2.131, 2.120,
                                   2.110,  2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
                                   2.060,  2.056, 2.052, 2.048, 2.045, 2.042};
  if (dof <= 30) return table[dof - 1];
  return 1.95996 + 2.4 / dof;
}

SeedStatistics seed_statistics(const std::vector<double>& values) {
  require(!values.empty(), "seed statistics: no values");
  SeedStatistics s;
  s.values = values;
  // Summed as offsets from the first value, so that equal values give exactly that mean and a
  // standard deviation of exactly 0 (zero variation must show zero spread).
  const double first = values.front();
  double offsets = 0.0;
  for (double v : values) {
    require(std::isfinite(v), "seed statistics: a value is not finite");
    offsets += v - first;
  }
  const size_t n = values.size();
  s.mean = first + offsets / static_cast<double>(n);
  if (n >= 2) {
    double ss = 0.0;
    for (double v : values) ss += (v - s.mean) * (v - s.mean);
    s.std = std::sqrt(ss / static_cast<double>(n - 1));
    s.ci95_half_width = student_t_975(static_cast<int>(n - 1)) * s.std / std::sqrt(double(n));
  }
  return s;
}

nlohmann::json SeedStatistics::to_json() const {
  nlohmann::json ci = nullptr;
  if (values.size() >= 2) ci = {mean - ci95_half_width, mean + ci95_half_width};
  return {{"mean", mean}, {"std", std}, {"ci95", ci}, {"n", values.size()}, {"values", values}};
}

}  // namespace gaincell::sweep
