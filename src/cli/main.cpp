// gaincell: GPT-2 on simulated gain-cell analog attention hardware. Entry point; the subcommands
// are in cmd_*.cpp.
#include <algorithm>
#include <clocale>
#include <cstdio>
#include <exception>

#include "cli/command.h"
#include "gaincell/core/error.h"

namespace gaincell::cli {

std::vector<CommandSpec>& command_registry() {
  static std::vector<CommandSpec> commands;
  return commands;
}

}  // namespace gaincell::cli

int main(int argc, char** argv) {
  std::setlocale(LC_ALL, "C");
  CLI::App app{"gaincell: large language models on simulated gain-cell in-memory attention hardware",
               "gaincell"};
  app.set_version_flag("--version", GAINCELL_VERSION);
  app.require_subcommand(1);
  auto commands = gaincell::cli::command_registry();
  std::sort(commands.begin(), commands.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& spec : commands) spec.setup(*app.add_subcommand(spec.name, spec.description));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const gaincell::Error& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gaincell: error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "gaincell: internal error: %s\n", e.what());
    return 2;
  }
  return 0;
}
