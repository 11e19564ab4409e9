#include "gaincell/tools/cost/cost_model.h"

#include <cmath>
#include <filesystem>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/hw/technology.h"
#include "gaincell/tools/cost/technology_cost.h"

namespace gaincell::cost {

using nlohmann::json;

// --------------------------------------------------------------------------------------------
// Model shape

void ModelShape::validate() const {
  require(n_layer >= 1 && n_layer <= 100000, "model.n_layer: must be in [1, 100000]");
  require(n_head >= 1 && n_head <= 100000, "model.n_head: must be in [1, 100000]");
  require(n_kv_head >= 0 && n_head % kv_heads() == 0, "model.n_kv_head: must divide n_head (" +
                                                          std::to_string(n_head) + "), got " +
                                                          std::to_string(n_kv_head));
  require(head_dim >= 1 && head_dim <= 65536, "model.head_dim: must be in [1, 65536]");
  require(tokens >= 1 && tokens <= (int64_t(1) << 40), "model.tokens: must be in [1, 2^40]");
  require(batch >= 1 && batch <= (int64_t(1) << 30), "model.batch: must be in [1, 2^30]");
}

json ModelShape::to_json() const {
  return {{"n_layer", n_layer},   {"n_head", n_head}, {"n_kv_head", kv_heads()},
          {"head_dim", head_dim}, {"tokens", tokens}, {"batch", batch},
          {"source", source}};
}

namespace {

int read_positive_int(const json& config, const char* key, const std::string& origin) {
  require(config.contains(key), origin + ": missing key '" + key + "'");
  const json& v = config.at(key);
  return json_int<int>(v, origin + ": '" + key + "'", 1, 1000000);
}

}  // namespace

ModelShape ModelShape::from_hf_config(const json& config, const std::string& origin) {
  require(config.is_object(), origin + ": expected a JSON object");
  ModelShape s;
  const bool gpt2 = !config.contains("num_attention_heads");
  if (gpt2) {
    s.n_layer = read_positive_int(config, "n_layer", origin);
    s.n_head = read_positive_int(config, "n_head", origin);
    const int n_embd = read_positive_int(config, "n_embd", origin);
    require(n_embd % s.n_head == 0, origin + ": 'n_embd' (" + std::to_string(n_embd) +
                                        ") is not a multiple of 'n_head' (" +
                                        std::to_string(s.n_head) + ")");
    s.head_dim = n_embd / s.n_head;
    if (config.contains("n_positions")) s.tokens = read_positive_int(config, "n_positions", origin);
    s.source = origin + " (n_layer, n_head, n_embd/n_head" +
               std::string(config.contains("n_positions") ? ", n_positions as tokens" : "") + ")";
  } else {  // the Llama family (llama, mistral, qwen2)
    s.n_layer = read_positive_int(config, "num_hidden_layers", origin);
    s.n_head = read_positive_int(config, "num_attention_heads", origin);
    s.n_kv_head = config.contains("num_key_value_heads") && !config["num_key_value_heads"].is_null()
                      ? read_positive_int(config, "num_key_value_heads", origin)
                      : s.n_head;
    require(s.n_head % s.n_kv_head == 0,
            origin + ": 'num_key_value_heads' (" + std::to_string(s.n_kv_head) +
                ") does not divide 'num_attention_heads' (" + std::to_string(s.n_head) + ")");
    if (config.contains("head_dim") && !config["head_dim"].is_null()) {
      s.head_dim = read_positive_int(config, "head_dim", origin);
    } else {
      const int hidden = read_positive_int(config, "hidden_size", origin);
      require(hidden % s.n_head == 0, origin + ": 'hidden_size' (" + std::to_string(hidden) +
                                          ") is not a multiple of 'num_attention_heads' (" +
                                          std::to_string(s.n_head) + ")");
      s.head_dim = hidden / s.n_head;
    }
    const bool positions = config.contains("max_position_embeddings");
    if (positions) s.tokens = read_positive_int(config, "max_position_embeddings", origin);
    s.source = origin + " (num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim" +
               std::string(positions ? ", max_position_embeddings as tokens" : "") + ")";
  }
  s.validate();
  return s;
}

ModelShape ModelShape::load_hf_dir(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / "config.json";
  std::error_code ec;
  require(std::filesystem::is_regular_file(path, ec),
          "model directory '" + dir + "' has no config.json");
  return from_hf_config(read_json_file(path), path.string());
}

// --------------------------------------------------------------------------------------------
// Geometry

HeadGeometry HeadGeometry::from(const HwConfig& hw, const ModelShape& shape) {
  HeadGeometry g;
  g.array_size = hw.array_size;
  g.window = hw.window;
  g.head_dim = shape.head_dim;
  g.tiles = hw.window / hw.array_size;
  g.row_tiles = (shape.head_dim + hw.array_size - 1) / hw.array_size;
  const double n = hw.array_size;
  g.cells = 2.0 * g.tiles * g.row_tiles * n * n;
  g.cells_read = double(shape.head_dim) * hw.window;
  g.writes = 2.0 * shape.head_dim;
  g.dacs = 2.0 * shape.head_dim;
  g.c2p_converters = hw.window;
  g.out_converters = double(shape.head_dim) * g.tiles;
  g.adders = double(shape.head_dim) * (g.tiles - 1);
  g.adder_stages = g.tiles > 1 ? static_cast<int>(std::ceil(std::log2(double(g.tiles)))) : 0;
  // Signed output: sign + magnitude counter; 32 levels in [-1, 1] ⇒ |count| in 0..15 (spec §1.2).
  g.count_steps = std::max(1, (hw.out.levels - 1) / 2);
  return g;
}

json HeadGeometry::to_json() const {
  return {{"array_size", array_size},
          {"window", window},
          {"head_dim", head_dim},
          {"sub_tiles", tiles},
          {"row_tiles", row_tiles},
          {"cells", cells},
          {"cells_read_per_stage", cells_read},
          {"cells_written_per_token", writes},
          {"dacs", dacs},
          {"c2p_converters", c2p_converters},
          {"output_converters", out_converters},
          {"adders", adders},
          {"adder_stages", adder_stages},
          {"counter_steps", count_steps},
          {"source",
           "derived from hw (array_size, window, out levels) and head_dim: sub_tiles = M/N, "
           "cells = 2 x sub_tiles x ceil(D/N) x N^2 (spec §1.1, §11 item 8)"}};
}

CostContext::CostContext(const HwConfig& h, const CostConfig& c, const ModelShape& s)
    : hw(h), cost(c), shape(s), geometry(HeadGeometry::from(h, s)) {}

namespace {

int64_t token_heads_in_run(const HardwareEventCounts& ev) {
  return ev.tokens * ev.heads * ev.layers;
}

// Time between two tokens of one sequence: every layer's attention step runs in turn.
double token_interval_s(const CostContext& ctx) {
  if (ctx.cost.token_interval_s.value > 0.0) return ctx.cost.token_interval_s.value;
  return ctx.shape.n_layer * ctx.latency_per_token_s;
}

// --------------------------------------------------------------------------------------------
// Components. Energies are per token and head; latencies are contributions to one layer's
// attention step (all heads and sub-tiles work in parallel, spec §1.2).

// Gain-cell array read (spec §1.2 steps 4 and 6): every pulse drives a row of cells whose read
// current integrates on the bit lines; the energy scales with cells x pulse width.
class ArrayRead : public Component {
 public:
  explicit ArrayRead(bool qk) : qk_(qk) {}
  std::string name() const override { return qk_ ? "array_read_qk" : "array_read_av"; }
  std::string description() const override {
    return qk_ ? "K arrays read by the Q pulses (first dot product)"
               : "V arrays read by the φ pulses (second dot product)";
  }
  std::string operation() const override { return "one cell read by a pulse of width Tmax"; }
  const Param& energy_param(const CostContext& ctx) const {
    return qk_ ? ctx.cost.qk_read_energy_per_cell_tmax_j : ctx.cost.av_read_energy_per_cell_tmax_j;
  }
  const Param& width_param(const CostContext& ctx) const {
    return qk_ ? ctx.cost.typical_q_width_tmax : ctx.cost.typical_phi_width_tmax;
  }
  double area_mm2(const CostContext& ctx) const override {
    const auto& c = ctx.cost;
    const double cells = ctx.geometry.cells / 2.0;  // K or V half
    if (c.stack_layers.value > 1.0)
      return cells * c.stacked_cell_area_mm2.value / c.stack_layers.value;
    return cells * c.cell_area_mm2.value;
  }
  double latency_s(const CostContext& ctx) const override { return ctx.hw.tmax_s; }
  double energy_per_op_j(const CostContext& ctx) const override {
    // The read current flows for the pulse: energy per Tmax-wide pulse scales with Tmax.
    return energy_param(ctx).value * ctx.hw.tmax_s / ctx.cost.read_energy_ref_tmax_s.value;
  }
  double ops_per_token(const CostContext& ctx) const override {
    return ctx.geometry.cells_read * width_param(ctx).value;
  }
  double ops_in_run(const CostContext& ctx, const HardwareEventCounts& ev) const override {
    // A Q pulse drives one K-array row (N slots); a φ pulse drives one slot's row of D cells.
    return qk_ ? ev.q_pulse_width_sum_tmax * ctx.geometry.array_size
               : ev.phi_pulse_width_sum_tmax * ctx.geometry.head_dim;
  }
  double static_power_w(const CostContext& ctx) const override {
    return ctx.geometry.cells / 2.0 * ctx.cost.cell_static_power_w.value;
  }
  double instances(const CostContext& ctx) const override {
    return double(ctx.geometry.tiles) * ctx.geometry.row_tiles;
  }
  json sources(const CostContext& ctx) const override {
    const auto& c = ctx.cost;
    return {{"energy_per_op_j",
             energy_param(ctx).source + "; x hw.tmax_s / " + "read_energy_ref_tmax_s"},
            {"ops_per_token", "D x M cells x " + width_param(ctx).source},
            {"latency_s", "one pulse of hw.tmax_s (spec §1.2)"},
            {"area_mm2", c.stack_layers.value > 1.0
                             ? c.stacked_cell_area_mm2.source + "; / stack_layers"
                             : c.cell_area_mm2.source},
            {"static_power_w", c.cell_static_power_w.source}};
  }

