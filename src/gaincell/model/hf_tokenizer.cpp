#include "gaincell/model/hf_tokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <unicode/unorm2.h>
#include <unicode/ustring.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <functional>
#include <mutex>
#include <nlohmann/json.hpp>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/tokenizer.h"

namespace gaincell {

namespace fs = std::filesystem;
using nlohmann::json;

// ---------------------------------------------------------------------------------------------
// UTF-8 helpers.

std::string sanitize_utf8(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t pos = 0; pos < text.size();) {
    uint32_t cp;
    const int length = decode_utf8(text, pos, &cp);
    if (cp == kInvalidByte) {
      out += "\xEF\xBF\xBD";  // U+FFFD
    } else {
      out.append(text.substr(pos, static_cast<size_t>(length)));
    }
    pos += static_cast<size_t>(length);
  }
  return out;
}

namespace {

bool is_valid_utf8(std::string_view text) {
  for (size_t pos = 0; pos < text.size();) {
    if (static_cast<uint8_t>(text[pos]) < 0x80) {
      ++pos;
      continue;
    }
    uint32_t cp;
    pos += static_cast<size_t>(decode_utf8(text, pos, &cp));
    if (cp == kInvalidByte) return false;
  }
  return true;
}

bool is_ascii(std::string_view text) {
  return std::all_of(text.begin(), text.end(), [](char c) { return (c & 0x80) == 0; });
}

size_t utf8_length_at(std::string_view text, size_t pos) {
  uint32_t cp;
  return static_cast<size_t>(decode_utf8(text, pos, &cp));
}

std::string replace_all(std::string_view text, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(text);
  std::string out;
  size_t pos = 0;
  for (size_t hit; (hit = text.find(from, pos)) != std::string_view::npos;
       pos = hit + from.size()) {
    out.append(text.substr(pos, hit - pos));
    out.append(to);
  }
  out.append(text.substr(pos));
  return out;
}

// ---------------------------------------------------------------------------------------------
// Errors name the file and the key.

struct Where {
  std::string file;  // quoted path
  Error error(const std::string& key, const std::string& what) const {
    return Error(file + ": '" + key + "' " + what);
  }
  Error unsupported(const std::string& key, const std::string& type) const {
    return Error(file + ": '" + key + "' is \"" + type +
                 "\", which gaincell does not support (see docs/tokenizers.md)");
  }
  const json& member(const json& object, const std::string& key, const std::string& path) const {
    if (!object.is_object() || !object.contains(key)) throw error(path, "is missing");
    return object[key];
  }
  std::string string(const json& object, const std::string& key, const std::string& path) const {
    const json& v = member(object, key, path);
    if (!v.is_string()) throw error(path, "must be a string");
    return v.get<std::string>();
  }
  bool flag(const json& object, const std::string& key, const std::string& path,
            bool fallback) const {
    if (!object.contains(key) || object[key].is_null()) return fallback;
    if (!object[key].is_boolean()) throw error(path, "must be true or false");
    return object[key].get<bool>();
  }
};

// ---------------------------------------------------------------------------------------------
// PCRE2: the patterns of tokenizer.json (Oniguruma syntax in the Rust library) with UTF and UCP,
// so that \s, \p{L}, \p{N} and look-ahead mean what they mean there.

class Regex {
 public:
  Regex(const std::string& pattern, bool literal, const Where& where, const std::string& key) {
    int error_code = 0;
    PCRE2_SIZE error_offset = 0;
    const uint32_t options = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0u);
    pcre2_code* code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                                     options, &error_code, &error_offset, nullptr);
    if (!code) {
      std::array<PCRE2_UCHAR, 256> message{};
      pcre2_get_error_message(error_code, message.data(), message.size());
      throw where.error(key, "is not a regular expression PCRE2 accepts (at offset " +
                                 std::to_string(error_offset) +
                                 "): " + reinterpret_cast<const char*>(message.data()));
    }
    code_.reset(code, pcre2_code_free);
    // JIT when available (several times faster); pcre2_match() falls back by itself otherwise.
    pcre2_jit_compile(code, PCRE2_JIT_COMPLETE);
  }

  // fn(begin, end) for each non-empty, non-overlapping match, left to right. `text` must be valid
  // UTF-8 (callers sanitize first).
  template <typename Fn>
  void for_each_match(std::string_view text, Fn&& fn) const {
    std::unique_ptr<pcre2_match_data, decltype(&pcre2_match_data_free)> data(
        pcre2_match_data_create_from_pattern(code_.get(), nullptr), pcre2_match_data_free);
    size_t start = 0;
    while (start < text.size()) {
      int rc = match(text, start, PCRE2_NO_UTF_CHECK, data.get());
      // A very long run can exhaust the JIT stack; the interpreter keeps its state on the heap.
      if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = match(text, start, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, data.get());
      }
      if (rc == PCRE2_ERROR_NOMATCH) return;
      if (rc < 0) {
        std::array<PCRE2_UCHAR, 256> message{};
        pcre2_get_error_message(rc, message.data(), message.size());
        throw Error(std::string("tokenizer regex failed: ") +
                    reinterpret_cast<const char*>(message.data()));
      }
      const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(data.get());
      const size_t begin = ovector[0], end = ovector[1];
      if (end == begin) {  // an empty match yields no piece; move on by one character
        if (begin >= text.size()) return;
        start = begin + utf8_length_at(text, begin);
        continue;
      }
      fn(begin, end);
      start = end;
    }
  }

 private:
  int match(std::string_view text, size_t start, uint32_t options, pcre2_match_data* data) const {
    return pcre2_match(code_.get(), reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(), start,
                       options, data, nullptr);
  }
  std::shared_ptr<pcre2_code> code_;
};

// ---------------------------------------------------------------------------------------------
// Normalizers (text -> text), pre-tokenizers (pieces -> pieces), decoders (tokens -> tokens).

using Normalizer = std::function<std::string(std::string)>;

struct Piece {
  std::string text;
  bool at_text_start;  // the piece begins the whole input (Metaspace's prepend_scheme "first")
};
using PreTokenizer = std::function<void(std::vector<Piece>&)>;
using Decoder = std::function<void(std::vector<std::string>&, bool at_start)>;

