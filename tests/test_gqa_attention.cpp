// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Issue 12 item 2: grouped-query attention in every variant. Independent check: a GQA layer equals
// the multi-head layer whose key/value heads are the group's head repeated (with the k/v scalers
// repeated), forward and backward (the shared head's gradient is the sum over its replicas).
// Through the model: a Llama-family model on the gain-cell arrays decodes token by token exactly
// as its whole-sequence form (RoPE digital before the arrays), past the window; the adaptation
// algorithm runs unchanged on it.
#include <gtest/gtest.h>
#include <omp.h>

#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/attention/softmax_attention.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/tools/adapt/adaptation.h"

namespace gaincell {
namespace {

constexpr int B = 2, H = 4, Hkv = 2, T = 40, D = 8;

std::vector<float> random_vector(size_t n, uint64_t seed, float scale) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// [B, Hkv, T, D] -> [B, H, T, D], each KV head repeated for its group's query heads.
std::vector<float> repeat_kv(const std::vector<float>& kv) {
  const int rep = H / Hkv;
  std::vector<float> out(static_cast<size_t>(B) * H * T * D);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      std::copy_n(kv.begin() + ((b * Hkv + h / rep) * T) * D, T * D,
                  out.begin() + ((b * H + h) * T) * D);
  return out;
}

// The gradient of the shared head is the sum over its replicas.
std::vector<float> sum_groups(const std::vector<float>& d) {
  const int rep = H / Hkv;
  std::vector<float> out(static_cast<size_t>(B) * Hkv * T * D, 0.0f);
  for (int b = 0; b < B; ++b)
    for (int h = 0; h < H; ++h)
      for (int i = 0; i < T * D; ++i)
        out[((b * Hkv + h / rep) * T) * D + i] += d[((b * H + h) * T) * D + i];
  return out;
}

void expect_near_all(const std::vector<float>& got, const std::vector<float>& want, double tol,
                     const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  double worst = 0.0, scale = 0.0;
  for (size_t i = 0; i < got.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::abs(got[i] - want[i])));
    scale = std::max(scale, static_cast<double>(std::abs(want[i])));
  }
  EXPECT_LE(worst, tol * (1.0 + scale)) << what;
  EXPECT_GT(scale, 0.0) << what << " is all zero: the check would be vacuous";
}

struct Pass {
  std::vector<float> out, dq, dk, dv;
};

Pass run(Attention& a, const std::vector<float>& q, const std::vector<float>& k,
         const std::vector<float>& v, const std::vector<float>& dout, int kv_heads) {
  Pass p;
  p.out.resize(q.size());
  p.dq.resize(q.size());
  p.dk.resize(static_cast<size_t>(B) * kv_heads * T * D);
  p.dv.resize(p.dk.size());
  a.forward(q.data(), k.data(), v.data(), p.out.data(), B, T, true);
  a.backward(q.data(), k.data(), v.data(), dout.data(), p.dq.data(), p.dk.data(), p.dv.data(), B,
             T);
  return p;
}

class GqaVariant : public ::testing::TestWithParam<std::string> {};
INSTANTIATE_TEST_SUITE_P(Variants, GqaVariant, ::testing::ValuesIn(attention_names()),
                         [](const auto& info) {
                           std::string n = info.param;
                           for (char& ch : n)
                             if (ch == '-') ch = '_';
                           return n;
                         });

