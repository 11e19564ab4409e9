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

// Memory access energies are not on the datasheets; they are typical published values.
constexpr const char* kHbmEnergySource =
    "approx. HBM access energy 3.9 pJ/bit (O'Connor et al., MICRO 2017) = 31.2 pJ/byte";
constexpr const char* kOverheadSource =
    "assumption: one kernel launch + framework dispatch per decode step";

GpuSpec make_spec(std::string name, double bw, double fp32, double fp16, double power,
                  double pj_per_byte, double overhead, const std::string& datasheet,
                  const std::string& energy_source, const std::string& overhead_source) {
  GpuSpec g;
  g.name = std::move(name);
  g.memory_bandwidth_bytes_per_s = bw;
  g.peak_fp32_flops = fp32;
  g.peak_fp16_flops = fp16;
  g.board_power_w = power;
  g.memory_energy_j_per_byte = pj_per_byte * 1e-12;
  g.step_overhead_s = overhead;
  g.sources = {{"memory_bandwidth_bytes_per_s", datasheet},
               {"peak_fp32_flops", datasheet},
               {"peak_fp16_flops", datasheet},
               {"board_power_w", datasheet},
               {"memory_energy_j_per_byte", energy_source},
               {"step_overhead_s", overhead_source},
               {"energy_per_flop_j", "derived: board_power_w / peak FLOP/s (upper bound)"}};
  return g;
}

std::vector<GpuSpec> make_specs() {
  std::vector<GpuSpec> v;
  v.push_back(make_spec("Jetson Nano", 25.6e9, 235.8e9, 471.6e9, 10.0, 40.0, 20e-6,
                        "NVIDIA Jetson Nano module datasheet (DA-09366): 64-bit LPDDR4 25.6 GB/s, "
                        "128 Maxwell cores at 921 MHz (472 GFLOPS fp16), 10 W mode",
                        "approx. LPDDR4 access energy 5 pJ/bit = 40 pJ/byte (assumption)",
                        "assumption: kernel launch + dispatch on the Cortex-A57 host, 20 µs"));
  v.push_back(make_spec("RTX 4090", 1008e9, 82.6e12, 165.2e12, 450.0, 58.0, 5e-6,
                        "NVIDIA Ada GPU architecture whitepaper (GeForce RTX 4090): GDDR6X "
                        "1008 GB/s, 82.6 TFLOPS fp32, 165.2 TFLOPS fp16 tensor, 450 W",
                        "Micron GDDR6X: 7.25 pJ/bit = 58 pJ/byte", kOverheadSource));
  v.push_back(make_spec("A100", 2039e9, 19.5e12, 312e12, 400.0, 31.2, 5e-6,
                        "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): HBM2e 2039 GB/s, "
                        "19.5 TFLOPS fp32, 312 TFLOPS fp16 tensor, 400 W",
                        kHbmEnergySource, kOverheadSource));
  v.push_back(make_spec("H100", 3.35e12, 67e12, 989.5e12, 700.0, 31.2, 5e-6,
                        "NVIDIA H100 Tensor Core GPU datasheet (SXM5): HBM3 3.35 TB/s, 67 TFLOPS "
                        "fp32, 989.5 TFLOPS fp16 tensor (dense), up to 700 W",
                        kHbmEnergySource, kOverheadSource));
  v.push_back(make_spec("H200", 4.8e12, 67e12, 989.5e12, 700.0, 31.2, 5e-6,
                        "NVIDIA H200 Tensor Core GPU datasheet (SXM): HBM3e 4.8 TB/s, 67 TFLOPS "
                        "fp32, 989.5 TFLOPS fp16 tensor (dense), up to 700 W",
                        kHbmEnergySource, kOverheadSource));
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
          {"memory_energy_j_per_byte", memory_energy_j_per_byte},
          {"step_overhead_s", step_overhead_s},
          {"sources", sources}};
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
}

json DecodeWorkload::to_json() const {
  return {{"heads", heads},
          {"head_dim", head_dim},
          {"context", context},
          {"batch", batch},
          {"bytes_per_element", bytes_per_element}};
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
          {"bound", bound}};
}

GpuEstimate estimate_gpu_decode(const GpuSpec& gpu, const DecodeWorkload& w) {
  w.validate();
  const double hd = double(w.heads) * w.head_dim;
  GpuEstimate e;
  // Per sequence: read K and V of the whole context, write the new k and v, read q, write out.
  e.bytes_per_token = (2.0 * hd * double(w.context) + 2.0 * hd + 2.0 * hd) * w.bytes_per_element;
  // Q·K^T and φ·V: 2 FLOP per multiply-add each; softmax ≈ 5 FLOP per score.
  e.flops_per_token = double(w.heads) * double(w.context) * (4.0 * w.head_dim + 5.0);
  const double peak = w.bytes_per_element == 4 ? gpu.peak_fp32_flops : gpu.peak_fp16_flops;
  e.memory_time_s = double(w.batch) * e.bytes_per_token / gpu.memory_bandwidth_bytes_per_s;
  e.compute_time_s = double(w.batch) * e.flops_per_token / peak;
  e.bound = e.memory_time_s >= e.compute_time_s ? "memory" : "compute";
  e.step_time_s = std::max(e.memory_time_s, e.compute_time_s) + gpu.step_overhead_s;
  e.latency_per_token_s = e.step_time_s / double(w.batch);
  e.energy_per_token_j = gpu.board_power_w * e.latency_per_token_s;
  const double energy_per_flop = gpu.board_power_w / peak;
  e.dynamic_energy_per_token_j =
      e.bytes_per_token * gpu.memory_energy_j_per_byte + e.flops_per_token * energy_per_flop;
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
