// Reduced-precision inference weights (model/weight_storage.h, issue 14 item 3): the encodings
// round-trip within their rounding bounds, the fast gemv and the dequantise-then-sgemm matmul
// agree with plain loops over the decoded values, and a model's logits with bf16/q8 weights stay
// within the documented tolerance of fp32 (docs/weights.md), whole-sequence and decode alike.
#include <gtest/gtest.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gaincell/attention/attention.h"
#include "gaincell/core/bf16.h"
#include "gaincell/core/error.h"
#include "gaincell/core/fp16.h"
#include "gaincell/core/spin_barrier.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/weight_storage.h"
#include "test_util.h"

using namespace gaincell;

namespace {

GPT2Config small_config() {
  GPT2Config c = GPT2Config::named("tiny");
  c.n_layer = 2;
  c.n_head = 2;
  c.n_embd = 64;
  c.block_size = 48;
  c.vocab_size = 211;
  return c;
}

std::vector<float> normal_values(size_t n, uint64_t seed, float std = 1.0f) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> g(0.0f, std);
  std::vector<float> v(n);
  for (auto& x : v) x = g(rng);
  return v;
}

}  // namespace

TEST(WeightStorage, FormatNames) {
  EXPECT_EQ(parse_weight_format("f32"), WeightFormat::kF32);
  EXPECT_EQ(parse_weight_format("bf16"), WeightFormat::kBF16);
  EXPECT_EQ(parse_weight_format("q8"), WeightFormat::kQ8);
  EXPECT_EQ(to_string(WeightFormat::kQ8), "q8");
  EXPECT_THROW(parse_weight_format("q4"), Error);
  EXPECT_THROW(PackedMatrix::from_rows(WeightFormat::kQ8, nullptr, 0, 4), Error);
}

TEST(WeightStorage, Bf16RoundTripIsNearestBf16) {
  const int rows = 5, cols = 37;
  const auto w = normal_values(rows * cols, 1);
  const PackedMatrix m = PackedMatrix::from_rows(WeightFormat::kBF16, w.data(), rows, cols);
  EXPECT_EQ(m.bytes(), static_cast<size_t>(rows) * cols * 2);
  for (int r = 0; r < rows; ++r) {
    for (int c = 0; c < cols; ++c) {
      const float x = w[r * cols + c];
      EXPECT_EQ(m.at(r, c), round_to_bf16(x));
      EXPECT_LE(std::fabs(m.at(r, c) - x), std::fabs(x) * 0x1.0p-8f);  // half an ulp of 7 bits
    }
  }
}

namespace {

// The largest |v[i]| over a block.
float block_amax(const float* v, int n) {
  float amax = 0.0f;
  for (int i = 0; i < n; ++i) amax = std::max(amax, std::fabs(v[i]));
  return amax;
}

// The q8 weights' rule, block by block, for the rows of w [rows][cols] (quantize_q8_weight_block):
// the scale is the fp16 value at or above max|w| / 127 whose fp16 predecessor lies below it (0
// for an all-zero block), the packed matrix decodes to scale q with q from the same function, and
// every weight is within half a step of its decoded value, the block maximum at +-127 steps.
void expect_q8_weight_rule(const std::vector<float>& w, int rows, int cols, const PackedMatrix& m) {
  for (int r = 0; r < rows; ++r) {
    for (int c0 = 0; c0 < cols; c0 += 32) {
      const int n = std::min(32, cols - c0);
      const float* v = w.data() + static_cast<size_t>(r) * cols + c0;
      int8_t q[32];
      const uint16_t bits = quantize_q8_weight_block(v, n, q);
      const float step = fp16_bits_to_float(bits), amax = block_amax(v, n);
      SCOPED_TRACE("r=" + std::to_string(r) + " c0=" + std::to_string(c0));
      ASSERT_EQ(bits & 0x8000, 0) << "a scale is positive";
      if (amax == 0.0f) {
        EXPECT_EQ(bits, 0);
      } else {
        EXPECT_GE(step, amax / 127.0f);
        EXPECT_LT(fp16_bits_to_float(static_cast<uint16_t>(bits - 1)), amax / 127.0f);
      }
      for (int i = 0; i < n; ++i) {
        ASSERT_EQ(m.at(r, c0 + i), step * static_cast<float>(q[i])) << i;
        ASSERT_LE(std::fabs(m.at(r, c0 + i) - v[i]), 0.5f * step * (1 + 1e-5f)) << i;
        // With a normal fp16 scale (rounded up by at most 2^-10 of itself) the block maximum
        // is 126.9 to 127 steps: it uses the full int8 range.
        if (bits >= 0x400 && std::fabs(v[i]) == amax) {
          EXPECT_EQ(std::abs(q[i]), 127) << i;
        }
      }
    }
  }
}

}  // namespace

