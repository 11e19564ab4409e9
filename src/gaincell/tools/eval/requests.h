// From strings to token requests, as lm-evaluation-harness's HFLM does for a causal model
// (lm_eval/api/model.py TemplateLM, lm_eval/models/huggingface.py, lm_eval/utils.py):
//   - encode_pair: trailing whitespace of the context moves to the continuation; the continuation
//     tokens are tok(context + continuation) minus the first len(tok(context)) tokens;
//   - an empty context is the prefix token (BOS if the tokenizer has one, else end-of-text), unless
//     the continuation itself starts with it;
//   - rolling loglikelihood: get_rolling_token_windows(context_len = 1) + make_disjoint_window;
//   - model_input: (context + continuation)[-(max_length + 1):][:-1] (left truncation).
#pragma once

#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "gaincell/model/tokenizer.h"

namespace gaincell::eval {

struct TokenRequest {
  std::vector<int32_t> context;       // lm-eval's context_enc (never empty)
  std::vector<int32_t> continuation;  // continuation_enc (never empty)
};

// lm-eval's prefix_token_id: the tokenizer's BOS if it has one, else its end-of-text token.
int32_t prefix_token(const Tokenizer& tok);

// The token ids of a text as lm-eval's tok_encode gives them for a causal model: BOS first when
// the tokenizer adds one (Tokenizer::add_bos(); never for GPT-2) and add_special_tokens is set.
std::vector<int32_t> encode_text(const Tokenizer& tok, std::string_view text,
                                 bool add_special_tokens = true);

// One loglikelihood request (lm-eval's loglikelihood(): _encode_pair or the prefix token).
// Throws when the continuation encodes to no tokens.
TokenRequest encode_request(const Tokenizer& tok, std::string_view context,
                            std::string_view continuation);

// The disjoint rolling windows of one token list, each a (context, continuation) request.
std::vector<TokenRequest> rolling_requests(std::span<const int32_t> tokens, int32_t prefix,
                                           int max_length);

// What the model sees for a request: the last max_length + 1 tokens of context + continuation,
// without the final one; the last `scored` positions predict the continuation.
struct ModelInput {
  std::vector<int32_t> tokens;
  int scored = 0;  // = continuation.size()
};
ModelInput model_input(const TokenRequest& request, int max_length);

}  // namespace gaincell::eval
