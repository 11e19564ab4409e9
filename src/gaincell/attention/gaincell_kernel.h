// Whole-sequence gain-cell attention core of ONE head (spec §3.5, §3.6, §4, §11 item 7): the
// masked T x T form used for training and evaluation, forward and backward.
//
// Inputs are the hardware signals after the q/k/v range scalers, clamps and quantisers (§3.2):
// Q pulse widths [T][D] in units of Tmax, K and V stored voltages [T][D] in volts. The output O
// [T][D] is the digital sum of the sub-tile outputs BEFORE the output scaler (§1.2 step 8).
//
//   y = V - offset, decay_tj = exp(-lambda (t - j)), f = the cell model (gain_cell.h)
//   S_tj   = sum_d Q_td f(decay_tj y^K_jd)          keys j in the window [t-M+1, t], else 0
//   phi_tj = clip(sign S_tj / s_sat, 0, 1)           sign = -1 for the inverted polarity (§3.9)
//   A_tau  = sum_{j in tile tau} phi_tj f(decay_tj y^V_jd),  tau = (j mod M) div array_size
//   O_t    = sum_tau Qz_out(clip(sign A_tau / a_sat, -1, 1))            (per-tile mode, §3.5)
//          = n_t Qz_out(clip(sign sum_tau A_tau / (n_t a_sat), -1, 1))  (tile-mean mode, §3.7)
//
// Masked keys have phi = 0 exactly, so they add nothing, not even the alpha_0 offset (§12 item
// 17). For f polynomial, f(decay y) = sum_i alpha_i decay^i y^i (the code's decay^i, §2.3).
//
// Backward (spec §4): straight-through output quantiser, clamp gradients (closed intervals),
// and the linear surrogate of both MACs, slope A = linear_amplitude and decay^1:
//   dphi = A (G y^V^T) . D,  dy^V = A (phi . D)^T G,  dQ = A (dS . D) y^K,  dy^K = A (dS . D)^T Q
// which is the exact gradient for the linear cell.
#pragma once

#include <cstdint>
#include <vector>

#include "gaincell/device/gain_cell.h"
#include "gaincell/device/quantizer.h"
#include "gaincell/hw/hw_config.h"

namespace gaincell {

// The constants of one hardware configuration in the form the kernels use.
struct GainCellKernelParams {
  explicit GainCellKernelParams(const HwConfig& hw);

  HwConfig hw;
  GainCell cell;
  std::array<double, 4> poly{};  // alpha_i when cell.is_polynomial()
  float k_offset, v_offset;
  float s_sat, a_sat;
  float surrogate_slope;  // 19.3
  double lambda;          // per token, 0 = no leakage
  int tile;               // array_size
  int window;             // M
  float sign;             // +1 normal, -1 inverted polarity
  OutputQuantMode out_mode;
  Quantizer out_q;
  // Read noise beyond the paper (hw.noise; spec §2.6 has none): additive N(0, sigma) on the
  // polarity-applied S before phi and on each sub-tile's raw A before the output stage,
  // sigma = level or level * |signal| (relative). Draws are gaincell/device/noise.h events
  // (kReadS: (t, j), kReadA: (t, tile * D + d)) of the head's seed, the same numbers HeadArray
  // draws, so both simulations agree with noise on. The gradient is the exact derivative of
  // x + level |x| n (1 + level sgn(x) n; 1 for absolute noise).
  double read_noise_s = 0.0, read_noise_a = 0.0;
  bool read_noise_relative = true;
  // Cell-to-cell variation of the leakage rate (hw.noise.leakage_variation): cell (slot, d) of
  // the K (V) array leaks with lambda * factor, factor = cell_variation_factor(kLeakK (kLeakV)),
  // as in HeadArray. The decay is then not separable: the kernels take the plain-loop path.
  double leakage_variation = 0.0;
  // Refresh policy (hw.leakage.refresh_interval_tokens): a cell's age restarts every
  // refresh_tokens tokens; 0 = none.
  int64_t refresh_tokens = 0;
  // Age since the last write or refresh of a key written `age` tokens before the query.
  double age(int64_t a) const {
    return static_cast<double>(refresh_tokens > 0 ? a % refresh_tokens : a);
  }

