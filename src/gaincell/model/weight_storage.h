// Reduced-precision storage of the digital layers' weight matrices for inference (issue 14 item
// 3). Decode is memory-bound: every weight is read once per token, so storing the matrices in
// fewer bytes raises the token rate almost in proportion. Activations, the simulated arrays and
// every accumulation stay fp32; only the stored weights are rounded.
//
//   f32   4 bytes per weight (the model's own parameters, no packed copy)
//   bf16  2 bytes: the upper half of the fp32 value, rounded to nearest even
//   q8    1.0625 bytes: ggml's Q8_0 layout. Blocks of 32 consecutive weights of a row share one
//         fp16 scale d, the smallest fp16 value at or above max|w| / 127 (rounded up so that no
//         weight needs more than 127 steps), and store q = round(w / d) as int8, w ~ d q: 34
//         bytes per 32 weights. The activations a q8 matrix multiplies are quantised per block of
//         32 as well (with an fp32 scale max|x| / 127: they are computed per product, never
//         stored) and the products of a block summed exactly in integers (Q8_0 x Q8_0), in
//         decode and whole-sequence forwards alike.
//
// A PackedMatrix is the matrix M[rows][cols] of y = M x (rows = outputs), stored row-major so a
// matrix-vector product streams each row once and the blocks run along the input dimension. q8
// and bf16 interleave each group of kTileGroupRows rows by tiles of 64 bytes (below), so the
// kernel that multiplies those rows together reads one sequential stream.
// Conv1D weights W[in][out] (y = x W) are packed from their transpose (from_columns).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "gaincell/core/huge_pages.h"

