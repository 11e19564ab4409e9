// Plain loop-level oracles of the array layer (style-lessons §1): no factorisation, no slot
// bookkeeping, double precision, written straight from the spec's equations (§1.2, §2.3, §3.6).
// The fast HeadArray is tested against these.
#pragma once

#include <cstdint>
#include <vector>

#include "gaincell/hw/hw_config.h"

namespace gaincell {

// What one read of a head produces, in HeadArray's slot order (slot = token mod window).
struct HeadReadReference {
  std::vector<float> scores;        // [window], polarity and read noise applied; 0 when masked
  std::vector<float> phi;           // [window]
  std::vector<float> tile_outputs;  // [num_tiles][head_dim], sign * A / a_sat before the clamp
  std::vector<float> out;           // [head_dim], head output before the output scaler
};

// The read at query token t = T - 1 after writing keys[T][D], values[T][D] (stored voltages,
// row-major) token by token; `seed` and hw.noise as for HeadArray (the same noise events).
HeadReadReference reference_head_read(const HwConfig& hw, int head_dim, uint64_t seed,
                                      const std::vector<float>& keys,
                                      const std::vector<float>& values, int T, const float* q);

// One sub-tile evaluated for a whole causal block of T <= array_size tokens, as the authors' test
// vectors (spec §3.9): S[t][j] = sign * sum_d Q_td f(K_jd - k_off) for j <= t (else 0),
// phi = clip(S / s_sat, 0, 1), out[t][d] = clip(sign * sum_j phi_tj f(V_jd - v_off) / a_sat, -1,
// 1). No decay, no quantisation. All arrays row-major [T][D] / [T][T].
struct SubtileReference {
  std::vector<double> S, phi, out;
};
SubtileReference reference_subtile(const HwConfig& hw, const float* Q, const float* K,
                                   const float* V, int T, int D, const float* phi_in = nullptr);

}  // namespace gaincell
