#include "gaincell/model/weight_storage.h"

#include <omp.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>

#if defined(__AVX2__) || defined(__AVX512F__)
// GCC 12 at -O3 reports "__Y may be used uninitialized" inside its own AVX-512 intrinsics
// (_mm512_undefined_* placeholders of the unmasked forms), a false warning under -Werror.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#endif

#include "gaincell/core/bf16.h"
#include "gaincell/core/blas.h"
#include "gaincell/core/error.h"
#include "gaincell/core/fp16.h"

namespace gaincell {

WeightFormat parse_weight_format(std::string_view name) {
  if (name == "f32") return WeightFormat::kF32;
  if (name == "bf16") return WeightFormat::kBF16;
  if (name == "q8") return WeightFormat::kQ8;
  throw Error("unknown weight format '" + std::string(name) + "' (known: f32, bf16, q8)");
}

std::string to_string(WeightFormat format) {
  switch (format) {
    case WeightFormat::kF32:
      return "f32";
    case WeightFormat::kBF16:
      return "bf16";
    case WeightFormat::kQ8:
      return "q8";
  }
  return "?";
}

namespace {

// Below this many weights a product runs on one thread (waking the team costs more).
constexpr int64_t kParallelMin = int64_t{1} << 15;

}  // namespace

namespace {

// max |v[i]| over a block, or NaN when the block holds a NaN or an infinity.
float block_abs_max(const float* v, int n) {
  float amax = 0.0f;
  bool finite = true;
  for (int i = 0; i < n; ++i) {
    finite = finite && std::isfinite(v[i]);
    amax = std::max(amax, std::fabs(v[i]));
  }
  return finite ? amax : std::numeric_limits<float>::quiet_NaN();
}

}  // namespace

float quantize_q8_block(const float* v, int n, int8_t* q) {
  const float amax = block_abs_max(v, n);
  if (std::isnan(amax)) {  // NaN or infinity: the block's products become NaN (d = NaN), as in fp32
    std::fill(q, q + n, int8_t{0});
    return std::numeric_limits<float>::quiet_NaN();
  }
  const float d = amax / 127.0f;
  const float inv = d > 0.0f ? 1.0f / d : 0.0f;
  for (int i = 0; i < n; ++i)
    q[i] = static_cast<int8_t>(std::clamp(std::nearbyint(v[i] * inv), -127.0f, 127.0f));
  return d;
}

uint16_t quantize_q8_weight_block(const float* v, int n, int8_t* q) {
  const float amax = block_abs_max(v, n);
  if (std::isnan(amax)) {  // as quantize_q8_block: a NaN scale, so the block's products are NaN
    std::fill(q, q + n, int8_t{0});
    return float_to_fp16_bits(std::numeric_limits<float>::quiet_NaN());
  }
  const float d = amax / 127.0f;
  uint16_t bits = float_to_fp16_bits(d);
  if (fp16_bits_to_float(bits) < d) ++bits;  // the next fp16 up (d >= 0: the bits are ordered)
  const float step = fp16_bits_to_float(bits);
  for (int i = 0; i < n; ++i) {
    // |v| / step <= 127 by the rounding up; the clamp only guards a scale past fp16's range.
    q[i] = step > 0.0f
               ? static_cast<int8_t>(std::clamp(std::nearbyint(v[i] / step), -127.0f, 127.0f))
               : int8_t{0};
  }
  return bits;
}

int64_t first_q8_overflow(const float* v, int64_t n) {
  // |v| <= 127 x 65504 is exactly the finite |v| whose fp32 |v| / 127 (the quantiser's d) is at
  // most 65504: the next float up, 8319008.5, gives 65504.004. One flag over the whole range
  // (vectorisable), the index looked up only on failure.
  constexpr float kInf = std::numeric_limits<float>::infinity();
  bool overflow = false;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(v[i]);
    overflow |= (a > kQ8MaxWeight) & (a != kInf);
  }
  if (!overflow) return -1;
  for (int64_t i = 0; i < n; ++i) {
    const float a = std::fabs(v[i]);
    if (a > kQ8MaxWeight && a != kInf) return i;
  }
  return -1;
}

void throw_q8_weight_too_large(const std::string& where, float value) {
  char text[200];
  std::snprintf(text, sizeof text,
                " holds %.9g, too large for q8 weights: a block's fp16 scale max|w| / 127 cannot "
                "exceed 65504, so |w| <= %.9g (load this model with --weights bf16 or f32)",
                static_cast<double>(value), static_cast<double>(kQ8MaxWeight));
  throw Error(where + text);
}

void Q8Vector::quantize(const float* x, int length) {
  n = length;
  const int blocks = (length + kQ8BlockSize - 1) / kQ8BlockSize;
  q.assign(static_cast<size_t>(blocks) * kQ8BlockSize, int8_t{0});
  d.resize(blocks);
  for (int b = 0; b < blocks; ++b) {
    const int c0 = b * kQ8BlockSize;
    d[b] = quantize_q8_block(x + c0, std::min(kQ8BlockSize, length - c0), q.data() + c0);
  }
}

PackedMatrix PackedMatrix::zeros(WeightFormat format, int rows, int cols) {
  require(rows > 0 && cols > 0, "PackedMatrix: rows and cols must be > 0, got " +
                                    std::to_string(rows) + " x " + std::to_string(cols));
  PackedMatrix p;
  p.format_ = format;
  p.rows_ = rows;
  p.cols_ = cols;
  const size_t n = static_cast<size_t>(rows) * cols;
  switch (format) {
    case WeightFormat::kF32:
      p.f32_.resize(n);
      break;
    case WeightFormat::kBF16:
      p.bf16_.resize(n);
      break;
    case WeightFormat::kQ8:
      p.q8_.resize(n);
      p.scales_.resize(static_cast<size_t>(rows) * p.blocks_per_row());
      break;
  }
  return p;
}

PackedMatrix PackedMatrix::from_rows(WeightFormat format, const float* m, int rows, int cols) {
  PackedMatrix p = zeros(format, rows, cols);
  p.pack_rows(0, rows, m);
  return p;
}

