// lm-evaluation-harness's aggregations and standard errors (lm_eval/api/metrics.py):
//   mean, perplexity = exp(-mean), weighted_perplexity = exp(-sum(a) / sum(b)),
//   bits_per_byte = -sum(a) / sum(b) / ln 2; mean_stderr = sample stddev / sqrt(n) for the means;
//   bootstrap_stderr for perplexity: 100 chunks of 1000 resamples (iters / 1000 chunks), chunk i
//   drawing with Python's random.Random(i).choices(xs, k = len(xs)), then the sample stddev of the
//   statistics. PythonRandom reproduces CPython's Mersenne Twister seeding and random(), so the
//   resamples, and hence the stderr, are those of the harness.
// The weighted aggregations have no stderr in lm-eval ("N/A").
#pragma once

#include <cstdint>
#include <span>
#include <utility>

namespace gaincell::eval {

double mean(std::span<const double> xs);
double sample_stddev(std::span<const double> xs);  // n - 1 in the denominator
double mean_stderr(std::span<const double> xs);
double perplexity(std::span<const double> lls);  // exp(-mean)
// items are (log-likelihood, weight) pairs.
double weighted_perplexity(std::span<const std::pair<double, double>> items);
double bits_per_byte(std::span<const std::pair<double, double>> items);

// CPython's random.Random: seed(int) (init_by_array over the integer's 32-bit words) and random()
// (53-bit float from two 32-bit outputs).
class PythonRandom {
 public:
  explicit PythonRandom(uint64_t seed);
  uint32_t next_u32();
  double random();
  // random.choices(range(n), k=1)[0] = floor(random() * n).
  int64_t choice_index(int64_t n);

 private:
  uint32_t state_[624];
  int index_ = 624;
  void twist();
};

// lm-eval's bootstrap_stderr(perplexity, xs, iters) (iters / min(1000, iters) chunks).
double bootstrap_stderr_perplexity(std::span<const double> lls, int iters);

}  // namespace gaincell::eval
