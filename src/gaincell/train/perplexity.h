// Token-level perplexity of a token stream with rolling windows (issue 2 item 7), in the manner
// of lm-evaluation-harness's rolling loglikelihood and the Hugging Face strided evaluation:
// every token after the first is predicted exactly once; a window has at most `context` input
// tokens, and each window after the first predicts the next `stride` tokens not predicted before,
// with as much preceding context as fits. stride == context is exactly lm-eval's
// get_rolling_token_windows(context_len = 1): disjoint prediction chunks, the last window
// left-extended to full length.
//
// Callers that want the first token of a text predicted prepend <|endoftext|> (the CLI does).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "gaincell/model/gpt2.h"

namespace gaincell {

struct RollingWindow {
  int64_t begin = 0;         // inputs are tokens[begin, end)
  int64_t end = 0;           // targets are tokens[begin + 1, end + 1)
  int64_t first_scored = 0;  // targets with index >= first_scored count (index = position + 1)
};

// Windows over n tokens (n - 1 targets). Requires context >= 1 and 1 <= stride <= context.
std::vector<RollingWindow> rolling_windows(int64_t n_tokens, int context, int stride);

struct PerplexityResult {
  int64_t tokens = 0;  // predicted tokens = n - 1
  double nll_sum = 0;  // nats
  double mean_nll = 0;
  double ppl = 0;  // exp(mean_nll)
  int64_t windows = 0;
  std::vector<float> nll;  // per predicted token, text order (tokens[1], tokens[2], ...)
};

// Runs the model over the windows (batching windows of equal length) and scores the targets.
// Every token must be < the model's vocab_size; needs at least 2 tokens.
PerplexityResult rolling_perplexity(GPT2Model& model, std::span<const int32_t> tokens, int context,
                                    int stride);

}  // namespace gaincell
