// Model directories (issue 2 item 3, issue 12 item 1): `config.json` (Hugging Face keys +
// gaincell_*) and `model.safetensors` (or a sharded `model.safetensors.index.json` with its shard
// files) with Hugging Face tensor names: GPT-2 in Conv1D layout ([in, out]) with the LM head tied
// to `wte.weight`; Llama/Mistral/Qwen2 in nn.Linear layout ("model.layers.N.self_attn.q_proj.
// weight", ...; `lm_head.weight` unless tie_word_embeddings). A model trained here loads in the
// Python ecosystem and a downloaded checkpoint runs here.
//
// Reading accepts: a `_orig_mod.` prefix and for GPT-2 `transformer.` (HF, torch.compile'd
// nanoGPT), F32/F16/BF16 data, nn.Linear layout (nanoGPT; metadata gaincell_layout = "linear" or an
// explicit WeightLayout::kLinear) for the four projection weights, which are then transposed. It
// ignores `lm_head.weight` (tied) and HF's `attn.bias` / `attn.masked_bias` buffers. Missing GPT-2
// tensors and wrong shapes are errors; attention-variant extras (e.g. `h.{l}.attn.q_scaler.a`) may
// have any shape with the right number of elements (the paper stores (1,H,1,1)) and, when missing,
// keep their initial values (reported).
#pragma once

#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "gaincell/hw/hw_config.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/safetensors.h"

namespace gaincell {

enum class WeightLayout {
  kAuto,    // the file's metadata "gaincell_layout" ("conv1d" or "linear"); Conv1D when absent
  kConv1D,  // Hugging Face: c_attn.weight is [n_embd, 3 n_embd]
  kLinear,  // nn.Linear (nanoGPT): c_attn.weight is [3 n_embd, n_embd]
};

struct LoadReport {
  WeightLayout layout = WeightLayout::kConv1D;  // the layout that was used
  int loaded = 0;                               // model tensors filled from the file
  std::vector<std::string> missing_extras;      // attention extras left at their init values
  std::vector<std::string> ignored;             // file tensors not used (tied head, buffers, ...)
};

// Fills model.param_data() from `file`. Throws gaincell::Error naming the tensor for missing
// tensors, wrong shapes, unsupported dtypes and (unless allow_nonfinite) non-finite values.
LoadReport load_weights(GPT2Model& model, const SafeTensorsFile& file,
                        WeightLayout layout = WeightLayout::kAuto, bool allow_nonfinite = false);
// The same over the shards of one checkpoint (each tensor in exactly one of them).
LoadReport load_weights(GPT2Model& model, std::span<const SafeTensorsFile* const> files,
                        WeightLayout layout = WeightLayout::kAuto, bool allow_nonfinite = false);

// The safetensors files of a model directory: model.safetensors, or the shards that
// model.safetensors.index.json names (its weight_map is checked: every shard exists and holds the
// tensors mapped to it). Errors name the index file, the shard and the tensor.
struct CheckpointFiles {
  std::vector<SafeTensorsFile> files;
};
CheckpointFiles open_checkpoint_files(const std::filesystem::path& model_dir);

// Writes every model tensor as F32 with metadata {"format": "pt", "gaincell_layout": "conv1d"}
// (atomic: temporary file, then rename).
void save_weights(const GPT2Model& model, const std::filesystem::path& file);

// Changes to a stored configuration when loading (CLI --attention / --window / --hw).
struct ModelOverrides {
  std::optional<std::string> attention;
  std::optional<int> window;
  std::optional<HwConfig> hw;
  void apply(GPT2Config& config) const;
};

// The directory whose files a model load reads: DIR/latest (resolved) when DIR is a training
// output directory (train/checkpoint_store.h), else DIR.
std::filesystem::path current_model_dir(const std::filesystem::path& dir);

// DIR/config.json, validated.
GPT2Config read_model_config(const std::filesystem::path& model_dir);

struct LoadModelOptions {
  ModelOverrides overrides;
  WeightLayout layout = WeightLayout::kAuto;
  // NaN or inf in a tensor is an error naming it unless this is set (inspecting a diverged run).
  bool allow_nonfinite = false;
  // Storage of the digital layers' weights for inference (GPT2Model::set_weight_format); a model
  // loaded with bf16 or q8 can run inference forwards and decode but not train.
  WeightFormat weights = WeightFormat::kF32;
  // Receives one line per notable event (missing extras, ignored tensors); default: none.
  std::function<void(const std::string&)> log;
};

// Builds the model of DIR/config.json and loads DIR/model.safetensors (or its shards) into it.
std::unique_ptr<GPT2Model> load_model(const std::filesystem::path& model_dir,
                                      const LoadModelOptions& options = {});

// Writes DIR/model.safetensors then DIR/config.json (each atomically; creates DIR).
void save_model(const GPT2Model& model, const std::filesystem::path& model_dir);

// True for the GPT-2 tensor names (wte, wpe, ln_f, and the twelve tensors of a block); false for
// attention-variant extras.
bool is_gpt2_core_tensor(const std::string& name);

}  // namespace gaincell