PackedMatrix PackedMatrix::from_columns(WeightFormat format, const float* w, int rows, int cols) {
  PackedMatrix p = zeros(format, rows, cols);
  p.pack_columns(0, rows, w);
  return p;
}

void PackedMatrix::throw_q8_too_large(int row, int col, float value, int w_first_row) const {
  const std::string of_m = "row " + std::to_string(row) + ", column " + std::to_string(col) +
                           " of a " + std::to_string(rows_) + " x " + std::to_string(cols_) +
                           " matrix";
  if (w_first_row < 0) throw_q8_weight_too_large("q8 weights: " + of_m, value);
  throw_q8_weight_too_large("q8 weights: element [" + std::to_string(col) + "][" +
                                std::to_string(row - w_first_row) + "] of a Conv1D weight w (" +
                                of_m + " M = w^T)",
                            value);
}

void PackedMatrix::pack_rows(int r0, int n, const float* m) {
  require(r0 >= 0 && n >= 0 && r0 + n <= rows_,
          "PackedMatrix::pack_rows: rows [" + std::to_string(r0) + ", " + std::to_string(r0 + n) +
              ") outside 0.." + std::to_string(rows_));
  const int64_t weights = static_cast<int64_t>(n) * cols_;
  if (format_ == WeightFormat::kQ8) {  // before the parallel region, which must not throw
    if (const int64_t i = first_q8_overflow(m, weights); i >= 0)
      throw_q8_too_large(r0 + static_cast<int>(i / cols_), static_cast<int>(i % cols_), m[i]);
  }
#pragma omp parallel for schedule(static) if (weights >= kParallelMin)
  for (int r = 0; r < n; ++r) pack_row(r0 + r, m + static_cast<size_t>(r) * cols_);
}

void PackedMatrix::pack_columns(int r0, int n, const float* w) {
  require(r0 >= 0 && n >= 0 && r0 + n <= rows_,
          "PackedMatrix::pack_columns: rows [" + std::to_string(r0) + ", " +
              std::to_string(r0 + n) + ") outside 0.." + std::to_string(rows_));
  const int64_t weights = static_cast<int64_t>(n) * cols_;
  if (format_ == WeightFormat::kQ8) {  // w[c][r] is M[r0 + r][c]
    if (const int64_t i = first_q8_overflow(w, weights); i >= 0)
      throw_q8_too_large(r0 + static_cast<int>(i % n), static_cast<int>(i / n), w[i], r0);
  }
#pragma omp parallel if (weights >= kParallelMin)
  {
    std::vector<float> row(cols_);  // one column of w, gathered
#pragma omp for schedule(static)
    for (int r = 0; r < n; ++r) {
      for (int c = 0; c < cols_; ++c) row[c] = w[static_cast<size_t>(c) * n + r];
      pack_row(r0 + r, row.data());
    }
  }
}

PackedMatrix PackedMatrix::view_rows(const float* m, int rows, int cols) {
  require(rows > 0 && cols > 0 && m != nullptr, "PackedMatrix::view_rows: empty matrix");
  PackedMatrix p;
  p.rows_ = rows;
  p.cols_ = cols;
  p.view_ = m;
  return p;
}

PackedMatrix PackedMatrix::view_columns(const float* w, int rows, int cols) {
  PackedMatrix p = view_rows(w, rows, cols);
  p.columns_ = true;
  return p;
}

TilePlace PackedMatrix::tile_place(int r) const {
  static_assert(kQ8TileCols % kQ8BlockSize == 0, "a tile holds whole blocks");
  const size_t cols = static_cast<size_t>(cols_), whole = static_cast<size_t>(whole_tile_cols());
  const size_t width = static_cast<size_t>(tile_cols());
  const int grouped_rows = rows_ / kTileGroupRows * kTileGroupRows;
  if (r < grouped_rows) {
    const size_t group = static_cast<size_t>(r / kTileGroupRows) * kTileGroupRows * cols;
    const size_t i = static_cast<size_t>(r % kTileGroupRows), tail = cols - whole;
    return {group + i * width, kTileGroupRows * width, width,
            group + kTileGroupRows * whole + i * tail, tail};
  }
  const size_t row = static_cast<size_t>(r) * cols;  // past the last whole group: row-major
  return {row, width, cols, row + whole, cols};
}

size_t PackedMatrix::tiled_index(int r, int c) const {
  const TilePlace p = tile_place(r);
  const int whole = whole_tile_cols(), width = tile_cols();
  if (c >= whole) return p.tail + static_cast<size_t>(c - whole);
  return p.first_tile + static_cast<size_t>(c / width) * p.tile_step + c % width;
}

template <typename T>
void PackedMatrix::gather_row(const T* data, int r, T* out) const {
  const TilePlace p = tile_place(r);
  const int whole = whole_tile_cols(), width = tile_cols();
  for (int c = 0; c < whole; c += width)
    std::copy_n(data + p.first_tile + static_cast<size_t>(c / width) * p.tile_step, width, out + c);
  std::copy_n(data + p.tail, cols_ - whole, out + whole);
}

template <typename T>
void PackedMatrix::place_row(T* data, int r, const T* row) const {
  const TilePlace p = tile_place(r);
  const int whole = whole_tile_cols(), width = tile_cols();
  for (int c = 0; c < whole; c += width)
    std::copy_n(row + c, width, data + p.first_tile + static_cast<size_t>(c / width) * p.tile_step);
  std::copy_n(row + whole, cols_ - whole, data + p.tail);
}

