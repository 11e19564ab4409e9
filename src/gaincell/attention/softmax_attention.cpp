#include "gaincell/attention/softmax_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <type_traits>

#include "gaincell/core/bf16.h"
#include "gaincell/core/blas.h"
#include "gaincell/core/error.h"
#include "gaincell/core/fast_math.h"

namespace gaincell {

namespace {

constexpr int kQueryBlock = 128;  // queries per block: S block of 128 x T floats stays in L2

// Multiply-adds below which the heads run on one thread (a parallel region costs more).
bool worth_parallel(int B, int H, int T, int D) {
  return static_cast<int64_t>(B) * H * T * T * D >= (int64_t{1} << 20);
}

// First key query t may see (spec §3.1 mask: max(0, t - W + 1) <= j <= t).
inline int first_key(int t, int window) {
  return window > 0 ? std::max(0, t - window + 1) : 0;
}

struct HeadView {
  const float* q;
  const float* k;
  const float* v;
};

// Scaled scores of queries [i0, i1) against keys [k0, i1): S[m, n] = scale * q_{i0+m} · k_{k0+n}.
void block_scores(const HeadView& h, float* S, int i0, int i1, int k0, int D, float scale) {
  blas::gemm_nt(i1 - i0, i1 - k0, D, h.q + static_cast<int64_t>(i0) * D, D,
                h.k + static_cast<int64_t>(k0) * D, D, S, i1 - k0, scale, 0.0f);
}

// In place: row m of S becomes exp(score - row max) over its visible keys (0 elsewhere), NOT
// yet divided by the row sum: the caller scales the block's output rows (D values) instead of
// the probability rows (up to T values), one pass over S fewer. inv_sum[m] = 1 / row sum; lse
// (when not null) receives the log-sum-exp of each row.
void block_softmax_unnormalised(float* S, float* inv_sum, float* lse, int i0, int i1, int k0,
                                int window) {
  const int nk = i1 - k0;
  for (int t = i0; t < i1; t++) {
    float* row = S + static_cast<int64_t>(t - i0) * nk;
    const int lo = first_key(t, window) - k0, hi = t - k0;  // visible: [lo, hi]
    const float mx = max_value(row + lo, hi - lo + 1);
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int n = lo; n <= hi; n++) {
      row[n] = fast_exp(row[n] - mx);
      sum += row[n];
    }
    std::fill(row, row + lo, 0.0f);
    std::fill(row + hi + 1, row + nk, 0.0f);
    inv_sum[t - i0] = 1.0f / sum;
    if (lse != nullptr) lse[t] = mx + std::log(sum);
  }
}

// Recomputes P from the stored log-sum-exp (backward).
void block_probs_from_lse(float* S, const float* lse, int i0, int i1, int k0, int window) {
  const int nk = i1 - k0;
  for (int t = i0; t < i1; t++) {
    float* row = S + static_cast<int64_t>(t - i0) * nk;
    const int lo = first_key(t, window) - k0, hi = t - k0;
    for (int n = 0; n < lo; n++) row[n] = 0.0f;
    const float shift = lse[t];
#pragma omp simd
    for (int n = lo; n <= hi; n++) row[n] = fast_exp(row[n] - shift);
    for (int n = hi + 1; n < nk; n++) row[n] = 0.0f;
  }
}

// Queries [i0, i0 + kQueryBlock) of one head: scores, softmax, P·V. S holds kQueryBlock x T floats.
void block_forward(const HeadView& h, float* out, float* lse, float* S, int i0, int T, int D,
                   int window, float scale) {
  const int i1 = std::min(T, i0 + kQueryBlock);
  const int k0 = first_key(i0, window);
  float inv_sum[kQueryBlock];
  block_scores(h, S, i0, i1, k0, D, scale);
  block_softmax_unnormalised(S, inv_sum, lse, i0, i1, k0, window);
  float* o = out + static_cast<int64_t>(i0) * D;
  blas::gemm_nn(i1 - i0, D, i1 - k0, S, i1 - k0, h.v + static_cast<int64_t>(k0) * D, D, o, D);
  for (int m = 0; m < i1 - i0; m++) {
    float* row = o + static_cast<int64_t>(m) * D;
    const float f = inv_sum[m];
#pragma omp simd
    for (int d = 0; d < D; d++) row[d] *= f;
  }
}

// dq is overwritten; dk and dv ACCUMULATE (the query heads of a group share one key/value head).
void head_backward(const HeadView& h, const float* dout, const float* lse, float* dq, float* dk,
                   float* dv, float* P, float* dP, int T, int D, int window, float scale) {
  for (int i0 = 0; i0 < T; i0 += kQueryBlock) {
    const int i1 = std::min(T, i0 + kQueryBlock);
    const int k0 = first_key(i0, window);
    const int mb = i1 - i0, nk = i1 - k0;
    const float* dO = dout + static_cast<int64_t>(i0) * D;
    const float* Qb = h.q + static_cast<int64_t>(i0) * D;
    const float* Kb = h.k + static_cast<int64_t>(k0) * D;
    const float* Vb = h.v + static_cast<int64_t>(k0) * D;
    block_scores(h, P, i0, i1, k0, D, scale);
    block_probs_from_lse(P, lse, i0, i1, k0, window);
    blas::gemm_tn(nk, D, mb, P, nk, dO, D, dv + static_cast<int64_t>(k0) * D, D, 1.0f, 1.0f);
    blas::gemm_nt(mb, nk, D, dO, D, Vb, D, dP, nk);  // dP = dO Vᵀ
    // dS = P ⊙ (dP - rowsum(P ⊙ dP)), times the score scale.
    for (int m = 0; m < mb; m++) {
      const float* p = P + static_cast<int64_t>(m) * nk;
      float* g = dP + static_cast<int64_t>(m) * nk;
      float dot = 0.0f;
#pragma omp simd reduction(+ : dot)  // a scalar chain of adds without it
      for (int n = 0; n < nk; n++) dot += p[n] * g[n];
#pragma omp simd
      for (int n = 0; n < nk; n++) g[n] = p[n] * (g[n] - dot) * scale;
    }
    blas::gemm_nn(mb, D, nk, dP, nk, Kb, D, dq + static_cast<int64_t>(i0) * D, D);
    blas::gemm_tn(nk, D, mb, dP, nk, Qb, D, dk + static_cast<int64_t>(k0) * D, D, 1.0f, 1.0f);
  }
}

// A cached element: fp32, or bfloat16 bits (KvCacheFormat::kBf16). widen() is exact; narrow()
// rounds to nearest, ties to even.
inline float widen(float x) {
  return x;
}
inline float widen(uint16_t bits) {
  return bf16_bits_to_float(bits);
}
template <typename Elem>
Elem narrow(float x) {
  if constexpr (std::is_same_v<Elem, float>)
    return x;
  else
    return float_to_bf16_bits(x);
}

// KV cache for token-by-token decode, one entry per key/value head. With a window only the last W
// entries are kept, in a circular buffer (slot = position mod W); softmax does not depend on the
// order of its keys. Storage grows with the tokens appended (doubling, up to the capacity), so
// the many short sessions that score multiple-choice continuations stay small. Elem is the
// cached element (float, or uint16_t bfloat16 bits); everything computed from it is fp32.
template <typename Elem>
class SoftmaxDecodeState : public AttentionDecodeState {
 public:
  SoftmaxDecodeState(int n_head, int n_kv_head, int head_dim, int capacity, bool circular)
      : H_(n_head),
        Hkv_(n_kv_head),
        D_(head_dim),
        capacity_(capacity),
        circular_(circular),
        scores_(static_cast<size_t>(n_head) * capacity) {}

