#include "gaincell/model/checkpoint.h"

#include <algorithm>
#include <cctype>
#include <climits>
#include <cmath>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "gaincell/attention/attention.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"

namespace gaincell {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

// "h.3.attn.c_attn.weight" -> "attn.c_attn.weight"; empty when not a block tensor.
std::string block_relative_name(const std::string& name) {
  if (!starts_with(name, "h.")) return {};
  size_t i = 2;
  while (i < name.size() && std::isdigit(static_cast<unsigned char>(name[i]))) ++i;
  if (i == 2 || i >= name.size() || name[i] != '.') return {};
  return name.substr(i + 1);
}

// The four projection weights that nn.Linear stores as [out, in] and Conv1D as [in, out].
bool is_projection_weight(const std::string& name) {
  const std::string rel = block_relative_name(name);
  return rel == "attn.c_attn.weight" || rel == "attn.c_proj.weight" || rel == "mlp.c_fc.weight" ||
         rel == "mlp.c_proj.weight";
}

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.npos, suffix) == 0;
}

// Tensors that checkpoints carry but that are not parameters here.
bool is_ignorable(const std::string& name, const GPT2Config& config) {
  // A tied head: the embedding is the LM head (some Llama-family checkpoints store both).
  if (name == "lm_head.weight") return config.tie_word_embeddings;
  if (!config.is_gpt2()) return ends_with(name, "self_attn.rotary_emb.inv_freq");  // old HF buffer
  const std::string rel = block_relative_name(name);
  return rel == "attn.bias" || rel == "attn.masked_bias";  // HF/nanoGPT causal-mask buffers
}