void PackedMatrix::pack_row(int r, const float* row) {
  const size_t base = static_cast<size_t>(r) * cols_;
  switch (format_) {
    case WeightFormat::kF32:
      std::copy(row, row + cols_, f32_.begin() + base);
      return;
    case WeightFormat::kBF16: {
      thread_local std::vector<uint16_t> b;  // the row in column order, then placed in its tiles
      b.resize(static_cast<size_t>(cols_));
      for (int c = 0; c < cols_; ++c) b[c] = float_to_bf16_bits(row[c]);
      place_row(bf16_.data(), r, b.data());
      return;
    }
    case WeightFormat::kQ8: {
      thread_local std::vector<int8_t> q;
      q.resize(static_cast<size_t>(cols_));
      for (int b = 0; b < blocks_per_row(); ++b) {
        const int c0 = b * kQ8BlockSize, c1 = std::min(cols_, c0 + kQ8BlockSize);
        scales_[static_cast<size_t>(r) * blocks_per_row() + b] =
            quantize_q8_weight_block(row + c0, c1 - c0, q.data() + c0);
      }
      place_row(q8_.data(), r, q.data());
      return;
    }
  }
}

size_t PackedMatrix::bytes() const {
  return f32_.size() * sizeof(float) + bf16_.size() * sizeof(uint16_t) + q8_.size() +
         scales_.size() * sizeof(uint16_t);
}

float PackedMatrix::at(int r, int c) const {
  const size_t i = static_cast<size_t>(r) * cols_ + c;
  switch (format_) {
    case WeightFormat::kF32:
      return columns_ ? view_[static_cast<size_t>(c) * rows_ + r] : f32_data()[i];
    case WeightFormat::kBF16:
      return bf16_bits_to_float(bf16_[tiled_index(r, c)]);
    case WeightFormat::kQ8:
      return fp16_bits_to_float(
                 scales_[static_cast<size_t>(r) * blocks_per_row() + c / kQ8BlockSize]) *
             static_cast<float>(q8_[tiled_index(r, c)]);
  }
  return 0.0f;
}

namespace {

// ---------------------------------------------------------------------------------------------
// Matrix-vector kernels (decode)
//
// Decode reads every weight once per token, so the row kernels must keep up with memory; each
// runs kRowsPerPass rows per pass so that one load of x serves all of them.
// - bf16: x is regrouped once per product (GemvInput::x_pairs) so that one 2*kLanes-column load
//   of weights splits into two fp32 vectors with one shift (even columns) and one mask (odd
//   columns), two instructions per 2*kLanes weights instead of a widening load and a shift per
//   kLanes.
// - q8: x is quantised once per product per block of 32 (Q8Vector) and a block's 32 products
//   are summed exactly in int32 (AVX-512 VNNI vpdpbusd, or vpmaddubsw + vpmaddwd), then scaled
//   once by d_w d_x: ggml's Q8_0 x Q8_0 dot. The weights' scales d_w are fp16 (Q8_0's layout),
//   widened with F16C's vcvtph2ps.
constexpr int kRowsPerPass = 4;
// The row kernels prefetch each row's stream one pass ahead (the same columns of the rows of the
// next pass: a pass's R rows are one contiguous block). Those streams are short (a GPT-2 row of 768
// weights is 3 KB in fp32) and interleaved, and the hardware prefetchers, which ramp up per 4 KB
// page, fell behind: on one core of the development machine (busy other core) a software
// prefetch one pass ahead took the (then row-major) q8 products over GPT-2's matrices from 7.5-9
// to 10.5-13.5 GB/s and bf16 from 8-9 to about 12 GB/s (1 KB ahead per row gave less). q8 now
// stores each pass's rows as one sequential stream (kTileGroupRows in the header), needing none.
// Column views (fp32 Conv1D weights w [in][out], M = wᵀ): each thread takes one contiguous span
// of the outputs and walks w's rows (the inputs) once, adding x[c] times the span's part of row c
// into an accumulator of the span (columns_span). A thread then reads one long contiguous piece
// of every row (GPT-2 124M's q|k|v on two threads: 4.5 KB), and the team together reads whole
// rows, in order. The kernel it replaced gave each thread tiles of 128 outputs, a 512-byte piece
// of each row and then a jump of a row: decode with fp32 weights streamed at about 0.8 of the
// triad bandwidth (GPT-2 124M and medium), the row kernels at 0.95. Rows of w are prefetched
// kColumnAheadRows ahead into L1 and twice that into L2 (prefetch_ahead_and_into_l2).
[[maybe_unused]] constexpr int kColumnAheadRows = 8;  // (the vector kernels only)

// A prefetch `bytes` past p (the address may lie past the end of the data: a prefetch never
// faults, and the arithmetic is on integers so no out-of-range pointer is formed).
[[maybe_unused]] inline void prefetch_ahead(const void* p, size_t bytes) {
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) + bytes), 0, 3);
}

// The bf16 and q8 row kernels also prefetch two passes ahead into L2 (locality 1: prefetcht2).
// They run two (bf16) to four (q8) times fp32's instructions per byte, so the out-of-order window
// holds fewer of their cache lines, and per byte they streamed at only 0.85-0.9 of fp32's rate.
// `bench_gemv --rounds 8`, builds without and with it alternated three times (bench/README.md,
// "Session 8"), speed-up over fp32 as the median of rounds: q8 2.62-2.76x -> 2.81-2.89x over
// SmolLM-135M's matrices and 2.85-2.91x -> 2.94-3.05x over GPT-2's; bf16 1.61-1.71x ->
// 1.70-1.76x (SmolLM), unchanged on GPT-2. Three, four or six passes ahead gained less in a first
// micro-benchmark. The same second prefetch in the fp32 kernels gained nothing on that machine; on
// session 11's (AMD EPYC with a 32 MB L3, AVX-512) the fp32 row kernel with the L1 prefetch alone
// swept 768-column rows at 17-25 GB/s and with both at 24-41 (standalone, two threads, three
// rounds), and fp32 decode of GPT-2 124M ran 11-24 % faster with both in the row and column
// kernels (decode driver, the variants alternated in one process, medians of 12 rounds).
[[maybe_unused]] inline void prefetch_ahead_and_into_l2(const void* p, size_t pass_bytes) {
  prefetch_ahead(p, pass_bytes);
  __builtin_prefetch(reinterpret_cast<const void*>(reinterpret_cast<uintptr_t>(p) + 2 * pass_bytes),
                     0, 1);
}

