// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// The gain-cell attention against the PyTorch reference written from the spec
// (tests/reference/gaincell_reference.py -> tests/fixtures/gaincell_reference.bin): q, k, v -> y
// and the gradients of q, k, v and of every scaler a and b, for both paper presets with
// quantisers off and on, sliding windows smaller than T, leakage on. The generator resampled its
// inputs until no quantiser rounding or clamp decision lies within 1e-5 of a boundary, so the
// whole arrays must agree to 1e-5 (relative to the array's largest magnitude).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/file_io.h"

using namespace gaincell;
using nlohmann::json;

namespace {

struct Fixture {
  json header;
  std::vector<float> data;
};

Fixture load_fixture() {
  const auto path =
      std::filesystem::path(GAINCELL_SOURCE_DIR) / "tests/fixtures/gaincell_reference.bin";
  const std::vector<uint8_t> bytes = read_binary_file(path);
  EXPECT_GE(bytes.size(), 16u);
  EXPECT_EQ(std::memcmp(bytes.data(), "GCREF001", 8), 0);
  uint64_t len = 0;
  std::memcpy(&len, bytes.data() + 8, 8);
  Fixture f;
  f.header = json::parse(std::string(bytes.begin() + 16, bytes.begin() + 16 + len));
  const size_t n = (bytes.size() - 16 - len) / 4;
  f.data.resize(n);
  std::memcpy(f.data.data(), bytes.data() + 16 + len, n * 4);
  return f;
}

std::vector<float> array(const Fixture& f, const json& c, const std::string& name) {
  const json& a = c.at("arrays").at(name);
  const size_t off = a.at("offset"), count = a.at("count");
  return std::vector<float>(f.data.begin() + off, f.data.begin() + off + count);
}

void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double tol,
                  const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  double scale = 1e-30;
  for (float r : ref) scale = std::max(scale, static_cast<double>(std::fabs(r)));
  int bad = 0;
  double worst = 0.0;
  for (size_t i = 0; i < ref.size(); ++i) {
    const double err = std::fabs(got[i] - ref[i]) / scale;
    worst = std::max(worst, err);
    if (err > tol && ++bad <= 3)
      ADD_FAILURE() << what << "[" << i << "] " << got[i] << " vs " << ref[i];
  }
  EXPECT_EQ(bad, 0) << what << ": worst relative error " << worst;
}

void run_case(const Fixture& f, const json& c, bool reference_kernel) {
  const std::string name = c.at("name");
  SCOPED_TRACE(name + (reference_kernel ? " (loop reference kernel)" : " (fast kernel)"));
  const int B = c["shape"][0], H = c["shape"][1], T = c["shape"][2], D = c["shape"][3];
  const bool linear = c.at("cell") == "linear";
  AttentionContext ctx;
  ctx.n_head = H;
  ctx.head_dim = D;
  ctx.hw = HwConfig::preset(linear ? "paper-linear" : "paper-nonlinear");
  ctx.hw.window = c.at("window");
  ctx.hw.leakage.enabled = true;
  ctx.hw.leakage.lambda_per_token = c.at("lambda");
  const bool quant = c.at("quant");
  ctx.hw.q.enabled = ctx.hw.k.enabled = ctx.hw.v.enabled = ctx.hw.out.enabled = quant;
  GainCellAttention attn(linear ? "gaincell-linear" : "gaincell-nonlinear", ctx);
  attn.set_use_reference_kernel(reference_kernel);

  // Bind the fixture's scaler values (order of param_specs: q.a q.b k.a k.b v.a v.b o.a o.b,
  // then the 8 target buffers).
  const char* scalers[4] = {"q", "k", "v", "output"};
  std::vector<std::vector<float>> store;
  for (int s = 0; s < 4; ++s) {
    store.push_back(array(f, c, std::string("scaler.") + scalers[s] + "_a"));
    store.push_back(array(f, c, std::string("scaler.") + scalers[s] + "_b"));
  }
  std::vector<std::vector<float>> grads(8, std::vector<float>(H, 0.0f));
  std::vector<std::vector<float>> targets(8, std::vector<float>(H, 0.0f));
  std::vector<TensorRef> refs;
  for (int i = 0; i < 8; ++i) refs.push_back({store[i].data(), grads[i].data(), H});
  for (int i = 0; i < 8; ++i) refs.push_back({targets[i].data(), nullptr, H});
  attn.bind_params(refs);

  const auto q = array(f, c, "q"), k = array(f, c, "k"), v = array(f, c, "v");
  const auto dy = array(f, c, "dy");
  std::vector<float> y(q.size()), dq(q.size()), dk(q.size()), dv(q.size());
  attn.forward(q.data(), k.data(), v.data(), y.data(), B, T, true);
  attn.backward(q.data(), k.data(), v.data(), dy.data(), dq.data(), dk.data(), dv.data(), B, T);
  const double tol = 1e-5;
  expect_close(y, array(f, c, "y"), tol, "y");
  expect_close(dq, array(f, c, "dq"), tol, "dq");
  expect_close(dk, array(f, c, "dk"), tol, "dk");
  expect_close(dv, array(f, c, "dv"), tol, "dv");
  for (int s = 0; s < 4; ++s) {
    expect_close(grads[2 * s], array(f, c, std::string("grad.") + scalers[s] + "_a"), tol,
                 std::string("d ") + scalers[s] + "_scaler.a");
    expect_close(grads[2 * s + 1], array(f, c, std::string("grad.") + scalers[s] + "_b"), tol,
                 std::string("d ") + scalers[s] + "_scaler.b");
  }
}

}  // namespace

TEST(GainCellAttentionReference, MatchesPyTorchFromSpec) {
  const Fixture f = load_fixture();
  ASSERT_EQ(f.header.at("format"), "gaincell-reference-v1");
  ASSERT_EQ(f.header.at("cases").size(), 4u);
  for (const json& c : f.header.at("cases")) {
    // The cases must exercise the sliding window and several sub-tiles.
    EXPECT_LT(static_cast<int>(c.at("window")), static_cast<int>(c["shape"][2]));
    run_case(f, c, false);
    run_case(f, c, true);
  }
}