// Wrapper prefixes of saved modules; GPT-2 checkpoints may also carry "transformer." (the Llama
// family's "model." is part of the Hugging Face name and stays).
std::string strip_prefixes(std::string name, const GPT2Config& config) {
  for (bool changed = true; changed;) {
    changed = false;
    for (const char* prefix : {"_orig_mod.", "module.", "transformer."}) {
      if (!config.is_gpt2() && std::string(prefix) == "transformer.") continue;
      if (starts_with(name, prefix)) {
        name = name.substr(std::string(prefix).size());
        changed = true;
      }
    }
  }
  return name;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

WeightLayout resolve_layout(const SafeTensorsFile& file, WeightLayout requested,
                            const GPT2Config& config) {
  if (!config.is_gpt2()) return WeightLayout::kLinear;  // Hugging Face Llama: always nn.Linear
  if (requested != WeightLayout::kAuto) return requested;
  auto it = file.metadata().find("gaincell_layout");
  if (it == file.metadata().end() || it->second == "conv1d") return WeightLayout::kConv1D;
  if (it->second == "linear") return WeightLayout::kLinear;
  throw Error("safetensors file " + file.source() + ": unknown gaincell_layout '" + it->second +
              "' (expected conv1d or linear)");
}

// "h.0.attn.q_scaler.a, h.1.attn.q_scaler.a, ..." -> "h.*.attn.q_scaler.a, ... (layers 0-3)":
// one entry per tensor of a layer instead of one per layer, for readable logs.
std::string summarize_layer_names(const std::vector<std::string>& names) {
  std::vector<std::string> unique;
  int min_layer = INT32_MAX, max_layer = -1;
  for (const std::string& n : names) {
    std::string key = n;
    size_t digits = 2;  // end of the layer number in "h.<layer>."
    if (n.starts_with("h.")) {
      while (digits < n.size() && std::isdigit(static_cast<unsigned char>(n[digits]))) ++digits;
    }
    if (digits > 2 && digits < n.size() && n[digits] == '.') {
      const int layer = std::stoi(n.substr(2, digits - 2));
      min_layer = std::min(min_layer, layer);
      max_layer = std::max(max_layer, layer);
      key = "h.*" + n.substr(digits);
    }
    if (std::find(unique.begin(), unique.end(), key) == unique.end()) unique.push_back(key);
  }
  std::string out;
  for (const std::string& k : unique) out += (out.empty() ? "" : ", ") + k;
  if (max_layer >= 0)
    out += " (layers " + std::to_string(min_layer) + "-" + std::to_string(max_layer) + ")";
  return out;
}

// A core tensor's shape in the file: the model's, or its transpose for a GPT-2 projection stored
// in nn.Linear layout (`transpose`).
void check_core_shape(const SafeTensorInfo& info, const ParamInfo& p, bool transpose,
                      const std::string& what, const GPT2Config& config) {
  if (transpose) {
    const std::vector<int64_t> want = {p.shape[1], p.shape[0]};
    require(info.shape == want, what + " has shape " + shape_string(info.shape) + ", expected " +
                                    shape_string(want) + " (nn.Linear layout [out, in])");
    return;
  }
  if (info.shape == p.shape) return;
  std::string hint;
  if (config.is_gpt2() && is_projection_weight(p.name) && info.shape.size() == 2 &&
      info.shape == std::vector<int64_t>{p.shape[1], p.shape[0]}) {
    hint = "; it looks like nn.Linear layout (use --linear-layout)";
  }
  throw Error(what + " has shape " + shape_string(info.shape) + ", the model expects " +
              shape_string(p.shape) + hint);
}

// One flag per tensor (or chunk), then one check: building a message per element took seconds of
// malloc/free on GPT-2 124M. The first bad element is looked up only on failure. `first` is the
// index of v[0] in the tensor.
void check_finite(const float* v, int64_t n, int64_t first, const std::string& what,
                  bool allow_nonfinite) {
  bool finite = true;
  for (int64_t i = 0; i < n; ++i) finite &= std::isfinite(v[i]);
  if (finite || allow_nonfinite) return;
  int64_t i = 0;
  while (std::isfinite(v[i])) ++i;
  throw Error(what + " contains a non-finite value (" + (std::isnan(v[i]) ? "NaN" : "inf") +
              ") at element " + std::to_string(first + i) +
              " (a diverged or corrupt checkpoint; --allow-nonfinite-weights loads it "
              "anyway for inspection)");
}

// A q8 matrix's weights must fit an fp16 block scale (first_q8_overflow). The packer checks as
// well, but only knows its matrix's row and column; here the tensor and element are named.
// `first` is the index of v[0] in the tensor.
void check_q8_range(const float* v, int64_t n, int64_t first, const std::string& what,
                    const PackedMatrix& m) {
  if (m.format() != WeightFormat::kQ8) return;
  if (const int64_t i = first_q8_overflow(v, n); i >= 0)
    throw_q8_weight_too_large(what + ", element " + std::to_string(first + i), v[i]);
}

// A tensor held only packed (GPT2Model::begin_packed_load): converted from the file's dtype to
// fp32 a chunk at a time and packed at once, through the same rounding as
// set_weight_format's packing of fp32 parameters (so the packed values are bit-identical), without
// writing the model's fp32 parameters. `file_rows`: the file stores the rows of M = the outputs
// (nn.Linear [out, in]); otherwise a Conv1D [in, out], whose columns are M's rows.
void load_packed_tensor(const SafeTensorsFile& file, const SafeTensorInfo& info,
                        const GPT2Model::PackedTarget& target, bool file_rows,
                        const std::string& what, bool allow_nonfinite,
                        std::vector<float>& scratch) {
  PackedMatrix& m = *target.matrix;
  const int64_t numel = info.numel();
  if (!file_rows) {  // the whole [in, out] tensor, then its columns (the largest is GPT-2's c_fc)
    scratch.resize(numel);
    file.read_f32(info.name, scratch.data());
    check_finite(scratch.data(), numel, 0, what, allow_nonfinite);
    check_q8_range(scratch.data(), numel, 0, what, m);
    m.pack_columns(target.first_row, static_cast<int>(info.shape[1]), scratch.data());
    return;
  }
  const int64_t cols = m.cols(), rows = numel / cols;
  const int64_t chunk_rows = std::max<int64_t>(1, (int64_t{1} << 18) / cols);  // ~1 MiB of fp32
  scratch.resize(std::min(rows, chunk_rows) * cols);
  for (int64_t r = 0; r < rows; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, rows - r);
    file.read_f32(info.name, r * cols, n * cols, scratch.data());
    check_finite(scratch.data(), n * cols, r * cols, what, allow_nonfinite);
    check_q8_range(scratch.data(), n * cols, r * cols, what, m);
    m.pack_rows(target.first_row + static_cast<int>(r), static_cast<int>(n), scratch.data());
  }
}

}  // namespace