TEST_P(GqaVariant, EqualsMultiHeadWithRepeatedKeyValueHeads) {
  AttentionContext ctx;
  ctx.n_head = H;
  ctx.head_dim = D;
  ctx.block_size = T;
  ctx.window = 12;  // "sliding"
  ctx.layer = 1;
  if (is_gaincell_attention(GetParam())) {
    ctx.hw = gaincell_default_hw(GetParam());
    ctx.hw.window = 32;  // T = 40 > M: slot reuse
    ctx.hw.array_size = 16;
    ctx.hw.leakage.lambda_per_token = 1e-2;
  }
  AttentionContext grouped = ctx;
  grouped.n_kv_head = Hkv;
  auto mha = make_attention(GetParam(), ctx);
  auto gqa = make_attention(GetParam(), grouped);

  // Scalers that put the signals into the hardware ranges; k/v per KV head, repeated for MHA.
  if (auto* g = dynamic_cast<GainCellAttention*>(gqa.get())) {
    auto* m = dynamic_cast<GainCellAttention*>(mha.get());
    const auto specs_g = g->param_specs();
    ASSERT_EQ(specs_g[2].shape, std::vector<int64_t>{Hkv}) << specs_g[2].name;  // k_scaler.a
    ASSERT_EQ(specs_g[0].shape, std::vector<int64_t>{H}) << specs_g[0].name;    // q_scaler.a
    // Bind explicit storage: [scaler][a, b] with per-head values.
    std::vector<std::vector<float>> store_g, store_m;
    std::vector<TensorRef> refs_g, refs_m;
    for (size_t i = 0; i < 16; ++i) {
      const auto& spec = specs_g[i];
      std::vector<float> vals = spec.init;
      const int scaler = static_cast<int>((i % 8) / 2);
      const bool is_a = i < 8 && i % 2 == 0;
      for (size_t h = 0; h < vals.size(); ++h) {
        if (i < 8 && is_a) vals[h] = scaler == 0 ? 1.5f + 0.1f * h : 1.0f + 0.05f * h;
        if (i < 8 && !is_a && scaler == 0) vals[h] = 0.4f;
      }
      std::vector<float> mvals(scaler == 1 || scaler == 2 ? H : vals.size());
      for (size_t h = 0; h < mvals.size(); ++h)
        mvals[h] = (scaler == 1 || scaler == 2) ? vals[h / (H / Hkv)] : vals[h];
      store_g.push_back(vals);
      store_g.push_back(std::vector<float>(vals.size(), 0.0f));
      store_m.push_back(mvals);
      store_m.push_back(std::vector<float>(mvals.size(), 0.0f));
    }
    for (size_t i = 0; i < 16; ++i) {
      refs_g.push_back({store_g[2 * i].data(), i < 8 ? store_g[2 * i + 1].data() : nullptr,
                        static_cast<int64_t>(store_g[2 * i].size())});
      refs_m.push_back({store_m[2 * i].data(), i < 8 ? store_m[2 * i + 1].data() : nullptr,
                        static_cast<int64_t>(store_m[2 * i].size())});
    }
    g->bind_params(refs_g);
    m->bind_params(refs_m);
    const auto q = random_vector(size_t(B) * H * T * D, 1, 0.3f);
    const auto k = random_vector(size_t(B) * Hkv * T * D, 2, 0.3f);
    const auto v = random_vector(size_t(B) * Hkv * T * D, 3, 0.3f);
    const auto dout = random_vector(q.size(), 4, 1.0f);
    const Pass pg = run(*gqa, q, k, v, dout, Hkv);
    const Pass pm = run(*mha, q, repeat_kv(k), repeat_kv(v), dout, H);
    expect_near_all(pg.out, pm.out, 1e-5, "out");
    expect_near_all(pg.dq, pm.dq, 1e-5, "dq");
    expect_near_all(pg.dk, sum_groups(pm.dk), 1e-5, "dk");
    expect_near_all(pg.dv, sum_groups(pm.dv), 1e-5, "dv");
    // Scaler gradients: q/output per query head equal; k/v per KV head = sum over replicas.
    for (size_t i = 0; i < 8; ++i) {
      const int scaler = static_cast<int>(i / 2);
      std::vector<float> want = store_m[2 * i + 1];
      if (scaler == 1 || scaler == 2) {
        std::vector<float> summed(Hkv, 0.0f);
        for (int h = 0; h < H; ++h) summed[h / (H / Hkv)] += want[h];
        want = summed;
      }
      expect_near_all(store_g[2 * i + 1], want, 1e-4, specs_g[i].name + " gradient");
    }
    // Decode on the arrays: one K/V array pair per KV head.
    auto state = gqa->make_decode_state();
    auto* gstate = dynamic_cast<GainCellDecodeState*>(state.get());
    ASSERT_NE(gstate, nullptr);
    std::vector<float> kt(Hkv * D), vt(Hkv * D), qt(H * D), ot(H * D);
    for (int t = 0; t < T; ++t) {
      for (int g2 = 0; g2 < Hkv; ++g2)
        for (int d = 0; d < D; ++d) {
          kt[g2 * D + d] = k[((0 * Hkv + g2) * T + t) * D + d];
          vt[g2 * D + d] = v[((0 * Hkv + g2) * T + t) * D + d];
        }
      state->append(kt.data(), vt.data());
    }
    EXPECT_EQ(gstate->events().cell_writes, int64_t{2} * Hkv * D * T) << "written once per KV head";
    return;
  }
  const auto q = random_vector(size_t(B) * H * T * D, 1, 0.5f);
  const auto k = random_vector(size_t(B) * Hkv * T * D, 2, 0.5f);
  const auto v = random_vector(size_t(B) * Hkv * T * D, 3, 0.5f);
  const auto dout = random_vector(q.size(), 4, 1.0f);
  const Pass pg = run(*gqa, q, k, v, dout, Hkv);
  const Pass pm = run(*mha, q, repeat_kv(k), repeat_kv(v), dout, H);
  expect_near_all(pg.out, pm.out, 1e-5, "out");
  expect_near_all(pg.dq, pm.dq, 1e-5, "dq");
  expect_near_all(pg.dk, sum_groups(pm.dk), 1e-5, "dk");
  expect_near_all(pg.dv, sum_groups(pm.dv), 1e-5, "dv");
  // And the loop-level oracle with grouped heads.
  const int window = GetParam() == "sliding" ? 12 : 0;
  std::vector<float> ref_out(q.size()), rdq(q.size()), rdk(k.size()), rdv(v.size());
  reference_softmax_attention_forward(q.data(), k.data(), v.data(), ref_out.data(), B, H, T, D,
                                      window, Hkv);
  reference_softmax_attention_backward(q.data(), k.data(), v.data(), dout.data(), rdq.data(),
                                       rdk.data(), rdv.data(), B, H, T, D, window, Hkv);
  expect_near_all(pg.out, ref_out, 1e-5, "out vs oracle");
  expect_near_all(pg.dk, rdk, 1e-5, "dk vs oracle");
}

