// Monte-Carlo statistics of one metric over seeds: mean, sample standard deviation and the 95%
// confidence interval of the mean (Student's t, n - 1 degrees of freedom).
#pragma once

#include <nlohmann/json.hpp>
#include <vector>

namespace gaincell::sweep {

// Two-sided 97.5% quantile of Student's t with `dof` degrees of freedom (table for dof <= 30,
// then the normal 1.96 plus the first-order correction 2.4 / dof; both within 0.3% of the exact
// value). Requires dof >= 1.
double student_t_975(int dof);

struct SeedStatistics {
  std::vector<double> values;  // one per seed, in seed order
  double mean = 0.0;
  double std = 0.0;                // sample standard deviation (n - 1); 0 for one value
  double ci95_half_width = 0.0;    // t * std / sqrt(n); 0 for one value (no interval)
  nlohmann::json to_json() const;  // mean, std, ci95 [low, high] (null for n = 1), n, values
};

// Statistics of the values (at least one; all finite).
SeedStatistics seed_statistics(const std::vector<double>& values);

}  // namespace gaincell::sweep
