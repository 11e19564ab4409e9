#include "gaincell/tools/cost/serving.h"

#include <algorithm>
#include <cmath>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"

namespace gaincell::cost {

using nlohmann::json;

namespace {

// Kernels of one decode step's dense part: per layer the norms, the Q/K/V and output
// projections, the two or three MLP matmuls and the residual adds fused to about 7; plus the
// final norm and the LM head.
constexpr int kDenseKernelsPerLayer = 7;
constexpr int kDenseKernelsFixed = 2;

const char* const kAcceleratorFile[] = {
#include "gaincell/accelerator_file.inc"
};

int get_int(const json& j, const char* key, const std::string& origin) {
  require(j.contains(key) && j.at(key).is_number_integer() && j.at(key).get<int64_t>() >= 1 &&
              j.at(key).get<int64_t>() <= (int64_t(1) << 30),
          "model config '" + origin + "': '" + key + "' must be a positive integer");
  return static_cast<int>(j.at(key).get<int64_t>());
}

int get_int_or(const json& j, const char* key, int fallback, const std::string& origin) {
  return j.contains(key) && !j.at(key).is_null() ? get_int(j, key, origin) : fallback;
}

double sourced_value(const json& j, const char* key, const std::string& origin, json& sources,
                     bool allow_zero) {
  const std::string where = "accelerator file '" + origin + "': field '" + key + "'";
  require(j.contains(key) && j.at(key).is_object() && j.at(key).contains("value") &&
              j.at(key).at("value").is_number(),
          where + " must be an object {\"value\": number, \"source\": text}");
  require(j.at(key).contains("source") && j.at(key).at("source").is_string() &&
              !j.at(key).at("source").get<std::string>().empty(),
          where + " needs a non-empty \"source\"");
  const double v = j.at(key).at("value").get<double>();
  require(std::isfinite(v) && (allow_zero ? v >= 0.0 : v > 0.0),
          where + " must be a finite number " + (allow_zero ? ">= 0" : "> 0"));
  sources[key] = j.at(key).at("source");
  return v;
}

PerToken per_token(double step_s, double step_energy_j, int64_t batch, std::string bound) {
  PerToken p;
  p.step_latency_s = step_s;
  p.energy_per_token_j = step_energy_j / double(batch);
  p.tokens_per_s = double(batch) / step_s;
  p.bound = std::move(bound);
  return p;
}

// Energy of a GPU step: static power over the step plus the dynamic energy, never above what the
// board power allows over the step.
double gpu_step_energy(const GpuSpec& gpu, double step_s, double dynamic_j) {
  return std::min(gpu.board_power_w * step_s, gpu.idle_power_w * step_s + dynamic_j);
}

}  // namespace

void ServedModel::validate() const {
  require(n_layer >= 1 && q_heads >= 1 && kv_heads >= 1 && head_dim >= 1,
          "served model: layers, heads, kv_heads and head_dim must be >= 1");
  require(q_heads % kv_heads == 0, "served model: kv_heads must divide the query heads");
  require(std::isfinite(dense_params) && dense_params > 0.0,
          "served model: dense_params must be > 0");
}

json ServedModel::to_json() const {
  return {{"n_layer", n_layer},   {"q_heads", q_heads},           {"kv_heads", kv_heads},
          {"head_dim", head_dim}, {"dense_params", dense_params}, {"source", source}};
}

ServedModel ServedModel::gpt2_124m() {
  ServedModel m;
  const double c = 768.0;
  m.dense_params = 12.0 * 12.0 * c * c + 50257.0 * c;
  m.source = "GPT-2 124M: 12 layers x (4 + 8) x 768^2 + LM head 50257 x 768";
  return m;
}

ServedModel ServedModel::from_hf_config(const json& j, const std::string& origin) {
  require(j.is_object(), "model config '" + origin + "': expected a JSON object");
  ServedModel m;
  const std::string type = j.value("model_type", std::string("gpt2"));
  double per_layer = 0.0, c = 0.0, vocab = 0.0;
  if (type == "gpt2") {
    m.n_layer = get_int(j, "n_layer", origin);
    m.q_heads = m.kv_heads = get_int(j, "n_head", origin);
    const int n_embd = get_int(j, "n_embd", origin);
    require(n_embd % m.q_heads == 0,
            "model config '" + origin + "': n_embd must be a multiple of n_head");
    m.head_dim = n_embd / m.q_heads;
    c = n_embd;
    const double inner = get_int_or(j, "n_inner", 4 * n_embd, origin);
    per_layer = 4.0 * c * c + 2.0 * c * inner;
    vocab = get_int_or(j, "vocab_size", 50257, origin);
  } else if (type == "llama" || type == "mistral" || type == "qwen2") {
    m.n_layer = get_int(j, "num_hidden_layers", origin);
    m.q_heads = get_int(j, "num_attention_heads", origin);
    m.kv_heads = get_int_or(j, "num_key_value_heads", m.q_heads, origin);
    const int hidden = get_int(j, "hidden_size", origin);
    m.head_dim = get_int_or(j, "head_dim", hidden / m.q_heads, origin);
    c = hidden;
    const double inter = get_int(j, "intermediate_size", origin);
    const double qd = double(m.q_heads) * m.head_dim, kvd = double(m.kv_heads) * m.head_dim;
    per_layer = c * qd + 2.0 * c * kvd + qd * c + 3.0 * c * inter;
    vocab = get_int(j, "vocab_size", origin);
  } else {
    throw Error("model config '" + origin + "': unsupported model_type '" + type +
                "' for the serving comparison (gpt2, llama, mistral, qwen2)");
  }
  m.dense_params = m.n_layer * per_layer + vocab * c;
  m.source = origin + " (" + type + ")";
  m.validate();
  return m;
}

json DigitalAccelerator::to_json() const {
  return {{"name", name},
          {"mac_energy_j", mac_energy_j},
          {"memory_energy_j_per_byte", memory_energy_j_per_byte},
          {"macs_per_s", macs_per_s},
          {"memory_bandwidth_bytes_per_s", memory_bandwidth_bytes_per_s},
          {"idle_power_w", idle_power_w},
          {"bytes_per_weight", bytes_per_weight},
          {"sources", sources}};
}

DigitalAccelerator DigitalAccelerator::from_json(const json& j, const std::string& origin) {
  require(j.is_object() && j.value("format", std::string()) == "gaincell-accelerator",
          "accelerator file '" + origin + "': \"format\" must be \"gaincell-accelerator\"");
  require(j.contains("version") && j.at("version").is_number_integer() &&
              j.at("version").get<int64_t>() == 1,
          "accelerator file '" + origin + "': unsupported \"version\" (this build reads 1)");
  require(j.contains("name") && j.at("name").is_string(),
          "accelerator file '" + origin + "': \"name\" must be a string");
  DigitalAccelerator a;
  a.name = j.at("name").get<std::string>();
  a.mac_energy_j = sourced_value(j, "mac_energy_j", origin, a.sources, false);
  a.memory_energy_j_per_byte =
      sourced_value(j, "memory_energy_j_per_byte", origin, a.sources, false);
  a.macs_per_s = sourced_value(j, "macs_per_s", origin, a.sources, false);
  a.memory_bandwidth_bytes_per_s =
      sourced_value(j, "memory_bandwidth_bytes_per_s", origin, a.sources, false);
  a.idle_power_w = sourced_value(j, "idle_power_w", origin, a.sources, true);
  a.bytes_per_weight = sourced_value(j, "bytes_per_weight", origin, a.sources, false);
  return a;
}

DigitalAccelerator DigitalAccelerator::builtin() {
  return from_json(parse_json(kAcceleratorFile[0], "built-in digital_accelerator.json"),
                   "built-in digital_accelerator.json");
}

DigitalAccelerator DigitalAccelerator::load(const std::filesystem::path& file) {
  return from_json(parse_json(read_text_file(file), "accelerator file '" + file.string() + "'"),
                   file.string());
}

void ServingOptions::validate() const {
  require(!batches.empty(), "serving comparison: at least one batch size");
  for (int64_t b : batches)
    require(b >= 1 && b <= (int64_t(1) << 24), "serving comparison: batch sizes must be >= 1");
  require(context >= 1, "serving comparison: context must be >= 1");
  require(bytes_per_element == 2 || bytes_per_element == 4,
          "serving comparison: precision must be fp16/bf16 (2 bytes) or fp32 (4 bytes)");
}

json PerToken::to_json() const {
  return {{"step_latency_s", step_latency_s},
          {"energy_per_token_j", energy_per_token_j},
          {"tokens_per_s", tokens_per_s},
          {"bound", bound}};
}

json ServingPoint::to_json() const {
  return {{"batch", batch},
          {"gpu_attention", gpu_attention.to_json()},
          {"gaincell_attention", gaincell_attention.to_json()},
          {"gpu_model", gpu_model.to_json()},
          {"gaincell_gpu_model", gaincell_gpu_model.to_json()},
          {"gaincell_accelerator_model", gaincell_accelerator_model.to_json()},
          {"attention_speedup", attention_speedup},
          {"attention_energy_ratio", attention_energy_ratio},
          {"model_speedup_gpu_rest", model_speedup_gpu_rest},
          {"model_energy_ratio_gpu_rest", model_energy_ratio_gpu_rest},
          {"model_speedup_accelerator_rest", model_speedup_accelerator_rest},
          {"model_energy_ratio_accelerator_rest", model_energy_ratio_accelerator_rest},
          {"attention_throughput_per_area_ratio", attention_throughput_per_area_ratio},
          {"gaincell_area_mm2", gaincell_area_mm2},
          {"gpu_die_area_mm2", gpu_die_area_mm2}};
}

json ServingComparison::to_json() const {
  json pts = json::array();
  for (const auto& p : points) pts.push_back(p.to_json());
  return {{"gpu", gpu},
          {"model", model.to_json()},
          {"context", options.context},
          {"bytes_per_element", options.bytes_per_element},
          {"sequences_in_gpu_die_area", sequences_in_gpu_die_area},
          {"points", pts}};
}

GpuEstimate estimate_gpu_dense_step(const GpuSpec& gpu, const ServedModel& m, int64_t batch,
                                    int bytes_per_element) {
  GpuEstimate e;
  e.bytes_per_token = m.dense_params * bytes_per_element / double(batch);
  e.flops_per_token = 2.0 * m.dense_params;
  e.memory_time_s = m.dense_params * bytes_per_element / gpu.memory_bandwidth_bytes_per_s;
  e.compute_time_s = double(batch) * e.flops_per_token / gpu.peak_flops(bytes_per_element);
  e.bound = e.memory_time_s >= e.compute_time_s ? "memory" : "compute";
  const int kernels = kDenseKernelsPerLayer * m.n_layer + kDenseKernelsFixed;
  e.step_time_s = std::max(e.memory_time_s, e.compute_time_s) + kernels * gpu.step_overhead_s;
  e.latency_per_token_s = e.step_time_s / double(batch);
  e.dynamic_energy_per_token_j = e.bytes_per_token * gpu.memory_energy_j_per_byte +
                                 e.flops_per_token * gpu.energy_per_flop_j(bytes_per_element);
  e.energy_per_token_j = gpu.board_power_w * e.latency_per_token_s;
  e.modelled_energy_per_token_j =
      gpu_step_energy(gpu, e.step_time_s, e.dynamic_energy_per_token_j * double(batch)) /
      double(batch);
  return e;
}

ServingComparison compare_serving(const GpuSpec& gpu, const DigitalAccelerator& acc,
                                  const ServedModel& model, const CostEstimate& gc,
                                  const ServingOptions& options) {
  model.validate();
  options.validate();
  require(gc.latency_per_token_s > 0.0 && gc.energy_per_token_per_head_j > 0.0,
          "serving comparison: the gain-cell estimate has zero latency or energy");
  ServingComparison r;
  r.gpu = gpu.name;
  r.model = model;
  r.options = options;
  const double layers = model.n_layer;
  // Gain-cell attention: every layer's step takes one attention latency (all heads in parallel,
  // each sequence on its own arrays), energy per head per token as estimated.
  const double gc_step = layers * gc.latency_per_token_s;
  const double gc_energy_per_token = layers * model.q_heads * gc.energy_per_token_per_head_j;
  const double gc_area_per_sequence = layers * model.q_heads * gc.area_per_head_mm2;
  r.sequences_in_gpu_die_area = gpu.die_area_mm2 / gc_area_per_sequence;
  for (int64_t b : options.batches) {
    ServingPoint p;
    p.batch = b;
    DecodeWorkload w;
    w.heads = model.q_heads;
    w.kv_heads = model.kv_heads;
    w.head_dim = model.head_dim;
    w.context = options.context;
    w.batch = b;
    w.bytes_per_element = options.bytes_per_element;
    const GpuEstimate attn = estimate_gpu_decode(gpu, w);
    const GpuEstimate dense = estimate_gpu_dense_step(gpu, model, b, options.bytes_per_element);

    const double attn_step = layers * attn.step_time_s;
    const double attn_dyn = layers * double(b) * attn.dynamic_energy_per_token_j;
    p.gpu_attention =
        per_token(attn_step, gpu_step_energy(gpu, attn_step, attn_dyn), b, attn.bound);
    p.gaincell_attention = per_token(gc_step, gc_energy_per_token * double(b), b, "");

    const double dense_dyn = dense.dynamic_energy_per_token_j * double(b);
    const double model_step = attn_step + dense.step_time_s;
    p.gpu_model =
        per_token(model_step, gpu_step_energy(gpu, model_step, attn_dyn + dense_dyn), b,
                  attn.memory_time_s * layers >= dense.step_time_s ? attn.bound : dense.bound);
    const double gc_gpu_step = dense.step_time_s + gc_step;
    p.gaincell_gpu_model = per_token(
        gc_gpu_step, gpu_step_energy(gpu, gc_gpu_step, dense_dyn) + gc_energy_per_token * double(b),
        b, dense.bound);

    const double acc_bytes = model.dense_params * acc.bytes_per_weight;
    const double acc_macs = double(b) * model.dense_params;
    const double acc_mem_s = acc_bytes / acc.memory_bandwidth_bytes_per_s;
    const double acc_mac_s = acc_macs / acc.macs_per_s;
    const double acc_step = std::max(acc_mem_s, acc_mac_s) + gc_step;
    const double acc_energy = acc_bytes * acc.memory_energy_j_per_byte +
                              acc_macs * acc.mac_energy_j + acc.idle_power_w * acc_step +
                              gc_energy_per_token * double(b);
    p.gaincell_accelerator_model =
        per_token(acc_step, acc_energy, b, acc_mem_s >= acc_mac_s ? "memory" : "compute");

    p.attention_speedup = p.gpu_attention.step_latency_s / p.gaincell_attention.step_latency_s;
    p.attention_energy_ratio =
        p.gpu_attention.energy_per_token_j / p.gaincell_attention.energy_per_token_j;
    p.model_speedup_gpu_rest = p.gpu_model.step_latency_s / p.gaincell_gpu_model.step_latency_s;
    p.model_energy_ratio_gpu_rest =
        p.gpu_model.energy_per_token_j / p.gaincell_gpu_model.energy_per_token_j;
    p.model_speedup_accelerator_rest =
        p.gpu_model.step_latency_s / p.gaincell_accelerator_model.step_latency_s;
    p.model_energy_ratio_accelerator_rest =
        p.gpu_model.energy_per_token_j / p.gaincell_accelerator_model.energy_per_token_j;
    p.gaincell_area_mm2 = double(b) * gc_area_per_sequence;
    p.attention_throughput_per_area_ratio =
        (p.gaincell_attention.tokens_per_s / p.gaincell_area_mm2) /
        (p.gpu_attention.tokens_per_s / gpu.die_area_mm2);
    p.gpu_die_area_mm2 = gpu.die_area_mm2;
    r.points.push_back(p);
  }
  return r;
}

}  // namespace gaincell::cost