TEST(WeightStorage, Q8RoundTripWithinHalfAStepPerBlock) {
  const int rows = 4, cols = 75;  // two full blocks of 32 and a tail of 11
  auto w = normal_values(rows * cols, 2);
  std::fill(w.begin() + cols, w.begin() + cols + 32, 0.0f);  // an all-zero block: scale 0
  w[3] = 5.0f;                                               // a block maximum
  const PackedMatrix m = PackedMatrix::from_rows(WeightFormat::kQ8, w.data(), rows, cols);
  // ggml's Q8_0: 32 int8 and one fp16 scale, 34 bytes per block.
  EXPECT_EQ(m.bytes(), static_cast<size_t>(rows) * cols + rows * 3 * sizeof(uint16_t));
  EXPECT_EQ(PackedMatrix::from_rows(WeightFormat::kQ8, normal_values(64 * 768, 3).data(), 64, 768)
                .bytes(),
            size_t{64} * 768 / 32 * 34);
  expect_q8_weight_rule(w, rows, cols, m);
  EXPECT_EQ(m.at(1, 0), 0.0f);
  // 5 / 127 = 0.03937 = 1290.08 2^-15, in fp16's binade [2^-5, 2^-4) of steps 2^-15: the scale
  // is rounded up to 1291 2^-15, and 5 is stored as 127 of them (5.0036).
  EXPECT_EQ(m.at(0, 3), 127.0f * 1291.0f * 0x1p-15f);
}

// Blocks of small weights have scales in fp16's subnormal range (max|w| / 127 < 2^-14, so
// max|w| < 7.8e-3) or below its smallest step (max|w| < 127 2^-24 = 7.6e-6): the scale is rounded
// up to a coarser step, with fewer than 127 levels for the smallest, but every weight still lies
// within half a step, and the fast kernels still agree with the plain loops.
TEST(WeightStorage, Q8SubnormalScalesKeepEveryWeightWithinHalfAStep) {
  const int rows = 5, cols = 96;
  for (float std : {1e-7f, 1e-6f, 1e-5f, 1e-4f, 1e-3f}) {
    SCOPED_TRACE(std);
    const auto w = normal_values(static_cast<size_t>(rows) * cols, 20, std);
    const PackedMatrix m = PackedMatrix::from_rows(WeightFormat::kQ8, w.data(), rows, cols);
    expect_q8_weight_rule(w, rows, cols, m);
    const auto x = normal_values(cols, 21);
    std::vector<float> fast(rows), ref(rows);
    m.gemv(x.data(), fast.data(), false);
    packed_gemv_reference(m, x.data(), ref.data(), false);
    for (int r = 0; r < rows; ++r) EXPECT_NEAR(fast[r], ref[r], 2e-6 * (std + std::fabs(ref[r])));
  }
  // The smallest steps, derived by hand: max|w| = 1e-6 needs 1e-6 / 127 = 7.9e-9, below the
  // smallest fp16 2^-24 = 6.0e-8, so the step is 2^-24 and 1e-6 is 17 steps (1.013e-6).
  std::vector<float> tiny(32, 0.0f);
  tiny[0] = 1e-6f;
  tiny[1] = -2e-8f;  // a third of a step: 0
  int8_t q[32];
  EXPECT_EQ(quantize_q8_weight_block(tiny.data(), 32, q), 0x0001);
  EXPECT_EQ(q[0], 17);
  EXPECT_EQ(q[1], 0);
  // 1e-3 / 127 = 7.87e-6 = 132.1 2^-24 lies in the subnormals (steps of 2^-24): rounded up to
  // 133 2^-24, of which 1e-3 is 126.1 (126: the coarse scale leaves a level unused).
  tiny[0] = 1e-3f;
  EXPECT_EQ(quantize_q8_weight_block(tiny.data(), 32, q), 133);
  EXPECT_EQ(q[0], 126);
}