std::string icu_normalize(const std::string& text, const UNormalizer2* normalizer) {
  if (is_ascii(text)) return text;  // ASCII is invariant under all four forms
  UErrorCode status = U_ZERO_ERROR;
  int32_t length16 = 0;
  std::u16string utf16(text.size() + 1, u'\0');
  u_strFromUTF8(reinterpret_cast<UChar*>(utf16.data()), static_cast<int32_t>(utf16.size()),
                &length16, text.data(), static_cast<int32_t>(text.size()), &status);
  require(U_SUCCESS(status), "tokenizer normalizer: UTF-8 to UTF-16 conversion failed");
  utf16.resize(static_cast<size_t>(length16));
  std::u16string normalized(utf16.size() * 4 + 16, u'\0');
  const int32_t n = unorm2_normalize(normalizer, reinterpret_cast<const UChar*>(utf16.data()),
                                     length16, reinterpret_cast<UChar*>(normalized.data()),
                                     static_cast<int32_t>(normalized.size()), &status);
  require(U_SUCCESS(status), "tokenizer normalizer: ICU normalization failed");
  std::string out(static_cast<size_t>(n) * 3 + 1, '\0');
  int32_t length8 = 0;
  u_strToUTF8(out.data(), static_cast<int32_t>(out.size()), &length8,
              reinterpret_cast<const UChar*>(normalized.data()), n, &status);
  require(U_SUCCESS(status), "tokenizer normalizer: UTF-16 to UTF-8 conversion failed");
  out.resize(static_cast<size_t>(length8));
  return out;
}

const UNormalizer2* icu_instance(const std::string& type) {
  UErrorCode status = U_ZERO_ERROR;
  const UNormalizer2* n = type == "NFC"    ? unorm2_getNFCInstance(&status)
                          : type == "NFD"  ? unorm2_getNFDInstance(&status)
                          : type == "NFKC" ? unorm2_getNFKCInstance(&status)
                                           : unorm2_getNFKDInstance(&status);
  require(U_SUCCESS(status) && n, "ICU has no " + type + " normalizer");
  return n;
}

// A Replace/Split "pattern": {"String": s} or {"Regex": r}.
struct Pattern {
  std::string literal;
  std::shared_ptr<Regex> regex;  // null for a literal
};

Pattern parse_pattern(const json& j, const Where& where, const std::string& key) {
  if (j.is_object() && j.contains("String") && j["String"].is_string()) {
    return {j["String"].get<std::string>(), nullptr};
  }
  if (j.is_object() && j.contains("Regex") && j["Regex"].is_string()) {
    return {"", std::make_shared<Regex>(j["Regex"].get<std::string>(), false, where, key)};
  }
  throw where.error(key, "must be {\"String\": ...} or {\"Regex\": ...}");
}

// [begin, end) ranges of the pattern's matches in text.
std::vector<std::pair<size_t, size_t>> find_matches(const Pattern& p, std::string_view text) {
  std::vector<std::pair<size_t, size_t>> matches;
  if (p.regex) {
    p.regex->for_each_match(text, [&](size_t b, size_t e) { matches.emplace_back(b, e); });
  } else if (!p.literal.empty()) {
    for (size_t hit = text.find(p.literal); hit != std::string_view::npos;
         hit = text.find(p.literal, hit + p.literal.size())) {
      matches.emplace_back(hit, hit + p.literal.size());
    }
  }
  return matches;
}

std::string replace_matches(const Pattern& p, std::string_view text, std::string_view content) {
  if (!p.regex) return replace_all(text, p.literal, content);
  std::string out;
  size_t pos = 0;
  for (const auto& [b, e] : find_matches(p, text)) {
    out.append(text.substr(pos, b - pos));
    out.append(content);
    pos = e;
  }
  out.append(text.substr(pos));
  return out;
}

Normalizer parse_normalizer(const json& j, const Where& where, const std::string& key) {
  if (j.is_null()) return nullptr;
  const std::string type = where.string(j, "type", key + ".type");
  if (type == "Sequence") {
    const json& list = where.member(j, "normalizers", key + ".normalizers");
    if (!list.is_array()) throw where.error(key + ".normalizers", "must be an array");
    std::vector<Normalizer> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto n =
              parse_normalizer(list[i], where, key + ".normalizers[" + std::to_string(i) + "]"))
        steps.push_back(std::move(n));
    }
    return [steps](std::string text) {
      for (const auto& step : steps) text = step(std::move(text));
      return text;
    };
  }
  if (type == "NFC" || type == "NFD" || type == "NFKC" || type == "NFKD") {
    const UNormalizer2* n = icu_instance(type);
    return [n](std::string text) { return icu_normalize(text, n); };
  }
  if (type == "Prepend") {
    const std::string prepend = where.string(j, "prepend", key + ".prepend");
    return [prepend](std::string text) { return text.empty() ? text : prepend + text; };
  }
  if (type == "Replace") {
    const Pattern pattern =
        parse_pattern(where.member(j, "pattern", key + ".pattern"), where, key + ".pattern");
    const std::string content = where.string(j, "content", key + ".content");
    return [pattern, content](std::string text) { return replace_matches(pattern, text, content); };
  }
  throw where.unsupported(key + ".type", type);
}

