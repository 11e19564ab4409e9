// Quantizers of the gain-cell hardware (spec §2.5): the Q pulse-width generator (4 bit), the K/V
// write DACs (3 bit) and the signed output counter (5 bit).
//
// Exact code semantics of the paper: clamp to [vmin, vmax], then Qz(x) = step * round(x / step)
// with step = (vmax - vmin) / (levels - 1), the grid anchored at 0 (not at vmin), and round half to
// even (torch.round). For the output ([-1, 1], 32 levels) this gives the +-32/31 quirk: a clamped
// +-1 maps to 15.5 steps, which rounds to 16. Backward is straight-through (identity) inside the
// clamp range and 0 outside (torch.clamp's gradient), spec §4.
#pragma once

#include <cmath>

#include "gaincell/hw/hw_config.h"

namespace gaincell {

// Round half to even, as torch.round (nearbyint under the default FE_TONEAREST mode).
inline float round_half_even(float x) {
  return std::nearbyint(x);
}

// Precomputed form of one QuantizerConfig for hot loops.
struct Quantizer {
  bool enabled = false;
  float vmin = 0.0f;
  float vmax = 1.0f;
  float step = 1.0f;
  float inv_step = 1.0f;
  bool counter_grid = false;  // sign + 16-level magnitude k/15 (spec §12 item 3, "hardware" mode)
  float counter_step = 1.0f;
  float counter_inv_step = 1.0f;

  Quantizer() = default;
  explicit Quantizer(const QuantizerConfig& c, bool counter = false)
      : enabled(c.enabled),
        vmin(static_cast<float>(c.vmin)),
        vmax(static_cast<float>(c.vmax)),
        step(static_cast<float>(c.step())),
        inv_step(static_cast<float>(1.0 / c.step())),
        counter_grid(counter),
        counter_step(static_cast<float>(c.vmax / (c.levels / 2 - 1))),
        counter_inv_step(static_cast<float>((c.levels / 2 - 1) / c.vmax)) {}

  float clamp(float x) const { return x < vmin ? vmin : (x > vmax ? vmax : x); }

  // Clamp, then quantise when enabled.
  float operator()(float x) const {
    const float c = clamp(x);
    if (!enabled) return c;
    if (counter_grid) {
      // Hardware counter: sign + (levels/2)-level magnitude, i.e. |x| in steps of vmax/(levels/2-1)
      // (32 levels -> sign + 16 levels, k/15).
      return std::copysign(round_half_even(std::fabs(c) * counter_inv_step) * counter_step, c);
    }
    return step * round_half_even(c / step);
  }

  // d(output)/d(input) of the clamp with a straight-through quantiser: 1 inside [vmin, vmax]
  // (closed interval, as torch.clamp), 0 outside.
  float grad(float x) const { return (x >= vmin && x <= vmax) ? 1.0f : 0.0f; }
};

}  // namespace gaincell
