#include "gaincell/tools/eval/scorer.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <numeric>
#include <span>
#include <string>

#include "gaincell/core/error.h"
#include "gaincell/core/fast_math.h"

namespace gaincell::eval {

LoglikelihoodResult score_token(const float* logits, int vocab_size, int32_t target) {
  // Vectorised: this runs once per scored token over the whole vocabulary (50,257 exps for GPT-2,
  // as much work as a sizeable part of the LM head), so it uses fast_exp (~2 ulp) with a float sum;
  // the result is accurate to ~1e-6, far inside the harness's own float32 log_softmax.
  const float max_logit = max_value(logits, vocab_size);
  int argmax = 0;
  while (argmax < vocab_size - 1 && logits[argmax] != max_logit) argmax++;  // the first maximum
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int v = 0; v < vocab_size; v++) sum += fast_exp(logits[v] - max_logit);
  LoglikelihoodResult r;
  r.logprob = static_cast<double>(logits[target]) - max_logit - std::log(static_cast<double>(sum));
  r.is_greedy = argmax == target;
  return r;
}

namespace {

void add_token(LoglikelihoodResult& total, const LoglikelihoodResult& token) {
  total.logprob += token.logprob;
  total.is_greedy = total.is_greedy && token.is_greedy;
}

void check_tokens(std::span<const TokenRequest> requests, int vocab_size) {
  for (size_t i = 0; i < requests.size(); i++) {
    for (const auto* part : {&requests[i].context, &requests[i].continuation}) {
      for (int32_t t : *part) {
        require(t >= 0 && t < vocab_size,
                "request " + std::to_string(i) + ": token " + std::to_string(t) +
                    " is outside the model's vocabulary (size " + std::to_string(vocab_size) + ")");
      }
    }
  }
}

// lm-eval's Collator order: longest context + continuation first, ties by the tokens.
std::vector<int64_t> collator_order(std::span<const TokenRequest> requests,
                                    std::vector<int64_t> indices) {
  auto whole = [&](int64_t i) {
    std::vector<int32_t> t = requests[i].context;
    t.insert(t.end(), requests[i].continuation.begin(), requests[i].continuation.end());
    return t;
  };
  std::stable_sort(indices.begin(), indices.end(), [&](int64_t a, int64_t b) {
    const size_t la = requests[a].context.size() + requests[a].continuation.size();
    const size_t lb = requests[b].context.size() + requests[b].continuation.size();
    if (la != lb) return la > lb;
    return whole(a) < whole(b);
  });
  return indices;
}

class Scorer {
 public:
  Scorer(GPT2Model& model, std::span<const TokenRequest> requests, const ScoreOptions& options)
      : model_(model),
        requests_(requests),
        options_(options),
        V_(model.config().vocab_size),
        results_(requests.size()) {
    for (const TokenRequest& r : requests)
      inputs_.push_back(model_input(r, model.config().block_size));
  }

  std::vector<LoglikelihoodResult> run(ScoreStats* stats) {
    std::vector<int64_t> whole;
    std::vector<std::vector<int64_t>> shared;
    split_groups(whole, shared);
    score_shared(shared);
    whole = collator_order(requests_, std::move(whole));
    score_whole(whole);
    if (stats) *stats = stats_;
    return std::move(results_);
  }

 private:
  GPT2Model& model_;
  std::span<const TokenRequest> requests_;
  const ScoreOptions& options_;
  const int V_;
  std::vector<ModelInput> inputs_;
  std::vector<LoglikelihoodResult> results_;
  std::unique_ptr<DecodeSession> session_;
  std::vector<std::unique_ptr<DecodeSession>> contexts_;  // one per document of a chunk
  std::vector<std::unique_ptr<DecodeSession>> branches_;  // one per choice of a chunk
  ScoreStats stats_;
  int64_t done_ = 0;

