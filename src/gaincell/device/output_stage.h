// Second-stage output of every V-array column (spec §1.2 steps 7-8, §3.5, §3.6): a signed
// charge-to-pulse converter and a pulse counter turn the tile's integrated charge A into
// Qz(clip(A / a_sat, -1, 1)) (a_sat = 40), with the code grid k*2/31 and its +-32/31 quirk or the
// hardware counter grid sign + k/15 (spec §2.5, §12 item 3); digital adders then sum the sub-tiles.
// The inverted polarity negates A before the clamp (spec §3.9).
//
// Tile-mean mode (flash kernels, spec §3.7): the sum over the n tiles holding a written token is
// quantised once as n * Qz(clip(sum / n)). Here n counts active tiles (those holding at least one
// written, in-window token), which equals the flash code's ceil(T/64) for T <= window.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "gaincell/device/quantizer.h"
#include "gaincell/hw/hw_config.h"

namespace gaincell {

class OutputStage {
 public:
  explicit OutputStage(const HwConfig& hw)
      : inv_a_sat_(static_cast<float>(1.0 / hw.a_sat)),
        sign_(hw.polarity == Polarity::kInverted ? -1.0f : 1.0f),
        quantizer_(hw.out, hw.out_grid == OutputGrid::kCounter),
        tile_mean_(hw.out_mode == OutputQuantMode::kTileMean) {}

  // Normalised tile charge x = sign * A / a_sat (before clamp and quantisation).
  float normalise(float raw_a) const { return sign_ * raw_a * inv_a_sat_; }
  // Clamp then quantise one normalised value (quantiser disabled: clamp only).
  float convert(float x) const { return quantizer_(x); }
  // Counter count of a converted value: |level| on the active grid (on the code grid when the
  // quantiser is disabled, as a count estimate).
  int64_t counter_level(float converted) const {
    const float inv = quantizer_.counter_grid ? quantizer_.counter_inv_step : quantizer_.inv_step;
    return static_cast<int64_t>(std::fabs(converted) * inv + 0.5f);  // converted is on the grid
  }
  // Digital combination of the tiles' normalised values x[0..n): per-tile convert and sum, or the
  // tile-mean mode n * convert(sum / n). `levels` receives the counter counts.
  float combine(const float* x, int n, int64_t* levels) const {
    if (n == 0) return 0.0f;
    if (tile_mean_) {
      float sum = 0.0f;
      for (int i = 0; i < n; ++i) sum += x[i];
      const float c = convert(sum / static_cast<float>(n));
      *levels += counter_level(c);
      return static_cast<float>(n) * c;
    }
    float sum = 0.0f;
    for (int i = 0; i < n; ++i) {
      const float c = convert(x[i]);
      *levels += counter_level(c);
      sum += c;
    }
    return sum;
  }
  // combine() for `columns` columns at once: x is [n][columns] (tile-major), out[columns]. The
  // same bits as combine() per column (each column's tiles in order), vectorised over columns.
  void combine_columns(const float* x, int n, int columns, float* out, int64_t* levels) const {
    std::fill(out, out + columns, 0.0f);
    if (n == 0) return;
    int64_t count = 0;
    if (tile_mean_) {
      for (int i = 0; i < n; ++i)
        for (int d = 0; d < columns; ++d) out[d] += x[static_cast<size_t>(i) * columns + d];
      for (int d = 0; d < columns; ++d) {
        const float c = convert(out[d] / static_cast<float>(n));
        count += counter_level(c);
        out[d] = static_cast<float>(n) * c;
      }
    } else {
      for (int i = 0; i < n; ++i) {
        for (int d = 0; d < columns; ++d) {
          const float c = convert(x[static_cast<size_t>(i) * columns + d]);
          count += counter_level(c);
          out[d] += c;
        }
      }
    }
    *levels += count;
  }
  bool tile_mean() const { return tile_mean_; }
  const Quantizer& quantizer() const { return quantizer_; }

 private:
  float inv_a_sat_;
  float sign_;
  Quantizer quantizer_;
  bool tile_mean_;
};

}  // namespace gaincell
