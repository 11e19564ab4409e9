// Batched serving and the whole model (docs/cost-model.md §5): what one generated token costs when
// a GPU decodes a batch of sequences, for attention alone and for the whole transformer, against
// gain-cell attention with the rest of the model on the same GPU or on a digital accelerator.
//
// Per decode step every sequence of the batch appends one token, in every layer:
// - attention reads each sequence's own K/V cache, so batching amortises only kernel launches and
//   static power there (estimate_gpu_decode with the batch);
// - the dense layers (projections, MLP, LM head) read their weights once per step for the whole
//   batch and compute 2 FLOP per weight per sequence, so they turn compute-bound at large batch.
// Gain-cell attention keeps each sequence's K/V in its own arrays: a batch of B needs B copies of
// every layer's arrays (B x layers x heads heads of area), and its per-token energy does not
// depend on B.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/tools/cost/cost_model.h"
#include "gaincell/tools/cost/gpu_model.h"

namespace gaincell::cost {

// The transformer being served.
struct ServedModel {
  int n_layer = 12;
  int q_heads = 12;
  int kv_heads = 12;
  int head_dim = 64;
  double dense_params = 0.0;  // weights of every matmul per token: projections, MLP, LM head
  std::string source;
  void validate() const;
  nlohmann::json to_json() const;
  // GPT-2 124M: 12 x (4 + 8) x 768^2 + 50257 x 768 = 123.5e6 dense weights.
  static ServedModel gpt2_124m();
  // From a Hugging Face config.json: GPT-2 (n_layer, n_head, n_embd, vocab_size, n_inner) or the
  // Llama family (num_hidden_layers, num_attention_heads, num_key_value_heads, hidden_size,
  // intermediate_size, head_dim, vocab_size).
  static ServedModel from_hf_config(const nlohmann::json& config, const std::string& origin);
};

// The non-attention layers on a digital accelerator (a data file, gpus/digital_accelerator.json).
struct DigitalAccelerator {
  std::string name;
  double mac_energy_j = 0.0;
  double memory_energy_j_per_byte = 0.0;
  double macs_per_s = 0.0;
  double memory_bandwidth_bytes_per_s = 0.0;
  double idle_power_w = 0.0;
  double bytes_per_weight = 1.0;
  nlohmann::json sources;
  nlohmann::json to_json() const;
  static DigitalAccelerator from_json(const nlohmann::json& j, const std::string& origin);
  static DigitalAccelerator builtin();  // the shipped file
  static DigitalAccelerator load(const std::filesystem::path& file);
};

struct ServingOptions {
  std::vector<int64_t> batches = {1, 2, 4, 8, 16, 32, 64, 128, 256};
  int64_t context = 1024;     // cached tokens every step reads (the window)
  int bytes_per_element = 2;  // GPU precision of weights, cache and math: 2 (fp16/bf16), 4 (fp32)
  void validate() const;
};

// One decode step of the whole batch: the step latency is the time between two tokens of one
// sequence (what a user waits), the energy is per generated token (step energy / batch).
struct PerToken {
  double step_latency_s = 0.0;
  double energy_per_token_j = 0.0;
  double tokens_per_s = 0.0;  // batch / step latency
  std::string bound;          // what limits the GPU part: "memory", "compute", "" (analog only)
  nlohmann::json to_json() const;
};

struct ServingPoint {
  int64_t batch = 1;
  // Attention alone, all layers.
  PerToken gpu_attention, gaincell_attention;
  // The whole model: GPU alone; gain-cell attention + dense layers on the GPU; gain-cell
  // attention + dense layers on the digital accelerator.
  PerToken gpu_model, gaincell_gpu_model, gaincell_accelerator_model;
  // Speed-up = step-latency ratio at the same batch (the gain-cell side has one array set per
  // sequence); energy ratio = GPU energy per token / gain-cell energy per token.
  double attention_speedup = 0.0, attention_energy_ratio = 0.0;
  double model_speedup_gpu_rest = 0.0, model_energy_ratio_gpu_rest = 0.0;
  double model_speedup_accelerator_rest = 0.0, model_energy_ratio_accelerator_rest = 0.0;
  // Attention throughput per unit area, gain-cell arrays against the GPU die: the comparison at
  // equal silicon (independent of how many array sets one buys).
  double attention_throughput_per_area_ratio = 0.0;
  double gaincell_area_mm2 = 0.0;  // B copies of every layer's heads
  double gpu_die_area_mm2 = 0.0;
  nlohmann::json to_json() const;
};

struct ServingComparison {
  std::string gpu;
  ServedModel model;
  ServingOptions options;
  std::vector<ServingPoint> points;
  // Sequences whose gain-cell arrays fit in the GPU's die area.
  double sequences_in_gpu_die_area = 0.0;
  nlohmann::json to_json() const;
};

// The dense layers of one decode step on the GPU: weights read once, 2 FLOP per weight per
// sequence, about 7 kernels per layer + 2.
GpuEstimate estimate_gpu_dense_step(const GpuSpec& gpu, const ServedModel& m, int64_t batch,
                                    int bytes_per_element);

ServingComparison compare_serving(const GpuSpec& gpu, const DigitalAccelerator& accelerator,
                                  const ServedModel& model, const CostEstimate& gaincell,
                                  const ServingOptions& options);

}  // namespace gaincell::cost
