#include "gaincell/model/tokenizer.h"

#include <algorithm>
#include <array>
#include <limits>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/hf_tokenizer.h"

namespace gaincell {

namespace fs = std::filesystem;

namespace detail {
struct CodePointRange {
  uint32_t lo, hi;
};
#include "gaincell/model/unicode_tables.inc"
}  // namespace detail

// ---------------------------------------------------------------------------------------------
// Unicode: strict UTF-8 decoding and the three character classes of the pattern.

int decode_utf8(std::string_view text, size_t pos, uint32_t* cp) {
  const size_t n = text.size();
  const auto byte = [&](size_t k) { return static_cast<uint8_t>(text[pos + k]); };
  const uint8_t b0 = byte(0);
  *cp = kInvalidByte;
  if (b0 < 0x80) {
    *cp = b0;
    return 1;
  }
  // Lead byte -> sequence length and the allowed range of the second byte (shortest form only,
  // no surrogates, nothing above U+10FFFF: the same sequences Python's strict decoder accepts).
  int length = 0;
  uint8_t lo = 0x80, hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    length = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    length = 3;
    if (b0 == 0xE0) lo = 0xA0;
    if (b0 == 0xED) hi = 0x9F;
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    length = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;
  } else {
    return 1;  // continuation byte, C0/C1 overlong lead, or F5..FF
  }
  if (pos + static_cast<size_t>(length) > n) return 1;
  if (byte(1) < lo || byte(1) > hi) return 1;
  for (int k = 2; k < length; ++k) {
    if ((byte(k) & 0xC0) != 0x80) return 1;
  }
  uint32_t value = b0 & (0x7F >> length);
  for (int k = 1; k < length; ++k) value = (value << 6) | (byte(k) & 0x3F);
  *cp = value;
  return length;
}

namespace {

template <size_t N>
bool in_ranges(const detail::CodePointRange (&ranges)[N], uint32_t cp) {
  const auto* it =
      std::upper_bound(std::begin(ranges), std::end(ranges), cp,
                       [](uint32_t v, const detail::CodePointRange& r) { return v < r.lo; });
  return it != std::begin(ranges) && cp <= (it - 1)->hi;
}

CharClass classify_slow(uint32_t cp) {
  if (cp == kInvalidByte) return CharClass::kOther;
  if (in_ranges(detail::kLetterRanges, cp)) return CharClass::kLetter;
  if (in_ranges(detail::kNumberRanges, cp)) return CharClass::kNumber;
  if (in_ranges(detail::kSpaceRanges, cp)) return CharClass::kSpace;
  return CharClass::kOther;
}

// ASCII is most of the text; look it up in a table built once from the generated ranges.
const std::array<CharClass, 128>& ascii_classes() {
  static const std::array<CharClass, 128> table = [] {
    std::array<CharClass, 128> t{};
    for (uint32_t c = 0; c < 128; ++c) t[c] = classify_slow(c);
    return t;
  }();
  return table;
}

}  // namespace

CharClass classify_code_point(uint32_t cp) {
  if (cp < 128) return ascii_classes()[cp];
  return classify_slow(cp);
}

// ---------------------------------------------------------------------------------------------
// Pre-tokenization: the GPT-2 pattern, alternative by alternative, at one position.