  void append(const float* k, const float* v) override {
    if (!circular_ && length_ >= capacity_) {
      throw Error("softmax decode: KV cache full (" + std::to_string(capacity_) +
                  " tokens = block_size)");
    }
    const int64_t slot = length_ % capacity_;
    if (slot >= slots_) grow(std::min<int64_t>(capacity_, std::max<int64_t>(32, 2 * slots_)));
    for (int g = 0; g < Hkv_; g++) {
      Elem* lane = key_block(g, slot / kKeyBlock) + slot % kKeyBlock;
      for (int d = 0; d < D_; d++) lane[d * kKeyBlock] = narrow<Elem>(k[g * D_ + d]);
      Elem* row = head_row(v_, g, slot);
      for (int d = 0; d < D_; d++) row[d] = narrow<Elem>(v[g * D_ + d]);
    }
    length_++;
  }

  std::unique_ptr<AttentionDecodeState> clone() const override {
    return std::make_unique<SoftmaxDecodeState>(*this);
  }

  // Query heads are processed a group at a time, so each cached key and value row is read once
  // per group rather than once per query head (grouped-query attention's bandwidth saving).
  // Serially (attend_group over the whole cache) unless the cache is long (>= 8 M values); then
  // it is split into chunks of keys as well as groups (attend_split) over a team of its own, so
  // even a single KV head (multi-query attention) spreads over every thread. Decode's step splits
  // any cache over its team (attend_on_team).
  void attend(const float* q, float* out) override {
    require(length_ > 0, "softmax decode: attend() before any append()");
    const int n = static_cast<int>(std::min<int64_t>(length_, capacity_));
    const bool long_cache = int64_t{n} * H_ * D_ >= (int64_t{1} << 23);
    if (long_cache && n > kDecodeChunk) {
      attend_split(q, out, n);
      return;
    }
    for (int g = 0; g < Hkv_; g++) attend_group(q, out, g, n);
  }

