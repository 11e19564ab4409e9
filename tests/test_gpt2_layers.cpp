// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Finite-difference checks of every hand-written layer backward (issue 2 item 6), on tiny shapes.
// Each check uses a scalar loss L = Σ w ⊙ out with fixed random w, central differences with
// h = 1e-2 (float inputs, double accumulation) and a relative tolerance.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <vector>

#include "gaincell/core/error.h"
#include "gaincell/core/fast_math.h"
#include "gaincell/model/layers.h"

namespace gaincell::layers {
namespace {

std::vector<float> random_vector(size_t n, uint64_t seed, float mean = 0.0f, float scale = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(mean, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

double weighted_sum(const std::vector<float>& out, const std::vector<float>& w) {
  double s = 0.0;
  for (size_t i = 0; i < out.size(); i++) s += static_cast<double>(w[i]) * out[i];
  return s;
}

// Checks analytic gradient `grad` of loss() with respect to every element of `x`.
void check_gradient(std::vector<float>& x, const std::vector<float>& grad,
                    const std::function<double()>& loss, const std::string& what,
                    double tol = 2e-3) {
  ASSERT_EQ(x.size(), grad.size());
  const float h = 1e-2f;
  for (size_t i = 0; i < x.size(); i++) {
    const float saved = x[i];
    x[i] = saved + h;
    const double up = loss();
    x[i] = saved - h;
    const double down = loss();
    x[i] = saved;
    const double fd = (up - down) / (2.0 * h);
    EXPECT_NEAR(grad[i], fd, tol * std::max(1.0, std::abs(fd))) << what << " element " << i;
  }
}

TEST(FastMath, ExpAndTanhMatchTheLibrary) {
  double worst_exp = 0.0, worst_tanh = 0.0;
  for (double x = -87.0; x <= 88.0; x += 0.001237) {
    const float xf = static_cast<float>(x);
    const double want = std::exp(static_cast<double>(xf));
    worst_exp = std::max(worst_exp, std::abs(fast_exp(xf) - want) / want);
    if (std::abs(x) < 20.0) {
      worst_tanh =
          std::max(worst_tanh, std::abs(fast_tanh(xf) - std::tanh(static_cast<double>(xf))));
    }
  }
  EXPECT_LT(worst_exp, 3e-7);
  EXPECT_LT(worst_tanh, 2e-7);
  EXPECT_LT(fast_exp(-1000.0f), 1e-37f);  // clamped, never NaN
  EXPECT_EQ(fast_exp(0.0f), 1.0f);
  // NaN in, NaN out (a diverged training must see it), without converting NaN to an integer.
  EXPECT_TRUE(std::isnan(fast_exp(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_TRUE(std::isnan(fast_tanh(std::numeric_limits<float>::quiet_NaN())));
  EXPECT_EQ(fast_tanh(-30.0f), -1.0f);
  EXPECT_EQ(fast_tanh(30.0f), 1.0f);
}

// max_value against std::max_element at every length across its three loops (64 lanes, 16
// lanes, scalar tail) and every position of the maximum, plus the empty and NaN cases.
TEST(FastMath, MaxValueEqualsMaxElementAtEveryLengthAndPosition) {
  const std::vector<float> base = random_vector(300, 11);
  for (int n = 1; n <= 300; n += (n < 140 ? 1 : 7)) {
    for (int at : {0, n / 3, n / 2, n - 1}) {
      std::vector<float> x(base.begin(), base.begin() + n);
      x[at] = 100.0f + static_cast<float>(n);  // the maximum sits at `at`
      ASSERT_EQ(max_value(x.data(), n), *std::max_element(x.begin(), x.end()))
          << "n = " << n << ", maximum at " << at;
    }
  }
  std::vector<float> negative(77, -5.0f);
  negative[70] = -4.5f;
  EXPECT_EQ(max_value(negative.data(), 77), -4.5f);
  EXPECT_EQ(max_value(negative.data(), 0), -std::numeric_limits<float>::infinity());
  // NaN entries are skipped, as std::max(m, x) skips them.
  std::vector<float> with_nan = {1.0f, std::numeric_limits<float>::quiet_NaN(), 3.0f, 2.0f};
  EXPECT_EQ(max_value(with_nan.data(), 4), 3.0f);
}

TEST(Layers, LayerNormForwardIsNormalised) {
  const int N = 3, C = 10;
  const auto x = random_vector(N * C, 1, 5.0f, 3.0f);
  std::vector<float> ones(C, 1.0f), zeros(C, 0.0f), out(N * C), mean(N), rstd(N);
  layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), ones.data(), zeros.data(), N, C,
                    1e-5f);
  for (int n = 0; n < N; n++) {
    double m = 0.0, v = 0.0;
    for (int c = 0; c < C; c++) m += out[n * C + c] / C;
    for (int c = 0; c < C; c++) v += (out[n * C + c] - m) * (out[n * C + c] - m) / C;
    EXPECT_NEAR(m, 0.0, 1e-5);
    EXPECT_NEAR(v, 1.0, 1e-4);  // eps = 1e-5 against a variance of ~9
  }
}

TEST(Layers, LayerNormBackwardMatchesFiniteDifferences) {
  const int N = 3, C = 7;
  auto x = random_vector(N * C, 2, 0.5f), weight = random_vector(C, 3, 1.0f, 0.3f),
       bias = random_vector(C, 4);
  const auto w = random_vector(N * C, 5);
  std::vector<float> out(N * C), mean(N), rstd(N);
  auto loss = [&] {
    layernorm_forward(out.data(), mean.data(), rstd.data(), x.data(), weight.data(), bias.data(), N,
                      C, 1e-5f);
    return weighted_sum(out, w);
  };
  loss();
  std::vector<float> dx(N * C, 0.0f), dweight(C, 0.0f), dbias(C, 0.0f);
  layernorm_backward(dx.data(), dweight.data(), dbias.data(), w.data(), x.data(), weight.data(),
                     mean.data(), rstd.data(), N, C);
  check_gradient(x, dx, loss, "dx");
  check_gradient(weight, dweight, loss, "dweight");
  check_gradient(bias, dbias, loss, "dbias");
  // recompute reproduces the forward output
  loss();
  std::vector<float> again(N * C);
  layernorm_recompute(again.data(), x.data(), mean.data(), rstd.data(), weight.data(), bias.data(),
                      N, C);
  for (int i = 0; i < N * C; i++) EXPECT_FLOAT_EQ(again[i], out[i]);
}

TEST(Layers, GeluMatchesDefinitionAndFiniteDifferences) {
  // Hand values of 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
  std::vector<float> x = {-3.0f, -1.0f, 0.0f, 0.5f, 2.0f};
  std::vector<float> out(x.size());
  gelu_forward(out.data(), x.data(), x.size());
  const double want[] = {-0.0036373920817, -0.1588080094, 0.0, 0.3457140, 1.9545976940};
  for (size_t i = 0; i < x.size(); i++) EXPECT_NEAR(out[i], want[i], 1e-6) << x[i];
  auto xs = random_vector(20, 6, 0.0f, 2.0f);
  const auto w = random_vector(20, 7);
  std::vector<float> o(20), dx(20);
  auto loss = [&] {
    gelu_forward(o.data(), xs.data(), o.size());
    return weighted_sum(o, w);
  };
  gelu_backward(dx.data(), xs.data(), w.data(), dx.size());
  check_gradient(xs, dx, loss, "gelu");
}

TEST(Layers, LinearMatchesLoopsAndFiniteDifferences) {
  const int N = 4, C = 5, OC = 6;
  auto x = random_vector(N * C, 8), W = random_vector(C * OC, 9), b = random_vector(OC, 10);
  const auto w = random_vector(N * OC, 11);
  std::vector<float> out(N * OC);
  linear_forward(out.data(), x.data(), W.data(), b.data(), N, C, OC);
  for (int n = 0; n < N; n++) {
    for (int o = 0; o < OC; o++) {
      double s = b[o];
      for (int c = 0; c < C; c++) s += static_cast<double>(x[n * C + c]) * W[c * OC + o];
      EXPECT_NEAR(out[n * OC + o], s, 1e-5);
    }
  }
  // accumulate = true adds onto the existing output (residual connection)
  std::vector<float> acc(N * OC, 1.0f);
  linear_forward(acc.data(), x.data(), W.data(), b.data(), N, C, OC, true);
  for (int i = 0; i < N * OC; i++) EXPECT_NEAR(acc[i], out[i] + 1.0f, 1e-5);

  auto loss = [&] {
    linear_forward(out.data(), x.data(), W.data(), b.data(), N, C, OC);
    return weighted_sum(out, w);
  };
  std::vector<float> dx(N * C, 123.0f), dW(C * OC, 0.0f), db(OC, 0.0f);  // dx is overwritten
  linear_backward(dx.data(), dW.data(), db.data(), w.data(), x.data(), W.data(), N, C, OC);
  check_gradient(x, dx, loss, "dx");
  check_gradient(W, dW, loss, "dW");
  check_gradient(b, db, loss, "db");
}

TEST(Layers, CrossEntropyMatchesHandValueAndFiniteDifferences) {
  // Hand value: logits (0, ln 2, ln 3) -> p = (1/6, 2/6, 3/6); target 2 -> loss ln 2.
  std::vector<float> logits = {0.0f, std::log(2.0f), std::log(3.0f)};
  std::vector<int32_t> target = {2};
  std::vector<float> losses(1);
  EXPECT_NEAR(crossentropy_forward(losses.data(), logits.data(), target.data(), 1, 3).mean,
              std::log(2.0), 1e-6);

  const int N = 4, V = 9;
  auto z = random_vector(N * V, 12, 0.0f, 2.0f);
  std::vector<int32_t> t = {3, -1, 0, 8};
  std::vector<float> l(N);
  auto loss = [&] { return crossentropy_forward(l.data(), z.data(), t.data(), N, V).mean; };
  const auto r = crossentropy_forward(l.data(), z.data(), t.data(), N, V);
  EXPECT_EQ(r.count, 3);
  EXPECT_EQ(l[1], 0.0f);
  std::vector<float> dz = z;
  crossentropy_backward_inplace(dz.data(), t.data(), N, V, r.count);
  check_gradient(z, dz, loss, "dlogits");
  t[0] = V;
  EXPECT_THROW(crossentropy_forward(l.data(), z.data(), t.data(), N, V), Error);
}

TEST(Layers, ChunkedLmHeadLossMatchesFullLogits) {
  // Oracle: full logits = x · wteᵀ, then crossentropy_forward / crossentropy_backward_inplace
  // (both checked by finite differences above). Chunks of 4 over V = 11: three chunks, one partial.
  const int N = 5, C = 6, V = 11;
  const auto x = random_vector(N * C, 16), wte = random_vector(V * C, 17);
  const std::vector<int32_t> t = {3, -1, 10, 0, 4};
  std::vector<float> logits(N * V, 0.0f), losses(N);
  for (int n = 0; n < N; n++) {
    for (int v = 0; v < V; v++) {
      for (int c = 0; c < C; c++) logits[n * V + v] += x[n * C + c] * wte[v * C + c];
    }
  }
  const LossResult full = crossentropy_forward(losses.data(), logits.data(), t.data(), N, V);
  crossentropy_backward_inplace(logits.data(), t.data(), N, V, full.count);
  std::vector<double> dx(N * C, 0.0), dwte(V * C, 0.0);
  for (int n = 0; n < N; n++) {
    for (int v = 0; v < V; v++) {
      for (int c = 0; c < C; c++) {
        dx[n * C + c] += logits[n * V + v] * wte[v * C + c];
        dwte[v * C + c] += logits[n * V + v] * x[n * C + c];
      }
    }
  }
  std::vector<float> chunk_losses(N), lse(N), buffer(N * 4), cdx(N * C, 7.0f), cdwte(V * C, 1.0f);
  const LossResult chunked = lm_head_loss_forward_chunked(
      chunk_losses.data(), lse.data(), buffer.data(), x.data(), wte.data(), t.data(), N, C, V, 4);
  EXPECT_EQ(chunked.count, full.count);
  EXPECT_NEAR(chunked.mean, full.mean, 1e-6);
  for (int n = 0; n < N; n++) EXPECT_NEAR(chunk_losses[n], losses[n], 1e-5);
  lm_head_loss_backward_chunked(cdx.data(), cdwte.data(), buffer.data(), x.data(), wte.data(),
                                t.data(), lse.data(), N, C, V, 4, chunked.count);
  for (int i = 0; i < N * C; i++) EXPECT_NEAR(cdx[i], dx[i], 1e-6);            // overwritten
  for (int i = 0; i < V * C; i++) EXPECT_NEAR(cdwte[i], 1.0 + dwte[i], 1e-6);  // accumulated
}

TEST(Layers, EmbeddingAndHeadPermutationsRoundTrip) {
  const int B = 2, T = 3, C = 4, V = 5, H = 2, D = 2;
  const auto wte = random_vector(V * C, 13), wpe = random_vector(T * C, 14);
  std::vector<int32_t> tokens = {4, 0, 4, 1, 2, 3};
  std::vector<float> out(B * T * C);
  embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V);
  EXPECT_FLOAT_EQ(out[(1 * T + 2) * C + 3], wte[3 * C + 3] + wpe[2 * C + 3]);
  // backward of a sum is a scatter-add: token 4 appears twice at positions 0 and 2 of row 0
  std::vector<float> dwte(V * C, 0.0f), dwpe(T * C, 0.0f), ones(B * T * C, 1.0f);
  embedding_backward(dwte.data(), dwpe.data(), ones.data(), tokens.data(), B, T, C);
  EXPECT_EQ(dwte[4 * C], 2.0f);
  EXPECT_EQ(dwte[0 * C], 1.0f);
  EXPECT_EQ(dwpe[0], 2.0f);  // position 0 in both rows
  tokens[1] = V;
  EXPECT_THROW(embedding_forward(out.data(), tokens.data(), wte.data(), wpe.data(), B, T, C, V),
               Error);

  const auto qkv = random_vector(B * T * 3 * C, 15);
  std::vector<float> q(B * T * C), k(B * T * C), v(B * T * C), back(qkv.size());
  split_heads(q.data(), k.data(), v.data(), qkv.data(), B, T, H, D);
  // (b=1, h=1, t=2, d=0) of k is column C + h*D + d of row (b, t)
  EXPECT_EQ(k[((1 * H + 1) * T + 2) * D + 0], qkv[(1 * T + 2) * 3 * C + C + 1 * D + 0]);
  merge_heads_qkv(back.data(), q.data(), k.data(), v.data(), B, T, H, D);
  EXPECT_EQ(back, qkv);
  std::vector<float> merged(B * T * C), heads(B * T * C);
  merge_heads(merged.data(), q.data(), B, T, H, D);
  split_heads_one(heads.data(), merged.data(), B, T, H, D);
  EXPECT_EQ(heads, q);
}

// The fused q|k|v split (with the rotary embedding of the Llama family) against its reference,
// split_heads_gqa then rope_apply on q and k; and the fused gather of the gradients against
// rope_apply(inverse) then merge_heads_qkv_gqa. Grouped-query shape, an offset start position.
TEST(Layers, FusedQkvSplitAndMergeMatchSplitThenRope) {
  const int B = 2, T = 5, H = 4, Hkv = 2, D = 8, half = D / 2, pos0 = 3;
  const int rows = B * T, width = (H + 2 * Hkv) * D;
  const auto qkv = random_vector(static_cast<size_t>(rows) * width, 31);
  std::vector<float> cos(static_cast<size_t>(pos0 + T) * half), sin(cos.size());
  for (int p = 0; p < pos0 + T; p++) {
    for (int i = 0; i < half; i++) {
      const double angle = p * std::pow(100.0, -2.0 * i / D);
      cos[p * half + i] = static_cast<float>(std::cos(angle));
      sin[p * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  const size_t nq = static_cast<size_t>(B) * H * T * D, nkv = static_cast<size_t>(B) * Hkv * T * D;
  std::vector<float> q(nq), k(nkv), v(nkv), rq(nq), rk(nkv), rv(nkv);
  // Without tables: exactly the plain split.
  split_qkv_heads(q.data(), k.data(), v.data(), qkv.data(), B, T, H, Hkv, D, nullptr, nullptr, 0);
  split_heads_gqa(rq.data(), rk.data(), rv.data(), qkv.data(), B, T, H, Hkv, D);
  EXPECT_EQ(q, rq);
  EXPECT_EQ(k, rk);
  EXPECT_EQ(v, rv);
  const std::vector<float> plain_q = q;
  // With them: the rotated q and k (rounding of the same products), v untouched.
  split_qkv_heads(q.data(), k.data(), v.data(), qkv.data(), B, T, H, Hkv, D, cos.data(), sin.data(),
                  pos0);
  rope_apply(rq.data(), cos.data(), sin.data(), B, H, T, D, pos0);
  rope_apply(rk.data(), cos.data(), sin.data(), B, Hkv, T, D, pos0);
  for (size_t i = 0; i < nq; i++) EXPECT_NEAR(q[i], rq[i], 1e-6) << "q " << i;
  for (size_t i = 0; i < nkv; i++) EXPECT_NEAR(k[i], rk[i], 1e-6) << "k " << i;
  EXPECT_EQ(v, rv);
  double moved = 0.0;  // the rotation did something
  for (size_t i = 0; i < nq; i++) moved = std::max(moved, std::abs(double(q[i]) - plain_q[i]));
  EXPECT_GT(moved, 0.1);

  // Gradients: gather with the inverse rotation.
  const auto dq = random_vector(nq, 32), dk = random_vector(nkv, 33), dv = random_vector(nkv, 34);
  std::vector<float> merged(qkv.size()), ref(qkv.size());
  merge_qkv_heads(merged.data(), dq.data(), dk.data(), dv.data(), B, T, H, Hkv, D, cos.data(),
                  sin.data(), pos0);
  std::vector<float> rdq = dq, rdk = dk;
  rope_apply(rdq.data(), cos.data(), sin.data(), B, H, T, D, pos0, true);
  rope_apply(rdk.data(), cos.data(), sin.data(), B, Hkv, T, D, pos0, true);
  merge_heads_qkv_gqa(ref.data(), rdq.data(), rdk.data(), dv.data(), B, T, H, Hkv, D);
  for (size_t i = 0; i < ref.size(); i++) EXPECT_NEAR(merged[i], ref[i], 1e-6) << "row " << i;
  // The inverse undoes the forward rotation: merging the rotated heads gives back the rows.
  merge_qkv_heads(merged.data(), q.data(), k.data(), v.data(), B, T, H, Hkv, D, cos.data(),
                  sin.data(), pos0);
  for (size_t i = 0; i < qkv.size(); i++) EXPECT_NEAR(merged[i], qkv[i], 1e-5) << "row " << i;
}

TEST(Layers, ResidualWithBiasIsResidualPlusBias) {
  const int N = 3, C = 7;
  const auto res = random_vector(N * C, 41), bias = random_vector(C, 42);
  std::vector<float> out(N * C), copy(N * C);
  residual_with_bias(out.data(), res.data(), bias.data(), N, C);
  for (int n = 0; n < N; n++) {
    for (int c = 0; c < C; c++) EXPECT_EQ(out[n * C + c], res[n * C + c] + bias[c]);
  }
  residual_with_bias(copy.data(), res.data(), nullptr, N, C);
  EXPECT_EQ(copy, res);
}

}  // namespace
}  // namespace gaincell::layers