// Split behaviours of the `tokenizers` library, on the ranges of one piece.
std::vector<Piece> split_piece(const Piece& piece, const Pattern& pattern,
                               const std::string& behavior, bool invert) {
  struct Part {
    size_t begin, end;
    bool matched;
  };
  std::vector<Part> parts;
  size_t pos = 0;
  for (const auto& [b, e] : find_matches(pattern, piece.text)) {
    if (b > pos) parts.push_back({pos, b, invert});
    parts.push_back({b, e, !invert});
    pos = e;
  }
  if (pos < piece.text.size()) parts.push_back({pos, piece.text.size(), invert});

  std::vector<std::pair<size_t, size_t>> ranges;
  if (behavior == "Isolated") {
    for (const Part& p : parts) ranges.emplace_back(p.begin, p.end);
  } else if (behavior == "Removed") {
    for (const Part& p : parts)
      if (!p.matched) ranges.emplace_back(p.begin, p.end);
  } else if (behavior == "MergedWithPrevious") {
    for (const Part& p : parts) {
      if (p.matched && !ranges.empty()) {
        ranges.back().second = p.end;
      } else {
        ranges.emplace_back(p.begin, p.end);
      }
    }
  } else if (behavior == "MergedWithNext") {
    bool previous_matched = false;
    for (const Part& p : parts) {
      if (previous_matched) {
        ranges.back().second = p.end;
      } else {
        ranges.emplace_back(p.begin, p.end);
      }
      previous_matched = p.matched;
    }
  } else {  // "Contiguous"
    bool previous_matched = false;
    for (size_t i = 0; i < parts.size(); ++i) {
      if (i > 0 && parts[i].matched == previous_matched) {
        ranges.back().second = parts[i].end;
      } else {
        ranges.emplace_back(parts[i].begin, parts[i].end);
      }
      previous_matched = parts[i].matched;
    }
  }
  std::vector<Piece> out;
  for (const auto& [b, e] : ranges) {
    if (e > b) out.push_back({piece.text.substr(b, e - b), piece.at_text_start && b == 0});
  }
  return out;
}

PreTokenizer splitting(Pattern pattern, std::string behavior, bool invert) {
  return [pattern = std::move(pattern), behavior = std::move(behavior),
          invert](std::vector<Piece>& pieces) {
    std::vector<Piece> out;
    for (const Piece& p : pieces) {
      auto parts = split_piece(p, pattern, behavior, invert);
      std::move(parts.begin(), parts.end(), std::back_inserter(out));
    }
    pieces = std::move(out);
  };
}

struct PreTokenizerInfo {
  bool byte_level = false;  // a ByteLevel step: BPE runs on bytes
};

PreTokenizer parse_pre_tokenizer(const json& j, const Where& where, const std::string& key,
                                 PreTokenizerInfo* info) {
  if (j.is_null()) return nullptr;
  const std::string type = where.string(j, "type", key + ".type");
  if (type == "Sequence") {
    const json& list = where.member(j, "pretokenizers", key + ".pretokenizers");
    if (!list.is_array()) throw where.error(key + ".pretokenizers", "must be an array");
    std::vector<PreTokenizer> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto p = parse_pre_tokenizer(list[i], where,
                                       key + ".pretokenizers[" + std::to_string(i) + "]", info))
        steps.push_back(std::move(p));
    }
    return [steps](std::vector<Piece>& pieces) {
      for (const auto& step : steps) step(pieces);
    };
  }
  if (type == "Split") {
    const Pattern pattern =
        parse_pattern(where.member(j, "pattern", key + ".pattern"), where, key + ".pattern");
    const std::string behavior = where.string(j, "behavior", key + ".behavior");
    if (behavior != "Isolated" && behavior != "Removed" && behavior != "MergedWithPrevious" &&
        behavior != "MergedWithNext" && behavior != "Contiguous") {
      throw where.unsupported(key + ".behavior", behavior);
    }
    return splitting(pattern, behavior, where.flag(j, "invert", key + ".invert", false));
  }
  if (type == "Digits") {
    const bool individual = where.flag(j, "individual_digits", key + ".individual_digits", false);
    Pattern digits{"",
                   std::make_shared<Regex>(individual ? "\\p{N}" : "\\p{N}+", false, where, key)};
    return splitting(digits, "Isolated", false);
  }
  if (type == "ByteLevel") {
    info->byte_level = true;
    const bool prefix_space = where.flag(j, "add_prefix_space", key + ".add_prefix_space", true);
    const bool use_regex = where.flag(j, "use_regex", key + ".use_regex", true);
    return [prefix_space, use_regex](std::vector<Piece>& pieces) {
      std::vector<Piece> out;
      for (Piece& p : pieces) {
        if (prefix_space && !p.text.starts_with(' ')) p.text.insert(0, 1, ' ');
        if (!use_regex) {
          out.push_back(std::move(p));
          continue;
        }
        // GPT-2's pattern, by the hand-written matcher (tested against PCRE2 on the pattern).
        bool first = p.at_text_start;
        for (const std::string_view s : gaincell::pretokenize(p.text)) {
          out.push_back({std::string(s), first});
          first = false;
        }
      }
      pieces = std::move(out);
    };
  }
  if (type == "Metaspace") {
    const std::string replacement = where.string(j, "replacement", key + ".replacement");
    std::string scheme = "always";
    if (j.contains("prepend_scheme")) {
      scheme = where.string(j, "prepend_scheme", key + ".prepend_scheme");
    } else if (!where.flag(j, "add_prefix_space", key + ".add_prefix_space", true)) {
      scheme = "never";
    }
    if (scheme != "always" && scheme != "first" && scheme != "never") {
      throw where.unsupported(key + ".prepend_scheme", scheme);
    }
    const bool split = where.flag(j, "split", key + ".split", true);
    return [replacement, scheme, split](std::vector<Piece>& pieces) {
      std::vector<Piece> out;
      for (Piece& p : pieces) {
        p.text = replace_all(p.text, " ", replacement);
        const bool prepend = scheme == "always" || (scheme == "first" && p.at_text_start);
        if (prepend && !p.text.starts_with(replacement)) p.text.insert(0, replacement);
        if (!split) {
          out.push_back(std::move(p));
          continue;
        }
        auto parts = split_piece(p, Pattern{replacement, nullptr}, "MergedWithNext", false);
        std::move(parts.begin(), parts.end(), std::back_inserter(out));
      }
      pieces = std::move(out);
    };
  }
  throw where.unsupported(key + ".type", type);
}