// Outputs r0 .. r0 + R - 1 of a product: (y + bias) + v, or bias + v (accumulate without a bias:
// y + v), the order of the model's one-token products.
void store_outputs(float* y, int r0, int R, const float* v, bool accumulate, const float* bias) {
  for (int i = 0; i < R; ++i) {
    float base = accumulate ? y[r0 + i] : 0.0f;
    if (bias != nullptr) base = accumulate ? base + bias[r0 + i] : bias[r0 + i];
    y[r0 + i] = base + v[i];
  }
}

}  // namespace

// x as the kernels of one format read it, prepared once per product (prepare_gemv_input).
struct GemvInput {
  const float* x = nullptr;        // fp32 x: the f32 kernels and the bf16 row tails
  const float* x_pairs = nullptr;  // bf16: per 2*kLanes columns, the even columns then the odd
  const Q8Vector* q8 = nullptr;    // q8: x quantised per block
  // AVX-512: per 32-bit lane j (columns 4j .. 4j+3): -128 times the sum of the four quantised x
  // (the correction of vpdpbusd's unsigned operand w + 128), and d_x of the lane's block.
  const int32_t* q8_lane_offsets = nullptr;
  const float* q8_lane_scales = nullptr;
};

namespace {

// Portable partial sums (any CPU; the compiler vectorises the fixed-width inner loops). They also
// take the tail of a row after the last full vector.
float dot_f32_portable(const float* w, const float* x, int c, int n) {
  float acc[kQ8BlockSize] = {};
  for (; c + kQ8BlockSize <= n; c += kQ8BlockSize) {
#pragma omp simd
    for (int i = 0; i < kQ8BlockSize; ++i) acc[i] += w[c + i] * x[c + i];
  }
  float s = 0.0f;
  for (; c < n; ++c) s += w[c] * x[c];
  for (float a : acc) s += a;
  return s;
}

float dot_bf16_portable(const uint16_t* w, const float* x, int c, int n) {
  float acc[kQ8BlockSize] = {};
  for (; c + kQ8BlockSize <= n; c += kQ8BlockSize) {
#pragma omp simd
    for (int i = 0; i < kQ8BlockSize; ++i)
      acc[i] += std::bit_cast<float>(static_cast<uint32_t>(w[c + i]) << 16) * x[c + i];
  }
  float s = 0.0f;
  for (; c < n; ++c) s += bf16_bits_to_float(w[c]) * x[c];
  for (float a : acc) s += a;
  return s;
}

// The outputs of a column view's tile (the tails, and any CPU): each y[i] sums over c in order.
void columns_tile_portable(const float* w, size_t stride, const float* x, int n, int R, float* y) {
  for (int i = 0; i < R; ++i) y[i] = 0.0f;
  for (int c = 0; c < n; ++c) {
    const float* row = w + static_cast<size_t>(c) * stride;
#pragma omp simd
    for (int i = 0; i < R; ++i) y[i] += row[i] * x[c];
  }
}

// Blocks b, b + 1, ... of a q8 row against the quantised x, from column b * kQ8BlockSize to n.
float dot_q8_portable(const int8_t* q, const uint16_t* scales, const Q8Vector& x, int b, int n) {
  float s = 0.0f;
  for (int c = b * kQ8BlockSize; c < n; c += kQ8BlockSize, ++b) {
    const int end = std::min(n, c + kQ8BlockSize);
    int32_t block = 0;
    for (int i = c; i < end; ++i) block += int32_t{q[i]} * int32_t{x.q[i]};
    s += static_cast<float>(block) * (fp16_bits_to_float(scales[b]) * x.d[b]);
  }
  return s;
}

// Row i's columns from c (its first past the whole tiles) to n: its tail, contiguous at
// at.tail + i * at.tail_step (PackedMatrix::tile_place), column c first.
[[maybe_unused]] float dot_bf16_tail(const uint16_t* w, const TilePlace& at, int i, const float* x,
                                     int c, int n) {
  if (c >= n) return 0.0f;
  // dot_bf16_portable reads row[k] from k = c on: point `row` c elements before the tail (still
  // inside the storage: the tail follows the row group's tiles).
  return dot_bf16_portable(w + at.tail + i * at.tail_step - c, x, c, n);
}

// Row i's columns from block b (the first past its whole tiles) to n: its tail, contiguous at
// at.tail + i * at.tail_step (PackedMatrix::tile_place), column b * kQ8BlockSize first.
[[maybe_unused]] float dot_q8_tail(const int8_t* q, const TilePlace& at, int i,
                                   const uint16_t* scales, const Q8Vector& x, int b, int n) {
  if (b * kQ8BlockSize >= n) return 0.0f;
  // dot_q8_portable reads row[c] from c = b * kQ8BlockSize on: point `row` that far before the
  // tail (still inside the storage: the tail follows the row group's tiles).
  const int8_t* row = q + at.tail + i * at.tail_step - static_cast<size_t>(b) * kQ8BlockSize;
  return dot_q8_portable(row, scales, x, b, n);
}

// Vector paths by the build's instruction set (GAINCELL_NATIVE builds with -march=native):
// AVX-512 (16 lanes) or AVX2/FMA (8 lanes); the portable loops otherwise and for the tails.
#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__F16C__)
constexpr int kLanes = 16;
using VecF = __m512;
inline VecF vzero() {
  return _mm512_setzero_ps();
}
inline VecF vload(const float* p) {
  return _mm512_loadu_ps(p);
}
inline VecF vfmadd(VecF a, VecF b, VecF c) {
  return _mm512_fmadd_ps(a, b, c);
}
inline VecF vadd(VecF a, VecF b) {
  return _mm512_add_ps(a, b);
}
inline VecF vset1(float a) {
  return _mm512_set1_ps(a);
}
inline void vstore(float* p, VecF a) {
  _mm512_storeu_ps(p, a);
}
// Through memory, once per row: GCC 12 warns (falsely) inside _mm512_reduce_add_ps.
inline float vsum(VecF a) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, a);
  float s = 0.0f;
  for (float x : lanes) s += x;
  return s;
}
// 2 * kLanes bf16 weights: the even columns (low halves of the 32-bit lanes, shifted up) and the
// odd columns (high halves, masked) as fp32.
inline void vload_bf16_pairs(const uint16_t* p, VecF& even, VecF& odd) {
  const __m512i w = _mm512_loadu_si512(p);
  even = _mm512_castsi512_ps(_mm512_slli_epi32(w, 16));
  odd = _mm512_castsi512_ps(_mm512_and_si512(w, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
}

// 64 int8 weights (two q8 blocks) times 64 quantised x: 16 int32 lanes, each the exact sum of four
// products. `offset` is GemvInput::q8_lane_offsets' vector for these columns.
inline __m512i dot_i8_lanes(__m512i w, __m512i x, __m512i offset) {
#ifdef __AVX512VNNI__
  // vpdpbusd multiplies unsigned by signed bytes: (w + 128) x, from which offset removes 128 x.
  return _mm512_dpbusd_epi32(offset, _mm512_xor_si512(w, _mm512_set1_epi8(-128)), x);
#else
  // |w| times x with w's sign (|w| <= 127, so the int16 pair sums cannot saturate).
  (void)offset;
  const __m512i signed_x =
      _mm512_mask_sub_epi8(x, _mm512_movepi8_mask(w), _mm512_setzero_si512(), x);
  return _mm512_madd_epi16(_mm512_maddubs_epi16(_mm512_abs_epi8(w), signed_x),
                           _mm512_set1_epi16(1));
#endif
}

// Rows i < R of a q8 matrix (q: its storage; at: row 0's place, PackedMatrix::tile_place) times
// the quantised x, one 64-column tile (two blocks) per step. The rows of a group lie tile by tile
// in one sequential stream (kTileGroupRows), which the hardware prefetchers follow without help.
template <int R>
void rows_q8(const int8_t* q, const TilePlace& at, const uint16_t* scales, size_t scale_stride,
             const GemvInput& in, int n, float* y) {
  static_assert(2 * kQ8BlockSize == kQ8TileCols, "one 64-byte load per row is one tile");
  const Q8Vector& x = *in.q8;
  VecF acc[R];
  for (int i = 0; i < R; ++i) acc[i] = vzero();
  // Lanes 0-7 take the first of two block scales, lanes 8-15 the second.
  const __m512i pick = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  const int pairs = n / kQ8TileCols;
  for (int p = 0; p < pairs; ++p) {
    const int c = p * kQ8TileCols;
    const int8_t* tile = q + at.first_tile + static_cast<size_t>(p) * at.tile_step;
    const __m512i xv = _mm512_loadu_si512(x.q.data() + c);
    const __m512i offset = _mm512_loadu_si512(in.q8_lane_offsets + c / 4);
    const __m512 dx = _mm512_loadu_ps(in.q8_lane_scales + c / 4);
    for (int i = 0; i < R; ++i) {
      const __m512i s = dot_i8_lanes(_mm512_loadu_si512(tile + i * at.row_step), xv, offset);
      uint32_t two_scales;  // the blocks' two fp16 scales, widened to fp32 lanes 0 and 1
      std::memcpy(&two_scales, scales + i * scale_stride + 2 * p, sizeof two_scales);
      const __m128 wide = _mm_cvtph_ps(_mm_cvtsi32_si128(static_cast<int>(two_scales)));
      const __m512 dw = _mm512_permutexvar_ps(pick, _mm512_castps128_ps512(wide));
      acc[i] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, dx), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i)
    y[i] = vsum(acc[i]) + dot_q8_tail(q, at, i, scales + i * scale_stride, x, 2 * pairs, n);
}
#define GAINCELL_HAVE_VECTOR_GEMV 1
#elif defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
constexpr int kLanes = 8;
using VecF = __m256;
inline VecF vzero() {
  return _mm256_setzero_ps();
}
inline VecF vload(const float* p) {
  return _mm256_loadu_ps(p);
}
inline VecF vfmadd(VecF a, VecF b, VecF c) {
  return _mm256_fmadd_ps(a, b, c);
}
inline VecF vadd(VecF a, VecF b) {
  return _mm256_add_ps(a, b);
}
inline VecF vset1(float a) {
  return _mm256_set1_ps(a);
}
inline void vstore(float* p, VecF a) {
  _mm256_storeu_ps(p, a);
}
inline float vsum(VecF a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline void vload_bf16_pairs(const uint16_t* p, VecF& even, VecF& odd) {
  const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  even = _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
  odd = _mm256_castsi256_ps(_mm256_and_si256(w, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
}

// One q8 block: 32 int8 weights times 32 quantised x as 8 int32 lanes of four products each:
// |w| times x with w's sign (|w| <= 127, so vpmaddubsw's int16 pair sums cannot saturate).
inline __m256i dot_i8_lanes(__m256i w, __m256i x) {
  return _mm256_madd_epi16(_mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w)),
                           _mm256_set1_epi16(1));
}

// As the AVX-512 rows_q8: one block (half a tile) per step.
template <int R>
void rows_q8(const int8_t* q, const TilePlace& at, const uint16_t* scales, size_t scale_stride,
             const GemvInput& in, int n, float* y) {
  const Q8Vector& x = *in.q8;
  VecF acc[R];
  for (int i = 0; i < R; ++i) acc[i] = vzero();
  const int full = n / kQ8TileCols * 2;  // blocks in whole tiles
  for (int b = 0; b < full; ++b) {
    const int c = b * kQ8BlockSize;
    const int8_t* tile =
        q + at.first_tile + static_cast<size_t>(b / 2) * at.tile_step + (b % 2) * kQ8BlockSize;
    const __m256i xv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x.q.data() + c));
    const float dx = x.d[b];
    for (int i = 0; i < R; ++i) {
      const __m256i s = dot_i8_lanes(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(tile + i * at.row_step)), xv);
      acc[i] =
          _mm256_fmadd_ps(_mm256_cvtepi32_ps(s),
                          _mm256_set1_ps(_cvtsh_ss(scales[i * scale_stride + b]) * dx), acc[i]);
    }
  }
  for (int i = 0; i < R; ++i)
    y[i] = vsum(acc[i]) + dot_q8_tail(q, at, i, scales + i * scale_stride, x, full, n);
}
#define GAINCELL_HAVE_VECTOR_GEMV 1
#endif

