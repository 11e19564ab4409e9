// Seeded, counter-based Gaussian draws for the non-idealities beyond the paper (issue 3 item 5;
// the paper itself uses no noise, spec §2.6).
//
// Every draw is a pure function of (seed, stream, a, b): no generator state, so the token-by-token
// simulator (HeadArray) and the whole-sequence form can draw the *same* number for the same
// physical event independently of evaluation order, batch size or threading (style-lessons §14).
// Index conventions (shared by both forms, documented in docs/hardware-model.md):
//   kWriteK / kWriteV:     (token index t, dim d)              write noise of the stored voltage
//   kGainK / kGainV:       (slot, dim d)                       cell gain variation, drawn once
//   kLeakK / kLeakV:       (slot, dim d)                       cell leakage variation, drawn once
//   kReadS:                (query token t, key token j)        read noise on S
//   kReadA:                (query token t, tile * D + d)       read noise on a tile's A
#pragma once

#include <cstdint>

namespace gaincell {

enum class NoiseStream : uint64_t {
  kWriteK = 1,
  kWriteV = 2,
  kGainK = 3,
  kGainV = 4,
  kLeakK = 5,
  kLeakV = 6,
  kReadS = 7,
  kReadA = 8,
};

// splitmix64 finaliser: a bijective 64-bit mix with good avalanche.
inline uint64_t mix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

// Seed of one attention head: hw.noise.seed combined with (layer, head), so that heads and layers
// draw independent noise while a run stays reproducible from the one recorded seed.
inline uint64_t head_noise_seed(uint64_t base_seed, int layer, int head) {
  return mix64(mix64(base_seed ^ 0x6761696e63656c6cULL) +
               static_cast<uint64_t>(layer) * 0x10001ULL + static_cast<uint64_t>(head));
}

// Standard normal N(0, 1) for the event (seed, stream, a, b) (Box-Muller on two 53-bit uniforms).
double standard_normal(uint64_t seed, NoiseStream stream, uint64_t a, uint64_t b);

// Cell-to-cell variation factor 1 + sigma N(0, 1) of cell (slot, d) of one array (streams kGainK,
// kGainV, kLeakK, kLeakV), rounded to float as the arrays store it. A leakage rate cannot be
// negative, so leakage factors are clamped at 0 (clamp_at_zero). Drawn identically by HeadArray
// and the whole-sequence kernels.
inline float cell_variation_factor(double sigma, uint64_t seed, NoiseStream stream, int slot, int d,
                                   bool clamp_at_zero) {
  double x = 1.0 + sigma * standard_normal(seed, stream, static_cast<uint64_t>(slot),
                                           static_cast<uint64_t>(d));
  if (clamp_at_zero && x < 0.0) x = 0.0;
  return static_cast<float>(x);
}

// Additive read noise of std `level` (absolute) or `level * |x|` (relative) for the event.
inline double read_noise_std(double level, bool relative, double x) {
  return relative ? level * (x < 0 ? -x : x) : level;
}

}  // namespace gaincell