Decoder parse_decoder(const json& j, const Where& where, const std::string& key,
                      const std::unordered_set<std::string>* added_contents) {
  if (j.is_null()) return nullptr;
  const std::string type = where.string(j, "type", key + ".type");
  if (type == "Sequence") {
    const json& list = where.member(j, "decoders", key + ".decoders");
    if (!list.is_array()) throw where.error(key + ".decoders", "must be an array");
    std::vector<Decoder> steps;
    for (size_t i = 0; i < list.size(); ++i) {
      if (auto d = parse_decoder(list[i], where, key + ".decoders[" + std::to_string(i) + "]",
                                 added_contents))
        steps.push_back(std::move(d));
    }
    return [steps](std::vector<std::string>& tokens, bool at_start) {
      for (const auto& step : steps) step(tokens, at_start);
    };
  }
  if (type == "ByteLevel") {
    // Byte symbols back to bytes; added tokens, and tokens with a character that is not a byte
    // symbol, are kept as they are.
    return [added_contents](std::vector<std::string>& tokens, bool) {
      std::string bytes;
      for (std::string& t : tokens) {
        if (added_contents->contains(t)) continue;
        if (byte_level_symbols_to_bytes(t, &bytes)) t = bytes;
      }
    };
  }
  if (type == "Replace") {
    const Pattern pattern =
        parse_pattern(where.member(j, "pattern", key + ".pattern"), where, key + ".pattern");
    const std::string content = where.string(j, "content", key + ".content");
    return [pattern, content](std::vector<std::string>& tokens, bool) {
      for (std::string& t : tokens) t = replace_matches(pattern, t, content);
    };
  }
  if (type == "ByteFallback") {
    return [](std::vector<std::string>& tokens, bool) {
      for (std::string& t : tokens) {
        if (t.size() == 6 && t.starts_with("<0x") && t.back() == '>' &&
            std::isxdigit(static_cast<unsigned char>(t[3])) &&
            std::isxdigit(static_cast<unsigned char>(t[4]))) {
          t = std::string(1, static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
        }
      }
    };
  }
  if (type == "Fuse") {
    return [](std::vector<std::string>& tokens, bool) {
      std::string all;
      for (const std::string& t : tokens) all += t;
      tokens.assign(1, std::move(all));
    };
  }
  if (type == "Strip") {
    const std::string content = where.string(j, "content", key + ".content");
    const json& start = where.member(j, "start", key + ".start");
    const json& stop = where.member(j, "stop", key + ".stop");
    if (!start.is_number_unsigned() || !stop.is_number_unsigned()) {
      throw where.error(key + ".start/stop", "must be non-negative integers");
    }
    const size_t n_start = start.get<size_t>(), n_stop = stop.get<size_t>();
    // Strips at the start of a text only: token_text() of one token in running text keeps it.
    return [content, n_start, n_stop](std::vector<std::string>& tokens, bool at_start) {
      if (!at_start || content.empty()) return;
      for (std::string& t : tokens) {
        for (size_t k = 0; k < n_start && t.starts_with(content); ++k) t.erase(0, content.size());
        for (size_t k = 0; k < n_stop && t.ends_with(content); ++k)
          t.resize(t.size() - content.size());
      }
    };
  }
  if (type == "Metaspace") {
    const std::string replacement = where.string(j, "replacement", key + ".replacement");
    bool strip_prefix = where.flag(j, "add_prefix_space", key + ".add_prefix_space", true);
    if (j.contains("prepend_scheme")) {
      strip_prefix = where.string(j, "prepend_scheme", key + ".prepend_scheme") != "never";
    }
    return [replacement, strip_prefix](std::vector<std::string>& tokens, bool at_start) {
      for (size_t i = 0; i < tokens.size(); ++i) {
        tokens[i] = replace_all(tokens[i], replacement, " ");
        if (i == 0 && at_start && strip_prefix && tokens[i].starts_with(' ')) tokens[i].erase(0, 1);
      }
    };
  }
  throw where.unsupported(key + ".type", type);
}

struct Merge {
  int32_t rank;
  int32_t result;
};

uint64_t pair_key(int32_t left, int32_t right) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32) | static_cast<uint32_t>(right);
}

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using IdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

uint64_t fnv1a(std::string_view bytes) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (const char c : bytes) {
    h ^= static_cast<uint8_t>(c);
    h *= 0x100000001B3ull;
  }
  return h;
}

}  // namespace

std::vector<std::string> regex_split(const std::string& pattern, std::string_view text) {
  const Pattern p{"", std::make_shared<Regex>(pattern, false, Where{"regex_split"}, "pattern")};
  std::vector<std::string> out;
  for (Piece& piece : split_piece({std::string(text), true}, p, "Isolated", false)) {
    out.push_back(std::move(piece.text));
  }
  return out;
}

std::string hf_tokenizer_name(std::string_view tokenizer_json_bytes) {
  char hash[17];
  std::snprintf(hash, sizeof hash, "%016llx",
                static_cast<unsigned long long>(fnv1a(tokenizer_json_bytes)));
  return std::string("hf:") + hash;
}

// ---------------------------------------------------------------------------------------------

struct HfTokenizer::Impl {
  Normalizer normalizer;
  PreTokenizer pre_tokenizer;
  Decoder decoder;

  // BPE model. In byte-level mode the pieces are bytes and `id_of` is keyed by token bytes;
  // otherwise by the token's string.
  bool byte_level = false, byte_fallback = false, fuse_unk = false, ignore_merges = false;
  std::optional<int32_t> unk;
  IdMap id_of;
  std::array<int32_t, 256> byte_token{};  // byte-level: byte -> id; fallback: <0xXX> -> id or -1
  std::unordered_map<uint64_t, Merge> merges;

  struct Added {
    std::string content;
    int32_t id;
    bool lstrip, rstrip;
  };
  std::vector<Added> added;
  std::array<std::vector<size_t>, 256> added_by_first_byte;  // longest first
  std::unordered_set<std::string> added_contents;

  static constexpr size_t kMaxCacheEntries = 1 << 20;
  static constexpr size_t kMaxCachedPieceBytes = 256;
  mutable std::mutex cache_mutex;
  mutable std::unordered_map<std::string, std::vector<int32_t>, StringHash, std::equal_to<>> cache;

  const Merge* find_merge(int32_t left, int32_t right) const {
    const auto it = merges.find(pair_key(left, right));
    return it == merges.end() ? nullptr : &it->second;
  }

