// Helpers shared by the GoogleTest files (issue 11 item 9): a temporary directory, checks of
// gaincell::Error messages, the committed fixtures, and the reference data in ../shared (item 11:
// a test that needs it is skipped with a message locally but fails when CI=true, so a green CI
// means the golden and reference checks ran).
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "gaincell/core/error.h"

namespace gaincell::test_util {

// A fresh empty directory under the system temp dir, removed by the destructor.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("gaincell_test_" + std::to_string(rd()) + "_" + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// n token ids drawn uniformly from [0, vocab) by a seeded generator (the same ids on every run).
inline std::vector<int32_t> random_tokens(size_t n, int vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> ids(n);
  for (auto& t : ids) t = static_cast<int32_t>(rng() % vocab);
  return ids;
}

// The message of the gaincell::Error that `fn` throws; empty when it throws none.
inline std::string error_of(const std::function<void()>& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// Expects `fn` to throw a gaincell::Error whose message contains `needle`.
inline void expect_error(const std::function<void()>& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

// The source tree's root (tests only: the library and the CLI never know it).
inline std::filesystem::path source_dir() {
  return GAINCELL_SOURCE_DIR;
}

// tests/fixtures/NAME (committed test data).
inline std::filesystem::path fixture_path(const std::string& name) {
  return source_dir() / "tests" / "fixtures" / name;
}

// True when the environment says this is a CI run (CI=true).
inline bool in_ci() {
  const char* ci = std::getenv("CI");
  return ci != nullptr && std::string(ci) == "true";
}

// ../shared/data/RELATIVE beside the source tree; empty when it does not exist.
inline std::filesystem::path shared_data_path(const std::string& relative = "") {
  const std::filesystem::path p =
      (source_dir() / ".." / "shared" / "data" / relative).lexically_normal();
  std::error_code ec;
  return std::filesystem::exists(p, ec) ? p : std::filesystem::path();
}

// Ends the test when something it needs is missing: skipped with `why` locally, failed under
// CI=true. Only in a TEST body (it returns from the function).
#define GAINCELL_SKIP_UNLESS_CI(why)                                        \
  do {                                                                      \
    if (::gaincell::test_util::in_ci()) {                                   \
      GTEST_FAIL() << (why) << " (CI=true: the reference checks must run)"; \
    } else {                                                                \
      GTEST_SKIP() << (why);                                                \
    }                                                                       \
  } while (0)

// Declares `const std::filesystem::path VAR` = ../shared/data/RELATIVE, or ends the test as
// GAINCELL_SKIP_UNLESS_CI does when the file is not there.
#define GAINCELL_SHARED_DATA(var, relative)                                            \
  const std::filesystem::path var = ::gaincell::test_util::shared_data_path(relative); \
  if (var.empty())                                                                     \
  GAINCELL_SKIP_UNLESS_CI(std::string("reference data ../shared/data/") + (relative) + \
                          " not found (the shared folder beside the checkout)")

}  // namespace gaincell::test_util
