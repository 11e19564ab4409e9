// IEEE binary16 ("half", fp16) conversions, written with integer operations so that every
// compiler and CPU gives the same bits (no _Float16, which clang 14 rejects, and no F16C
// requirement; the vector kernels use F16C's conversions, which round the same way). Used for the
// block scales of q8 weights (model/weight_storage.h, ggml's Q8_0 layout).
// float -> fp16 rounds to nearest, ties to even, including into fp16's subnormals; a magnitude at
// or above 65520 (half-way past the largest finite fp16, 65504) becomes infinity; NaN stays NaN,
// quietened, with the upper bits of its payload (what x86's vcvtps2ph does). fp16 -> float is
// exact.
#pragma once

#include <bit>
#include <cstdint>

namespace gaincell {

inline uint16_t float_to_fp16_bits(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  const auto sign = static_cast<uint16_t>((bits >> 16) & 0x8000u);
  const uint32_t abs = bits & 0x7fffffffu;
  if (abs > 0x7f800000u)  // NaN: quiet bit set, payload truncated to 10 bits
    return static_cast<uint16_t>(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: infinity
  if (abs >= 0x38800000u) {
    // Normal in fp16 (>= 2^-14): re-bias the exponent (127 -> 15) and drop 13 mantissa bits,
    // rounding to nearest even; a carry out of the mantissa correctly bumps the exponent.
    const uint32_t rebiased = abs - (uint32_t{112} << 23);
    const uint32_t lsb = (rebiased >> 13) & 1u;
    return static_cast<uint16_t>(sign | ((rebiased + 0xfffu + lsb) >> 13));
  }
  // Subnormal in fp16: the result is |x| / 2^-24 rounded to an integer (nearest, ties to even);
  // 1024 is the smallest normal, which the bits 0x400 already are.
  const uint32_t exponent = abs >> 23;
  if (exponent < 102) return sign;  // below 2^-25, half of the smallest subnormal: zero
  const uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;  // |x| = mantissa 2^(exponent - 150)
  const uint32_t shift = 126 - exponent;                    // 14 .. 24
  const uint32_t lsb = (mantissa >> shift) & 1u;
  return static_cast<uint16_t>(sign |
                               ((mantissa + (uint32_t{1} << (shift - 1)) - 1 + lsb) >> shift));
}

inline float fp16_bits_to_float(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exponent = (h >> 10) & 0x1fu;
  uint32_t mantissa = h & 0x3ffu;
  if (exponent == 0x1f)  // infinity or NaN (payload kept)
    return std::bit_cast<float>(sign | 0x7f800000u | (mantissa << 13));
  if (exponent != 0)
    return std::bit_cast<float>(sign | ((exponent + 112) << 23) | (mantissa << 13));
  if (mantissa == 0) return std::bit_cast<float>(sign);
  // Subnormal: mantissa 2^-24, normalised so that its leading bit becomes the implicit one.
  const int leading = std::countl_zero(mantissa) - 21;  // shifts that bring the top bit to bit 10
  mantissa = (mantissa << leading) & 0x3ffu;
  return std::bit_cast<float>(sign | (static_cast<uint32_t>(113 - leading) << 23) |
                              (mantissa << 13));
}

// x rounded to the nearest fp16 value, returned as a float.
inline float round_to_fp16(float x) {
  return fp16_bits_to_float(float_to_fp16_bits(x));
}

}  // namespace gaincell