// A finite weight above 127 x 65504 has no fp16 scale: packing it as q8 is an error naming where
// it is (checked before the OpenMP packing loops, and before anything is packed), never a clamp or
// an infinite scale. Infinities and NaNs keep their meaning instead (NaN products), and the
// boundary value itself fits.
TEST(WeightStorage, Q8WeightTooLargeForAnFp16ScaleIsAnError) {
  const int rows = 300, cols = 200;  // large enough for the OpenMP path
  auto w = normal_values(static_cast<size_t>(rows) * cols, 22);
  w[static_cast<size_t>(250) * cols + 70] = -1e7f;
  test_util::expect_error([&] { PackedMatrix::from_rows(WeightFormat::kQ8, w.data(), rows, cols); },
                          "q8 weights: row 250, column 70 of a 300 x 200 matrix holds -10000000, "
                          "too large for q8 weights");
  test_util::expect_error([&] { PackedMatrix::from_rows(WeightFormat::kQ8, w.data(), rows, cols); },
                          "(load this model with --weights bf16 or f32)");
  // The same values as a Conv1D weight w [200 inputs][300 outputs] (M = wᵀ): element
  // 250 * 200 + 70 = 50070 is w[166][270], M's row 270, column 166.
  test_util::expect_error(
      [&] { PackedMatrix::from_columns(WeightFormat::kQ8, w.data(), 300, 200); },
      "q8 weights: element [166][270] of a Conv1D weight w (row 270, column 166 of a 300 x 200 "
      "matrix M = w^T) holds -10000000");
  // Packed piecewise from row 100 (w then holds M's rows 100 .. 399, of a 400-row M): w's own
  // element is still [166][270], M's row 370.
  PackedMatrix tall = PackedMatrix::zeros(WeightFormat::kQ8, 400, 200);
  test_util::expect_error([&] { tall.pack_columns(100, 300, w.data()); },
                          "element [166][270] of a Conv1D weight w (row 370, column 166 of a 400 "
                          "x 200 matrix M = w^T)");
  // Piecewise packing: the rows before the bad one are not packed either.
  PackedMatrix z = PackedMatrix::zeros(WeightFormat::kQ8, rows, cols);
  EXPECT_THROW(z.pack_rows(0, rows, w.data()), Error);
  EXPECT_EQ(z.at(0, 0), 0.0f);
  // bf16 and f32 hold it.
  EXPECT_EQ(PackedMatrix::from_rows(WeightFormat::kBF16, w.data(), rows, cols).at(250, 70),
            round_to_bf16(-1e7f));
  // The boundary: 127 x 65504 has the scale 65504 exactly; the next float up does not fit (its
  // |w| / 127 is 65504.004 in fp32).
  std::vector<float> edge(32, 1.0f);
  edge[5] = kQ8MaxWeight;
  PackedMatrix fits = PackedMatrix::from_rows(WeightFormat::kQ8, edge.data(), 1, 32);
  EXPECT_EQ(fits.at(0, 5), kQ8MaxWeight);
  EXPECT_EQ(fits.at(0, 0), 0.0f);  // 1 is 1.5e-5 steps (1 / 65504)
  EXPECT_EQ(first_q8_overflow(edge.data(), 32), -1);
  edge[5] = -std::nextafter(kQ8MaxWeight, INFINITY);
  EXPECT_EQ(first_q8_overflow(edge.data(), 32), 5);
  EXPECT_THROW(PackedMatrix::from_rows(WeightFormat::kQ8, edge.data(), 1, 32), Error);
  // An infinity or NaN is not "too large": its block's products become NaN (as in fp32).
  edge[5] = std::numeric_limits<float>::infinity();
  edge[40 - 32] = 0.5f;
  EXPECT_EQ(first_q8_overflow(edge.data(), 32), -1);
  const PackedMatrix inf = PackedMatrix::from_rows(WeightFormat::kQ8, edge.data(), 1, 32);
  EXPECT_TRUE(std::isnan(inf.at(0, 8)));
  // A model: set_weight_format names the parameter and leaves the model usable in fp32.
  GPT2Model model(small_config());
  model.init_random(3);
  const ParamInfo* fc = nullptr;
  for (const ParamInfo& p : model.params())
    if (p.name == "h.1.mlp.c_fc.weight") fc = &p;
  ASSERT_NE(fc, nullptr);
  // Element 10 of the Conv1D weight [64][256] is M's row 10, column 0: the parameter's own
  // element is named.
  model.param_data()[fc->offset + 10] = 2e7f;
  test_util::expect_error([&] { model.set_weight_format(WeightFormat::kQ8); },
                          "set_weight_format(q8): parameter 'h.1.mlp.c_fc.weight', element 10 "
                          "holds 20000000, too large for q8 weights");
  EXPECT_EQ(model.weight_format(), WeightFormat::kF32);
  EXPECT_EQ(model.packed_weight_bytes(), 0u);
  const int32_t tokens[3] = {1, 2, 3};
  model.forward(tokens, nullptr, 1, 3);
  model.set_weight_format(WeightFormat::kBF16);
  EXPECT_EQ(model.weight_format(), WeightFormat::kBF16);
  // Llama packs q|k|v and gate|up as one matrix each: the error names the sub-tensor.
  GPT2Model llama(GPT2Config::named("llama-tiny"));
  llama.init_random(4);
  for (const std::string name :
       {"model.layers.1.self_attn.v_proj.weight", "model.layers.0.mlp.up_proj.weight"}) {
    SCOPED_TRACE(name);
    const ParamInfo* p = nullptr;
    for (const ParamInfo& q : llama.params())
      if (q.name == name) p = &q;
    ASSERT_NE(p, nullptr);
    float& bad = llama.param_data()[p->offset + 33];
    const float kept = bad;
    bad = -3e7f;
    test_util::expect_error([&] { llama.set_weight_format(WeightFormat::kQ8); },
                            "set_weight_format(q8): parameter '" + name +
                                "', element 33 holds -30000000, too large for q8 weights");
    bad = kept;
  }
  llama.set_weight_format(WeightFormat::kQ8);
  EXPECT_EQ(llama.weight_format(), WeightFormat::kQ8);
}

