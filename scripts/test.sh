#!/usr/bin/env bash
# Runs the test suite: the formatting check (scripts/check_format.sh), a Release build with
# warnings as errors, ctest and pytest, then one clang build with ASan+UBSan that runs the
# fuzzers for a bounded time and the same ctest suite.
# Set GAINCELL_SKIP_SANITIZE=1 to skip the sanitizer pass, GAINCELL_SKIP_FUZZ=1 the fuzzers.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
jobs="$(nproc)"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
# ctest runs two test binaries at once on two cores: idle OpenMP threads must sleep, not spin,
# or oversubscribed tests crawl.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

bash scripts/check_format.sh

cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DGAINCELL_WERROR=ON >/dev/null
cmake --build build -j"$jobs"
(cd build && ctest --output-on-failure -j"$jobs" --timeout 900)
# The Python package (gaincell._core from the Release build) with Debian's interpreter; -rfEs
# names every failure, error and skip, and the last line is pytest's summary.
echo "test.sh: pytest tests/python" >&2
# The module finds its data through GAINCELL_DATA (the library never records the checkout).
PYTHONPATH="$root/build/python${PYTHONPATH:+:$PYTHONPATH}" GAINCELL_BUILD_DIR="$root/build" \
  GAINCELL_DATA="${GAINCELL_DATA:-$root/data}" \
  /usr/bin/python3 -m pytest tests/python -q -rfEs -p no:cacheprovider

# One clang build with ASan + UBSan + libFuzzer's coverage serves the fuzzers and the sanitizer
# pass (a separate fuzz build would compile the library a third time). -O1 with line tables:
# readable stacks at a fraction of the compile time of -O2 -g.
sanitize_build=build-sanitize
if [ "${GAINCELL_SKIP_FUZZ:-0}" != "1" ] || [ "${GAINCELL_SKIP_SANITIZE:-0}" != "1" ]; then
  clang_cxx="$(command -v clang++-14 || command -v clang++)"
  CXX="$clang_cxx" cmake -S . -B "$sanitize_build" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
        -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only -DNDEBUG" \
        -DGAINCELL_SANITIZE=ON -DGAINCELL_FUZZ=ON -DGAINCELL_NATIVE=OFF -DGAINCELL_WERROR=ON >/dev/null
  cmake --build "$sanitize_build" -j"$jobs"
fi

# Bounded fuzzing of every parser (docs/reliability.md): each target for 30 s, one per core at a
# time (17 targets on 2 cores: about 4.5 minutes of the 30-minute CI budget); long runs are
# local: fuzz/plateau.py.
if [ "${GAINCELL_SKIP_FUZZ:-0}" != "1" ]; then
  GAINCELL_FUZZ_BUILD_DIR="$sanitize_build" \
    bash fuzz/run_fuzzers.sh --seconds "${GAINCELL_FUZZ_SECONDS:-30}" --jobs "$jobs"
fi

if [ "${GAINCELL_SKIP_SANITIZE:-0}" != "1" ]; then
  # The sanitizer build compiles gaincell_tests only: the files labelled release-only (arithmetic
  # against references, long runs) are left to the Release pass above, to keep CI under its
  # time budget. KillResume and the ngspice tests are among them.
  export UBSAN_OPTIONS=print_stacktrace=1 GAINCELL_SANITIZED=1
  (cd "$sanitize_build" && ASAN_OPTIONS=detect_leaks=1 \
     ctest --output-on-failure -j"$jobs" --timeout 900)
fi
