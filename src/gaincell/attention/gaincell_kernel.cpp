#include "gaincell/attention/gaincell_kernel.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "gaincell/core/blas.h"
#include "gaincell/core/error.h"
#include "gaincell/device/noise.h"

namespace gaincell {

GainCellKernelParams::GainCellKernelParams(const HwConfig& h)
    : hw(h),
      cell(h),
      k_offset(static_cast<float>(h.k_offset)),
      v_offset(static_cast<float>(h.v_offset)),
      s_sat(static_cast<float>(h.s_sat)),
      a_sat(static_cast<float>(h.a_sat)),
      surrogate_slope(static_cast<float>(h.linear_amplitude)),
      lambda(h.leakage.effective_lambda()),
      tile(h.array_size),
      window(h.window),
      sign(h.polarity == Polarity::kInverted ? -1.0f : 1.0f),
      out_mode(h.out_mode),
      out_q(h.out, h.out_grid == OutputGrid::kCounter),
      read_noise_s(h.noise.read_noise_s),
      read_noise_a(h.noise.read_noise_a),
      read_noise_relative(h.noise.read_noise_relative),
      leakage_variation(h.noise.leakage_variation),
      refresh_tokens(h.leakage.refresh_interval_tokens) {
  h.validate();
  if (cell.is_polynomial()) poly = cell.poly();
}

int GainCellKernelParams::tiles_in_use(int t) const {
  return std::min(t / tile + 1, physical_tiles());
}

size_t GainCellKernelParams::clip_mask_size(int T, int D) const {
  if (out_mode == OutputQuantMode::kTileMean) return static_cast<size_t>(T) * D;
  const int used = std::min((T + tile - 1) / tile, physical_tiles());
  return static_cast<size_t>(T) * used * D;
}

// ---------------------------------------------------------------------------------------------
// Read noise (shared by the reference and the fast kernel).

namespace {

// x + sigma n with sigma = level (absolute) or level |x| (relative); *factor receives
// d(noisy)/dx = 1 + level sgn(x) n (relative) or 1.
inline double add_read_noise(double level, bool relative, double x, double n, double* factor) {
  if (factor) *factor = relative ? 1.0 + level * ((x > 0) - (x < 0)) * n : 1.0;
  return x + read_noise_std(level, relative, x) * n;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Reference: plain loops, double accumulation, no factorisation, any cell model.

namespace {

// The window of query t: keys [first_key(t), t] (spec §3.1 WindowMaskGeneration).
int first_key(int t, int window) {
  return std::max(0, t - window + 1);
}

// Per-cell leakage-rate factors of one array of the head, [slot][d] for the slots keys
// 0..T-1 occupy (empty without leakage variation: every cell leaks with lambda).
std::vector<float> leak_factors(const GainCellKernelParams& p, uint64_t seed, NoiseStream stream,
                                int T, int D) {
  std::vector<float> f;
  if (p.leakage_variation == 0.0 || p.lambda == 0.0) return f;
  const int slots = std::min(T, p.window);
  f.resize(static_cast<size_t>(slots) * D);
  for (int slot = 0; slot < slots; ++slot)
    for (int d = 0; d < D; ++d)
      f[static_cast<size_t>(slot) * D + d] =
          cell_variation_factor(p.leakage_variation, seed, stream, slot, d, true);
  return f;
}

// Decay of cell (key j, dim d) read at query t: `common` (every cell leaks with lambda), or with
// that cell's own leakage rate when the factors are drawn; the K side (is_key) as the QK stage
// rounds it (LeakageConfig::qk_decay).
inline double cell_decay(const GainCellKernelParams& p, const std::vector<float>& factors,
                         double common, int t, int j, int d, int D, bool is_key) {
  if (factors.empty()) return common;
  const double rate = p.lambda * factors[static_cast<size_t>(j % p.window) * D + d];
  return is_key ? p.hw.leakage.qk_decay(rate, p.age(t - j)) : std::exp(-rate * p.age(t - j));
}

// S (with read noise, stored without the polarity sign: phi = clip(sign S / s_sat, 0, 1)), phi,
// and the read-noise gradient factor of every (t, j) in the window.
void reference_scores(const GainCellKernelParams& p, const float* Q, const float* K, int T, int D,
                      uint64_t seed, std::vector<double>& S, std::vector<double>& phi,
                      std::vector<double>* factor = nullptr) {
  S.assign(static_cast<size_t>(T) * T, 0.0);
  phi.assign(static_cast<size_t>(T) * T, 0.0);
  if (factor) factor->assign(static_cast<size_t>(T) * T, 1.0);
  const std::vector<float> leak = leak_factors(p, seed, NoiseStream::kLeakK, T, D);
  for (int t = 0; t < T; ++t) {
    for (int j = first_key(t, p.window); j <= t; ++j) {
      const size_t tj = static_cast<size_t>(t) * T + j;
      const double decay = p.hw.leakage.qk_decay(p.lambda, p.age(t - j));
      double s = 0.0;
      for (int d = 0; d < D; ++d) {
        const double dec = cell_decay(p, leak, decay, t, j, d, D, true);
        s += static_cast<double>(Q[t * D + d]) * p.cell.current(dec * (K[j * D + d] - p.k_offset));
      }
      double signed_s = p.sign * s;
      if (p.read_noise_s != 0.0) {
        const double n = standard_normal(seed, NoiseStream::kReadS, t, j);
        signed_s = add_read_noise(p.read_noise_s, p.read_noise_relative, signed_s, n,
                                  factor ? &(*factor)[tj] : nullptr);
      }
      S[tj] = p.sign * signed_s;
      phi[tj] = std::clamp(signed_s / p.s_sat, 0.0, 1.0);
    }
  }
}

// A of row t per physical sub-tile, with read noise on the tiles in use; factor: its gradient.
void reference_tile_sums(const GainCellKernelParams& p, const float* V, int T, int D, int t,
                         uint64_t seed, const std::vector<double>& phi,
                         const std::vector<float>& leak, std::vector<double>& A,
                         std::vector<double>* factor = nullptr) {
  A.assign(static_cast<size_t>(p.physical_tiles()) * D, 0.0);
  if (factor) factor->assign(A.size(), 1.0);
  for (int j = first_key(t, p.window); j <= t; ++j) {
    const double ph = phi[static_cast<size_t>(t) * T + j];
    if (ph == 0.0) continue;  // masked and non-firing keys add nothing (spec §12 item 17)
    const double decay = std::exp(-p.lambda * p.age(t - j));
    const int tau = (j % p.window) / p.tile;  // slot-based sub-tile (spec §11 item 7)
    for (int d = 0; d < D; ++d) {
      const double dec = cell_decay(p, leak, decay, t, j, d, D, false);
      A[tau * D + d] += ph * p.cell.current(dec * (V[j * D + d] - p.v_offset));
    }
  }
  if (p.read_noise_a == 0.0) return;
  for (int tau = 0; tau < p.tiles_in_use(t); ++tau) {
    for (int d = 0; d < D; ++d) {
      const double n =
          standard_normal(seed, NoiseStream::kReadA, t, static_cast<uint64_t>(tau) * D + d);
      A[tau * D + d] = add_read_noise(p.read_noise_a, p.read_noise_relative, A[tau * D + d], n,
                                      factor ? &(*factor)[tau * D + d] : nullptr);
    }
  }
}

}  // namespace

void reference_gaincell_forward(const GainCellKernelParams& p, const float* Q, const float* K,
                                const float* V, int T, int D, float* O, std::vector<double>* S_out,
                                std::vector<double>* phi_out, uint64_t seed) {
  std::vector<double> S, phi, A;
  reference_scores(p, Q, K, T, D, seed, S, phi);
  const std::vector<float> v_leak = leak_factors(p, seed, NoiseStream::kLeakV, T, D);
  for (int t = 0; t < T; ++t) {
    reference_tile_sums(p, V, T, D, t, seed, phi, v_leak, A);
    const int n = p.tiles_in_use(t);
    for (int d = 0; d < D; ++d) {
      double o = 0.0;
      if (p.out_mode == OutputQuantMode::kPerTile) {
        for (int tau = 0; tau < p.physical_tiles(); ++tau)
          o += p.out_q(static_cast<float>(p.sign * A[tau * D + d] / p.a_sat));
      } else {
        double sum = 0.0;
        for (int tau = 0; tau < p.physical_tiles(); ++tau) sum += A[tau * D + d];
        o = n * p.out_q(static_cast<float>(p.sign * sum / (n * p.a_sat)));
      }
      O[t * D + d] = static_cast<float>(o);
    }
  }
  if (S_out) *S_out = std::move(S);
  if (phi_out) *phi_out = std::move(phi);
}

void reference_gaincell_backward(const GainCellKernelParams& p, const float* Q, const float* K,
                                 const float* V, int T, int D, const float* dO, float* dQ,
                                 float* dK, float* dV, uint64_t seed) {
  std::vector<double> S, phi, s_factor, A, a_factor, G(static_cast<size_t>(p.physical_tiles()) * D);
  std::vector<double> gq(static_cast<size_t>(T) * D, 0.0), gk(gq), gv(gq);
  reference_scores(p, Q, K, T, D, seed, S, phi, &s_factor);
  const std::vector<float> k_leak = leak_factors(p, seed, NoiseStream::kLeakK, T, D);
  const std::vector<float> v_leak = leak_factors(p, seed, NoiseStream::kLeakV, T, D);
  const double slope = p.surrogate_slope;
  for (int t = 0; t < T; ++t) {
    reference_tile_sums(p, V, T, D, t, seed, phi, v_leak, A, &a_factor);
    const int n = p.tiles_in_use(t);
    // G = dL/dA per tile: straight-through quantiser, clamp gradient at +-1 (spec §4), read noise.
    for (int d = 0; d < D; ++d) {
      double sum = 0.0;
      for (int tau = 0; tau < p.physical_tiles(); ++tau) sum += A[tau * D + d];
      for (int tau = 0; tau < p.physical_tiles(); ++tau) {
        const double x = p.out_mode == OutputQuantMode::kPerTile ? p.sign * A[tau * D + d] / p.a_sat
                                                                 : p.sign * sum / (n * p.a_sat);
        G[tau * D + d] = (x >= -1.0 && x <= 1.0)
                             ? dO[t * D + d] * p.sign / p.a_sat * a_factor[tau * D + d]
                             : 0.0;
      }
    }
    for (int j = first_key(t, p.window); j <= t; ++j) {
      const size_t tj = static_cast<size_t>(t) * T + j;
      const double decay = std::exp(-p.lambda * p.age(t - j));
      const double key_decay = p.hw.leakage.qk_decay(p.lambda, p.age(t - j));
      const int tau = (j % p.window) / p.tile;
      // Surrogate AV (spec §4): dphi = A (G (V-0.45)^T) . D, dV = A (phi . D)^T G.
      double dphi = 0.0;
      for (int d = 0; d < D; ++d) {
        const double dec = cell_decay(p, v_leak, decay, t, j, d, D, false);
        dphi += dec * G[tau * D + d] * (V[j * D + d] - p.v_offset);
        gv[j * D + d] += slope * dec * phi[tj] * G[tau * D + d];
      }
      dphi *= slope;
      // HardSigmoid clamp gradient on [0, 1], closed; then the read-noise factor.
      const double x = p.sign * S[tj] / p.s_sat;
      const double dS = (x >= 0.0 && x <= 1.0) ? dphi * p.sign / p.s_sat * s_factor[tj] : 0.0;
      // Surrogate QK: dQ = A (dS . D)(K-0.45), dK = A (dS . D)^T Q.
      for (int d = 0; d < D; ++d) {
        const double dec = cell_decay(p, k_leak, key_decay, t, j, d, D, true);
        gq[t * D + d] += slope * dec * dS * (K[j * D + d] - p.k_offset);
        gk[j * D + d] += slope * dec * dS * Q[t * D + d];
      }
    }
  }
  for (size_t i = 0; i < gq.size(); ++i) {
    dQ[i] = static_cast<float>(gq[i]);
    dK[i] = static_cast<float>(gk[i]);
    dV[i] = static_cast<float>(gv[i]);
  }
}

// ---------------------------------------------------------------------------------------------
// Fast kernel.

namespace {

// One separable term of the cell polynomial: c * decay^e * g(y), with g(y) = y^power, or the
// whole f(y) - f(0) when power < 0 (used when there is no leakage, so f needs no splitting).
struct Term {
  int decay_power;
  double coeff;
  int power;
};

struct Plan {
  bool direct = false;  // no separable form: fall back to the plain loops
  double alpha0 = 0.0;  // f(0), the non-decaying offset term
  std::vector<Term> terms;
  double centre = 0.0;  // reference time c of the factorised decay
};

// Largest |exponent| allowed in the factorised decay exp(+-e lambda (t - c)): keeps both
// factors far from float overflow/underflow (e^40 ~ 2e17).
constexpr double kMaxExponent = 40.0;

Plan make_plan(const GainCellKernelParams& p, int T) {
  Plan plan;
  plan.centre = 0.5 * T;
  const bool leaky = p.lambda > 0.0;
  if (!leaky) {
    // f(decay y) = f(y): one GEMM with the cell's table f(y) - f(0), any cell model.
    plan.alpha0 = p.cell.offset_current();
    plan.terms.push_back({0, 1.0, -1});
    return plan;
  }
  // Ablation cells with leakage, a leakage rate per cell, ages reset by refresh, or the
  // bf16-rounded QK decay (a function of t - j that does not factorise): f(decay y) is not
  // separable, so these take the plain loops.
  const bool refreshed = p.refresh_tokens > 0 && p.refresh_tokens < std::min(T, p.window);
  if (!p.cell.is_polynomial() || p.hw.leakage.bf16_qk_decay || p.leakage_variation != 0.0 ||
      refreshed) {
    plan.direct = true;
    return plan;
  }
  plan.alpha0 = p.poly[0];
  for (int i = 1; i <= 3; ++i)
    if (p.poly[i] != 0.0) plan.terms.push_back({i, p.poly[i], i});
  int max_power = 1;
  for (const Term& term : plan.terms) max_power = std::max(max_power, term.decay_power);
  if (max_power * p.lambda * 0.5 * T > kMaxExponent) plan.direct = true;
  return plan;
}

double term_value(const GainCellKernelParams& p, const Term& term, double y) {
  if (term.power < 0) return p.cell.current(y) - p.cell.offset_current();
  double v = 1.0;
  for (int i = 0; i < term.power; ++i) v *= y;
  return v;
}

// X_ext[t][p*D + d] = scale_p(t) * g_p(X[t][d] - offset): the key/value-side matrices of the
// factorised decay, scale_p(t) = exp(e_p lambda (t - c)). One exp per (t, p), and the power
// spelled out per case so that the loop over d vectorises (in double, as the plain form).
void build_key_side(const GainCellKernelParams& p, const Plan& plan, const float* X, float offset,
                    int T, int D, float* out) {
  const int P = static_cast<int>(plan.terms.size());
  for (int t = 0; t < T; ++t) {
    const float* x = X + static_cast<size_t>(t) * D;
    for (int q = 0; q < P; ++q) {
      const Term& term = plan.terms[q];
      const double scale = std::exp(term.decay_power * p.lambda * (t - plan.centre));
      float* o = out + (static_cast<size_t>(t) * P + q) * D;
      switch (term.power) {
        case 1:
          for (int d = 0; d < D; ++d) o[d] = static_cast<float>(scale * (double{x[d]} - offset));
          break;
        case 2:
          for (int d = 0; d < D; ++d) {
            const double y = double{x[d]} - offset;
            o[d] = static_cast<float>(scale * (y * y));
          }
          break;
        case 3:
          for (int d = 0; d < D; ++d) {
            const double y = double{x[d]} - offset;
            o[d] = static_cast<float>(scale * (y * y * y));
          }
          break;
        default:
          for (int d = 0; d < D; ++d)
            o[d] = static_cast<float>(scale * term_value(p, term, x[d] - offset));
      }
    }
  }
}

// Row scales of the query side: rs[p][t] = c_p exp(-e_p lambda (t - c)).
void build_row_scales(const GainCellKernelParams& p, const Plan& plan, int T, float* rs) {
  const int P = static_cast<int>(plan.terms.size());
  for (int q = 0; q < P; ++q) {
    const Term& term = plan.terms[q];
    for (int t = 0; t < T; ++t)
      rs[q * T + t] = static_cast<float>(
          term.coeff * std::exp(-term.decay_power * p.lambda * (t - plan.centre)));
  }
}

// Row-major C[m][n] = alpha * op(A) op(B) + beta * C.
void gemm(bool trans_a, bool trans_b, int m, int n, int k, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    for (int i = 0; i < m; ++i)
      for (int j = 0; j < n; ++j) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
    return;
  }
  blas::sgemm(trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans, m, n, k,
              alpha, A, lda, B, ldb, beta, C, ldc);
}

// Everything the per-block passes share.
struct Prepared {
  int T, D, P, PD;
  int blocks;   // key blocks of `tile` keys in sequence order
  int row_cap;  // most query rows a key block sees: min(T, window + tile)
  float* qx;    // [T][P*D]  rs_p(t) * Q
  float* kx;    // [T][P*D]
  float* vx;    // [T][P*D]
  float* rs;    // [P][T]
  float* qsum;  // [T] sum_d Q (alpha_0 term)
  // Query rows whose qx and qsum are built (the rows the caller computes).
  int row_begin, row_end;
};

// Query rows [r0, r1) that key block kb = keys [j0, j1) can reach through the window.
void block_rows(const GainCellKernelParams& p, int T, int j0, int j1, int& r0, int& r1) {
  r0 = j0;
  r1 = std::min(T, j1 + p.window - 1);
}

// S for rows [r0, r1) x keys [j0, j1) of the block, then phi; masked entries get S = phi = 0.
// With read noise on S, S holds the noisy value (sign S_noisy = sign S + sigma n) and
// noise_factor (if given) its derivative.
void block_scores(const GainCellKernelParams& p, const Plan& plan, const Prepared& pr, int j0,
                  int j1, int r0, int r1, float* S, float* phi, uint64_t seed = 0,
                  float* noise_factor = nullptr) {
  const int kn = j1 - j0, rn = r1 - r0, tile = p.tile;
  gemm(false, true, rn, kn, pr.PD, 1.0f, pr.qx + static_cast<size_t>(r0) * pr.PD, pr.PD,
       pr.kx + static_cast<size_t>(j0) * pr.PD, pr.PD, 0.0f, S, tile);
  const float a0 = static_cast<float>(plan.alpha0);
  const float inv_sat = p.sign / p.s_sat;
  for (int r = 0; r < rn; ++r) {
    const int t = r0 + r;
    // Keys of this block inside the window of t: columns [c_lo, c_hi); the rest is masked.
    const int c_lo = std::clamp(first_key(t, p.window) - j0, 0, kn);
    const int c_hi = std::clamp(t + 1 - j0, c_lo, kn);
    float* s = S + r * tile;
    float* ph = phi + r * tile;
    const float offset = a0 * pr.qsum[t];
    for (int c = 0; c < c_lo; ++c) s[c] = ph[c] = 0.0f;
    for (int c = c_lo; c < c_hi; ++c) {
      s[c] += offset;
      ph[c] = std::clamp(s[c] * inv_sat, 0.0f, 1.0f);
    }
    for (int c = c_hi; c < kn; ++c) s[c] = ph[c] = 0.0f;
    if (p.read_noise_s == 0.0) continue;
    for (int c = c_lo; c < c_hi; ++c) {
      const double n = standard_normal(seed, NoiseStream::kReadS, t, j0 + c);
      double factor;
      const double noisy =
          add_read_noise(p.read_noise_s, p.read_noise_relative, p.sign * s[c], n, &factor);
      s[c] = static_cast<float>(p.sign * noisy);
      ph[c] = std::clamp(static_cast<float>(noisy / p.s_sat), 0.0f, 1.0f);
      if (noise_factor) noise_factor[r * tile + c] = static_cast<float>(factor);
    }
  }
}

// A for rows [r0, r1) of key block [j0, j1): alpha_0 sum_j phi + sum_p rs_p(t) sum_j phi vx_p,
// as ONE GEMM of depth kn * P: the pulses scaled per term, W[r][c P + p] = rs_p(t) phi[r][c],
// times vx read as [(j0 + c) P + p][D] (its rows are already in that order). A is D wide, so
// no [rows][P D] intermediate is written and summed again.
// W[c P + p] = rs_p * phi[c] for the kn pulses of one row, with the term count a constant so
// that the interleaved stores vectorise (they did not with P a variable).
template <int P>
void scale_pulses(const float* ph, const float* rs, int kn, float* w) {
  for (int c = 0; c < kn; ++c)
    for (int k = 0; k < P; ++k) w[c * P + k] = rs[k] * ph[c];
}

void block_tile_sums(const Plan& plan, const Prepared& pr, int tile, int j0, int j1, int r0, int r1,
                     const float* phi, float* W, float* A) {
  const int kn = j1 - j0, rn = r1 - r0, D = pr.D, P = pr.P, depth = kn * P;
  const float a0 = static_cast<float>(plan.alpha0);
  float* offsets = W + static_cast<size_t>(rn) * depth;  // a0 * sum_j phi per row
  float rs[4];
  for (int r = 0; r < rn; ++r) {
    const int t = r0 + r;
    const float* ph = phi + static_cast<size_t>(r) * tile;
    float* w = W + static_cast<size_t>(r) * depth;
    float phisum = 0.0f;
#pragma omp simd reduction(+ : phisum)
    for (int c = 0; c < kn; ++c) phisum += ph[c];
    offsets[r] = a0 * phisum;
    for (int k = 0; k < P; ++k) rs[k] = pr.rs[k * pr.T + t];
    switch (P) {
      case 1:
        scale_pulses<1>(ph, rs, kn, w);
        break;
      case 2:
        scale_pulses<2>(ph, rs, kn, w);
        break;
      case 3:
        scale_pulses<3>(ph, rs, kn, w);
        break;
      default:
        for (int c = 0; c < kn; ++c)
          for (int k = 0; k < P; ++k) w[c * P + k] = pr.rs[k * pr.T + t] * ph[c];
    }
  }
  gemm(false, false, rn, D, depth, 1.0f, W, depth, pr.vx + static_cast<size_t>(j0) * pr.PD, D, 0.0f,
       A, D);
  for (int r = 0; r < rn; ++r) {
    float* a = A + static_cast<size_t>(r) * D;
    const float offset = offsets[r];
    for (int d = 0; d < D; ++d) a[d] += offset;
  }
}

// o += Qz_out(clip(a * scale)) and the clamp-gradient mask, with the quantiser's mode hoisted
// out of the loop (the common case, the code grid, then vectorises).
void accumulate_tile_output(const Quantizer& qz, const float* a, float scale, int D, float* o,
                            uint8_t* mask) {
  if (mask) {
    for (int d = 0; d < D; ++d) {
      const float x = a[d] * scale;
      mask[d] = (x >= qz.vmin && x <= qz.vmax) ? 1 : 0;
    }
  }
  if (qz.enabled && !qz.counter_grid) {
    const float step = qz.step;
    for (int d = 0; d < D; ++d) {
      const float c = std::clamp(a[d] * scale, qz.vmin, qz.vmax);
      o[d] += step * round_half_even(c / step);  // exactly Quantizer::operator() (spec §2.5)
    }
  } else {
    for (int d = 0; d < D; ++d) o[d] += qz(a[d] * scale);
  }
}

// Read noise on the final (physical) sub-tile sum A of row t, in place (HeadArray order: raw A,
// then the output stage). signs[d]: clip-mask bits 1 (A < 0) and 2 (A > 0) of the noiseless A,
// for the gradient of relative noise.
void add_tile_read_noise(const GainCellKernelParams& p, uint64_t seed, int t, int tau, int D,
                         float* a, uint8_t* signs) {
  for (int d = 0; d < D; ++d) {
    signs[d] = static_cast<uint8_t>((a[d] < 0.0f ? 2 : 0) | (a[d] > 0.0f ? 4 : 0));
    const double n =
        standard_normal(seed, NoiseStream::kReadA, t, static_cast<uint64_t>(tau) * D + d);
    a[d] =
        static_cast<float>(add_read_noise(p.read_noise_a, p.read_noise_relative, a[d], n, nullptr));
  }
}

float* sized(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
  return v.data();
}

// Key/value sides for every key (V null: the key side only), the query side for rows
// [row_begin, row_end).
Prepared prepare(const GainCellKernelParams& p, const Plan& plan, const float* Q, const float* K,
                 const float* V, int T, int D, GainCellWorkspace& ws, int row_begin, int row_end) {
  Prepared pr;
  pr.T = T;
  pr.D = D;
  pr.P = static_cast<int>(plan.terms.size());
  pr.PD = pr.P * D;
  pr.blocks = (T + p.tile - 1) / p.tile;
  pr.row_cap = std::min(T, p.window + p.tile);
  pr.row_begin = row_begin;
  pr.row_end = row_end;
  const size_t n = static_cast<size_t>(T) * pr.PD;
  pr.qx = sized(ws.q_scaled, n);
  pr.kx = sized(ws.k_scaled, n);
  pr.vx = sized(ws.v_scaled, n);
  pr.rs = sized(ws.row_scales, static_cast<size_t>(pr.P) * T);
  pr.qsum = sized(ws.q_row_sum, T);
  build_key_side(p, plan, K, p.k_offset, T, D, pr.kx);
  if (V != nullptr) build_key_side(p, plan, V, p.v_offset, T, D, pr.vx);  // forward only
  build_row_scales(p, plan, T, pr.rs);
  for (int t = row_begin; t < row_end; ++t) {
    const float* q = Q + static_cast<size_t>(t) * D;
    float s = 0.0f;
    for (int d = 0; d < D; ++d) s += q[d];
    pr.qsum[t] = s;
    for (int k = 0; k < pr.P; ++k) {
      const float scale = pr.rs[k * T + t];
      float* dst = pr.qx + (static_cast<size_t>(t) * pr.P + k) * D;
      for (int d = 0; d < D; ++d) dst[d] = scale * q[d];
    }
  }
  return pr;
}

// Query rows of the forward: [row_begin, row_end) of the rows [r0, r1) a key block reaches.
void clip_rows(const Prepared& pr, int& r0, int& r1) {
  r0 = std::max(r0, pr.row_begin);
  r1 = std::max(r0, std::min(r1, pr.row_end));
}

}  // namespace

int gaincell_gemm_terms(const GainCellKernelParams& p, int T) {
  const Plan plan = make_plan(p, T);
  return plan.direct ? 0 : static_cast<int>(plan.terms.size());
}

bool gaincell_rows_separable(const GainCellKernelParams& p, int T) {
  return !make_plan(p, T).direct;
}

void gaincell_head_forward(const GainCellKernelParams& p, const float* Q, const float* K,
                           const float* V, int T, int D, float* O, uint8_t* clip_mask,
                           GainCellWorkspace& ws, uint64_t noise_seed) {
  if (!gaincell_rows_separable(p, T)) {
    // Not separable (ablation cell with leakage, or extreme lambda*T): plain loops. The
    // backward of this path recomputes everything, so no clip mask is needed.
    reference_gaincell_forward(p, Q, K, V, T, D, O, nullptr, nullptr, noise_seed);
    return;
  }
  gaincell_head_forward_rows(p, Q, K, V, T, D, 0, T, O, clip_mask, ws, noise_seed);
}

void gaincell_head_forward_rows(const GainCellKernelParams& p, const float* Q, const float* K,
                                const float* V, int T, int D, int row_begin, int row_end, float* O,
                                uint8_t* clip_mask, GainCellWorkspace& ws, uint64_t noise_seed) {
  const Plan plan = make_plan(p, T);
  require(!plan.direct, "gain-cell attention: row ranges need the separable (fast) form");
  require(0 <= row_begin && row_begin <= row_end && row_end <= T,
          "gain-cell attention: query rows [" + std::to_string(row_begin) + ", " +
              std::to_string(row_end) + ") outside [0, " + std::to_string(T) + ")");
  const Prepared pr = prepare(p, plan, Q, K, V, T, D, ws, row_begin, row_end);
  const int tile = p.tile, nb = p.physical_tiles();
  const int used_tiles = std::min(pr.blocks, nb);
  float* S = sized(ws.scores, static_cast<size_t>(pr.row_cap) * tile);
  float* phi = sized(ws.phi, static_cast<size_t>(pr.row_cap) * tile);
  float* W = sized(ws.v_products, static_cast<size_t>(pr.row_cap) * (tile * pr.P + 1));
  float* A = sized(ws.tile_out, static_cast<size_t>(pr.row_cap) * D);
  // carry[tau]: partial sums of the rows whose window holds keys of two sequence blocks that map
  // to the same physical sub-tile tau (T > M; spec §11 item 7).
  float* carry = sized(ws.carry, static_cast<size_t>(nb) * tile * D);
  float* mean_sum = sized(ws.mean_sum, static_cast<size_t>(T) * D);
  const bool per_tile = p.out_mode == OutputQuantMode::kPerTile;
  const size_t first = static_cast<size_t>(row_begin) * D, last = static_cast<size_t>(row_end) * D;
  std::fill(O + first, O + last, 0.0f);
  if (!per_tile) std::fill(mean_sum + first, mean_sum + last, 0.0f);
  const float to_unit = p.sign / p.a_sat;
  std::vector<uint8_t> signs(D);
  require(per_tile || p.read_noise_a == 0.0,
          "gain-cell attention: read noise on A in tile-mean mode is simulated token by token "
          "only");

  for (int kb = 0; kb < pr.blocks; ++kb) {
    const int j0 = kb * tile, j1 = std::min(T, j0 + tile);
    const int tau = kb % nb;
    float* tile_carry = carry + static_cast<size_t>(tau) * tile * D;
    const int tail = j0 + p.window;  // rows from here on also see keys of block kb + nb
    int r0, r1;
    block_rows(p, T, j0, j1, r0, r1);
    const int block_first_row = r0;  // j0: the carry is indexed from the block's first row
    clip_rows(pr, r0, r1);
    if (r0 == r1) {
      // None of this range's rows see the block; a carry it leaves must still read zero.
      if (per_tile && tail < T)
        std::fill(tile_carry, tile_carry + static_cast<size_t>(tile) * D, 0.0f);
      continue;
    }
    block_scores(p, plan, pr, j0, j1, r0, r1, S, phi, noise_seed);
    block_tile_sums(plan, pr, tile, j0, j1, r0, r1, phi, W, A);
    if (!per_tile) {
      for (int r = 0; r < r1 - r0; ++r)
        for (int d = 0; d < D; ++d) mean_sum[static_cast<size_t>(r0 + r) * D + d] += A[r * D + d];
      continue;
    }
    if (kb >= nb) {
      for (int t = r0; t < std::min(block_first_row + tile, r1); ++t)
        for (int d = 0; d < D; ++d)
          A[(t - r0) * D + d] += tile_carry[(t - block_first_row) * D + d];
    }
    if (tail < T) std::fill(tile_carry, tile_carry + static_cast<size_t>(tile) * D, 0.0f);
    for (int t = r0; t < r1; ++t) {
      float* a = A + static_cast<size_t>(t - r0) * D;
      if (t >= tail) {
        std::memcpy(tile_carry + static_cast<size_t>(t - tail) * D, a, sizeof(float) * D);
        continue;
      }
      uint8_t* m =
          clip_mask ? clip_mask + (static_cast<size_t>(t) * used_tiles + tau) * D : nullptr;
      if (p.read_noise_a != 0.0) add_tile_read_noise(p, noise_seed, t, tau, D, a, signs.data());
      accumulate_tile_output(p.out_q, a, to_unit, D, O + static_cast<size_t>(t) * D, m);
      if (m && p.read_noise_a != 0.0)
        for (int d = 0; d < D; ++d) m[d] |= signs[d];
    }
  }
  if (!per_tile) {
    for (int t = row_begin; t < row_end; ++t) {
      const float n = static_cast<float>(p.tiles_in_use(t));
      for (int d = 0; d < D; ++d) {
        const size_t i = static_cast<size_t>(t) * D + d;
        const float x = mean_sum[i] * to_unit / n;
        O[i] = n * p.out_q(x);
        if (clip_mask) clip_mask[i] = (x >= -1.0f && x <= 1.0f) ? 1 : 0;
      }
    }
  }
}

void gaincell_head_backward(const GainCellKernelParams& p, const float* Q, const float* K,
                            const float* V, int T, int D, const float* dO, const uint8_t* clip_mask,
                            float* dQ, float* dK, float* dV, GainCellWorkspace& ws,
                            uint64_t noise_seed) {
  const Plan plan = make_plan(p, T);
  if (plan.direct) {
    reference_gaincell_backward(p, Q, K, V, T, D, dO, dQ, dK, dV, noise_seed);
    return;
  }
  require(clip_mask != nullptr, "gain-cell backward: the forward pass kept no clip mask");
  // The backward's AV side is the linear surrogate (vl below), not the V-side products.
  const Prepared pr = prepare(p, plan, Q, K, nullptr, T, D, ws, 0, T);
  const int tile = p.tile, nb = p.physical_tiles();
  const int used_tiles = std::min(pr.blocks, nb);
  const bool per_tile = p.out_mode == OutputQuantMode::kPerTile;
  float* S = sized(ws.scores, static_cast<size_t>(pr.row_cap) * tile);
  float* phi = sized(ws.phi, static_cast<size_t>(pr.row_cap) * tile);
  float* dS = sized(ws.d_scores, static_cast<size_t>(pr.row_cap) * std::max(tile, D));
  float* Gs = sized(ws.d_tile, static_cast<size_t>(pr.row_cap) * D);
  // Surrogate side (decay^1 only, spec §4): kl = e^{lambda (j-c)} (K - k_off), vl likewise,
  // r1(t) = e^{-lambda (t-c)}.
  float* kl = sized(ws.k_leaked, static_cast<size_t>(T) * D);
  float* vl = sized(ws.v_leaked, static_cast<size_t>(T) * D);
  float* r1s = sized(ws.decay_scales, static_cast<size_t>(2) * T);
  float* ks1 = r1s + T;
  for (int t = 0; t < T; ++t) {
    r1s[t] = static_cast<float>(std::exp(-p.lambda * (t - plan.centre)));
    ks1[t] = static_cast<float>(std::exp(p.lambda * (t - plan.centre)));
    for (int d = 0; d < D; ++d) {
      kl[t * D + d] = ks1[t] * (K[t * D + d] - p.k_offset);
      vl[t * D + d] = ks1[t] * (V[t * D + d] - p.v_offset);
    }
  }
  const float slope = p.surrogate_slope;
  const float to_unit = p.sign / p.a_sat;
  const float hs_scale = p.sign / p.s_sat;
  float* s_factor = sized(ws.s_factor, static_cast<size_t>(pr.row_cap) * tile);
  const bool a_noise_relative = p.read_noise_a != 0.0 && p.read_noise_relative && per_tile;
  std::fill(dQ, dQ + static_cast<size_t>(T) * D, 0.0f);

  for (int kb = 0; kb < pr.blocks; ++kb) {
    const int j0 = kb * tile, j1 = std::min(T, j0 + tile), kn = j1 - j0;
    int r0, r1;
    block_rows(p, T, j0, j1, r0, r1);
    const int rn = r1 - r0;
    block_scores(p, plan, pr, j0, j1, r0, r1, S, phi, noise_seed, s_factor);
    const int tau = kb % nb;
    // Gs = r1(t) dL/dA: straight-through quantiser, clamp gradient from the forward's mask.
    for (int r = 0; r < rn; ++r) {
      const int t = r0 + r;
      const uint8_t* m = per_tile ? clip_mask + (static_cast<size_t>(t) * used_tiles + tau) * D
                                  : clip_mask + static_cast<size_t>(t) * D;
      const float scale = r1s[t] * to_unit;
      for (int d = 0; d < D; ++d) Gs[r * D + d] = (m[d] & 1) ? scale * dO[t * D + d] : 0.0f;
      if (a_noise_relative) {
        for (int d = 0; d < D; ++d) {
          const int sgn = (m[d] & 4) ? 1 : ((m[d] & 2) ? -1 : 0);
          if (sgn == 0) continue;
          const double n = standard_normal(noise_seed, NoiseStream::kReadA, t,
                                           static_cast<uint64_t>(tau) * D + d);
          Gs[r * D + d] *= static_cast<float>(1.0 + p.read_noise_a * sgn * n);
        }
      }
    }
    // dV[block] = A ks1(j) (phi^T Gs)
    gemm(true, false, kn, D, rn, slope, phi, tile, Gs, D, 0.0f, dV + static_cast<size_t>(j0) * D,
         D);
    for (int c = 0; c < kn; ++c)
      for (int d = 0; d < D; ++d) dV[(j0 + c) * D + d] *= ks1[j0 + c];
    // dphi = A Gs vl^T, then the HardSigmoid clamp and the window mask give dS; dS <- r1(t) dS.
    gemm(false, true, rn, kn, D, slope, Gs, D, vl + static_cast<size_t>(j0) * D, D, 0.0f, dS, tile);
    for (int r = 0; r < rn; ++r) {
      const int t = r0 + r;
      const int c_lo = std::clamp(first_key(t, p.window) - j0, 0, kn);
      const int c_hi = std::clamp(t + 1 - j0, c_lo, kn);
      const float scale = hs_scale * r1s[t];
      float* ds = dS + r * tile;
      const float* s = S + r * tile;
      for (int c = 0; c < c_lo; ++c) ds[c] = 0.0f;
      for (int c = c_lo; c < c_hi; ++c) {
        const float x = s[c] * hs_scale;
        ds[c] = (x >= 0.0f && x <= 1.0f) ? ds[c] * scale : 0.0f;
      }
      if (p.read_noise_s != 0.0)
        for (int c = c_lo; c < c_hi; ++c) ds[c] *= s_factor[r * tile + c];
      for (int c = c_hi; c < kn; ++c) ds[c] = 0.0f;
    }
    // dQ[rows] += A dS kl[block];  dK[block] = A ks1(j) (dS^T Q[rows])
    gemm(false, false, rn, D, kn, slope, dS, tile, kl + static_cast<size_t>(j0) * D, D, 1.0f,
         dQ + static_cast<size_t>(r0) * D, D);
    gemm(true, false, kn, D, rn, slope, dS, tile, Q + static_cast<size_t>(r0) * D, D, 0.0f,
         dK + static_cast<size_t>(j0) * D, D);
    for (int c = 0; c < kn; ++c)
      for (int d = 0; d < D; ++d) dK[(j0 + c) * D + d] *= ks1[j0 + c];
  }
}

}  // namespace gaincell