// q8 and bf16 store rows in groups of four, interleaved by tiles of 64 bytes (64 q8 or 32 bf16
// columns), the columns past the last whole tile after them and the rows past the last whole
// group row-major (kTileGroupRows). Every split of a shape into those parts: every weight comes
// back from its own place (bf16: its rounding; q8: within half a step of its block's scale), the
// fast kernels (four rows of a group at once, single rows) agree with the plain loops, and
// dequantised rows equal at().
TEST(WeightStorage, TilesHoldEveryShapeOfGroupsAndTails) {
  for (WeightFormat f : {WeightFormat::kBF16, WeightFormat::kQ8})
    for (int rows : {1, 3, 4, 5, 8, 11}) {
      for (int cols : {1, 16, 31, 32, 48, 63, 64, 65, 96, 128, 130, 200}) {
        SCOPED_TRACE(to_string(f) + " " + std::to_string(rows) + " x " + std::to_string(cols));
        const auto w = normal_values(static_cast<size_t>(rows) * cols, 30 + cols, 0.5f);
        const PackedMatrix m = PackedMatrix::from_rows(f, w.data(), rows, cols);
        if (f == WeightFormat::kQ8) {
          expect_q8_weight_rule(w, rows, cols, m);
        } else {
          for (int r = 0; r < rows; ++r)
            for (int c = 0; c < cols; ++c)
              ASSERT_EQ(m.at(r, c), bf16_bits_to_float(float_to_bf16_bits(w[r * cols + c])));
        }
        const auto x = normal_values(cols, 31);
        std::vector<float> fast(rows), ref(rows);
        m.gemv(x.data(), fast.data(), false);
        packed_gemv_reference(m, x.data(), ref.data(), false);
        for (int r = 0; r < rows; ++r)
          ASSERT_NEAR(fast[r], ref[r], 1e-5 * (1 + std::fabs(ref[r]))) << "r=" << r;
        std::vector<float> dq(static_cast<size_t>(rows) * cols);
        m.dequantize_rows(0, rows, dq.data());
        for (int r = 0; r < rows; ++r)
          for (int c = 0; c < cols; ++c) ASSERT_EQ(dq[r * cols + c], m.at(r, c)) << r << "," << c;
      }
    }
}

TEST(WeightStorage, FromColumnsPacksTheTranspose) {
  const int rows = 6, cols = 40;  // M [rows][cols] = W ᵀ, W [cols][rows]
  const auto w = normal_values(rows * cols, 3);
  std::vector<float> wt(w.size());
  for (int c = 0; c < cols; ++c)
    for (int r = 0; r < rows; ++r) wt[r * cols + c] = w[c * rows + r];
  for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kQ8}) {
    const PackedMatrix a = PackedMatrix::from_columns(f, w.data(), rows, cols);
    const PackedMatrix b = PackedMatrix::from_rows(f, wt.data(), rows, cols);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < cols; ++c) ASSERT_EQ(a.at(r, c), b.at(r, c)) << to_string(f);
  }
}

TEST(WeightStorage, FastGemvAndMatmulMatchPlainLoops) {
  // Columns shorter than a vector, one q8 block, a tail after full blocks, GPT-2's width; an odd
  // row count leaves rows after the last full pass of 4 rows.
  for (int cols : {5, 32, 77, 768}) {
    const int rows = 301;  // large enough for the OpenMP path at 768 columns
    const auto w = normal_values(static_cast<size_t>(rows) * cols, 4, 0.05f);
    const auto x = normal_values(cols, 5);
    for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kQ8}) {
      const PackedMatrix m = PackedMatrix::from_rows(f, w.data(), rows, cols);
      std::vector<float> fast(rows, 1.0f), ref(rows, 1.0f);
      m.gemv(x.data(), fast.data(), true);
      packed_gemv_reference(m, x.data(), ref.data(), true);
      for (int r = 0; r < rows; ++r)
        ASSERT_NEAR(fast[r], ref[r], 1e-5 * (1 + std::fabs(ref[r]))) << to_string(f) << " r=" << r;
      m.gemv(x.data(), fast.data(), false);
      packed_gemv_reference(m, x.data(), ref.data(), false);
      for (int r = 0; r < rows; ++r) ASSERT_NEAR(fast[r], ref[r], 1e-5 * (1 + std::fabs(ref[r])));
      // Input rows through the dequantise + sgemm path, accumulating onto 1; 48 rows of 768
      // quantise their activations (q8) on the OpenMP team.
      const int N = cols == 768 ? 48 : 3;
      const auto in = normal_values(static_cast<size_t>(N) * cols, 6);
      std::vector<float> out(static_cast<size_t>(N) * rows, 1.0f);
      packed_matmul(out.data(), in.data(), m, N, true);
      for (int n = 0; n < N; ++n) {
        std::vector<float> y(rows, 1.0f);
        packed_gemv_reference(m, in.data() + n * cols, y.data(), true);
        for (int r = 0; r < rows; ++r)
          ASSERT_NEAR(out[n * rows + r], y[r], 1e-4 * (1 + std::fabs(y[r]))) << to_string(f);
      }
    }
  }
}

