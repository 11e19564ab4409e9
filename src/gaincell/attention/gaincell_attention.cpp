#include "gaincell/attention/gaincell_attention.h"

#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>
#include <exception>

#include "gaincell/core/blas.h"
#include "gaincell/core/error.h"
#include "gaincell/device/noise.h"

namespace gaincell {

namespace {

struct Variant {
  const char* name;
  CellModel cell;
};

constexpr Variant kVariants[] = {
    {"gaincell-linear", CellModel::kLinear},   {"gaincell-nonlinear", CellModel::kPolynomial},
    {"gaincell-x3", CellModel::kCubic},        {"gaincell-x5", CellModel::kQuintic},
    {"gaincell-sigmoid", CellModel::kSigmoid}, {"gaincell-exp", CellModel::kExp}};

constexpr const char* kScalerNames[4] = {"q", "k", "v", "output"};
// Scaler a is clamped to >= 1e-20 (spec §3.1 bounds).
constexpr float kMinScalerA = 1e-20f;
// EMA weight of the target statistics (spec §5.1).
constexpr double kTargetAlpha = 0.1;

}  // namespace

std::vector<std::string> gaincell_attention_names() {
  std::vector<std::string> names;
  for (const Variant& v : kVariants) names.push_back(v.name);
  return names;
}

bool is_gaincell_attention(const std::string& name) {
  for (const Variant& v : kVariants)
    if (name == v.name) return true;
  return false;
}

CellModel gaincell_cell_model(const std::string& name) {
  for (const Variant& v : kVariants)
    if (name == v.name) return v.cell;
  throw Error("'" + name + "' is not a gain-cell attention variant");
}

HwConfig gaincell_default_hw(const std::string& name) {
  const CellModel cell = gaincell_cell_model(name);
  if (cell == CellModel::kLinear) return HwConfig::preset("paper-linear");
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  if (cell != CellModel::kPolynomial) {
    // Spec §2.7: the ablation classes switch the Q and output quantisers off and keep K/V at
    // 8 levels (the flag typo of the published code).
    hw.name = "paper-nonlinear-ablation";
    hw.cell = cell;
    hw.q.enabled = false;
    hw.out.enabled = false;
  }
  return hw;
}

HwConfig gaincell_variant_hw(const std::string& name, const HwConfig& hw) {
  HwConfig out = hw;
  out.cell = gaincell_cell_model(name);
  out.validate();
  return out;
}

std::unique_ptr<Attention> make_gaincell_attention(const std::string& name,
                                                   const AttentionContext& ctx) {
  return std::make_unique<GainCellAttention>(name, ctx);
}

// What forward() keeps for backward(): the hardware signals and the output clip masks.
struct GainCellAttention::Saved {
  int B = 0, T = 0;
  std::vector<float> Q, K, V;  // [B][H][T][D] after scaler, clamp, quantiser
  std::vector<float> O;        // [B][H][T][D] before the output scaler
  // d(stored K)/d(quantised K) per element: write-noise clamp x cell gain (empty: all 1).
  std::vector<float> k_factor, v_factor;  // [B][H][T][D]
  std::vector<uint8_t> mask;              // [B*H][clip_mask_size]
  size_t mask_stride = 0;
};

GainCellAttention::GainCellAttention(std::string name, const AttentionContext& ctx)
    : name_(std::move(name)),
      n_head_(ctx.n_head),
      n_kv_head_(ctx.n_kv_head > 0 ? ctx.n_kv_head : ctx.n_head),
      head_dim_(ctx.head_dim),
      layer_(ctx.layer),
      params_(gaincell_variant_hw(name_, ctx.hw)) {
  require(n_head_ >= 1 && head_dim_ >= 1, "gain-cell attention: n_head and head_dim must be >= 1");
  require(n_head_ % n_kv_head_ == 0, "gain-cell attention: n_kv_head (" +
                                         std::to_string(n_kv_head_) + ") must divide n_head (" +
                                         std::to_string(n_head_) + ")");
  quant_[kQ] = Quantizer(params_.hw.q);
  quant_[kK] = Quantizer(params_.hw.k);
  quant_[kV] = Quantizer(params_.hw.v);
  // Standalone storage with the spec's initial values until the model binds its own.
  const auto specs = param_specs();
  size_t total = 0;
  for (const ParamSpec& spec : specs) total += 2 * static_cast<size_t>(spec.numel());
  own_storage_.assign(total, 0.0f);
  std::vector<TensorRef> refs;
  size_t offset = 0;
  for (const ParamSpec& spec : specs) {
    const int64_t n = spec.numel();
    float* data = own_storage_.data() + offset;
    float* grad = data + n;
    offset += 2 * static_cast<size_t>(n);
    std::copy(spec.init.begin(), spec.init.end(), data);
    refs.push_back({data, spec.trainable ? grad : nullptr, n});
  }
  bind_params(refs);
  for (int s = 0; s < 4; ++s) {
    stats_.mean[s].assign(scaler_heads(static_cast<Scaler>(s)), 0.0f);
    stats_.std[s].assign(scaler_heads(static_cast<Scaler>(s)), 0.0f);
  }
}

int GainCellAttention::scaler_heads(Scaler s) const {
  return s == kK || s == kV ? n_kv_head_ : n_head_;
}

std::vector<ParamSpec> GainCellAttention::param_specs() const {
  // Spec §3.1: a = 1; b_q = 0, b_k = b_v = 0.45 (the K/V offset), b_o = 0. The paper's
  // configure_optimizers puts these 4-D tensors in the weight-decayed group; we keep that.
  const float b_init[4] = {0.0f, static_cast<float>(params_.hw.k_offset),
                           static_cast<float>(params_.hw.v_offset), 0.0f};
  // q and output scalers per query head, k and v per key/value head (one K/V array pair each).
  std::vector<ParamSpec> specs;
  for (int s = 0; s < 4; ++s) {
    const std::string base = std::string("attn.") + kScalerNames[s] + "_scaler.";
    const int n = scaler_heads(static_cast<Scaler>(s));
    specs.push_back({base + "a", {n}, std::vector<float>(n, 1.0f), true, true});
    specs.push_back({base + "b", {n}, std::vector<float>(n, b_init[s]), true, true});
  }
  for (int s = 0; s < 4; ++s) {
    const std::string base = std::string("attn.") + kScalerNames[s] + "_scaler.";
    const int n = scaler_heads(static_cast<Scaler>(s));
    specs.push_back({base + "target_mean", {n}, std::vector<float>(n, 0.0f), false, false});
    specs.push_back({base + "target_std", {n}, std::vector<float>(n, 0.0f), false, false});
  }
  return specs;
}

void GainCellAttention::bind_params(std::span<const TensorRef> refs) {
  require(refs.size() == 16,
          "gain-cell attention: expected 16 bound tensors, got " + std::to_string(refs.size()));
  for (size_t i = 0; i < refs.size(); ++i) {
    const int n = scaler_heads(static_cast<Scaler>((i % 8) / 2));
    require(refs[i].data != nullptr && refs[i].numel == n,
            "gain-cell attention: bound scaler tensor " + std::to_string(i) + " has " +
                std::to_string(refs[i].numel) + " entries, expected " + std::to_string(n));
  }
  for (int s = 0; s < 4; ++s) {
    a_[s] = refs[2 * s];
    b_[s] = refs[2 * s + 1];
    target_mean_[s] = refs[8 + 2 * s];
    target_std_[s] = refs[8 + 2 * s + 1];
  }
}

float GainCellAttention::scaler_a(Scaler s, int h) const {
  return std::max(a_[s].data[h], kMinScalerA);
}
float GainCellAttention::scaler_b(Scaler s, int h) const {
  return b_[s].data[h];
}

const ScalerStatistics* GainCellAttention::scaler_statistics() const {
  return stats_.recorded_forwards > 0 ? &stats_ : nullptr;
}

// Spec §3.2: clamp(a x + b) then the quantiser (the Quantizer does both).
void GainCellAttention::prepare_head(int h, const float* x, int n, Scaler s, float* out) const {
  const float a = scaler_a(s, h), b = scaler_b(s, h);
  const Quantizer& qz = quant_[s];
  // Quantizer::operator()'s arithmetic with its mode tests taken out of the loop: the loop over
  // B x H x T x D values per layer then vectorises (with the tests inside it did not).
  if (!qz.enabled) {
    for (int i = 0; i < n; ++i) out[i] = qz.clamp(a * x[i] + b);
  } else if (qz.counter_grid) {
    for (int i = 0; i < n; ++i) out[i] = qz(a * x[i] + b);
  } else {
    const float step = qz.step;
    for (int i = 0; i < n; ++i) out[i] = step * round_half_even(qz.clamp(a * x[i] + b) / step);
  }
}

std::vector<GainCellWorkspace>& GainCellAttention::workspaces() {
  const size_t threads = static_cast<size_t>(omp_get_max_threads());
  if (workspaces_.size() < threads) workspaces_.resize(threads);
  return workspaces_;
}

uint64_t GainCellAttention::noise_seed(int h) const {
  return head_noise_seed(params_.hw.noise.seed, layer_, h);
}

// Write noise and cell gain variation of the K (or V) arrays, exactly as HeadArray::write:
// stored = clamp(X + sigma_w N(kWrite, t, d), vmin, vmax), then (stored - offset) * gain with
// gain = 1 + sigma_g N(kGain, slot, d), slot = t mod M. X is replaced by offset + that product;
// factor receives d(result)/dX (the clamp gradient times the gain).
void GainCellAttention::apply_write_effects(int h, int T, Scaler s, float* X, float* factor) const {
  const NoiseConfig& nz = params_.hw.noise;
  const QuantizerConfig& range = s == kK ? params_.hw.k : params_.hw.v;
  const float offset = s == kK ? params_.k_offset : params_.v_offset;
  const NoiseStream write_stream = s == kK ? NoiseStream::kWriteK : NoiseStream::kWriteV;
  const NoiseStream gain_stream = s == kK ? NoiseStream::kGainK : NoiseStream::kGainV;
  const uint64_t seed = noise_seed(h);
  const int D = head_dim_;
  for (int t = 0; t < T; ++t) {
    const int slot = t % params_.window;
    for (int d = 0; d < D; ++d) {
      float& x = X[t * D + d];
      float pass = 1.0f;
      if (nz.write_noise_kv != 0.0) {
        const double noisy = x + nz.write_noise_kv * standard_normal(seed, write_stream, t, d);
        pass = (noisy >= range.vmin && noisy <= range.vmax) ? 1.0f : 0.0f;
        x = static_cast<float>(std::clamp(noisy, range.vmin, range.vmax));
      }
      float gain = 1.0f;
      if (nz.gain_variation != 0.0)
        gain = static_cast<float>(1.0 +
                                  nz.gain_variation * standard_normal(seed, gain_stream, slot, d));
      x = offset + (x - offset) * gain;
      factor[t * D + d] = pass * gain;
    }
  }
}

namespace {

void check_finite(const float* x, size_t n, const char* what) {
  // One branch-free sweep (it vectorises): x * 0 is NaN exactly for an infinite or NaN x. The
  // index is looked for only when something is wrong.
  float probe = 0.0f;
#pragma omp simd reduction(+ : probe)
  for (size_t i = 0; i < n; ++i) probe += x[i] * 0.0f;
  if (probe == 0.0f) return;
  for (size_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) {
      throw Error(std::string("gain-cell attention: non-finite value in ") + what + " at index " +
                  std::to_string(i));
    }
  }
}

// Runs body(b, h) over all heads with OpenMP, OpenBLAS single-threaded inside (its pthreads
// would otherwise oversubscribe the cores).
// An exception must not leave an OpenMP region (the process would terminate): the first one is
// kept and rethrown after the loop, so a configuration the kernels refuse is a clear error.
template <typename F>
void for_each_head(int B, int H, F&& body) {
  blas::BlasSingleThreadScope single_threaded_blas;
  const int n = B * H;
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic, 1)
  for (int i = 0; i < n; ++i) {
    try {
      body(i / H, i % H, omp_get_thread_num());
    } catch (...) {
#pragma omp critical(gaincell_head_error)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// Query-row ranges [bounds[i], bounds[i + 1]) of one head with about equal kernel work (row t
// costs about the keys it sees plus one tile), so that few heads (B = 1 with SmolLM's 9, or a
// single long sequence on many cores) still spread over every thread: about 8 tasks per thread
// in all, ranges of at least 64 rows. One range on one thread.
std::vector<int> row_ranges(const GainCellKernelParams& p, int heads, int T) {
  const int threads = omp_get_max_threads();
  int ranges = threads > 1 ? (8 * threads + heads - 1) / heads : 1;
  ranges = std::clamp(ranges, 1, std::max(1, T / 64));
  std::vector<int> bounds{0};
  if (ranges > 1) {
    std::vector<double> work(static_cast<size_t>(T) + 1, 0.0);  // work[t]: rows [0, t)
    for (int t = 0; t < T; ++t) work[t + 1] = work[t] + std::min(t + 1, p.window) + p.tile;
    for (int i = 1; i < ranges; ++i) {
      const double target = work[T] * i / ranges;
      const int t =
          static_cast<int>(std::lower_bound(work.begin(), work.end(), target) - work.begin());
      if (t > bounds.back() && t < T) bounds.push_back(t);
    }
  }
  bounds.push_back(T);
  return bounds;
}

struct Moments {
  double sum = 0.0, sumsq = 0.0;
  int64_t n = 0;
  void add(const float* x, int count, float a, float b) {
    double s = 0.0, s2 = 0.0;
#pragma omp simd reduction(+ : s, s2)
    for (int i = 0; i < count; ++i) {
      const double v = static_cast<double>(a) * x[i] + b;
      s += v;
      s2 += v * v;
    }
    sum += s;
    sumsq += s2;
    n += count;
  }
  double mean() const {
    return n ? sum / n : 0.0;
  }
  double std() const {  // unbiased, as torch.std
    if (n < 2) return 0.0;
    const double m = mean();
    return std::sqrt(std::max(0.0, (sumsq - n * m * m) / (n - 1)));
  }
};

}  // namespace

void GainCellAttention::forward(const float* q, const float* k, const float* v, float* out, int B,
                                int T, bool training) {
  run_forward(q, k, v, out, B, T, training, training);
}

void GainCellAttention::run_forward(const float* q, const float* k, const float* v, float* out,
                                    int B, int T, bool keep, bool record_statistics) {
  require(B >= 1 && T >= 1, "gain-cell attention: B and T must be >= 1");
  const int H = n_head_, Hkv = n_kv_head_, rep = H / Hkv, D = head_dim_;
  const size_t per_head = static_cast<size_t>(T) * D;
  const size_t total_q = static_cast<size_t>(B) * H * per_head;
  const size_t total_kv = static_cast<size_t>(B) * Hkv * per_head;
  check_finite(q, total_q, "q");
  check_finite(k, total_kv, "k");
  check_finite(v, total_kv, "v");
  auto saved = std::make_shared<Saved>();
  const bool write_effects =
      params_.hw.noise.write_noise_kv != 0.0 || params_.hw.noise.gain_variation != 0.0;
  if (write_effects) {
    saved->k_factor.resize(total_kv);
    saved->v_factor.resize(total_kv);
  }
  saved->B = B;
  saved->T = T;
  saved->Q.resize(total_q);
  saved->K.resize(total_kv);
  saved->V.resize(total_kv);
  saved->O.resize(total_q);
  // The clip masks are only needed by backward(): kept for training forwards.
  saved->mask_stride = keep ? params_.clip_mask_size(T, D) : 0;
  saved->mask.resize(saved->mask_stride * B * H);
  std::vector<GainCellWorkspace>& ws = workspaces();
  // Per (b, head) moments of the four scaler outputs, reduced per head afterwards.
  std::vector<Moments> moments(static_cast<size_t>(B) * H * 4);

  // 1. Every key/value head's arrays are written once (scalers, clamps, quantisers, write
  // effects), whatever number of query heads reads them.
  for_each_head(B, Hkv, [&](int b, int g, int) {
    const size_t off = (static_cast<size_t>(b) * Hkv + g) * per_head;
    prepare_head(g, k + off, T * D, kK, saved->K.data() + off);
    prepare_head(g, v + off, T * D, kV, saved->V.data() + off);
    if (write_effects) {
      apply_write_effects(g, T, kK, saved->K.data() + off, saved->k_factor.data() + off);
      apply_write_effects(g, T, kV, saved->V.data() + off, saved->v_factor.data() + off);
    }
    if (record_statistics) {
      Moments* m = &moments[(static_cast<size_t>(b) * H + g) * 4];
      m[kK].add(k + off, T * D, scaler_a(kK, g), scaler_b(kK, g));
      m[kV].add(v + off, T * D, scaler_a(kV, g), scaler_b(kV, g));
    }
  });
  // 2. Each query head reads its group's arrays, in ranges of query rows when that spreads the
  // work better (inference; a training forward records per-head statistics in one piece).
  const bool split_rows =
      !record_statistics && !use_reference_ && gaincell_rows_separable(params_, T);
  const std::vector<int> bounds =
      split_rows ? row_ranges(params_, B * H, T) : std::vector<int>{0, T};
  const int ranges = static_cast<int>(bounds.size()) - 1;
  for_each_head(B * H, ranges, [&](int bh, int range, int thread) {
    const int b = bh / H, h = bh % H;
    const size_t off = static_cast<size_t>(bh) * per_head;
    const int t0 = bounds[range], t1 = bounds[range + 1];
    const size_t rows = static_cast<size_t>(t0) * D, n = static_cast<size_t>(t1 - t0) * D;
    const int g = h / rep;
    const size_t kv_off = (static_cast<size_t>(b) * Hkv + g) * per_head;
    prepare_head(h, q + off + rows, static_cast<int>(n), kQ, saved->Q.data() + off + rows);
    float* O = saved->O.data() + off;
    const float* K = saved->K.data() + kv_off;
    const float* V = saved->V.data() + kv_off;
    uint8_t* mask =
        keep ? saved->mask.data() + static_cast<size_t>(bh) * saved->mask_stride : nullptr;
    if (use_reference_) {
      reference_gaincell_forward(params_, saved->Q.data() + off, K, V, T, D, O, nullptr, nullptr,
                                 noise_seed(g));
    } else if (ranges == 1) {
      gaincell_head_forward(params_, saved->Q.data() + off, K, V, T, D, O, mask, ws[thread],
                            noise_seed(g));
    } else {
      gaincell_head_forward_rows(params_, saved->Q.data() + off, K, V, T, D, t0, t1, O, mask,
                                 ws[thread], noise_seed(g));
    }
    const float ao = scaler_a(kOut, h), bo = scaler_b(kOut, h);
    for (size_t i = rows; i < rows + n; ++i) out[off + i] = ao * O[i] + bo;
    if (record_statistics) {
      Moments* m = &moments[static_cast<size_t>(bh) * 4];
      m[kQ].add(q + off, T * D, scaler_a(kQ, h), scaler_b(kQ, h));
      m[kOut].add(out + off, T * D, 1.0f, 0.0f);
    }
  });

  if (record_statistics) {
    // Per (scaler, head): the moments over this process's sequences, then (data parallel) over
    // every rank's, as (sum, sum of squares, count) triples.
    std::array<std::vector<Moments>, 4> per_head;
    std::vector<double> packed;
    for (int s = 0; s < 4; ++s) {
      per_head[s].resize(scaler_heads(static_cast<Scaler>(s)));
      for (int h = 0; h < static_cast<int>(per_head[s].size()); ++h) {
        Moments& m = per_head[s][h];
        for (int b = 0; b < B; ++b) {
          const Moments& part = moments[(static_cast<size_t>(b) * H + h) * 4 + s];
          m.sum += part.sum;
          m.sumsq += part.sumsq;
          m.n += part.n;
        }
        packed.insert(packed.end(), {m.sum, m.sumsq, static_cast<double>(m.n)});
      }
    }
    if (statistics_reducer_) {
      statistics_reducer_(packed.data(), packed.size());
      size_t at = 0;
      for (auto& heads : per_head) {
        for (Moments& m : heads) {
          m.sum = packed[at];
          m.sumsq = packed[at + 1];
          m.n = static_cast<int64_t>(packed[at + 2]);
          at += 3;
        }
      }
    }
    for (int s = 0; s < 4; ++s) {
      for (int h = 0; h < scaler_heads(static_cast<Scaler>(s)); ++h) {
        const Moments& m = per_head[s][h];
        stats_.mean[s][h] = static_cast<float>(m.mean());
        stats_.std[s][h] = static_cast<float>(m.std());
        if (record_targets_) {
          float& tm = target_mean_[s].data[h];
          float& ts = target_std_[s].data[h];
          tm = static_cast<float>(kTargetAlpha * m.mean() + (1.0 - kTargetAlpha) * tm);
          ts = static_cast<float>(kTargetAlpha * m.std() + (1.0 - kTargetAlpha) * ts);
        }
      }
    }
    ++stats_.recorded_forwards;
  }
  // Evaluation forwards keep nothing (backward() after one recomputes with masks).
  saved_ = keep ? saved : nullptr;
}

void GainCellAttention::backward(const float* q, const float* k, const float* v, const float* dout,
                                 float* dq, float* dk, float* dv, int B, int T) {
  const int H = n_head_, Hkv = n_kv_head_, rep = H / Hkv, D = head_dim_;
  if (!saved_ || saved_->B != B || saved_->T != T) {
    // No matching forward kept its state: recompute it (statistics are not touched).
    std::vector<float> scratch(static_cast<size_t>(B) * H * T * D);
    run_forward(q, k, v, scratch.data(), B, T, /*keep=*/true, /*record_statistics=*/false);
  }
  const Saved& sv = *saved_;
  const size_t per_head = static_cast<size_t>(T) * D;
  const int threads = omp_get_max_threads();
  std::vector<GainCellWorkspace>& ws = workspaces();
  // Per (b, query head) partial scaler gradients [4 scalers][a, b] (k and v at the group's first
  // query head), reduced serially (deterministic).
  std::vector<double> partial(static_cast<size_t>(B) * H * 8, 0.0);
  std::vector<std::vector<float>> dO_buf(threads, std::vector<float>(per_head));
  std::vector<std::vector<float>> dX_buf(threads, std::vector<float>(5 * per_head));

  // Input scalers: straight-through quantiser, clamp gradient, exact a and b gradients.
  auto scaler_backward = [&](Scaler s, int head, const float* x, const float* dsig, float* dx,
                             double* g) {
    const float a = scaler_a(s, head), bb = scaler_b(s, head);
    const float lo = quant_[s].vmin, hi = quant_[s].vmax;  // Quantizer::grad's closed interval
    double ga = 0.0, gb = 0.0;
    // Vectorised (it was a scalar double chain, a fifth of the layer's backward time).
#pragma omp simd reduction(+ : ga, gb)
    for (size_t i = 0; i < per_head; ++i) {
      const float in = a * x[i] + bb;
      const float din = (in >= lo && in <= hi) ? dsig[i] : 0.0f;
      dx[i] = a * din;
      ga += static_cast<double>(din) * x[i];
      gb += din;
    }
    g[2 * s] += ga;
    g[2 * s + 1] += gb;
  };

  // One task per (b, key/value head): its query heads run one after the other and sum their
  // gradients of the shared K and V signals.
  for_each_head(B, Hkv, [&](int b, int grp, int thread) {
    const size_t kv_off = (static_cast<size_t>(b) * Hkv + grp) * per_head;
    float* dQ = dX_buf[thread].data();
    float* dK = dQ + per_head;
    float* dV = dK + per_head;
    float* dK_sum = dV + per_head;
    float* dV_sum = dK_sum + per_head;
    std::fill(dK_sum, dK_sum + 2 * per_head, 0.0f);
    for (int r = 0; r < rep; ++r) {
      const int h = grp * rep + r;
      const size_t off = (static_cast<size_t>(b) * H + h) * per_head;
      double* g = &partial[(static_cast<size_t>(b) * H + h) * 8];
      // Output scaler y = a_o O + b_o (exact).
      const float ao = scaler_a(kOut, h);
      float* dO = dO_buf[thread].data();
      const float* dy = dout + off;
      const float* O = sv.O.data() + off;
      double ga = 0.0, gb = 0.0;
#pragma omp simd reduction(+ : ga, gb)
      for (size_t i = 0; i < per_head; ++i) {
        ga += static_cast<double>(dy[i]) * O[i];
        gb += dy[i];
        dO[i] = ao * dy[i];
      }
      g[2 * kOut] += ga;
      g[2 * kOut + 1] += gb;
      const float* K = sv.K.data() + kv_off;
      const float* V = sv.V.data() + kv_off;
      if (use_reference_) {
        reference_gaincell_backward(params_, sv.Q.data() + off, K, V, T, D, dO, dQ, dK, dV,
                                    noise_seed(grp));
      } else {
        gaincell_head_backward(params_, sv.Q.data() + off, K, V, T, D, dO,
                               sv.mask.data() + (static_cast<size_t>(b) * H + h) * sv.mask_stride,
                               dQ, dK, dV, ws[thread], noise_seed(grp));
      }
      for (size_t i = 0; i < per_head; ++i) {
        dK_sum[i] += dK[i];
        dV_sum[i] += dV[i];
      }
      scaler_backward(kQ, h, q + off, dQ, dq + off, g);
    }
    if (!sv.k_factor.empty()) {
      for (size_t i = 0; i < per_head; ++i) {
        dK_sum[i] *= sv.k_factor[kv_off + i];
        dV_sum[i] *= sv.v_factor[kv_off + i];
      }
    }
    double* g0 = &partial[(static_cast<size_t>(b) * H + grp * rep) * 8];
    scaler_backward(kK, grp, k + kv_off, dK_sum, dk + kv_off, g0);
    scaler_backward(kV, grp, v + kv_off, dV_sum, dv + kv_off, g0);
  });

  for (int s = 0; s < 4; ++s) {
    const bool per_kv = s == kK || s == kV;
    for (int h = 0; h < scaler_heads(static_cast<Scaler>(s)); ++h) {
      const int slot = per_kv ? h * rep : h;  // where the partial sums were stored
      double ga = 0.0, gb = 0.0;
      for (int b = 0; b < B; ++b) {
        ga += partial[(static_cast<size_t>(b) * H + slot) * 8 + 2 * s];
        gb += partial[(static_cast<size_t>(b) * H + slot) * 8 + 2 * s + 1];
      }
      // clamp(a, min=1e-20) passes the gradient only where a >= 1e-20.
      if (a_[s].grad && a_[s].data[h] >= kMinScalerA) a_[s].grad[h] += static_cast<float>(ga);
      if (b_[s].grad) b_[s].grad[h] += static_cast<float>(gb);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Token-by-token decoding.

namespace {

// Q, K or V of the heads [h0, h1) of that kind (query heads for q, key/value heads for k and v;
// all of them by default): scalers, clamps and quantisers (spec §3.2); the arrays do the rest.
void quantise_head_inputs(const GainCellAttention& attn, const Quantizer& qz,
                          GainCellAttention::Scaler s, const float* x, float* out, int h0 = 0,
                          int h1 = -1) {
  const int D = attn.head_dim();
  if (h1 < 0) h1 = attn.scaler_heads(s);
  for (int h = h0; h < h1; ++h) {
    const float a = attn.scaler_a(s, h), b = attn.scaler_b(s, h);
    for (int d = 0; d < D; ++d) out[h * D + d] = qz(a * x[h * D + d] + b);
  }
}

}  // namespace

GainCellDecodeState::GainCellDecodeState(const GainCellAttention& attn)
    : attn_(attn),
      kq_(static_cast<size_t>(attn.n_kv_head()) * attn.head_dim()),
      vq_(kq_.size()),
      qq_(static_cast<size_t>(attn.n_head()) * attn.head_dim()) {
  reset();
}

void GainCellDecodeState::append(const float* k, const float* v) {
  quantise_head_inputs(attn_, Quantizer(attn_.hw().k), GainCellAttention::kK, k, kq_.data());
  quantise_head_inputs(attn_, Quantizer(attn_.hw().v), GainCellAttention::kV, v, vq_.data());
  const int D = attn_.head_dim(), Hkv = attn_.n_kv_head();
  // Heads run serially: an OpenMP region per head loop measured slower inside the engine's decode
  // (its own OpenMP team is busy with the matrix-vector products).
  for (int g = 0; g < Hkv; ++g) heads_[g].write(kq_.data() + g * D, vq_.data() + g * D);
  ++length_;
}

void GainCellDecodeState::attend(const float* q, float* out) {
  for (int g = 0; g < attn_.n_kv_head(); ++g) attend_group(q, out, g);
}

// On decode's team the key/value groups are shared out: a group's arrays (HeadArray, with their
// own scratch) are read by one thread, its query heads in turn, as attend() reads them. The
// noise is counter-based (device/noise.h: seed, stream, token, slot), so the outputs and the
// events are the same on any team. The gain-cell arrays' reads are most of a gain-cell decode
// step: on the first thread alone (the default) they made bf16 and q8 weights gain only 1.48x
// and 2.19x over fp32 at 512 tokens of GPT-2 124M (`bench_engine --attention
// gaincell-nonlinear --only weights`).
void GainCellDecodeState::attend_on_team(const float* q, float* out, SpinBarrier& barrier,
                                         int threads, std::exception_ptr& error) {
  std::exception_ptr mine;
#pragma omp for schedule(dynamic, 1) nowait
  for (int g = 0; g < attn_.n_kv_head(); ++g) {
    if (mine) continue;
    try {
      attend_group(q, out, g);
    } catch (...) {
      mine = std::current_exception();
    }
  }
  if (mine) {
#pragma omp critical(gaincell_decode_team_error)
    if (!error) error = mine;
  }
  barrier.wait(threads);
}

// The query heads of group g (all heads without grouped-query attention: g = h) read their
// group's K/V arrays one after the other.
void GainCellDecodeState::attend_group(const float* q, float* out, int g) {
  // Not require(): its message would be built as a std::string on every group and step.
  if (length_ == 0) throw Error("gain-cell decode: attend() before any append()");
  const int D = attn_.head_dim(), rep = attn_.n_head() / attn_.n_kv_head();
  quantise_head_inputs(attn_, Quantizer(attn_.hw().q), GainCellAttention::kQ, q, qq_.data(),
                       g * rep, (g + 1) * rep);
  for (int h = g * rep; h < (g + 1) * rep; ++h) {
    heads_[g].read(qq_.data() + static_cast<size_t>(h) * D, out + h * D);
    // Digital output scaler (spec §1.2 step 8).
    const float ao = attn_.scaler_a(GainCellAttention::kOut, h);
    const float bo = attn_.scaler_b(GainCellAttention::kOut, h);
    for (int d = 0; d < D; ++d) out[h * D + d] = ao * out[h * D + d] + bo;
  }
}

void GainCellDecodeState::reset() {
  heads_.clear();
  const HwConfig& hw = attn_.hw();
  for (int g = 0; g < attn_.n_kv_head(); ++g)
    heads_.emplace_back(hw, attn_.head_dim(), head_noise_seed(hw.noise.seed, attn_.layer(), g));
  length_ = 0;
}

std::unique_ptr<AttentionDecodeState> GainCellDecodeState::clone() const {
  return std::make_unique<GainCellDecodeState>(*this);
}

bool GainCellDecodeState::assign_from(const AttentionDecodeState& other) {
  const auto* o = dynamic_cast<const GainCellDecodeState*>(&other);
  if (o == nullptr || &o->attn_ != &attn_) return false;
  heads_ = o->heads_;  // element-wise copy assignment reuses each array's storage
  length_ = o->length_;
  return true;
}

ArrayEvents GainCellDecodeState::events() const {
  ArrayEvents total;
  for (const HeadArray& h : heads_) total += h.events();
  return total;
}

ArrayEvents GainCellDecodeState::last_step_events() const {
  ArrayEvents total;
  for (const HeadArray& h : heads_) total += h.last_step_events();
  return total;
}

std::unique_ptr<AttentionDecodeState> GainCellAttention::new_decode_state(KvCacheFormat) const {
  return std::make_unique<GainCellDecodeState>(*this);
}

}  // namespace gaincell