#ifdef GAINCELL_HAVE_VECTOR_GEMV
static_assert(kQ8BlockSize % kLanes == 0, "a q8 block is a whole number of vectors");
constexpr int kBf16Group = 2 * kLanes;  // columns per x_pairs group

template <int R>
void rows_f32(const float* w, size_t stride, const GemvInput& in, int n, float* y) {
  const float* x = in.x;
  VecF acc[R];
  for (int i = 0; i < R; ++i) acc[i] = vzero();
  int c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    const VecF xv = vload(x + c);
    for (int i = 0; i < R; ++i) {
      prefetch_ahead_and_into_l2(w + i * stride + c, R * stride * sizeof(*w));
      acc[i] = vfmadd(vload(w + i * stride + c), xv, acc[i]);
    }
  }
  // The portable tail only when the row has one: its setup (a zeroed 32-float accumulator and
  // its sum) costs as much as several vector iterations of a short row.
  for (int i = 0; i < R; ++i)
    y[i] = vsum(acc[i]) + (c < n ? dot_f32_portable(w + i * stride, x, c, n) : 0.0f);
}

// Rows i < R of a bf16 matrix (w: its storage; at: row 0's place, PackedMatrix::tile_place), one
// regrouped x group per step: the rows of a group lie tile by tile in one sequential stream
// (kTileGroupRows), which the hardware prefetchers follow without help.
template <int R>
void rows_bf16(const uint16_t* w, const TilePlace& at, const GemvInput& in, int n, float* y) {
  static_assert(kBf16TileCols % kBf16Group == 0, "a tile holds whole groups of x");
  VecF even[R], odd[R];
  for (int i = 0; i < R; ++i) even[i] = odd[i] = vzero();
  const int whole = n / kBf16TileCols * kBf16TileCols;
  for (int c = 0; c < whole; c += kBf16Group) {
    const uint16_t* tile = w + at.first_tile +
                           static_cast<size_t>(c / kBf16TileCols) * at.tile_step +
                           c % kBf16TileCols;
    const VecF x_even = vload(in.x_pairs + c), x_odd = vload(in.x_pairs + c + kLanes);
    for (int i = 0; i < R; ++i) {
      VecF w_even, w_odd;
      vload_bf16_pairs(tile + i * at.row_step, w_even, w_odd);
      even[i] = vfmadd(w_even, x_even, even[i]);
      odd[i] = vfmadd(w_odd, x_odd, odd[i]);
    }
  }
  for (int i = 0; i < R; ++i)
    y[i] = vsum(vadd(even[i], odd[i])) + dot_bf16_tail(w, at, i, in.x, whole, n);
}
constexpr int kSpanAlign = 16;  // 64 bytes: two threads' spans never share a cache line

