// Scoring token requests with the engine: the log-likelihood of each continuation and whether it
// is the greedy one (lm-eval's _loglikelihood_tokens), computed two ways that give the same
// numbers:
//   - whole: requests sorted by descending length (lm-eval's Collator), batched into
//     right-padded whole-sequence forwards (a causal model never sees the padding);
//   - shared context: requests whose model inputs share everything but the continuation (the
//     choices of a multiple-choice question) run the context once (DecodeSession::prefill), then
//     each continuation from a copy of that decode state (clone + extend). A document then costs
//     context + sum of continuations tokens instead of choices x (context + continuation).
// The log-softmax is taken in double precision; is_greedy means every continuation token is the
// arg-max (the first one on ties).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "gaincell/model/gpt2.h"
#include "gaincell/tools/eval/requests.h"

namespace gaincell::eval {

struct LoglikelihoodResult {
  double logprob = 0.0;
  bool is_greedy = false;
};

struct ScoreOptions {
  int batch_size = 8;  // requests per whole-sequence forward
  // Also caps a whole-sequence batch at max(this, longest request) tokens (the [B, T, vocab]
  // logits dominate memory).
  int64_t max_batch_tokens = 8192;
  bool share_context = true;
  // Called after each finished group or batch with (requests done, requests total).
  std::function<void(int64_t, int64_t)> progress;
};

struct ScoreStats {
  int64_t forward_tokens = 0;  // tokens run through the model (padding excluded)
  int64_t shared_groups = 0;   // groups scored from one context pass
};

// Scores every request (results in request order). Throws gaincell::Error for a continuation
// longer than the model's context (n_positions) or a token outside the vocabulary.
std::vector<LoglikelihoodResult> score_requests(GPT2Model& model,
                                                std::span<const TokenRequest> requests,
                                                const ScoreOptions& options = {},
                                                ScoreStats* stats = nullptr);

// log_softmax(logits)[target] in double precision, and whether target is the first arg-max.
LoglikelihoodResult score_token(const float* logits, int vocab_size, int32_t target);

}  // namespace gaincell::eval
