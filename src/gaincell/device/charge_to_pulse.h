// First-stage charge-to-pulse converter of every K-array column (spec §1.2 step 5, §10): it
// integrates the bit-line charge S (units of 1 uA * Tmax) and emits a pulse of width
// phi = clip(S / S_sat, 0, 1) in units of Tmax, i.e. the HardSigmoid (spec §2.4, S_sat = 80).
// Negative net charge gives no pulse. The inverted polarity (spec §3.9, §12 item 15) negates S
// before the conversion. phi is not quantised in any variant (spec §2.5).
#pragma once

#include "gaincell/hw/hw_config.h"

namespace gaincell {

class ChargeToPulse {
 public:
  explicit ChargeToPulse(const HwConfig& hw)
      : inv_s_sat_(static_cast<float>(1.0 / hw.s_sat)),
        sign_(hw.polarity == Polarity::kInverted ? -1.0f : 1.0f) {}

  // Column charge as the circuit sees it (polarity applied to the raw polynomial sum).
  float signed_charge(float raw_s) const { return sign_ * raw_s; }
  // Pulse width in units of Tmax for a (polarity-applied) charge s.
  float pulse(float s) const {
    const float x = s * inv_s_sat_;
    return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : x);
  }
  float sign() const { return sign_; }

 private:
  float inv_s_sat_;
  float sign_;
};

}  // namespace gaincell
