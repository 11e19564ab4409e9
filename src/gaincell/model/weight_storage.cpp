#include "gaincell/model/weight_storage.h"

#include <algorithm>
#include <bit>
#include <cmath>
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

PackedMatrix PackedMatrix::allocate(WeightFormat format, int rows, int cols) {
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
  PackedMatrix p = allocate(format, rows, cols);
  const int64_t n = static_cast<int64_t>(rows) * cols;
#pragma omp parallel for schedule(static) if (n >= kParallelMin)
  for (int r = 0; r < rows; ++r) p.pack_row(r, m + static_cast<size_t>(r) * cols);
  return p;
}

PackedMatrix PackedMatrix::from_columns(WeightFormat format, const float* w, int rows, int cols) {
  PackedMatrix p = allocate(format, rows, cols);
  const int64_t n = static_cast<int64_t>(rows) * cols;
#pragma omp parallel if (n >= kParallelMin)
  {
    std::vector<float> row(cols);  // one column of w, gathered
#pragma omp for schedule(static)
    for (int r = 0; r < rows; ++r) {
      for (int c = 0; c < cols; ++c) row[c] = w[static_cast<size_t>(c) * rows + r];
      p.pack_row(r, row.data());
    }
  }
  return p;
}

void PackedMatrix::pack_row(int r, const float* row) {
  const size_t base = static_cast<size_t>(r) * cols_;
  switch (format_) {
    case WeightFormat::kF32:
      std::copy(row, row + cols_, f32_.begin() + base);
      return;
    case WeightFormat::kBF16:
      for (int c = 0; c < cols_; ++c) bf16_[base + c] = float_to_bf16_bits(row[c]);
      return;
    case WeightFormat::kQ8:
      for (int b = 0; b < blocks_per_row(); ++b) {
        const int c0 = b * kQ8BlockSize, c1 = std::min(cols_, c0 + kQ8BlockSize);
        float amax = 0.0f;
        for (int c = c0; c < c1; ++c) amax = std::max(amax, std::fabs(row[c]));
        const float d = amax / 127.0f;
        const float inv = d > 0.0f ? 1.0f / d : 0.0f;
        scales_[static_cast<size_t>(r) * blocks_per_row() + b] = d;
        for (int c = c0; c < c1; ++c)
          q8_[base + c] =
              static_cast<int8_t>(std::clamp(std::nearbyint(row[c] * inv), -127.0f, 127.0f));
      }
      return;
  }
}

size_t PackedMatrix::bytes() const {
  return f32_.size() * sizeof(float) + bf16_.size() * sizeof(uint16_t) + q8_.size() +
         scales_.size() * sizeof(float);
}

float PackedMatrix::at(int r, int c) const {
  const size_t i = static_cast<size_t>(r) * cols_ + c;
  switch (format_) {
    case WeightFormat::kF32:
      return f32_[i];
    case WeightFormat::kBF16:
      return bf16_bits_to_float(bf16_[i]);
    case WeightFormat::kQ8:
      return scales_[static_cast<size_t>(r) * blocks_per_row() + c / kQ8BlockSize] *
             static_cast<float>(q8_[i]);
  }
  return 0.0f;
}