namespace {

struct CodePoint {
  CharClass cls;
  int length;  // bytes
};

CodePoint code_point_at(std::string_view text, size_t pos) {
  const uint8_t b = static_cast<uint8_t>(text[pos]);
  if (b < 0x80) return {ascii_classes()[b], 1};
  uint32_t cp;
  const int length = decode_utf8(text, pos, &cp);
  return {classify_code_point(cp), length};
}

// Bytes from pos while the code points have class `cls`.
size_t run_of_class(std::string_view text, size_t pos, CharClass cls) {
  size_t end = pos;
  while (end < text.size()) {
    const CodePoint c = code_point_at(text, end);
    if (c.cls != cls) break;
    end += static_cast<size_t>(c.length);
  }
  return end - pos;
}

// 's|'t|'re|'ve|'m|'ll|'d (case-sensitive, ASCII): length of the contraction at pos, or 0.
size_t contraction_at(std::string_view text, size_t pos) {
  if (text[pos] != '\'' || pos + 1 >= text.size()) return 0;
  const char c1 = text[pos + 1];
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (pos + 2 >= text.size()) return 0;
  const char c2 = text[pos + 2];
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

// \s+(?!\S)|\s+ at pos (a whitespace code point): the whole run when it ends the text; otherwise
// all but its last code point, which then prefixes the next word (" word"), unless the run is a
// single code point, which \s+ matches alone.
size_t whitespace_at(std::string_view text, size_t pos) {
  size_t end = pos, last_start = pos;
  while (end < text.size()) {
    const CodePoint c = code_point_at(text, end);
    if (c.cls != CharClass::kSpace) break;
    last_start = end;
    end += static_cast<size_t>(c.length);
  }
  if (end == text.size() || last_start == pos) return end - pos;
  return last_start - pos;
}

// Byte length of the piece the GPT-2 pattern matches at pos (pos < text.size(); always > 0).
size_t piece_length_at(std::string_view text, size_t pos) {
  if (const size_t n = contraction_at(text, pos)) return n;
  // " ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+" with the optional leading space.
  if (text[pos] == ' ' && pos + 1 < text.size()) {
    const CodePoint next = code_point_at(text, pos + 1);
    if (next.cls != CharClass::kSpace) return 1 + run_of_class(text, pos + 1, next.cls);
  }
  const CodePoint first = code_point_at(text, pos);
  if (first.cls != CharClass::kSpace) return run_of_class(text, pos, first.cls);
  return whitespace_at(text, pos);
}

template <typename Fn>
void for_each_piece(std::string_view text, Fn&& fn) {
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t length = piece_length_at(text, pos);
    fn(text.substr(pos, length));
    pos += length;
  }
}

}  // namespace

std::vector<std::string_view> pretokenize(std::string_view text) {
  std::vector<std::string_view> pieces;
  for_each_piece(text, [&](std::string_view piece) { pieces.push_back(piece); });
  return pieces;
}

// ---------------------------------------------------------------------------------------------
// Vocabulary: token bytes, byte tokens and ranked merges.

struct Merge {
  int32_t rank;
  int32_t result;
};

struct Tokenizer::Vocabulary {
  std::vector<std::string> token_bytes;        // id -> bytes
  std::array<int32_t, 256> byte_token{};       // byte -> id of its single-byte token
  std::unordered_map<uint64_t, Merge> merges;  // (left id, right id) -> rank and merged id

  const Merge* find_merge(int32_t left, int32_t right) const {
    const auto it = merges.find(pair_key(left, right));
    return it == merges.end() ? nullptr : &it->second;
  }
  static uint64_t pair_key(int32_t left, int32_t right) {
    return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) |
           static_cast<uint32_t>(right);
  }
};

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct Tokenizer::WordCache {
  // Bounded so that a huge input of distinct words cannot grow memory without limit.
  static constexpr size_t kMaxEntries = 1 << 20;
  static constexpr size_t kMaxPieceBytes = 256;
  std::mutex mutex;
  std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> words;
};

namespace {

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes map to themselves, the other 68 bytes to
// U+0100.. in byte order, so that every token is a printable string in encoder.json.
std::array<uint32_t, 256> byte_to_code_point() {
  std::array<uint32_t, 256> map{};
  uint32_t extra = 0;
  for (uint32_t b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    map[b] = printable ? b : 256 + extra++;
  }
  return map;
}

}  // namespace

// Inverse of byte_to_code_point() on an encoder.json / vocab.bpe string; false when a code point
// is not one of the 256 byte symbols.
bool byte_level_symbols_to_bytes(std::string_view symbols, std::string* bytes) {
  // All 256 byte symbols are below U+0144, so a flat table inverts the mapping.
  static constexpr uint32_t kTableSize = 512;
  static const std::array<int16_t, kTableSize> inverse = [] {
    std::array<int16_t, kTableSize> t;
    t.fill(-1);
    const auto forward = byte_to_code_point();
    for (int b = 0; b < 256; ++b) t[forward[static_cast<size_t>(b)]] = static_cast<int16_t>(b);
    return t;
  }();
  bytes->clear();
  for (size_t pos = 0; pos < symbols.size();) {
    uint32_t cp;
    pos += static_cast<size_t>(decode_utf8(symbols, pos, &cp));
    if (cp >= kTableSize || inverse[cp] < 0) return false;
    bytes->push_back(static_cast<char>(inverse[cp]));
  }
  return true;
}

