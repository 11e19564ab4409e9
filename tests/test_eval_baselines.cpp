// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Regression baselines of `gaincell eval` as data (tests/baselines/eval.json), as llama.cpp keeps
// perplexity baselines: per model, attention variant and task, the metric values of a short run
// (--limit) on a small committed model, compared with a relative tolerance. A change that moves a
// number must update the file on purpose:
//   GAINCELL_UPDATE_BASELINES=1 ./build/gaincell_tests --gtest_filter=EvalBaselines.*
// rewrites the values from the current build (commit the diff with the reason).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "gaincell/core/file_io.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kRoot = GAINCELL_SOURCE_DIR;
const fs::path kBaselines = kRoot / "tests" / "baselines" / "eval.json";

bool update_mode() {
  const char* v = std::getenv("GAINCELL_UPDATE_BASELINES");
  return v && std::string(v) == "1";
}

json run_eval(const json& run, const fs::path& tmp) {
  std::string args = "eval --quiet --json --bootstrap-iters 0 --model " +
                     cli_test::shell_quote((kRoot / run["model"].get<std::string>()).string()) +
                     " --data-dir " +
                     cli_test::shell_quote((kRoot / run["data_dir"].get<std::string>()).string()) +
                     " --limit " + std::to_string(run["limit"].get<int>()) + " --attention " +
                     run["attention"].get<std::string>() + " --tasks ";
  std::string tasks;
  for (const auto& [task, metrics] : run["results"].items())
    tasks += (tasks.empty() ? "" : ",") + task;
  args += tasks;
  if (run.contains("hw")) args += " --hw " + run["hw"].get<std::string>();
  const auto r = cli_test::run_cli(tmp, args);
  if (r.exit_code != 0) {
    ADD_FAILURE() << "gaincell " << args << " failed:\n" << r.err;
    return json();
  }
  return json::parse(r.out);
}

TEST(EvalBaselines, ShortRunsOnTheCommittedModelMatchTheRecordedNumbers) {
  if (test_util::sanitized()) GTEST_SKIP() << "slow under the sanitizers; the Release pass runs it";
  GAINCELL_REQUIRE_VOCAB();
  test_util::TempDir tmp;
  json baselines = json::parse(read_text_file(kBaselines));
  const double tol = baselines["relative_tolerance"].get<double>();
  for (json& run : baselines["runs"]) {
    const json report = run_eval(run, tmp.path());
    if (report.is_null()) continue;
    for (auto& [task, metrics] : run["results"].items()) {
      for (auto& [metric, value] : metrics.items()) {
        const double got = report["results"][task][metric].get<double>();
        if (update_mode()) {
          value = got;
          continue;
        }
        const double expected = value.get<double>();
        EXPECT_NEAR(got, expected, tol * std::max(1.0, std::abs(expected)))
            << run["attention"] << " " << task << " " << metric;
      }
    }
  }
  if (update_mode()) write_file_atomic(kBaselines, baselines.dump(2) + "\n");
}

}  // namespace
}  // namespace gaincell