namespace {

// Decode reads every weight once per token, so the row kernels must keep up with memory: each
// decodes the stored values to fp32 in vector registers (bf16: a 16-bit shift; q8: sign-extend,
// convert, one multiply by the block's scale per block) and runs several rows per pass so one
// load of x serves all of them. The activations stay fp32 (no int8 quantisation of x): the
// products equal, to fp32 rounding, those of the whole-sequence path (dequantise + sgemm), so
// decode still equals the whole-sequence forward. Rows are handled kRowsPerPass at a time.
constexpr int kRowsPerPass = 4;

// Portable partial-sum kernels (any CPU; the compiler vectorises the fixed-width inner loops).
// They also take the tail of a row after the last full vector.
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

// Starts at column c = b * kQ8BlockSize (a block boundary).
float dot_q8_portable(const int8_t* q, const float* scales, const float* x, int b, int n) {
  float acc[kQ8BlockSize] = {};
  int c = b * kQ8BlockSize;
  for (; c + kQ8BlockSize <= n; c += kQ8BlockSize, ++b) {
    const float d = scales[b];
#pragma omp simd
    for (int i = 0; i < kQ8BlockSize; ++i) acc[i] += d * static_cast<float>(q[c + i]) * x[c + i];
  }
  float s = 0.0f;
  for (; c < n; ++c) s += scales[b] * static_cast<float>(q[c]) * x[c];
  for (float a : acc) s += a;
  return s;
}

// Rows r0 .. r0 + R - 1 of one format: y[i] = row(r0 + i) . x. Vector paths by the build's
// instruction set (GAINCELL_NATIVE builds with -march=native): AVX-512 (16 lanes) or AVX2/FMA
// (8 lanes); the portable loops otherwise and for the tails.
#if defined(__AVX512F__) && defined(__AVX512BW__)
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
inline VecF vmul(VecF a, VecF b) {
  return _mm512_mul_ps(a, b);
}
inline VecF vset1(float x) {
  return _mm512_set1_ps(x);
}
// Through memory, once per row: GCC 12 warns (falsely) inside _mm512_reduce_add_ps.
inline float vsum(VecF a) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, a);
  float s = 0.0f;
  for (float x : lanes) s += x;
  return s;
}
inline VecF vload_bf16(const uint16_t* p) {
  const __m512i wide =
      _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
  return _mm512_castsi512_ps(_mm512_slli_epi32(wide, 16));
}
inline VecF vload_q8(const int8_t* p) {
  return _mm512_cvtepi32_ps(
      _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p))));
}
#define GAINCELL_HAVE_VECTOR_GEMV 1
#elif defined(__AVX2__) && defined(__FMA__)
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
inline VecF vmul(VecF a, VecF b) {
  return _mm256_mul_ps(a, b);
}
inline VecF vset1(float x) {
  return _mm256_set1_ps(x);
}
inline float vsum(VecF a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline VecF vload_bf16(const uint16_t* p) {
  const __m256i wide = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(wide, 16));
}
inline VecF vload_q8(const int8_t* p) {
  return _mm256_cvtepi32_ps(
      _mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
#define GAINCELL_HAVE_VECTOR_GEMV 1
#endif

#ifdef GAINCELL_HAVE_VECTOR_GEMV
static_assert(kQ8BlockSize % kLanes == 0, "a q8 block is a whole number of vectors");

template <int R>
void rows_f32(const float* w, size_t stride, const float* x, int n, float* y) {
  VecF acc[R];
  for (int i = 0; i < R; ++i) acc[i] = vzero();
  int c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    const VecF xv = vload(x + c);
    for (int i = 0; i < R; ++i) acc[i] = vfmadd(vload(w + i * stride + c), xv, acc[i]);
  }
  for (int i = 0; i < R; ++i) y[i] = vsum(acc[i]) + dot_f32_portable(w + i * stride, x, c, n);
}

template <int R>
void rows_bf16(const uint16_t* w, size_t stride, const float* x, int n, float* y) {
  VecF acc[R];
  for (int i = 0; i < R; ++i) acc[i] = vzero();
  int c = 0;
  for (; c + kLanes <= n; c += kLanes) {
    const VecF xv = vload(x + c);
    for (int i = 0; i < R; ++i) acc[i] = vfmadd(vload_bf16(w + i * stride + c), xv, acc[i]);
  }
  for (int i = 0; i < R; ++i) y[i] = vsum(acc[i]) + dot_bf16_portable(w + i * stride, x, c, n);
}

// Per block: the products of the block's weights with x summed in a vector, then scaled once.
template <int R>
void rows_q8(const int8_t* q, size_t stride, const float* scales, size_t scale_stride,
             const float* x, int n, float* y) {
  VecF acc[R];
  for (int i = 0; i < R; ++i) acc[i] = vzero();
  const int full = n / kQ8BlockSize;
  for (int b = 0; b < full; ++b) {
    const int c = b * kQ8BlockSize;
    VecF xv[kQ8BlockSize / kLanes];
    for (int k = 0; k < kQ8BlockSize / kLanes; ++k) xv[k] = vload(x + c + k * kLanes);
    for (int i = 0; i < R; ++i) {
      const int8_t* row = q + i * stride + c;
      VecF block = vmul(vload_q8(row), xv[0]);
      for (int k = 1; k < kQ8BlockSize / kLanes; ++k)
        block = vfmadd(vload_q8(row + k * kLanes), xv[k], block);
      acc[i] = vfmadd(vset1(scales[i * scale_stride + b]), block, acc[i]);
    }
  }
  for (int i = 0; i < R; ++i)
    y[i] = vsum(acc[i]) + dot_q8_portable(q + i * stride, scales + i * scale_stride, x, full, n);
}
#else
template <int R>
void rows_f32(const float* w, size_t stride, const float* x, int n, float* y) {
  for (int i = 0; i < R; ++i) y[i] = dot_f32_portable(w + i * stride, x, 0, n);
}
template <int R>
void rows_bf16(const uint16_t* w, size_t stride, const float* x, int n, float* y) {
  for (int i = 0; i < R; ++i) y[i] = dot_bf16_portable(w + i * stride, x, 0, n);
}
template <int R>
void rows_q8(const int8_t* q, size_t stride, const float* scales, size_t scale_stride,
             const float* x, int n, float* y) {
  for (int i = 0; i < R; ++i)
    y[i] = dot_q8_portable(q + i * stride, scales + i * scale_stride, x, 0, n);
}
#endif

}  // namespace