 private:
  bool qk_;
};

// K/V write through the 3-bit DACs: one K column and one V row per token (spec §1.2 step 3).
class CellWrite : public Component {
 public:
  std::string name() const override { return "cell_write_dac"; }
  std::string description() const override { return "K/V cell writes through the DACs"; }
  std::string operation() const override { return "one cell written"; }
  double area_mm2(const CostContext& ctx) const override {
    return ctx.geometry.dacs * ctx.cost.dac_area_mm2.value;
  }
  double latency_s(const CostContext&) const override { return 0.0; }  // in control_latency_s
  double energy_per_op_j(const CostContext& ctx) const override {
    // A capacitive DAC's energy grows with its number of levels (assumption, docs).
    const double ref_steps = ctx.cost.write_ref_levels.value - 1.0;
    const double steps = 0.5 * ((ctx.hw.k.levels - 1) + (ctx.hw.v.levels - 1));
    return ctx.cost.write_energy_per_cell_j.value * steps / ref_steps;
  }
  double ops_per_token(const CostContext& ctx) const override { return ctx.geometry.writes; }
  double ops_in_run(const CostContext&, const HardwareEventCounts& ev) const override {
    return double(ev.cell_writes);
  }
  double static_power_w(const CostContext&) const override { return 0.0; }
  double instances(const CostContext& ctx) const override { return ctx.geometry.dacs; }
  json sources(const CostContext& ctx) const override {
    return {{"energy_per_op_j", ctx.cost.write_energy_per_cell_j.source +
                                    "; x (K/V levels - 1) / (write_ref_levels - 1) (assumption)"},
            {"ops_per_token", "2 x head_dim cells (one K column, one V row; spec §1.2)"},
            {"latency_s", "inside control_latency_s"},
            {"area_mm2", ctx.cost.dac_area_mm2.source + "; x 2 D DACs"},
            {"static_power_w", "none modelled"}};
  }
};

// A converter or counter with a fixed energy per operation and one instance per op per token.
class FixedOpComponent : public Component {
 public:
  struct Spec {
    std::string name, description, operation;
    const Param CostConfig::*energy;
    const Param CostConfig::*area;
    double HeadGeometry::*count;
    int64_t HardwareEventCounts::*run_ops;
    std::string ops_source;
  };
  explicit FixedOpComponent(Spec s) : s_(std::move(s)) {}
  std::string name() const override { return s_.name; }
  std::string description() const override { return s_.description; }
  std::string operation() const override { return s_.operation; }
  double area_mm2(const CostContext& ctx) const override {
    return ctx.geometry.*s_.count * (ctx.cost.*s_.area).value;
  }
  // Converters run while their input pulse is applied: no time of their own on the path.
  double latency_s(const CostContext&) const override { return 0.0; }
  double energy_per_op_j(const CostContext& ctx) const override {
    return (ctx.cost.*s_.energy).value;
  }
  double ops_per_token(const CostContext& ctx) const override { return ctx.geometry.*s_.count; }
  double ops_in_run(const CostContext&, const HardwareEventCounts& ev) const override {
    return double(ev.*s_.run_ops);
  }
  double static_power_w(const CostContext&) const override { return 0.0; }
  double instances(const CostContext& ctx) const override { return ctx.geometry.*s_.count; }
  json sources(const CostContext& ctx) const override {
    return {{"energy_per_op_j", (ctx.cost.*s_.energy).source},
            {"ops_per_token", s_.ops_source},
            {"latency_s", "overlaps the pulse it converts"},
            {"area_mm2", (ctx.cost.*s_.area).source},
            {"static_power_w", "none modelled"}};
  }

