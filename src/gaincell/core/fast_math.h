// Vectorisable exp, tanh and max for the hot elementwise loops (softmax, cross-entropy, GELU).
// std::exp / std::tanh are opaque library calls that stop GCC from vectorising a loop (without
// -ffast-math); these are plain arithmetic, so `#pragma omp simd` loops compile to AVX-512.
//
// fast_exp: Cody-Waite range reduction x = n ln2 + r, |r| <= ln2/2, degree-6 Taylor/minimax-free
// polynomial for e^r (truncation error < 2e-8 relative), scaled by 2^n through the exponent bits.
// Relative error <= ~2 ulp on [-87, 88]; returns 0 below -87.3 (no denormals), +inf above 88.7.
// fast_tanh: 1 - 2 / (e^{2x} + 1); absolute error < 1e-7 (relative error grows near 0, where
// callers such as GELU multiply by x anyway).
#pragma once

#include <bit>
#include <cstdint>
#include <limits>

namespace gaincell {

inline float fast_exp(float x) {
  constexpr float kLog2e = 1.44269504088896341f;
  constexpr float kLn2Hi = 0.693359375f;  // ln 2 split so that n * kLn2Hi is exact
  constexpr float kLn2Lo = -2.12194440e-4f;
  x = x < -87.3f ? -87.3f : x;
  x = x > 88.7f ? 88.7f : x;
  // Round to nearest (even) by adding and subtracting 1.5 * 2^23: vectorises, unlike roundf.
  constexpr float kRound = 12582912.0f;
  const float n = (x * kLog2e + kRound) - kRound;
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  // e^r for |r| <= 0.347: Horner form of sum r^k / k!, k <= 7.
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  // 2^n via the exponent field; n in [-126, 128] after the clamps above. A NaN input passes the
  // clamps and stays NaN in p; converting it to int would be undefined behaviour (UBSan), so the
  // exponent takes 0 instead and p carries the NaN to the result. n = 128 is 2^127 * 2. Only
  // float selects and one unconditional conversion: a conditional conversion (which may trap,
  // under GCC's default -ftrapping-math) stops the if-conversion, and the loops using this did
  // not vectorise for AVX2 (they did for AVX-512, with masks).
  const float n_finite = n == n ? n : 0.0f;
  const float top = n_finite > 127.0f ? 1.0f : 0.0f;
  const int32_t bits = (static_cast<int32_t>(n_finite - top) + 127) << 23;
  const float scale = std::bit_cast<float>(bits) * (1.0f + top);
  return p * scale;
}

// Largest of x[0..n) (-inf for n = 0; NaN entries are skipped, as with std::max(m, x)). Written
// as independent lanes because GCC 12 compiles `#pragma omp simd reduction(max : m)` over
// std::max into a loop 5-50x slower (a per-lane array combined by a scalar chain each call:
// 2.6 us for 1,024 floats, 130 us for GPT-2's 50,257 logits, against 0.3 and 3-5 us here).
inline float max_value(const float* x, int64_t n) {
  constexpr int kLanes = 64;  // four AVX-512 (eight AVX2) registers of independent maxima
  float lane[kLanes];
  for (int l = 0; l < kLanes; ++l) lane[l] = -std::numeric_limits<float>::infinity();
  int64_t i = 0;
  for (; i + kLanes <= n; i += kLanes)
    for (int l = 0; l < kLanes; ++l) lane[l] = lane[l] < x[i + l] ? x[i + l] : lane[l];
  for (; i + 16 <= n; i += 16)
    for (int l = 0; l < 16; ++l) lane[l] = lane[l] < x[i + l] ? x[i + l] : lane[l];
  for (; i < n; ++i) lane[0] = lane[0] < x[i] ? x[i] : lane[0];
  for (int width = kLanes / 2; width >= 1; width /= 2)
    for (int l = 0; l < width; ++l) lane[l] = lane[l] < lane[l + width] ? lane[l + width] : lane[l];
  return lane[0];
}

inline float fast_tanh(float x) {
  const float e = fast_exp(2.0f * x);
  return 1.0f - 2.0f / (e + 1.0f);
}

}  // namespace gaincell
