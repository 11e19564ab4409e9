#include "gaincell/device/noise.h"

#include <cmath>

namespace gaincell {

double standard_normal(uint64_t seed, NoiseStream stream, uint64_t a, uint64_t b) {
  const uint64_t key = mix64(mix64(mix64(seed) ^ static_cast<uint64_t>(stream)) ^ a) ^ b;
  const uint64_t r1 = mix64(key);
  const uint64_t r2 = mix64(key ^ 0xd1b54a32d192ed03ULL);
  // u1 in (0, 1] so that log(u1) is finite; u2 in [0, 1).
  const double u1 = (static_cast<double>(r1 >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = static_cast<double>(r2 >> 11) * 0x1.0p-53;
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
}

}  // namespace gaincell
