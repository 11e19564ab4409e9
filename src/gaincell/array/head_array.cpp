#include "gaincell/array/head_array.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "gaincell/core/error.h"
#include "gaincell/core/npy.h"
#include "gaincell/device/leakage.h"
#include "gaincell/device/noise.h"

namespace gaincell {

// ---------------------------------------------------------------------------------------------
// ArrayEvents

nlohmann::json ArrayEvents::to_json() const {
  nlohmann::json j = {{"tokens", tokens}, {"reads", reads}};
  for_each_field([&](const char* name, auto member) { j[name] = this->*member; });
  return j;
}

ArrayEvents& ArrayEvents::operator+=(const ArrayEvents& o) {
  HardwareEvents::operator+=(o);
  tokens += o.tokens;
  reads += o.reads;
  return *this;
}

// ---------------------------------------------------------------------------------------------
// HeadArray

namespace {

// Per-cell factors 1 + sigma * N(0,1), drawn once per array (cell-to-cell variation). Indexed
// [slot][dim] for both arrays so that the whole-sequence form can reproduce them (key j sits in
// slot j mod window).
std::vector<float> draw_cell_factors(double sigma, uint64_t seed, NoiseStream stream, int window,
                                     int head_dim, bool clamp_at_zero) {
  std::vector<float> f;
  if (sigma == 0.0) return f;
  f.resize(static_cast<size_t>(window) * head_dim);
  for (int slot = 0; slot < window; ++slot)
    for (int d = 0; d < head_dim; ++d)
      f[static_cast<size_t>(slot) * head_dim + d] =
          cell_variation_factor(sigma, seed, stream, slot, d, clamp_at_zero);
  return f;
}

void require_finite(const float* x, int n, const char* what) {
  for (int i = 0; i < n; ++i) {
    if (!std::isfinite(x[i]))
      throw Error(std::string("HeadArray: ") + what + "[" + std::to_string(i) +
                  "] is not finite (" + std::to_string(x[i]) + ")");
  }
}

}  // namespace

HeadArray::HeadArray(const HwConfig& hw, int head_dim, uint64_t seed)
    : hw_(hw),
      head_dim_(head_dim),
      window_(hw.window),
      array_size_(hw.array_size),
      num_tiles_(hw.window / hw.array_size),
      seed_(seed),
      cell_(hw),
      c2p_(hw),
      output_stage_(hw) {
  hw_.validate();
  require(head_dim >= 1 && head_dim <= 65536,
          "HeadArray: head_dim must be in [1, 65536], got " + std::to_string(head_dim));
  // x^3 is a polynomial in y too (a y^3, g(0) = 0), so it shares the factorised path.
  factorised_ = (cell_.is_polynomial() || cell_.model() == CellModel::kCubic) &&
                hw.noise.leakage_variation == 0.0;
  for (int i = 0; i < 4; ++i) alpha_[i] = static_cast<float>(cell_.poly()[i]);
  if (cell_.model() == CellModel::kCubic) {
    alpha_[0] = alpha_[1] = alpha_[2] = 0.0f;
    alpha_[3] = static_cast<float>(cell_.current(1.0));  // a * 1^3
  }
  cubic_ = alpha_[2] != 0.0f || alpha_[3] != 0.0f;
  lambda_ = hw.leakage.effective_lambda();
  decay_by_age_ = Leakage(hw.leakage).decay_table(window_);
  key_decay_by_age_ = decay_by_age_;
  if (hw.leakage.bf16_qk_decay) {
    for (int age = 0; age < window_; ++age)
      key_decay_by_age_[age] = static_cast<float>(
          hw.leakage.qk_decay(lambda_, static_cast<double>(hw.leakage.effective_age(age))));
  }

  const size_t cells = static_cast<size_t>(window_) * head_dim_;
  k_y_.assign(cells, 0.0f);
  v_y_.assign(cells, 0.0f);
  write_time_.assign(window_, -1);
  k_gain_ = draw_cell_factors(hw.noise.gain_variation, seed, NoiseStream::kGainK, window_,
                              head_dim_, false);
  v_gain_ = draw_cell_factors(hw.noise.gain_variation, seed, NoiseStream::kGainV, window_,
                              head_dim_, false);
  k_leak_ = draw_cell_factors(hw.noise.leakage_variation, seed, NoiseStream::kLeakK, window_,
                              head_dim_, true);
  v_leak_ = draw_cell_factors(hw.noise.leakage_variation, seed, NoiseStream::kLeakV, window_,
                              head_dim_, true);
  scores_.assign(window_, 0.0f);
  phi_.assign(window_, 0.0f);
  tile_out_.assign(static_cast<size_t>(num_tiles_) * head_dim_, 0.0f);
  acc1_.assign(window_, 0.0f);
  acc2_.assign(window_, 0.0f);
  acc3_.assign(window_, 0.0f);
  pulsed_values_.assign(head_dim_, 0.0f);
  pulsed_rows_.assign(head_dim_, 0);
  weights_.assign(3 * static_cast<size_t>(array_size_), 0.0f);
  weight_slots_.assign(array_size_, 0);
  column_.assign(num_tiles_, 0.0f);
}

void HeadArray::reset() {
  tokens_written_ = 0;
  std::fill(write_time_.begin(), write_time_.end(), -1);
  events_ = {};
  last_step_ = {};
  std::fill(scores_.begin(), scores_.end(), 0.0f);
  std::fill(phi_.begin(), phi_.end(), 0.0f);
  std::fill(tile_out_.begin(), tile_out_.end(), 0.0f);
}

int HeadArray::valid_slots() const {
  // Slots are filled in order 0, 1, ...; after `window` tokens every slot holds an in-window token.
  return static_cast<int>(std::min<int64_t>(tokens_written_, window_));
}

float HeadArray::cell_current(float y) const {
  return cell_.current_f(y);
}

void HeadArray::write(const float* k_volts, const float* v_volts) {
  require_finite(k_volts, head_dim_, "k_volts");
  require_finite(v_volts, head_dim_, "v_volts");
  const int64_t t = tokens_written_;
  const int slot = static_cast<int>(t % window_);
  const double write_sigma = hw_.noise.write_noise_kv;
  const float k_off = static_cast<float>(hw_.k_offset);
  const float v_off = static_cast<float>(hw_.v_offset);
  for (int d = 0; d < head_dim_; ++d) {
    float k = k_volts[d];
    float v = v_volts[d];
    if (write_sigma != 0.0) {
      // The DAC's written voltage is noisy but stays inside the storage range.
      k = static_cast<float>(
          std::clamp(k + write_sigma * standard_normal(seed_, NoiseStream::kWriteK, t, d),
                     hw_.k.vmin, hw_.k.vmax));
      v = static_cast<float>(
          std::clamp(v + write_sigma * standard_normal(seed_, NoiseStream::kWriteV, t, d),
                     hw_.v.vmin, hw_.v.vmax));
    }
    float ky = k - k_off;
    float vy = v - v_off;
    const size_t cell = static_cast<size_t>(slot) * head_dim_ + d;
    if (!k_gain_.empty()) ky *= k_gain_[cell];
    if (!v_gain_.empty()) vy *= v_gain_[cell];
    k_y_[static_cast<size_t>(d) * window_ + slot] = ky;
    v_y_[cell] = vy;
  }
  write_time_[slot] = t;
  ++tokens_written_;

  last_step_ = {};
  last_step_.tokens = 1;
  last_step_.cell_writes = 2 * static_cast<int64_t>(head_dim_);
  events_ += last_step_;
}

// S_j = alpha_0 sum_d Q_d + sum_{i>=1} alpha_i decay_j^i sum_d Q_d y_jd^i (spec §2.3), vectorised
// over the slots of each K-array row; rows with a zero pulse are skipped (no pulse is applied).
namespace {

constexpr int kSlotBlock = 32;  // slots whose accumulators stay in vector registers

// acc_i[j] = sum over the pulsed rows r of q_r y_rj^i, i = 1..3 (i = 1 only when !kCubic).
// Blocks of 32 slots keep the three accumulators in registers while the rows stream past.
template <bool kCubic>
void accumulate_score_powers(const float* q_values, const int* q_rows, int n_rows, const float* k_y,
                             int window, int n_valid, float* acc1, float* acc2, float* acc3) {
  int j0 = 0;
  for (; j0 + kSlotBlock <= n_valid; j0 += kSlotBlock) {
    float a1[kSlotBlock] = {}, a2[kSlotBlock] = {}, a3[kSlotBlock] = {};
    for (int r = 0; r < n_rows; ++r) {
      const float qd = q_values[r];
      const float* __restrict row = k_y + static_cast<size_t>(q_rows[r]) * window + j0;
#pragma omp simd
      for (int j = 0; j < kSlotBlock; ++j) {
        const float y = row[j];
        a1[j] += qd * y;
        if (kCubic) {
          const float qy2 = qd * y * y;
          a2[j] += qy2;
          a3[j] += qy2 * y;
        }
      }
    }
    for (int j = 0; j < kSlotBlock; ++j) {
      acc1[j0 + j] = a1[j];
      if (kCubic) {
        acc2[j0 + j] = a2[j];
        acc3[j0 + j] = a3[j];
      }
    }
  }
  for (int j = j0; j < n_valid; ++j) {  // tail
    float a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    for (int r = 0; r < n_rows; ++r) {
      const float qd = q_values[r];
      const float y = k_y[static_cast<size_t>(q_rows[r]) * window + j];
      a1 += qd * y;
      if (kCubic) {
        const float qy2 = qd * y * y;
        a2 += qy2;
        a3 += qy2 * y;
      }
    }
    acc1[j] = a1;
    if (kCubic) {
      acc2[j] = a2;
      acc3[j] = a3;
    }
  }
}

}  // namespace

void HeadArray::compute_scores_factorised(const float* q, int n_valid, int64_t t) {
  // Only rows that receive a pulse contribute (and only they are driven in the hardware).
  float sum_q = 0.0f;
  int n_rows = 0;
  for (int d = 0; d < head_dim_; ++d) {
    sum_q += q[d];
    if (q[d] != 0.0f) {
      pulsed_values_[n_rows] = q[d];
      pulsed_rows_[n_rows++] = d;
    }
  }
  if (cubic_) {
    accumulate_score_powers<true>(pulsed_values_.data(), pulsed_rows_.data(), n_rows, k_y_.data(),
                                  window_, n_valid, acc1_.data(), acc2_.data(), acc3_.data());
  } else {
    accumulate_score_powers<false>(pulsed_values_.data(), pulsed_rows_.data(), n_rows, k_y_.data(),
                                   window_, n_valid, acc1_.data(), acc2_.data(), acc3_.data());
  }
  const float offset = alpha_[0] * sum_q;
  for (int j = 0; j < n_valid; ++j) {
    const float dec = key_decay_by_age_[t - write_time_[j]];
    float s = alpha_[1] * acc1_[j];
    if (cubic_)
      s = dec * (alpha_[1] * acc1_[j] + dec * (alpha_[2] * acc2_[j] + dec * alpha_[3] * acc3_[j]));
    else
      s *= dec;
    scores_[j] = offset + s;
  }
}

// Physical per-cell evaluation f(decay_cell * y): ablation cells and per-cell leakage variation.
void HeadArray::compute_scores_per_cell(const float* q, int n_valid, int64_t t) {
  if (!k_leak_.empty()) {
    for (int j = 0; j < n_valid; ++j) {
      const int64_t age = hw_.leakage.effective_age(t - write_time_[j]);
      float s = 0.0f;
      for (int d = 0; d < head_dim_; ++d) {
        if (q[d] == 0.0f) continue;
        const float dec = static_cast<float>(
            hw_.leakage.qk_decay(lambda_ * k_leak_[static_cast<size_t>(j) * head_dim_ + d], age));
        s += q[d] * cell_current(dec * k_y_[static_cast<size_t>(d) * window_ + j]);
      }
      scores_[j] = s;
    }
    return;
  }
  // One decay per column: stream the pulsed rows, contiguous over the slots.
  float* dec = acc1_.data();
  for (int j = 0; j < n_valid; ++j) dec[j] = key_decay_by_age_[t - write_time_[j]];
  std::fill(scores_.begin(), scores_.begin() + n_valid, 0.0f);
  for (int d = 0; d < head_dim_; ++d) {
    const float qd = q[d];
    if (qd == 0.0f) continue;
    const float* row = k_y_.data() + static_cast<size_t>(d) * window_;
    for (int j = 0; j < n_valid; ++j) scores_[j] += qd * cell_current(dec[j] * row[j]);
  }
}

// acc[d] += sum_{j in tile} phi_j f(decay_j y_jd) = sum_j phi_j sum_i alpha_i decay_j^i y_jd^i,
// vectorised over the V-array columns (dims); slots without a phi pulse are skipped.
void HeadArray::accumulate_tile_factorised(int tile, int n_valid, int64_t t, float* acc) const {
  const int begin = tile * array_size_;
  const int end = std::min(begin + array_size_, n_valid);
  // Pulsed slots of the tile and their per-power weights alpha_i phi_j decay_j^i.
  int n = 0;
  float sum_phi = 0.0f;
  float* c1 = weights_.data();
  float* c2 = c1 + array_size_;
  float* c3 = c2 + array_size_;
  int* slots = weight_slots_.data();
  for (int j = begin; j < end; ++j) {
    const float w = phi_[j];
    if (w == 0.0f) continue;
    sum_phi += w;
    const float dec = decay_by_age_[t - write_time_[j]];
    c1[n] = alpha_[1] * w * dec;
    c2[n] = alpha_[2] * w * dec * dec;
    c3[n] = alpha_[3] * w * dec * dec * dec;
    slots[n++] = j;
  }
  const float offset = alpha_[0] * sum_phi;  // alpha_0 only from keys that received a pulse
  // Blocks of 32 output columns stay in registers while the pulsed rows stream past.
  int d0 = 0;
  for (; d0 + kSlotBlock <= head_dim_; d0 += kSlotBlock) {
    float a[kSlotBlock];
    for (int d = 0; d < kSlotBlock; ++d) a[d] = offset;
    for (int r = 0; r < n; ++r) {
      const float* __restrict row = v_y_.data() + static_cast<size_t>(slots[r]) * head_dim_ + d0;
      const float w1 = c1[r], w2 = c2[r], w3 = c3[r];
      if (cubic_) {
#pragma omp simd
        for (int d = 0; d < kSlotBlock; ++d) {
          const float y = row[d];
          a[d] += y * (w1 + y * (w2 + y * w3));
        }
      } else {
#pragma omp simd
        for (int d = 0; d < kSlotBlock; ++d) a[d] += w1 * row[d];
      }
    }
    for (int d = 0; d < kSlotBlock; ++d) acc[d0 + d] = a[d];
  }
  for (int d = d0; d < head_dim_; ++d) {  // tail
    float a = offset;
    for (int r = 0; r < n; ++r) {
      const float y = v_y_[static_cast<size_t>(slots[r]) * head_dim_ + d];
      a += y * (c1[r] + y * (c2[r] + y * c3[r]));
    }
    acc[d] = a;
  }
}

void HeadArray::accumulate_tile_per_cell(int tile, int n_valid, int64_t t, float* acc) const {
  const int begin = tile * array_size_;
  const int end = std::min(begin + array_size_, n_valid);
  for (int j = begin; j < end; ++j) {
    const float w = phi_[j];
    if (w == 0.0f) continue;
    const int64_t age = hw_.leakage.effective_age(t - write_time_[j]);
    const float* row = v_y_.data() + static_cast<size_t>(j) * head_dim_;
    for (int d = 0; d < head_dim_; ++d) {
      const float dec = v_leak_.empty()
                            ? decay_by_age_[age]
                            : static_cast<float>(Leakage(lambda_).decay(
                                  age, v_leak_[static_cast<size_t>(j) * head_dim_ + d]));
      acc[d] += w * cell_current(dec * row[d]);
    }
  }
}

void HeadArray::read(const float* q_pulses, float* out) {
  require(tokens_written_ > 0, "HeadArray::read: no token has been written yet");
  require_finite(q_pulses, head_dim_, "q_pulses");
  const int64_t t = tokens_written_ - 1;  // the query's own token is the newest (age 0)
  const int n_valid = valid_slots();
  const NoiseConfig& noise = hw_.noise;

  // First stage: bit-line charges and charge-to-pulse (HardSigmoid).
  if (factorised_)
    compute_scores_factorised(q_pulses, n_valid, t);
  else
    compute_scores_per_cell(q_pulses, n_valid, t);
  ArrayEvents step;
  step.reads = 1;
  for (int j = 0; j < n_valid; ++j) {
    float s = c2p_.signed_charge(scores_[j]);
    if (noise.read_noise_s != 0.0) {
      s += static_cast<float>(read_noise_std(noise.read_noise_s, noise.read_noise_relative, s) *
                              standard_normal(seed_, NoiseStream::kReadS, t, write_time_[j]));
    }
    scores_[j] = s;
    phi_[j] = c2p_.pulse(s);
    if (phi_[j] > 0.0f) {
      ++step.phi_pulses;
      step.phi_pulse_width_sum_tmax += phi_[j];
    }
  }
  std::fill(scores_.begin() + n_valid, scores_.end(), 0.0f);
  std::fill(phi_.begin() + n_valid, phi_.end(), 0.0f);

  // Second stage per active sub-tile, then the output converters and the digital sum.
  const int active_tiles = (n_valid + array_size_ - 1) / array_size_;
  std::fill(tile_out_.begin(), tile_out_.end(), 0.0f);
  for (int tile = 0; tile < active_tiles; ++tile) {
    float* x = tile_out_.data() + static_cast<size_t>(tile) * head_dim_;
    if (factorised_)
      accumulate_tile_factorised(tile, n_valid, t, x);
    else
      accumulate_tile_per_cell(tile, n_valid, t, x);
    for (int d = 0; d < head_dim_; ++d) {
      float a = x[d];
      if (noise.read_noise_a != 0.0) {
        a += static_cast<float>(read_noise_std(noise.read_noise_a, noise.read_noise_relative, a) *
                                standard_normal(seed_, NoiseStream::kReadA, t,
                                                static_cast<uint64_t>(tile) * head_dim_ + d));
      }
      x[d] = output_stage_.normalise(a);
    }
  }
  for (int d = 0; d < head_dim_; ++d) {
    for (int tile = 0; tile < active_tiles; ++tile)
      column_[tile] = tile_out_[static_cast<size_t>(tile) * head_dim_ + d];
    out[d] = output_stage_.combine(column_.data(), active_tiles, &step.counter_increments);
  }

  // Events of this read (definitions in ArrayEvents).
  for (int d = 0; d < head_dim_; ++d) {
    if (q_pulses[d] != 0.0f) {
      step.q_pulses += active_tiles;
      step.q_pulse_width_sum_tmax += static_cast<double>(q_pulses[d]) * active_tiles;
    }
  }
  step.c2p_conversions = n_valid;
  // A head dimension above the array size spans ceil(D / N) arrays per sub-tile (K arrays stacked
  // along the rows, V arrays side by side along the columns), all read together.
  step.tile_reads =
      static_cast<int64_t>(active_tiles) * ((head_dim_ + array_size_ - 1) / array_size_);
  step.output_conversions = static_cast<int64_t>(active_tiles) * head_dim_;
  step.digital_adds = static_cast<int64_t>(active_tiles - 1) * head_dim_;
  last_step_ += step;
  events_ += step;
}

void HeadArray::dump_npz(const std::filesystem::path& path) const {
  const int64_t M = window_, D = head_dim_;
  std::vector<float> times(write_time_.begin(), write_time_.end());
  write_npz(path, {{"scores", scores_, {M}},
                   {"phi", phi_, {M}},
                   {"tile_outputs", tile_out_, {num_tiles_, D}},
                   {"k_stored", k_y_, {D, M}},
                   {"v_stored", v_y_, {M, D}},
                   {"write_time", times, {M}}});
}

}  // namespace gaincell
