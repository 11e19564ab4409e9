#include "gaincell/model/memory_estimate.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gaincell/core/error.h"

namespace gaincell {

double estimated_param_count(const GPT2Config& c) {
  const double C = c.n_embd, L = c.n_layer, V = c.vocab_size, P = c.block_size;
  // Per block: 2 layer norms (4C), qkv (3C^2 + 3C), attention projection (C^2 + C),
  // MLP (4C^2 + 4C and 4C^2 + C).
  const double head = c.tie_word_embeddings ? 0.0 : V * C;
  return V * C + P * C + L * (12.0 * C * C + 13.0 * C) + 2.0 * C + head;
}

double estimated_model_bytes(const GPT2Config& c, bool with_grads, WeightFormat stored) {
  const double params = estimated_param_count(c);
  if (stored == WeightFormat::kF32) return params * sizeof(float) * (with_grads ? 2.0 : 1.0);
  // The packed matrices: every block's projections (12 C^2 per block in the GPT-2 shape) and the
  // LM head. Their fp32 pages are never written (calloc'd), except a tied head's (the embedding).
  const double C = c.n_embd, head = static_cast<double>(c.vocab_size) * C;
  const double matrices = c.n_layer * 12.0 * C * C;
  const double fp32 = params - matrices - (c.tie_word_embeddings ? 0.0 : head);
  // The bytes one packed block of a row takes, per weight (values and scale).
  const double bytes_per_weight =
      static_cast<double>(PackedMatrix::zeros(stored, 1, kQ8BlockSize).bytes()) / kQ8BlockSize;
  return fp32 * sizeof(float) * (with_grads ? 2.0 : 1.0) + (matrices + head) * bytes_per_weight;
}

double estimated_training_bytes(const GPT2Config& c, int batch, int seq_len) {
  const double BT = static_cast<double>(batch) * seq_len, C = c.n_embd, L = c.n_layer;
  // Weights, gradients, AdamW m and v.
  const double state = 4.0 * estimated_param_count(c);
  // Forward activations kept for the backward pass (10 BT C per layer, ~12 BT C outside the
  // blocks), the backward scratch (6 BT C) and the logits of one micro-batch (BT V).
  const double activations = BT * (L * (10.0 * C + 4.0) + 18.0 * C + c.vocab_size);
  return (state + activations) * sizeof(float);
}

namespace {

// A "<key>: <n> kB" line of /proc/meminfo, in bytes; 0 when absent.
double meminfo_bytes(const std::string& key) {
  std::ifstream in("/proc/meminfo");
  std::string name;
  double kb = 0;
  std::string unit;
  while (in >> name >> kb) {
    std::getline(in, unit);
    if (name == key + ":") return kb * 1024.0;
  }
  return 0;
}

}  // namespace

uint64_t available_memory_bytes() {
  double limit = 0;  // 0 = unknown
  auto lower = [&limit](double v) {
    if (v > 0 && (limit == 0 || v < limit)) limit = v;
  };
  lower(meminfo_bytes("MemAvailable") + meminfo_bytes("SwapFree"));
  for (int resource : {RLIMIT_AS, RLIMIT_DATA}) {
    rlimit r{};
    if (::getrlimit(resource, &r) == 0 && r.rlim_cur != RLIM_INFINITY)
      lower(static_cast<double>(r.rlim_cur));
  }
  if (const char* env = std::getenv("GAINCELL_MEMORY_LIMIT"); env && *env)
    lower(std::strtod(env, nullptr));
  return static_cast<uint64_t>(std::min(limit, 1.8e19));
}

std::string format_bytes(double bytes) {
  const char* units[] = {"B", "kB", "MB", "GB", "TB"};
  int u = 0;
  while (bytes >= 1000.0 && u < 4) {
    bytes /= 1000.0;
    ++u;
  }
  char buf[48];
  std::snprintf(buf, sizeof buf, bytes < 1e6 ? "%.1f %s" : "%.2g %s", bytes, units[u]);
  return buf;
}

void require_memory(double bytes, const std::string& what, const std::string& detail) {
  const uint64_t available = available_memory_bytes();
  if (available == 0 || bytes <= static_cast<double>(available)) return;
  throw Error(what + " needs about " + format_bytes(bytes) + " (" + detail + "), more than the " +
              format_bytes(static_cast<double>(available)) +
              " of memory available; choose a smaller model or batch");
}

}  // namespace gaincell
