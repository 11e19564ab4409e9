#!/usr/bin/env bash
# Regenerates tests/fixtures/hf_tokenizer_{llama3,llama2,qwen3}.json: the ids that the independent
# JavaScript implementation @lenml/tokenizers computes for tests/reference/hf_tokenizer_corpus.json
# with the tokenizer files that scripts/setup.sh installs in data/tokenizers/. Needs node and npm,
# only here (never at build or test time).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
data="${GAINCELL_DATA:-$root/data}/tokenizers"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm init -y >/dev/null && npm install --silent --no-audit --no-fund @lenml/tokenizers@3.7.2)
for name in llama3 llama2 qwen3; do
  [ -f "$data/$name/tokenizer.json" ] || { echo "missing $data/$name (run scripts/setup.sh)" >&2; exit 1; }
  node "$root/tests/reference/gen_hf_tokenizer_fixtures.mjs" \
    "$tmp/node_modules/@lenml/tokenizers/dist/main.mjs" "$data/$name" "$name" \
    "$root/tests/reference/hf_tokenizer_corpus.json" "$root/tests/fixtures/hf_tokenizer_$name.json"
done
