// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Retention beyond a constant lambda (issue 13 item 4): storage-technology presets, lambda from a
// retention time and the token rate, a refresh policy in the simulators (token by token and whole
// sequence agree) and in the cost model (energy and latency by hand).
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/error.h"
#include "gaincell/device/leakage.h"
#include "gaincell/hw/technology.h"
#include "gaincell/tools/cost/cost_model.h"

namespace gaincell {
namespace {

using nlohmann::json;

TEST(Technology, PresetsWithSourcesAndLambdaFromRetentionAndTokenRate) {
  EXPECT_DOUBLE_EQ(technology("si-cmos").retention_time_s, 5e-3);
  EXPECT_GE(technology("osfet-igzo").retention_time_s, 100.0);
  for (const Technology& t : technologies())
    for (const char* field : {"retention_time_s", "cell_area_factor", "write_energy_factor"})
      EXPECT_FALSE(t.sources.value(field, std::string()).empty()) << t.name << " " << field;
  EXPECT_THROW(technology("flash"), Error);

  const HwConfig si =
      HwConfig::from_json({{"leakage", {{"technology", "si-cmos"}, {"time_per_token_s", 0.8e-6}}}});
  EXPECT_NEAR(si.leakage.effective_lambda(), 0.8e-6 / 5e-3, 1e-18);  // spec §1.3: 1.6e-4
  const HwConfig os = HwConfig::from_json(
      {{"leakage", {{"technology", "osfet-igzo"}, {"time_per_token_s", 0.8e-6}}}});
  EXPECT_NEAR(os.leakage.effective_lambda(), 0.8e-6 / technology("osfet-igzo").retention_time_s,
              1e-20);
  // An explicit retention time wins over the technology's.
  const HwConfig own = HwConfig::from_json(
      {{"leakage",
        {{"technology", "osfet-igzo"}, {"retention_time_s", 1.0}, {"time_per_token_s", 1e-3}}}});
  EXPECT_DOUBLE_EQ(own.leakage.effective_lambda(), 1e-3);
  // The round trip keeps the technology and the policy.
  HwConfig refreshed = os;
  refreshed.leakage.refresh_interval_tokens = 64;
  const HwConfig back = HwConfig::from_json(refreshed.to_json());
  EXPECT_EQ(back.leakage.technology, "osfet-igzo");
  EXPECT_EQ(back.leakage.refresh_interval_tokens, 64);

  auto message = [](const json& j) {
    try {
      HwConfig::from_json(j);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  // The presets assume the paper's 0.8 us per token; a technology without any time per token
  // has no time scale for lambda.
  EXPECT_NE(message({{"leakage", {{"technology", "si-cmos"}, {"time_per_token_s", 0.0}}}})
                .find("time_per_token_s"),
            std::string::npos);
  EXPECT_NE(message({{"leakage", {{"technology", "sram"}, {"time_per_token_s", 1e-6}}}})
                .find("leakage.technology"),
            std::string::npos);
  EXPECT_NE(message({{"leakage", {{"refresh_interval_tokens", -1}}}}).find("refresh"),
            std::string::npos);
}

TEST(Refresh, AgeRestartsAtEveryRefresh) {
  LeakageConfig c;
  c.lambda_per_token = 0.01;
  c.refresh_interval_tokens = 10;
  const Leakage refreshed(c);
  const Leakage plain(0.01);
  EXPECT_DOUBLE_EQ(refreshed.decay(12), plain.decay(2));
  EXPECT_DOUBLE_EQ(refreshed.decay(9), plain.decay(9));
  EXPECT_DOUBLE_EQ(refreshed.decay(30), 1.0);
  EXPECT_EQ(c.effective_age(25), 5);
}

std::vector<float> random_vector(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> g(0.0f, 0.5f);
  std::vector<float> v(n);
  for (auto& x : v) x = g(rng);
  return v;
}

std::vector<float> decode_all(const Attention& attn, const std::vector<float>& q,
                              const std::vector<float>& k, const std::vector<float>& v, int H,
                              int T, int D) {
  auto state = attn.make_decode_state();
  std::vector<float> out(q.size()), qt(H * D), kt(H * D), vt(H * D), ot(H * D);
  for (int t = 0; t < T; ++t) {
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d) {
        const size_t i = (static_cast<size_t>(h) * T + t) * D + d;
        qt[h * D + d] = q[i];
        kt[h * D + d] = k[i];
        vt[h * D + d] = v[i];
      }
    state->append(kt.data(), vt.data());
    state->attend(qt.data(), ot.data());
    for (int h = 0; h < H; ++h)
      for (int d = 0; d < D; ++d) out[(static_cast<size_t>(h) * T + t) * D + d] = ot[h * D + d];
  }
  return out;
}

std::vector<float> whole_sequence(const HwConfig& hw, const std::vector<float>& q,
                                  const std::vector<float>& k, const std::vector<float>& v, int H,
                                  int T, int D, std::vector<float>* decoded = nullptr) {
  AttentionContext ctx;
  ctx.n_head = H;
  ctx.head_dim = D;
  ctx.hw = hw;
  GainCellAttention attn("gaincell-nonlinear", ctx);
  std::vector<float> out(q.size());
  attn.forward(q.data(), k.data(), v.data(), out.data(), 1, T, false);
  if (decoded) *decoded = decode_all(attn, q, k, v, H, T, D);
  return out;
}

TEST(Refresh, WholeSequenceEqualsDecodingAndRefreshMatters) {
  const int H = 2, D = 8, T = 80;
  const size_t n = static_cast<size_t>(H) * T * D;
  const auto q = random_vector(n, 1), k = random_vector(n, 2), v = random_vector(n, 3);
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  hw.window = 64;
  hw.array_size = 16;
  hw.leakage.lambda_per_token = 0.03;
  hw.leakage.refresh_interval_tokens = 12;
  for (double variation : {0.0, 0.3}) {
    SCOPED_TRACE(variation);
    hw.noise.leakage_variation = variation;
    std::vector<float> dec;
    const std::vector<float> whole = whole_sequence(hw, q, k, v, H, T, D, &dec);
    int flips = 0;
    for (size_t i = 0; i < n; ++i) flips += std::fabs(dec[i] - whole[i]) > 1e-5 ? 1 : 0;
    EXPECT_LE(flips, 3) << "of " << n;  // output-quantiser ties, float vs double accumulation
    HwConfig none = hw;
    none.leakage.refresh_interval_tokens = 0;
    const std::vector<float> leaky = whole_sequence(none, q, k, v, H, T, D);
    int changed = 0;
    for (size_t i = 0; i < n; ++i) changed += std::fabs(leaky[i] - whole[i]) > 1e-3 ? 1 : 0;
    EXPECT_GT(changed, static_cast<int>(n / 20));
  }
  // A refresh interval no cell reaches changes nothing (bit for bit, on the fast kernel).
  hw.noise.leakage_variation = 0.0;
  hw.leakage.refresh_interval_tokens = 64;
  HwConfig none = hw;
  none.leakage.refresh_interval_tokens = 0;
  EXPECT_EQ(whole_sequence(hw, q, k, v, H, T, D), whole_sequence(none, q, k, v, H, T, D));
}

TEST(Refresh, CostModelChargesThePolicyAndTheTechnology) {
  const cost::CostConfig paper = cost::CostConfig::preset("paper");
  const cost::ModelShape shape;                       // GPT-2 124M: 12 layers, 12 heads, D = 64
  HwConfig hw = HwConfig::preset("paper-nonlinear");  // M = 1024
  const cost::CostEstimate base = cost::estimate_cost(hw, paper, shape);
  auto component = [](const cost::CostEstimate& e, const std::string& name) {
    for (const auto& c : e.components)
      if (c.name == name) return c;
    ADD_FAILURE() << name;
    return cost::ComponentCost{};
  };
  EXPECT_EQ(component(base, "refresh").ops_per_token, 0.0);  // spec §1.3: no refresh needed
  // Refresh every 256 tokens: 1024 / 256 = 4 rows of 2 x 64 cells per token, one write each, and
  // 4 write pulses of Tmax on the critical path.
  hw.leakage.refresh_interval_tokens = 256;
  const cost::CostEstimate policy = cost::estimate_cost(hw, paper, shape);
  const cost::ComponentCost r = component(policy, "refresh");
  EXPECT_DOUBLE_EQ(r.ops_per_token, 4.0 * 2 * 64);
  EXPECT_DOUBLE_EQ(r.energy_per_op_j, component(policy, "cell_write_dac").energy_per_op_j);
  EXPECT_NEAR(policy.latency_per_token_s - base.latency_per_token_s, 4 * hw.tmax_s, 1e-18);
  EXPECT_DOUBLE_EQ(r.energy_per_token_j, r.ops_per_token * r.energy_per_op_j);  // no static power
  EXPECT_GT(r.energy_per_token_j, 0.0);
  // A retention shorter than a slot's lifetime needs retention refresh; the OSFET cell's does not.
  HwConfig short_lived = HwConfig::preset("paper-nonlinear");
  short_lived.leakage.retention_time_s = 1e-4;
  short_lived.leakage.time_per_token_s = 1e-6;
  EXPECT_GT(component(cost::estimate_cost(short_lived, paper, shape), "refresh").ops_per_token,
            0.0);
  HwConfig os = short_lived;
  os.leakage.retention_time_s = 0.0;
  os.leakage.technology = "osfet-igzo";
  const cost::CostEstimate oxide = cost::estimate_cost(os, paper, shape);
  EXPECT_EQ(component(oxide, "refresh").ops_per_token, 0.0);
  EXPECT_NE(component(oxide, "refresh").sources.dump().find("osfet"), std::string::npos);
}

}  // namespace
}  // namespace gaincell