template <int R>
void PackedMatrix::rows_dot(int r0, const float* x, float* y) const {
  const size_t base = static_cast<size_t>(r0) * cols_;
  switch (format_) {
    case WeightFormat::kF32:
      rows_f32<R>(f32_.data() + base, cols_, x, cols_, y);
      return;
    case WeightFormat::kBF16:
      rows_bf16<R>(bf16_.data() + base, cols_, x, cols_, y);
      return;
    case WeightFormat::kQ8:
      rows_q8<R>(q8_.data() + base, cols_,
                 scales_.data() + static_cast<size_t>(r0) * blocks_per_row(), blocks_per_row(), x,
                 cols_, y);
      return;
  }
}

void PackedMatrix::gemv(const float* x, float* y, bool accumulate) const {
  const int64_t work = static_cast<int64_t>(rows_) * cols_;
  const int passes = (rows_ + kRowsPerPass - 1) / kRowsPerPass;
  // Passes in chunks of about 64k weights handed out dynamically: a thread that the scheduler
  // delays (a shared machine) holds up at most one chunk, not half of the matrix.
  const int chunk =
      std::max(1, static_cast<int>((int64_t{1} << 16) / (int64_t{kRowsPerPass} * cols_)));
#pragma omp parallel for schedule(dynamic, chunk) if (work >= kParallelMin)
  for (int p = 0; p < passes; ++p) {
    const int r0 = p * kRowsPerPass;
    float v[kRowsPerPass];
    const int R = std::min(kRowsPerPass, rows_ - r0);
    if (R == kRowsPerPass) {
      rows_dot<kRowsPerPass>(r0, x, v);
    } else {
      for (int i = 0; i < R; ++i) rows_dot<1>(r0 + i, x, v + i);
    }
    for (int i = 0; i < R; ++i) y[r0 + i] = accumulate ? y[r0 + i] + v[i] : v[i];
  }
}

void PackedMatrix::dequantize_rows(int r0, int r1, float* out) const {
  const int64_t work = static_cast<int64_t>(r1 - r0) * cols_;
#pragma omp parallel for schedule(static) if (work >= kParallelMin)
  for (int r = r0; r < r1; ++r) {
    const size_t base = static_cast<size_t>(r) * cols_;
    float* o = out + static_cast<size_t>(r - r0) * cols_;
    switch (format_) {
      case WeightFormat::kF32:
        std::copy(f32_.begin() + base, f32_.begin() + base + cols_, o);
        break;
      case WeightFormat::kBF16:
#pragma omp simd
        for (int c = 0; c < cols_; ++c)
          o[c] = std::bit_cast<float>(static_cast<uint32_t>(bf16_[base + c]) << 16);
        break;
      case WeightFormat::kQ8: {
        const float* s = scales_.data() + static_cast<size_t>(r) * blocks_per_row();
        for (int c = 0; c < cols_; ++c)
          o[c] = s[c / kQ8BlockSize] * static_cast<float>(q8_[base + c]);
        break;
      }
    }
  }
}

void packed_gemv_reference(const PackedMatrix& m, const float* x, float* y, bool accumulate) {
  for (int r = 0; r < m.rows(); ++r) {
    double s = 0.0;
    for (int c = 0; c < m.cols(); ++c) s += static_cast<double>(m.at(r, c)) * x[c];
    y[r] = static_cast<float>(accumulate ? y[r] + s : s);
  }
}

void packed_matmul(float* out, const float* inp, const PackedMatrix& m, int64_t N,
                   bool accumulate) {
  // Blocks of rows of at most ~4M weights (16 MB of fp32 scratch): one block for every GPT-2
  // projection, a dozen for a 50k-token LM head.
  constexpr int64_t kScratchFloats = int64_t{4} << 20;
  const int cols = m.cols(), rows = m.rows();
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