// y[0 .. R) = sum_c w[c][i] x[c], summed over c in order (as columns_tile_portable), for a span of
// R outputs (w points at its first output; rows of w are `stride` floats apart). Four rows of w
// per pass over y, so each element of y is loaded and stored once per four multiply-adds; the
// columns past the last whole vector (only the last span has them) go to the portable kernel.
void columns_span(const float* w, size_t stride, const float* x, int n, int R, float* y) {
  const int vectors = R / kLanes * kLanes;
  for (int i = 0; i < vectors; i += kLanes) vstore(y + i, vzero());
  const size_t ahead = kColumnAheadRows * stride * sizeof(float);
  int c = 0;
  for (; c + 4 <= n; c += 4) {
    const float* w0 = w + static_cast<size_t>(c) * stride;
    const float *w1 = w0 + stride, *w2 = w1 + stride, *w3 = w2 + stride;
    const VecF x0 = vset1(x[c]), x1 = vset1(x[c + 1]), x2 = vset1(x[c + 2]), x3 = vset1(x[c + 3]);
    for (int i = 0; i < vectors; i += kLanes) {
      if (i % (64 / sizeof(float)) == 0) {  // once per cache line of each row
        prefetch_ahead_and_into_l2(w0 + i, ahead);
        prefetch_ahead_and_into_l2(w1 + i, ahead);
        prefetch_ahead_and_into_l2(w2 + i, ahead);
        prefetch_ahead_and_into_l2(w3 + i, ahead);
      }
      VecF a = vload(y + i);
      a = vfmadd(vload(w0 + i), x0, a);
      a = vfmadd(vload(w1 + i), x1, a);
      a = vfmadd(vload(w2 + i), x2, a);
      vstore(y + i, vfmadd(vload(w3 + i), x3, a));
    }
  }
  for (; c < n; ++c) {
    const float* row = w + static_cast<size_t>(c) * stride;
    const VecF xc = vset1(x[c]);
    for (int i = 0; i < vectors; i += kLanes)
      vstore(y + i, vfmadd(vload(row + i), xc, vload(y + i)));
  }
  if (vectors < R) columns_tile_portable(w + vectors, stride, x, n, R - vectors, y + vectors);
}
#else
constexpr int kBf16Group = 0;  // no regrouped x
constexpr int kSpanAlign = 16;

void columns_span(const float* w, size_t stride, const float* x, int n, int R, float* y) {
  columns_tile_portable(w, stride, x, n, R, y);
}

