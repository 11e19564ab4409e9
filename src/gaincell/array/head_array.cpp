#include "gaincell/array/head_array.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "gaincell/core/error.h"
#include "gaincell/core/npy.h"
#include "gaincell/device/leakage.h"
#include "gaincell/device/noise.h"
#include "gaincell/device/quantizer.h"

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

// The DAC grid: the quantiser writes step * i for i = round(clamp(x) / step), so i runs from
// round(vmin / step) to round(vmax / step) (spec §2.5), each level's y computed as write() does.
bool HeadArray::LevelTable::build(const QuantizerConfig& c, float offset) {
  const Quantizer q(c);
  if (!q.enabled) return false;
  const float lo = round_half_even(q.vmin / q.step), hi = round_half_even(q.vmax / q.step);
  if (!(hi - lo >= 0.0f && hi - lo < static_cast<float>(y.size()))) return false;
  step = q.step;
  first = static_cast<int>(lo);
  count = static_cast<int>(hi - lo) + 1;
  y.fill(0.0f);
  for (int code = 0; code < count; ++code) {
    // The written voltage is rounded to float before the offset is taken off, as in write(): the
    // volatile keeps the compiler from contracting step * i - offset into one FMA.
    volatile float volts = step * static_cast<float>(first + code);
    y[code] = volts - offset;
  }
  return true;
}

int HeadArray::LevelTable::code_of(float volts, float y_volts) const {
  const float i = round_half_even(volts / step);
  if (!(i >= static_cast<float>(first) && i < static_cast<float>(first + count))) return -1;
  const int code = static_cast<int>(i) - first;
  // Bit-exact: the kernels must see the very float fp32 storage would hold.
  return std::bit_cast<uint32_t>(y[code]) == std::bit_cast<uint32_t>(y_volts) ? code : -1;
}

namespace {

// The lookup the kernels use: the requested one where the build and the level count allow it.
HeadArrayStorage::Lookup resolve_lookup(HeadArrayStorage::Lookup want, int levels) {
  using L = HeadArrayStorage::Lookup;
#if defined(__AVX512F__)
  constexpr bool kHaveAvx512 = true;
#else
  constexpr bool kHaveAvx512 = false;
#endif
#if defined(__AVX2__)
  constexpr bool kHaveAvx2 = true;
#else
  constexpr bool kHaveAvx2 = false;
#endif
  const bool avx512 = kHaveAvx512 && levels <= 16, avx2 = kHaveAvx2 && levels <= 8;
  if (want == L::kAuto) want = avx512 ? L::kAvx512 : L::kAvx2;
  if (want == L::kAvx512 && avx512) return L::kAvx512;
  if (want == L::kAvx2 && avx2) return L::kAvx2;
  return L::kPortable;
}

}  // namespace

HeadArray::HeadArray(const HwConfig& hw, int head_dim, uint64_t seed, HeadArrayStorage storage)
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
  // Level codes need every stored y to be a DAC level: quantising DACs, no write noise, no gain
  // variation; the per-cell path (ablation cells, leakage variation) keeps fp32.
  coded_ = storage.allow_level_codes && factorised_ && hw.noise.write_noise_kv == 0.0 &&
           hw.noise.gain_variation == 0.0 &&
           k_levels_.build(hw.k, static_cast<float>(hw.k_offset)) &&
           v_levels_.build(hw.v, static_cast<float>(hw.v_offset));
  if (coded_) {
    k_code_.assign(cells, 0);
    v_code_.assign(cells, 0);
    code_scratch_.assign(2 * static_cast<size_t>(head_dim_), 0);
    lookup_ = resolve_lookup(storage.lookup, std::max(k_levels_.count, v_levels_.count));
  } else {
    k_y_.assign(cells, 0.0f);
    v_y_.assign(cells, 0.0f);
  }
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
  if (coded_ && !store_codes(slot, k_volts, v_volts)) convert_to_float_storage();
  if (!coded_) store_floats(slot, t, k_volts, v_volts);
  write_time_[slot] = t;
  ++tokens_written_;

  last_step_ = {};
  last_step_.tokens = 1;
  last_step_.cell_writes = 2 * static_cast<int64_t>(head_dim_);
  events_ += last_step_;
}