  // Initial symbols of a piece: bytes, or characters with byte fallback and unknown tokens.
  std::vector<int32_t> initial_symbols(std::string_view piece) const {
    std::vector<int32_t> ids;
    ids.reserve(piece.size());
    if (byte_level) {
      for (const char c : piece) ids.push_back(byte_token[static_cast<uint8_t>(c)]);
      return ids;
    }
    bool pending_unk = false;
    const auto flush_unk = [&] {
      if (pending_unk) ids.push_back(*unk);
      pending_unk = false;
    };
    for (size_t pos = 0; pos < piece.size();) {
      const size_t length = utf8_length_at(piece, pos);
      const std::string_view ch = piece.substr(pos, length);
      pos += length;
      if (const auto it = id_of.find(ch); it != id_of.end()) {
        flush_unk();
        ids.push_back(it->second);
        continue;
      }
      if (byte_fallback && std::all_of(ch.begin(), ch.end(), [&](char b) {
            return byte_token[static_cast<uint8_t>(b)] >= 0;
          })) {
        flush_unk();
        for (const char b : ch) ids.push_back(byte_token[static_cast<uint8_t>(b)]);
        continue;
      }
      if (!unk) continue;  // the library drops a character it cannot represent
      if (!fuse_unk) flush_unk();
      pending_unk = true;
    }
    flush_unk();
    return ids;
  }

  std::vector<int32_t> bpe(std::string_view piece) const;
  std::vector<int32_t> bpe_reference(std::string_view piece) const;
  std::vector<int32_t> bpe_cached(std::string_view piece) const;
};

HfTokenizer::~HfTokenizer() = default;

