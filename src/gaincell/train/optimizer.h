// Optimisation pieces of the trainer (issue 2 item 6; recipe in spec §6.1): AdamW with decoupled
// weight decay applied only to the decayed group (tensors of rank >= 2), the linear warm-up +
// cosine learning-rate schedule, and global-norm gradient clipping.
//
// Each kernel has a plain loop-level reference (`*_reference`) next to the fast version; the tests
// check one against the other and the reference against PyTorch.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace gaincell {

// A contiguous run of parameters in the model's flat buffer and its decay group.
struct ParamSegment {
  size_t offset = 0;
  size_t numel = 0;
  bool weight_decay = false;
};

struct AdamWConfig {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;
};

// AdamW as torch.optim.AdamW (decoupled decay p *= 1 - lr*wd, bias-corrected moments). Moments are
// kept for the whole flat buffer (entries outside every segment stay zero and are never touched).
class AdamW {
 public:
  AdamW(size_t num_params, std::vector<ParamSegment> segments, AdamWConfig config);

  // One update with learning rate `lr`; increments step().
  void step(float* params, const float* grads, float lr);
  // The same with plain loops (the oracle of the tests).
  void step_reference(float* params, const float* grads, float lr);

  int64_t step_count() const { return step_; }
  const AdamWConfig& config() const { return config_; }
  const std::vector<ParamSegment>& segments() const { return segments_; }
  std::vector<float>& m() { return m_; }
  std::vector<float>& v() { return v_; }
  const std::vector<float>& m() const { return m_; }
  const std::vector<float>& v() const { return v_; }
  // Restores a saved state (resume); sizes must match.
  void set_state(int64_t step, std::span<const float> m, std::span<const float> v);
  // Sets the step count (after m() and v() were filled in place).
  void set_step(int64_t step);

 private:
  AdamWConfig config_;
  std::vector<ParamSegment> segments_;
  std::vector<float> m_, v_;
  int64_t step_ = 0;
};

struct LrSchedule {
  float max_lr = 6e-4f;
  float min_lr = 6e-5f;
  int64_t warmup_steps = 0;  // linear warm-up: step s < warmup gets max_lr * (s + 1) / warmup
  int64_t decay_steps = 0;   // cosine from max_lr at warmup to min_lr at decay_steps; then min_lr
  // Learning rate of (0-based) step `step`. decay_steps <= warmup_steps means constant after
  // warm-up.
  float at(int64_t step) const;
};

// Global L2 norm of grads over the segments (accumulated in double).
double grad_norm(const float* grads, std::span<const ParamSegment> segments);
double grad_norm_reference(const float* grads, std::span<const ParamSegment> segments);

// torch.nn.utils.clip_grad_norm_: when the norm exceeds max_norm (> 0), scales the gradients by
// max_norm / (norm + 1e-6). Returns the norm before clipping.
double clip_grad_norm(float* grads, std::span<const ParamSegment> segments, double max_norm);

// Multiplies the gradients of the segments by `factor` (gradient accumulation averaging).
void scale_grads(float* grads, std::span<const ParamSegment> segments, float factor);

}  // namespace gaincell
