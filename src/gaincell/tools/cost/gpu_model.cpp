#include "gaincell/tools/cost/gpu_model.h"

#include <algorithm>
#include <cmath>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"

namespace gaincell::cost {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

// The shipped data files, compiled in by CMake: {file name, contents}.
const char* const kGpuSpecFiles[][2] = {
#include "gaincell/gpu_spec_files.inc"
};

// {"value": number, "source": non-empty string} under `key`.
double read_sourced(const json& j, const char* key, const std::string& origin, json& sources,
                    bool allow_zero) {
  const std::string where = "GPU file '" + origin + "': field '" + key + "'";
  require(j.contains(key), where + " is missing");
  const json& f = j.at(key);
  require(f.is_object() && f.contains("value") && f.at("value").is_number(),
          where + " must be an object {\"value\": number, \"source\": text}");
  require(f.contains("source") && f.at("source").is_string() &&
              !f.at("source").get<std::string>().empty(),
          where + " needs a non-empty \"source\"");
  const double v = f.at("value").get<double>();
  require(std::isfinite(v) && (allow_zero ? v >= 0.0 : v > 0.0),
          where + " must be a finite number " + (allow_zero ? ">= 0" : "> 0"));
  sources[key] = f.at("source");
  return v;
}

std::vector<GpuSpec> make_specs() {
  std::vector<GpuSpec> v;
  for (const auto& file : kGpuSpecFiles) {
    const std::string name = file[0];
    const json j = parse_json(file[1], "built-in GPU file '" + name + "'");
    v.push_back(gpu_spec_from_json(j, "built-in " + name));
  }
  // A stable order, smallest first, as the table lists them.
  std::sort(v.begin(), v.end(), [](const GpuSpec& a, const GpuSpec& b) {
    return a.memory_bandwidth_bytes_per_s < b.memory_bandwidth_bytes_per_s;
  });
  return v;
}

// File tag -> the display name the analytic specs use.
std::string display_name(const std::string& tag) {
  if (tag == "rtx4090") return "RTX 4090";
  if (tag == "jetson_nano") return "Jetson Nano";
  if (tag == "h100") return "H100";
  if (tag == "a100") return "A100";
  if (tag == "h200") return "H200";
  return tag;
}

double read_number(const json& j, const char* key, const std::string& file) {
  require(j.contains(key) && j.at(key).is_number(),
          "measured GPU file '" + file + "': missing or non-numeric key '" + key + "'");
  return j.at(key).get<double>();
}

int read_positive(const json& j, const char* key, const std::string& file) {
  const double v = read_number(j, key, file);
  require(v >= 1.0 && v == std::floor(v) && v < 1e9,
          "measured GPU file '" + file + "': '" + key + "' must be a positive integer");
  return static_cast<int>(v);
}

}  // namespace

json GpuSpec::to_json() const {
  return {{"name", name},
          {"memory_bandwidth_bytes_per_s", memory_bandwidth_bytes_per_s},
          {"peak_fp32_flops", peak_fp32_flops},
          {"peak_fp16_flops", peak_fp16_flops},
          {"board_power_w", board_power_w},
          {"idle_power_w", idle_power_w},
          {"memory_energy_j_per_byte", memory_energy_j_per_byte},
          {"kernel_launch_s", step_overhead_s},
          {"die_area_mm2", die_area_mm2},
          {"sources", sources}};
}

double GpuSpec::peak_flops(int bytes_per_element) const {
  return bytes_per_element >= 4 ? peak_fp32_flops : peak_fp16_flops;
}

double GpuSpec::energy_per_flop_j(int bytes_per_element) const {
  return (board_power_w - idle_power_w) / peak_flops(bytes_per_element);
}