// The `tokenizers` library's Word::merge_all: a min-heap of (rank, position); the lowest-ranked
// pair merges first, ties go to the leftmost, and the pairs a merge creates join the heap at once.
// Stale entries (a side merged away or changed) are recognised by their ids and skipped.
std::vector<int32_t> HfTokenizer::Impl::bpe(std::string_view piece) const {
  if (ignore_merges) {
    if (const auto it = id_of.find(piece); it != id_of.end()) return {it->second};
  }
  std::vector<int32_t> id = initial_symbols(piece);
  const auto n = static_cast<int32_t>(id.size());
  if (n < 2) return id;
  std::vector<int32_t> prev(static_cast<size_t>(n)), next(static_cast<size_t>(n));
  for (int32_t i = 0; i < n; ++i) {
    prev[static_cast<size_t>(i)] = i - 1;
    next[static_cast<size_t>(i)] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank, pos, left, right;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto at = [](std::vector<int32_t>& v, int32_t i) -> int32_t& {
    return v[static_cast<size_t>(i)];
  };
  const auto push_pair = [&](int32_t pos) {
    if (pos < 0 || at(next, pos) < 0) return;
    if (const Merge* m = find_merge(at(id, pos), at(id, at(next, pos)))) {
      heap.push({m->rank, pos, at(id, pos), at(id, at(next, pos))});
    }
  };
  for (int32_t i = 0; i + 1 < n; ++i) push_pair(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    const int32_t right = at(next, c.pos);
    if (right < 0 || at(id, c.pos) != c.left || at(id, right) != c.right) continue;
    at(id, c.pos) = find_merge(c.left, c.right)->result;
    at(next, c.pos) = at(next, right);
    if (at(next, right) >= 0) at(prev, at(next, right)) = c.pos;
    at(prev, right) = at(next, right) = -2;
    at(id, right) = -1;
    push_pair(at(prev, c.pos));
    push_pair(c.pos);
  }
  std::vector<int32_t> out;
  for (int32_t pos = 0; pos >= 0; pos = at(next, pos)) out.push_back(at(id, pos));
  return out;
}

// Plain loop: merge the lowest-ranked (then leftmost) adjacent pair until none is left.
std::vector<int32_t> HfTokenizer::Impl::bpe_reference(std::string_view piece) const {
  if (ignore_merges) {
    if (const auto it = id_of.find(piece); it != id_of.end()) return {it->second};
  }
  std::vector<int32_t> symbols = initial_symbols(piece);
  for (;;) {
    const Merge* best = nullptr;
    size_t best_pos = 0;
    for (size_t i = 0; i + 1 < symbols.size(); ++i) {
      const Merge* m = find_merge(symbols[i], symbols[i + 1]);
      if (m && (!best || m->rank < best->rank)) {
        best = m;
        best_pos = i;
      }
    }
    if (!best) return symbols;
    symbols[best_pos] = best->result;
    symbols.erase(symbols.begin() + static_cast<long>(best_pos) + 1);
  }
}

std::vector<int32_t> HfTokenizer::Impl::bpe_cached(std::string_view piece) const {
  if (piece.size() > kMaxCachedPieceBytes) return bpe(piece);
  {
    std::lock_guard<std::mutex> lock(cache_mutex);
    if (const auto it = cache.find(piece); it != cache.end()) return it->second;
  }
  std::vector<int32_t> ids = bpe(piece);
  std::lock_guard<std::mutex> lock(cache_mutex);
  if (cache.size() >= kMaxCacheEntries) cache.clear();
  cache.emplace(std::string(piece), ids);
  return ids;
}

// ---------------------------------------------------------------------------------------------
// Loading.

namespace {

// tokenizer_config.json's bos_token / eos_token: a string, null, or {"content": ...}.
std::optional<std::string> config_token(const json& config, const std::string& key,
                                        const Where& where) {
  if (!config.contains(key) || config[key].is_null()) return std::nullopt;
  const json& v = config[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_object() && v.contains("content") && v["content"].is_string()) {
    return v["content"].get<std::string>();
  }
  throw where.error(key, "must be a token string, {\"content\": ...} or null");
}

// The ids the post-processor puts before and after a single text.
void parse_post_processor(
    const json& j, const Where& where, const std::string& key,
    const std::function<int32_t(const std::string&, const std::string&)>& id_of_token,
    std::vector<int32_t>* prefix, std::vector<int32_t>* suffix) {
  if (j.is_null()) return;
  const std::string type = where.string(j, "type", key + ".type");
  if (type == "ByteLevel") return;  // only adjusts offsets
  if (type == "Sequence") {
    const json& list = where.member(j, "processors", key + ".processors");
    if (!list.is_array()) throw where.error(key + ".processors", "must be an array");
    for (size_t i = 0; i < list.size(); ++i) {
      parse_post_processor(list[i], where, key + ".processors[" + std::to_string(i) + "]",
                           id_of_token, prefix, suffix);
    }
    return;
  }
  if (type == "TemplateProcessing") {
    const json& single = where.member(j, "single", key + ".single");
    const json& specials = where.member(j, "special_tokens", key + ".special_tokens");
    if (!single.is_array()) throw where.error(key + ".single", "must be an array");
    bool seen_sequence = false;
    for (size_t i = 0; i < single.size(); ++i) {
      const std::string item_key = key + ".single[" + std::to_string(i) + "]";
      if (single[i].contains("Sequence")) {
        seen_sequence = true;
        continue;
      }
      const std::string name =
          where.string(where.member(single[i], "SpecialToken", item_key + ".SpecialToken"), "id",
                       item_key + ".SpecialToken.id");
      const json& entry = where.member(specials, name, key + ".special_tokens." + name);
      const json& ids = where.member(entry, "ids", key + ".special_tokens." + name + ".ids");
      if (!ids.is_array())
        throw where.error(key + ".special_tokens." + name + ".ids", "must be an array");
      for (const json& id : ids) {
        if (!id.is_number_integer()) {
          throw where.error(key + ".special_tokens." + name + ".ids", "must hold integers");
        }
        (seen_sequence ? suffix : prefix)->push_back(id.get<int32_t>());
      }
    }
    return;
  }
  if (type == "RobertaProcessing" || type == "BertProcessing") {
    for (const char* part : {"cls", "sep"}) {
      const json& pair = where.member(j, part, key + "." + part);
      if (!pair.is_array() || pair.size() != 2 || !pair[0].is_string()) {
        throw where.error(key + "." + part, "must be [token, id]");
      }
      const int32_t id = id_of_token(pair[0].get<std::string>(), key + "." + part);
      (std::string(part) == "cls" ? prefix : suffix)->push_back(id);
    }
    return;
  }
  throw where.unsupported(key + ".type", type);
}

}  // namespace

std::shared_ptr<const HfTokenizer> HfTokenizer::load(const fs::path& tokenizer_json) {
  std::error_code ec;
  require(fs::is_regular_file(tokenizer_json, ec),
          "tokenizer file '" + tokenizer_json.string() + "' is missing");
  const Where where{"'" + tokenizer_json.string() + "'"};
  const std::string text = read_text_file(tokenizer_json);
  const json root = parse_json(text, where.file);  // nesting limit, 1e999, duplicate keys
  if (!root.is_object()) throw Error(where.file + ": must be a JSON object");

  std::shared_ptr<HfTokenizer> tok(new HfTokenizer());
  tok->impl_ = std::make_unique<Impl>();
  Impl& impl = *tok->impl_;
  tok->name_ = hf_tokenizer_name(text);

  // Model.
  const json& model = where.member(root, "model", "model");
  const std::string model_type =
      model.contains("type") ? where.string(model, "type", "model.type") : std::string("BPE");
  if (model_type != "BPE") throw where.unsupported("model.type", model_type);
  if (model.contains("dropout") && !model["dropout"].is_null() &&
      !(model["dropout"].is_number() && model["dropout"].get<double>() == 0.0)) {
    throw where.error("model.dropout", "must be null: BPE dropout is not supported");
  }
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(key) && !model[key].is_null() &&
        !(model[key].is_string() && model[key].get<std::string>().empty())) {
      throw where.error(std::string("model.") + key, "must be null or empty: not supported");
    }
  }
  impl.byte_fallback = where.flag(model, "byte_fallback", "model.byte_fallback", false);
  impl.fuse_unk = where.flag(model, "fuse_unk", "model.fuse_unk", false);
  impl.ignore_merges = where.flag(model, "ignore_merges", "model.ignore_merges", false);

  PreTokenizerInfo info;
  impl.normalizer = parse_normalizer(root.value("normalizer", json()), where, "normalizer");
  impl.pre_tokenizer =
      parse_pre_tokenizer(root.value("pre_tokenizer", json()), where, "pre_tokenizer", &info);
  impl.byte_level = info.byte_level;

  // Vocabulary: ids dense in [0, n) together with the added tokens.
  const json& vocab = where.member(model, "vocab", "model.vocab");
  if (!vocab.is_object() || vocab.empty())
    throw where.error("model.vocab", "must be a non-empty object");
  std::vector<std::pair<std::string, int32_t>> entries;
  entries.reserve(vocab.size());
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() >= (int64_t{1} << 31) - 1) {
      throw where.error("model.vocab", "token " + json(it.key()).dump() + " must have an id >= 0");
    }
    entries.emplace_back(it.key(), it.value().get<int32_t>());
  }
  const json& added = root.value("added_tokens", json::array());
  if (!added.is_array()) throw where.error("added_tokens", "must be an array");
  for (size_t i = 0; i < added.size(); ++i) {
    const std::string key = "added_tokens[" + std::to_string(i) + "]";
    const std::string content = where.string(added[i], "content", key + ".content");
    const json& id = where.member(added[i], "id", key + ".id");
    if (!id.is_number_integer() || id.get<int64_t>() < 0 ||
        id.get<int64_t>() >= (int64_t{1} << 31) - 1) {
      throw where.error(key + ".id", "must be an integer >= 0");
    }
    if (content.empty()) throw where.error(key + ".content", "must not be empty");
    if (where.flag(added[i], "single_word", key + ".single_word", false)) {
      throw where.error(key + ".single_word", "is true, which gaincell does not support");
    }
    impl.added.push_back({content, id.get<int32_t>(),
                          where.flag(added[i], "lstrip", key + ".lstrip", false),
                          where.flag(added[i], "rstrip", key + ".rstrip", false)});
  }
  int32_t max_id = -1;
  for (const auto& [_, id] : entries) max_id = std::max(max_id, id);
  for (const auto& a : impl.added) max_id = std::max(max_id, a.id);
  // Dense ids cannot exceed the number of tokens: checked before the id table is allocated, so a
  // stray id of 2^30 is an error, not gigabytes of empty strings (fuzz/corpus/tokenizer_json/
  // crash-sparse-id-oom).
  const size_t tokens_given = entries.size() + impl.added.size();
  if (static_cast<size_t>(max_id) >= tokens_given) {
    throw where.error("model.vocab", "and added_tokens give " + std::to_string(tokens_given) +
                                         " tokens but use id " + std::to_string(max_id) +
                                         " (ids must be dense: 0 to " +
                                         std::to_string(tokens_given - 1) + ")");
  }
  tok->token_strings_.assign(static_cast<size_t>(max_id) + 1, {});
  std::vector<bool> defined(static_cast<size_t>(max_id) + 1, false);
  std::string bytes;
  for (auto& [token, id] : entries) {
    if (defined[static_cast<size_t>(id)]) {
      throw where.error("model.vocab", "uses id " + std::to_string(id) + " twice");
    }
    defined[static_cast<size_t>(id)] = true;
    std::string key = token;
    if (impl.byte_level && byte_level_symbols_to_bytes(token, &bytes)) key = bytes;
    impl.id_of.emplace(std::move(key), id);
    tok->token_strings_[static_cast<size_t>(id)] = std::move(token);
  }
  for (const auto& a : impl.added) {
    auto& slot = tok->token_strings_[static_cast<size_t>(a.id)];
    if (defined[static_cast<size_t>(a.id)] && slot != a.content) {
      throw where.error("added_tokens", "gives id " + std::to_string(a.id) + " to " +
                                            json(a.content).dump() + ", model.vocab to " +
                                            json(slot).dump());
    }
    defined[static_cast<size_t>(a.id)] = true;
    slot = a.content;
    impl.added_contents.insert(a.content);
  }
  if (const auto hole = std::find(defined.begin(), defined.end(), false); hole != defined.end()) {
    throw where.error(
        "model.vocab",
        "has no token with id " + std::to_string(hole - defined.begin()) + " (ids must be dense)");
  }
  for (size_t i = 0; i < impl.added.size(); ++i) {
    impl.added_by_first_byte[static_cast<uint8_t>(impl.added[i].content[0])].push_back(i);
  }
  for (auto& list : impl.added_by_first_byte) {
    std::stable_sort(list.begin(), list.end(), [&](size_t a, size_t b) {
      return impl.added[a].content.size() > impl.added[b].content.size();
    });
  }

  // Byte tokens.
  impl.byte_token.fill(-1);
  for (int b = 0; b < 256; ++b) {
    if (impl.byte_level) {
      const auto it = impl.id_of.find(std::string(1, static_cast<char>(b)));
      if (it == impl.id_of.end()) {
        throw where.error("model.vocab", "has no token for byte " + std::to_string(b) +
                                             " (byte-level BPE needs all 256)");
      }
      impl.byte_token[static_cast<size_t>(b)] = it->second;
    } else if (impl.byte_fallback) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      if (const auto it = impl.id_of.find(std::string_view(name)); it != impl.id_of.end()) {
        impl.byte_token[static_cast<size_t>(b)] = it->second;
      }
    }
  }
  if (model.contains("unk_token") && !model["unk_token"].is_null()) {
    const std::string unk = where.string(model, "unk_token", "model.unk_token");
    const auto it = impl.id_of.find(unk);
    if (it == impl.id_of.end()) throw where.error("model.unk_token", "is not in model.vocab");
    impl.unk = it->second;
  }

  // Merges: "left right" strings or [left, right] pairs, by rank.
  const json& merges = where.member(model, "merges", "model.merges");
  if (!merges.is_array()) throw where.error("model.merges", "must be an array");
  impl.merges.reserve(merges.size());
  std::string left, right;
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& m = merges[rank];
    const std::string key = "model.merges[" + std::to_string(rank) + "]";
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        throw where.error(key, "must be two tokens separated by one space: " + json(s).dump());
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string()) {
      left = m[0].get<std::string>();
      right = m[1].get<std::string>();
    } else {
      throw where.error(key, "must be \"left right\" or [left, right]");
    }
    if (impl.byte_level) {
      if (!byte_level_symbols_to_bytes(left, &bytes))
        throw where.error(key, "has a non-byte symbol");
      left = bytes;
      if (!byte_level_symbols_to_bytes(right, &bytes))
        throw where.error(key, "has a non-byte symbol");
      right = bytes;
    }
    const auto l = impl.id_of.find(left), r = impl.id_of.find(right),
               result = impl.id_of.find(left + right);
    if (l == impl.id_of.end() || r == impl.id_of.end()) {
      throw where.error(key, "has a part that is not in model.vocab");
    }
    if (result == impl.id_of.end())
      throw where.error(key, "has a result that is not in model.vocab");
    impl.merges.try_emplace(pair_key(l->second, r->second),
                            Merge{static_cast<int32_t>(rank), result->second});
  }

  impl.decoder =
      parse_decoder(root.value("decoder", json()), where, "decoder", &impl.added_contents);

  // Special tokens and what surrounds one text.
  const auto id_of_token = [&](const std::string& token, const std::string& key) -> int32_t {
    for (const auto& a : impl.added)
      if (a.content == token) return a.id;
    for (size_t id = 0; id < tok->token_strings_.size(); ++id)
      if (tok->token_strings_[id] == token) return static_cast<int32_t>(id);
    throw where.error(key,
                      "names token " + json(token).dump() + ", which is not in the vocabulary");
  };
  parse_post_processor(root.value("post_processor", json()), where, "post_processor", id_of_token,
                       &tok->prefix_, &tok->suffix_);
  const fs::path config_path = tokenizer_json.parent_path() / "tokenizer_config.json";
  if (fs::is_regular_file(config_path, ec)) {
    const Where config_where{"'" + config_path.string() + "'"};
    const json config = parse_json(read_text_file(config_path), config_where.file);
    if (!config.is_object()) throw Error(config_where.file + ": must be a JSON object");
    const auto resolve = [&](const std::string& key) -> std::optional<int32_t> {
      const auto token = config_token(config, key, config_where);
      if (!token) return std::nullopt;
      try {
        return id_of_token(*token, key);
      } catch (const Error&) {
        throw config_where.error(
            key, "names " + json(*token).dump() + ", which is not a token of " + where.file);
      }
    };
    tok->bos_ = resolve("bos_token");
    tok->eos_ = resolve("eos_token");
    // add_bos_token / add_eos_token override the template, as LlamaTokenizerFast does.
    const auto override_special = [&](const char* key, const std::optional<int32_t>& id,
                                      std::vector<int32_t>* ids, bool front) {
      if (!config.contains(key) || config[key].is_null()) return;
      const bool add = config_where.flag(config, key, key, false);
      if (!id) {
        if (add) throw config_where.error(key, "is true but the token is not defined");
        return;
      }
      std::erase(*ids, *id);
      if (add) ids->insert(front ? ids->begin() : ids->end(), *id);
    };
    override_special("add_bos_token", tok->bos_, &tok->prefix_, true);
    override_special("add_eos_token", tok->eos_, &tok->suffix_, false);
  }
  return tok;
}