// A column view's product splits its outputs into one span per thread of the team (issue 14:
// long contiguous reads of every row); each output still sums over the inputs in order, so any
// team gives the same bits, equal to one thread's, for spans that end mid-vector (77, 301 outputs)
// and teams larger than the vectors (3 threads, 5 outputs: empty spans).
TEST(WeightStorage, ColumnViewProductIsTheSameOnAnyTeam) {
  for (int outputs : {5, 77, 301, 2304}) {
    for (int inputs : {1, 7, 768}) {
      const auto w = normal_values(static_cast<size_t>(inputs) * outputs, 11, 0.05f);
      const auto x = normal_values(inputs, 12);
      const auto bias = normal_values(outputs, 13);
      const PackedMatrix m = PackedMatrix::view_columns(w.data(), outputs, inputs);
      std::vector<float> one(outputs, 2.0f);
      m.gemv_team(m.prepare(x.data()), one.data(), true, bias.data());  // outside a region
      std::vector<float> ref(outputs, 2.0f);
      packed_gemv_reference(m, x.data(), ref.data(), true);
      for (int r = 0; r < outputs; ++r)
        ASSERT_NEAR(one[r], ref[r] + bias[r], 1e-5 * (1 + std::fabs(ref[r])));
      for (int threads : {2, 3}) {
        std::vector<float> team(outputs, 2.0f);
        const GemvInput* input = nullptr;
#pragma omp parallel num_threads(threads)
        {
#pragma omp single
          input = &m.prepare(x.data());  // the single's barrier publishes it
          m.gemv_team(*input, team.data(), true, bias.data());
        }
        ASSERT_EQ(team, one) << outputs << "x" << inputs << " on " << threads << " threads";
      }
    }
  }
}

// fp32 decode reads the parameters in place: a row view is the matrix as it lies, a column view its
// transpose (GPT-2's Conv1D [in, out] weights); both agree with plain loops over at(), with the
// bias and accumulate epilogue of decode's products, for row counts that leave partial vectors of
// the column kernel's span and partial passes of the row kernel.
TEST(WeightStorage, Fp32ViewsMultiplyTheParametersInPlace) {
  for (int rows : {1, 77, 128, 301, 2304}) {
    for (int cols : {5, 64, 768}) {
      const auto w = normal_values(static_cast<size_t>(rows) * cols, 7, 0.05f);
      const auto x = normal_values(cols, 8);
      const auto bias = normal_values(rows, 9);
      const PackedMatrix by_rows = PackedMatrix::view_rows(w.data(), rows, cols);
      const PackedMatrix by_columns = PackedMatrix::view_columns(w.data(), cols, rows);
      EXPECT_EQ(by_rows.bytes(), 0u);  // a view owns nothing
      for (int r = 0; r < rows; r += 37) {
        for (int c = 0; c < cols; c += 3) {
          ASSERT_EQ(by_rows.at(r, c), w[static_cast<size_t>(r) * cols + c]);
          ASSERT_EQ(by_columns.at(c, r), w[static_cast<size_t>(r) * cols + c]);
        }
      }
      // The column view is [cols x rows]: its product takes a vector of `rows` entries.
      const auto xt = normal_values(rows, 10);
      for (const auto& [m, in] : {std::pair{&by_rows, &x}, std::pair{&by_columns, &xt}}) {
        const int out = m->rows();
        std::vector<float> fast(out, 1.0f), ref(out, 1.0f);
        m->gemv(in->data(), fast.data(), true);
        packed_gemv_reference(*m, in->data(), ref.data(), true);
        for (int r = 0; r < out; ++r)
          ASSERT_NEAR(fast[r], ref[r], 1e-5 * (1 + std::fabs(ref[r])))
              << rows << "x" << cols << " r=" << r;
        // Decode's epilogue: y = bias + M x (outside a parallel region gemv_team runs every row).
        std::vector<float> with_bias(out, 5.0f);
        m->gemv_team(m->prepare(in->data()), with_bias.data(), false,
                     m == &by_rows ? bias.data() : nullptr);
        packed_gemv_reference(*m, in->data(), ref.data(), false);
        for (int r = 0; r < out; ++r) {
          const float b = m == &by_rows ? bias[r] : 0.0f;
          ASSERT_NEAR(with_bias[r], b + ref[r], 1e-5 * (1 + std::fabs(ref[r])));
        }
        // The whole-sequence path (dequantise_rows, then sgemm) reads views as well.
        std::vector<float> one(out, 0.0f);
        packed_matmul(one.data(), in->data(), *m, 1, false);
        for (int r = 0; r < out; ++r) ASSERT_NEAR(one[r], ref[r], 1e-4 * (1 + std::fabs(ref[r])));
      }
    }
  }
}

