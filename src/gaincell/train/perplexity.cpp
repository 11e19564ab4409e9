#include "gaincell/train/perplexity.h"

#include <algorithm>
#include <cmath>

#include "gaincell/core/error.h"

namespace gaincell {

std::vector<RollingWindow> rolling_windows(int64_t n_tokens, int context, int stride) {
  require(context >= 1, "perplexity: context must be >= 1");
  require(stride >= 1 && stride <= context, "perplexity: stride must be in [1, context]");
  std::vector<RollingWindow> windows;
  const int64_t last_target = n_tokens - 1;  // targets are indices 1 .. n-1
  if (last_target < 1) return windows;
  int64_t predicted = std::min<int64_t>(context, last_target);  // first window: targets 1..
  windows.push_back({0, predicted, 1});
  while (predicted < last_target) {
    const int64_t end = std::min<int64_t>(predicted + stride, last_target);
    windows.push_back({std::max<int64_t>(0, end - context), end, predicted + 1});
    predicted = end;
  }
  return windows;
}

PerplexityResult rolling_perplexity(GPT2Model& model, std::span<const int32_t> tokens, int context,
                                    int stride) {
  const int64_t n = static_cast<int64_t>(tokens.size());
  require(n >= 2, "perplexity: the text has " + std::to_string(n) +
                      " tokens; at least 2 are needed (one to predict)");
  require(context <= model.config().block_size, "perplexity: context " + std::to_string(context) +
                                                    " exceeds the model's n_positions " +
                                                    std::to_string(model.config().block_size));
  const int32_t vocab = model.config().vocab_size;
  for (int64_t i = 0; i < n; ++i) {
    if (tokens[i] < 0 || tokens[i] >= vocab) {
      throw Error("perplexity: token " + std::to_string(tokens[i]) + " at position " +
                  std::to_string(i) + " is outside the model's vocabulary of " +
                  std::to_string(vocab));
    }
  }
  const auto windows = rolling_windows(n, context, stride);
  PerplexityResult r;
  r.tokens = n - 1;
  r.windows = static_cast<int64_t>(windows.size());
  r.nll.assign(static_cast<size_t>(n - 1), 0.0f);
  // Consecutive windows of the same length run as one batch (most have length `context`), as
  // many as keep the [batch, len, vocab] logits within 64 MB.
  constexpr int64_t kMaxLogitFloats = int64_t{16} << 20;
  std::vector<int32_t> inputs, targets;
  for (size_t w = 0; w < windows.size();) {
    const int64_t len = windows[w].end - windows[w].begin;
    size_t count = 1;
    const size_t max_batch =
        static_cast<size_t>(std::max<int64_t>(1, kMaxLogitFloats / (len * vocab)));
    while (w + count < windows.size() && count < max_batch &&
           windows[w + count].end - windows[w + count].begin == len) {
      ++count;
    }
    inputs.assign(count * len, 0);
    targets.assign(count * len, -1);
    for (size_t b = 0; b < count; ++b) {
      const RollingWindow& win = windows[w + b];
      for (int64_t t = 0; t < len; ++t) {
        inputs[b * len + t] = tokens[win.begin + t];
        const int64_t target_index = win.begin + t + 1;
        if (target_index >= win.first_scored) targets[b * len + t] = tokens[target_index];
      }
    }
    model.forward(inputs.data(), targets.data(), static_cast<int>(count), static_cast<int>(len));
    const float* losses = model.token_losses();
    for (size_t b = 0; b < count; ++b) {
      const RollingWindow& win = windows[w + b];
      for (int64_t t = 0; t < len; ++t) {
        const int64_t target_index = win.begin + t + 1;
        if (target_index >= win.first_scored) r.nll[target_index - 1] = losses[b * len + t];
      }
    }
    w += count;
  }
  for (float x : r.nll) r.nll_sum += x;
  r.mean_nll = r.nll_sum / static_cast<double>(r.tokens);
  r.ppl = std::exp(r.mean_nll);
  return r;
}

}  // namespace gaincell
