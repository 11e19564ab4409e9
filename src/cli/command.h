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

struct CommandRegistration {
  explicit CommandRegistration(CommandSpec spec) { command_registry().push_back(std::move(spec)); }
};

}  // namespace gaincell::cli
