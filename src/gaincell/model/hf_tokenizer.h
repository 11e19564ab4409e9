// Hugging Face tokenizer.json (+ tokenizer_config.json beside it): the BPE tokenizers of Llama 3,
// Qwen2/3, SmolLM and GPT-2 (byte-level BPE after a regex split) and of Llama 2, TinyLlama and
// Mistral (SentencePiece-style BPE on '▁'-joined text with byte fallback).
//
// encode(text) follows the `tokenizers` library step by step:
//   1. added tokens (tokenizer.json "added_tokens") are cut out of the text, leftmost-longest;
//   2. each remaining segment goes through the normalizer (NFC/NFD/NFKC/NFKD via ICU, Prepend,
//      Replace, Sequence), then the pre-tokenizer (Split with a PCRE2 regex, ByteLevel, Metaspace,
//      Digits, Sequence), then BPE on each piece (merges by rank, one at a time, lowest rank and
//      then leftmost first; ignore_merges; byte_fallback to <0xXX>; unk_token with fuse_unk);
//   3. encode_with_special_tokens() adds what the post-processor (TemplateProcessing) or
//      tokenizer_config.json's add_bos_token / add_eos_token put around a single text.
// decode(ids) runs the decoder chain (ByteLevel, Replace, ByteFallback, Fuse, Strip, Metaspace,
// Sequence) and returns bytes; byte-fallback and byte-level tokens are kept as raw bytes (no
// U+FFFD), so a text cut between two ids of one character still concatenates correctly.
//
// Anything else in a file (another model type, normalizer, pre-tokenizer, decoder, post-processor,
// BPE dropout, subword prefixes, single_word added tokens) is an error naming the file and key.
// Input that is not valid UTF-8 has each bad byte replaced by U+FFFD first (the library only
// accepts strings), so decode(encode(x)) == x holds for valid UTF-8 x that the normalizer keeps.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace gaincell {

class HfTokenizer {
 public:
  // Reads PATH (tokenizer.json) and, when present, tokenizer_config.json in the same directory.
  // Throws gaincell::Error naming the file and the key on anything missing, malformed or
  // unsupported.
  static std::shared_ptr<const HfTokenizer> load(const std::filesystem::path& tokenizer_json);
  ~HfTokenizer();

  // "hf:" followed by 16 hex digits of a hash of tokenizer.json's bytes: token directories record
  // it, so data made with one tokenizer file is not fed to a model with another.
  const std::string& name() const { return name_; }
  int32_t vocab_size() const { return static_cast<int32_t>(token_strings_.size()); }
  std::optional<int32_t> bos_token() const { return bos_; }
  std::optional<int32_t> eos_token() const { return eos_; }
  bool add_bos() const { return !prefix_.empty() && bos_ && prefix_.front() == *bos_; }

  std::vector<int32_t> encode(std::string_view text) const;
  std::vector<int32_t> encode_with_special_tokens(std::string_view text) const;
  // Throws gaincell::Error naming the id (and position) when one is out of range.
  std::string decode(const std::vector<int32_t>& ids) const;
  // The bytes one token adds in running text: the decoder chain without the steps that only act
  // at the start of a text (Strip, Metaspace's prefix space).
  std::string token_text(int32_t id) const;

  // Pieces the normalizer and pre-tokenizer make of one text without added tokens (tests).
  std::vector<std::string> pretokenize(std::string_view text) const;
  // BPE of one piece: the heap-based merge and the plain loop reference (tests).
  std::vector<int32_t> bpe_piece(std::string_view piece) const;
  std::vector<int32_t> bpe_piece_reference(std::string_view piece) const;

  struct Impl;

 private:
  HfTokenizer() = default;
  std::unique_ptr<Impl> impl_;
  std::string name_;
  std::vector<std::string> token_strings_;  // id -> the token as written in tokenizer.json
  std::optional<int32_t> bos_, eos_;
  std::vector<int32_t> prefix_, suffix_;  // around one text, from the post-processor
};

// GPT-2's pre-tokenization pattern (ByteLevel's use_regex), which gaincell::pretokenize()
// implements by hand; the PCRE2 path is tested and benchmarked against it.
inline constexpr const char* kGpt2Pattern =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

// The pieces a Split pre-tokenizer with this PCRE2 pattern and behavior "Isolated" makes of
// `text` (valid UTF-8): matches and the text between them. Throws on a bad pattern.
std::vector<std::string> regex_split(const std::string& pattern, std::string_view text);

// HfTokenizer::name() of a tokenizer.json with these bytes.
std::string hf_tokenizer_name(std::string_view tokenizer_json_bytes);

// `text` with every byte that does not start a valid UTF-8 sequence replaced by U+FFFD.
std::string sanitize_utf8(std::string_view text);

// GPT-2's byte-level symbols (bytes_to_unicode()) -> bytes; false when a character is not one
// of the 256 symbols. Shared by encoder.json/vocab.bpe and byte-level tokenizer.json files.
bool byte_level_symbols_to_bytes(std::string_view symbols, std::string* bytes);

}  // namespace gaincell
