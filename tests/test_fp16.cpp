// IEEE binary16 conversions (core/fp16.h), used for the q8 weights' block scales: fp16 -> float is
// exact for all 65536 bit patterns (checked against the value derived from the fields), float ->
// fp16 rounds to nearest even at every boundary between two fp16 values, including the subnormals
// and the overflow to infinity, and, where the build has F16C, both directions equal the
// instructions bit for bit on random floats and the edge cases.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#ifdef __F16C__
#include <immintrin.h>
#endif

#include "gaincell/core/fp16.h"

using namespace gaincell;

namespace {

// The value of fp16 bits from the definition: (-1)^s 2^(e - 15) (1 + m / 1024), or 2^-24 m for
// e = 0; infinities and NaNs for e = 31.
double fp16_value(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const double sign = (h & 0x8000) ? -1.0 : 1.0;
  if (e == 31) return m == 0 ? sign * INFINITY : NAN;
  if (e == 0) return sign * std::ldexp(static_cast<double>(m), -24);
  return sign * std::ldexp(1.0 + m / 1024.0, e - 15);
}

bool is_fp16_nan(uint16_t h) {
  return (h & 0x7c00) == 0x7c00 && (h & 0x3ff) != 0;
}

}  // namespace

TEST(Fp16, EveryBitPatternConvertsExactlyAndBack) {
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    const float f = fp16_bits_to_float(h);
    if (is_fp16_nan(h)) {
      EXPECT_TRUE(std::isnan(f)) << std::hex << i;
      EXPECT_TRUE(is_fp16_nan(float_to_fp16_bits(f))) << std::hex << i;
      EXPECT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << i;
      continue;
    }
    ASSERT_EQ(static_cast<double>(f), fp16_value(h)) << std::hex << i;
    ASSERT_EQ(std::signbit(f), (h & 0x8000) != 0) << std::hex << i;  // -0 stays -0
    ASSERT_EQ(float_to_fp16_bits(f), h) << std::hex << i;
  }
}

TEST(Fp16, RoundsToNearestEvenAtEveryBoundary) {
  // Between each pair of neighbouring positive fp16 values (subnormals, the subnormal/normal
  // boundary, every binade, up to the largest finite 65504 and the infinity past it): the midpoint
  // goes to the even one of the two, anything below it to the lower, anything above to the upper.
  // Midpoints of fp16 values are exact floats (fp16 has 11 significant bits, float 24).
  for (uint16_t h = 0; h < 0x7c00; ++h) {
    const auto up = static_cast<uint16_t>(h + 1);
    const float lo = fp16_bits_to_float(h), hi = fp16_bits_to_float(up);
    const float mid = h == 0x7bff ? 65520.0f : 0.5f * (lo + hi);  // 0x7c00 is infinity
    ASSERT_EQ(static_cast<double>(mid),
              (fp16_value(h) + (h == 0x7bff ? 65536.0 : fp16_value(up))) / 2);
    const uint16_t even = (h & 1) == 0 ? h : up;
    for (float sign : {1.0f, -1.0f}) {
      const uint16_t s = sign < 0 ? 0x8000 : 0;
      ASSERT_EQ(float_to_fp16_bits(sign * mid), even | s) << std::hex << h;
      ASSERT_EQ(float_to_fp16_bits(sign * std::nextafter(mid, 0.0f)), h | s) << std::hex << h;
      ASSERT_EQ(float_to_fp16_bits(sign * std::nextafter(mid, INFINITY)), up | s) << std::hex << h;
    }
  }
  // Hand-derived cases.
  EXPECT_EQ(float_to_fp16_bits(1.0f), 0x3c00);
  EXPECT_EQ(float_to_fp16_bits(-2.0f), 0xc000);
  EXPECT_EQ(float_to_fp16_bits(0.1f), 0x2e66);                 // 0.0999755859375
  EXPECT_EQ(float_to_fp16_bits(1.0f + 0x1p-11f), 0x3c00);      // tie, to even (down)
  EXPECT_EQ(float_to_fp16_bits(1.0f + 3 * 0x1p-11f), 0x3c02);  // tie, to even (up)
  EXPECT_EQ(float_to_fp16_bits(65504.0f), 0x7bff);             // largest finite
  EXPECT_EQ(float_to_fp16_bits(65519.996f), 0x7bff);
  EXPECT_EQ(float_to_fp16_bits(65520.0f), 0x7c00);  // overflow: tie rounds to even = infinity
  EXPECT_EQ(float_to_fp16_bits(1e10f), 0x7c00);
  EXPECT_EQ(float_to_fp16_bits(-std::numeric_limits<float>::infinity()), 0xfc00);
  EXPECT_EQ(float_to_fp16_bits(std::numeric_limits<float>::max()), 0x7c00);
  EXPECT_EQ(float_to_fp16_bits(0x1p-14f), 0x0400);  // smallest normal
  EXPECT_EQ(float_to_fp16_bits(0x1p-24f), 0x0001);  // smallest subnormal
  EXPECT_EQ(float_to_fp16_bits(0x1p-25f), 0x0000);  // half of it: tie to even (zero)
  EXPECT_EQ(float_to_fp16_bits(0x1.000002p-25f), 0x0001);
  EXPECT_EQ(float_to_fp16_bits(3 * 0x1p-25f), 0x0002);  // 1.5 steps: tie to even (2)
  EXPECT_EQ(float_to_fp16_bits(-0x1p-26f), 0x8000);     // underflow keeps the sign
  EXPECT_EQ(float_to_fp16_bits(std::numeric_limits<float>::denorm_min()), 0x0000);
  EXPECT_EQ(float_to_fp16_bits(0x1.ff8p-15f), 0x03ff);  // largest subnormal, 1023 2^-24
  EXPECT_EQ(float_to_fp16_bits(0x1.ffcp-15f), 0x0400);  // 1023.5 2^-24: tie, to even (normal)
  EXPECT_EQ(float_to_fp16_bits(-0.0f), 0x8000);
  // NaN stays a quiet NaN with its sign and the upper bits of its payload.
  EXPECT_EQ(float_to_fp16_bits(std::numeric_limits<float>::quiet_NaN()), 0x7e00);
  EXPECT_EQ(float_to_fp16_bits(std::bit_cast<float>(0xff800001u)), 0xfe00);  // signalling
  EXPECT_EQ(float_to_fp16_bits(std::bit_cast<float>(0x7fa02000u)), 0x7f01);
}

