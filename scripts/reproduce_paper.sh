#!/usr/bin/env bash
# The paper's recipe at small scale on a real corpus (issue 4, docs/reproduction.md): a
# character-level GPT-2-architecture model (4 layers, 2 heads of dimension 64, context 256) on
# tinyshakespeare (../shared/data/corpus), then stage A (linear hardware), stage B (adaptation from
# reset scalers, the paper's Fig. 4c start), stage C (nonlinear fine-tuning), the adaptation from
# stage A's scalers (the HEAD code), and the nonlinearity ablation. 33 minutes on 2 cores.
#
#   bash scripts/reproduce_paper.sh [OUT=repro-out]
#
# Results: OUT/pipeline/pipeline.json, OUT/adapt-*/adaptation.json, OUT/summary.md.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-repro-out}"
gaincell="${GAINCELL:-$root/build/gaincell}"
corpus="$root/../shared/data/corpus/tinyshakespeare.txt"
if [[ ! -f "$corpus" ]]; then
  echo "reproduce_paper: $corpus not found (the shared reference data sits beside the project)" >&2
  exit 1
fi
[[ -x "$gaincell" ]] || { echo "reproduce_paper: build first (scripts/setup.sh)" >&2; exit 1; }
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"
mkdir -p "$out"

# 1. Byte-level tokens: the last 10% of the text is the validation split.
[[ -f "$out/tokens/meta.json" ]] ||
  "$gaincell" prepare --tokenizer bytes --text "$corpus" --out "$out/tokens" --val-fraction 0.1

# 2. The softmax model (stage 0).
if [[ -f "$out/softmax/training_state.json" ]]; then
  "$gaincell" train --resume "$out/softmax"  # finishes an interrupted run; nothing when complete
else
  "$gaincell" train --data "$out/tokens" --out "$out/softmax" --config gpt2 --n-layer 4 \
    --n-head 2 --n-embd 128 --n-positions 256 --seq-len 256 --batch-size 16 --steps 3000 \
    --lr 2e-3 --min-lr 2e-4 --warmup 100 --eval-interval 500 --eval-iters 8 \
    --checkpoint-interval 500
fi

# 3. Stages A, B (from reset scalers), C; resumable.
"$gaincell" pipeline --init "$out/softmax" --data "$out/tokens" --out "$out/pipeline" \
  --steps-a 1500 --steps-c 1500 --lr-a 1e-3 --lr-c 1e-3 --batch-size 16 --seq-len 256 \
  --warmup 50 --eval-interval 500 --eval-tokens 0 --reset > "$out/pipeline.txt"
cat "$out/pipeline.txt"

# 4. Stage B from stage A's scalers (the HEAD code), and the ablation of the cell (spec §2.7)
#    from reset scalers, each scored on the whole validation split before and after.
adapt() {  # NAME ATTENTION [--reset]
  [[ -f "$out/adapt-$1/adaptation.json" ]] ||
    "$gaincell" adapt --model "$out/pipeline/A" --data "$out/tokens" --out "$out/adapt-$1" \
      --attention "$2" "${@:3}" --eval-tokens 1000000000 > /dev/null
}
adapt head-gaincell gaincell-nonlinear
for cell in gaincell-nonlinear gaincell-x3 gaincell-x5 gaincell-sigmoid gaincell-exp; do
  adapt "reset-$cell" "$cell" --reset
done

# 5. One Markdown summary of the measured numbers.
{
  echo "| model | validation loss (nats/byte) | perplexity |"
  echo "|---|---|---|"
  p="$out/pipeline/pipeline.json"
  row() { printf '| %s | %.4f | %.3f |\n' "$1" "$2" "$(awk "BEGIN{print exp($2)}")"; }
  row "softmax (stage 0)" "$(jq -r '.init.val_loss' "$p")"
  row "linear hardware (stage A)" "$(jq -r '.A.val_loss' "$p")"
  row "nonlinear, stage A scalers" "$(jq -r '.B.unadapted_stage_a_scalers.val_loss' "$p")"
  row "nonlinear, scalers reset" "$(jq -r '.B.unadapted.val_loss' "$p")"
  row "nonlinear, adapted (stage B)" "$(jq -r '.B.val_loss' "$p")"
  row "nonlinear, fine-tuned (stage C)" "$(jq -r '.C.val_loss' "$p")"
  echo
  echo "| adaptation | start | passes | converged | val loss before -> after |"
  echo "|---|---|---|---|---|"
  for d in "$out"/adapt-*; do
    j="$d/adaptation.json"
    printf '| %s | %s | %s | %s | %.4f -> %.4f |\n' "$(jq -r '.attention' "$j")" \
      "$(jq -r 'if .options.reset then "a=1, b=0" else "stage A" end' "$j")" \
      "$(jq -r '.passes | length' "$j")" "$(jq -r '.converged' "$j")" \
      "$(jq -r '.validation.before.val_loss' "$j")" "$(jq -r '.validation.after.val_loss' "$j")"
  done
} > "$out/summary.md"
cat "$out/summary.md"