// q8 multiplies quantised activations (Q8Vector, per block of 32: ggml's Q8_0 x Q8_0): the fast
// kernels sum a block's products in integers; the reference multiplies the dequantised values in
// double. The activations' rounding is the weights' rule: within half a step of each block.
TEST(WeightStorage, Q8ActivationsQuantisedPerBlock) {
  const int n = 77;  // two full blocks and a tail of 13
  auto x = normal_values(n, 9);
  x[40] = 0.0f;
  Q8Vector q;
  q.quantize(x.data(), n);
  ASSERT_EQ(q.d.size(), 3u);
  ASSERT_EQ(q.q.size(), 96u);
  for (int i = n; i < 96; ++i) EXPECT_EQ(q.q[i], 0) << "padding after n";
  for (int b = 0; b < 3; ++b) {
    float amax = 0.0f;
    for (int i = b * 32; i < std::min(n, b * 32 + 32); ++i) amax = std::max(amax, std::fabs(x[i]));
    EXPECT_FLOAT_EQ(q.d[b], amax / 127.0f);
    for (int i = b * 32; i < std::min(n, b * 32 + 32); ++i)
      EXPECT_LE(std::fabs(q.at(i) - x[i]), 0.5f * q.d[b] * (1 + 1e-5f)) << i;
  }
  // A weight row of the same values is packed per block as well, with fp16 scales (rounded up:
  // expect_q8_weight_rule checks the rule); the activations' scales stay fp32: they are computed
  // per product, never stored.
  const PackedMatrix m = PackedMatrix::from_rows(WeightFormat::kQ8, x.data(), 1, n);
  for (int b = 0; b < 3; ++b) {
    int8_t qw[32];
    const uint16_t bits = quantize_q8_weight_block(x.data() + b * 32, std::min(32, n - b * 32), qw);
    for (int i = b * 32; i < std::min(n, b * 32 + 32); ++i)
      EXPECT_EQ(m.at(0, i), fp16_bits_to_float(bits) * qw[i - b * 32]) << i;
  }
  // An all-zero block has scale 0; a NaN or infinity makes its block's scale NaN, so a product
  // with it is NaN as in fp32 (not a quiet wrong number).
  std::vector<float> zeros(32, 0.0f);
  int8_t out[32];
  EXPECT_EQ(quantize_q8_block(zeros.data(), 32, out), 0.0f);
  x[3] = std::numeric_limits<float>::infinity();
  q.quantize(x.data(), n);
  EXPECT_TRUE(std::isnan(q.d[0]));
  EXPECT_FALSE(std::isnan(q.d[1]));
  std::vector<float> w(static_cast<size_t>(5) * n, 0.01f), y(5);
  PackedMatrix::from_rows(WeightFormat::kQ8, w.data(), 5, n).gemv(x.data(), y.data(), false);
  for (float v : y) EXPECT_TRUE(std::isnan(v));
  // Likewise a weight: an infinite weight makes its block's fp16 scale NaN, and the products NaN.
  EXPECT_TRUE(std::isnan(fp16_bits_to_float(quantize_q8_weight_block(x.data(), 32, out))));
  x[3] = 0.5f;
  w[static_cast<size_t>(2) * n + 70] = std::numeric_limits<float>::quiet_NaN();
  const PackedMatrix poisoned = PackedMatrix::from_rows(WeightFormat::kQ8, w.data(), 5, n);
  poisoned.gemv(x.data(), y.data(), false);
  for (int r = 0; r < 5; ++r) EXPECT_EQ(std::isnan(y[r]), r == 2) << r;
}

// The q8 kernels use exact integer sums, so they equal the dequantised double-precision products
// to float rounding even where fp32 activations would differ by the activations' quantisation.
TEST(WeightStorage, Q8GemvUsesQuantisedActivations) {
  const int rows = 64, cols = 768;
  const auto w = normal_values(static_cast<size_t>(rows) * cols, 10, 0.05f);
  const auto x = normal_values(cols, 11);
  const PackedMatrix m = PackedMatrix::from_rows(WeightFormat::kQ8, w.data(), rows, cols);
  std::vector<float> fast(rows), ref(rows);
  m.gemv(x.data(), fast.data(), false);
  packed_gemv_reference(m, x.data(), ref.data(), false);
  double act_effect = 0.0;
  for (int r = 0; r < rows; ++r) {
    double with_fp32_x = 0.0;
    for (int c = 0; c < cols; ++c) with_fp32_x += static_cast<double>(m.at(r, c)) * x[c];
    act_effect = std::max(act_effect, std::fabs(with_fp32_x - ref[r]));
    EXPECT_NEAR(fast[r], ref[r], 2e-6 * (1 + std::fabs(ref[r]))) << r;
  }
  EXPECT_GT(act_effect, 1e-4) << "the activations were not quantised";
}

namespace {

// Largest |logit difference| over the logits' standard deviation.
double relative_logit_error(const std::vector<float>& got, const std::vector<float>& ref) {
  double mean = 0.0, var = 0.0, worst = 0.0;
  for (float x : ref) mean += x;
  mean /= ref.size();
  for (float x : ref) var += (x - mean) * (x - mean);
  const double std = std::sqrt(var / ref.size());
  for (size_t i = 0; i < ref.size(); ++i)
    worst = std::max(worst, std::fabs(static_cast<double>(got[i]) - ref[i]));
  return worst / std;
}

}  // namespace