namespace {

void require_file(const fs::path& path) {
  std::error_code ec;
  require(fs::is_regular_file(path, ec),
          "GPT-2 vocabulary file '" + path.string() + "' is missing (run scripts/setup.sh)");
}

std::string quoted(const fs::path& path) {
  std::string s = "'";
  s += path.string();
  s += "'";
  return s;
}

std::string escaped(std::string_view s) {
  return nlohmann::json(std::string(s))
      .dump(-1, ' ', true, nlohmann::json::error_handler_t::replace);
}

// SAX handler for encoder.json, a flat object {"token symbols": id, ...}: no DOM is built, which
// makes loading several times faster (the CLI loads the vocabulary on every start).
class EncoderJsonReader : public nlohmann::json_sax<nlohmann::json> {
 public:
  std::vector<std::pair<std::string, int64_t>> entries;
  std::string error;  // set when the structure is wrong (not a JSON syntax error)

  bool start_object(std::size_t) override { return ++depth_ == 1 || fail("nested object"); }
  bool end_object() override {
    --depth_;
    return true;
  }
  bool key(string_t& k) override {
    key_ = std::move(k);
    return true;
  }
  bool number_integer(number_integer_t v) override { return value(v); }
  bool number_unsigned(number_unsigned_t v) override {
    return value(v > static_cast<number_unsigned_t>(INT64_MAX) ? -1 : static_cast<int64_t>(v));
  }
  bool number_float(number_float_t, const string_t& text) override { return fail(text); }
  bool null() override { return fail("null"); }
  bool boolean(bool) override { return fail("a boolean"); }
  bool string(string_t& v) override { return fail("a string " + escaped(v)); }
  bool binary(binary_t&) override { return fail("binary"); }
  bool start_array(std::size_t) override { return fail("an array"); }
  bool end_array() override { return true; }
  bool parse_error(std::size_t position, const std::string&,
                   const nlohmann::detail::exception& ex) override {
    error = "is not valid JSON (byte " + std::to_string(position) + "): " + ex.what();
    return false;
  }

