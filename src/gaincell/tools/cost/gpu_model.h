// GPU baselines for the cost model (docs/cost-model.md): (a) the paper's measured attention-decode
// files (spec §9.3, §9.4) and (b) an analytic roofline model of attention decode with a KV cache,
// parameterised by public datasheet values, so that any model, window and batch can be compared.
// The datasheet values are data files (src/gaincell/tools/cost/gpus/*.json, compiled into the
// library; more with load_gpu_file()), each number with its source.
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
  double step_overhead_s = 0.0;  // time per kernel launch (+ framework dispatch)
  double idle_power_w = 0.0;     // drawn whatever the GPU does (static)
  double die_area_mm2 = 0.0;     // for equal-area comparisons
  nlohmann::json sources;        // field -> source
  // Dynamic energy of one FLOP at a precision: (board - idle power) / peak rate, an upper bound
  // (the chip at full rate draws at most its board power).
  double energy_per_flop_j(int bytes_per_element) const;
  double peak_flops(int bytes_per_element) const;
  nlohmann::json to_json() const;
};

// The built-in GPUs: Jetson Nano, RTX 4090, A100, H100, H200 (the shipped data files).
const std::vector<GpuSpec>& gpu_specs();
const GpuSpec& gpu_spec(const std::string& name);  // throws gaincell::Error for unknown names
// A GPU data file ({"format": "gaincell-gpu", "version": 1, "name", and per field
// {"value", "source"}}); throws gaincell::Error naming the file and the field when malformed.
GpuSpec gpu_spec_from_json(const nlohmann::json& j, const std::string& origin);
GpuSpec load_gpu_file(const std::filesystem::path& file);

// How the attention step reads the cache. kIdeal: one fused kernel reads K and V once (a
// FlashDecoding-style kernel at the memory bound). kPaperScript: what the authors' measurement
// script does (spec §9.3, tests_divers/test_speed_energy.py): torch.matmul on transposed,
// non-contiguous cache views, which copies K and V to contiguous buffers before each batched
// matmul (read + write + read = 3 passes over each), no softmax, about 6 kernels per step.
enum class DecodeProtocol { kIdeal, kPaperScript };
const char* protocol_name(DecodeProtocol p);  // "ideal", "paper-script"

// One attention-decode step per layer: every sequence of the batch appends one token and attends
// over `context` cached tokens (the protocol of spec §9.3 reads the full window every step).
struct DecodeWorkload {
  int heads = 12;  // query heads
  int head_dim = 64;
  int64_t context = 1024;
  int64_t batch = 64;
  int bytes_per_element = 4;  // fp32 as in the measurement (spec §9.3); 2 = fp16/bf16
  int kv_heads = 0;           // grouped-query attention: K/V heads (0 = heads)
  DecodeProtocol protocol = DecodeProtocol::kIdeal;
  int effective_kv_heads() const { return kv_heads > 0 ? kv_heads : heads; }
  int kernels_per_step() const { return protocol == DecodeProtocol::kIdeal ? 1 : 6; }
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
  double energy_per_token_j = 0.0;          // board power x latency per token (upper bound)
  double dynamic_energy_per_token_j = 0.0;  // bytes x J/byte + flops x J/flop (lower bound)
  // idle power x latency + dynamic energy, capped at the upper bound: the serving comparison's
  // estimate (docs/cost-model.md §3)
  double modelled_energy_per_token_j = 0.0;
  std::string bound;  // "memory" or "compute"
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