  // On the caller's team the cache is split as attend() splits it when it may (the same items,
  // the same merge, so the same result): the items and then the merges are shared out with
  // orphaned `omp for nowait` loops, the team meeting at the barrier after each.
  void attend_on_team(const float* q, float* out, SpinBarrier& barrier, int threads,
                      std::exception_ptr& error) override {
    const int n = static_cast<int>(std::min<int64_t>(length_, capacity_));
    if (length_ == 0 || n <= kDecodeChunk) {
      AttentionDecodeState::attend_on_team(q, out, barrier, threads, error);
      return;
    }
    // Sized by the first thread before any thread writes a partial. After the barrier every
    // thread sees the same `error` (an allocation failure, or one from before this call) and
    // leaves together; the caller rethrows it after its parallel region.
    run_on_first_thread([&] { reserve_partials(n); }, barrier, threads, error);
    if (error) return;
    const int chunks = (n + kDecodeChunk - 1) / kDecodeChunk;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D_));
#pragma omp for schedule(static) nowait
    for (int item = 0; item < Hkv_ * chunks; item++) attend_item(q, item, chunks, n, scale);
    barrier.wait(threads);
#pragma omp for schedule(static) nowait
    for (int h = 0; h < H_; h++) merge_head(h, chunks, out);
    barrier.wait(threads);
  }

  int64_t length() const override {
    return length_;
  }
  // Copies only the stored rows, reusing this cache's storage when it is large enough.
  bool assign_from(const AttentionDecodeState& other) override {
    const auto* o = dynamic_cast<const SoftmaxDecodeState<Elem>*>(&other);
    if (o == nullptr || o->H_ != H_ || o->Hkv_ != Hkv_ || o->D_ != D_ ||
        o->capacity_ != capacity_ || o->circular_ != circular_) {
      return false;
    }
    if (slots_ != o->slots_) {
      slots_ = o->slots_;  // the old rows are all overwritten or unused
      k_.resize(static_cast<size_t>(Hkv_) * key_block_elements(slots_));
      v_.resize(static_cast<size_t>(Hkv_) * slots_ * D_);
    }
    const int64_t rows = std::min<int64_t>(o->length_, capacity_);
    const int64_t key_elements = key_block_elements(rows);
    for (int g = 0; g < Hkv_; g++) {
      std::copy(o->key_block(g, 0), o->key_block(g, 0) + key_elements, key_block(g, 0));
      std::copy(o->head_row(o->v_, g, 0), o->head_row(o->v_, g, 0) + rows * D_, head_row(v_, g, 0));
    }
    length_ = o->length_;
    return true;
  }
  void reset() override {
    length_ = 0;
  }
  void reserve(int64_t tokens) override {
    const int64_t slots = std::min<int64_t>(capacity_, tokens);
    if (slots > slots_) grow(slots);  // a full cache (slots_ == capacity_) never grows
  }

 private:
  // Keys per work item of attend_split: 128 keys of a 64-wide head are 64 KB of K and V, enough
  // to amortise the item's bookkeeping; fixed (not derived from the thread count) so the result
  // does not depend on how many threads run it.
  static constexpr int kDecodeChunk = 128;

  // scores[r * capacity_ + j] = scale * q_(g, r) . k_j for the query heads r of group g and the
  // cached keys j in [j0, j1) (j0 a multiple of kKeyBlock): each key block is read once per
  // kHeadsPerSweep query heads of the group.
  void score_keys(const float* q, int g, int j0, int j1, float scale, float* scores) const {
    const int rep = H_ / Hkv_;
    for (int r0 = 0; r0 < rep; r0 += kHeadsPerSweep) {
      const float* qh = q + (g * rep + r0) * D_;
      float* rows = scores + static_cast<int64_t>(r0) * capacity_;
      switch (std::min(kHeadsPerSweep, rep - r0)) {
        case 1:
          score_heads<1>(qh, g, j0, j1, scale, rows);
          break;
        case 2:
          score_heads<2>(qh, g, j0, j1, scale, rows);
          break;
        case 3:
          score_heads<3>(qh, g, j0, j1, scale, rows);
          break;
        default:
          score_heads<4>(qh, g, j0, j1, scale, rows);
          break;
      }
    }
  }

  // score_keys for NR consecutive query heads (q: the first one's query; scores: its row). Per
  // key block, 16 keys at once: acc[r][l] += q_r[d] k_(16b + l)[d] over d, a broadcast times a
  // contiguous 16-wide slice of the block, no horizontal sum per key.
  // A reduced cache's block is widened to fp32 once per pass (into `wide`, on the stack) when
  // several query heads read it in the pass and it is small enough (D <= kMaxWideDim), rather
  // than once per head.
  template <int NR>
  void score_heads(const float* q, int g, int j0, int j1, float scale, float* scores) const {
    constexpr bool kWidenOnce = !std::is_same_v<Elem, float> && NR > 1;
    [[maybe_unused]] float wide[kWidenOnce ? kMaxWideDim * kKeyBlock : 1];
    for (int j = j0; j < j1; j += kKeyBlock) {
      const Elem* block = key_block(g, j / kKeyBlock);
      float acc[NR][kKeyBlock] = {};
      if constexpr (kWidenOnce) {
        if (D_ <= kMaxWideDim) {
          widen_elements(block, D_ * kKeyBlock, wide);
          block_scores(q, wide, acc);
        } else {
          block_scores(q, block, acc);
        }
      } else {
        block_scores(q, block, acc);
      }
      store_block_scores(acc, j, j1, scale, scores);
    }
  }

  // The block's scores (keys j .. j + 15, those below j1) into the score rows of its NR heads.
  template <int NR, int W>
  void store_block_scores(const float (&acc)[NR][W], int j, int j1, float scale,
                          float* scores) const {
    const int valid = std::min(W, j1 - j);
    for (int r = 0; r < NR; r++)
      for (int l = 0; l < valid; l++) scores[r * capacity_ + j + l] = acc[r][l] * scale;
  }

  // acc[r][l] += q_r . k_l over the dims of one key block [D][W] (W = kKeyBlock keys; of E:
  // fp32, or the cache's elements, widened as they are read).
  // With fewer than four heads the dims are split over S = 4 / NR partial sums (dim d into
  // part[d % S]), so that at least four chains of multiply-adds run at once: one head summed in
  // one chain waits out the multiply-add's latency at every dim. GPT-2 124M's shape at 512 keys
  // (12 layers of 12 heads, two threads, medians of 20 calls after evicting the caches): fp32
  // cache 1254 / 949 us per token with one chain, 987 / 855 with four; bf16 cache 393 / 409 ->
  // 377 / 378 us. Six KV heads of two query heads each: no change.
  template <int NR, int W, typename E>
  void block_scores(const float* q, const E* block, float (&acc)[NR][W]) const {
    constexpr int S = NR >= 4 ? 1 : 4 / NR;
    float part[S][NR][W] = {};
    int d = 0;
    for (; d + S <= D_; d += S)
      for (int s = 0; s < S; s++) {
        const E* kd = block + (d + s) * W;
        for (int r = 0; r < NR; r++) {
          const float qd = q[r * D_ + d + s];
#pragma omp simd
          for (int l = 0; l < W; l++) part[s][r][l] += qd * widen(kd[l]);
        }
      }
    for (; d < D_; d++) {
      const E* kd = block + d * W;
      for (int r = 0; r < NR; r++) {
        const float qd = q[r * D_ + d];
#pragma omp simd
        for (int l = 0; l < W; l++) part[0][r][l] += qd * widen(kd[l]);
      }
    }
    for (int r = 0; r < NR; r++)
      for (int s = 0; s < S; s++)
#pragma omp simd
        for (int l = 0; l < W; l++) acc[r][l] += part[s][r][l];
  }

  static void widen_elements(const Elem* from, int n, float* to) {
#pragma omp simd
    for (int i = 0; i < n; i++) to[i] = widen(from[i]);
  }

  // o_r += sum_j p_r[j] v_j for the group's query heads r and keys j in [j0, j1): p_r is row r of
  // `probs` (stride capacity_), o_r = o + r D. Four keys per pass, so each output element is
  // loaded and stored once per four multiply-adds rather than once per one.
  // A reduced cache's four rows are widened once (on the stack) when several query heads read
  // them, as in score_heads.
  void accumulate_values(const float* probs, int g, int j0, int j1, float* o) const {
    const int rep = H_ / Hkv_, D = D_;
    constexpr bool kReduced = !std::is_same_v<Elem, float>;
    [[maybe_unused]] float wide[kReduced ? 4 * kMaxWideDim : 1];
    int j = j0;
    for (; j + 4 <= j1; j += 4) {
      const Elem* rows = head_row(v_, g, j);  // rows j .. j + 3 are consecutive
      if constexpr (kReduced) {
        if (rep > 1 && D <= kMaxWideDim) {
          widen_elements(rows, 4 * D, wide);
          add_four_rows(probs, j, wide, o);
          continue;
        }
      }
      add_four_rows(probs, j, rows, o);
    }
    for (; j < j1; j++) {
      const Elem* vj = head_row(v_, g, j);
      for (int r = 0; r < rep; r++) {
        const float p = probs[static_cast<int64_t>(r) * capacity_ + j];
        float* oh = o + r * D;
#pragma omp simd
        for (int d = 0; d < D; d++) oh[d] += p * widen(vj[d]);
      }
    }
  }

  // o_r += sum over i < 4 of p_r[j + i] v_i for the group's query heads r; v0 holds the four
  // consecutive rows (of E: fp32, or the cache's elements, widened as they are read).
  template <typename E>
  void add_four_rows(const float* probs, int j, const E* v0, float* o) const {
    const int rep = H_ / Hkv_, D = D_;
    const E *v1 = v0 + D, *v2 = v1 + D, *v3 = v2 + D;
    for (int r = 0; r < rep; r++) {
      const float* p = probs + static_cast<int64_t>(r) * capacity_ + j;
      const float p0 = p[0], p1 = p[1], p2 = p[2], p3 = p[3];
      float* oh = o + r * D;
#pragma omp simd
      for (int d = 0; d < D; d++)
        oh[d] += p0 * widen(v0[d]) + p1 * widen(v1[d]) + p2 * widen(v2[d]) + p3 * widen(v3[d]);
    }
  }

  // The plain form: every query head of group g over cached keys [0, n).
  void attend_group(const float* q, float* out, int g, int n) {
    const int rep = H_ / Hkv_;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D_));
    float* scores = scores_.data() + static_cast<int64_t>(g) * rep * capacity_;
    score_keys(q, g, 0, n, scale, scores);
    for (int r = 0; r < rep; r++) {
      float* row = scores + r * capacity_;
      const float mx = max_value(row, n);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int j = 0; j < n; j++) {
        row[j] = fast_exp(row[j] - mx);
        sum += row[j];
      }
      const float inv = 1.0f / sum;
      for (int j = 0; j < n; j++) row[j] *= inv;
      float* oh = out + (g * rep + r) * D_;
      std::fill(oh, oh + D_, 0.0f);
    }
    accumulate_values(scores, g, 0, n, out + g * rep * D_);
  }

  // Split-softmax over (group, chunk of keys) items: each item keeps, per query head of its
  // group, the chunk's score maximum m, the sum s of exp(score - m) and the unnormalised output
  // o = sum exp(score - m) v; the merge rescales the chunks to the largest maximum M:
  // out = sum_c exp(m_c - M) o_c / sum_c exp(m_c - M) s_c. Every K/V row is still read once
  // per group.
  void attend_split(const float* q, float* out, int n) {
    const int chunks = (n + kDecodeChunk - 1) / kDecodeChunk;
    const float scale = 1.0f / std::sqrt(static_cast<float>(D_));
    reserve_partials(n);
    // A small cache (a tiny model) stays on one thread: waking the team would cost more.
    const bool worth_team = int64_t{n} * Hkv_ * D_ >= (int64_t{1} << 16);
#pragma omp parallel if (worth_team)
    {
#pragma omp for schedule(static)
      for (int item = 0; item < Hkv_ * chunks; item++) attend_item(q, item, chunks, n, scale);
#pragma omp for schedule(static)
      for (int h = 0; h < H_; h++) merge_head(h, chunks, out);
    }
  }

  void reserve_partials(int n) {
    const int chunks = (n + kDecodeChunk - 1) / kDecodeChunk;
    const size_t partials = static_cast<size_t>(Hkv_) * chunks * (H_ / Hkv_);
    if (part_max_.size() < partials) {
      part_max_.resize(partials);
      part_sum_.resize(partials);
      part_out_.resize(partials * D_);
    }
  }

  // Item (g, c) of the split: the chunk c of keys against the query heads of group g, into the
  // partials (max, exp-sum, unnormalised output) of each of those heads.
  void attend_item(const float* q, int item, int chunks, int n, float scale) {
    const int rep = H_ / Hkv_;
    const int g = item / chunks, c = item % chunks;
    const int j0 = c * kDecodeChunk, j1 = std::min(n, j0 + kDecodeChunk);
    float* scores = scores_.data() + static_cast<int64_t>(g) * rep * capacity_;
    score_keys(q, g, j0, j1, scale, scores);
    const size_t p0 = static_cast<size_t>(item) * rep;  // partials of (g, c, r = 0)
    for (int r = 0; r < rep; r++) {
      float* row = scores + r * capacity_;
      const float mx = max_value(row + j0, j1 - j0);
      float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
      for (int j = j0; j < j1; j++) {
        row[j] = fast_exp(row[j] - mx);
        sum += row[j];
      }
      part_max_[p0 + r] = mx;
      part_sum_[p0 + r] = sum;
      float* o = part_out_.data() + (p0 + r) * D_;
      std::fill(o, o + D_, 0.0f);
    }
    accumulate_values(scores, g, j0, j1, part_out_.data() + p0 * D_);
  }

  // Query head h's output from its chunks' partials, rescaled to the largest maximum.
  void merge_head(int h, int chunks, float* out) const {
    const int rep = H_ / Hkv_;
    const int g = h / rep, r = h % rep;
    auto partial = [&](int c) { return (static_cast<size_t>(g) * chunks + c) * rep + r; };
    float mx = -std::numeric_limits<float>::infinity();
    for (int c = 0; c < chunks; c++) mx = std::max(mx, part_max_[partial(c)]);
    float* oh = out + static_cast<int64_t>(h) * D_;
    std::fill(oh, oh + D_, 0.0f);
    float sum = 0.0f;
    for (int c = 0; c < chunks; c++) {
      const float w = fast_exp(part_max_[partial(c)] - mx);
      sum += w * part_sum_[partial(c)];
      const float* o = part_out_.data() + partial(c) * D_;
#pragma omp simd
      for (int d = 0; d < D_; d++) oh[d] += w * o[d];
    }
    const float inv = 1.0f / sum;
    for (int d = 0; d < D_; d++) oh[d] *= inv;
  }

  int64_t key_blocks() const {  // key blocks allocated per key/value head
    return (slots_ + kKeyBlock - 1) / kKeyBlock;
  }
  int64_t key_block_elements(int64_t keys) const {  // elements of the whole blocks holding `keys`
    return (keys + kKeyBlock - 1) / kKeyBlock * kKeyBlock * D_;
  }
  Elem* key_block(int g, int64_t b) {
    return k_.data() + (g * key_blocks() + b) * kKeyBlock * D_;
  }
  const Elem* key_block(int g, int64_t b) const {
    return k_.data() + (g * key_blocks() + b) * kKeyBlock * D_;
  }
  Elem* head_row(std::vector<Elem>& buf, int g, int64_t slot) {
    return buf.data() + (static_cast<int64_t>(g) * slots_ + slot) * D_;
  }
  const Elem* head_row(const std::vector<Elem>& buf, int g, int64_t slot) const {
    return buf.data() + (static_cast<int64_t>(g) * slots_ + slot) * D_;
  }
  // Re-lays the cache out for `slots` rows per head (slots_ < slots <= capacity_), keeping the
  // rows stored so far (slots 0 .. slots_ - 1: growth happens before a circular cache wraps).
  void grow(int64_t slots) {
    const int64_t old_key_elements = key_block_elements(slots_);
    const int64_t new_key_elements = key_block_elements(slots);
    std::vector<Elem> k(static_cast<size_t>(Hkv_) * new_key_elements);
    std::vector<Elem> v(static_cast<size_t>(Hkv_) * slots * D_);
    for (int g = 0; g < Hkv_; g++) {
      std::copy(k_.begin() + g * old_key_elements, k_.begin() + (g + 1) * old_key_elements,
                k.begin() + g * new_key_elements);
      const int64_t from = static_cast<int64_t>(g) * slots_ * D_, to = g * slots * D_;
      std::copy(v_.begin() + from, v_.begin() + from + slots_ * D_, v.begin() + to);
    }
    k_ = std::move(k);
    v_ = std::move(v);
    slots_ = slots;
  }
  int H_, Hkv_, D_, capacity_;
  bool circular_;
  int64_t slots_ = 0;  // rows allocated per key/value head (<= capacity_)
  // Keys are cached transposed in blocks of kKeyBlock keys, k_ [Hkv, key block, D, kKeyBlock]:
  // the scores of a block's 16 keys are then 16-wide multiply-adds (score_heads). Cached as rows
  // [Hkv, slots, D], every score took a horizontal sum of a D-wide product, and one step over
  // 8192 keys and 32 query heads (`bench_engine --only gqa`) took 2.1-2.7 ms with 8 key/value
  // heads and 1.9 ms with one; now 1.3-1.6 and 0.8 ms. Values stay rows [Hkv, slots, D]
  // (accumulate_values sums whole rows).
  static constexpr int kKeyBlock = 16;
  static constexpr int kHeadsPerSweep = 4;  // query heads scored per pass over a group's keys
  static constexpr int kMaxWideDim = 256;   // head dims a reduced block is widened once for
  static_assert(kDecodeChunk % kKeyBlock == 0, "score_heads starts a chunk on a key block");
  std::vector<Elem> k_, v_;
  std::vector<float> scores_;  // [H, capacity]: one score row per query head
  // attend_split's per-(group, chunk, query head) partials: max, exp-sum, output [D].
  std::vector<float> part_max_, part_sum_, part_out_;
  int64_t length_ = 0;
};

}  // namespace

