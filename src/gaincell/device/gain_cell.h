// The gain-cell multiply (spec §2.3, §2.4, §2.7): a read pulse of width x (in units of Tmax) on a
// cell storing V gives a bit-line charge x * f(y), y = V - offset (offset = VDD/2 = 0.45 V), in
// units of 1 uA * Tmax (15 fC). One place for every cell model of the simulator.
//
//   polynomial (eq. 4):  f(y) = sum_{i=0..3} alpha_i y^i,  alpha_i = sum_j C_ij Vin^j
//   linear:              f(y) = A y,  A = 19.3
//   ablations (§2.7):    f(y) = a (g(y) - g(0)),  a = 19.3 / (g(0.45) - g(-0.45)),
//                        g in {y^3, y^5, sigmoid(10 y), exp(3 y)}
//
// Leakage (spec §1.3): the stored voltage relaxes towards the offset, y(age) = y0 exp(-lambda age),
// so a leaky cell reads f(decay * y). For the polynomial this is exactly the code's
// sum_i alpha_i decay^i y^i.
//
// Training uses the linear surrogate gradient for every nonlinear model (spec §4):
// d(x f(y))/dx ~ A y decay and d(x f(y))/dy ~ A x decay, A = linear_amplitude; exact for linear.
#pragma once

#include <array>
#include <cmath>

#include "gaincell/hw/hw_config.h"

namespace gaincell {

class GainCell {
 public:
  explicit GainCell(const HwConfig& hw);

  CellModel model() const { return model_; }
  // f(y) in uA; y = stored voltage minus offset (already multiplied by the leakage decay).
  double current(double y) const;
  // Single-precision f(y) for hot loops (same model as current(); float math).
  float current_f(float y) const {
    switch (model_) {
      case CellModel::kPolynomial:
      case CellModel::kLinear:
        return polyf_[0] + y * (polyf_[1] + y * (polyf_[2] + y * polyf_[3]));
      case CellModel::kCubic:
        return gainf_ * y * y * y;
      case CellModel::kQuintic:
        return gainf_ * y * y * y * y * y;
      case CellModel::kSigmoid:
        return gainf_ * (1.0f / (1.0f + std::exp(-10.0f * y)) - g0f_);
      case CellModel::kExp:
        return gainf_ * (std::exp(3.0f * y) - g0f_);
    }
    return 0.0f;
  }
  // Exact df/dy (used only by tests and fits; training uses the surrogate slope).
  double current_slope(double y) const;
  // Surrogate gradient slope A (spec §2.4: 19.3).
  double surrogate_slope() const { return surrogate_slope_; }
  // Polynomial coefficients of f in powers of y (alpha_0..alpha_3; for linear {0, A, 0, 0}).
  // Valid only when is_polynomial().
  bool is_polynomial() const {
    return model_ == CellModel::kPolynomial || model_ == CellModel::kLinear;
  }
  const std::array<double, 4>& poly() const { return poly_; }
  // f(0): the input-dependent offset term (alpha_0 for the polynomial model, 0 otherwise), which
  // masked keys must not contribute (spec §12 item 17).
  double offset_current() const { return current(0.0); }

 private:
  CellModel model_;
  std::array<double, 4> poly_{};
  double surrogate_slope_;
  double ablation_gain_ = 1.0;  // a = 19.3 / range
  double ablation_g0_ = 0.0;    // g(0)
  double g(double y) const;     // ablation base function
  float polyf_[4] = {};         // float copies for current_f
  float gainf_ = 1.0f;
  float g0f_ = 0.0f;
};

}  // namespace gaincell
