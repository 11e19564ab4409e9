#include "gaincell/model/memory_estimate.h"

#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "gaincell/core/error.h"
#include "gaincell/core/huge_pages.h"

namespace gaincell {

double estimated_param_count(const GPT2Config& c) {
  const double C = c.n_embd, L = c.n_layer, V = c.vocab_size, P = c.block_size;
  // Per block: 2 layer norms (4C), qkv (3C^2 + 3C), attention projection (C^2 + C),
  // MLP (4C^2 + 4C and 4C^2 + C).
  const double head = c.tie_word_embeddings ? 0.0 : V * C;
  return V * C + P * C + L * (12.0 * C * C + 13.0 * C) + 2.0 * C + head;
}

namespace {

// The floats of the fp32 parameters a packed load never writes: every block's projections
// (12 C^2 per block in the GPT-2 shape) and an untied LM head (a tied head is also the embedding,
// kept in fp32).
double unwritten_fp32_floats(const GPT2Config& c) {
  const double C = c.n_embd, head = static_cast<double>(c.vocab_size) * C;
  return c.n_layer * 12.0 * C * C + (c.tie_word_embeddings ? 0.0 : head);
}

// The packed matrices' bytes: every block's projections and the LM head (tied or not), at the
// bytes one packed block of a row takes per weight (values and scale).
double packed_bytes(const GPT2Config& c, WeightFormat stored) {
  const double C = c.n_embd, head = static_cast<double>(c.vocab_size) * C;
  const double bytes_per_weight =
      static_cast<double>(PackedMatrix::zeros(stored, 1, kQ8BlockSize).bytes()) / kQ8BlockSize;
  return (c.n_layer * 12.0 * C * C + head) * bytes_per_weight;
}

}  // namespace

double estimated_model_bytes(const GPT2Config& c, bool with_grads, WeightFormat stored) {
  const double params = estimated_param_count(c);
  if (stored == WeightFormat::kF32) return params * sizeof(float) * (with_grads ? 2.0 : 1.0);
  return (params - unwritten_fp32_floats(c)) * sizeof(float) * (with_grads ? 2.0 : 1.0) +
         packed_bytes(c, stored);
}

double estimated_model_address_space(const GPT2Config& c, WeightFormat stored) {
  const double fp32 = estimated_param_count(c) * sizeof(float);
  // A packed matrix's mapping takes 2 MB more while it is made (core/huge_pages.h).
  return stored == WeightFormat::kF32 ? fp32
                                      : fp32 + packed_bytes(c, stored) + double(kHugePageBytes);
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

namespace {

// The smaller of two limits, 0 meaning unknown.
double lower_limit(double limit, double v) {
  return v > 0 && (limit == 0 || v < limit) ? v : limit;
}

// /proc/self/status's "VmSize: <n> kB" in bytes; 0 when unknown.
double mapped_now_bytes() {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmSize:", 0) == 0) return std::strtod(line.c_str() + 7, nullptr) * 1024.0;
  return 0;
}

}  // namespace

uint64_t available_memory_bytes() {
  double limit = lower_limit(0, meminfo_bytes("MemAvailable") + meminfo_bytes("SwapFree"));
  if (const char* env = std::getenv("GAINCELL_MEMORY_LIMIT"); env && *env)
    limit = lower_limit(limit, std::strtod(env, nullptr));
  return static_cast<uint64_t>(std::min(limit, 1.8e19));
}

uint64_t available_address_space_bytes() {
  double limit = 0;
  for (int resource : {RLIMIT_AS, RLIMIT_DATA}) {
    rlimit r{};
    if (::getrlimit(resource, &r) == 0 && r.rlim_cur != RLIM_INFINITY)
      limit = lower_limit(limit, static_cast<double>(r.rlim_cur));
  }
  if (limit == 0) return 0;
  // What is mapped already counts against the limit; 1 byte left means "a limit, and it is spent".
  return static_cast<uint64_t>(std::clamp(limit - mapped_now_bytes(), 1.0, 1.8e19));
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

void require_memory(double bytes, const std::string& what, const std::string& detail,
                    double mapped_bytes) {
  const uint64_t available = available_memory_bytes();
  if (available != 0 && bytes > static_cast<double>(available))
    throw Error(what + " needs about " + format_bytes(bytes) + " (" + detail + "), more than the " +
                format_bytes(static_cast<double>(available)) +
                " of memory available; choose a smaller model or batch");
  if (mapped_bytes < 0) mapped_bytes = bytes;
  const uint64_t space = available_address_space_bytes();
  if (space != 0 && mapped_bytes > static_cast<double>(space))
    throw Error(what + " maps about " + format_bytes(mapped_bytes) + " of address space (" +
                detail + "), more than the " + format_bytes(static_cast<double>(space)) +
                " the process's address-space limit leaves (ulimit -v / -d: RLIMIT_AS, "
                "RLIMIT_DATA); raise the limit or choose a smaller model or batch");
}

}  // namespace gaincell
