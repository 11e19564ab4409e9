// The result of `gaincell cost`: the component estimate, the optional activity-based estimate and
// the GPU comparisons, as one JSON object (every number with its source) and as a readable table.
#pragma once

#include <filesystem>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/cost/cost_config.h"
#include "gaincell/tools/cost/cost_model.h"
#include "gaincell/tools/cost/gpu_model.h"
#include "gaincell/tools/cost/serving.h"

namespace gaincell::cost {

struct GpuComparison {
  std::string gpu;
  std::string source;  // "measured" (spec §9.3 files) or "model" (analytic, datasheet values)
  double latency_per_token_s = 0.0;  // GPU, one layer, all heads (inverse throughput)
  double energy_per_token_j = 0.0;   // GPU, one layer, all heads
  double speedup = 0.0;              // GPU latency / gain-cell latency per token
  double energy_reduction = 0.0;     // GPU energy / (heads x gain-cell energy per token per head)
  int heads = 0;                     // heads the comparison is for
  std::string reference;             // file or datasheet
  nlohmann::json details;
  std::optional<PaperClaim> paper;
};

// The paper's measured protocol next to the analytic model at the same setting (spec §9.3).
struct MeasuredVsModel {
  MeasuredGpu measured;
  DecodeWorkload workload;
  GpuEstimate model;
  double latency_ratio = 0.0;                // measured / model
  double energy_ratio = 0.0;                 // measured / model (board power)
  double implied_overhead_per_step_s = 0.0;  // measured step time - memory/compute bound
  // The same setting with the traffic of the authors' script (DecodeProtocol::kPaperScript).
  GpuEstimate script_model;
  double script_latency_ratio = 0.0;  // measured / script model
  // Bandwidth the measurement would have needed to move the script's traffic in its time, and
  // that as a fraction of the datasheet bandwidth (> 1: the measurement cannot have moved it).
  double implied_bandwidth_bytes_per_s = 0.0;
  double implied_bandwidth_fraction = 0.0;
};

// The batched-serving and whole-model comparison (serving.h): which GPUs, which model.
struct ServingInputs {
  bool enabled = false;
  std::vector<std::string> gpus = {"RTX 4090", "H100"};  // names of gpu_specs() or extra_gpus
  ServedModel model = ServedModel::gpt2_124m();
  DigitalAccelerator accelerator = DigitalAccelerator::builtin();
  ServingOptions options;
};

struct CostReportInputs {
  HwConfig hw;
  CostConfig cost;
  ModelShape shape;
  std::optional<HardwareEventCounts> events;
  std::string trace_file;
  std::filesystem::path measured_dir;  // empty: measured baselines skipped
  std::vector<GpuSpec> extra_gpus;     // from --gpu-file, compared like the built-in ones
  ServingInputs serving;
};

struct CostReport {
  CostReportInputs inputs;
  CostEstimate estimate;
  std::vector<GpuComparison> gpus;
  std::vector<MeasuredVsModel> measured_vs_model;
  std::vector<ServingComparison> serving;
  std::string measured_status;
  std::vector<std::string> notes;

  nlohmann::json to_json() const;
  std::string to_table() const;
};

// Where the measured GPU files live: <shared data>/gaincell-reference, or empty when absent.
std::filesystem::path default_measured_dir();

// Speed-up and energy reduction of the gain-cell attention against one GPU figure (spec §9.4).
double speedup_vs(double gpu_latency_per_token_s, const CostEstimate& e);
double energy_reduction_vs(double gpu_energy_per_token_j, int heads, const CostEstimate& e);

CostReport build_cost_report(const CostReportInputs& inputs);

}  // namespace gaincell::cost
