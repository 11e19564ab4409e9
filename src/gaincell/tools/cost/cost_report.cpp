#include "gaincell/tools/cost/cost_report.h"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"

namespace gaincell::cost {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

constexpr const char* kSpeedupSource =
    "spec §9.4: GPU latency per token / gain-cell latency per token";
constexpr const char* kEnergySource =
    "spec §9.4: GPU energy per token / (heads x gain-cell energy per token per head)";

json component_json(const ComponentCost& c, double total_energy) {
  return {{"name", c.name},
          {"description", c.description},
          {"operation", c.operation},
          {"energy_per_op_j", c.energy_per_op_j},
          {"ops_per_token_per_head", c.ops_per_token},
          {"energy_per_token_per_head_j", c.energy_per_token_j},
          {"energy_share", total_energy > 0 ? c.energy_per_token_j / total_energy : 0.0},
          {"latency_s", c.latency_s},
          {"area_per_head_mm2", c.area_mm2},
          {"instances_per_head", c.count},
          {"static_power_per_head_w", c.static_power_w},
          {"sources", c.sources}};
}

DecodeWorkload workload_for(const ModelShape& shape, int window) {
  DecodeWorkload w;
  w.heads = shape.n_head;
  w.head_dim = shape.head_dim;
  w.context = window;  // the protocol of spec §9.3 reads the whole window every step
  w.batch = shape.batch;
  w.bytes_per_element = 4;
  return w;
}

GpuComparison compare_measured(const MeasuredGpu& m, const CostEstimate& e) {
  GpuComparison c;
  c.gpu = m.gpu;
  c.source = "measured";
  c.latency_per_token_s = m.latency_per_token_s;
  c.energy_per_token_j = m.energy_per_token_j;
  c.heads = m.heads;
  c.speedup = speedup_vs(m.latency_per_token_s, e);
  c.energy_reduction = energy_reduction_vs(m.energy_per_token_j, m.heads, e);
  c.reference = m.file;
  c.details = {{"setting",
                {{"S", m.sequences}, {"H", m.heads}, {"D_h", m.head_dim}, {"N_tokens", m.tokens}}},
               {"latency_source", m.file + ": mean_latency_per_token (spec §9.3)"},
               {"energy_source", m.file + ": mean_energy_per_token (spec §9.3)"}};
  c.paper = paper_claim(m.gpu);
  return c;
}

GpuComparison compare_model(const GpuSpec& g, const DecodeWorkload& w, const CostEstimate& e) {
  const GpuEstimate est = estimate_gpu_decode(g, w);
  GpuComparison c;
  c.gpu = g.name;
  c.source = "model";
  c.latency_per_token_s = est.latency_per_token_s;
  c.energy_per_token_j = est.energy_per_token_j;
  c.heads = w.heads;
  c.speedup = speedup_vs(est.latency_per_token_s, e);
  c.energy_reduction = energy_reduction_vs(est.energy_per_token_j, w.heads, e);
  c.reference = g.sources.at("memory_bandwidth_bytes_per_s").get<std::string>();
  c.details = {{"workload", w.to_json()},
               {"estimate", est.to_json()},
               {"spec", g.to_json()},
               {"latency_source",
                "analytic: max(bytes / bandwidth, FLOPs / peak) + step overhead, per step / batch"},
               {"energy_source", "analytic: board power x latency per token"}};
  c.paper = paper_claim(g.name);
  return c;
}

std::string fmt(const char* format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

std::string eng(double v, const char* unit) {
  const char* prefixes[] = {"f", "p", "n", "µ", "m", "", "k", "M", "G"};
  if (v == 0.0) return std::string("0 ") + unit;
  int exp3 = 0;
  double a = std::fabs(v);
  while (a < 1.0 && exp3 > -5) {
    a *= 1000.0;
    --exp3;
  }
  while (a >= 1000.0 && exp3 < 3) {
    a /= 1000.0;
    ++exp3;
  }
  return fmt("%.4g", v < 0 ? -a : a) + " " + prefixes[exp3 + 5] + unit;
}

// The batched-serving table of one GPU: attention alone and the whole model, per batch size.
std::string serving_table(const ServingComparison& c) {
  std::ostringstream os;
  os << "\nbatched serving vs " << c.gpu << " (" << c.model.source << "; context "
     << c.options.context << ", GPU " << (c.options.bytes_per_element == 2 ? "fp16" : "fp32")
     << "; step = time between two tokens of a sequence; energy per generated token)\n";
  char line[320];
  std::snprintf(line, sizeof line,
                "%6s | %10s %10s %8s %9s %8s | %10s %10s %7s %7s | %7s %7s | %10s\n", "batch",
                "GPU attn", "GC attn", "speedup", "energy", "per mm²", "GPU model", "GC+GPU",
                "speedup", "energy", "GC+acc", "energy", "GC area");
  os << line;
  for (const auto& p : c.points) {
    std::snprintf(
        line, sizeof line,
        "%6lld | %10s %10s %8.1f %9.0f %8.0f | %10s %10s %7.2f %7.2f | %7.2f %7.2f | %7.0f mm²\n",
        static_cast<long long>(p.batch), eng(p.gpu_attention.step_latency_s, "s").c_str(),
        eng(p.gaincell_attention.step_latency_s, "s").c_str(), p.attention_speedup,
        p.attention_energy_ratio, p.attention_throughput_per_area_ratio,
        eng(p.gpu_model.step_latency_s, "s").c_str(),
        eng(p.gaincell_gpu_model.step_latency_s, "s").c_str(), p.model_speedup_gpu_rest,
        p.model_energy_ratio_gpu_rest, p.model_speedup_accelerator_rest,
        p.model_energy_ratio_accelerator_rest, p.gaincell_area_mm2);
    os << line;
  }
  os << "  gain-cell arrays of " << fmt("%.1f", c.sequences_in_gpu_die_area)
     << " sequences fit in the " << c.gpu << "'s die area ("
     << fmt("%.0f", c.points.front().gpu_die_area_mm2)
     << " mm²); speed-ups compare step latencies at the same batch, the gain-cell side with one "
        "array set per sequence; 'per mm²' compares attention throughput per unit of silicon "
        "(gain-cell arrays against the GPU die)\n";
  return os.str();
}

}  // namespace

fs::path default_measured_dir() {
  const fs::path shared = shared_data_dir();
  if (shared.empty()) return {};
  const fs::path dir = shared / "gaincell-reference";
  std::error_code ec;
  return fs::is_directory(dir, ec) ? dir : fs::path();
}

double speedup_vs(double gpu_latency_per_token_s, const CostEstimate& e) {
  require(e.latency_per_token_s > 0.0,
          "the cost model gives zero latency per token; cannot "
          "compute a speed-up");
  return gpu_latency_per_token_s / e.latency_per_token_s;
}

double energy_reduction_vs(double gpu_energy_per_token_j, int heads, const CostEstimate& e) {
  require(e.energy_per_token_per_head_j > 0.0 && heads >= 1,
          "the cost configuration gives zero energy per token; cannot compute an energy "
          "reduction");
  return gpu_energy_per_token_j / (heads * e.energy_per_token_per_head_j);
}

CostReport build_cost_report(const CostReportInputs& in) {
  CostReport r;
  r.inputs = in;
  r.estimate = estimate_cost(in.hw, in.cost, in.shape);
  if (in.events) {
    r.estimate.activity = estimate_activity(in.hw, in.cost, in.shape, *in.events);
    if (in.events->heads != in.shape.n_head || in.events->layers != in.shape.n_layer)
      r.notes.push_back(
          "the event trace's heads/layers differ from the model shape; the activity "
          "estimate is normalised by the trace's own tokens x heads x layers");
  }

  // (a) measured files, (b) analytic model at the user's setting.
  std::vector<MeasuredGpu> measured;
  if (in.measured_dir.empty()) {
    r.measured_status =
        "skipped: shared reference data not found (../shared/data/gaincell-reference); only the "
        "analytic GPU model is shown";
  } else {
    measured = load_measured_gpus(in.measured_dir);
    r.measured_status = measured.empty()
                            ? "skipped: no gpu_*_attention.json in " + in.measured_dir.string()
                            : "loaded " + std::to_string(measured.size()) + " files from " +
                                  in.measured_dir.string();
  }
  for (const auto& m : measured) r.gpus.push_back(compare_measured(m, r.estimate));
  std::vector<GpuSpec> all_gpus = gpu_specs();
  all_gpus.insert(all_gpus.end(), in.extra_gpus.begin(), in.extra_gpus.end());
  const DecodeWorkload user_workload = workload_for(in.shape, in.hw.window);
  for (const auto& g : all_gpus) r.gpus.push_back(compare_model(g, user_workload, r.estimate));

  // The measured protocol next to the analytic model at exactly the measured setting.
  for (const auto& m : measured) {
    const GpuSpec* spec = nullptr;
    for (const auto& g : all_gpus)
      if (g.name == m.gpu) spec = &g;
    if (!spec) continue;
    MeasuredVsModel mv;
    mv.measured = m;
    mv.workload = {m.heads, m.head_dim, m.tokens, m.sequences, 4};
    mv.model = estimate_gpu_decode(*spec, mv.workload);
    mv.latency_ratio = m.latency_per_token_s / mv.model.latency_per_token_s;
    mv.energy_ratio = m.energy_per_token_j / mv.model.energy_per_token_j;
    const double bound_step = std::max(mv.model.memory_time_s, mv.model.compute_time_s);
    mv.implied_overhead_per_step_s = m.latency_per_token_s * m.sequences - bound_step;
    DecodeWorkload script = mv.workload;
    script.protocol = DecodeProtocol::kPaperScript;
    mv.script_model = estimate_gpu_decode(*spec, script);
    mv.script_latency_ratio = m.latency_per_token_s / mv.script_model.latency_per_token_s;
    mv.implied_bandwidth_bytes_per_s =
        mv.script_model.bytes_per_token / m.latency_per_token_s;  // per sequence-token
    mv.implied_bandwidth_fraction =
        mv.implied_bandwidth_bytes_per_s / spec->memory_bandwidth_bytes_per_s;
    r.measured_vs_model.push_back(mv);
  }
  if (in.serving.enabled) {
    for (const auto& name : in.serving.gpus) {
      const GpuSpec* spec = nullptr;
      for (const auto& g : all_gpus)
        if (g.name == name) spec = &g;
      if (!spec) {
        std::string known;
        for (const auto& g : all_gpus) known += (known.empty() ? "" : ", ") + g.name;
        throw Error("unknown GPU '" + name + "' for the serving comparison (known: " + known + ")");
      }
      r.serving.push_back(compare_serving(*spec, in.serving.accelerator, in.serving.model,
                                          r.estimate, in.serving.options));
    }
  }
  if (in.shape.n_head != 12 || in.shape.head_dim != 64 || in.hw.window != 1024)
    r.notes.push_back(
        "measured GPU ratios are for the measured setting (12 heads, head dim 64, "
        "1024-token cache, spec §9.3); model ratios use this configuration");
  return r;
}

json CostReport::to_json() const {
  const CostEstimate& e = estimate;
  const ModelShape& s = inputs.shape;
  const double per_layer = e.energy_per_token_per_head_j * s.n_head;
  const double per_model = per_layer * s.n_layer;
  const double tokens_total = double(s.tokens) * double(s.batch);
  json j;
  j["tool"] = "gaincell cost";
  j["energy_per_token_per_head_j"] = e.energy_per_token_per_head_j;
  j["latency_per_token_s"] = e.latency_per_token_s;
  j["area_per_head_mm2"] = e.area_per_head_mm2;
  j["array_area_per_head_mm2"] = e.array_area_per_head_mm2;
  j["static_power_per_head_w"] = e.static_power_per_head_w;
  j["energy_per_token_per_layer_j"] = per_layer;
  j["energy_per_token_model_j"] = per_model;
  j["latency_per_token_model_s"] = e.latency_per_token_s * s.n_layer;
  j["area_per_layer_mm2"] = e.area_per_head_mm2 * s.n_head;
  j["area_model_mm2"] = e.area_per_head_mm2 * s.n_head * s.n_layer;
  j["run_energy_j"] = per_model * tokens_total;
  j["run_time_s"] = e.latency_per_token_s * s.n_layer * tokens_total;
  j["sources"] = {
      {"energy_per_token_per_head_j", "sum of the components (cost_config; spec §9.1)"},
      {"latency_per_token_s", "sum of the components' critical-path latencies (spec §9.1: 65 ns)"},
      {"area_per_head_mm2", "sum of the components' areas (spec §9.2: 0.5 mm²)"},
      {"array_area_per_head_mm2", "array_read_qk + array_read_av areas (spec §9.2: 15.7e-3 mm²)"},
      {"static_power_per_head_w", "sum of the components' static power"},
      {"energy_per_token_per_layer_j", "energy_per_token_per_head_j x n_head"},
      {"energy_per_token_model_j", "energy_per_token_per_layer_j x n_layer"},
      {"latency_per_token_model_s", "latency_per_token_s x n_layer (layers run in turn)"},
      {"area_per_layer_mm2", "area_per_head_mm2 x n_head"},
      {"area_model_mm2", "area_per_head_mm2 x n_head x n_layer (one KV array set per layer)"},
      {"run_energy_j", "energy_per_token_model_j x tokens x batch"},
      {"run_time_s", "latency_per_token_model_s x tokens x batch (sequences one after another)"}};
  json comps = json::array();
  for (const auto& c : e.components)
    comps.push_back(component_json(c, e.energy_per_token_per_head_j));
  j["components"] = comps;
  j["geometry"] = e.geometry.to_json();
  // Grouped-query attention: both hardware mappings (equal when n_kv_head = n_head).
  json mappings = json::array();
  for (const GqaMappingCost& m : gqa_mapping_costs(e, s)) mappings.push_back(m.to_json());
  j["gqa_mappings"] = mappings;
  if (e.activity) {
    const auto& a = *e.activity;
    json ac = json::array();
    for (const auto& c : a.components)
      ac.push_back(component_json(c, a.energy_per_token_per_head_j));
    j["activity"] = {
        {"trace", inputs.trace_file},
        {"events", a.events.to_json()},
        {"energy_per_token_per_head_j", a.energy_per_token_per_head_j},
        {"energy_total_j", a.energy_total_j},
        {"ratio_to_constant", a.energy_per_token_per_head_j / e.energy_per_token_per_head_j},
        {"components", ac},
        {"source",
         "counted events x energy per operation (docs/cost-model.md, calibrated so that typical "
         "activity reproduces the constant figure)"}};
  }
  json gpus_json = json::array();
  for (const auto& g : gpus) {
    json gj = {{"gpu", g.gpu},
               {"source", g.source},
               {"speedup", g.speedup},
               {"energy_reduction", g.energy_reduction},
               {"gpu_latency_per_token_s", g.latency_per_token_s},
               {"gpu_energy_per_token_j", g.energy_per_token_j},
               {"heads", g.heads},
               {"reference", g.reference},
               {"details", g.details},
               {"sources", {{"speedup", kSpeedupSource}, {"energy_reduction", kEnergySource}}}};
    if (g.paper)
      gj["paper_claim"] = {{"speedup", g.paper->speedup},
                           {"energy_reduction", g.paper->energy_reduction},
                           {"source", "spec §9.4 [SUM] (paper headline)"}};
    gpus_json.push_back(gj);
  }
  j["gpus"] = gpus_json;
  j["gpu_measured_status"] = measured_status;
  json mvm = json::array();
  for (const auto& m : measured_vs_model)
    mvm.push_back({{"gpu", m.measured.gpu},
                   {"measured", m.measured.to_json()},
                   {"model_workload", m.workload.to_json()},
                   {"model", m.model.to_json()},
                   {"latency_ratio_measured_over_model", m.latency_ratio},
                   {"energy_ratio_measured_over_model", m.energy_ratio},
                   {"implied_overhead_per_step_s", m.implied_overhead_per_step_s},
                   {"script_model", m.script_model.to_json()},
                   {"latency_ratio_measured_over_script_model", m.script_latency_ratio},
                   {"implied_bandwidth_bytes_per_s", m.implied_bandwidth_bytes_per_s},
                   {"implied_bandwidth_fraction_of_datasheet", m.implied_bandwidth_fraction},
                   {"source",
                    "measured file (spec §9.3) vs analytic model at the same setting; "
                    "docs/cost-model.md explains the gap"}});
  j["measured_vs_model"] = mvm;
  if (inputs.serving.enabled) {
    json sv = json::array();
    for (const auto& c : serving) sv.push_back(c.to_json());
    j["serving"] = {
        {"comparisons", sv},
        {"accelerator", inputs.serving.accelerator.to_json()},
        {"source",
         "analytic (docs/cost-model.md §5): GPU roofline per decode step for attention (each "
         "sequence reads its own K/V cache) and dense layers (weights read once per step); "
         "gain-cell attention with one array set per sequence"}};
  }
  json claims = json::array();
  for (const auto& c : paper_claims())
    claims.push_back({{"gpu", c.gpu},
                      {"speedup", c.speedup},
                      {"energy_reduction", c.energy_reduction},
                      {"source", "spec §9.4 [SUM]"}});
  j["paper_claims"] = claims;
  j["model_shape"] = s.to_json();
  j["hw_config"] = inputs.hw.to_json();
  j["cost_config"] = inputs.cost.to_json();
  j["notes"] = notes;
  return j;
}

std::string CostReport::to_table() const {
  const CostEstimate& e = estimate;
  const ModelShape& s = inputs.shape;
  std::ostringstream os;
  os << "gain-cell attention cost (hw '" << inputs.hw.name << "', cost preset '" << inputs.cost.name
     << "')\n";
  os << "model: " << s.n_layer << " layers x " << s.n_head << " heads (" << s.kv_heads()
     << " key/value), head dim " << s.head_dim << ", window " << inputs.hw.window << ", array "
     << inputs.hw.array_size << "x" << inputs.hw.array_size << ", " << s.tokens << " tokens x "
     << s.batch << " sequences (" << s.source << ")\n\n";
  os << "per token per head: energy " << eng(e.energy_per_token_per_head_j, "J") << ", latency "
     << eng(e.latency_per_token_s, "s") << " per layer, area " << fmt("%.4g", e.area_per_head_mm2)
     << " mm² (arrays " << fmt("%.4g", e.array_area_per_head_mm2) << " mm²)\n";
  os << "per token, whole model: energy "
     << eng(e.energy_per_token_per_head_j * s.n_head * s.n_layer, "J") << ", latency "
     << eng(e.latency_per_token_s * s.n_layer, "s") << ", area "
     << fmt("%.4g", e.area_per_head_mm2 * s.n_head * s.n_layer) << " mm²\n\n";
  char line[256];
  if (s.kv_heads() != s.n_head) {
    os << "grouped-query attention: " << s.n_head << " query heads on " << s.kv_heads()
       << " key/value heads (per layer)\n";
    for (const GqaMappingCost& m : gqa_mapping_costs(e, s)) {
      std::snprintf(line, sizeof line,
                    "  %-10s %4.0f arrays, latency %s per token, area %.4g mm², energy %s per "
                    "token\n",
                    m.mapping.c_str(), m.arrays_per_layer, eng(m.latency_per_token_s, "s").c_str(),
                    m.area_per_layer_mm2, eng(m.energy_per_token_per_layer_j, "J").c_str());
      os << line;
    }
    os << "\n";
  }
  std::snprintf(line, sizeof line, "%-18s %12s %8s %12s %10s %12s  %s\n", "component", "energy/tok",
                "share", "ops/tok", "latency", "area mm²", "energy source");
  os << line;
  for (const auto& c : e.components) {
    std::snprintf(line, sizeof line, "%-18s %12s %7.1f%% %12.6g %10s %12.4g  ", c.name.c_str(),
                  eng(c.energy_per_token_j, "J").c_str(),
                  100.0 * c.energy_per_token_j / e.energy_per_token_per_head_j, c.ops_per_token,
                  eng(c.latency_s, "s").c_str(), c.area_mm2);
    os << line << c.sources.value("energy_per_op_j", "") << "\n";
  }
  if (e.activity) {
    os << "\nactivity-based (" << inputs.trace_file
       << "): " << eng(e.activity->energy_per_token_per_head_j, "J") << " per token per head ("
       << fmt("%.3f", e.activity->energy_per_token_per_head_j / e.energy_per_token_per_head_j)
       << " x the constant figure)\n";
    for (const auto& c : e.activity->components) {
      std::snprintf(line, sizeof line, "  %-18s %12s %12.6g ops/tok\n", c.name.c_str(),
                    eng(c.energy_per_token_j, "J").c_str(), c.ops_per_token);
      os << line;
    }
  }
  os << "\nGPU comparison (per token, one layer, all heads; measured: " << measured_status << ")\n";
  std::snprintf(line, sizeof line, "%-12s %-9s %12s %12s %10s %12s  %s\n", "gpu", "source",
                "latency", "energy", "speed-up", "energy red.", "paper");
  os << line;
  for (const auto& g : gpus) {
    std::string paper =
        g.paper ? fmt("x%.0f", g.paper->speedup) + " / " + fmt("x%.0f", g.paper->energy_reduction)
                : "-";
    std::snprintf(line, sizeof line, "%-12s %-9s %12s %12s %10.0f %12.0f  %s\n", g.gpu.c_str(),
                  g.source.c_str(), eng(g.latency_per_token_s, "s").c_str(),
                  eng(g.energy_per_token_j, "J").c_str(), g.speedup, g.energy_reduction,
                  paper.c_str());
    os << line;
  }
  if (!measured_vs_model.empty()) {
    os << "\nmeasured protocol vs analytic model at the measured setting (S, H, D_h, N_tokens):\n";
    for (const auto& m : measured_vs_model) {
      os << "  " << m.measured.gpu << ": measured " << eng(m.measured.latency_per_token_s, "s")
         << " / " << eng(m.measured.energy_per_token_j, "J") << ", model "
         << eng(m.model.latency_per_token_s, "s") << " / " << eng(m.model.energy_per_token_j, "J")
         << " (" << m.model.bound << "-bound) -> measured is " << fmt("%.1f", m.latency_ratio)
         << "x slower, " << fmt("%.1f", m.energy_ratio) << "x more energy; implied overhead "
         << eng(m.implied_overhead_per_step_s, "s") << " per decode step\n";
      os << "    with the authors' script's traffic (transposed-view copies: 3 passes over K and "
            "V, "
            "6 kernels): model "
         << eng(m.script_model.latency_per_token_s, "s") << " -> measured / model "
         << fmt("%.2f", m.script_latency_ratio) << "; the measurement implies "
         << fmt("%.0f", m.implied_bandwidth_bytes_per_s / 1e9)
         << " GB/s = " << fmt("%.2f", m.implied_bandwidth_fraction)
         << " of the datasheet bandwidth\n";
    }
  }
  for (const auto& c : serving) os << serving_table(c);
  for (const auto& n : notes) os << "note: " << n << "\n";
  os << "sources: --json lists the source of every number; docs/cost-model.md explains the "
        "model.\n";
  return os.str();
}

}  // namespace gaincell::cost
