// bfloat16 (the upper 16 bits of an IEEE binary32) conversions, shared by the reduced-precision
// weights (model/weight_storage.h), the bf16 KV cache (attention/softmax_attention.cpp) and the
// leakage-cast reproduction option (hw_config.h).
// float -> bf16 rounds to nearest, ties to even, as PyTorch's .to(torch.bfloat16) and GPU autocast
// do; NaN stays NaN (quiet), infinities stay infinities. bf16 -> float is exact.
#pragma once

#include <bit>
#include <cstdint>

namespace gaincell {

inline uint16_t float_to_bf16_bits(float x) {
  const uint32_t bits = std::bit_cast<uint32_t>(x);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((bits >> 16) | 0x0040u);
  const uint32_t lsb = (bits >> 16) & 1u;  // ties go to the even result
  return static_cast<uint16_t>((bits + 0x7fffu + lsb) >> 16);
}

inline float bf16_bits_to_float(uint16_t b) {
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

// x rounded to the nearest bfloat16 value, returned as a float.
inline float round_to_bf16(float x) {
  return bf16_bits_to_float(float_to_bf16_bits(x));
}

}  // namespace gaincell
