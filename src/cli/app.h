// The gaincell command line as a CLI11 app, shared by main() and the argument-parsing fuzz target
// (fuzz/targets.cpp `cli_args`), so that the fuzzer parses exactly what the executable parses.
// CLI11 stays out of this header: it is included by the fuzz targets and their replay test.
#pragma once

#include <functional>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace gaincell::cli {

// Adds the global options (--version, --threads) and every registered subcommand to `app`.
// `set_threads` receives a valid --threads value when it is parsed.
void build_app(CLI::App& app, const std::function<void(int)>& set_threads);

// After a parse of `app` failed: when no subcommand was selected and an argument was left over
// (`gaincell trian ...`), the message that names it and lists the commands; otherwise empty
// (CLI11's own message says it better). CLI11 alone reports "A subcommand is required" there.
std::string unknown_command_message(const CLI::App& app);

// Parses `args` (without the program name) as the executable does (options, validators,
// required options, option callbacks), but runs no subcommand, and --threads changes nothing.
// Returns 3 if a subcommand's callback ran (a bug). Otherwise returns the exit status main() gives
// a command line that does not parse (2; 0 for
// --help and --version), or 0 when it parses. Validators may throw gaincell::Error; any other
// exception is a bug.
int parse_without_running(const std::vector<std::string>& args);

// parse_without_running, then the parsed subcommand's own checks (command.h set_validation: the
// option values and the files the options name, opened and validated; no output written, no
// model built): 1 when they reject the command line (gaincell::Error or a file-system error, as
// main() reports them), else what parse_without_running returns. Subcommands without checks of
// their own are only parsed.
int validate_without_running(const std::vector<std::string>& args);

}  // namespace gaincell::cli