GpuSpec gpu_spec_from_json(const json& j, const std::string& origin) {
  require(j.is_object(), "GPU file '" + origin + "': expected a JSON object");
  require(j.value("format", std::string()) == "gaincell-gpu",
          "GPU file '" + origin + "': \"format\" must be \"gaincell-gpu\"");
  require(j.contains("version") && j.at("version").is_number_integer() &&
              j.at("version").get<int64_t>() == 1,
          "GPU file '" + origin + "': unsupported \"version\" (this build reads version 1)");
  require(
      j.contains("name") && j.at("name").is_string() && !j.at("name").get<std::string>().empty(),
      "GPU file '" + origin + "': \"name\" must be a non-empty string");
  static const std::vector<std::string> known = {"format",
                                                 "version",
                                                 "name",
                                                 "memory_bandwidth_bytes_per_s",
                                                 "peak_fp32_flops",
                                                 "peak_fp16_flops",
                                                 "board_power_w",
                                                 "idle_power_w",
                                                 "memory_energy_j_per_byte",
                                                 "kernel_launch_s",
                                                 "die_area_mm2",
                                                 "description"};
  for (const auto& [key, value] : j.items())
    require(std::find(known.begin(), known.end(), key) != known.end(),
            "GPU file '" + origin + "': unknown field '" + key + "'");
  GpuSpec g;
  g.name = j.at("name").get<std::string>();
  g.memory_bandwidth_bytes_per_s =
      read_sourced(j, "memory_bandwidth_bytes_per_s", origin, g.sources, false);
  g.peak_fp32_flops = read_sourced(j, "peak_fp32_flops", origin, g.sources, false);
  g.peak_fp16_flops = read_sourced(j, "peak_fp16_flops", origin, g.sources, false);
  g.board_power_w = read_sourced(j, "board_power_w", origin, g.sources, false);
  g.idle_power_w = read_sourced(j, "idle_power_w", origin, g.sources, true);
  g.memory_energy_j_per_byte =
      read_sourced(j, "memory_energy_j_per_byte", origin, g.sources, false);
  g.step_overhead_s = read_sourced(j, "kernel_launch_s", origin, g.sources, true);
  g.die_area_mm2 = read_sourced(j, "die_area_mm2", origin, g.sources, false);
  require(g.idle_power_w < g.board_power_w,
          "GPU file '" + origin + "': idle_power_w must be below board_power_w");
  g.sources["energy_per_flop_j"] =
      "derived: (board_power_w - idle_power_w) / peak FLOP/s at the precision (upper bound)";
  return g;
}

GpuSpec load_gpu_file(const fs::path& file) {
  return gpu_spec_from_json(parse_json(read_text_file(file), "GPU file '" + file.string() + "'"),
                            file.string());
}

const std::vector<GpuSpec>& gpu_specs() {
  static const std::vector<GpuSpec> specs = make_specs();
  return specs;
}

const GpuSpec& gpu_spec(const std::string& name) {
  for (const auto& g : gpu_specs())
    if (g.name == name) return g;
  std::string known;
  for (const auto& g : gpu_specs()) known += (known.empty() ? "" : ", ") + g.name;
  throw Error("unknown GPU '" + name + "' (known: " + known + ")");
}

void DecodeWorkload::validate() const {
  require(heads >= 1, "GPU workload: heads must be >= 1");
  require(head_dim >= 1, "GPU workload: head_dim must be >= 1");
  require(context >= 1, "GPU workload: context must be >= 1");
  require(batch >= 1, "GPU workload: batch must be >= 1");
  require(bytes_per_element == 2 || bytes_per_element == 4,
          "GPU workload: bytes_per_element must be 2 (fp16) or 4 (fp32)");
  require(kv_heads >= 0 && (kv_heads == 0 || heads % kv_heads == 0),
          "GPU workload: kv_heads must divide heads (grouped-query attention)");
}

const char* protocol_name(DecodeProtocol p) {
  return p == DecodeProtocol::kIdeal ? "ideal" : "paper-script";
}

json DecodeWorkload::to_json() const {
  return {{"heads", heads},
          {"head_dim", head_dim},
          {"context", context},
          {"batch", batch},
          {"bytes_per_element", bytes_per_element},
          {"kv_heads", effective_kv_heads()},
          {"protocol", protocol_name(protocol)},
          {"kernels_per_step", kernels_per_step()}};
}

json GpuEstimate::to_json() const {
  return {{"bytes_per_token", bytes_per_token},
          {"flops_per_token", flops_per_token},
          {"memory_time_per_step_s", memory_time_s},
          {"compute_time_per_step_s", compute_time_s},
          {"step_time_s", step_time_s},
          {"latency_per_token_s", latency_per_token_s},
          {"energy_per_token_j", energy_per_token_j},
          {"dynamic_energy_per_token_j", dynamic_energy_per_token_j},
          {"modelled_energy_per_token_j", modelled_energy_per_token_j},
          {"bound", bound}};
}