// The documented tolerance (docs/weights.md): on a random GPT-2 (weights N(0, 0.02)), the largest
// logit change stays below 2% (bf16) and 5% (q8) of the logits' standard deviation.
TEST(WeightStorage, ModelLogitsStayCloseToFp32WholeSequenceAndDecode) {
  GPT2Model m(small_config());
  m.init_random(7);
  const int T = 40, V = m.config().vocab_size;
  std::vector<int32_t> x(T);
  std::mt19937_64 rng(8);
  for (auto& t : x) t = static_cast<int32_t>(rng() % V);
  m.forward(x.data(), nullptr, 1, T);
  const std::vector<float> ref(m.logits(), m.logits() + static_cast<size_t>(T) * V);
  for (auto [f, tol] : {std::pair{WeightFormat::kBF16, 0.02}, std::pair{WeightFormat::kQ8, 0.05}}) {
    m.set_weight_format(f);
    EXPECT_EQ(m.weight_format(), f);
    EXPECT_GT(m.packed_weight_bytes(), 0u);
    m.forward(x.data(), nullptr, 1, T);
    const std::vector<float> whole(m.logits(), m.logits() + static_cast<size_t>(T) * V);
    const double err = relative_logit_error(whole, ref);
    RecordProperty("rel_logit_err_" + to_string(f), std::to_string(err));
    EXPECT_LT(err, tol) << to_string(f);
    EXPECT_GT(err, 0.0) << to_string(f) << ": the packed weights were not used";
    // Decode reads the same packed weights: token by token equals the whole sequence (bf16); q8
    // quantises each product's input, where decode and the whole sequence may round a value a
    // step apart (tests/test_stories260k.cpp), so it must stay within the tolerance of fp32.
    auto session = m.start_decoding();
    std::vector<float> decoded;
    for (int t = 0; t < T; ++t) {
      const float* step = session->step(x[t]);
      decoded.insert(decoded.end(), step, step + V);
      if (f != WeightFormat::kBF16) continue;
      for (int v = 0; v < V; ++v)
        ASSERT_NEAR(step[v], whole[static_cast<size_t>(t) * V + v], 1e-4)
            << to_string(f) << " t=" << t << " v=" << v;
    }
    RecordProperty("decode_rel_logit_err_" + to_string(f),
                   std::to_string(relative_logit_error(decoded, ref)));
    EXPECT_LT(relative_logit_error(decoded, ref), tol) << to_string(f) << " decode";
    // Inference only: training refuses reduced weights.
    EXPECT_THROW(m.forward(x.data(), x.data(), 1, T, /*training=*/true), Error);
  }
  m.set_weight_format(WeightFormat::kF32);
  EXPECT_EQ(m.packed_weight_bytes(), 0u);
  m.forward(x.data(), nullptr, 1, T);
  for (size_t i = 0; i < ref.size(); ++i) ASSERT_EQ(m.logits()[i], ref[i]);
}

// Decode with packed weights runs its products inside one OpenMP region per stretch between two
// attentions, the threads meeting at a SpinBarrier and each recomputing the norms and the MLP
// activation itself (GPT2Model::DecodeSession::step_on_team). Every output row is computed by one
// thread with the same instructions whatever the team, so the logits of 1, 2 and 3 threads must
// be identical, for GPT-2 and a Llama-family model (RoPE, GQA, SwiGLU), bf16 and q8.
TEST(WeightStorage, TeamDecodeIsTheSameForAnyThreadCount) {
  GPT2Config llama = GPT2Config::named("llama-tiny");
  llama.block_size = 64;
  for (const GPT2Config& config : {small_config(), llama}) {
    GPT2Model m(config);
    m.init_random(12);
    const int T = 24, V = config.vocab_size;
    std::vector<int32_t> x(T);
    std::mt19937_64 rng(13);
    for (auto& t : x) t = static_cast<int32_t>(rng() % V);
    // f32 decodes through views of the parameters (PackedMatrix::view_rows / view_columns).
    for (WeightFormat f : {WeightFormat::kF32, WeightFormat::kBF16, WeightFormat::kQ8}) {
      m.set_weight_format(f);
      std::vector<std::vector<float>> logits;
      const int saved = omp_get_max_threads();
      for (int threads : {1, 2, 3}) {
        omp_set_num_threads(threads);
        auto session = m.start_decoding();
        std::vector<float> all;
        for (int t = 0; t < T; ++t) {
          const float* step = session->step(x[t]);
          all.insert(all.end(), step, step + V);
        }
        logits.push_back(std::move(all));
      }
      omp_set_num_threads(saved);
      for (size_t i = 0; i < logits[0].size(); ++i) {
        ASSERT_EQ(logits[1][i], logits[0][i])
            << config.model_type << " " << to_string(f) << " " << i;
        ASSERT_EQ(logits[2][i], logits[0][i])
            << config.model_type << " " << to_string(f) << " " << i;
      }
    }
  }
}

