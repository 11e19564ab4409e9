// Subcommand registry of the gaincell CLI. Each subcommand lives in its own cmd_<name>.cpp and
// registers itself with a static CommandRegistration, so adding one touches no other file.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <vector>

namespace gaincell::cli {

struct CommandSpec {
  std::string name;
  std::string description;
  // Adds options to `sub` and sets its callback. Errors are thrown as gaincell::Error.
  std::function<void(CLI::App& sub)> setup;
};

std::vector<CommandSpec>& command_registry();

// Registers the checks `sub` makes before its work: option values, and the configuration files
// its options name, opened and validated. They must be light (no training, no model beyond its
// configuration) and write nothing: validate_without_running (cli/app.h, the cli_args fuzz
// target) runs them on arbitrary command lines. The command itself runs them too, first thing,
// so the checks fuzzed are the ones users meet. Kept only while validate_without_running builds
// its app.
void set_validation(CLI::App& sub, std::function<void()> validate);

struct CommandRegistration {
  explicit CommandRegistration(CommandSpec spec) { command_registry().push_back(std::move(spec)); }
};

}  // namespace gaincell::cli