template <int R>
void rows_f32(const float* w, size_t stride, const GemvInput& in, int n, float* y) {
  for (int i = 0; i < R; ++i) y[i] = dot_f32_portable(w + i * stride, in.x, 0, n);
}
template <int R>
void rows_bf16(const uint16_t* w, const TilePlace& at, const GemvInput& in, int n, float* y) {
  const int whole = n / kBf16TileCols * kBf16TileCols;
  for (int i = 0; i < R; ++i) {
    float s = 0.0f;
    for (int c = 0; c < whole; ++c)
      s += bf16_bits_to_float(
               w[at.first_tile + static_cast<size_t>(c / kBf16TileCols) * at.tile_step +
                 i * at.row_step + c % kBf16TileCols]) *
           in.x[c];
    y[i] = s + dot_bf16_tail(w, at, i, in.x, whole, n);
  }
}
template <int R>
void rows_q8(const int8_t* q, const TilePlace& at, const uint16_t* scales, size_t scale_stride,
             const GemvInput& in, int n, float* y) {
  const Q8Vector& x = *in.q8;
  const int full = n / kQ8TileCols * 2;  // blocks in whole tiles
  for (int i = 0; i < R; ++i) {
    float s = 0.0f;
    for (int b = 0; b < full; ++b) {
      const int8_t* w = q + at.first_tile + static_cast<size_t>(b / 2) * at.tile_step +
                        i * at.row_step + (b % 2) * kQ8BlockSize;
      // Block b alone (dot_q8_portable indexes its row from column b * kQ8BlockSize).
      s += dot_q8_portable(w - static_cast<size_t>(b) * kQ8BlockSize, scales + i * scale_stride, x,
                           b, (b + 1) * kQ8BlockSize);
    }
    y[i] = s + dot_q8_tail(q, at, i, scales + i * scale_stride, x, full, n);
  }
}
#endif

// Per-thread scratch of prepare_gemv_input (a product prepares x once, before its rows split over
// the team; the team only reads it).
struct GemvScratch {
  GemvInput input;
  Q8Vector q8;
  std::vector<int32_t> lane_offsets;
  std::vector<float> lane_scales, pairs;
};

const GemvInput& prepare_gemv_input(WeightFormat format, const float* x, int n) {
  thread_local GemvScratch scratch;
  GemvInput& in = scratch.input;
  in = GemvInput{};
  in.x = x;
  if (format == WeightFormat::kBF16 && kBf16Group > 0) {
    const int groups = n / std::max(kBf16Group, 1);
    constexpr int half = kBf16Group / 2;
    scratch.pairs.resize(static_cast<size_t>(groups) * kBf16Group);
    for (int g = 0; g < groups; ++g) {
      const float* src = x + g * kBf16Group;
      float* dst = scratch.pairs.data() + g * kBf16Group;
      for (int j = 0; j < half; ++j) {
        dst[j] = src[2 * j];
        dst[half + j] = src[2 * j + 1];
      }
    }
    in.x_pairs = scratch.pairs.data();
  } else if (format == WeightFormat::kQ8) {
    scratch.q8.quantize(x, n);
    const size_t lanes = scratch.q8.q.size() / 4;
    scratch.lane_offsets.resize(lanes);
    scratch.lane_scales.resize(lanes);
    for (size_t j = 0; j < lanes; ++j) {
      const int8_t* four = scratch.q8.q.data() + 4 * j;
      scratch.lane_offsets[j] = -128 * (four[0] + four[1] + four[2] + four[3]);
      scratch.lane_scales[j] = scratch.q8.d[4 * j / kQ8BlockSize];
    }
    in.q8 = &scratch.q8;
    in.q8_lane_offsets = scratch.lane_offsets.data();
    in.q8_lane_scales = scratch.lane_scales.data();
  }
  return in;
}

}  // namespace

template <int R>
void PackedMatrix::rows_dot(int r0, const GemvInput& x, float* y) const {
  const size_t base = static_cast<size_t>(r0) * cols_;
  switch (format_) {
    case WeightFormat::kF32:
      rows_f32<R>(f32_data() + base, cols_, x, cols_, y);
      return;
    case WeightFormat::kBF16:
      rows_bf16<R>(bf16_.data(), tile_place(r0), x, cols_, y);
      return;
    case WeightFormat::kQ8:
      // A whole pass (R = kRowsPerPass) is one group of rows (gemv_team starts passes at
      // multiples of kRowsPerPass); single rows are any row.
      static_assert(kRowsPerPass == kTileGroupRows, "a pass multiplies one group of rows");
      rows_q8<R>(q8_.data(), tile_place(r0),
                 scales_.data() + static_cast<size_t>(r0) * blocks_per_row(), blocks_per_row(), x,
                 cols_, y);
      return;
  }
}

const GemvInput& PackedMatrix::prepare(const float* x) const {
  return prepare_gemv_input(format_, x, cols_);
}

void PackedMatrix::gemv(const float* x, float* y, bool accumulate) const {
  const GemvInput& in = prepare(x);
  const int64_t work = static_cast<int64_t>(rows_) * cols_;
#pragma omp parallel if (work >= kParallelMin)
  gemv_team(in, y, accumulate);
}

void PackedMatrix::gemv_team(const GemvInput& in, float* y, bool accumulate,
                             const float* bias) const {
  if (columns_) {
    columns_gemv_team(in.x, y, accumulate, bias);
    return;
  }
  const int passes = (rows_ + kRowsPerPass - 1) / kRowsPerPass;
  // Guided: a thread takes 1/N of the passes left on a team of N (on two threads the first half
  // of the matrix, then a quarter, ...), down to chunks of about 16k weights at the end. The long
  // contiguous runs matter: a thread's stream continues through its run, where the hardware and the
  // one-pass-ahead software prefetches keep running. Fixed chunks of 64k weights handed out
  // dynamically (a new stream for the prefetchers at every chunk) swept GPT-2's matrices at
  // 26-28 GB/s in bf16, 24-27 in q8 and 31-34 in f32; guided at 31-33, 29-31 and 35-36
  // (`bench_gemv --rounds 6`, idle machine, triad 34-36 GB/s, the two alternated five times).
  // The price, on a shared machine: a thread that the scheduler suspends in the middle of its
  // run holds its partner up for the rest of that run (up to half of the matrix), where fixed
  // 64k-weight chunks bounded that to one chunk. A thread suspended before it starts takes only
  // 1/N of what is left when it wakes.
  const int chunk =
      std::max(1, static_cast<int>((int64_t{1} << 14) / (int64_t{kRowsPerPass} * cols_)));
#pragma omp for schedule(guided, chunk) nowait
  for (int p = 0; p < passes; ++p) {
    const int r0 = p * kRowsPerPass;
    float v[kRowsPerPass];
    const int R = std::min(kRowsPerPass, rows_ - r0);
    if (R == kRowsPerPass) {
      rows_dot<kRowsPerPass>(r0, in, v);
    } else {
      for (int i = 0; i < R; ++i) rows_dot<1>(r0 + i, in, v + i);
    }
    store_outputs(y, r0, R, v, accumulate, bias);
  }
}