// --kv-cache bf16: a session whose layers cache keys and values in bfloat16 stays close to the
// fp32 cache's logits (the cache rounds each element by at most 2^-9 relatively; scores and sums
// stay fp32), for GPT-2 and a Llama-family model (RoPE, GQA), through a prefill (whose keys and
// values are appended rounded) and single steps; it really rounds (the logits differ), and it
// gives the same bits on 1, 2 and 3 threads.
TEST(WeightStorage, Bf16KvCacheDecodeStaysCloseToTheFp32Cache) {
  GPT2Config llama = GPT2Config::named("llama-tiny");
  llama.block_size = 64;
  for (const GPT2Config& config : {small_config(), llama}) {
    SCOPED_TRACE(config.model_type);
    GPT2Model m(config);
    m.init_random(21);
    const int T = 40, prompt = 25, V = config.vocab_size;
    std::vector<int32_t> x(T);
    std::mt19937_64 rng(22);
    for (auto& t : x) t = static_cast<int32_t>(rng() % V);
    auto decode = [&](KvCacheFormat format) {
      auto session = m.start_decoding(format);
      const float* first = session->prefill(x.data(), prompt);
      std::vector<float> all(first, first + V);
      for (int t = prompt; t < T; ++t) {
        const float* step = session->step(x[t]);
        all.insert(all.end(), step, step + V);
      }
      return all;
    };
    const std::vector<float> ref = decode(KvCacheFormat::kF32);
    const std::vector<float> bf16 = decode(KvCacheFormat::kBf16);
    // The prefill's logits come from the whole-sequence forward, which reads no cache.
    for (int v = 0; v < V; ++v) ASSERT_EQ(bf16[v], ref[v]) << "prefill logit " << v;
    const double err = relative_logit_error(bf16, ref);
    RecordProperty("kv_bf16_rel_logit_err_" + config.model_type, std::to_string(err));
    EXPECT_GT(err, 0.0) << "the bf16 cache was not used";
    EXPECT_LT(err, 0.01);
    const int saved = omp_get_max_threads();
    for (int threads : {1, 3}) {
      omp_set_num_threads(threads);
      const std::vector<float> again = decode(KvCacheFormat::kBf16);
      for (size_t i = 0; i < bf16.size(); ++i) ASSERT_EQ(again[i], bf16[i]) << threads << " " << i;
    }
    omp_set_num_threads(saved);
  }
  // A hardware variant has no KV cache to store in bf16.
  GPT2Config hardware = small_config();
  hardware.attention = "gaincell-nonlinear";
  GPT2Model g(hardware);
  g.init_random(23);
  EXPECT_THROW(g.start_decoding(KvCacheFormat::kBf16), Error);
  EXPECT_NE(g.start_decoding(KvCacheFormat::kF32), nullptr);
}

// A decode state's error inside decode's parallel region (attend_on_team's default runs attend() on
// the team's first thread) is handed out in `error` after the team has met, for the caller to
// rethrow after the region, instead of terminating the process.
TEST(SpinBarrier, AttendOnTeamHandsAnErrorToTheCaller) {
  struct FailingState : AttentionDecodeState {
    void append(const float*, const float*) override {}
    void attend(const float*, float*) override { throw Error("attend failed on purpose"); }
    int64_t length() const override { return 0; }
    void reset() override {}
  };
  FailingState state;
  for (int threads : {1, 2, 3}) {
    SpinBarrier barrier;
    std::exception_ptr error;
    int passed = 0;
#pragma omp parallel num_threads(threads) reduction(+ : passed)
    {
      state.attend_on_team(nullptr, nullptr, barrier, omp_get_num_threads(), error);
      passed = 1;  // every thread leaves attend_on_team
    }
    EXPECT_EQ(passed, threads);
    ASSERT_TRUE(error) << threads << " threads";
    try {
      std::rethrow_exception(error);
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("on purpose"), std::string::npos);
    }
  }
}

// No thread leaves a round of the barrier before every thread has entered it, whether the waiters
// are still spinning or already asleep (one thread is late by more than kSpin every 16 rounds),
// and with no spinning at all (SpinBarrier::set_spin(0), bench_threads' work-balance runs).
TEST(SpinBarrier, NoThreadLeavesBeforeAllArrive) {
  EXPECT_EQ(SpinBarrier::spin(), SpinBarrier::kSpin);
  for (const auto spin : {SpinBarrier::kSpin, std::chrono::microseconds(0)}) {
    SpinBarrier::set_spin(spin);
    SpinBarrier barrier;
    constexpr int kThreads = 3, kRounds = 400;
    std::atomic<int> entered{0};
    std::atomic<int> early{0};
    std::vector<std::thread> team;
    for (int id = 0; id < kThreads; ++id) {
      team.emplace_back([&, id] {
        for (int round = 0; round < kRounds; ++round) {
          if (id == round % kThreads && round % 16 == 0)
            std::this_thread::sleep_for(SpinBarrier::kSpin * 5);
          entered.fetch_add(1);
          barrier.wait(kThreads);
          if (entered.load() < kThreads * (round + 1)) early.fetch_add(1);
          barrier.wait(kThreads);  // nobody enters the next round while others still check
        }
      });
    }
    for (auto& t : team) t.join();
    EXPECT_EQ(early.load(), 0) << "spin " << spin.count() << " us";
    EXPECT_EQ(entered.load(), kThreads * kRounds);
    barrier.wait(1);  // a team of one never waits
  }
  SpinBarrier::set_spin(SpinBarrier::kSpin);
}
