// gaincell cost: what the attention of a model costs on gain-cell hardware, against which GPU
// (docs/cost-model.md). Prints a table, or one JSON object with --json; --plot writes SVG charts.
#include <filesystem>
#include <iostream>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "cli/command.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
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
  // Batched serving and the whole model (docs/cost-model.md §5).
  bool serving = false;
  std::string batches;
  std::vector<std::string> serving_gpus;
  std::vector<std::string> gpu_files;
  std::string precision = "fp16";
  std::optional<int64_t> context;
  std::optional<int> kv_heads;
  std::string accelerator;
  std::string measured_dir;
};

nlohmann::json parse_json_file(const std::string& path, const std::string& what) {
  return gaincell::parse_json(read_text_file(path), what + " '" + path + "'");
}

std::vector<int64_t> parse_batches(const std::string& text) {
  std::vector<int64_t> out;
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t comma = text.find(',', pos);
    const std::string item = text.substr(pos, comma == std::string::npos ? comma : comma - pos);
    size_t used = 0;
    long long v = 0;
    try {
      v = std::stoll(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    require(used == item.size() && !item.empty() && v >= 1,
            "--batches: '" + item + "' is not a positive integer (expected e.g. 1,8,64)");
    out.push_back(v);
    if (comma == std::string::npos) break;
    pos = comma + 1;
  }
  return out;
}

cost::ServedModel served_model(const CostOptions& o, const cost::ModelShape& shape) {
  cost::ServedModel m;
  if (!o.model_dir.empty()) {
    const std::string path = (std::filesystem::path(o.model_dir) / "config.json").string();
    m = cost::ServedModel::from_hf_config(parse_json_file(path, "model config"), path);
  } else {
    // GPT-2 layout from the shape: 12 C^2 per layer, 50257-token LM head.
    const double c = double(shape.n_head) * shape.head_dim;
    m.n_layer = shape.n_layer;
    m.q_heads = m.kv_heads = shape.n_head;
    m.head_dim = shape.head_dim;
    m.dense_params = shape.n_layer * 12.0 * c * c + 50257.0 * c;
    m.source = "GPT-2 layout, " + std::to_string(shape.n_layer) + " layers, width " +
               std::to_string(static_cast<int>(c)) + ", vocabulary 50257";
  }
  if (o.kv_heads) m.kv_heads = *o.kv_heads;
  m.validate();
  return m;
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
  in.measured_dir =
      o.measured_dir.empty() ? cost::default_measured_dir() : std::filesystem::path(o.measured_dir);
  if (!o.measured_dir.empty())
    require(std::filesystem::is_directory(o.measured_dir),
            "--measured-dir '" + o.measured_dir + "' is not a directory");
  for (const auto& f : o.gpu_files) in.extra_gpus.push_back(cost::load_gpu_file(f));
  in.serving.enabled = o.serving;
  if (o.serving) {
    if (!o.serving_gpus.empty()) in.serving.gpus = o.serving_gpus;
    in.serving.model = served_model(o, in.shape);
    if (!o.batches.empty()) in.serving.options.batches = parse_batches(o.batches);
    require(o.precision == "fp16" || o.precision == "bf16" || o.precision == "fp32",
            "--precision must be fp16, bf16 or fp32 (got '" + o.precision + "')");
    in.serving.options.bytes_per_element = o.precision == "fp32" ? 4 : 2;
    in.serving.options.context = o.context ? *o.context : in.hw.window;
    if (!o.accelerator.empty())
      in.serving.accelerator = cost::DigitalAccelerator::load(o.accelerator);
  }
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
  app.add_flag("--serving", o->serving,
               "add the batched-serving and whole-model comparison (docs/cost-model.md §5)");
  app.add_option("--batches", o->batches,
                 "batch sizes of the serving comparison, e.g. 1,8,64 (default 1,2,4,...,256)");
  app.add_option("--gpu", o->serving_gpus,
                 "GPU of the serving comparison (repeatable; default 'RTX 4090' and 'H100')");
  app.add_option("--gpu-file", o->gpu_files,
                 "extra GPU data file (format of src/gaincell/tools/cost/gpus/*.json; repeatable)");
  app.add_option("--precision", o->precision,
                 "GPU precision in the serving comparison: fp16, bf16 or fp32")
      ->capture_default_str();
  app.add_option("--context", o->context,
                 "cached tokens per sequence in the serving comparison (default: the window)");
  app.add_option("--kv-heads", o->kv_heads,
                 "K/V heads (grouped-query attention) in the serving comparison");
  app.add_option("--measured-dir", o->measured_dir,
                 "directory of measured gpu_<name>_attention.json files (default: the shared "
                 "reference data; bench/gpu/attention_decode.cu writes more)");
  app.add_option("--accelerator", o->accelerator,
                 "digital-accelerator data file for the non-attention layers");
  // The inputs (hardware, cost preset, model shape, trace, GPU and accelerator files) are read
  // and validated before the report is built.
  set_validation(app, [o] { make_inputs(*o); });
  app.callback([o] { run_cost(*o); });
}

CommandRegistration reg({"cost",
                         "hardware cost model: energy, latency and area of gain-cell attention "
                         "against GPUs (spec §9)",
                         setup_cost});

}  // namespace
}  // namespace gaincell::cli
