#!/usr/bin/env bash
# Builds the libFuzzer targets (clang, -fsanitize=fuzzer,address,undefined) and runs each for a
# bounded time on its committed corpus fuzz/corpus/<target>/, several targets at a time.
#   bash fuzz/run_fuzzers.sh [--build-dir DIR] [--no-build] [--seconds N] [--jobs N] [--merge]
#                            [--stats DIR] [--build-only] [TARGET...]
# --build-dir DIR  the build directory (default: $GAINCELL_FUZZ_BUILD_DIR, else build-fuzz). A
#                  directory already configured with -DGAINCELL_FUZZ=ON (scripts/test.sh passes
#                  its clang sanitizer build, which already holds the targets) is used as it is;
#                  otherwise it is configured here.
# --no-build       run the fuzz_<target> executables already in the build directory
# --build-only     build them and stop
# --seconds N      time per target (default 30, the figure of issue 17)
# --jobs N         targets run at once (default: the number of cores), each a single process
#                  with its own log, <build dir>/fuzz-logs/<target>.log
# --merge          add the inputs that reached new coverage to fuzz/corpus/<target>/ (libFuzzer
#                  -merge)
# --stats DIR      write DIR/<target>.json: executions, seconds, corpus size, coverage, the
#                  execution at which coverage last grew, crashes
# A crash, sanitizer report, leak, hang (10 s) or violated property fails the script (after the
# targets already started have finished): the target is named, the end of its log printed and
# the input left in <build dir>/crashes/<target>-*. Fix the bug, then commit the input as
# fuzz/corpus/<target>/crash-<name> (tests/test_fuzz_corpus.cpp replays it in every test run).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
seconds=30
jobs="$(nproc)"
merge=0
stats=""
build="${GAINCELL_FUZZ_BUILD_DIR:-build-fuzz}"
do_build=1
build_only=0
targets=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build-dir) build="$2"; shift 2 ;;
    --no-build) do_build=0; shift ;;
    --build-only) build_only=1; shift ;;
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --merge) merge=1; shift ;;
    --stats) stats="$2"; shift 2 ;;
    *) targets+=("$1"); shift ;;
  esac
done
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(ls fuzz/corpus)
fi
if [ "$do_build" = 1 ]; then
  if ! grep -qs '^GAINCELL_FUZZ:BOOL=ON' "$build/CMakeCache.txt"; then
    cxx="$(command -v clang++-14 || command -v clang++)"
    CXX="$cxx" cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DGAINCELL_FUZZ=ON \
      -DGAINCELL_BUILD_TESTS=OFF -DGAINCELL_NATIVE=OFF >/dev/null
  fi
  cmake --build "$build" -j"$(nproc)" --target $(printf 'fuzz_%s ' "${targets[@]}") >/dev/null
fi
[ "$build_only" = 1 ] && exit 0
logs="$build/fuzz-logs"
mkdir -p "$build/crashes" "$build/new" "$logs"
[ -n "$stats" ] && mkdir -p "$stats"
# The GPT-2 tokenizer target needs the vocabulary (scripts/setup.sh puts it in data/).
export GAINCELL_DATA="${GAINCELL_DATA:-$root/data}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

# Runs one target; its summary line goes to $logs/<target>.summary, its exit status to
# $logs/<target>.status (the parent reads both once every target has finished).
fuzz_one() {
  local t="$1"
  local new="$build/new/$t" log="$logs/$t.log"
  rm -rf "$new" && mkdir -p "$new"
  local start end status=0
  start=$(date +%s.%N)
  # New inputs go to $new (the committed corpus is read-only here); -timeout: a hang is a crash.
  # A target's dictionary (fuzz/dict/<target>.dict) holds the keywords its parser compares against.
  local dict=()
  [ -f "fuzz/dict/$t.dict" ] && dict=(-dict="fuzz/dict/$t.dict")
  "$build/fuzz_$t" "$new" "fuzz/corpus/$t" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2048 -max_len=65536 -artifact_prefix="$build/crashes/$t-" \
    -print_final_stats=1 "${dict[@]}" >"$log" 2>&1 || status=$?
  end=$(date +%s.%N)
  local runs cov ft last_gain corpus found elapsed
  runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo 0)
  # The execution count of the last line that reported more coverage: a plateau shows as a value
  # far below the total.
  last_gain=$(awk '/cov: / { for (i = 1; i <= NF; i++) if ($i == "cov:") c = $(i + 1);
                             if (c + 0 > best) { best = c + 0; n = substr($1, 2) } }
                   END { print n + 0 }' "$log")
  corpus=$(ls "fuzz/corpus/$t" | wc -l)
  found=$(ls "$new" | wc -l)
  elapsed=$(awk "BEGIN{print $end - $start}")
  printf 'fuzz %-18s %9s runs in %5.1f s, coverage %5s, features %6s, corpus %4s (+%s new), status %s\n' \
    "$t" "${runs:-0}" "$elapsed" "${cov:-0}" "${ft:-0}" "$corpus" "$found" "$status" \
    >"$logs/$t.summary"
  if [ -n "$stats" ]; then
    printf '{"target": "%s", "runs": %s, "seconds": %s, "coverage": %s, "features": %s, "last_coverage_gain_at": %s, "corpus": %s, "new": %s, "status": %s}\n' \
      "$t" "${runs:-0}" "$elapsed" "${cov:-0}" "${ft:-0}" "${last_gain:-0}" "$corpus" "$found" \
      "$status" >"$stats/$t.json"
  fi
  if [ "$status" -eq 0 ] && [ "$merge" = 1 ] && [ "$found" -gt 0 ]; then
    "$build/fuzz_$t" -merge=1 "fuzz/corpus/$t" "$new" >"$logs/$t.merge.log" 2>&1 || status=$?
  fi
  echo "$status" >"$logs/$t.status"
}

# At most $jobs targets at once (the CI machine has 2 cores: two targets of 30 s each take the
# time of one 15 s target each run alone).
for t in "${targets[@]}"; do
  rm -f "$logs/$t.status" "$logs/$t.summary"
  while [ "$(jobs -rp | wc -l)" -ge "$jobs" ]; do wait -n || true; done
  fuzz_one "$t" &
done
wait

failed=()
for t in "${targets[@]}"; do
  cat "$logs/$t.summary" 2>/dev/null || echo "fuzz $t: no summary (the runner itself failed)"
  if [ "$(cat "$logs/$t.status" 2>/dev/null || echo 1)" != 0 ]; then failed+=("$t"); fi
done
for t in "${failed[@]}"; do
  echo "---- fuzz target $t failed; the end of $logs/$t.log:" >&2
  tail -40 "$logs/$t.log" >&2
  ls "$build/crashes/$t-"* 2>/dev/null | sed 's/^/input saved: /' >&2 || true
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: failed targets: ${failed[*]} (inputs in $build/crashes/)" >&2
  exit 1
fi