#ifdef __F16C__
namespace {

uint16_t f16c_bits(float x) {
  return static_cast<uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}

}  // namespace

TEST(Fp16, MatchesF16cInstructions) {
  std::vector<float> values;
  std::mt19937 rng(1);
  for (int i = 0; i < 1 << 20; ++i)
    values.push_back(std::bit_cast<float>(static_cast<uint32_t>(rng())));
  // Floats near fp16's range, where most bit patterns of a uniform draw do not fall.
  std::uniform_real_distribution<float> exponent(-27.0f, 17.0f);
  for (int i = 0; i < 1 << 18; ++i)
    values.push_back(std::exp2(exponent(rng)) * (rng() & 1 ? 1 : -1));
  // Ties and their neighbours at every fp16 boundary (as above) and the special values.
  for (uint16_t h = 0; h < 0x7c00; ++h) {
    const float mid =
        h == 0x7bff
            ? 65520.0f
            : 0.5f * (fp16_bits_to_float(h) + fp16_bits_to_float(static_cast<uint16_t>(h + 1)));
    for (float v : {mid, std::nextafter(mid, 0.0f), std::nextafter(mid, INFINITY)})
      values.insert(values.end(), {v, -v});
  }
  values.insert(values.end(),
                {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 65504.0f, 65520.0f,
                 std::numeric_limits<float>::max(), std::numeric_limits<float>::denorm_min()});
  size_t differing = 0;
  for (float v : values) differing += float_to_fp16_bits(v) != f16c_bits(v);
  EXPECT_EQ(differing, 0u) << "of " << values.size();
  // vcvtps2ph on 8 lanes rounds the same way.
  for (size_t i = 0; i + 8 <= values.size(); i += 8 * 97) {
    alignas(16) uint16_t lanes[8];
    _mm_store_si128(reinterpret_cast<__m128i*>(lanes),
                    _mm256_cvtps_ph(_mm256_loadu_ps(values.data() + i), _MM_FROUND_TO_NEAREST_INT));
    for (int j = 0; j < 8; ++j) ASSERT_EQ(lanes[j], float_to_fp16_bits(values[i + j]));
  }
  // fp16 -> float: every bit pattern, bit for bit (NaN payloads included).
  for (uint32_t i = 0; i < 65536; ++i) {
    const auto h = static_cast<uint16_t>(i);
    if (is_fp16_nan(h) && (h & 0x200) == 0)
      continue;  // a signalling NaN: the instruction quietens it
    ASSERT_EQ(std::bit_cast<uint32_t>(fp16_bits_to_float(h)), std::bit_cast<uint32_t>(_cvtsh_ss(h)))
        << std::hex << i;
  }
}
#else
TEST(Fp16, MatchesF16cInstructions) {
  GTEST_SKIP() << "build without F16C (portable build)";
}
#endif
