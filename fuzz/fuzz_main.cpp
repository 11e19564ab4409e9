// libFuzzer entry point of one target (fuzz/targets.cpp), chosen at build time:
// -DGAINCELL_FUZZ_TARGET="<name>". Built only with -DGAINCELL_FUZZ=ON and clang (see
// fuzz/README.md).
#include <cstdio>
#include <cstdlib>

#include "targets.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const gaincell::fuzz::Target* target = [] {
    const auto* t = gaincell::fuzz::find_target(GAINCELL_FUZZ_TARGET);
    if (!t) {
      std::fprintf(stderr, "unknown fuzz target %s\n", GAINCELL_FUZZ_TARGET);
      std::abort();
    }
    return t;
  }();
  target->run(data, size);
  return 0;
}