bool is_gpt2_core_tensor(const std::string& name) {
  static const std::set<std::string> top = {"wte.weight", "wpe.weight", "ln_f.weight", "ln_f.bias"};
  static const std::set<std::string> block = {
      "ln_1.weight",        "ln_1.bias",        "attn.c_attn.weight", "attn.c_attn.bias",
      "attn.c_proj.weight", "attn.c_proj.bias", "ln_2.weight",        "ln_2.bias",
      "mlp.c_fc.weight",    "mlp.c_fc.bias",    "mlp.c_proj.weight",  "mlp.c_proj.bias"};
  return top.count(name) > 0 || block.count(block_relative_name(name)) > 0;
}

LoadReport load_weights(GPT2Model& model, const SafeTensorsFile& file, WeightLayout layout,
                        bool allow_nonfinite) {
  const SafeTensorsFile* files[] = {&file};
  return load_weights(model, files, layout, allow_nonfinite);
}

LoadReport load_weights(GPT2Model& model, std::span<const SafeTensorsFile* const> files,
                        WeightLayout layout, bool allow_nonfinite) {
  require(!files.empty(), "load_weights: no safetensors file");
  const GPT2Config& config = model.config();
  LoadReport report;
  report.layout = resolve_layout(*files[0], layout, config);
  const bool linear = config.is_gpt2() && report.layout == WeightLayout::kLinear;
  const std::string where = files.size() == 1 ? "safetensors file " + files[0]->source()
                                              : "checkpoint shards of " + files[0]->source();

  // Model name -> (file, name in the file), after prefix stripping.
  struct Located {
    const SafeTensorsFile* file;
    std::string name;
  };
  std::map<std::string, Located> by_model_name;
  for (const SafeTensorsFile* f : files) {
    for (const auto& t : f->tensors()) {
      const std::string name = strip_prefixes(t.name, config);
      if (is_ignorable(name, config)) {
        report.ignored.push_back(t.name);
        continue;
      }
      auto [it, inserted] = by_model_name.emplace(name, Located{f, t.name});
      require(inserted, "safetensors file " + f->source() + ": tensors '" + it->second.name +
                            "' (" + it->second.file->source() + ") and '" + t.name +
                            "' both map to '" + name + "'");
    }
  }

  std::vector<float> scratch;
  for (const ParamInfo& p : model.params()) {
    auto it = by_model_name.find(p.name);
    const bool core = !p.attention_extra;
    if (it == by_model_name.end()) {
      require(!core, where + " has no tensor '" + p.name + "'" +
                         (config.is_gpt2() ? " (with or without a 'transformer.' prefix)" : ""));
      report.missing_extras.push_back(p.name);
      continue;
    }
    const SafeTensorsFile& file = *it->second.file;
    const SafeTensorInfo& info = file.info(it->second.name);
    const std::string what = "safetensors file " + file.source() + ", tensor '" + info.name + "'";
    float* dst = model.param_data() + p.offset;
    const bool transpose = linear && is_projection_weight(p.name);
    const GPT2Model::PackedTarget packed = model.packed_target(p);
    if (core) check_core_shape(info, p, transpose, what, config);
    if (packed.matrix != nullptr && !packed.fp32_kept) {  // held only packed: dst stays unwritten
      load_packed_tensor(file, info, packed, transpose || !packed.columns, what, allow_nonfinite,
                         scratch);
      by_model_name.erase(it);
      ++report.loaded;
      continue;
    }
    if (!core) {
      // Attention extras: the paper stores per-head scalers as (1, H, 1, 1).
      require(info.numel() == p.numel,
              what + ": " + std::to_string(info.numel()) + " elements, the model expects " +
                  std::to_string(p.numel) + " (shape " + shape_string(p.shape) + ")");
      file.read_f32(info.name, dst);
    } else if (transpose) {
      scratch.resize(p.numel);
      file.read_f32(info.name, scratch.data());
      const int64_t rows = p.shape[0], cols = p.shape[1];  // model [in, out] = file [out, in]^T
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t c = 0; c < cols; ++c) dst[r * cols + c] = scratch[c * rows + r];
      }
    } else {
      file.read_f32(info.name, dst);
    }
    check_finite(dst, p.numel, 0, what, allow_nonfinite);
    // A tied LM head is both the embedding (fp32) and a packed matrix.
    if (packed.matrix != nullptr) {
      check_q8_range(dst, p.numel, 0, what, *packed.matrix);
      packed.matrix->pack_rows(packed.first_row, static_cast<int>(p.shape[0]), dst);
    }
    by_model_name.erase(it);
    ++report.loaded;
  }
  for (const auto& [model_name, located] : by_model_name) report.ignored.push_back(located.name);
  return report;
}