namespace gaincell {

enum class WeightFormat { kF32, kBF16, kQ8 };

// "f32", "bf16", "q8"; anything else is a gaincell::Error listing the names.
WeightFormat parse_weight_format(std::string_view name);
std::string to_string(WeightFormat format);

constexpr int kQ8BlockSize = 32;
// The storage order of q8 and bf16. Rows come in groups of kTileGroupRows (the rows one pass of
// the decode kernels multiplies together); a group's values are its 64-byte tiles in column order
// (kQ8TileCols = 64 q8 columns, two blocks; kBf16TileCols = 32 bf16 columns), each tile the
// group's rows one after another, then the columns past the last whole tile, row by row. Rows
// past the last whole group are stored row-major. q8's scales stay [rows][blocks].
// Row-major storage made those kernels read four interleaved streams a row apart (768 bytes for
// GPT-2 124M's q8 rows), which the prefetchers of the development machine (AMD EPYC, 2 cores,
// 32 MB L3) followed at 23-25 GB/s where one sequential stream ran at 33-37 (a standalone q8
// kernel on 130 MB of 768-column rows, two threads; 3072-column rows were about equal either way).
constexpr int kTileGroupRows = 4;
constexpr int kQ8TileCols = 2 * kQ8BlockSize;
constexpr int kBf16TileCols = 32;

// Quantises v[0 .. n) (n <= kQ8BlockSize) to q[i] = round(v[i] / d), |q| <= 127, and returns the
// block's fp32 scale d = max|v| / 127 (0 for an all-zero block, then q = 0; NaN when v holds a
// NaN or infinity, then q = 0). The activations' rule (Q8Vector).
float quantize_q8_block(const float* v, int n, int8_t* q);

// The weights' rule: the block's fp16 scale d (returned as its bits) is max|v| / 127 rounded up
// to the next fp16 value (0 for an all-zero block; a NaN for a block with a NaN or infinity, whose
// products are then NaN), and q[i] = round(v[i] / d). Rounding the scale up keeps |v| / d <= 127,
// so no weight is clamped and each is within d / 2 of d q. A block whose max|v| / 127 exceeds
// the largest fp16 (65504) has no such scale: callers check first (first_q8_overflow).
uint16_t quantize_q8_weight_block(const float* v, int n, int8_t* q);

// The largest magnitude a q8 weight may have: max|w| / 127 must fit an fp16 scale (65504).
constexpr float kQ8MaxWeight = 127.0f * 65504.0f;
// Index of the first finite v[i] that q8 cannot store (|v[i]| / 127 > 65504), or -1.
int64_t first_q8_overflow(const float* v, int64_t n);
// The gaincell::Error for such a weight: `where` (e.g. "tensor 'x', element 7") holds `value`,
// too large for q8, and the formats that can hold it.
[[noreturn]] void throw_q8_weight_too_large(const std::string& where, float value);

// The activation vector of a q8 x q8 product: x[0 .. n) quantised per block of kQ8BlockSize.
struct Q8Vector {
  int n = 0;
  std::vector<int8_t> q;  // [blocks * kQ8BlockSize], zero after n
  std::vector<float> d;   // [blocks]
  void quantize(const float* x, int length);
  float at(int i) const { return d[i / kQ8BlockSize] * static_cast<float>(q[i]); }
};

struct GemvInput;  // x as the kernels of one format read it (weight_storage.cpp)

// Where a q8 or bf16 row's values lie in a PackedMatrix's storage (kTileGroupRows above), as
// element offsets: tile t (columns [T t, T t + T), T the format's tile width) at first_tile +
// t * tile_step, the columns past the last whole tile at tail, contiguous. Within a group of rows,
// the next row's places are these plus row_step (tiles) and tail_step (tail).
struct TilePlace {
  size_t first_tile, tile_step, row_step, tail, tail_step;
};

class PackedMatrix {
 public:
  PackedMatrix() = default;
  // M = m, m row-major [rows][cols].
  static PackedMatrix from_rows(WeightFormat format, const float* m, int rows, int cols);
  // M = wᵀ for a Conv1D weight w row-major [cols][rows] (y = x w).
  static PackedMatrix from_columns(WeightFormat format, const float* w, int rows, int cols);
  // An all-zero M whose rows are then packed piecewise (pack_rows, pack_columns): a checkpoint
  // loaded straight into packed storage, one tensor or chunk of rows at a time, so that no fp32
  // copy of the whole matrix is ever held. Packing row by row rounds exactly as from_rows does.
  static PackedMatrix zeros(WeightFormat format, int rows, int cols);
  // Rows [r0, r0 + n) of M from m row-major [n][cols]. For q8, a finite weight too large for an
  // fp16 block scale (first_q8_overflow) is a gaincell::Error naming its row and column of M,
  // raised before anything is packed.
  void pack_rows(int r0, int n, const float* m);
  // Rows [r0, r0 + n) of M from the columns of w row-major [cols][n] (a Conv1D weight, M = wᵀ).
  // The q8 error names w's element as well as M's.
  void pack_columns(int r0, int n, const float* w);
  // fp32 views that copy nothing (fp32 decode reads the model's parameters in place through the
  // same team kernels): M = m, m row-major [rows][cols] (nn.Linear weights, LM heads), or M = wᵀ
  // for w row-major [cols][rows] (GPT-2's Conv1D weights; a column kernel streams w's rows). The
  // viewed memory must outlive the view.
  static PackedMatrix view_rows(const float* m, int rows, int cols);
  static PackedMatrix view_columns(const float* w, int rows, int cols);

