#!/usr/bin/env bash
# The paper's recipe end to end on a small Llama-family model (issue 12; docs/model-families.md):
# a byte-level Llama (RMSNorm, RoPE, grouped-query attention with 2 query heads sharing 1 KV head
# of dimension 64, SwiGLU) trained on tinyshakespeare with softmax attention, then stage A (linear
# gain-cell attention, target statistics), stage B (adaptation from reset scalers) and stage C
# (hardware-aware fine-tuning of the nonlinear model). Resumable: rerun to continue.
#   scripts/llama_recipe.sh [OUT_DIR] [STEPS_SOFTMAX] [STEPS_A] [STEPS_C]
# Sized to finish in about a quarter of an hour on a busy 2-core machine (2 layers, context 64).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="${1:-llama-recipe-out}"
steps_softmax="${2:-400}"
steps_a="${3:-150}"
steps_c="${4:-150}"
gaincell="${GAINCELL:-$root/build/gaincell}"
corpus="$root/../shared/data/corpus/tinyshakespeare.txt"
[[ -x "$gaincell" ]] || { echo "llama_recipe: build first (scripts/setup.sh)" >&2; exit 1; }
[[ -f "$corpus" ]] || { echo "llama_recipe: $corpus not found" >&2; exit 1; }
mkdir -p "$out"
cat > "$out/config.json" <<'JSON'
{
  "model_type": "llama",
  "architectures": ["LlamaForCausalLM"],
  "hidden_size": 128,
  "intermediate_size": 256,
  "num_hidden_layers": 2,
  "num_attention_heads": 2,
  "num_key_value_heads": 1,
  "head_dim": 64,
  "max_position_embeddings": 64,
  "vocab_size": 257,
  "rms_norm_eps": 1e-5,
  "rope_theta": 10000.0,
  "hidden_act": "silu",
  "tie_word_embeddings": true,
  "gaincell_tokenizer": "bytes"
}
JSON
[[ -f "$out/tokens/val.bin" ]] ||
  "$gaincell" prepare --tokenizer bytes --text "$corpus" --out "$out/tokens" --val-fraction 0.1
if [[ -f "$out/softmax/config.json" ]]; then
  "$gaincell" train --resume "$out/softmax"
else
  "$gaincell" train --data "$out/tokens" --out "$out/softmax" --config "$out/config.json" \
    --seq-len 64 --batch-size 8 --steps "$steps_softmax" --lr 3e-3 --min-lr 3e-4 --warmup 50 \
    --eval-interval 200 --eval-iters 8 --checkpoint-interval 200
fi
"$gaincell" pipeline --init "$out/softmax" --data "$out/tokens" --out "$out/pipeline" \
  --steps-a "$steps_a" --steps-c "$steps_c" --lr-a 1e-3 --lr-c 1e-3 --batch-size 8 --seq-len 64 \
  --warmup 20 --eval-interval 100 --eval-tokens 8192 --reset | tee "$out/pipeline.txt"
