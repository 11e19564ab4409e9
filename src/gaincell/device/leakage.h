// Leakage of the storage capacitor (spec §1.3, §12 item 2): the stored voltage relaxes towards the
// zero point VDD/2, y(age) = y(0) * exp(-lambda * age), age in tokens (the newest token has age 0).
// In the polynomial model this is exactly the code's decay^i on the i-th power (spec §2.3).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "gaincell/hw/hw_config.h"

namespace gaincell {

class Leakage {
 public:
  explicit Leakage(const LeakageConfig& c)
      : lambda_(c.effective_lambda()), refresh_(c.refresh_interval_tokens) {}
  explicit Leakage(double lambda_per_token) : lambda_(lambda_per_token) {}

  double lambda() const { return lambda_; }
  // Decay factor of a cell written `age` tokens ago (a refresh every refresh_interval_tokens
  // rewrites the written value, so only the age since the last refresh counts).
  double decay(int64_t age) const { return std::exp(-lambda_ * static_cast<double>(since(age))); }
  // Decay of a cell whose own leakage rate is lambda * rate_scale (cell-to-cell variation).
  double decay(int64_t age, double rate_scale) const {
    return std::exp(-lambda_ * rate_scale * static_cast<double>(since(age)));
  }
  // decay(0..n-1) as floats, for per-age lookup in hot loops (computed in double, rounded once).
  std::vector<float> decay_table(int n) const {
    std::vector<float> t(n);
    for (int age = 0; age < n; ++age) t[age] = static_cast<float>(decay(age));
    return t;
  }

 private:
  int64_t since(int64_t age) const { return refresh_ > 0 ? age % refresh_ : age; }
  double lambda_;
  int64_t refresh_ = 0;
};

}  // namespace gaincell