  int physical_tiles() const { return window / tile; }
  // Tiles that hold at least one key of query t's window: min(t div tile + 1, M / tile).
  int tiles_in_use(int t) const;
  // Bytes of the clip mask that forward() writes for backward(): one byte per (t, tile, d)
  // in per-tile mode (tiles = min(ceil(T/tile), M/tile)), per (t, d) in tile-mean mode.
  size_t clip_mask_size(int T, int D) const;
};

// Scratch buffers of one head's kernel, one per thread, kept by the caller and reused across
// calls (they only grow).
struct GainCellWorkspace {
  // Inputs scaled per decay power ([T][P*D]), the query row scales ([P][T]) and row sums ([T]).
  std::vector<float> q_scaled, k_scaled, v_scaled, row_scales, q_row_sum;
  // One block of query rows against one tile of keys: scores S and pulses phi ([rows][tile]).
  std::vector<float> scores, phi;
  // Forward: the pulses scaled per decay term ([rows][tile*P + 1]), the tile outputs
  // ([rows][D]), the per-block carries ([blocks][tile][D]) and the tile-mean sums ([T][D]).
  std::vector<float> v_products, tile_out, carry, mean_sum;
  // Backward: dS ([rows][max(tile, D)]), the gradient of the tile sums ([rows][D]), K and V with
  // their leakage ([T][D]), the two query-side decay scales ([2][T]) and the d phi / d S factors.
  std::vector<float> d_scores, d_tile, k_leaked, v_leaked, decay_scales, s_factor;
};

// Fast kernel: tiled by array_size keys, every MAC a few sgemm calls thanks to the factorised
// decay exp(-lambda (t-j))^i = exp(-i lambda (t-c)) exp(i lambda (j-c)).
// clip_mask: clip_mask_size(T, D) bytes or null (no backward needed).
// noise_seed: the head's seed (head_noise_seed), used only when read noise is on.
void gaincell_head_forward(const GainCellKernelParams& p, const float* Q, const float* K,
                           const float* V, int T, int D, float* O, uint8_t* clip_mask,
                           GainCellWorkspace& ws, uint64_t noise_seed = 0);
// The sgemm terms of the factorised form at length T: the QK and AV products each run as one
// GEMM of depth terms * D (3 for the leaky paper-nonlinear polynomial, 1 for the linear cell or
// without leakage), i.e. terms times a softmax head's multiply-adds; 0 when the form does not
// apply (plain loops). The benchmarks count the gain-cell attention's work with it.
int gaincell_gemm_terms(const GainCellKernelParams& p, int T);
// Whether the fast kernel's factorised form applies (else both functions above run the plain
// loops, and the rows of a head cannot be split).
bool gaincell_rows_separable(const GainCellKernelParams& p, int T);
// The fast forward of query rows [row_begin, row_end) only, for threading a head over row
// ranges: writes those rows of O [T][D] and of clip_mask (null: none); the rows are independent,
// so ranges may run concurrently with their own workspaces. Requires gaincell_rows_separable.
void gaincell_head_forward_rows(const GainCellKernelParams& p, const float* Q, const float* K,
                                const float* V, int T, int D, int row_begin, int row_end, float* O,
                                uint8_t* clip_mask, GainCellWorkspace& ws, uint64_t noise_seed = 0);
// dO: dL/dO [T][D] (O before the output scaler). Writes dQ, dK, dV (gradients w.r.t. the
// scaled/clamped/quantised signals; straight-through for the quantisers).
void gaincell_head_backward(const GainCellKernelParams& p, const float* Q, const float* K,
                            const float* V, int T, int D, const float* dO, const uint8_t* clip_mask,
                            float* dQ, float* dK, float* dV, GainCellWorkspace& ws,
                            uint64_t noise_seed = 0);

// Plain loop-level reference of the same math (double accumulation), the oracle of the fast
// kernel. Optional named intermediates: S and phi [T][T] (0 outside the window).
void reference_gaincell_forward(const GainCellKernelParams& p, const float* Q, const float* K,
                                const float* V, int T, int D, float* O,
                                std::vector<double>* S = nullptr,
                                std::vector<double>* phi = nullptr, uint64_t noise_seed = 0);
void reference_gaincell_backward(const GainCellKernelParams& p, const float* Q, const float* K,
                                 const float* V, int T, int D, const float* dO, float* dQ,
                                 float* dK, float* dV, uint64_t noise_seed = 0);

}  // namespace gaincell
