// Component cost model of gain-cell attention (docs/cost-model.md). Each hardware component has
// one interface (area, critical-path latency, energy per operation, operations per token, static
// power); the model sums them per token and head, scales them with the hardware configuration and
// the model shape, and, given simulator event counts, gives an activity-based energy estimate.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/cost/cost_config.h"
#include "gaincell/tools/cost/events.h"

namespace gaincell::cost {

// The transformer whose attention runs on the hardware. Defaults: GPT-2 124M in the paper's GPU
// measurement setting (spec §1.1, §9.3).
struct ModelShape {
  int n_layer = 12;
  int n_head = 12;    // query heads
  int n_kv_head = 0;  // key/value heads (grouped-query attention); 0 = n_head
  int head_dim = 64;
  int64_t tokens = 1024;  // tokens per sequence
  int64_t batch = 64;     // sequences
  std::string source = "default: GPT-2 124M, measured GPU setting (spec §1.1, §9.3)";

  void validate() const;  // throws gaincell::Error naming the field
  nlohmann::json to_json() const;
  int kv_heads() const { return n_kv_head > 0 ? n_kv_head : n_head; }
  // Hugging Face config.json: GPT-2 keys n_layer, n_head, n_embd (n_embd / n_head = head_dim),
  // n_positions; Llama-family keys num_hidden_layers, num_attention_heads, num_key_value_heads,
  // hidden_size, head_dim, max_position_embeddings.
  static ModelShape from_hf_config(const nlohmann::json& config, const std::string& origin);
  static ModelShape load_hf_dir(const std::string& dir);
};

// Geometry of one head's hardware derived from the configuration (spec §1.1, §11 item 8).
struct HeadGeometry {
  int array_size = 0;         // N: rows = columns of one array
  int window = 0;             // M: key slots
  int head_dim = 0;           // D
  int tiles = 0;              // sub-tiles M / N (one K array + one V array each, per row tile)
  int row_tiles = 0;          // ceil(D / N): arrays stacked along the head dimension
  double cells = 0;           // physical cells in the K and V arrays
  double cells_read = 0;      // cells reached by read pulses per stage: D x M
  double writes = 0;          // cells written per token: one K column + one V row (2 D)
  double dacs = 0;            // write DACs: 2 D
  double c2p_converters = 0;  // first-stage converters: one per key column (M)
  double out_converters = 0;  // output converters and counters: D per sub-tile
  double adders = 0;          // D x (tiles - 1)
  int adder_stages = 0;       // ceil(log2(tiles))
  int count_steps = 0;        // counter full scale: |count| in 0..count_steps

  static HeadGeometry from(const HwConfig& hw, const ModelShape& shape);
  nlohmann::json to_json() const;
};

struct CostContext {
  const HwConfig& hw;
  const CostConfig& cost;
  const ModelShape& shape;
  HeadGeometry geometry;
  double latency_per_token_s = 0.0;  // one layer's attention step; set before refresh is asked
  CostContext(const HwConfig& h, const CostConfig& c, const ModelShape& s);
};

// One component's cost per token and head.
struct ComponentCost {
  std::string name;
  std::string description;
  std::string operation;  // what one operation is
  double energy_per_op_j = 0.0;
  double ops_per_token = 0.0;       // per token per head
  double energy_per_token_j = 0.0;  // per token per head, incl. static energy
  double static_power_w = 0.0;      // per head
  double latency_s = 0.0;           // contribution to the per-token critical path
  double area_mm2 = 0.0;            // per head
  double count = 0.0;               // instances per head
  nlohmann::json sources;           // field -> source string
};

// The uniform component interface (style lesson 8: one block, area / latency / power).
class Component {
 public:
  virtual ~Component() = default;
  virtual std::string name() const = 0;
  virtual std::string description() const = 0;
  virtual std::string operation() const = 0;
  virtual double area_mm2(const CostContext& ctx) const = 0;
  virtual double latency_s(const CostContext& ctx) const = 0;
  virtual double energy_per_op_j(const CostContext& ctx) const = 0;
  virtual double ops_per_token(const CostContext& ctx) const = 0;
  // Operations counted in a simulator run (totals over the run).
  virtual double ops_in_run(const CostContext& ctx, const HardwareEventCounts& ev) const = 0;
  virtual double static_power_w(const CostContext& ctx) const = 0;
  virtual double instances(const CostContext& ctx) const = 0;
  virtual nlohmann::json sources(const CostContext& ctx) const = 0;
};

// The components in breakdown order: arrays, write, converters, counter, adders, control, refresh.
std::vector<std::unique_ptr<Component>> make_components();

struct ActivityEstimate {
  HardwareEventCounts events;
  std::vector<ComponentCost> components;  // energy_per_token_j from the counted events
  double energy_per_token_per_head_j = 0.0;
  double energy_total_j = 0.0;
};

struct CostEstimate {
  std::vector<ComponentCost> components;
  double energy_per_token_per_head_j = 0.0;
  double latency_per_token_s = 0.0;  // one layer's attention step (all heads in parallel)
  double area_per_head_mm2 = 0.0;
  double array_area_per_head_mm2 = 0.0;
  double static_power_per_head_w = 0.0;
  HeadGeometry geometry;
  std::optional<ActivityEstimate> activity;
};

// Grouped-query attention on the hardware (issue 12 item 3). The per-head estimate above is one
// K/V array set read by one query head. With n_rep = n_head / n_kv_head query heads per key/value
// head there are two mappings:
//   "sequential"  one array set per KV head; the group's query heads read it one after the other
//                 (writes, refresh and the arrays' area once per KV head; the read path's energy
//                 once per query head; the read path's latency n_rep times per token)
//   "replicated"  the array set copied for every query head (area and writes x n_rep; the
//                 latency of multi-head attention)
// Without grouping (n_rep = 1) both equal n_head independent heads.
struct GqaMappingCost {
  std::string mapping;            // "sequential" or "replicated"
  int n_rep = 1;                  // query heads per key/value head
  int array_sets_per_layer = 0;   // K/V array pairs (each: sub-tiles x row tiles K and V arrays)
  double arrays_per_kv_head = 0;  // physical N x N arrays serving one key/value head
  double arrays_per_layer = 0;
  double latency_per_token_s = 0;  // one layer's attention step
  double area_per_layer_mm2 = 0;
  double energy_per_token_per_layer_j = 0;
  nlohmann::json to_json() const;
};
// Both mappings for a shape from its per-head estimate (same hw, cost and shape).
std::vector<GqaMappingCost> gqa_mapping_costs(const CostEstimate& per_head,
                                              const ModelShape& shape);

// Constant-per-token estimate (typical activity). Validates all inputs first.
CostEstimate estimate_cost(const HwConfig& hw, const CostConfig& cost, const ModelShape& shape);

// Activity-based energy from simulator event counts.
ActivityEstimate estimate_activity(const HwConfig& hw, const CostConfig& cost,
                                   const ModelShape& shape, const HardwareEventCounts& events);

// The event counts a run at the calibration point produces: full window, every pulse of typical
// width, every count of typical size. estimate_activity() of these equals estimate_cost().
HardwareEventCounts typical_event_counts(const HwConfig& hw, const CostConfig& cost,
                                         const ModelShape& shape, int64_t tokens);

}  // namespace gaincell::cost