  // The model input before the continuation's first prediction: shared by the choices of a
  // question (same context tokens after truncation).
  std::vector<int32_t> prefix_of(int64_t i) const {
    const ModelInput& in = inputs_[i];
    return {in.tokens.begin(), in.tokens.end() - (in.scored - 1)};
  }

  void split_groups(std::vector<int64_t>& whole, std::vector<std::vector<int64_t>>& shared) {
    const int64_t n = static_cast<int64_t>(requests_.size());
    bool can_share = options_.share_context;
    if (can_share) {
      session_ = model_.start_decoding();
      can_share = session_->clone() != nullptr;
    }
    if (!can_share) {
      whole.resize(n);
      std::iota(whole.begin(), whole.end(), 0);
      return;
    }
    std::map<std::vector<int32_t>, size_t> group_of;
    std::vector<std::vector<int64_t>> groups;
    for (int64_t i = 0; i < n; i++) {
      auto [it, inserted] = group_of.emplace(prefix_of(i), groups.size());
      if (inserted) groups.emplace_back();
      groups[it->second].push_back(i);
    }
    for (auto& g : groups) {
      if (g.size() >= 2) {
        shared.push_back(std::move(g));
      } else {
        whole.push_back(g[0]);
      }
    }
    std::sort(whole.begin(), whole.end());
  }

  void report(int64_t finished) {
    done_ += finished;
    if (options_.progress) options_.progress(done_, static_cast<int64_t>(requests_.size()));
  }

  // Choices that share a context, a chunk of documents at a time: the contexts run in one extend
  // over fresh sessions, then every choice's remaining tokens in one extend over copies of its
  // context's state, so the weights stream from memory twice per chunk rather than once per
  // document and choice.
  void score_shared(const std::vector<std::vector<int64_t>>& groups) {
    size_t begin = 0;
    while (begin < groups.size()) {
      size_t end = begin;
      int64_t rows = 0;
      while (end < groups.size() && static_cast<int>(end - begin) < options_.batch_size) {
        const int64_t group_rows = rows_of(groups[end]);
        if (end > begin && rows + group_rows > options_.max_batch_tokens) break;
        rows += group_rows;
        end++;
      }
      score_shared_chunk(std::span(groups).subspan(begin, end - begin));
      begin = end;
    }
  }

  // Context plus every choice's continuation after its first token: the rows a group runs.
  int64_t rows_of(const std::vector<int64_t>& group) const {
    const ModelInput& first = inputs_[group[0]];
    int64_t rows = static_cast<int64_t>(first.tokens.size()) - (first.scored - 1);  // the prefix
    for (int64_t i : group) rows += static_cast<int64_t>(requests_[i].continuation.size()) - 1;
    return rows;
  }

