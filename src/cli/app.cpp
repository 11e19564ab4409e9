#include "cli/app.h"

#include <algorithm>
#include <filesystem>
#include <map>

#include "cli/command.h"
#include "gaincell/core/error.h"

namespace gaincell::cli {

std::vector<CommandSpec>& command_registry() {
  static std::vector<CommandSpec> commands;
  return commands;
}

namespace {

// The checks of the subcommands of the app validate_without_running is building and parsing;
// null otherwise (main's app needs none: its commands run their checks themselves).
thread_local std::map<const CLI::App*, std::function<void()>>* current_validations = nullptr;

}  // namespace

void set_validation(CLI::App& sub, std::function<void()> validate) {
  if (current_validations) (*current_validations)[&sub] = std::move(validate);
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

std::string unknown_command_message(const CLI::App& app) {
  if (!app.get_subcommands().empty()) return "";
  const std::vector<std::string> left = app.remaining();
  const auto word = std::find_if(left.begin(), left.end(),
                                 [](const std::string& a) { return !a.empty() && a[0] != '-'; });
  if (word == left.end()) return "";
  std::string names;
  for (const CLI::App* sub : app.get_subcommands([](const CLI::App*) { return true; })) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  return "unknown command '" + *word + "' (commands: " + names + "; see gaincell --help)";
}

namespace {

// Thrown by the top-level app once everything is parsed, validated and checked, before CLI11 runs
// the subcommand's callback (CLI::App::run_callback runs the parent's parse-complete callback
// first). The callbacks stay in place: they own the options the parse writes into.
struct ParsedWithoutRunning {};

// Parses `args` into `app` without running it: 0, 2 or 3 as parse_without_running documents.
int parse_into(CLI::App& app, const std::vector<std::string>& args) {
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

// Runs the checks of every subcommand the parse selected (`hw show`: those of `show`).
void run_validations(const CLI::App& app,
                     const std::map<const CLI::App*, std::function<void()>>& checks) {
  for (const CLI::App* sub : app.get_subcommands()) {
    if (const auto it = checks.find(sub); it != checks.end()) it->second();
    run_validations(*sub, checks);
  }
}

}  // namespace

int parse_without_running(const std::vector<std::string>& args) {
  CLI::App app{"gaincell", "gaincell"};
  build_app(app, [](int) {});
  return parse_into(app, args);
}

int validate_without_running(const std::vector<std::string>& args) {
  std::map<const CLI::App*, std::function<void()>> checks;
  CLI::App app{"gaincell", "gaincell"};
  current_validations = &checks;
  try {
    build_app(app, [](int) {});
  } catch (...) {
    current_validations = nullptr;
    throw;
  }
  current_validations = nullptr;
  const int code = parse_into(app, args);
  // --help and --version parse to 0 too, but select nothing to check.
  if (code != 0 || app.get_subcommands().empty()) return code;
  try {
    run_validations(app, checks);
  } catch (const Error&) {
    return 1;
  } catch (const std::filesystem::filesystem_error&) {  // a path the user gave, as main() says
    return 1;
  }
  return 0;
}

}  // namespace gaincell::cli