// ---------------------------------------------------------------------------------------------
// Encoding and decoding.

std::vector<std::string> HfTokenizer::pretokenize(std::string_view text) const {
  std::string clean = is_valid_utf8(text) ? std::string(text) : sanitize_utf8(text);
  if (impl_->normalizer) clean = impl_->normalizer(std::move(clean));
  std::vector<Piece> pieces;
  if (!clean.empty()) pieces.push_back({std::move(clean), true});
  if (impl_->pre_tokenizer) impl_->pre_tokenizer(pieces);
  std::vector<std::string> out;
  for (auto& p : pieces) out.push_back(std::move(p.text));
  return out;
}

std::vector<int32_t> HfTokenizer::bpe_piece(std::string_view piece) const {
  return impl_->bpe(piece);
}

std::vector<int32_t> HfTokenizer::bpe_piece_reference(std::string_view piece) const {
  return impl_->bpe_reference(piece);
}

namespace {

bool is_space_at(std::string_view text, size_t pos, size_t* length) {
  uint32_t cp;
  *length = static_cast<size_t>(decode_utf8(text, pos, &cp));
  return classify_code_point(cp) == CharClass::kSpace;
}

}  // namespace

std::vector<int32_t> HfTokenizer::encode(std::string_view input) const {
  const Impl& impl = *impl_;
  const std::string sanitized = is_valid_utf8(input) ? std::string() : sanitize_utf8(input);
  const std::string_view text = sanitized.empty() ? input : std::string_view(sanitized);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);

  const auto encode_segment = [&](size_t begin, size_t end) {
    if (end <= begin) return;
    std::string segment(text.substr(begin, end - begin));
    if (impl.normalizer) segment = impl.normalizer(std::move(segment));
    if (segment.empty()) return;
    std::vector<Piece> pieces{{std::move(segment), begin == 0}};
    if (impl.pre_tokenizer) impl.pre_tokenizer(pieces);
    for (const Piece& p : pieces) {
      const auto word = impl.bpe_cached(p.text);
      ids.insert(ids.end(), word.begin(), word.end());
    }
  };

  // Added tokens, leftmost-longest; lstrip/rstrip take the whitespace beside them.
  size_t segment_begin = 0;
  for (size_t pos = 0; pos < text.size();) {
    const auto& candidates = impl.added_by_first_byte[static_cast<uint8_t>(text[pos])];
    const Impl::Added* hit = nullptr;
    for (const size_t k : candidates) {
      if (text.substr(pos).starts_with(impl.added[k].content)) {
        hit = &impl.added[k];
        break;
      }
    }
    if (!hit) {
      ++pos;
      continue;
    }
    size_t segment_end = pos;
    if (hit->lstrip) {
      // Walk back over whitespace code points of the current segment.
      size_t scan = segment_begin, last_non_space_end = segment_begin, length = 0;
      while (scan < pos) {
        const bool space = is_space_at(text, scan, &length);
        scan += length;
        if (!space) last_non_space_end = scan;
      }
      segment_end = last_non_space_end;
    }
    encode_segment(segment_begin, segment_end);
    ids.push_back(hit->id);
    pos += hit->content.size();
    if (hit->rstrip) {
      size_t length = 0;
      while (pos < text.size() && is_space_at(text, pos, &length)) pos += length;
    }
    segment_begin = pos;
  }
  encode_segment(segment_begin, text.size());
  return ids;
}