GPT2Config llama_on_arrays(const std::string& attention, int array_size = 16) {
  GPT2Config c = GPT2Config::named("llama-tiny");
  c.block_size = 96;
  c.attention = attention;
  c.hw = gaincell_default_hw(attention);
  c.hw.window = 32;  // T = 80 > M: sliding window and slot reuse on the arrays
  c.hw.array_size = array_size;
  c.hw.leakage.lambda_per_token = 2e-3;
  return c;
}

// Scalers that put q, k, v into the hardware ranges (random-init activations are small).
void init_for_arrays(GPT2Model& m, uint64_t seed) {
  m.init_random(seed);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.15f);
  for (const ParamInfo& p : m.params()) {
    float* x = m.param_data() + p.offset;
    if (p.name.find("_proj.weight") != std::string::npos &&
        p.name.find("self_attn") != std::string::npos)
      for (int64_t i = 0; i < p.numel; ++i) x[i] = dist(rng);
    auto ends = [&](const std::string& s) {
      return p.name.size() >= s.size() &&
             p.name.compare(p.name.size() - s.size(), s.size(), s) == 0;
    };
    if (ends("q_scaler.a")) std::fill(x, x + p.numel, 1.5f);
    if (ends("q_scaler.b")) std::fill(x, x + p.numel, 0.4f);
    if (ends("output_scaler.a")) std::fill(x, x + p.numel, 0.5f);
  }
}

std::vector<int32_t> tokens(int n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (auto& x : t) x = static_cast<int32_t>(rng() % 101);
  return t;
}

// Head dimension 8 on 4 x 4 arrays: every sub-tile spans two arrays along the head dimension.
TEST(GqaModel, GainCellLlamaDecodesAsTheWholeSequence) {
  GPT2Model m(llama_on_arrays("gaincell-nonlinear", /*array_size=*/4));
  init_for_arrays(m, 3);
  const int n = 80, V = m.config().vocab_size;
  const auto x = tokens(n, 4);
  m.forward(x.data(), nullptr, 1, n);
  const std::vector<float> whole(m.logits(), m.logits() + size_t(n) * V);
  auto session = m.start_decoding();
  int mismatched = 0;
  for (int t = 0; t < n; ++t) {
    const float* logits = session->step(x[t]);
    bool ok = true;
    for (int v = 0; v < V; ++v) {
      const float w = whole[size_t(t) * V + v];
      if (std::fabs(logits[v] - w) > 1e-4 * (1.0 + std::fabs(w))) ok = false;
    }
    mismatched += ok ? 0 : 1;
  }
  // As for GPT-2: a quantiser decision within float rounding of a boundary may flip in one path.
  EXPECT_LE(mismatched, 2);
  // The arrays are per KV head: 2 arrays pairs per layer, each written once per token.
  const auto* state = dynamic_cast<const GainCellDecodeState*>(&session->state(0));
  ASSERT_NE(state, nullptr);
  EXPECT_EQ(state->events().cell_writes, int64_t{2} * 2 * m.config().head_dim() * n);
  EXPECT_EQ(state->events().reads, int64_t{4} * n) << "each query head reads once per token";
  // The last read: all 32 / 4 = 8 sub-tiles active, each 2 arrays deep, for 2 query heads.
  EXPECT_EQ(state->last_step_events().tile_reads, int64_t{4} * 8 * 2);
}

