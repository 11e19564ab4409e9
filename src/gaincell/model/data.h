// Token data files and the training-window sampler.
//
// Two file layouts (docs/tokenizers.md, "Token files"):
//  * uint16, headerless (nanoGPT's): a flat array of little-endian uint16 token ids. Written
//    whenever the vocabulary has at most 65536 tokens (GPT-2, bytes, Llama 2, Mistral), so such
//    files stay readable by nanoGPT and numpy.fromfile(dtype=uint16).
//  * uint32, with a 32-byte header, for larger vocabularies (Llama 3: 128256, Qwen2: 151665):
//      bytes 0..7   magic "GCTOKENS"
//      bytes 8..11  format version, uint32 LE (1)
//      bytes 12..15 bytes per token, uint32 LE (4; 2 is also read)
//      bytes 16..23 token count, uint64 LE (the file must hold exactly that many tokens)
//      bytes 24..31 zero (reserved)
//    then the ids, little-endian. The count makes a truncated file an error, not a shorter corpus.
// Readers accept both; a file that starts with the magic is read by its header. prepare writes
// DIR/train.bin, DIR/val.bin and DIR/meta.json (format name, version, dtype, vocabulary, token
// counts, sources), each atomically. Training code takes `--data DIR`.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <vector>

#include "gaincell/model/tokenizer.h"

namespace gaincell {

inline constexpr char kTokenFileMagic[8] = {'G', 'C', 'T', 'O', 'K', 'E', 'N', 'S'};
inline constexpr size_t kTokenFileHeaderBytes = 32;
inline constexpr uint32_t kTokenFileVersion = 1;

// Where the ids of a token file are: after header_bytes (0 or kTokenFileHeaderBytes), count ids
// of token_bytes (2 or 4) each.
struct TokenFileLayout {
  size_t header_bytes = 0;
  int token_bytes = 2;
  size_t count = 0;
};
// The layout of a token file of file_bytes bytes whose first bytes are `head` (at least
// min(file_bytes, kTokenFileHeaderBytes) of them). Throws gaincell::Error naming `name` for a bad
// header (version, token width, reserved bytes), a size that disagrees with the header's count
// (truncated or extended file), or a headerless file of odd size.
TokenFileLayout token_file_layout(const uint8_t* head, size_t file_bytes, const std::string& name);

// A read-only, validated token file (either layout): every token < vocab_size. Memory-mapped
// (the mapping is shared by copies). An empty file is a valid, empty dataset.
class TokenDataset {
 public:
  static TokenDataset open(const std::filesystem::path& bin_file, int32_t vocab_size = 50257);
  size_t size() const;      // number of tokens
  int token_bytes() const;  // 2 or 4
  int32_t operator[](size_t i) const;
  // Tokens [begin, begin + n) as int32 (requires begin + n <= size()).
  std::vector<int32_t> slice(size_t begin, size_t n) const;
  void copy(size_t begin, size_t n, int32_t* out) const;
  const std::filesystem::path& path() const { return path_; }

  struct Mapping;

 private:
  std::shared_ptr<const Mapping> mapping_;
  std::filesystem::path path_;
};

// Seeded sampler of (input, target) windows: x = data[i : i+T], y = data[i+1 : i+T+1], with i
// uniform in [0, size-T-1] (rejection sampling on a splitmix64 stream, so no modulo bias). The
// dataset must outlive the sampler. Requires B >= 1, T >= 1 and size >= T + 1.
class BatchSampler {
 public:
  BatchSampler(const TokenDataset& data, int B, int T, uint64_t seed);
  void next(int32_t* inputs, int32_t* targets);  // B*T each, row-major [B][T]
  // {"kind": "splitmix64", "state": "<16 hex digits>", "B", "T", "tokens"}: the exact RNG state.
  nlohmann::json state() const;
  // Restores a state() result; throws gaincell::Error when it is malformed or was saved for a
  // different B, T or dataset size (a resume would then not be bit-identical).
  void set_state(const nlohmann::json& state);
  // The next window start (advances the RNG); exposed for tests.
  size_t next_start();

 private:
  const TokenDataset* data_;
  int batch_;
  int context_;
  uint64_t rng_state_;
};

// Writes DIR/train.bin, DIR/val.bin and DIR/meta.json (atomic). The validation split is the last
// `val_fraction` (in [0, 1)) of the token stream of the concatenated inputs (documents separated
// by <|endoftext|>). Each text file is one document.
struct PrepareResult {
  size_t train_tokens, val_tokens;
};
PrepareResult prepare_token_files(const Tokenizer& tok,
                                  const std::vector<std::filesystem::path>& texts,
                                  const std::filesystem::path& out_dir, double val_fraction);

struct PrepareOptions {
  double val_fraction = 0.1;
  // Split each file into documents at lines holding a single '%' (the fortune(6) format).
  bool split_fortunes = false;
  // Called with one human-readable progress line per file (e.g. to print on stderr).
  std::function<void(const std::string&)> progress;
};
PrepareResult prepare_token_files(const Tokenizer& tok,
                                  const std::vector<std::filesystem::path>& texts,
                                  const std::filesystem::path& out_dir,
                                  const PrepareOptions& options);

// The demo corpus: the plain-text fortune files of Debian's `fortunes` packages in `dir` (not the
// .dat indexes, not the .u8 links), sorted by name. Throws when there are none.
std::vector<std::filesystem::path> default_corpus_files(
    const std::filesystem::path& dir = "/usr/share/games/fortunes");

// Fortunes of a fortune(6) file: the texts between lines that are exactly "%" (each with its
// trailing newline); empty ones are dropped.
std::vector<std::string_view> split_fortunes(std::string_view text);

// Reads a text input whole; a clear error when it is missing or not a regular file.
std::string read_input_text(const std::filesystem::path& path);

// Bytes per token of the files written for a vocabulary: 2 when every id fits uint16, else 4.
int token_bytes_for_vocab(int64_t vocab_size);
// Writes tokens (atomic): headerless uint16 when vocab_size <= 65536, else the uint32 layout with
// its header. Throws when a token is negative or >= vocab_size.
void write_token_file(const std::filesystem::path& path, const std::vector<int32_t>& tokens,
                      int64_t vocab_size = 65536);

// The tokenizer named in DIR/meta.json (Tokenizer::kGpt2Bpe or kBytes), or "" when DIR has no
// meta.json (token files written by other tools); throws on an unreadable meta.json.
std::string token_dir_tokenizer(const std::filesystem::path& dir);
// Throws, naming both, when DIR's meta.json records another tokenizer than the model's.
void check_token_dir_tokenizer(const std::filesystem::path& dir,
                               const std::string& model_tokenizer);

}  // namespace gaincell