  WeightFormat format() const { return format_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  size_t bytes() const;  // storage of the packed values and scales (0 for a view)

  // y[r] = sum_c M[r][c] x[c] (+ y[r] when accumulate). Rows split over OpenMP threads. For q8,
  // x is first quantised per block (Q8Vector) and each block's products summed in integers.
  void gemv(const float* x, float* y, bool accumulate) const;
  // gemv in two parts for a caller that runs many products inside one OpenMP parallel region
  // (decode): one thread prepares x (the returned input lives in that thread's scratch until its
  // next prepare()), then, after a barrier, every thread of the team calls gemv_team with it. Rows
  // are shared out over the team (an orphaned guided `omp for nowait`; column views: one span of
  // outputs per thread): no barrier ends gemv_team, the caller synchronises before reading y.
  // Outside a parallel region gemv_team runs all rows.
  // With a bias, y[r] = (y[r] (accumulate) or 0) + bias[r] + (M x)[r].
  const GemvInput& prepare(const float* x) const;
  void gemv_team(const GemvInput& x, float* y, bool accumulate, const float* bias = nullptr) const;
  // Rows [r0, r1) of M as fp32 into out, row-major [r1 - r0][cols].
  void dequantize_rows(int r0, int r1, float* out) const;
  // One element, for tests and the plain reference.
  float at(int r, int c) const;

 private:
  void pack_row(int r, const float* row);
  // The error of pack_rows and pack_columns for a weight q8 cannot hold, at M[row][col]. From
  // pack_columns (w_first_row = its r0: M's rows from there are w's columns) it names the Conv1D
  // weight's own element [col][row - w_first_row] first.
  [[noreturn]] void throw_q8_too_large(int row, int col, float value, int w_first_row = -1) const;
  // y[0 .. R) = rows r0 .. r0 + R - 1 of M times x (the vector kernels of gemv).
  // x is the activation vector prepared for the format (GemvInput in the .cpp).
  template <int R>
  void rows_dot(int r0, const GemvInput& x, float* y) const;
  // gemv_team of a column view: each thread takes one contiguous span of the outputs and streams
  // its part of every row of w (columns_span in the .cpp).
  void columns_gemv_team(const float* x, float* y, bool accumulate, const float* bias) const;
  const float* f32_data() const { return view_ != nullptr ? view_ : f32_.data(); }
  int blocks_per_row() const { return (cols_ + kQ8BlockSize - 1) / kQ8BlockSize; }
  // q8 and bf16 storage (kTileGroupRows).
  int tile_cols() const { return format_ == WeightFormat::kQ8 ? kQ8TileCols : kBf16TileCols; }
  int whole_tile_cols() const { return cols_ / tile_cols() * tile_cols(); }
  TilePlace tile_place(int r) const;
  size_t tiled_index(int r, int c) const;  // where M[r][c] lies in q8_ or bf16_
  // Row r of data (q8_ or bf16_) in column order into out[cols]; and back.
  template <typename T>
  void gather_row(const T* data, int r, T* out) const;
  template <typename T>
  void place_row(T* data, int r, const T* row) const;
  WeightFormat format_ = WeightFormat::kF32;
  int rows_ = 0, cols_ = 0;
  HugePageVector<uint16_t> bf16_;    // rows x cols, in tiles (kTileGroupRows)
  HugePageVector<int8_t> q8_;        // rows x cols, in tiles
  HugePageVector<uint16_t> scales_;  // [rows][blocks_per_row], fp16 bits
  HugePageVector<float> f32_;        // [rows][cols], only for format f32 (tests, uniform handling)
  const float* view_ = nullptr;      // a view's fp32 data: [rows][cols], or [cols][rows] (columns_)
  bool columns_ = false;
};

// Plain loops over at() (and, for q8, over the quantised x: Q8Vector), summed in double: the
// reference the fast gemv is tested against.
void packed_gemv_reference(const PackedMatrix& m, const float* x, float* y, bool accumulate);

// out[N][rows] = inp[N][cols] · Mᵀ (+ out when accumulate): dequantises blocks of rows into fp32
// scratch and multiplies them with sgemm, so whole-sequence forwards stay GEMM-bound. For q8 the
// input rows are first replaced by their per-block quantised values (Q8Vector::at), so a
// whole-sequence forward computes the products decode's integer kernels do (to fp32 rounding).
void packed_matmul(float* out, const float* inp, const PackedMatrix& m, int64_t N, bool accumulate);

}  // namespace gaincell