GpuEstimate estimate_gpu_decode(const GpuSpec& gpu, const DecodeWorkload& w) {
  w.validate();
  const double q_values = double(w.heads) * w.head_dim;
  const double kv_values = double(w.effective_kv_heads()) * w.head_dim;
  // The paper's script copies each transposed cache view before its matmul: 3 passes.
  const double cache_passes = w.protocol == DecodeProtocol::kIdeal ? 1.0 : 3.0;
  GpuEstimate e;
  // Per sequence: read K and V of the whole context, write the new k and v, read q, write out.
  e.bytes_per_token =
      (2.0 * cache_passes * kv_values * double(w.context) + 2.0 * kv_values + 2.0 * q_values) *
      w.bytes_per_element;
  // Q·K^T and φ·V: 2 FLOP per multiply-add each; softmax ≈ 5 FLOP per score (none in the
  // paper's script).
  const double softmax = w.protocol == DecodeProtocol::kIdeal ? 5.0 : 0.0;
  e.flops_per_token = double(w.heads) * double(w.context) * (4.0 * w.head_dim + softmax);
  const double peak = gpu.peak_flops(w.bytes_per_element);
  e.memory_time_s = double(w.batch) * e.bytes_per_token / gpu.memory_bandwidth_bytes_per_s;
  e.compute_time_s = double(w.batch) * e.flops_per_token / peak;
  e.bound = e.memory_time_s >= e.compute_time_s ? "memory" : "compute";
  e.step_time_s =
      std::max(e.memory_time_s, e.compute_time_s) + w.kernels_per_step() * gpu.step_overhead_s;
  e.latency_per_token_s = e.step_time_s / double(w.batch);
  e.energy_per_token_j = gpu.board_power_w * e.latency_per_token_s;
  e.dynamic_energy_per_token_j = e.bytes_per_token * gpu.memory_energy_j_per_byte +
                                 e.flops_per_token * gpu.energy_per_flop_j(w.bytes_per_element);
  e.modelled_energy_per_token_j =
      std::min(e.energy_per_token_j,
               gpu.idle_power_w * e.latency_per_token_s + e.dynamic_energy_per_token_j);
  return e;
}

json MeasuredGpu::to_json() const {
  return {{"gpu", gpu},
          {"file", file},
          {"S", sequences},
          {"H", heads},
          {"D_h", head_dim},
          {"N_tokens", tokens},
          {"mean_latency_per_token", latency_per_token_s},
          {"mean_power_per_token", power_per_token_w},
          {"mean_energy_per_token", energy_per_token_j}};
}

MeasuredGpu load_measured_gpu(const fs::path& file) {
  const std::string name = file.string();
  const json j = parse_json(read_text_file(file), "measured GPU file '" + name + "'");
  require(j.is_object(), "measured GPU file '" + name + "': expected a JSON object");
  MeasuredGpu m;
  std::string tag = file.filename().string();
  const std::string prefix = "gpu_", suffix = "_attention.json";
  if (tag.rfind(prefix, 0) == 0 && tag.size() > prefix.size() + suffix.size() &&
      tag.compare(tag.size() - suffix.size(), suffix.size(), suffix) == 0)
    tag = tag.substr(prefix.size(), tag.size() - prefix.size() - suffix.size());
  m.gpu = display_name(tag);
  m.file = name;
  m.sequences = read_positive(j, "S", name);
  m.heads = read_positive(j, "H", name);
  m.head_dim = read_positive(j, "D_h", name);
  m.tokens = read_positive(j, "N_tokens", name);
  m.latency_per_token_s = read_number(j, "mean_latency_per_token", name);
  m.power_per_token_w = read_number(j, "mean_power_per_token", name);
  m.energy_per_token_j = read_number(j, "mean_energy_per_token", name);
  require(std::isfinite(m.latency_per_token_s) && m.latency_per_token_s > 0.0,
          "measured GPU file '" + name + "': 'mean_latency_per_token' must be > 0");
  require(std::isfinite(m.energy_per_token_j) && m.energy_per_token_j > 0.0,
          "measured GPU file '" + name + "': 'mean_energy_per_token' must be > 0");
  return m;
}

std::vector<MeasuredGpu> load_measured_gpus(const fs::path& dir) {
  std::vector<MeasuredGpu> out;
  std::error_code ec;
  if (dir.empty() || !fs::is_directory(dir, ec)) return out;
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const std::string f = entry.path().filename().string();
    if (f.rfind("gpu_", 0) == 0 && f.size() > 15 &&
        f.compare(f.size() - 15, 15, "_attention.json") == 0)
      files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& f : files) out.push_back(load_measured_gpu(f));
  return out;
}

const std::vector<PaperClaim>& paper_claims() {
  static const std::vector<PaperClaim> claims = {
      {"Jetson Nano", 7000.0, 40000.0}, {"RTX 4090", 300.0, 90000.0}, {"H100", 100.0, 70000.0}};
  return claims;
}

std::optional<PaperClaim> paper_claim(const std::string& gpu) {
  for (const auto& c : paper_claims())
    if (c.gpu == gpu) return c;
  return std::nullopt;
}

}  // namespace gaincell::cost
