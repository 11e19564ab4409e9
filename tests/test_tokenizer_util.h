// Helpers shared by the tokenizer and data tests.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <optional>
#include <random>
#include <string>

#include "gaincell/core/file_io.h"
#include "gaincell/model/tokenizer.h"

namespace gaincell::test_util {

// The GPT-2 vocabulary from default_data_dir()/vocab, loaded once; nullopt when absent.
inline const std::optional<Tokenizer>& shared_tokenizer() {
  static const std::optional<Tokenizer> tok = []() -> std::optional<Tokenizer> {
    const auto dir = default_data_dir() / "vocab";
    if (!std::filesystem::exists(dir / "encoder.json")) return std::nullopt;
    return Tokenizer::load(dir);
  }();
  return tok;
}

#define GAINCELL_REQUIRE_VOCAB()                                                             \
  if (!::gaincell::test_util::shared_tokenizer()) {                                          \
    GTEST_SKIP() << "GPT-2 vocabulary not found in " << ::gaincell::default_data_dir()       \
                 << "/vocab (run scripts/setup.sh or export GAINCELL_DATA=/work/main/data)"; \
  }

inline std::string random_bytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

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
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline bool sanitized() {
  const char* s = std::getenv("GAINCELL_SANITIZED");
  return s && std::string(s) == "1";
}

}  // namespace gaincell::test_util
