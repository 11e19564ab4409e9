#include "gaincell/tools/adapt/statistics_matching.h"

#include <algorithm>
#include <cmath>

#include "gaincell/core/error.h"

namespace gaincell {

void StatisticsMatchingOptions::validate() const {
  require(alpha_max > 0.0 && alpha_max <= 1.0, "adaptation: alpha_max must be in (0, 1]");
  require(alpha_min > 0.0 && alpha_min <= alpha_max,
          "adaptation: alpha_min must be in (0, alpha_max]");
  require(schedule_steps >= 1, "adaptation: the alpha schedule needs at least 1 step");
  require(threshold > 0.0 && std::isfinite(threshold), "adaptation: threshold must be > 0");
  require(max_passes >= 1, "adaptation: max_passes must be >= 1");
}

double adaptation_alpha(const StatisticsMatchingOptions& opt, int pass) {
  if (pass >= opt.schedule_steps) return opt.alpha_min;
  if (opt.schedule_steps == 1) return opt.alpha_max;
  // numpy/torch linspace(alpha_max, alpha_min, schedule_steps)[pass]
  const double t = static_cast<double>(pass) / (opt.schedule_steps - 1);
  return opt.alpha_max + (opt.alpha_min - opt.alpha_max) * t;
}

MatchingCounts match_statistics(std::span<float> a, std::span<float> b, std::span<const float> std,
                                std::span<const float> mean, std::span<const float> target_std,
                                std::span<const float> target_mean, double alpha,
                                double threshold) {
  const size_t heads = a.size();
  require(b.size() == heads && std.size() == heads && mean.size() == heads &&
              target_std.size() == heads && target_mean.size() == heads,
          "statistics matching: per-head arrays differ in length");
  MatchingCounts counts;
  for (size_t h = 0; h < heads; ++h) {
    counts.statistics += 2;
    const double std_error = std::fabs(static_cast<double>(std[h]) - target_std[h]);
    const double mean_error = std::fabs(static_cast<double>(mean[h]) - target_mean[h]);
    counts.worst_std_error = std::max(counts.worst_std_error, std_error);
    counts.worst_mean_error = std::max(counts.worst_mean_error, mean_error);
    if (std_error > threshold) {
      if (std[h] != 0.0f) {
        const double rescaled = static_cast<double>(a[h]) * target_std[h] / std[h];
        a[h] = static_cast<float>(alpha * rescaled + (1.0 - alpha) * a[h]);
      }
    } else {
      ++counts.converged;
    }
    if (mean_error > threshold) {
      const double shifted = static_cast<double>(b[h]) + target_mean[h] - mean[h];
      b[h] = static_cast<float>(alpha * shifted + (1.0 - alpha) * b[h]);
    } else {
      ++counts.converged;
    }
  }
  return counts;
}

}  // namespace gaincell