SoftmaxAttention::SoftmaxAttention(const AttentionContext& ctx, int window)
    : n_head_(ctx.n_head),
      n_kv_head_(ctx.n_kv_head > 0 ? ctx.n_kv_head : ctx.n_head),
      head_dim_(ctx.head_dim),
      block_size_(ctx.block_size),
      window_(window) {
  require(ctx.n_head > 0 && ctx.head_dim > 0, "softmax attention: n_head and head_dim must be > 0");
  require(n_head_ % n_kv_head_ == 0, "softmax attention: n_kv_head (" + std::to_string(n_kv_head_) +
                                         ") must divide n_head (" + std::to_string(n_head_) + ")");
  require(ctx.block_size > 0, "softmax attention: block_size must be > 0");
  require(window >= 0, "sliding attention: window must be >= 0, got " + std::to_string(window));
}

void SoftmaxAttention::forward(const float* q, const float* k, const float* v, float* out, int B,
                               int T, bool training) {
  require(B > 0 && T > 0 && T <= block_size_,
          "attention forward: need B > 0 and 0 < T <= block_size (" + std::to_string(block_size_) +
              "), got B=" + std::to_string(B) + ", T=" + std::to_string(T));
  const int H = n_head_, D = head_dim_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  if (training) {
    lse_.resize(static_cast<size_t>(B) * H * T);
    lse_B_ = B;
    lse_T_ = T;
  } else {
    lse_B_ = lse_T_ = 0;
  }
  const int64_t head_stride = static_cast<int64_t>(T) * D;
  const int Hkv = n_kv_head_, rep = H / Hkv;
  blas::BlasSingleThreadScope single_blas;  // parallel over heads and query blocks instead
  // One task per (head, block of queries), so that a few heads (9 query heads at B = 1 for
  // SmolLM) still share out evenly over the threads. A head's blocks are consecutive tasks (its
  // K and V stay in cache), largest (last) block first, so each head ends with small tasks.
  const int blocks = (T + kQueryBlock - 1) / kQueryBlock;
  const int heads = B * H;
#pragma omp parallel if (worth_parallel(B, H, T, D))
  {
    std::vector<float> S(static_cast<size_t>(kQueryBlock) * T);
#pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < heads * blocks; task++) {
      const int bh = task / blocks, block = blocks - 1 - task % blocks;
      const int64_t off = bh * head_stride;
      const int64_t kv_off = (static_cast<int64_t>(bh / H) * Hkv + (bh % H) / rep) * head_stride;
      HeadView view{q + off, k + kv_off, v + kv_off};
      float* lse = training ? lse_.data() + static_cast<int64_t>(bh) * T : nullptr;
      block_forward(view, out + off, lse, S.data(), block * kQueryBlock, T, D, window_, scale);
    }
  }
}

