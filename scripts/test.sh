#!/usr/bin/env bash
# Runs the test suite: the formatting check (scripts/check_format.sh), a Release build with
# warnings as errors and ctest, then the same suite built with ASan+UBSan.
# Set GAINCELL_SKIP_SANITIZE=1 to skip the sanitizer pass.
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

# Bounded fuzzing of every parser (fuzz/README in docs/reliability.md): 13 targets x 13 s.
if [ "${GAINCELL_SKIP_FUZZ:-0}" != "1" ]; then
  bash fuzz/run_fuzzers.sh --seconds "${GAINCELL_FUZZ_SECONDS:-13}"
fi

if [ "${GAINCELL_SKIP_SANITIZE:-0}" != "1" ]; then
  cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGAINCELL_SANITIZE=ON \
        -DGAINCELL_BUILD_BENCH=OFF -DGAINCELL_BUILD_PYTHON=OFF -DGAINCELL_WERROR=ON >/dev/null
  cmake --build build-asan -j"$jobs"
  # Tests labelled 'slow' (a "// ctest-labels: slow" line in the test file) are skipped under the
  # sanitizers: the Release pass covers them.
  # The tests that run ngspice keep ASan and UBSan but not LeakSanitizer: ngspice (dlopen'ed,
  # reloaded after a controlled exit) keeps its own allocations until exit, and once unloaded
  # their stack frames cannot be symbolised, so no suppression can name them.
  export UBSAN_OPTIONS=print_stacktrace=1 GAINCELL_SANITIZED=1
  (cd build-asan && ASAN_OPTIONS=detect_leaks=1 \
     ctest --output-on-failure -j"$jobs" --timeout 900 -LE slow -E '^SpiceNgspice|^SpiceCharacterize')
  (cd build-asan && ASAN_OPTIONS=detect_leaks=0 \
     ctest --output-on-failure -j"$jobs" --timeout 900 -LE slow -R '^SpiceNgspice|^SpiceCharacterize')
fi
