// Choosing the next token from logits (issue 2 item 7): greedy, temperature and top-k, with a
// seeded, platform-independent random stream (splitmix64; no std:: distributions, whose output
// differs between standard libraries), so `--seed S` reproduces a sample everywhere.
#pragma once

#include <cstdint>
#include <vector>

namespace gaincell {

struct SamplingOptions {
  float temperature = 1.0f;  // 0 = greedy (argmax)
  int top_k = 0;             // 0 = all tokens; k >= 1 keeps the k largest logits
  uint64_t seed = 1337;
  void validate() const;  // throws gaincell::Error naming the bad field
};

// Index of the largest logit (the first one on ties); throws on NaN.
int32_t argmax_token(const float* logits, int32_t vocab_size);

// The distribution a TokenSampler draws from: probabilities over the vocabulary (zero outside the
// top k), softmax(logits / temperature). Exposed for tests.
std::vector<double> sampling_probabilities(const float* logits, int32_t vocab_size,
                                           const SamplingOptions& options);

class TokenSampler {
 public:
  explicit TokenSampler(const SamplingOptions& options);
  int32_t next(const float* logits, int32_t vocab_size);
  double uniform();  // in [0, 1), 53 random bits

 private:
  SamplingOptions options_;
  uint64_t state_;
};

}  // namespace gaincell