void SoftmaxAttention::backward(const float* q, const float* k, const float* v, const float* dout,
                                float* dq, float* dk, float* dv, int B, int T) {
  require(lse_B_ == B && lse_T_ == T,
          "attention backward: no training forward with B=" + std::to_string(B) +
              ", T=" + std::to_string(T) + " to differentiate");
  const int H = n_head_, D = head_dim_;
  const float scale = 1.0f / std::sqrt(static_cast<float>(D));
  const int64_t head_stride = static_cast<int64_t>(T) * D;
  const int Hkv = n_kv_head_, rep = H / Hkv;
  std::fill(dk, dk + B * Hkv * head_stride, 0.0f);
  std::fill(dv, dv + B * Hkv * head_stride, 0.0f);
  blas::BlasSingleThreadScope single_blas;
  // One task per key/value head: its query heads accumulate into the same dk, dv in turn.
#pragma omp parallel if (worth_parallel(B, H, T, D))
  {
    std::vector<float> P(static_cast<size_t>(kQueryBlock) * T);
    std::vector<float> dP(P.size());
#pragma omp for schedule(dynamic, 1)
    for (int bg = 0; bg < B * Hkv; bg++) {
      const int64_t kv_off = bg * head_stride;
      for (int r = 0; r < rep; r++) {
        const int64_t bh = static_cast<int64_t>(bg / Hkv) * H + (bg % Hkv) * rep + r;
        const int64_t off = bh * head_stride;
        HeadView view{q + off, k + kv_off, v + kv_off};
        head_backward(view, dout + off, lse_.data() + bh * T, dq + off, dk + kv_off, dv + kv_off,
                      P.data(), dP.data(), T, D, window_, scale);
      }
    }
  }
}

