// GPT-2 byte-level BPE tokenizer (Radford et al. 2019), built from encoder.json and vocab.bpe,
// and a plain byte tokenizer (Tokenizer::bytes()) for character-level models.
//
// encode(): split the bytes with GPT-2's pre-tokenization pattern
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (implemented by hand in pretokenize(); the \p{L}, \p{N}, \s tables are generated from Python's
// `regex` module into unicode_tables.inc), then merge each piece's bytes by rank (vocab.bpe order).
//
// Any byte string is accepted. Bytes that are not part of valid UTF-8 (stray continuation bytes,
// truncated sequences, overlongs, surrogates, > U+10FFFF) each count as one code point that is
// neither letter, number nor whitespace, exactly like Python's 'surrogateescape' decoding used by
// the reference (tests/reference/gpt2_bpe_reference.py). Since every token is a byte string,
// decode(encode(x)) == x for every x.
//
// The text "<|endoftext|>" inside the input is encoded as ordinary text (as GPT-2's encoder.py
// does); the end-of-text id is only inserted explicitly (e.g. by prepare_token_files()).
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace gaincell {

class HfTokenizer;  // hf_tokenizer.h

class Tokenizer {
 public:
  static constexpr int32_t kEndOfText = 50256;  // of the GPT-2 vocabulary
  static constexpr int32_t kBytesEndOfText = 256;

  // The two tokenizations a token directory or a model may use (meta.json "tokenizer", config.json
  // "gaincell_tokenizer"): GPT-2's byte-level BPE, or raw bytes (ids 0..255 are the bytes, 256 is
  // <|endoftext|>; vocabulary 257), for small character-level models where attention carries
  // most of the prediction.
  static constexpr const char* kGpt2Bpe = "gpt2-bpe";
  static constexpr const char* kBytes = "bytes";

  // Reads vocab_dir/encoder.json and vocab_dir/vocab.bpe and validates them (dense unique ids,
  // all 256 byte tokens present, <|endoftext|> = 50256, every merge's parts and result in the
  // vocabulary). Throws gaincell::Error naming the file and the problem.
  static Tokenizer load(const std::filesystem::path& vocab_dir);
  // default_data_dir() / "vocab"; the error says to run scripts/setup.sh.
  static Tokenizer load_default();
  // The byte tokenizer (needs no files).
  static Tokenizer bytes();
  // kGpt2Bpe: load(vocab_dir), or load_default() when vocab_dir is empty; kBytes: bytes(). Throws
  // on another name (a Hugging Face tokenizer's name says to use the model's tokenizer.json).
  static Tokenizer by_name(const std::string& name, const std::filesystem::path& vocab_dir = {});
  // A Hugging Face tokenizer.json (with tokenizer_config.json beside it when present); see
  // hf_tokenizer.h for what is supported. Throws gaincell::Error naming the file and key.
  static Tokenizer load_hf(const std::filesystem::path& tokenizer_json);
  // THE rule for a model's tokenizer: MODEL_DIR/tokenizer.json when it exists, otherwise the
  // tokenizer named in the model's config (config_tokenizer: kGpt2Bpe or kBytes; vocab_dir as in
  // by_name()). Every command that runs a model decides through this function.
  static Tokenizer for_model(const std::filesystem::path& model_dir,
                             const std::string& config_tokenizer,
                             const std::filesystem::path& vocab_dir = {});
  // name() of for_model(model_dir, config_tokenizer) without loading anything (token directories
  // record it; train and adapt compare).
  static std::string name_for_model(const std::filesystem::path& model_dir,
                                    const std::string& config_tokenizer);

  // kGpt2Bpe, kBytes, or "hf:" + a hash of the tokenizer.json (recorded in token directories).
  const char* name() const;
  bool is_hf() const { return hf_ != nullptr; }
  // The Hugging Face tokenizer behind this one, or null (tests reach its pieces and BPE).
  const HfTokenizer* hf() const { return hf_.get(); }
  // The id that separates documents in token files: <|endoftext|> for GPT-2 and bytes, the EOS
  // token (else BOS) of a Hugging Face tokenizer; throws when that defines neither.
  int32_t end_of_text() const;

  // Special tokens, as Hugging Face's tokenizer reports bos_token_id / eos_token_id (nullopt when
  // the tokenizer defines none). GPT-2: both are <|endoftext|> (50256), as in HF's gpt2 tokenizer;
  // bytes: no BOS, EOS = 256. lm-eval's prefix token is BOS if defined, else EOS.
  std::optional<int32_t> bos_token() const;
  std::optional<int32_t> eos_token() const;
  // Whether a model expects BOS in front of each text (tokenizer_config.json add_bos_token, e.g.
  // Llama 2/3). encode() never adds it: callers that feed a model put it in front explicitly.
  bool add_bos() const;

  // Never throws on content. Thread-safe (the word cache is guarded by a mutex). Adds no special
  // tokens (a Hugging Face tokenizer still turns its added tokens' text into their ids).
  std::vector<int32_t> encode(std::string_view text) const;
  // encode() with what the tokenizer puts around one text for a model (BOS for Llama 2, ...), as
  // Hugging Face's tokenizer(text) does; the same as encode() for GPT-2 and bytes.
  std::vector<int32_t> encode_with_special_tokens(std::string_view text) const;
  // Concatenated token bytes; throws gaincell::Error naming the id when one is out of range.
  std::string decode(std::span<const int32_t> ids) const;
  // Bytes of one token (kEndOfText gives "<|endoftext|>"); throws on an out-of-range id.
  std::string token_text(int32_t id) const;
  int32_t vocab_size() const;

  // BPE of one pre-tokenized piece: the fast heap-based merge and the plain loop reference
  // (Python-reference semantics: merge every occurrence of the lowest-ranked pair, left to right).
  std::vector<int32_t> bpe_word(std::string_view piece) const;
  std::vector<int32_t> bpe_word_reference(std::string_view piece) const;

  struct Vocabulary;  // defined in tokenizer.cpp
  struct WordCache;

 private:
  Tokenizer() = default;
  std::shared_ptr<const Vocabulary> vocab_;
  std::shared_ptr<WordCache> cache_;
  std::shared_ptr<const HfTokenizer> hf_;  // set for a Hugging Face tokenizer.json
  bool bytes_only_ = false;
};

// Pre-tokenization of GPT-2 (see above): consecutive, non-empty pieces (views into `text`) that
// cover it exactly. Exposed for tests and benchmarks.
std::vector<std::string_view> pretokenize(std::string_view text);

// Character classes of the pattern, for one Unicode scalar value (spec: Python `regex` semantics).
enum class CharClass : uint8_t { kLetter, kNumber, kSpace, kOther };
CharClass classify_code_point(uint32_t cp);

// Decodes one UTF-8 code point at text[pos]: returns its byte length (1..4) and sets *cp, or
// returns 1 with *cp = kInvalidByte when the byte does not start a valid, shortest-form sequence.
inline constexpr uint32_t kInvalidByte = 0xFFFFFFFFu;
int decode_utf8(std::string_view text, size_t pos, uint32_t* cp);

}  // namespace gaincell