// Level-code storage: the whole token is coded first, so that a voltage off the DAC grid leaves
// the stored state untouched for convert_to_float_storage().
bool HeadArray::store_codes(int slot, const float* k_volts, const float* v_volts) {
  const float k_off = static_cast<float>(hw_.k_offset);
  const float v_off = static_cast<float>(hw_.v_offset);
  uint8_t* kc = code_scratch_.data();
  uint8_t* vc = kc + head_dim_;
  for (int d = 0; d < head_dim_; ++d) {
    const int k = k_levels_.code_of(k_volts[d], k_volts[d] - k_off);
    const int v = v_levels_.code_of(v_volts[d], v_volts[d] - v_off);
    if (k < 0 || v < 0) return false;
    kc[d] = static_cast<uint8_t>(k);
    vc[d] = static_cast<uint8_t>(v);
  }
  for (int d = 0; d < head_dim_; ++d) k_code_[static_cast<size_t>(d) * window_ + slot] = kc[d];
  std::copy(vc, vc + head_dim_, v_code_.begin() + static_cast<ptrdiff_t>(slot) * head_dim_);
  return true;
}

void HeadArray::store_floats(int slot, int64_t t, const float* k_volts, const float* v_volts) {
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
}

std::vector<float> HeadArray::stored_array(bool keys) const {
  std::vector<float> y(static_cast<size_t>(window_) * head_dim_, 0.0f);
  for (int slot = 0; slot < window_; ++slot) {
    if (write_time_[slot] < 0) continue;
    for (int d = 0; d < head_dim_; ++d) {
      const size_t cell = keys ? static_cast<size_t>(d) * window_ + slot
                               : static_cast<size_t>(slot) * head_dim_ + d;
      y[cell] = keys ? stored_k(slot, d) : stored_v(slot, d);
    }
  }
  return y;
}

void HeadArray::convert_to_float_storage() {
  k_y_ = stored_array(true);
  v_y_ = stored_array(false);
  coded_ = false;
  std::vector<uint8_t>().swap(k_code_);
  std::vector<uint8_t>().swap(v_code_);
}

float HeadArray::stored_k(int slot, int d) const {
  if (write_time_[slot] < 0) return 0.0f;
  const size_t cell = static_cast<size_t>(d) * window_ + slot;
  return coded_ ? k_levels_.y[k_code_[cell]] : k_y_[cell];
}

float HeadArray::stored_v(int slot, int d) const {
  if (write_time_[slot] < 0) return 0.0f;
  const size_t cell = static_cast<size_t>(slot) * head_dim_ + d;
  return coded_ ? v_levels_.y[v_code_[cell]] : v_y_[cell];
}

int64_t HeadArray::state_bytes_per_read() const {
  const int64_t per_cell = coded_ ? sizeof(uint8_t) : sizeof(float);
  return 2 * per_cell * valid_slots() * head_dim_;
}

