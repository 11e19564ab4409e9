// gaincell cost: what the attention of a model costs on gain-cell hardware, against which GPU
// (docs/cost-model.md). Prints a table, or one JSON object with --json; --plot writes SVG charts.
#include <iostream>
#include <memory>
#include <optional>

#include "cli/command.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/cost/cost_report.h"
#include "gaincell/tools/cost/plot_svg.h"

namespace gaincell::cli {
namespace {

struct CostOptions {
  std::string preset = "paper";
  std::string hw = "paper-nonlinear";
  std::string model_dir;
  std::optional<int> n_layer, n_head, n_kv_head, head_dim, window, array_size;
  std::optional<int64_t> tokens, batch;
  std::optional<double> tmax_s, stack_layers;
  std::string trace;
  bool json = false;
  std::string plot_dir;
  std::string output;
  std::string write_cost_config;
};

nlohmann::json parse_json_file(const std::string& path, const std::string& what) {
  try {
    return nlohmann::json::parse(read_text_file(path));
  } catch (const nlohmann::json::parse_error& e) {
    throw Error(what + " '" + path + "' is not valid JSON: " + e.what());
  }
}

cost::CostReportInputs make_inputs(const CostOptions& o) {
  cost::CostReportInputs in;
  in.hw = HwConfig::load(o.hw);
  if (o.window) in.hw.window = *o.window;
  if (o.array_size) in.hw.array_size = *o.array_size;
  if (o.tmax_s) in.hw.tmax_s = *o.tmax_s;
  in.hw.validate();
  in.cost = cost::CostConfig::load(o.preset);
  if (o.stack_layers) {
    in.cost.stack_layers.value = *o.stack_layers;
    in.cost.stack_layers.source = "--stack-layers";
  }
  in.cost.validate();
  if (!o.model_dir.empty()) in.shape = cost::ModelShape::load_hf_dir(o.model_dir);
  std::string overrides;
  auto note = [&](const char* name) {
    overrides += (overrides.empty() ? "" : ", ") + std::string(name);
  };
  if (o.n_layer) in.shape.n_layer = *o.n_layer, note("--n-layer");
  if (o.n_head) in.shape.n_head = *o.n_head, note("--n-head");
  if (o.n_kv_head) in.shape.n_kv_head = *o.n_kv_head, note("--n-kv-head");
  if (o.head_dim) in.shape.head_dim = *o.head_dim, note("--head-dim");
  if (o.tokens) in.shape.tokens = *o.tokens, note("--tokens");
  if (o.batch) in.shape.batch = *o.batch, note("--batch");
  if (!overrides.empty()) in.shape.source += "; command line: " + overrides;
  in.shape.validate();
  if (!o.trace.empty()) {
    in.events = cost::HardwareEventCounts::from_json(parse_json_file(o.trace, "event trace"));
    in.trace_file = o.trace;
  }
  in.measured_dir = cost::default_measured_dir();
  return in;
}

void run_cost(const CostOptions& o) {
  const cost::CostReport report = cost::build_cost_report(make_inputs(o));
  const std::string json_text = report.to_json().dump(2) + "\n";
  if (!o.write_cost_config.empty())
    write_file_atomic(o.write_cost_config, report.inputs.cost.to_json().dump(2) + "\n");
  if (!o.output.empty()) write_file_atomic(o.output, json_text);
  std::vector<std::filesystem::path> plots;
  if (!o.plot_dir.empty()) plots = cost::write_cost_plots(report, o.plot_dir);
  if (o.json) {
    std::cout << json_text;
  } else {
    std::cout << report.to_table();
    for (const auto& p : plots) std::cout << "wrote " << p.string() << "\n";
  }
}

void setup_cost(CLI::App& app) {
  auto o = std::make_shared<CostOptions>();
  app.add_option("--preset", o->preset, "cost preset name (paper) or cost-config JSON file")
      ->capture_default_str();
  app.add_option("--hw", o->hw,
                 "hardware preset (paper-nonlinear, paper-linear, ideal) or JSON file")
      ->capture_default_str();
  app.add_option("--model", o->model_dir,
                 "model directory with a Hugging Face config.json (GPT-2: n_layer, n_head, "
                 "n_embd, n_positions; Llama/Mistral/Qwen2: num_hidden_layers, "
                 "num_attention_heads, num_key_value_heads, head_dim or hidden_size, "
                 "max_position_embeddings)");
  app.add_option("--n-layer", o->n_layer, "layers (default 12)");
  app.add_option("--n-head", o->n_head, "heads per layer (default 12)");
  app.add_option("--n-kv-head", o->n_kv_head,
                 "key/value heads per layer (grouped-query attention; default n_head)");
  app.add_option("--head-dim", o->head_dim, "head dimension (default 64)");
  app.add_option("--window", o->window, "sliding window M in tokens (overrides the hw config)");
  app.add_option("--array-size", o->array_size, "gain-cell array size N (overrides the hw config)");
  app.add_option("--tmax", o->tmax_s,
                 "maximum pulse width Tmax in seconds (overrides the hw config)");
  app.add_option("--stack-layers", o->stack_layers, "3D-stacked array layers (spec §9.2)");
  app.add_option("--tokens", o->tokens, "tokens per sequence (default 1024)");
  app.add_option("--batch", o->batch, "sequences (default 64, the measured GPU setting)");
  app.add_option("--trace", o->trace,
                 "simulator event-count JSON for the activity-based estimate (docs/cost-model.md)");
  app.add_flag("--json", o->json, "print one JSON object instead of the table");
  app.add_option("--plot", o->plot_dir, "write SVG charts (latency, energy, breakdowns) into DIR");
  app.add_option("-o,--output", o->output, "also write the JSON result to FILE (atomically)");
  app.add_option("--write-cost-config", o->write_cost_config,
                 "write the effective cost configuration as JSON to FILE");
  app.callback([o] { run_cost(*o); });
}

CommandRegistration reg({"cost",
                         "hardware cost model: energy, latency and area of gain-cell attention "
                         "against GPUs (spec §9)",
                         setup_cost});

}  // namespace
}  // namespace gaincell::cli
