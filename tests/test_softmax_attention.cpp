// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Softmax and sliding-window attention (spec §3.3, §3.4): the blocked GEMM kernel against the
// loop-level reference, the reference backward against finite differences, and the decode state
// (KV cache, circular for a window) against the whole-sequence forward.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "gaincell/attention/attention.h"
#include "gaincell/attention/softmax_attention.h"
#include "gaincell/core/bf16.h"
#include "gaincell/core/error.h"

namespace gaincell {
namespace {

std::vector<float> random_vector(size_t n, uint64_t seed, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double max_abs_diff(const std::vector<float>& a, const std::vector<float>& b) {
  double m = 0.0;
  for (size_t i = 0; i < a.size(); i++) m = std::max(m, static_cast<double>(std::abs(a[i] - b[i])));
  return m;
}

AttentionContext context(int H, int D, int block_size, int window) {
  AttentionContext ctx;
  ctx.n_head = H;
  ctx.head_dim = D;
  ctx.block_size = block_size;
  ctx.window = window;
  return ctx;
}

struct Case {
  std::string variant;
  int B, H, T, D, window;  // window: ctx.window (0 = block_size for "sliding")
};

void PrintTo(const Case& c, std::ostream* os) {
  *os << c.variant << " B=" << c.B << " H=" << c.H << " T=" << c.T << " D=" << c.D
      << " W=" << c.window;
}

class FastVsReference : public ::testing::TestWithParam<Case> {};

// T = 300 spans three 128-query blocks (one partial), so block edges and the skipped key ranges
// of the sliding window are exercised.
INSTANTIATE_TEST_SUITE_P(Variants, FastVsReference,
                         ::testing::Values(Case{"softmax", 2, 3, 300, 16, 0},
                                           Case{"softmax", 1, 2, 7, 8, 0},
                                           Case{"sliding", 2, 2, 300, 16, 37},
                                           Case{"sliding", 1, 2, 300, 8, 128},
                                           Case{"sliding", 1, 1, 50, 8, 1}));

TEST_P(FastVsReference, ForwardAndBackwardMatchLoopReference) {
  const Case c = GetParam();
  const size_t n = static_cast<size_t>(c.B) * c.H * c.T * c.D;
  const auto q = random_vector(n, 1, 1.5f), k = random_vector(n, 2, 1.5f), v = random_vector(n, 3),
             dout = random_vector(n, 4);
  auto attn = make_attention(c.variant, context(c.H, c.D, 512, c.window));
  const int window = c.variant == "sliding" ? c.window : 0;

  std::vector<float> out(n), ref_out(n);
  attn->forward(q.data(), k.data(), v.data(), out.data(), c.B, c.T, true);
  reference_softmax_attention_forward(q.data(), k.data(), v.data(), ref_out.data(), c.B, c.H, c.T,
                                      c.D, window);
  EXPECT_LT(max_abs_diff(out, ref_out), 2e-5);

  std::vector<float> dq(n), dk(n), dv(n), rq(n), rk(n), rv(n);
  attn->backward(q.data(), k.data(), v.data(), dout.data(), dq.data(), dk.data(), dv.data(), c.B,
                 c.T);
  reference_softmax_attention_backward(q.data(), k.data(), v.data(), dout.data(), rq.data(),
                                       rk.data(), rv.data(), c.B, c.H, c.T, c.D, window);
  EXPECT_LT(max_abs_diff(dq, rq), 1e-4);
  EXPECT_LT(max_abs_diff(dk, rk), 1e-4);
  EXPECT_LT(max_abs_diff(dv, rv), 1e-4);
}

TEST(SoftmaxAttention, WindowOneCopiesTheCurrentValue) {
  // Hand-derived: with W = 1 each query sees only itself, so out_t = v_t exactly.
  const int B = 1, H = 2, T = 9, D = 4;
  const size_t n = static_cast<size_t>(B) * H * T * D;
  const auto q = random_vector(n, 5), k = random_vector(n, 6), v = random_vector(n, 7);
  std::vector<float> out(n);
  make_attention("sliding", context(H, D, 16, 1))
      ->forward(q.data(), k.data(), v.data(), out.data(), B, T, false);
  for (size_t i = 0; i < n; i++) EXPECT_FLOAT_EQ(out[i], v[i]);
}

TEST(SoftmaxAttention, EqualScoresAverageThePrefix) {
  // Hand-derived: q = 0 gives equal scores, so out_t = mean(v_0 .. v_t).
  const int T = 6, D = 3;
  std::vector<float> q(T * D, 0.0f), k = random_vector(T * D, 8), v(T * D);
  for (int t = 0; t < T; t++) {
    for (int d = 0; d < D; d++) v[t * D + d] = static_cast<float>(t + 10 * d);
  }
  std::vector<float> out(T * D);
  make_attention("softmax", context(1, D, 8, 0))
      ->forward(q.data(), k.data(), v.data(), out.data(), 1, T, false);
  for (int t = 0; t < T; t++) {
    for (int d = 0; d < D; d++) EXPECT_NEAR(out[t * D + d], t / 2.0 + 10 * d, 1e-5);
  }
}

TEST(SoftmaxAttention, ReferenceBackwardMatchesFiniteDifferences) {
  const int B = 1, H = 2, T = 5, D = 3, window = 3;
  const size_t n = static_cast<size_t>(B) * H * T * D;
  std::vector<float> q = random_vector(n, 11), k = random_vector(n, 12), v = random_vector(n, 13);
  const auto w = random_vector(n, 14);  // loss = Σ w ⊙ out
  std::vector<float> out(n), dq(n), dk(n), dv(n);
  auto loss = [&] {
    reference_softmax_attention_forward(q.data(), k.data(), v.data(), out.data(), B, H, T, D,
                                        window);
    double s = 0.0;
    for (size_t i = 0; i < n; i++) s += static_cast<double>(w[i]) * out[i];
    return s;
  };
  reference_softmax_attention_backward(q.data(), k.data(), v.data(), w.data(), dq.data(), dk.data(),
                                       dv.data(), B, H, T, D, window);
  const float h = 1e-2f;
  for (auto [x, g] : {std::pair{&q, &dq}, std::pair{&k, &dk}, std::pair{&v, &dv}}) {
    for (size_t i = 0; i < n; i++) {
      const float saved = (*x)[i];
      (*x)[i] = saved + h;
      const double up = loss();
      (*x)[i] = saved - h;
      const double down = loss();
      (*x)[i] = saved;
      const double fd = (up - down) / (2 * h);
      EXPECT_NEAR((*g)[i], fd, 2e-3 * std::max(1.0, std::abs(fd))) << "element " << i;
    }
  }
}

TEST(SoftmaxAttention, DecodeStateMatchesWholeSequenceForward) {
  // Includes T > W for the sliding window, so the circular cache wraps around.
  for (auto [variant, window] : {std::pair{"softmax", 0}, std::pair{"sliding", 5}}) {
    SCOPED_TRACE(variant);
    const int H = 3, T = 23, D = 8;
    const size_t n = static_cast<size_t>(H) * T * D;
    const auto q = random_vector(n, 21), k = random_vector(n, 22), v = random_vector(n, 23);
    auto attn = make_attention(variant, context(H, D, 32, window));
    std::vector<float> out(n);
    attn->forward(q.data(), k.data(), v.data(), out.data(), 1, T, false);
    auto state = attn->make_decode_state();
    std::vector<float> qt(H * D), kt(H * D), vt(H * D), ot(H * D);
    for (int t = 0; t < T; t++) {
      for (int h = 0; h < H; h++) {  // (1, H, T, D) -> head-major vectors of token t
        for (int d = 0; d < D; d++) {
          const size_t src = (static_cast<size_t>(h) * T + t) * D + d;
          qt[h * D + d] = q[src];
          kt[h * D + d] = k[src];
          vt[h * D + d] = v[src];
        }
      }
      state->append(kt.data(), vt.data());
      state->attend(qt.data(), ot.data());
      EXPECT_EQ(state->length(), t + 1);
      for (int h = 0; h < H; h++) {
        for (int d = 0; d < D; d++) {
          EXPECT_NEAR(ot[h * D + d], out[(static_cast<size_t>(h) * T + t) * D + d], 1e-5);
        }
      }
    }
    state->reset();
    EXPECT_EQ(state->length(), 0);
  }
}

// The decode cache keeps keys transposed in blocks of 16 (score_heads) and scores up to four
// query heads of a group per pass: against a direct double-precision softmax over the appended
// history, for every group size from 1 to 6 query heads per key/value head (passes of 4 + 1,
// 4 + 2), a capacity and a window that are not multiples of 16 (a partial last block; a circular
// cache that wraps mid-block), through the cache's growth (32, 64, ... slots), and for a clone
// and an assign_from taken part-way, which must continue exactly as the original. With a bf16
// cache (--kv-cache bf16) the reference reads every key and value rounded to bfloat16 (nearest,
// ties to even), and the cache must really hold the rounded values: its outputs leave the
// unrounded softmax by more than the fp32 tolerance.
TEST(SoftmaxAttention, DecodeCacheMatchesADirectSoftmaxForEveryGroupSize) {
  const int Hkv = 2, D = 12, capacity = 150, steps = 140;
  for (KvCacheFormat format : {KvCacheFormat::kF32, KvCacheFormat::kBf16}) {
    for (int rep = 1; rep <= 6; rep++) {
      for (int window : {0, 37}) {
        SCOPED_TRACE("rep=" + std::to_string(rep) + " window=" + std::to_string(window) +
                     " kv cache " + kv_cache_format_name(format));
        const int H = Hkv * rep;
        AttentionContext ctx = context(H, D, capacity, window);
        ctx.n_kv_head = Hkv;
        auto attn = make_attention(window > 0 ? "sliding" : "softmax", ctx);
        auto state = attn->make_decode_state(format);
        std::unique_ptr<AttentionDecodeState> copy, assigned = attn->make_decode_state(format);
        auto stored = [format](float x) {
          return format == KvCacheFormat::kBf16 ? double(round_to_bf16(x)) : double(x);
        };
        double largest_rounding_effect = 0.0;  // |softmax over rounded K/V - over unrounded|
        std::vector<std::vector<float>> keys, values;
        std::vector<float> out(static_cast<size_t>(H) * D), out_copy(out.size());
        for (int t = 0; t < steps; t++) {
          keys.push_back(random_vector(static_cast<size_t>(Hkv) * D, 700 + t));
          values.push_back(random_vector(static_cast<size_t>(Hkv) * D, 900 + t));
          const auto q = random_vector(out.size(), 1100 + t, 0.7f);
          state->append(keys[t].data(), values[t].data());
          if (copy) copy->append(keys[t].data(), values[t].data());
          if (t == 41) {
            copy = state->clone();
            ASSERT_TRUE(assigned->assign_from(*state));
          }
          if (t > 41) assigned->append(keys[t].data(), values[t].data());
          state->attend(q.data(), out.data());
          const int first = window > 0 ? std::max(0, t - window + 1) : 0;
          // Direct softmax in double over the history as the cache stores it (`round`: rounded
          // to the cache's format) of query head h, dim d.
          auto direct = [&](int h, int d, bool round) {
            const int g = h / rep;
            auto as_cached = [&](float x) { return round ? stored(x) : double(x); };
            std::vector<double> p;
            double mx = -1e300, sum = 0.0, o = 0.0;
            for (int j = first; j <= t; j++) {
              double s = 0.0;
              for (int e = 0; e < D; e++) s += double(q[h * D + e]) * as_cached(keys[j][g * D + e]);
              p.push_back(s / std::sqrt(double(D)));
              mx = std::max(mx, p.back());
            }
            for (double& x : p) sum += (x = std::exp(x - mx));
            for (int j = first; j <= t; j++) o += p[j - first] * as_cached(values[j][g * D + d]);
            return o / sum;
          };
          for (int h = 0; h < H; h++) {
            for (int d = 0; d < D; d++) {
              const double o = direct(h, d, true);
              ASSERT_NEAR(out[h * D + d], o, 1e-5 * (1.0 + std::fabs(o)))
                  << "t=" << t << " h=" << h << " d=" << d;
              if (format != KvCacheFormat::kF32 && t % 10 == 0)
                largest_rounding_effect =
                    std::max(largest_rounding_effect, std::fabs(o - direct(h, d, false)));
            }
          }
          if (t > 41) {
            for (auto* other : {copy.get(), assigned.get()}) {
              other->attend(q.data(), out_copy.data());
              ASSERT_EQ(out_copy, out) << "t=" << t;
            }
          }
        }
        if (format != KvCacheFormat::kF32) {
          EXPECT_GT(largest_rounding_effect, 1e-4);
        }
      }
    }
  }
}

// A hardware variant holds keys and values in its simulated arrays: asking it for a reduced KV
// cache is an error that names the variant, never a silently ignored option.
// A head wider than kMaxWideDim (256) widens a bf16 cache's keys and values as it reads them
// instead of once per group on the stack: the same direct softmax over the rounded history.
TEST(SoftmaxAttention, Bf16CacheOfAWideHeadMatchesADirectSoftmax) {
  const int H = 4, Hkv = 2, D = 264, steps = 21;
  AttentionContext ctx = context(H, D, 32, 0);
  ctx.n_kv_head = Hkv;
  auto state = make_attention("softmax", ctx)->make_decode_state(KvCacheFormat::kBf16);
  std::vector<std::vector<float>> keys, values;
  std::vector<float> out(static_cast<size_t>(H) * D);
  for (int t = 0; t < steps; t++) {
    keys.push_back(random_vector(static_cast<size_t>(Hkv) * D, 300 + t));
    values.push_back(random_vector(static_cast<size_t>(Hkv) * D, 400 + t));
    const auto q = random_vector(out.size(), 500 + t, 0.2f);
    state->append(keys[t].data(), values[t].data());
    state->attend(q.data(), out.data());
    for (int h = 0; h < H; h++) {
      const int g = h / (H / Hkv);
      std::vector<double> p;
      double mx = -1e300, sum = 0.0;
      for (int j = 0; j <= t; j++) {
        double s = 0.0;
        for (int d = 0; d < D; d++) s += double(q[h * D + d]) * round_to_bf16(keys[j][g * D + d]);
        p.push_back(s / std::sqrt(double(D)));
        mx = std::max(mx, p.back());
      }
      for (double& x : p) sum += (x = std::exp(x - mx));
      for (int d = 0; d < D; d++) {
        double o = 0.0;
        for (int j = 0; j <= t; j++) o += p[j] * round_to_bf16(values[j][g * D + d]);
        ASSERT_NEAR(out[h * D + d], o / sum, 1e-5 * (1.0 + std::fabs(o / sum)))
            << "t=" << t << " h=" << h << " d=" << d;
      }
    }
  }
}

TEST(SoftmaxAttention, OnlyTheSoftwareVariantsHaveAKvCacheFormat) {
  EXPECT_EQ(parse_kv_cache_format("bf16"), KvCacheFormat::kBf16);
  EXPECT_EQ(parse_kv_cache_format("f32"), KvCacheFormat::kF32);
  EXPECT_THROW(parse_kv_cache_format("q8"), Error);
  AttentionContext ctx = context(2, 8, 64, 0);
  EXPECT_TRUE(make_attention("softmax", ctx)->has_kv_cache());
  auto hardware = make_attention("gaincell-nonlinear", ctx);
  EXPECT_FALSE(hardware->has_kv_cache());
  EXPECT_NE(hardware->make_decode_state(KvCacheFormat::kF32), nullptr);
  try {
    hardware->make_decode_state(KvCacheFormat::kBf16);
    FAIL() << "a bf16 KV cache for a gain-cell variant was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("gaincell-nonlinear"), std::string::npos) << e.what();
  }
}

TEST(SoftmaxAttention, RejectsBadUse) {
  auto attn = make_attention("softmax", context(2, 4, 8, 0));
  std::vector<float> x(2 * 16 * 4);
  EXPECT_THROW(attn->forward(x.data(), x.data(), x.data(), x.data(), 1, 9, false), Error);
  // backward without a training forward of the same shape
  attn->forward(x.data(), x.data(), x.data(), x.data(), 1, 4, false);
  EXPECT_THROW(
      attn->backward(x.data(), x.data(), x.data(), x.data(), x.data(), x.data(), x.data(), 1, 4),
      Error);
  auto state = attn->make_decode_state();
  EXPECT_THROW(state->attend(x.data(), x.data()), Error);
  for (int t = 0; t < 8; t++) state->append(x.data(), x.data());
  EXPECT_THROW(state->append(x.data(), x.data()), Error);  // cache = block_size
  EXPECT_THROW(make_attention("no-such-variant", context(2, 4, 8, 0)), Error);
}

TEST(SoftmaxAttention, RegisteredNames) {
  const auto names = attention_names();
  EXPECT_NE(std::find(names.begin(), names.end(), "softmax"), names.end());
  EXPECT_NE(std::find(names.begin(), names.end(), "sliding"), names.end());
  EXPECT_FALSE(attention_help("sliding").empty());
  EXPECT_EQ(make_attention("sliding", context(2, 4, 8, 0))->name(), "sliding");
}

}  // namespace
}  // namespace gaincell