 private:
  bool value(int64_t v) {
    if (depth_ != 1) return fail("a number outside the top-level object");
    entries.emplace_back(std::move(key_), v);
    return true;
  }
  bool fail(const std::string& what) {
    error = depth_ >= 1 && !key_.empty()
                ? "token " + escaped(key_) + " has " + what + " as id, expected an integer"
                : "must be a JSON object of token -> id, found " + what;
    return false;
  }
  int depth_ = 0;
  std::string key_;
};

// encoder.json: {"token symbols": id, ...}, ids dense in [0, n).
void load_encoder(const fs::path& path, Tokenizer::Vocabulary* vocab,
                  std::unordered_map<std::string, int32_t>* id_of_bytes) {
  require_file(path);
  const std::string file = quoted(path);
  EncoderJsonReader reader;
  const std::string text = read_text_file(path);
  const bool is_object = text.find_first_not_of(" \t\r\n") != std::string::npos &&
                         text[text.find_first_not_of(" \t\r\n")] == '{';
  if (!nlohmann::json::sax_parse(text, &reader) || !is_object) {
    throw Error(file + ": " +
                (reader.error.empty() ? "must be a JSON object of token -> id" : reader.error));
  }
  const size_t n = reader.entries.size();
  require(n > 0, file + " must be a non-empty JSON object of token -> id");
  require(n < static_cast<size_t>(std::numeric_limits<int32_t>::max()),
          file + " has too many tokens");
  vocab->token_bytes.assign(n, {});
  id_of_bytes->reserve(n);
  std::vector<bool> seen(n, false);
  std::string bytes;
  for (const auto& [symbols, value] : reader.entries) {
    // Messages are built only on failure: this loop runs 50,257 times per load.
    if (value < 0 || value >= static_cast<int64_t>(n)) {
      throw Error(file + ": token " + escaped(symbols) + " has id " + std::to_string(value) +
                  ", expected an integer in [0, " + std::to_string(n) + ")");
    }
    const auto id = static_cast<int32_t>(value);
    if (seen[static_cast<size_t>(id)]) {
      throw Error(file + ": id " + std::to_string(id) + " is used twice");
    }
    seen[static_cast<size_t>(id)] = true;
    if (!byte_level_symbols_to_bytes(symbols, &bytes)) {
      throw Error(file + ": token " + escaped(symbols) +
                  " contains a character outside the 256 byte symbols of GPT-2's byte-level BPE");
    }
    if (!id_of_bytes->emplace(bytes, id).second) {
      throw Error(file + ": token " + escaped(symbols) + " appears twice");
    }
    vocab->token_bytes[static_cast<size_t>(id)] = std::move(bytes);
  }
  require(n > static_cast<size_t>(Tokenizer::kEndOfText) &&
              vocab->token_bytes[Tokenizer::kEndOfText] == "<|endoftext|>",
          file + ": id 50256 must be <|endoftext|>");
  for (int b = 0; b < 256; ++b) {
    const auto it = id_of_bytes->find(std::string(1, static_cast<char>(b)));
    require(it != id_of_bytes->end(),
            file + ": no token for byte " + std::to_string(b) + " (byte-level BPE needs all 256)");
    vocab->byte_token[static_cast<size_t>(b)] = it->second;
  }
}

// vocab.bpe: "#version" line, then one merge "left right" per line, by rank.
void load_merges(const fs::path& path, const std::unordered_map<std::string, int32_t>& id_of_bytes,
                 Tokenizer::Vocabulary* vocab) {
  require_file(path);
  const std::string file = quoted(path);
  const std::string text = read_text_file(path);
  size_t line_start = 0, line_number = 0;
  int32_t rank = 0;
  std::string left, right;
  vocab->merges.reserve(static_cast<size_t>(std::count(text.begin(), text.end(), '\n')) + 1);
  while (line_start < text.size()) {
    size_t line_end = text.find('\n', line_start);
    if (line_end == std::string::npos) line_end = text.size();
    std::string_view line(text.data() + line_start, line_end - line_start);
    line_start = line_end + 1;
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_number == 1 && line.starts_with("#"))) continue;
    const auto fail = [&](const std::string& why) {
      return Error(file + " line " + std::to_string(line_number) + ": " + why + ": " +
                   escaped(line));
    };
    const size_t space = line.find(' ');
    if (space == std::string_view::npos || space == 0 || space + 1 >= line.size() ||
        line.find(' ', space + 1) != std::string_view::npos) {
      throw fail("expected two tokens separated by one space");
    }
    if (!byte_level_symbols_to_bytes(line.substr(0, space), &left) ||
        !byte_level_symbols_to_bytes(line.substr(space + 1), &right)) {
      throw fail("character outside the 256 byte symbols");
    }
    const auto left_id = id_of_bytes.find(left), right_id = id_of_bytes.find(right),
               merged_id = id_of_bytes.find(left + right);
    if (left_id == id_of_bytes.end() || right_id == id_of_bytes.end()) {
      throw fail("merge part not in encoder.json");
    }
    if (merged_id == id_of_bytes.end()) throw fail("merge result not in encoder.json");
    // A repeated pair keeps its last rank, like dict(zip(merges, range(n))) in encoder.py.
    vocab->merges.insert_or_assign(
        Tokenizer::Vocabulary::pair_key(left_id->second, right_id->second),
        Merge{rank++, merged_id->second});
  }
  require(rank > 0, file + " contains no merges");
}

}  // namespace

Tokenizer Tokenizer::load(const fs::path& vocab_dir) {
  auto vocab = std::make_shared<Vocabulary>();
  std::unordered_map<std::string, int32_t> id_of_bytes;
  load_encoder(vocab_dir / "encoder.json", vocab.get(), &id_of_bytes);
  load_merges(vocab_dir / "vocab.bpe", id_of_bytes, vocab.get());
  Tokenizer tok;
  tok.vocab_ = std::move(vocab);
  tok.cache_ = std::make_shared<WordCache>();
  return tok;
}

Tokenizer Tokenizer::load_default() {
  const fs::path dir = default_data_dir() / "vocab";
  std::error_code ec;
  require(
      fs::is_regular_file(dir / "encoder.json", ec) && fs::is_regular_file(dir / "vocab.bpe", ec),
      "GPT-2 vocabulary not found in '" + dir.string() +
          "' (encoder.json, vocab.bpe): run scripts/setup.sh, or set GAINCELL_DATA to the "
          "directory holding vocab/");
  return load(dir);
}

Tokenizer Tokenizer::bytes() {
  auto vocab = std::make_shared<Vocabulary>();
  for (int b = 0; b < 256; ++b) {
    vocab->token_bytes.emplace_back(1, static_cast<char>(b));
    vocab->byte_token[static_cast<size_t>(b)] = b;
  }
  vocab->token_bytes.emplace_back("<|endoftext|>");  // id kBytesEndOfText
  Tokenizer tok;
  tok.vocab_ = std::move(vocab);
  tok.cache_ = std::make_shared<WordCache>();
  tok.bytes_only_ = true;
  return tok;
}

