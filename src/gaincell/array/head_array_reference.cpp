#include "gaincell/array/head_array_reference.h"

#include <algorithm>
#include <cmath>

#include "gaincell/core/error.h"
#include "gaincell/device/gain_cell.h"
#include "gaincell/device/noise.h"
#include "gaincell/device/quantizer.h"

namespace gaincell {

namespace {

// Effective stored value y of one cell of key token j (spec §1.3 leakage, issue item 5 noise).
struct CellReader {
  const HwConfig& hw;
  uint64_t seed;
  GainCell cell;

  double stored_y(float volts, int64_t token, int slot, int d, bool is_key) const {
    double v = volts;
    const QuantizerConfig& range = is_key ? hw.k : hw.v;
    if (hw.noise.write_noise_kv != 0.0) {
      v += hw.noise.write_noise_kv *
           standard_normal(seed, is_key ? NoiseStream::kWriteK : NoiseStream::kWriteV, token, d);
      v = std::clamp(v, range.vmin, range.vmax);
    }
    // HeadArray stores float voltages; round like it does before taking the offset.
    double y = static_cast<float>(v) - static_cast<float>(is_key ? hw.k_offset : hw.v_offset);
    if (hw.noise.gain_variation != 0.0)
      y *= static_cast<float>(
          1.0 +
          hw.noise.gain_variation *
              standard_normal(seed, is_key ? NoiseStream::kGainK : NoiseStream::kGainV, slot, d));
    return y;
  }

  double decay(int64_t age, int slot, int d, bool is_key) const {
    double lambda = hw.leakage.effective_lambda();
    if (hw.noise.leakage_variation != 0.0)
      lambda *= static_cast<float>(std::max(
          0.0, 1.0 + hw.noise.leakage_variation *
                         standard_normal(seed, is_key ? NoiseStream::kLeakK : NoiseStream::kLeakV,
                                         slot, d)));
    const double since = static_cast<double>(hw.leakage.effective_age(age));
    if (is_key) return hw.leakage.qk_decay(lambda, since);
    return std::exp(-lambda * since);
  }
};

double read_noise(const HwConfig& hw, double level, double x, uint64_t seed, NoiseStream s,
                  uint64_t a, uint64_t b) {
  if (level == 0.0) return 0.0;
  return read_noise_std(level, hw.noise.read_noise_relative, x) * standard_normal(seed, s, a, b);
}

}  // namespace

HeadReadReference reference_head_read(const HwConfig& hw, int D, uint64_t seed,
                                      const std::vector<float>& keys,
                                      const std::vector<float>& values, int T, const float* q) {
  require(T >= 1 && static_cast<int64_t>(keys.size()) >= int64_t{T} * D &&
              static_cast<int64_t>(values.size()) >= int64_t{T} * D,
          "reference_head_read: need T >= 1 tokens of keys and values");
  const int M = hw.window;
  const int A = hw.array_size;
  const int tiles = M / A;
  const double sign = hw.polarity == Polarity::kInverted ? -1.0 : 1.0;
  const CellReader reader{hw, seed, GainCell(hw)};
  const int64_t t = T - 1;
  const int64_t first = std::max<int64_t>(0, t - M + 1);  // sliding window (spec §3.1 mask)

  HeadReadReference r;
  r.scores.assign(M, 0.0f);
  r.phi.assign(M, 0.0f);
  r.tile_outputs.assign(static_cast<size_t>(tiles) * D, 0.0f);
  r.out.assign(D, 0.0f);

  std::vector<double> A_tile(static_cast<size_t>(tiles) * D, 0.0);
  std::vector<bool> tile_active(tiles, false);
  for (int64_t j = first; j <= t; ++j) {
    const int slot = static_cast<int>(j % M);
    const int tile = slot / A;
    tile_active[tile] = true;
    double s = 0.0;
    for (int d = 0; d < D; ++d) {
      const double y = reader.stored_y(keys[j * D + d], j, slot, d, true);
      s += q[d] * reader.cell.current(reader.decay(t - j, slot, d, true) * y);
    }
    s *= sign;
    s += read_noise(hw, hw.noise.read_noise_s, s, seed, NoiseStream::kReadS, t, j);
    const double phi = std::clamp(s / hw.s_sat, 0.0, 1.0);
    r.scores[slot] = static_cast<float>(s);
    r.phi[slot] = static_cast<float>(phi);
    for (int d = 0; d < D; ++d) {
      const double y = reader.stored_y(values[j * D + d], j, slot, d, false);
      A_tile[tile * D + d] += phi * reader.cell.current(reader.decay(t - j, slot, d, false) * y);
    }
  }

  const Quantizer out_q(hw.out, hw.out_grid == OutputGrid::kCounter);
  int n_active = 0;
  for (int tile = 0; tile < tiles; ++tile) n_active += tile_active[tile] ? 1 : 0;
  for (int d = 0; d < D; ++d) {
    double sum = 0.0;
    for (int tile = 0; tile < tiles; ++tile) {
      if (!tile_active[tile]) continue;
      double a = A_tile[tile * D + d];
      a += read_noise(hw, hw.noise.read_noise_a, a, seed, NoiseStream::kReadA, t,
                      static_cast<uint64_t>(tile) * D + d);
      const double x = sign * a / hw.a_sat;
      r.tile_outputs[tile * D + d] = static_cast<float>(x);
      sum += hw.out_mode == OutputQuantMode::kPerTile ? out_q(static_cast<float>(x)) : x;
    }
    if (hw.out_mode == OutputQuantMode::kTileMean)
      sum = n_active * static_cast<double>(out_q(static_cast<float>(sum / n_active)));
    r.out[d] = static_cast<float>(sum);
  }
  return r;
}

SubtileReference reference_subtile(const HwConfig& hw, const float* Q, const float* K,
                                   const float* V, int T, int D, const float* phi_in) {
  const GainCell cell(hw);
  const double sign = hw.polarity == Polarity::kInverted ? -1.0 : 1.0;
  SubtileReference r;
  r.S.assign(static_cast<size_t>(T) * T, 0.0);
  r.phi.assign(static_cast<size_t>(T) * T, 0.0);
  r.out.assign(static_cast<size_t>(T) * D, 0.0);
  for (int t = 0; t < T; ++t) {
    for (int j = 0; j <= t; ++j) {
      double s = 0.0;
      for (int d = 0; d < D; ++d) s += Q[t * D + d] * cell.current(K[j * D + d] - hw.k_offset);
      r.S[t * T + j] = sign * s;
      r.phi[t * T + j] = phi_in ? phi_in[t * T + j] : std::clamp(sign * s / hw.s_sat, 0.0, 1.0);
    }
    for (int d = 0; d < D; ++d) {
      double a = 0.0;
      for (int j = 0; j <= t; ++j) a += r.phi[t * T + j] * cell.current(V[j * D + d] - hw.v_offset);
      r.out[t * D + d] = std::clamp(sign * a / hw.a_sat, -1.0, 1.0);
    }
  }
  return r;
}

}  // namespace gaincell
