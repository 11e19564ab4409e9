#include "gaincell/model/weight_storage.h"

#include <algorithm>
#include <bit>
#include <cmath>
#include <string>

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

// The fast row kernels keep kQ8BlockSize partial sums so the compiler vectorises the inner loop
// without a horizontal reduction per block.
float dot_f32(const float* w, const float* x, int n) {
  float acc[kQ8BlockSize] = {};
  int c = 0;
  for (; c + kQ8BlockSize <= n; c += kQ8BlockSize) {
#pragma omp simd
    for (int i = 0; i < kQ8BlockSize; ++i) acc[i] += w[c + i] * x[c + i];
  }
  float s = 0.0f;
  for (; c < n; ++c) s += w[c] * x[c];
  for (float a : acc) s += a;
  return s;
}

float dot_bf16(const uint16_t* w, const float* x, int n) {
  float acc[kQ8BlockSize] = {};
  int c = 0;
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

float dot_q8(const int8_t* q, const float* scales, const float* x, int n) {
  float acc[kQ8BlockSize] = {};
  int c = 0, b = 0;
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

}  // namespace

void PackedMatrix::gemv(const float* x, float* y, bool accumulate) const {
  const int64_t work = static_cast<int64_t>(rows_) * cols_;
#pragma omp parallel for schedule(static) if (work >= kParallelMin)
  for (int r = 0; r < rows_; ++r) {
    const size_t base = static_cast<size_t>(r) * cols_;
    float v = 0.0f;
    switch (format_) {
      case WeightFormat::kF32:
        v = dot_f32(f32_.data() + base, x, cols_);
        break;
      case WeightFormat::kBF16:
        v = dot_bf16(bf16_.data() + base, x, cols_);
        break;
      case WeightFormat::kQ8:
        v = dot_q8(q8_.data() + base, scales_.data() + static_cast<size_t>(r) * blocks_per_row(), x,
                   cols_);
        break;
    }
    y[r] = accumulate ? y[r] + v : v;
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