 private:
  Spec s_;
};

// Pulse counter of the output stage: counts |A| in steps of counter_period_s (spec §1.2 step 7).
class PulseCounter : public Component {
 public:
  std::string name() const override { return "pulse_counter"; }
  std::string description() const override { return "output pulse counters (sign + magnitude)"; }
  std::string operation() const override { return "one counter increment"; }
  double area_mm2(const CostContext& ctx) const override {
    return ctx.geometry.out_converters * ctx.cost.counter_area_mm2.value;
  }
  double latency_s(const CostContext& ctx) const override {
    return ctx.geometry.count_steps * ctx.cost.counter_period_s.value;
  }
  double energy_per_op_j(const CostContext& ctx) const override {
    return ctx.cost.counter_energy_per_increment_j.value;
  }
  double ops_per_token(const CostContext& ctx) const override {
    return ctx.geometry.out_converters * ctx.geometry.count_steps *
           ctx.cost.typical_count_fraction.value;
  }
  double ops_in_run(const CostContext&, const HardwareEventCounts& ev) const override {
    return double(ev.counter_increments);
  }
  double static_power_w(const CostContext&) const override { return 0.0; }
  double instances(const CostContext& ctx) const override { return ctx.geometry.out_converters; }
  json sources(const CostContext& ctx) const override {
    return {{"energy_per_op_j", ctx.cost.counter_energy_per_increment_j.source},
            {"ops_per_token", "D x sub-tiles counters x (out levels - 1)/2 steps x " +
                                  ctx.cost.typical_count_fraction.source},
            {"latency_s",
             "(out levels - 1)/2 steps x counter_period_s: " + ctx.cost.counter_period_s.source},
            {"area_mm2", ctx.cost.counter_area_mm2.source},
            {"static_power_w", "none modelled"}};
  }
};

// Digital adders summing the sub-tile outputs of every output dimension (spec §1.2 step 8).
class DigitalAdders : public Component {
 public:
  std::string name() const override { return "digital_adders"; }
  std::string description() const override { return "adder trees over the sub-tile outputs"; }
  std::string operation() const override { return "one addition"; }
  double area_mm2(const CostContext& ctx) const override {
    return ctx.geometry.adders * ctx.cost.adder_area_mm2.value;
  }
  double latency_s(const CostContext& ctx) const override {
    return ctx.geometry.adder_stages * ctx.cost.adder_delay_s.value;
  }
  double energy_per_op_j(const CostContext& ctx) const override {
    return ctx.cost.adder_energy_j.value;
  }
  double ops_per_token(const CostContext& ctx) const override { return ctx.geometry.adders; }
  double ops_in_run(const CostContext&, const HardwareEventCounts& ev) const override {
    return double(ev.digital_adds);
  }
  double static_power_w(const CostContext&) const override { return 0.0; }
  double instances(const CostContext& ctx) const override { return ctx.geometry.adders; }
  json sources(const CostContext& ctx) const override {
    return {{"energy_per_op_j", ctx.cost.adder_energy_j.source},
            {"ops_per_token", "D x (sub-tiles - 1) additions"},
            {"latency_s", "ceil(log2(sub-tiles)) stages x " + ctx.cost.adder_delay_s.source},
            {"area_mm2", ctx.cost.adder_area_mm2.source},
            {"static_power_w", "none modelled"}};
  }
};

// Digital control, routing, PWM generation and write sequencing: a fixed cost per token and head.
class ControlRouting : public Component {
 public:
  std::string name() const override { return "control_routing"; }
  std::string description() const override { return "digital control, routing, PWM, sequencing"; }
  std::string operation() const override { return "one token step of one head"; }
  double area_mm2(const CostContext& ctx) const override { return ctx.cost.control_area_mm2.value; }
  double latency_s(const CostContext& ctx) const override {
    return ctx.cost.control_latency_s.value;
  }
  double energy_per_op_j(const CostContext& ctx) const override {
    return ctx.cost.control_energy_j.value;
  }
  double ops_per_token(const CostContext&) const override { return 1.0; }
  double ops_in_run(const CostContext&, const HardwareEventCounts& ev) const override {
    return double(token_heads_in_run(ev));
  }
  double static_power_w(const CostContext& ctx) const override {
    return ctx.cost.control_static_power_w.value;
  }
  double instances(const CostContext&) const override { return 1.0; }
  json sources(const CostContext& ctx) const override {
    return {{"energy_per_op_j", ctx.cost.control_energy_j.source},
            {"ops_per_token", "one step per token and head"},
            {"latency_s", ctx.cost.control_latency_s.source},
            {"area_mm2", ctx.cost.control_area_mm2.source},
            {"static_power_w", ctx.cost.control_static_power_w.source}};
  }
};

// Refresh (spec §1.3): a slot is rewritten by the sliding window every M tokens; only if that
// takes longer than the refresh interval must the stored cells be refreshed, each refresh being
// one cell write.
class Refresh : public Component {
 public:
  std::string name() const override { return "refresh"; }
  std::string description() const override { return "refresh writes beyond the sliding window"; }
  std::string operation() const override { return "one cell refreshed"; }
  static double slot_lifetime_s(const CostContext& ctx) {
    return ctx.geometry.window * token_interval_s(ctx);
  }
  static double refresh_interval_s(const CostContext& ctx) {
    return ctx.hw.leakage.retention_s() * ctx.cost.refresh_margin.value;
  }
  // Where the hardware's retention time comes from, for the sources.
  static std::string retention_source(const CostContext& ctx) {
    const LeakageConfig& l = ctx.hw.leakage;
    if (!l.enabled) return "leakage disabled: no retention limit";
    if (l.retention_time_s > 0.0) return "hw leakage.retention_time_s";
    if (!l.technology.empty()) {
      const Technology& t = technology(l.technology);
      return "technology " + t.name + ": " + t.sources.value("retention_time_s", std::string());
    }
    return "hw leakage.time_per_token_s / lambda_per_token (spec §1.3: 0.8 us / 1.6e-4 = 5 ms)";
  }
  // An explicit refresh policy (hw leakage.refresh_interval_tokens = R) rewrites each of the M
  // stored rows every R tokens: M / R row writes (2 D cells each) per token when R < M.
  static double policy_rows_per_token(const CostContext& ctx) {
    const int64_t r = ctx.hw.leakage.refresh_interval_tokens;
    if (r <= 0 || r >= ctx.geometry.window) return 0.0;
    return double(ctx.geometry.window) / double(r);
  }
  double area_mm2(const CostContext&) const override { return 0.0; }
  // Retention-driven refresh is assumed interleaved with the reads; a refresh policy's row writes
  // take one Tmax write pulse each on the critical path (assumption: a row is written in parallel
  // through its DACs in one pulse period).
  double latency_s(const CostContext& ctx) const override {
    return policy_rows_per_token(ctx) * ctx.hw.tmax_s;
  }
  double energy_per_op_j(const CostContext& ctx) const override {
    return CellWrite().energy_per_op_j(ctx);
  }
  double ops_per_token(const CostContext& ctx) const override {
    if (ctx.hw.leakage.refresh_interval_tokens > 0)
      return policy_rows_per_token(ctx) * 2.0 * ctx.geometry.head_dim;
    if (slot_lifetime_s(ctx) <= refresh_interval_s(ctx)) return 0.0;
    // Every stored cell (2 D M) once per refresh interval, spread over the tokens in it.
    return 2.0 * ctx.geometry.cells_read * token_interval_s(ctx) / refresh_interval_s(ctx);
  }
  double ops_in_run(const CostContext& ctx, const HardwareEventCounts& ev) const override {
    return ops_per_token(ctx) * double(token_heads_in_run(ev));
  }
  double static_power_w(const CostContext&) const override { return 0.0; }
  double instances(const CostContext&) const override { return 0.0; }
  json sources(const CostContext& ctx) const override {
    return {{"energy_per_op_j", "one cell write (cell_write_dac)"},
            {"ops_per_token",
             ctx.hw.leakage.refresh_interval_tokens > 0
                 ? std::string("refresh policy: M / R rows of 2 D cells per token when R < M")
                 : "0 while window x token interval <= hw retention time x refresh_margin (" +
                       retention_source(ctx) + "), else 2 D M cells per refresh interval"},
            {"latency_s",
             "retention refresh: assumed interleaved with reads; refresh policy: one Tmax write "
             "pulse per refreshed row (assumption)"},
            {"area_mm2", "uses the write DACs"},
            {"static_power_w", "none modelled"}};
  }
};

ComponentCost evaluate(const Component& c, const CostContext& ctx) {
  ComponentCost r;
  r.name = c.name();
  r.description = c.description();
  r.operation = c.operation();
  r.energy_per_op_j = c.energy_per_op_j(ctx);
  r.ops_per_token = c.ops_per_token(ctx);
  r.static_power_w = c.static_power_w(ctx);
  // Static power burns during the whole token interval.
  r.energy_per_token_j =
      r.energy_per_op_j * r.ops_per_token + r.static_power_w * token_interval_s(ctx);
  r.latency_s = c.latency_s(ctx);
  r.area_mm2 = c.area_mm2(ctx);
  r.count = c.instances(ctx);
  r.sources = c.sources(ctx);
  return r;
}

void validate_inputs(const HwConfig& hw, const CostConfig& cost, const ModelShape& shape) {
  hw.validate();
  cost.validate();
  shape.validate();
}

}  // namespace

std::vector<std::unique_ptr<Component>> make_components() {
  std::vector<std::unique_ptr<Component>> v;
  v.push_back(std::make_unique<ArrayRead>(true));
  v.push_back(std::make_unique<ArrayRead>(false));
  v.push_back(std::make_unique<CellWrite>());
  v.push_back(std::make_unique<FixedOpComponent>(FixedOpComponent::Spec{
      "charge_to_pulse", "HardSigmoid charge-to-pulse converters (first stage)", "one conversion",
      &CostConfig::c2p_energy_j, &CostConfig::c2p_area_mm2, &HeadGeometry::c2p_converters,
      &HardwareEventCounts::c2p_conversions, "one per key column: M (spec §1.2 step 5)"}));
  v.push_back(std::make_unique<FixedOpComponent>(FixedOpComponent::Spec{
      "output_converter", "signed charge-to-pulse converters (output stage)", "one conversion",
      &CostConfig::out_c2p_energy_j, &CostConfig::out_c2p_area_mm2, &HeadGeometry::out_converters,
      &HardwareEventCounts::output_conversions, "D per sub-tile (spec §1.2 step 7)"}));
  v.push_back(std::make_unique<PulseCounter>());
  v.push_back(std::make_unique<DigitalAdders>());
  v.push_back(std::make_unique<ControlRouting>());
  v.push_back(std::make_unique<Refresh>());
  return v;
}

CostEstimate estimate_cost(const HwConfig& hw, const CostConfig& cost, const ModelShape& shape) {
  validate_inputs(hw, cost, shape);
  const CostConfig hw_cost = cost_for_hardware(cost, hw);  // technology, retention
  CostContext ctx(hw, hw_cost, shape);
  const auto components = make_components();
  // The critical path first: refresh and static energy depend on the time per token.
  for (const auto& c : components) ctx.latency_per_token_s += c->latency_s(ctx);
  CostEstimate e;
  e.geometry = ctx.geometry;
  e.latency_per_token_s = ctx.latency_per_token_s;
  for (const auto& c : components) {
    ComponentCost r = evaluate(*c, ctx);
    e.energy_per_token_per_head_j += r.energy_per_token_j;
    e.area_per_head_mm2 += r.area_mm2;
    e.static_power_per_head_w += r.static_power_w;
    if (r.name == "array_read_qk" || r.name == "array_read_av")
      e.array_area_per_head_mm2 += r.area_mm2;
    e.components.push_back(std::move(r));
  }
  return e;
}

ActivityEstimate estimate_activity(const HwConfig& hw, const CostConfig& cost,
                                   const ModelShape& shape, const HardwareEventCounts& events) {
  validate_inputs(hw, cost, shape);
  events.validate();
  const CostConfig hw_cost = cost_for_hardware(cost, hw);  // technology, retention
  CostContext ctx(hw, hw_cost, shape);
  const auto components = make_components();
  for (const auto& c : components) ctx.latency_per_token_s += c->latency_s(ctx);
  ActivityEstimate a;
  a.events = events;
  const double token_heads = double(token_heads_in_run(events));
  for (const auto& c : components) {
    ComponentCost r = evaluate(*c, ctx);
    r.ops_per_token = c->ops_in_run(ctx, events) / token_heads;
    r.energy_per_token_j =
        r.energy_per_op_j * r.ops_per_token + r.static_power_w * token_interval_s(ctx);
    r.sources["ops_per_token"] = "counted in the event trace / (tokens x heads x layers)";
    a.energy_per_token_per_head_j += r.energy_per_token_j;
    a.components.push_back(std::move(r));
  }
  a.energy_total_j = a.energy_per_token_per_head_j * token_heads;
  return a;
}

HardwareEventCounts typical_event_counts(const HwConfig& hw, const CostConfig& cost,
                                         const ModelShape& shape, int64_t tokens) {
  validate_inputs(hw, cost, shape);
  const HeadGeometry g = HeadGeometry::from(hw, shape);
  HardwareEventCounts ev;
  ev.tokens = tokens;
  ev.heads = shape.n_head;
  ev.layers = shape.n_layer;
  const double n = double(tokens) * ev.heads * ev.layers;
  const int64_t q_pulses_per_token = int64_t(shape.head_dim) * g.tiles;
  ev.cell_writes = static_cast<int64_t>(n * g.writes);
  ev.q_pulses = static_cast<int64_t>(n * q_pulses_per_token);
  ev.q_pulse_width_sum_tmax = double(ev.q_pulses) * cost.typical_q_width_tmax.value;
  ev.phi_pulses = static_cast<int64_t>(n * g.window);
  ev.phi_pulse_width_sum_tmax = double(ev.phi_pulses) * cost.typical_phi_width_tmax.value;
  ev.c2p_conversions = static_cast<int64_t>(n * g.c2p_converters);
  ev.output_conversions = static_cast<int64_t>(n * g.out_converters);
  ev.counter_increments = std::llround(double(ev.output_conversions) * g.count_steps *
                                       cost.typical_count_fraction.value);
  ev.tile_reads = static_cast<int64_t>(n * g.tiles * g.row_tiles);
  ev.digital_adds = static_cast<int64_t>(n * g.adders);
  return ev;
}

json GqaMappingCost::to_json() const {
  return {{"mapping", mapping},
          {"n_rep", n_rep},
          {"array_sets_per_layer", array_sets_per_layer},
          {"arrays_per_kv_head", arrays_per_kv_head},
          {"arrays_per_layer", arrays_per_layer},
          {"latency_per_token_s", latency_per_token_s},
          {"area_per_layer_mm2", area_per_layer_mm2},
          {"energy_per_token_per_layer_j", energy_per_token_per_layer_j}};
}

namespace {

// Components that belong to an array set rather than to a read: the arrays' storage (their area;
// their read energy and latency belong to the read), the write DACs and refresh.
bool is_array_set_cost(const std::string& name) {
  return name == "cell_write_dac" || name == "refresh";
}
bool is_array(const std::string& name) {
  return name == "array_read_qk" || name == "array_read_av";
}

}  // namespace

std::vector<GqaMappingCost> gqa_mapping_costs(const CostEstimate& e, const ModelShape& shape) {
  shape.validate();
  const int H = shape.n_head, Hkv = shape.kv_heads(), rep = H / Hkv;
  // Split the per-head estimate into the array set's share and the read path's share.
  double set_energy = 0, read_energy = 0, set_latency = 0, read_latency = 0, set_area = 0,
         read_area = 0;
  for (const ComponentCost& c : e.components) {
    if (is_array_set_cost(c.name)) {
      set_energy += c.energy_per_token_j;
      set_latency += c.latency_s;
      set_area += c.area_mm2;
    } else {
      read_energy += c.energy_per_token_j;
      read_latency += c.latency_s;
      (is_array(c.name) ? set_area : read_area) += c.area_mm2;
    }
  }
  const double arrays_per_set = 2.0 * e.geometry.tiles * e.geometry.row_tiles;
  GqaMappingCost seq;
  seq.mapping = "sequential";
  seq.n_rep = rep;
  seq.array_sets_per_layer = Hkv;
  seq.arrays_per_kv_head = arrays_per_set;
  seq.arrays_per_layer = arrays_per_set * Hkv;
  seq.latency_per_token_s = set_latency + rep * read_latency;
  // The group's reads take turns, so one read path (converters, counters, adders) per KV head.
  seq.area_per_layer_mm2 = Hkv * (set_area + read_area);
  seq.energy_per_token_per_layer_j = Hkv * set_energy + H * read_energy;

  GqaMappingCost rep_map;
  rep_map.mapping = "replicated";
  rep_map.n_rep = rep;
  rep_map.array_sets_per_layer = H;
  rep_map.arrays_per_kv_head = arrays_per_set * rep;
  rep_map.arrays_per_layer = arrays_per_set * H;
  rep_map.latency_per_token_s = e.latency_per_token_s;
  rep_map.area_per_layer_mm2 = H * e.area_per_head_mm2;
  rep_map.energy_per_token_per_layer_j = H * e.energy_per_token_per_head_j;
  return {seq, rep_map};
}

}  // namespace gaincell::cost
