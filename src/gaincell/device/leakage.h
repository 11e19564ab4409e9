// Leakage of the storage capacitor (spec §1.3, §12 item 2): the stored voltage relaxes towards the
// zero point VDD/2, y(age) = y(0) * exp(-lambda * age), age in tokens (the newest token has age 0).
// In the polynomial model this is exactly the code's decay^i on the i-th power (spec §2.3).
#pragma once

#include <cmath>
#include <vector>

#include "gaincell/hw/hw_config.h"

namespace gaincell {

class Leakage {
 public:
  explicit Leakage(const LeakageConfig& c) : lambda_(c.effective_lambda()) {}
  explicit Leakage(double lambda_per_token) : lambda_(lambda_per_token) {}

  double lambda() const { return lambda_; }
  // Decay factor of a cell written `age` tokens ago.
  double decay(double age) const { return std::exp(-lambda_ * age); }
  // Decay of a cell whose own leakage rate is lambda * rate_scale (cell-to-cell variation).
  double decay(double age, double rate_scale) const {
    return std::exp(-lambda_ * rate_scale * age);
  }
  // decay(0..n-1) as floats, for per-age lookup in hot loops (computed in double, rounded once).
  std::vector<float> decay_table(int n) const {
    std::vector<float> t(n);
    for (int age = 0; age < n; ++age) t[age] = static_cast<float>(decay(age));
    return t;
  }

 private:
  double lambda_;
};

}  // namespace gaincell
