#include "gaincell/model/sampling.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "gaincell/core/error.h"

namespace gaincell {

void SamplingOptions::validate() const {
  require(std::isfinite(temperature) && temperature >= 0,
          "sampling: temperature must be a finite number >= 0 (0 = greedy)");
  require(top_k >= 0, "sampling: top-k must be >= 0 (0 = no limit)");
}

int32_t argmax_token(const float* logits, int32_t vocab_size) {
  require(vocab_size > 0, "sampling: empty vocabulary");
  int32_t best = 0;
  for (int32_t i = 0; i < vocab_size; ++i) {
    require(!std::isnan(logits[i]), "sampling: the model produced NaN logits");
    if (logits[i] > logits[best]) best = i;
  }
  return best;
}

std::vector<double> sampling_probabilities(const float* logits, int32_t vocab_size,
                                           const SamplingOptions& options) {
  options.validate();
  std::vector<double> p(vocab_size, 0.0);
  if (options.temperature == 0.0f || options.top_k == 1) {
    p[argmax_token(logits, vocab_size)] = 1.0;
    return p;
  }
  // Candidates: all tokens, or the k largest (ties broken by the lower id, like argmax).
  std::vector<int32_t> ids(vocab_size);
  std::iota(ids.begin(), ids.end(), 0);
  for (int32_t i = 0; i < vocab_size; ++i) {
    require(!std::isnan(logits[i]), "sampling: the model produced NaN logits");
  }
  if (options.top_k > 0 && options.top_k < vocab_size) {
    auto by_logit = [&](int32_t a, int32_t b) {
      return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
    };
    std::nth_element(ids.begin(), ids.begin() + options.top_k, ids.end(), by_logit);
    ids.resize(options.top_k);
  }
  double max_logit = -INFINITY;
  for (int32_t id : ids) max_logit = std::max(max_logit, static_cast<double>(logits[id]));
  require(std::isfinite(max_logit), "sampling: all candidate logits are -inf");
  double sum = 0.0;
  for (int32_t id : ids) {
    p[id] = std::exp((logits[id] - max_logit) / options.temperature);
    sum += p[id];
  }
  for (int32_t id : ids) p[id] /= sum;
  return p;
}

TokenSampler::TokenSampler(const SamplingOptions& options)
    : options_(options), state_(options.seed) {
  options.validate();
}

double TokenSampler::uniform() {
  // splitmix64 (Steele, Lea, Flood 2014).
  uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  return static_cast<double>(z >> 11) * 0x1.0p-53;
}

int32_t TokenSampler::next(const float* logits, int32_t vocab_size) {
  if (options_.temperature == 0.0f || options_.top_k == 1) return argmax_token(logits, vocab_size);
  const std::vector<double> p = sampling_probabilities(logits, vocab_size, options_);
  const double u = uniform();
  double cumulative = 0.0;
  int32_t last_candidate = 0;
  for (int32_t i = 0; i < vocab_size; ++i) {
    if (p[i] == 0.0) continue;
    cumulative += p[i];
    last_candidate = i;
    if (u < cumulative) return i;
  }
  return last_candidate;  // u within rounding of 1
}

}  // namespace gaincell