Tokenizer Tokenizer::by_name(const std::string& name, const fs::path& vocab_dir) {
  if (name == kBytes) return bytes();
  require(!name.starts_with("hf:"), "tokenizer '" + name +
                                        "' is a Hugging Face tokenizer.json: load it from the "
                                        "model directory (--model DIR) or with --tokenizer FILE");
  require(name == kGpt2Bpe, "unknown tokenizer '" + name + "' (expected '" + std::string(kGpt2Bpe) +
                                "' or '" + kBytes + "')");
  return vocab_dir.empty() ? load_default() : load(vocab_dir);
}

Tokenizer Tokenizer::load_hf(const fs::path& tokenizer_json) {
  Tokenizer tok;
  tok.hf_ = HfTokenizer::load(tokenizer_json);
  return tok;
}

namespace {

// A model directory's tokenizer.json, if it has one.
std::optional<fs::path> model_tokenizer_json(const fs::path& model_dir) {
  std::error_code ec;
  if (model_dir.empty() || !fs::is_regular_file(model_dir / "tokenizer.json", ec)) {
    return std::nullopt;
  }
  return model_dir / "tokenizer.json";
}

}  // namespace

Tokenizer Tokenizer::for_model(const fs::path& model_dir, const std::string& config_tokenizer,
                               const fs::path& vocab_dir) {
  if (const auto file = model_tokenizer_json(model_dir)) return load_hf(*file);
  return by_name(config_tokenizer, vocab_dir);
}

std::string Tokenizer::name_for_model(const fs::path& model_dir,
                                      const std::string& config_tokenizer) {
  if (const auto file = model_tokenizer_json(model_dir)) {
    return hf_tokenizer_name(read_text_file(*file));
  }
  return config_tokenizer;
}

const char* Tokenizer::name() const {
  if (hf_) return hf_->name().c_str();
  return bytes_only_ ? kBytes : kGpt2Bpe;
}

int32_t Tokenizer::end_of_text() const {
  if (hf_) {
    const auto id = hf_->eos_token() ? hf_->eos_token() : hf_->bos_token();
    require(id.has_value(),
            "the tokenizer.json defines no EOS or BOS token (tokenizer_config.json eos_token) to "
            "separate documents");
    return *id;
  }
  return bytes_only_ ? kBytesEndOfText : kEndOfText;
}

std::optional<int32_t> Tokenizer::bos_token() const {
  if (hf_) return hf_->bos_token();
  if (bytes_only_) return std::nullopt;
  return kEndOfText;
}

std::optional<int32_t> Tokenizer::eos_token() const {
  if (hf_) return hf_->eos_token();
  return end_of_text();
}

bool Tokenizer::add_bos() const {
  return hf_ && hf_->add_bos();
}

int32_t Tokenizer::vocab_size() const {
  if (hf_) return hf_->vocab_size();
  return static_cast<int32_t>(vocab_->token_bytes.size());
}

std::string Tokenizer::token_text(int32_t id) const {
  if (hf_) return hf_->token_text(id);
  if (id < 0 || id >= vocab_size()) {
    throw Error("token id " + std::to_string(id) + " out of range [0, " +
                std::to_string(vocab_size()) + ")");
  }
  return vocab_->token_bytes[static_cast<size_t>(id)];
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  if (hf_) return hf_->decode(std::vector<int32_t>(ids.begin(), ids.end()));
  std::string out;
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size()) {
      throw Error("token id " + std::to_string(id) + " at position " + std::to_string(i) +
                  " out of range [0, " + std::to_string(vocab_size()) + ")");
    }
    out += vocab_->token_bytes[static_cast<size_t>(id)];
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Byte-pair merging of one piece.

std::vector<int32_t> Tokenizer::bpe_word_reference(std::string_view piece) const {
  if (hf_) return hf_->bpe_piece_reference(piece);
  std::vector<int32_t> symbols;
  for (const char c : piece) symbols.push_back(vocab_->byte_token[static_cast<uint8_t>(c)]);
  while (symbols.size() > 1) {
    const Merge* best = nullptr;
    int32_t best_left = 0, best_right = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const Merge* m = vocab_->find_merge(symbols[i], symbols[i + 1]);
      if (m && (!best || m->rank < best->rank)) {
        best = m;
        best_left = symbols[i];
        best_right = symbols[i + 1];
      }
    }
    if (!best) break;
    std::vector<int32_t> merged;
    for (size_t i = 0; i < symbols.size();) {
      if (i + 1 < symbols.size() && symbols[i] == best_left && symbols[i + 1] == best_right) {
        merged.push_back(best->result);
        i += 2;
      } else {
        merged.push_back(symbols[i++]);
      }
    }
    symbols = std::move(merged);
  }
  return symbols;
}

