#!/usr/bin/env bash
# Sweep points spread over the ranks of an MPI job (docs/scale-out.md). Each rank runs the points
# whose index modulo the number of ranks is its rank, one plain `gaincell sweep --point K` job
# after another, and appends their result lines to OUT/parts/rank-R.jsonl (a rerun skips the
# points already there). Afterwards one plain `gaincell sweep ... --out OUT --resume` collects
# them and writes the reports:
#
#   mpirun -np N scripts/sweep_mpi.sh OUT build/gaincell sweep --model M --spec S.json [options]
#   scripts/sweep_mpi.sh --collect OUT build/gaincell sweep --model M --spec S.json [options]
#
# The sweep's own options (--tokens, --limit, --seeds, ...) go after `sweep`, the same on both.
set -euo pipefail

collect=0
if [ "${1:-}" = "--collect" ]; then
  collect=1
  shift
fi
if [ $# -lt 3 ]; then
  echo "usage: mpirun -np N $0 OUT GAINCELL sweep [sweep options]" >&2
  echo "       $0 --collect OUT GAINCELL sweep [sweep options]" >&2
  exit 2
fi
out="$1"
shift
# The point jobs are ordinary single processes: they must not take themselves for ranks of this
# job (gaincell joins an MPI job when these variables say a launcher started it).
plain=(env -u OMPI_COMM_WORLD_SIZE -u OMPI_COMM_WORLD_RANK -u PMI_SIZE -u PMI_RANK)

if [ "$collect" = 1 ]; then
  shopt -s nullglob
  parts=("$out"/parts/rank-*.jsonl)
  [ ${#parts[@]} -gt 0 ] || { echo "$0: no $out/parts/rank-*.jsonl" >&2; exit 1; }
  mkdir -p "$out"
  cat "${parts[@]}" >"$out/results.jsonl.tmp"
  mv "$out/results.jsonl.tmp" "$out/results.jsonl"
  exec "${plain[@]}" "$@" --out "$out" --resume
fi

rank="${OMPI_COMM_WORLD_RANK:-${PMI_RANK:-0}}"
size="${OMPI_COMM_WORLD_SIZE:-${PMI_SIZE:-1}}"
mkdir -p "$out/parts"
part="$out/parts/rank-$rank.jsonl"
touch "$part"
points=$("${plain[@]}" "$@" --list | sed -n 's/.*"point":\([0-9]*\).*/\1/p')
[ -n "$points" ] || { echo "$0: the sweep lists no points" >&2; exit 1; }
for k in $points; do
  [ $((k % size)) -eq "$rank" ] || continue
  grep -q "\"point\":$k[,}]" "$part" && continue  # finished by an earlier run
  line=$("${plain[@]}" "$@" --point "$k" --quiet)
  printf '%s\n' "$line" >>"$part"
done