  void score_shared_chunk(std::span<const std::vector<int64_t>> groups) {
    std::vector<std::vector<int32_t>> prefixes;
    std::vector<std::span<const int32_t>> context_tokens;
    std::vector<DecodeSession*> contexts;
    for (size_t g = 0; g < groups.size(); g++) {
      prefixes.push_back(prefix_of(groups[g][0]));
      if (contexts_.size() <= g) contexts_.push_back(model_.start_decoding());
      contexts_[g]->reset();
      contexts.push_back(contexts_[g].get());
      stats_.forward_tokens += static_cast<int64_t>(prefixes.back().size());
    }
    for (const auto& prefix : prefixes) context_tokens.emplace_back(prefix);
    const float* last =
        DecodeSession::extend_together(contexts, context_tokens, /*last_rows_only=*/true);
    const std::vector<float> firsts(last, last + static_cast<int64_t>(groups.size()) * V_);
    stats_.shared_groups += static_cast<int64_t>(groups.size());

    // Every continuation's first token is scored from its context's last logits; the rest run
    // from copies of the context's state (kept for the whole run, reset for each chunk).
    std::vector<DecodeSession*> branches;
    std::vector<std::span<const int32_t>> rest_tokens;
    std::vector<int64_t> extended;
    int64_t finished = 0;
    for (size_t g = 0; g < groups.size(); g++) {
      for (int64_t i : groups[g]) {
        const std::vector<int32_t>& cont = requests_[i].continuation;
        results_[i] = LoglikelihoodResult{0.0, true};
        add_token(results_[i], score_token(firsts.data() + g * V_, V_, cont[0]));
        finished++;
        if (cont.size() < 2) continue;
        if (branches_.size() <= branches.size()) branches_.push_back(nullptr);
        std::unique_ptr<DecodeSession>& branch = branches_[branches.size()];
        if (!branch || !branch->assign_from(*contexts_[g])) branch = contexts_[g]->clone();
        branches.push_back(branch.get());
        rest_tokens.emplace_back(cont.data(), cont.size() - 1);  // predicts cont[1..]
        extended.push_back(i);
        stats_.forward_tokens += static_cast<int64_t>(cont.size()) - 1;
      }
    }
    if (!branches.empty()) {
      const float* logits = DecodeSession::extend_together(branches, rest_tokens);
      for (size_t b = 0; b < branches.size(); b++) {
        const std::vector<int32_t>& cont = requests_[extended[b]].continuation;
        for (size_t j = 1; j < cont.size(); j++, logits += V_) {
          add_token(results_[extended[b]], score_token(logits, V_, cont[j]));
        }
      }
    }
    report(finished);
  }

  void score_whole(const std::vector<int64_t>& order) {
    size_t pos = 0;
    std::vector<int32_t> batch_tokens;
    while (pos < order.size()) {
      // The first request of a batch is its longest (collator order).
      const int T = static_cast<int>(inputs_[order[pos]].tokens.size());
      const int64_t token_cap = std::max<int64_t>(options_.max_batch_tokens, T);
      size_t end = pos + 1;
      while (end < order.size() && static_cast<int>(end - pos) < options_.batch_size &&
             static_cast<int64_t>(end - pos + 1) * T <= token_cap) {
        end++;
      }
      const int B = static_cast<int>(end - pos);
      batch_tokens.assign(static_cast<size_t>(B) * T, 0);
      for (int b = 0; b < B; b++) {
        const std::vector<int32_t>& t = inputs_[order[pos + b]].tokens;
        std::copy(t.begin(), t.end(), batch_tokens.begin() + static_cast<int64_t>(b) * T);
        // Right padding repeats the last token; causal attention never lets it reach the
        // positions that are scored.
        std::fill(batch_tokens.begin() + static_cast<int64_t>(b) * T + t.size(),
                  batch_tokens.begin() + static_cast<int64_t>(b + 1) * T, t.back());
        stats_.forward_tokens += static_cast<int64_t>(t.size());
      }
      model_.forward(batch_tokens.data(), nullptr, B, T, false);
      const float* logits = model_.logits();
      for (int b = 0; b < B; b++) {
        const int64_t i = order[pos + b];
        const ModelInput& in = inputs_[i];
        const std::vector<int32_t>& cont = requests_[i].continuation;
        const int L = static_cast<int>(in.tokens.size());
        LoglikelihoodResult total{0.0, true};
        for (int j = 0; j < in.scored; j++) {
          const int64_t row = static_cast<int64_t>(b) * T + (L - in.scored + j);
          add_token(total, score_token(logits + row * V_, V_, cont[j]));
        }
        results_[i] = total;
      }
      report(B);
      pos = end;
    }
  }
};

}  // namespace

std::vector<LoglikelihoodResult> score_requests(GPT2Model& model,
                                                std::span<const TokenRequest> requests,
                                                const ScoreOptions& options, ScoreStats* stats) {
  require(options.batch_size >= 1,
          "batch size must be >= 1, got " + std::to_string(options.batch_size));
  check_tokens(requests, model.config().vocab_size);
  if (requests.empty()) return {};
  Scorer scorer(model, requests, options);
  return scorer.run(stats);
}

}  // namespace gaincell::eval
