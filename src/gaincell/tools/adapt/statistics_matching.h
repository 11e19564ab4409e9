// The paper's adaptation rule (spec §5.2, HEAD utils/llms_training_utils.py calibration_algorithm):
// per scaler and head, move the affine (a, b) so that the standard deviation and mean of the
// scaler's output match the targets recorded on the linear intermediate model.
//
//   if |std - target_std|  > threshold:  a <- alpha * (a * target_std / std) + (1 - alpha) * a
//   if |mean - target_mean| > threshold: b <- alpha * (b + target_mean - mean) + (1 - alpha) * b
//
// alpha follows linspace(alpha_max, alpha_min, schedule_steps), then stays at alpha_min.
#pragma once

#include <cstdint>
#include <span>

namespace gaincell {

struct StatisticsMatchingOptions {
  double alpha_max = 1.0;
  double alpha_min = 0.1;
  int schedule_steps = 50;
  double threshold = 1e-4;
  int max_passes = 101;   // forward passes: stop after pass index 100 (spec: n > 100)
  void validate() const;  // throws gaincell::Error naming the option
};

// alpha for pass n (0-based).
double adaptation_alpha(const StatisticsMatchingOptions& opt, int pass);

struct MatchingCounts {
  int64_t statistics = 0;  // std and mean of every head: 2 per head
  int64_t converged = 0;   // within threshold before this update
  double worst_std_error = 0.0;
  double worst_mean_error = 0.0;
};

// Updates a and b of one scaler in place (one entry per head) and counts converged statistics.
// A head whose std is 0 keeps its a (the spec's guard), but still counts as not converged.
MatchingCounts match_statistics(std::span<float> a, std::span<float> b, std::span<const float> std,
                                std::span<const float> mean, std::span<const float> target_std,
                                std::span<const float> target_mean, double alpha, double threshold);

}  // namespace gaincell
