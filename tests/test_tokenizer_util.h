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
#include "test_util.h"

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

// Skips the test locally, fails it under CI=true (scripts/setup.sh installs the vocabulary).
#define GAINCELL_REQUIRE_VOCAB()                                                                \
  if (!::gaincell::test_util::shared_tokenizer()) {                                             \
    GAINCELL_SKIP_UNLESS_CI("GPT-2 vocabulary not found in " +                                  \
                            (::gaincell::default_data_dir() / "vocab").string() +               \
                            " (run scripts/setup.sh or export GAINCELL_DATA=/work/main/data)"); \
  }

inline std::string random_bytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

inline bool sanitized() {
  const char* s = std::getenv("GAINCELL_SANITIZED");
  return s && std::string(s) == "1";
}

}  // namespace gaincell::test_util
