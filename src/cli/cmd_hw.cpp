// gaincell hw show [--hw NAME|FILE]: prints the effective hardware configuration as JSON.
#include <iostream>
#include <memory>

#include "cli/command.h"
#include "gaincell/hw/hw_config.h"

namespace gaincell::cli {
namespace {

HwConfig load_valid(const std::string& hw) {
  HwConfig c = HwConfig::load(hw);
  c.validate();
  return c;
}

void setup_hw(CLI::App& app) {
  app.require_subcommand(1);
  auto* show = app.add_subcommand("show", "print the effective hardware configuration as JSON");
  auto hw = std::make_shared<std::string>("paper-nonlinear");
  std::string presets;
  for (const auto& n : HwConfig::preset_names()) presets += (presets.empty() ? "" : ", ") + n;
  show->add_option("--hw", *hw, "preset name (" + presets + ") or JSON file")
      ->capture_default_str();
  set_validation(*show, [hw] { load_valid(*hw); });
  show->callback([hw] { std::cout << load_valid(*hw).to_json().dump(2) << "\n"; });
}

CommandRegistration reg({"hw", "hardware configurations: presets and JSON files", setup_hw});

}  // namespace
}  // namespace gaincell::cli
