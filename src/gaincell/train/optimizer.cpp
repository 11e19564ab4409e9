#include "gaincell/train/optimizer.h"

#include <algorithm>
#include <cmath>
#include <numbers>

#include "gaincell/core/error.h"

namespace gaincell {

namespace {

// Scalars of one AdamW step, computed in double and rounded once, as PyTorch does with its Python
// float hyper-parameters.
struct AdamWScalars {
  float beta1, one_minus_beta1, beta2, one_minus_beta2;
  float step_size;   // lr / (1 - beta1^t)
  float bias2_sqrt;  // sqrt(1 - beta2^t)
  float eps;
  float decay_multiplier;  // 1 - lr * weight_decay (decayed group only)
};

AdamWScalars adamw_scalars(const AdamWConfig& c, int64_t step, float lr) {
  const double t = static_cast<double>(step);
  AdamWScalars s;
  s.beta1 = c.beta1;
  s.one_minus_beta1 = static_cast<float>(1.0 - c.beta1);
  s.beta2 = c.beta2;
  s.one_minus_beta2 = static_cast<float>(1.0 - c.beta2);
  s.step_size = static_cast<float>(lr / (1.0 - std::pow(static_cast<double>(c.beta1), t)));
  s.bias2_sqrt = static_cast<float>(std::sqrt(1.0 - std::pow(static_cast<double>(c.beta2), t)));
  s.eps = c.eps;
  s.decay_multiplier = static_cast<float>(1.0 - static_cast<double>(lr) * c.weight_decay);
  return s;
}

}  // namespace

AdamW::AdamW(size_t num_params, std::vector<ParamSegment> segments, AdamWConfig config)
    : config_(config), segments_(std::move(segments)), m_(num_params, 0.0f), v_(num_params, 0.0f) {
  require(config.beta1 >= 0 && config.beta1 < 1, "AdamW: beta1 must be in [0, 1)");
  require(config.beta2 >= 0 && config.beta2 < 1, "AdamW: beta2 must be in [0, 1)");
  require(config.eps > 0, "AdamW: eps must be > 0");
  require(config.weight_decay >= 0, "AdamW: weight decay must be >= 0");
  for (const auto& s : segments_) {
    require(s.offset + s.numel <= num_params, "AdamW: parameter segment outside the buffer");
  }
}

void AdamW::set_state(int64_t step, std::span<const float> m, std::span<const float> v) {
  require(step >= 0, "AdamW state: negative step");
  require(m.size() == m_.size() && v.size() == v_.size(),
          "AdamW state: moment sizes " + std::to_string(m.size()) + "/" + std::to_string(v.size()) +
              " do not match the model's " + std::to_string(m_.size()) + " parameters");
  std::copy(m.begin(), m.end(), m_.begin());
  std::copy(v.begin(), v.end(), v_.begin());
  step_ = step;
}

void AdamW::set_step(int64_t step) {
  require(step >= 0, "AdamW state: negative step");
  step_ = step;
}

void AdamW::step_reference(float* params, const float* grads, float lr) {
  ++step_;
  const AdamWScalars s = adamw_scalars(config_, step_, lr);
  for (const auto& seg : segments_) {
    for (size_t i = seg.offset; i < seg.offset + seg.numel; ++i) {
      float p = params[i];
      if (seg.weight_decay) p *= s.decay_multiplier;
      const float g = grads[i];
      m_[i] = s.beta1 * m_[i] + s.one_minus_beta1 * g;
      v_[i] = s.beta2 * v_[i] + s.one_minus_beta2 * g * g;
      const float denom = std::sqrt(v_[i]) / s.bias2_sqrt + s.eps;
      params[i] = p - s.step_size * (m_[i] / denom);
    }
  }
}

void AdamW::step(float* params, const float* grads, float lr) {
  ++step_;
  const AdamWScalars s = adamw_scalars(config_, step_, lr);
  float* m = m_.data();
  float* v = v_.data();
  for (const auto& seg : segments_) {
    const float decay = seg.weight_decay ? s.decay_multiplier : 1.0f;
    const int64_t begin = static_cast<int64_t>(seg.offset);
    const int64_t end = begin + static_cast<int64_t>(seg.numel);
    // Small segments (biases, LayerNorm) are not worth waking the thread team for.
#pragma omp parallel for simd schedule(static) if (parallel : seg.numel > 32768)
    for (int64_t i = begin; i < end; ++i) {
      const float g = grads[i];
      const float mi = s.beta1 * m[i] + s.one_minus_beta1 * g;
      const float vi = s.beta2 * v[i] + s.one_minus_beta2 * g * g;
      m[i] = mi;
      v[i] = vi;
      params[i] = params[i] * decay - s.step_size * (mi / (std::sqrt(vi) / s.bias2_sqrt + s.eps));
    }
  }
}

float LrSchedule::at(int64_t step) const {
  if (step < warmup_steps) {
    return static_cast<float>(static_cast<double>(max_lr) * (step + 1) / warmup_steps);
  }
  if (decay_steps <= warmup_steps) return max_lr;
  if (step >= decay_steps) return min_lr;
  const double ratio =
      static_cast<double>(step - warmup_steps) / static_cast<double>(decay_steps - warmup_steps);
  const double coeff = 0.5 * (1.0 + std::cos(std::numbers::pi * ratio));  // 1 -> 0
  return static_cast<float>(min_lr + coeff * (static_cast<double>(max_lr) - min_lr));
}

double grad_norm_reference(const float* grads, std::span<const ParamSegment> segments) {
  double sum = 0.0;
  for (const auto& seg : segments) {
    for (size_t i = seg.offset; i < seg.offset + seg.numel; ++i) {
      sum += static_cast<double>(grads[i]) * grads[i];
    }
  }
  return std::sqrt(sum);
}

double grad_norm(const float* grads, std::span<const ParamSegment> segments) {
  // Fixed-size chunks summed in a fixed order: the result does not depend on the thread count or
  // on thread timing (an OpenMP reduction's combination order is unspecified), which the
  // bit-identical resume needs.
  constexpr size_t kChunk = 1 << 16;
  std::vector<std::pair<size_t, size_t>> chunks;  // [begin, end)
  for (const auto& seg : segments) {
    for (size_t b = seg.offset; b < seg.offset + seg.numel; b += kChunk) {
      chunks.emplace_back(b, std::min(b + kChunk, seg.offset + seg.numel));
    }
  }
  std::vector<double> partial(chunks.size(), 0.0);
#pragma omp parallel for schedule(static) if (chunks.size() > 1)
  for (int64_t c = 0; c < static_cast<int64_t>(chunks.size()); ++c) {
    double sum = 0.0;
    for (size_t i = chunks[c].first; i < chunks[c].second; ++i) {
      sum += static_cast<double>(grads[i]) * grads[i];
    }
    partial[c] = sum;
  }
  double sum = 0.0;
  for (double p : partial) sum += p;
  return std::sqrt(sum);
}

void scale_grads(float* grads, std::span<const ParamSegment> segments, float factor) {
  for (const auto& seg : segments) {
    const int64_t begin = static_cast<int64_t>(seg.offset);
    const int64_t end = begin + static_cast<int64_t>(seg.numel);
#pragma omp parallel for simd schedule(static) if (parallel : seg.numel > 32768)
    for (int64_t i = begin; i < end; ++i) grads[i] *= factor;
  }
}

double clip_grad_norm(float* grads, std::span<const ParamSegment> segments, double max_norm) {
  const double norm = grad_norm(grads, segments);
  if (max_norm > 0 && std::isfinite(norm)) {
    const double coeff = max_norm / (norm + 1e-6);
    if (coeff < 1.0) scale_grads(grads, segments, static_cast<float>(coeff));
  }
  return norm;
}

}  // namespace gaincell