void save_weights(const GPT2Model& model, const std::filesystem::path& file) {
  model.require_fp32_weights("saving the weights (" + file.string() + ")");
  std::vector<TensorView> views;
  for (const ParamInfo& p : model.params()) {
    views.push_back({p.name, p.shape, model.param_data() + p.offset});
  }
  write_safetensors(file, views, {{"format", "pt"}, {"gaincell_layout", "conv1d"}});
}

void ModelOverrides::apply(GPT2Config& config) const {
  // Switching to another hardware variant without --hw takes that variant's own hardware (the
  // ablation cells run without Q and output quantisation, spec §2.7); the stored hardware is
  // kept when the variant stays the same.
  if (attention && *attention != config.attention && !hw) {
    if (auto own = attention_default_hardware(*attention)) config.hw = *own;
  }
  if (attention) config.attention = *attention;
  if (window) config.window = *window;
  if (hw) config.hw = *hw;
  config.hw = attention_hardware(config.attention, config.hw);
  config.validate();
}

std::filesystem::path current_model_dir(const std::filesystem::path& dir) {
  std::error_code ec;
  const auto latest = dir / "latest";
  if (std::filesystem::is_directory(latest, ec))
    return std::filesystem::weakly_canonical(latest, ec);
  return dir;
}

GPT2Config read_model_config(const std::filesystem::path& given_dir) {
  const std::filesystem::path model_dir = current_model_dir(given_dir);
  const auto path = model_dir / "config.json";
  std::error_code ec;
  // Evaluated first (a require() argument's order is unspecified): a symlink loop sets ec.
  const bool is_dir = std::filesystem::is_directory(model_dir, ec);
  const bool missing = !ec || ec == std::errc::no_such_file_or_directory;
  require(is_dir, "model directory " + model_dir.string() +
                      (missing ? std::string(" does not exist") : ": " + ec.message()));
  require(std::filesystem::exists(std::filesystem::symlink_status(path, ec)),
          "model directory " + model_dir.string() + " has no config.json");
  const nlohmann::json j = read_json_file(path);
  try {
    return GPT2Config::from_json(j);
  } catch (const Error& e) {
    throw Error(path.string() + ": " + e.what());
  } catch (const nlohmann::json::exception& e) {
    throw Error(path.string() + ": " + e.what());
  }
}

