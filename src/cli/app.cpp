#include "cli/app.h"

#include <algorithm>

#include "cli/command.h"

namespace gaincell::cli {

std::vector<CommandSpec>& command_registry() {
  static std::vector<CommandSpec> commands;
  return commands;
}

// More threads than this is a typing mistake, and libgomp aborts the process when it cannot
// create the threads it was told to use.
constexpr int kMaxThreads = 4096;

void build_app(CLI::App& app, const std::function<void(int)>& set_threads) {
  app.set_version_flag("--version", GAINCELL_VERSION);
  app.footer(
      "Exit status: 0 success, 1 failure (the error is printed on stderr), 2 usage error (the "
      "command line does not parse).");
  app.require_subcommand(1);
  // Options a subcommand does not know fall through to here, so --threads may come before or
  // after the subcommand's name.
  app.fallthrough();
  app.add_option_function<int>(
         "--threads", [set_threads](const int& n) { set_threads(n); },
         "threads for OpenMP and OpenBLAS (default: OMP_NUM_THREADS, else all cores)")
      ->check(CLI::Range(1, kMaxThreads))
      ->trigger_on_parse();
  auto commands = command_registry();
  std::sort(commands.begin(), commands.end(),
            [](const auto& a, const auto& b) { return a.name < b.name; });
  for (const auto& spec : commands) spec.setup(*app.add_subcommand(spec.name, spec.description));
}

namespace {

// Thrown by the top-level app once everything is parsed, validated and checked, before CLI11 runs
// the subcommand's callback (CLI::App::run_callback runs the parent's parse-complete callback
// first). The callbacks stay in place: they own the options the parse writes into.
struct ParsedWithoutRunning {};

}  // namespace

int parse_without_running(const std::vector<std::string>& args) {
  CLI::App app{"gaincell", "gaincell"};
  build_app(app, [](int) {});
  app.parse_complete_callback([] { throw ParsedWithoutRunning{}; });
  // CLI11 parses a reversed vector (the last argument first).
  std::vector<std::string> reversed(args.rbegin(), args.rend());
  try {
    app.parse(reversed);
  } catch (const ParsedWithoutRunning&) {
    return 0;
  } catch (const CLI::Success&) {  // --help, --version
    return 0;
  } catch (const CLI::ParseError&) {
    return 2;
  }
  return 3;  // a subcommand ran: what this function must never let happen
}

}  // namespace gaincell::cli