std::vector<int32_t> HfTokenizer::encode_with_special_tokens(std::string_view text) const {
  std::vector<int32_t> ids = prefix_;
  const auto body = encode(text);
  ids.insert(ids.end(), body.begin(), body.end());
  ids.insert(ids.end(), suffix_.begin(), suffix_.end());
  return ids;
}

std::string HfTokenizer::decode(const std::vector<int32_t>& ids) const {
  std::vector<std::string> tokens;
  tokens.reserve(ids.size());
  for (size_t i = 0; i < ids.size(); ++i) {
    if (ids[i] < 0 || ids[i] >= vocab_size()) {
      throw Error("token id " + std::to_string(ids[i]) + " at position " + std::to_string(i) +
                  " out of range [0, " + std::to_string(vocab_size()) + ")");
    }
    tokens.push_back(token_strings_[static_cast<size_t>(ids[i])]);
  }
  std::string out;
  if (!impl_->decoder) {  // the library joins the tokens with spaces
    for (size_t i = 0; i < tokens.size(); ++i) out += (i ? " " : "") + tokens[i];
    return out;
  }
  impl_->decoder(tokens, true);
  for (const auto& t : tokens) out += t;
  return out;
}

std::string HfTokenizer::token_text(int32_t id) const {
  if (id < 0 || id >= vocab_size()) {
    throw Error("token id " + std::to_string(id) + " out of range [0, " +
                std::to_string(vocab_size()) + ")");
  }
  std::vector<std::string> tokens{token_strings_[static_cast<size_t>(id)]};
  if (impl_->decoder) impl_->decoder(tokens, false);
  std::string out;
  for (const auto& t : tokens) out += t;
  return out;
}

}  // namespace gaincell
