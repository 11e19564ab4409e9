#include "gaincell/device/gain_cell.h"

#include <cmath>

namespace gaincell {

GainCell::GainCell(const HwConfig& hw) : model_(hw.cell), surrogate_slope_(hw.linear_amplitude) {
  if (model_ == CellModel::kPolynomial) {
    poly_ = hw.alphas();
  } else if (model_ == CellModel::kLinear) {
    poly_ = {0.0, hw.linear_amplitude, 0.0, 0.0};
  } else {
    // Spec §2.7: range = g(y_max) - g(y_min) over the full stored-voltage swing around the zero
    // point (the paper: g(0.45) - g(-0.45)); a = linear_amplitude / range.
    const double y_max = hw.k.vmax - hw.k_offset, y_min = hw.k.vmin - hw.k_offset;
    ablation_g0_ = g(0.0);
    ablation_gain_ = hw.linear_amplitude / (g(y_max) - g(y_min));
  }
  for (int i = 0; i < 4; ++i) polyf_[i] = static_cast<float>(poly_[i]);
  gainf_ = static_cast<float>(ablation_gain_);
  g0f_ = static_cast<float>(ablation_g0_);
}

double GainCell::g(double y) const {
  switch (model_) {
    case CellModel::kCubic:
      return y * y * y;
    case CellModel::kQuintic:
      return y * y * y * y * y;
    case CellModel::kSigmoid:
      return 1.0 / (1.0 + std::exp(-10.0 * y));
    case CellModel::kExp:
      return std::exp(3.0 * y);
    default:
      return y;
  }
}

double GainCell::current(double y) const {
  if (is_polynomial()) return poly_[0] + y * (poly_[1] + y * (poly_[2] + y * poly_[3]));
  return ablation_gain_ * (g(y) - ablation_g0_);
}

double GainCell::current_slope(double y) const {
  if (is_polynomial()) return poly_[1] + y * (2.0 * poly_[2] + y * 3.0 * poly_[3]);
  switch (model_) {
    case CellModel::kCubic:
      return ablation_gain_ * 3.0 * y * y;
    case CellModel::kQuintic:
      return ablation_gain_ * 5.0 * y * y * y * y;
    case CellModel::kSigmoid: {
      const double s = g(y);
      return ablation_gain_ * 10.0 * s * (1.0 - s);
    }
    case CellModel::kExp:
      return ablation_gain_ * 3.0 * g(y);
    default:
      return ablation_gain_;
  }
}

}  // namespace gaincell
