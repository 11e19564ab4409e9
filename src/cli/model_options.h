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

  ModelOverrides overrides() const {
    ModelOverrides o;
    if (!attention.empty()) o.attention = attention;
    if (window >= 0) o.window = window;
    if (!hw.empty()) o.hw = HwConfig::load(hw);
    return o;
  }
  WeightFormat weight_format() const { return parse_weight_format(weights); }
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

}  // namespace gaincell::cli