TEST(GqaModel, AdaptationRunsUnchangedOnALlamaModel) {
  // Stage A on the linear intermediate model records targets; then the nonlinear model adapts
  // its scalers from reset values by statistics matching.
  GPT2Config c = llama_on_arrays("gaincell-linear");
  GPT2Model linear(c);
  init_for_arrays(linear, 5);
  const int Bt = 2, Tt = 48;
  const auto x = tokens(Bt * Tt, 6), y = tokens(Bt * Tt, 7);
  for (int l = 0; l < c.n_layer; ++l) linear.attention(l).set_record_targets(true);
  for (int i = 0; i < 30; ++i) linear.forward(x.data(), y.data(), Bt, Tt, true);
  GPT2Config nc = llama_on_arrays("gaincell-nonlinear");
  GPT2Model nonlinear(nc);
  ASSERT_EQ(nonlinear.num_params(), linear.num_params());
  std::copy_n(linear.param_data(), linear.num_params(), nonlinear.param_data());
  AdaptationOptions options;
  options.reset = true;
  options.matching.max_passes = 60;
  const AdaptationResult r = adapt_scalers(nonlinear, x, y, Bt, Tt, options);
  ASSERT_FALSE(r.passes.empty());
  EXPECT_TRUE(std::isfinite(r.final_loss));
  EXPECT_LT(r.passes.back().worst_std_error, r.passes.front().worst_std_error)
      << "statistics move towards the targets";
  // k/v scalers are per KV head.
  EXPECT_EQ(nonlinear.param("model.layers.0.attn.k_scaler.a").numel, 2);
}

}  // namespace
}  // namespace gaincell

namespace gaincell {
namespace {

// Issue 14 / 12 speed: decode attention on the OpenMP team (attend_on_team, inside a parallel
// region: the cache split over chunks of keys as well as groups, split softmax, every thread busy
// even with one KV head) equals the plain per-group loop of attend(), for multi-head, grouped and
// multi-query attention and for a sliding window's circular cache, at lengths below, at and past
// one chunk of 128 keys; and it gives the same bits on 1, 2 and 3 threads; with the cache in
// fp32 and in bf16 (--kv-cache bf16).
TEST(GqaDecode, AttendOnTeamEqualsThePlainLoopOnAnyTeam) {
  const int heads = 8, dim = 16, capacity = 400;
  for (KvCacheFormat format : {KvCacheFormat::kF32, KvCacheFormat::kBf16}) {
    SCOPED_TRACE(std::string("kv cache ") + kv_cache_format_name(format));
    for (int kv_heads : {8, 2, 1}) {
      for (int window : {0, 200}) {
        AttentionContext ctx;
        ctx.n_head = heads;
        ctx.n_kv_head = kv_heads;
        ctx.head_dim = dim;
        ctx.block_size = capacity;
        ctx.window = window;
        auto attn = make_attention(window > 0 ? "sliding" : "softmax", ctx);
        auto plain = attn->make_decode_state(format);
        auto team = attn->make_decode_state(format);
        std::vector<float> out_plain(static_cast<size_t>(heads) * dim), out_team(out_plain.size());
        for (int t = 0; t < 330; ++t) {
          const auto k = random_vector(static_cast<size_t>(kv_heads) * dim, 100 + t, 1.0f);
          const auto v = random_vector(k.size(), 1000 + t, 1.0f);
          const auto q = random_vector(out_plain.size(), 5000 + t, 1.5f);
          plain->append(k.data(), v.data());
          team->append(k.data(), v.data());
          if (t % 37 != 0 && t != 127 && t != 128 && t != 329) continue;
          plain->attend(q.data(), out_plain.data());
          std::vector<float> first;
          for (int threads : {1, 2, 3}) {
            SpinBarrier barrier;
            std::exception_ptr error;
            std::fill(out_team.begin(), out_team.end(), -1.0f);
#pragma omp parallel num_threads(threads)
            team->attend_on_team(q.data(), out_team.data(), barrier, omp_get_num_threads(), error);
            ASSERT_FALSE(error);
            if (first.empty()) first = out_team;
            for (size_t i = 0; i < out_plain.size(); ++i) {
              ASSERT_NEAR(out_team[i], out_plain[i], 1e-5f * (1.0f + std::fabs(out_plain[i])))
                  << "kv_heads=" << kv_heads << " window=" << window << " t=" << t << " i=" << i;
              ASSERT_EQ(out_team[i], first[i]) << "threads=" << threads;
            }
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace gaincell