void PackedMatrix::columns_gemv_team(const float* x, float* y, bool accumulate,
                                     const float* bias) const {
  // Equal spans of outputs, one per thread, starting on a whole vector (see columns_span). Each
  // output is summed over c in the same order whatever the span, so the result does not depend
  // on the number of threads.
  const int threads = omp_get_num_threads(), t = omp_get_thread_num();
  const int units = (rows_ + kSpanAlign - 1) / kSpanAlign;
  const int r0 = std::min(rows_, units * t / threads * kSpanAlign);
  const int r1 = std::min(rows_, units * (t + 1) / threads * kSpanAlign);
  if (r1 <= r0) return;
  thread_local std::vector<float> span;
  span.resize(static_cast<size_t>(r1 - r0));
  columns_span(view_ + r0, rows_, x, cols_, r1 - r0, span.data());
  store_outputs(y, r0, r1 - r0, span.data(), accumulate, bias);
}

void PackedMatrix::dequantize_rows(int r0, int r1, float* out) const {
  const int64_t work = static_cast<int64_t>(r1 - r0) * cols_;
#pragma omp parallel for schedule(static) if (work >= kParallelMin)
  for (int r = r0; r < r1; ++r) {
    const size_t base = static_cast<size_t>(r) * cols_;
    float* o = out + static_cast<size_t>(r - r0) * cols_;
    switch (format_) {
      case WeightFormat::kF32:
        if (columns_) {
          for (int c = 0; c < cols_; ++c) o[c] = view_[static_cast<size_t>(c) * rows_ + r];
        } else {
          std::copy(f32_data() + base, f32_data() + base + cols_, o);
        }
        break;
      case WeightFormat::kBF16: {
        thread_local std::vector<uint16_t> b;
        b.resize(static_cast<size_t>(cols_));
        gather_row(bf16_.data(), r, b.data());
#pragma omp simd
        for (int c = 0; c < cols_; ++c)
          o[c] = std::bit_cast<float>(static_cast<uint32_t>(b[c]) << 16);
        break;
      }
      case WeightFormat::kQ8: {
        thread_local std::vector<int8_t> q;
        q.resize(static_cast<size_t>(cols_));
        gather_row(q8_.data(), r, q.data());
        const uint16_t* s = scales_.data() + static_cast<size_t>(r) * blocks_per_row();
        for (int c0 = 0; c0 < cols_; c0 += kQ8BlockSize) {
          const float d = fp16_bits_to_float(s[c0 / kQ8BlockSize]);
          const int c1 = std::min(cols_, c0 + kQ8BlockSize);
          for (int c = c0; c < c1; ++c) o[c] = d * static_cast<float>(q[c]);
        }
        break;
      }
    }
  }
}

void packed_gemv_reference(const PackedMatrix& m, const float* x, float* y, bool accumulate) {
  // q8 multiplies the quantised x (Q8Vector); the other formats x itself.
  Q8Vector xq;
  if (m.format() == WeightFormat::kQ8) xq.quantize(x, m.cols());
  for (int r = 0; r < m.rows(); ++r) {
    double s = 0.0;
    for (int c = 0; c < m.cols(); ++c) {
      const float xc = m.format() == WeightFormat::kQ8 ? xq.at(c) : x[c];
      s += static_cast<double>(m.at(r, c)) * xc;
    }
    y[r] = static_cast<float>(accumulate ? y[r] + s : s);
  }
}

namespace {

// The rows of inp[N][cols] replaced by their per-block quantised values (the x of a q8 product).
const float* quantized_rows(const float* inp, int64_t N, int cols) {
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(N) * cols);
  float* out = scratch.data();  // the caller's buffer (a thread_local names each thread's own)
  const int blocks = (cols + kQ8BlockSize - 1) / kQ8BlockSize;
#pragma omp parallel for schedule(static) if (N * cols >= kParallelMin)
  for (int64_t i = 0; i < N * blocks; ++i) {
    const int64_t n = i / blocks;
    const int c0 = static_cast<int>(i % blocks) * kQ8BlockSize,
              len = std::min(kQ8BlockSize, cols - c0);
    const size_t at = static_cast<size_t>(n) * cols + c0;
    int8_t q[kQ8BlockSize];
    const float d = quantize_q8_block(inp + at, len, q);
    for (int k = 0; k < len; ++k) out[at + k] = d * static_cast<float>(q[k]);
  }
  return out;
}

}  // namespace

void packed_matmul(float* out, const float* inp, const PackedMatrix& m, int64_t N,
                   bool accumulate) {
  // Blocks of rows of at most ~4M weights (16 MB of fp32 scratch): one block for every GPT-2
  // projection, a dozen for a 50k-token LM head.
  constexpr int64_t kScratchFloats = int64_t{4} << 20;
  const int cols = m.cols(), rows = m.rows();
  if (m.format() == WeightFormat::kQ8) inp = quantized_rows(inp, N, cols);
  const int block = static_cast<int>(std::clamp<int64_t>(kScratchFloats / cols, 1, rows));
  thread_local std::vector<float> scratch;
  scratch.resize(static_cast<size_t>(block) * cols);
  for (int r0 = 0; r0 < rows; r0 += block) {
    const int r1 = std::min(rows, r0 + block);
    m.dequantize_rows(r0, r1, scratch.data());
    blas::gemm_nt(static_cast<int>(N), r1 - r0, cols, inp, cols, scratch.data(), cols, out + r0,
                  rows, 1.0f, accumulate ? 1.0f : 0.0f);
  }
}

}  // namespace gaincell
