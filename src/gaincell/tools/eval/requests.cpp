#include "gaincell/tools/eval/requests.h"

#include <algorithm>
#include <string>

#include "gaincell/core/error.h"
#include "gaincell/tools/eval/text_rules.h"

namespace gaincell::eval {

int32_t prefix_token(const Tokenizer& tok) {
  // The one place that decides lm-eval's prefix token (HFLM.prefix_token_id): BOS when the
  // tokenizer defines one, otherwise EOS (GPT-2: both are <|endoftext|> = 50256).
  if (const auto bos = tok.bos_token()) return *bos;
  if (const auto eos = tok.eos_token()) return *eos;
  return tok.end_of_text();
}

std::vector<int32_t> encode_text(const Tokenizer& tok, std::string_view text,
                                 bool add_special_tokens) {
  // HFLM.tok_encode with the tokenizer's default add_special_tokens: a tokenizer that adds BOS
  // (Llama's) puts it in front of every encoded text; GPT-2's adds nothing.
  std::vector<int32_t> ids;
  if (add_special_tokens && tok.add_bos() && tok.bos_token()) ids.push_back(*tok.bos_token());
  const std::vector<int32_t> body = tok.encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  return ids;
}

TokenRequest encode_request(const Tokenizer& tok, std::string_view context,
                            std::string_view continuation) {
  TokenRequest r;
  if (context.empty()) {
    r.continuation = encode_text(tok, continuation, /*add_special_tokens=*/false);
    require(!r.continuation.empty(), "a request's continuation encodes to no tokens");
    const int32_t prefix = prefix_token(tok);
    if (r.continuation.front() == prefix) {
      r.context.assign(r.continuation.begin(), r.continuation.begin() + 1);
      r.continuation.erase(r.continuation.begin());
    } else {
      r.context = {prefix};
    }
  } else {
    // _encode_pair: whitespace at the end of the context belongs to the continuation.
    const std::string stripped = python_rstrip(context);
    const std::string moved(context.substr(stripped.size()));
    const std::string full_continuation = moved + std::string(continuation);
    const std::vector<int32_t> whole = encode_text(tok, stripped + full_continuation);
    r.context = encode_text(tok, stripped);
    const size_t n = std::min(r.context.size(), whole.size());
    r.continuation.assign(whole.begin() + static_cast<std::ptrdiff_t>(n), whole.end());
  }
  require(!r.context.empty(),
          "a request's context encodes to no tokens (the context is only "
          "whitespace)");
  require(!r.continuation.empty(), "a request's continuation encodes to no tokens");
  return r;
}

std::vector<TokenRequest> rolling_requests(std::span<const int32_t> tokens, int32_t prefix,
                                           int max_length) {
  require(max_length >= 1, "rolling windows need a context of at least one token");
  std::vector<TokenRequest> windows;
  const int64_t n = static_cast<int64_t>(tokens.size());
  if (n == 0) return windows;
  // get_rolling_token_windows(context_len = 1): pred_len = max_seq_len; the first window is
  // [prefix] + tokens[:first - 1] predicting tokens[:first]; each later window's input is
  // tokens[end - max_len - 1 : end - 1] predicting the next (up to max_len) tokens.
  // make_disjoint_window: context = input[:len(input) - (len(pred) - 1)].
  auto add = [&](std::vector<int32_t> input, int64_t pred_begin, int64_t pred_end) {
    TokenRequest r;
    const int64_t pred_len = pred_end - pred_begin;
    input.resize(static_cast<size_t>(static_cast<int64_t>(input.size()) - (pred_len - 1)));
    r.context = std::move(input);
    r.continuation.assign(tokens.begin() + pred_begin, tokens.begin() + pred_end);
    windows.push_back(std::move(r));
  };
  const int64_t first = std::min<int64_t>(max_length, n);
  std::vector<int32_t> input = {prefix};
  input.insert(input.end(), tokens.begin(), tokens.begin() + (first - 1));
  add(std::move(input), 0, first);
  int64_t predicted = first;
  while (predicted < n) {
    const int64_t pred_len = std::min<int64_t>(n - predicted, max_length);
    const int64_t end = predicted + pred_len;
    add(std::vector<int32_t>(tokens.begin() + (end - max_length - 1), tokens.begin() + (end - 1)),
        end - pred_len, end);
    predicted += pred_len;
  }
  return windows;
}

ModelInput model_input(const TokenRequest& request, int max_length) {
  const int64_t n_cont = static_cast<int64_t>(request.continuation.size());
  require(n_cont > 0 && !request.context.empty(), "a request needs a context and a continuation");
  require(n_cont <= max_length, "a continuation of " + std::to_string(n_cont) +
                                    " tokens does not fit the model's context of " +
                                    std::to_string(max_length) + " tokens");
  std::vector<int32_t> whole = request.context;
  whole.insert(whole.end(), request.continuation.begin(), request.continuation.end());
  const int64_t keep = std::min<int64_t>(static_cast<int64_t>(whole.size()), max_length + 1);
  ModelInput in;
  in.tokens.assign(whole.end() - keep, whole.end() - 1);
  in.scored = static_cast<int>(n_cont);
  return in;
}

}  // namespace gaincell::eval