// S_j = alpha_0 sum_d Q_d + sum_{i>=1} alpha_i decay_j^i sum_d Q_d y_jd^i (spec §2.3), vectorised
// over the slots of each K-array row; rows with a zero pulse are skipped (no pulse is applied).
namespace {

constexpr int kSlotBlock = 32;  // slots whose accumulators stay in vector registers

// The stored rows as the kernels read them: block(at, buf) gives kSlotBlock consecutive y's
// starting at cell `at` (fp32 storage: in place; level codes: decoded into buf), [at] one y.
struct FloatRows {
  const float* y;
  const float* block(size_t at, float*) const { return y + at; }
  float operator[](size_t at) const { return y[at]; }
};

using Lookup = HeadArrayStorage::Lookup;

// Codes to floats for one block: a table lookup, in vector registers where the build has them
// (the level table fits one register: 16 floats for AVX-512, 8 for AVX2).
template <Lookup kLookup>
inline void decode_block(const uint8_t* code, const float* table, float* out) {
#if defined(__AVX512F__)
  if constexpr (kLookup == Lookup::kAvx512) {
    // The zero-masked forms: GCC 12 falsely reports the unmasked ones' _mm512_undefined_*
    // placeholders as maybe-uninitialized; an all-ones mask is the same instruction.
    const __m512 t = _mm512_loadu_ps(table);
    const __mmask16 all = 0xFFFF;
    for (int h = 0; h < kSlotBlock; h += 16) {
      const __m128i c = _mm_loadu_si128(reinterpret_cast<const __m128i*>(code + h));
      const __m512i idx = _mm512_maskz_cvtepu8_epi32(all, c);
      _mm512_storeu_ps(out + h, _mm512_maskz_permutexvar_ps(all, idx, t));
    }
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (kLookup == Lookup::kAvx2) {
    const __m256 t = _mm256_loadu_ps(table);
    for (int h = 0; h < kSlotBlock; h += 8) {
      const __m128i c = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(code + h));
      _mm256_storeu_ps(out + h, _mm256_permutevar8x32_ps(t, _mm256_cvtepu8_epi32(c)));
    }
    return;
  }
#endif
  for (int j = 0; j < kSlotBlock; ++j) out[j] = table[code[j]];
}

template <Lookup kLookup>
struct CodedRows {
  const uint8_t* code;
  const float* table;  // [256]
  const float* block(size_t at, float* buf) const {
    decode_block<kLookup>(code + at, table, buf);
    return buf;
  }
  float operator[](size_t at) const { return table[code[at]]; }
};

// Every multiply-add of the two kernels below is written as std::fma (one rounding), never as
// `a += x * y`. The compiler may fuse the latter or not, and did so differently in the fp32 and
// the level-code instantiations on one machine (GCC 12, -march=native on an AMD EPYC with
// AVX-512): scores one unit in the last place apart, where the two storages must give the same
// bits (HeadArray.LevelCodesAreBitIdenticalToFloatStorage).
//
// acc_i[j] = sum over the pulsed rows r of q_r y_rj^i, i = 1..3 (i = 1 only when !kCubic).
// Blocks of 32 slots keep the three accumulators in registers while the rows stream past.
template <bool kCubic, class Rows>
void accumulate_score_powers(const float* q_values, const int* q_rows, int n_rows, const Rows& k_y,
                             int window, int n_valid, float* acc1, float* acc2, float* acc3) {
  int j0 = 0;
  for (; j0 + kSlotBlock <= n_valid; j0 += kSlotBlock) {
    float a1[kSlotBlock] = {}, a2[kSlotBlock] = {}, a3[kSlotBlock] = {};
    float decoded[kSlotBlock];
    for (int r = 0; r < n_rows; ++r) {
      const float qd = q_values[r];
      const float* __restrict row =
          k_y.block(static_cast<size_t>(q_rows[r]) * window + j0, decoded);
#pragma omp simd
      for (int j = 0; j < kSlotBlock; ++j) {
        const float y = row[j];
        a1[j] = std::fma(qd, y, a1[j]);
        if (kCubic) {
          const float qy = qd * y;
          a2[j] = std::fma(qy, y, a2[j]);
          a3[j] = std::fma(qy * y, y, a3[j]);
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
      a1 = std::fma(qd, y, a1);
      if (kCubic) {
        const float qy = qd * y;
        a2 = std::fma(qy, y, a2);
        a3 = std::fma(qy * y, y, a3);
      }
    }
    acc1[j] = a1;
    if (kCubic) {
      acc2[j] = a2;
      acc3[j] = a3;
    }
  }
}

// acc[d] = offset + sum over the pulsed slots r of y_rd (c1_r + y_rd (c2_r + y_rd c3_r)) (the
// linear cell: c1_r y_rd). Blocks of 32 output columns stay in registers while the rows stream.
template <class Rows>
void accumulate_value_rows(const Rows& v_y, int head_dim, const int* slots, int n, const float* c1,
                           const float* c2, const float* c3, bool cubic, float offset, float* acc) {
  int d0 = 0;
  for (; d0 + kSlotBlock <= head_dim; d0 += kSlotBlock) {
    float a[kSlotBlock];
    float decoded[kSlotBlock];
    for (int d = 0; d < kSlotBlock; ++d) a[d] = offset;
    for (int r = 0; r < n; ++r) {
      const float* __restrict row =
          v_y.block(static_cast<size_t>(slots[r]) * head_dim + d0, decoded);
      const float w1 = c1[r], w2 = c2[r], w3 = c3[r];
      if (cubic) {
#pragma omp simd
        for (int d = 0; d < kSlotBlock; ++d) {
          const float y = row[d];
          a[d] = std::fma(y, std::fma(y, std::fma(y, w3, w2), w1), a[d]);
        }
      } else {
#pragma omp simd
        for (int d = 0; d < kSlotBlock; ++d) a[d] = std::fma(w1, row[d], a[d]);
      }
    }
    for (int d = 0; d < kSlotBlock; ++d) acc[d0 + d] = a[d];
  }
  for (int d = d0; d < head_dim; ++d) {  // tail
    float a = offset;
    for (int r = 0; r < n; ++r) {
      const float y = v_y[static_cast<size_t>(slots[r]) * head_dim + d];
      a = std::fma(y, std::fma(y, std::fma(y, c3[r], c2[r]), c1[r]), a);
    }
    acc[d] = a;
  }
}

}  // namespace

// Calls f with the K (keys) or V array's rows in the storage and lookup in use.
template <class F>
void HeadArray::with_stored_rows(bool keys, F&& f) const {
  if (!coded_) {
    f(FloatRows{keys ? k_y_.data() : v_y_.data()});
    return;
  }
  const uint8_t* code = keys ? k_code_.data() : v_code_.data();
  const float* table = keys ? k_levels_.y.data() : v_levels_.y.data();
  switch (lookup_) {
#if defined(__AVX512F__)
    case Lookup::kAvx512:
      f(CodedRows<Lookup::kAvx512>{code, table});
      return;
#endif
#if defined(__AVX2__)
    case Lookup::kAvx2:
      f(CodedRows<Lookup::kAvx2>{code, table});
      return;
#endif
    default:
      f(CodedRows<Lookup::kPortable>{code, table});
  }
}

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
  with_stored_rows(true, [&](const auto& k_y) {
    if (cubic_) {
      accumulate_score_powers<true>(pulsed_values_.data(), pulsed_rows_.data(), n_rows, k_y,
                                    window_, n_valid, acc1_.data(), acc2_.data(), acc3_.data());
    } else {
      accumulate_score_powers<false>(pulsed_values_.data(), pulsed_rows_.data(), n_rows, k_y,
                                     window_, n_valid, acc1_.data(), acc2_.data(), acc3_.data());
    }
  });
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
  with_stored_rows(false, [&](const auto& v_y) {
    accumulate_value_rows(v_y, head_dim_, slots, n, c1, c2, c3, cubic_, offset, acc);
  });
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
  // Not require(): its message would be built as a std::string on every read.
  if (tokens_written_ == 0) throw Error("HeadArray::read: no token has been written yet");
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
  // The output converters and the digital sum over the tiles, all columns at once.
  output_stage_.combine_columns(tile_out_.data(), active_tiles, head_dim_, out,
                                &step.counter_increments);

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
                   {"k_stored", stored_array(true), {D, M}},
                   {"v_stored", stored_array(false), {M, D}},
                   {"write_time", times, {M}}});
}

}  // namespace gaincell
