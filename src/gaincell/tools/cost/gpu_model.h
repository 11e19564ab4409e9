// GPU baselines for the cost model (docs/cost-model.md): (a) the paper's measured attention-decode
// files (spec §9.3, §9.4) and (b) an analytic roofline model of attention decode with a KV cache,
// parameterised by public datasheet values, so that any model, window and batch can be compared.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

namespace gaincell::cost {

// Datasheet values of one GPU; every field's source is in `sources`.
struct GpuSpec {
  std::string name;
  double memory_bandwidth_bytes_per_s = 0.0;
  double peak_fp32_flops = 0.0;
  double peak_fp16_flops = 0.0;  // dense tensor-core fp16 (fp32 rate when there is none)
  double board_power_w = 0.0;    // TDP / module power
  double memory_energy_j_per_byte = 0.0;
  double step_overhead_s = 0.0;  // fixed time per decode step (kernel launch + dispatch)
  nlohmann::json sources;        // field -> source
  nlohmann::json to_json() const;
};

// The built-in GPUs: Jetson Nano, RTX 4090, A100, H100, H200.
const std::vector<GpuSpec>& gpu_specs();
const GpuSpec& gpu_spec(const std::string& name);  // throws gaincell::Error for unknown names

// One attention-decode step per layer: every sequence of the batch appends one token and attends
// over `context` cached tokens (the protocol of spec §9.3 reads the full window every step).
struct DecodeWorkload {
  int heads = 12;
  int head_dim = 64;
  int64_t context = 1024;
  int64_t batch = 64;
  int bytes_per_element = 4;  // fp32 as in the measurement (spec §9.3)
  void validate() const;
  nlohmann::json to_json() const;
};

struct GpuEstimate {
  double bytes_per_token = 0.0;  // one sequence, one layer, all heads
  double flops_per_token = 0.0;
  double memory_time_s = 0.0;  // per decode step (whole batch)
  double compute_time_s = 0.0;
  double step_time_s = 0.0;
  double latency_per_token_s = 0.0;         // step time / batch (the measurement's definition)
  double energy_per_token_j = 0.0;          // board power x latency per token
  double dynamic_energy_per_token_j = 0.0;  // bytes x J/byte + flops x J/flop (lower bound)
  std::string bound;                        // "memory" or "compute"
  nlohmann::json to_json() const;
};

GpuEstimate estimate_gpu_decode(const GpuSpec& gpu, const DecodeWorkload& w);

// A measured file gpu_<tag>_attention.json (spec §9.3).
struct MeasuredGpu {
  std::string gpu;  // display name, e.g. "RTX 4090"
  std::string file;
  int sequences = 0, heads = 0, head_dim = 0;
  int64_t tokens = 0;
  double latency_per_token_s = 0.0;
  double power_per_token_w = 0.0;
  double energy_per_token_j = 0.0;
  nlohmann::json to_json() const;
};

// Reads one measured file; throws gaincell::Error naming the file and key when it is malformed.
MeasuredGpu load_measured_gpu(const std::filesystem::path& file);
// All gpu_*_attention.json files in `dir` (sorted by name); empty when `dir` is empty/missing.
std::vector<MeasuredGpu> load_measured_gpus(const std::filesystem::path& dir);

// The paper's headline ratios (spec §9.4, [SUM]) for comparison in the output.
struct PaperClaim {
  std::string gpu;
  double speedup;
  double energy_reduction;
};
const std::vector<PaperClaim>& paper_claims();
std::optional<PaperClaim> paper_claim(const std::string& gpu);

}  // namespace gaincell::cost