// Same result as bpe_word_reference() in O(n log n): the symbols form a linked list, the ranked
// adjacent pairs sit in a min-heap keyed by (rank, position). Each round takes every queued
// occurrence of the lowest rank and merges them left to right before any pair created in the
// round is queued: that is the reference's semantics even for a vocab.bpe whose merges create
// pairs of lower rank than their own (GPT-2's file never does; the random-table test does).
// Stale heap entries are recognised by their ids and skipped.
std::vector<int32_t> Tokenizer::bpe_word(std::string_view piece) const {
  if (hf_) return hf_->bpe_piece(piece);
  const size_t n = piece.size();
  if (n == 0) return {};
  std::vector<int32_t> id(n), prev(n), next(n);
  for (size_t i = 0; i < n; ++i) {
    id[i] = vocab_->byte_token[static_cast<uint8_t>(piece[i])];
    prev[i] = static_cast<int32_t>(i) - 1;
    next[i] = i + 1 < n ? static_cast<int32_t>(i + 1) : -1;
  }
  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto push_pair = [&](int32_t pos) {
    if (pos < 0 || next[pos] < 0) return;
    if (const Merge* m = vocab_->find_merge(id[pos], id[next[pos]])) {
      heap.push({m->rank, pos, id[pos], id[next[pos]]});
    }
  };
  for (size_t i = 0; i + 1 < n; ++i) push_pair(static_cast<int32_t>(i));

  std::vector<Candidate> round;
  std::vector<int32_t> merged_at;
  while (!heap.empty()) {
    const int32_t rank = heap.top().rank;
    round.clear();
    while (!heap.empty() && heap.top().rank == rank) {
      round.push_back(heap.top());  // popped in increasing position
      heap.pop();
    }
    merged_at.clear();
    for (const Candidate& c : round) {
      const int32_t right = next[c.pos];
      // A consumed node has next = -2; a live pair whose ids changed since it was queued is stale.
      if (right < 0 || id[c.pos] != c.left || id[right] != c.right) continue;
      id[c.pos] = vocab_->find_merge(c.left, c.right)->result;
      next[c.pos] = next[right];
      if (next[right] >= 0) prev[next[right]] = c.pos;
      prev[right] = next[right] = -2;  // mark consumed
      id[right] = -1;
      merged_at.push_back(c.pos);
    }
    for (const int32_t pos : merged_at) {
      push_pair(prev[pos]);
      push_pair(pos);
    }
  }
  std::vector<int32_t> out;
  for (int32_t pos = 0; pos >= 0; pos = next[pos]) out.push_back(id[pos]);
  return out;
}

std::vector<int32_t> Tokenizer::encode_with_special_tokens(std::string_view text) const {
  if (hf_) return hf_->encode_with_special_tokens(text);
  return encode(text);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  if (hf_) return hf_->encode(text);
  if (bytes_only_) {
    std::vector<int32_t> bytes(text.size());
    for (size_t i = 0; i < text.size(); ++i) bytes[i] = static_cast<uint8_t>(text[i]);
    return bytes;
  }
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  WordCache& cache = *cache_;
  for_each_piece(text, [&](std::string_view piece) {
    if (piece.size() == 1) {
      ids.push_back(vocab_->byte_token[static_cast<uint8_t>(piece[0])]);
      return;
    }
    if (piece.size() > WordCache::kMaxPieceBytes) {
      const auto word = bpe_word(piece);
      ids.insert(ids.end(), word.begin(), word.end());
      return;
    }
    {
      std::lock_guard<std::mutex> lock(cache.mutex);
      if (const auto it = cache.words.find(piece); it != cache.words.end()) {
        ids.insert(ids.end(), it->second.begin(), it->second.end());
        return;
      }
    }
    auto word = bpe_word(piece);
    ids.insert(ids.end(), word.begin(), word.end());
    std::lock_guard<std::mutex> lock(cache.mutex);
    if (cache.words.size() >= WordCache::kMaxEntries) cache.words.clear();
    cache.words.emplace(std::string(piece), std::move(word));
  });
  return ids;
}

}  // namespace gaincell