std::unique_ptr<AttentionDecodeState> SoftmaxAttention::new_decode_state(
    KvCacheFormat format) const {
  // A window keeps only its last `window_` tokens, in a circular buffer.
  const int capacity = window_ > 0 ? window_ : block_size_;
  const bool circular = window_ > 0;
  if (format == KvCacheFormat::kBf16) {
    return std::make_unique<SoftmaxDecodeState<uint16_t>>(n_head_, n_kv_head_, head_dim_, capacity,
                                                          circular);
  }
  return std::make_unique<SoftmaxDecodeState<float>>(n_head_, n_kv_head_, head_dim_, capacity,
                                                     circular);
}

std::unique_ptr<Attention> make_softmax_attention(const AttentionContext& ctx) {
  return std::make_unique<SoftmaxAttention>(ctx, ctx.model_window);
}

std::unique_ptr<Attention> make_sliding_attention(const AttentionContext& ctx) {
  int window = ctx.window > 0 ? ctx.window : ctx.block_size;
  if (ctx.model_window > 0) window = std::min(window, ctx.model_window);
  return std::make_unique<SoftmaxAttention>(ctx, window);
}

// ---------------------------------------------------------------------------------------------
// Loop-level oracle: the textbook formulas, one (b, h, t) at a time, accumulating in double.