CheckpointFiles open_checkpoint_files(const std::filesystem::path& model_dir) {
  CheckpointFiles out;
  const auto single = model_dir / "model.safetensors";
  const auto index_path = model_dir / "model.safetensors.index.json";
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::symlink_status(single, ec))) {
    out.files.push_back(SafeTensorsFile::open(single));
    return out;
  }
  require(std::filesystem::exists(index_path),
          "model directory " + model_dir.string() +
              " has no model.safetensors (nor a sharded model.safetensors.index.json)");
  const std::string index_name = index_path.string();
  const nlohmann::json index = read_json_file(index_path);
  require(index.is_object(), index_name + " is not a JSON object");
  require(index.contains("weight_map") && index["weight_map"].is_object(),
          index_name + ": missing key 'weight_map' (an object of tensor name -> shard file)");
  std::map<std::string, size_t> shard_of_file;  // shard file name -> index into out.files
  for (const auto& [tensor, shard] : index["weight_map"].items()) {
    require(shard.is_string(), index_name + ": weight_map['" + tensor + "'] must be a file name");
    const std::string file = shard.get<std::string>();
    require(!file.empty() && file.find('/') == std::string::npos &&
                file.find('\\') == std::string::npos && file != "." && file != "..",
            index_name + ": weight_map['" + tensor + "'] = '" + file +
                "' is not a file name in the model directory");
    auto it = shard_of_file.find(file);
    if (it == shard_of_file.end()) {
      const auto path = model_dir / file;
      require(std::filesystem::exists(path),
              index_name + ": shard '" + file + "' (for tensor '" + tensor + "') does not exist");
      out.files.push_back(SafeTensorsFile::open(path));
      it = shard_of_file.emplace(file, out.files.size() - 1).first;
    }
    require(out.files[it->second].contains(tensor), index_name + ": tensor '" + tensor +
                                                        "' is mapped to shard '" + file +
                                                        "', which does not contain it");
  }
  require(!out.files.empty(), index_name + ": 'weight_map' is empty");
  return out;
}

std::unique_ptr<GPT2Model> load_model(const std::filesystem::path& given_dir,
                                      const LoadModelOptions& options) {
  // One checkpoint's config and weights, even if a training run switches `latest` meanwhile.
  const std::filesystem::path model_dir = current_model_dir(given_dir);
  GPT2Config config = read_model_config(model_dir);
  options.overrides.apply(config);
  const CheckpointFiles files = open_checkpoint_files(model_dir);
  // A reduced format: the packed matrices are filled straight from the file, never in fp32 (the
  // model's memory check counts them at their packed size).
  auto model = std::make_unique<GPT2Model>(config, options.weights);
  std::vector<const SafeTensorsFile*> views;
  for (const SafeTensorsFile& f : files.files) views.push_back(&f);
  const LoadReport report = load_weights(*model, views, options.layout, options.allow_nonfinite);
  if (options.log) {
    if (!report.missing_extras.empty()) {
      options.log("attention '" + config.attention +
                  "': " + std::to_string(report.missing_extras.size()) +
                  " tensors not in the checkpoint keep their initial values: " +
                  summarize_layer_names(report.missing_extras));
    }
    size_t unexpected = 0;
    std::string names;
    for (const auto& n : report.ignored) {
      if (is_ignorable(strip_prefixes(n, config), config)) continue;
      ++unexpected;
      if (unexpected <= 8) names += (names.empty() ? "" : ", ") + n;
    }
    if (unexpected > 0) {
      options.log(std::to_string(unexpected) + " checkpoint tensors are not used by attention '" +
                  config.attention + "': " + names + (unexpected > 8 ? ", ..." : ""));
    }
  }
  return model;
}

void save_model(const GPT2Model& model, const std::filesystem::path& model_dir) {
  std::filesystem::create_directories(model_dir);
  save_weights(model, model_dir / "model.safetensors");
  write_file_atomic(model_dir / "config.json", model.config().to_json().dump(2) + "\n");
}

}  // namespace gaincell
