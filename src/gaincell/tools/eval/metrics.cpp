#include "gaincell/tools/eval/metrics.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "gaincell/core/error.h"

namespace gaincell::eval {

double mean(std::span<const double> xs) {
  require(!xs.empty(), "mean of no values");
  double sum = 0.0;
  for (double x : xs) sum += x;
  return sum / static_cast<double>(xs.size());
}

double sample_stddev(std::span<const double> xs) {
  require(xs.size() >= 2, "a sample standard deviation needs at least two values");
  const double mu = mean(xs);
  double sum = 0.0;
  for (double x : xs) sum += (x - mu) * (x - mu);
  return std::sqrt(sum / static_cast<double>(xs.size() - 1));
}

double mean_stderr(std::span<const double> xs) {
  return sample_stddev(xs) / std::sqrt(static_cast<double>(xs.size()));
}

double perplexity(std::span<const double> lls) {
  return std::exp(-mean(lls));
}

namespace {
double weighted_mean(std::span<const std::pair<double, double>> items) {
  require(!items.empty(), "weighted mean of no values");
  double a = 0.0, b = 0.0;
  for (const auto& [value, weight] : items) {
    a += value;
    b += weight;
  }
  return a / b;
}
}  // namespace

double weighted_perplexity(std::span<const std::pair<double, double>> items) {
  return std::exp(-weighted_mean(items));
}

double bits_per_byte(std::span<const std::pair<double, double>> items) {
  return -weighted_mean(items) / std::log(2.0);
}

// ---------------------------------------------------------------------------------------------
// CPython's Mersenne Twister (Modules/_randommodule.c: init_genrand, init_by_array, genrand_uint32,
// random_random).

PythonRandom::PythonRandom(uint64_t seed) {
  // init_genrand(19650218)
  state_[0] = 19650218u;
  for (int i = 1; i < 624; i++) {
    state_[i] = 1812433253u * (state_[i - 1] ^ (state_[i - 1] >> 30)) + static_cast<uint32_t>(i);
  }
  // init_by_array(key): the absolute value's 32-bit words, least significant first; 0 -> [0].
  uint32_t key[2] = {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32)};
  const int key_length = key[1] != 0 ? 2 : 1;
  int i = 1, j = 0;
  for (int k = std::max(624, key_length); k > 0; k--) {
    state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1664525u)) + key[j] +
                static_cast<uint32_t>(j);
    i++;
    j++;
    if (i >= 624) {
      state_[0] = state_[623];
      i = 1;
    }
    if (j >= key_length) j = 0;
  }
  for (int k = 623; k > 0; k--) {
    state_[i] = (state_[i] ^ ((state_[i - 1] ^ (state_[i - 1] >> 30)) * 1566083941u)) -
                static_cast<uint32_t>(i);
    i++;
    if (i >= 624) {
      state_[0] = state_[623];
      i = 1;
    }
  }
  state_[0] = 0x80000000u;
  index_ = 624;
}

void PythonRandom::twist() {
  constexpr uint32_t kUpper = 0x80000000u, kLower = 0x7fffffffu, kMatrix = 0x9908b0dfu;
  for (int k = 0; k < 624; k++) {
    const uint32_t y = (state_[k] & kUpper) | (state_[(k + 1) % 624] & kLower);
    state_[k] = state_[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? kMatrix : 0u);
  }
  index_ = 0;
}

uint32_t PythonRandom::next_u32() {
  if (index_ >= 624) twist();
  uint32_t y = state_[index_++];
  y ^= y >> 11;
  y ^= (y << 7) & 0x9d2c5680u;
  y ^= (y << 15) & 0xefc60000u;
  y ^= y >> 18;
  return y;
}

double PythonRandom::random() {
  const uint32_t a = next_u32() >> 5, b = next_u32() >> 6;
  return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

int64_t PythonRandom::choice_index(int64_t n) {
  return static_cast<int64_t>(std::floor(random() * static_cast<double>(n)));
}

double bootstrap_stderr_perplexity(std::span<const double> lls, int iters) {
  require(iters >= 1, "bootstrap iterations must be >= 1");
  require(lls.size() >= 2, "bootstrap needs at least two values");
  const int chunk = std::min(1000, iters);
  const int chunks = iters / chunk;
  const int64_t n = static_cast<int64_t>(lls.size());
  std::vector<double> stats(static_cast<size_t>(chunks) * chunk);
  // Chunks are independent (seeded by their index), so they run in parallel; the statistics keep
  // their order, so the result does not depend on the thread count.
#pragma omp parallel for schedule(dynamic)
  for (int c = 0; c < chunks; c++) {
    PythonRandom rng(static_cast<uint64_t>(c));
    for (int r = 0; r < chunk; r++) {
      double sum = 0.0;
      for (int64_t k = 0; k < n; k++) sum += lls[rng.choice_index(n)];
      stats[static_cast<size_t>(c) * chunk + r] = std::exp(-(sum / static_cast<double>(n)));
    }
  }
  return sample_stddev(stats);
}

}  // namespace gaincell::eval