void reference_softmax_attention_forward(const float* q, const float* k, const float* v, float* out,
                                         int B, int H, int T, int D, int window, int Hkv) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  if (Hkv == 0) Hkv = H;
  std::vector<double> p(T);
  for (int64_t bh = 0; bh < static_cast<int64_t>(B) * H; bh++) {
    const int64_t kv = (bh / H) * Hkv + (bh % H) / (H / Hkv);  // the query head's K/V head
    const float* Q = q + bh * T * D;
    const float* K = k + kv * T * D;
    const float* V = v + kv * T * D;
    float* O = out + bh * T * D;
    for (int t = 0; t < T; t++) {
      const int lo = first_key(t, window);
      double mx = -1e300, sum = 0.0;
      for (int j = lo; j <= t; j++) {
        double s = 0.0;
        for (int d = 0; d < D; d++) s += static_cast<double>(Q[t * D + d]) * K[j * D + d];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      for (int j = lo; j <= t; j++) sum += (p[j] = std::exp(p[j] - mx));
      for (int d = 0; d < D; d++) {
        double acc = 0.0;
        for (int j = lo; j <= t; j++) acc += p[j] / sum * V[j * D + d];
        O[t * D + d] = static_cast<float>(acc);
      }
    }
  }
}

void reference_softmax_attention_backward(const float* q, const float* k, const float* v,
                                          const float* dout, float* dq, float* dk, float* dv, int B,
                                          int H, int T, int D, int window, int Hkv) {
  const double scale = 1.0 / std::sqrt(static_cast<double>(D));
  if (Hkv == 0) Hkv = H;
  const int64_t n = static_cast<int64_t>(B) * H * T * D, nkv = n / H * Hkv;
  std::fill(dq, dq + n, 0.0f);
  std::fill(dk, dk + nkv, 0.0f);
  std::fill(dv, dv + nkv, 0.0f);
  std::vector<double> p(T), dp(T);
  for (int64_t bh = 0; bh < static_cast<int64_t>(B) * H; bh++) {
    const int64_t o = bh * T * D;                                        // query head
    const int64_t ok = ((bh / H) * Hkv + (bh % H) / (H / Hkv)) * T * D;  // its K/V head
    for (int t = 0; t < T; t++) {
      const int lo = first_key(t, window);
      double mx = -1e300, sum = 0.0;
      for (int j = lo; j <= t; j++) {
        double s = 0.0;
        for (int d = 0; d < D; d++) s += static_cast<double>(q[o + t * D + d]) * k[ok + j * D + d];
        p[j] = s * scale;
        mx = std::max(mx, p[j]);
      }
      for (int j = lo; j <= t; j++) sum += (p[j] = std::exp(p[j] - mx));
      for (int j = lo; j <= t; j++) p[j] /= sum;
      // out_t = Σ_j p_j v_j  =>  dv_j += p_j dout_t,  dp_j = dout_t · v_j.
      double dot = 0.0;
      for (int j = lo; j <= t; j++) {
        dp[j] = 0.0;
        for (int d = 0; d < D; d++) {
          dv[ok + j * D + d] += static_cast<float>(p[j] * dout[o + t * D + d]);
          dp[j] += static_cast<double>(dout[o + t * D + d]) * v[ok + j * D + d];
        }
        dot += p[j] * dp[j];
      }
      // softmax Jacobian: ds_j = p_j (dp_j - Σ_i p_i dp_i); s_j = scale q_t · k_j.
      for (int j = lo; j <= t; j++) {
        const double ds = p[j] * (dp[j] - dot) * scale;
        for (int d = 0; d < D; d++) {
          dq[o + t * D + d] += static_cast<float>(ds * k[ok + j * D + d]);
          dk[ok + j * D + d] += static_cast<float>(ds * q[o + t * D + d]);
        }
      }
    }
  }
}

}  // namespace gaincell
