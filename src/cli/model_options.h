// Options shared by the commands that run a model (train, generate, perplexity): the attention
// variant (any registered name, so later variants work without edits here), its window, the
// hardware configuration and the checkpoint layout.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "gaincell/attention/attention.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/model/checkpoint.h"

namespace gaincell::cli {

struct ModelCliOptions {
  std::string attention;  // empty: keep the model's
  int window = -1;        // < 0: keep the model's
  std::string hw;         // empty: keep the model's
  bool linear_layout = false;
  bool allow_nonfinite = false;  // load weights holding NaN/inf (for inspection)
  std::string weights = "f32";   // inference weight storage (add_weights_option)
  std::string kv_cache = "f32";  // decode's KV cache storage (add_kv_cache_option)

  ModelOverrides overrides() const {
    ModelOverrides o;
    if (!attention.empty()) o.attention = attention;
    if (window >= 0) o.window = window;
    if (!hw.empty()) o.hw = HwConfig::load(hw);
    return o;
  }
  WeightFormat weight_format() const { return parse_weight_format(weights); }
  KvCacheFormat kv_cache_format() const { return parse_kv_cache_format(kv_cache); }
  WeightLayout layout() const {
    return linear_layout ? WeightLayout::kLinear : WeightLayout::kAuto;
  }
};

inline std::string attention_names_text() {
  std::string names;
  for (const auto& n : attention_names()) names += (names.empty() ? "" : "|") + n;
  return names;
}

inline void add_model_options(CLI::App& app, ModelCliOptions& o, bool with_layout = true) {
  app.add_option("--attention", o.attention,
                 "attention variant (" + attention_names_text() +
                     "); default: the one in the model's config.json");
  app.add_option("--window", o.window,
                 "sliding window in tokens for 'sliding' (0 = full causal); default: the model's");
  app.add_option(
      "--hw", o.hw, "hardware configuration for the gain-cell variants: a preset (" + [] {
        std::string s;
        for (const auto& n : HwConfig::preset_names()) s += (s.empty() ? "" : ", ") + n;
        return s;
      }() + ") or a JSON file; stored in config.json as gaincell_hw");
  if (with_layout) {
    app.add_flag("--linear-layout", o.linear_layout,
                 "the checkpoint stores nn.Linear (nanoGPT) [out, in] projection weights");
    app.add_flag("--allow-nonfinite-weights", o.allow_nonfinite,
                 "load weights that hold NaN or inf (refused by default; for inspecting a "
                 "diverged checkpoint)");
  }
}

// --weights f32|bf16|q8 for the inference commands (not train/adapt, which need f32).
inline void add_weights_option(CLI::App& app, ModelCliOptions& o) {
  app.add_option("--weights", o.weights,
                 "storage of the digital layers' weights: f32 (default), bf16 (2 bytes) or q8 "
                 "(int8 with one scale per 32 weights); activations and the simulated arrays "
                 "stay fp32")
      ->check(CLI::IsMember({"f32", "bf16", "q8"}));
}

// --kv-cache f32|bf16 for the commands that decode token by token (generate).
inline void add_kv_cache_option(CLI::App& app, ModelCliOptions& o) {
  app.add_option("--kv-cache", o.kv_cache,
                 "storage of the softmax variants' KV cache while decoding: f32 (default) or bf16 "
                 "(keys and values rounded to bfloat16, half the bytes per step; scores and sums "
                 "stay fp32); the gain-cell variants have no KV cache")
      ->check(CLI::IsMember({"f32", "bf16"}));
}

}  // namespace gaincell::cli
