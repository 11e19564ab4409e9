// The fuzz targets (issue 17 item 1): one function per parser, each taking arbitrary bytes. A
// target returns normally when the parser accepts the input or rejects it with gaincell::Error;
// any other exception, a crash, a sanitizer report or a hang is a bug. The same functions run
// under libFuzzer (fuzz/fuzz_main.cpp, clang) and replay the committed corpora in the normal test
// suite (tests/test_fuzz_corpus.cpp, any compiler).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace gaincell::fuzz {

using TargetFn = void (*)(const uint8_t* data, size_t size);

struct Target {
  const char* name;  // fuzz/corpus/<name>/ holds its corpus
  TargetFn run;
};

const std::vector<Target>& targets();
const Target* find_target(const std::string& name);

}  // namespace gaincell::fuzz
