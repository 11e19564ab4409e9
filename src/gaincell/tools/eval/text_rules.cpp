#include "gaincell/tools/eval/text_rules.h"

#include <unicode/ucasemap.h>
#include <unicode/utypes.h>

#include <memory>

#include "gaincell/core/error.h"
#include "gaincell/model/tokenizer.h"

namespace gaincell::eval {

namespace {

// One code point of UTF-8 text; malformed bytes decode as themselves (one "character" each, like
// the surrogate escapes the tokenizer reference uses).
struct CodePoint {
  uint32_t cp;
  size_t size;
};

CodePoint next_code_point(std::string_view s, size_t pos) {
  uint32_t cp = 0;
  const int n = decode_utf8(s, pos, &cp);
  if (cp == kInvalidByte) cp = 0xDC00u + static_cast<unsigned char>(s[pos]);  // surrogateescape
  return {cp, static_cast<size_t>(n)};
}

// Byte offsets of the first and one-past-last non-whitespace characters.
size_t first_non_space(std::string_view s) {
  size_t pos = 0;
  while (pos < s.size()) {
    const CodePoint c = next_code_point(s, pos);
    if (!python_isspace(c.cp)) break;
    pos += c.size;
  }
  return pos;
}

size_t end_of_non_space(std::string_view s, size_t from) {
  size_t end = from;
  for (size_t pos = from; pos < s.size();) {
    const CodePoint c = next_code_point(s, pos);
    pos += c.size;
    if (!python_isspace(c.cp)) end = pos;
  }
  return end;
}

// re.sub(OPEN \s*([^CLOSE]*?)\s* CLOSE, OPEN \1 CLOSE, s): each OPEN that has a CLOSE after it has
// the whitespace next to both delimiters removed; scanning resumes after that CLOSE. (The lazy
// group stops at the first CLOSE; the \s* around it take the whitespace at both ends.)
std::string trim_inside_pairs(std::string_view s, char open, char close) {
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (pos < s.size()) {
    if (s[pos] != open) {
      out += s[pos++];
      continue;
    }
    const size_t close_at = s.find(close, pos + 1);
    if (close_at == std::string_view::npos) {
      out.append(s.substr(pos));
      break;
    }
    const std::string_view inside = s.substr(pos + 1, close_at - pos - 1);
    const size_t begin = first_non_space(inside);
    const size_t end = end_of_non_space(inside, begin);
    out += open;
    out.append(inside.substr(begin, end - begin));
    out += close;
    pos = close_at + 1;
  }
  return out;
}

bool is_ascii_digit(char c) {
  return c >= '0' && c <= '9';
}

}  // namespace

bool python_isspace(uint32_t cp) {
  if (cp < 0x80) return (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x20);
  return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
         cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

int64_t python_len(std::string_view s) {
  int64_t n = 0;
  for (size_t pos = 0; pos < s.size(); n++) pos += next_code_point(s, pos).size;
  return n;
}

std::string python_strip(std::string_view s) {
  const size_t begin = first_non_space(s);
  return std::string(s.substr(begin, end_of_non_space(s, begin) - begin));
}

std::string python_rstrip(std::string_view s) {
  return std::string(s.substr(0, end_of_non_space(s, 0)));
}

std::string python_capitalize(std::string_view s) {
  if (s.empty()) return {};
  // Python 3.8+: the first character in title case (full mapping: "ǆ" -> "ǅ", "ß" -> "Ss",
  // "ﬁ" -> "Fi"), the rest lower case (full mapping, with the final-sigma rule). ICU's whole-string
  // titlecasing without break adjustment is exactly that; the root locale ("") has no Turkish or
  // Dutch tailoring, as Python has none.
  UErrorCode status = U_ZERO_ERROR;
  std::unique_ptr<UCaseMap, decltype(&ucasemap_close)> map(
      ucasemap_open("", U_TITLECASE_WHOLE_STRING | U_TITLECASE_NO_BREAK_ADJUSTMENT, &status),
      &ucasemap_close);
  require(U_SUCCESS(status),
          std::string("python_capitalize: ICU case map: ") + u_errorName(status));
  const auto length = static_cast<int32_t>(s.size());
  // Case mapping changes the length by at most a factor of 3 (SpecialCasing's longest mappings).
  std::string out(s.size() * 3 + 4, '\0');
  const int32_t n = ucasemap_utf8ToTitle(map.get(), out.data(), static_cast<int32_t>(out.size()),
                                         s.data(), length, &status);
  require(U_SUCCESS(status),
          std::string("python_capitalize: ICU titlecasing: ") + u_errorName(status));
  out.resize(static_cast<size_t>(n));
  return out;
}

std::string python_replace(std::string_view s, std::string_view from, std::string_view to) {
  if (from.empty()) return std::string(s);
  std::string out;
  out.reserve(s.size());
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(from, pos);
    if (hit == std::string_view::npos) break;
    out.append(s.substr(pos, hit - pos));
    out.append(to);
    pos = hit + from.size();
  }
  out.append(s.substr(pos));
  return out;
}

std::vector<std::string> python_split(std::string_view s, std::string_view sep) {
  std::vector<std::string> parts;
  size_t pos = 0;
  while (true) {
    const size_t hit = s.find(sep, pos);
    if (hit == std::string_view::npos) break;
    parts.emplace_back(s.substr(pos, hit - pos));
    pos = hit + sep.size();
  }
  parts.emplace_back(s.substr(pos));
  return parts;
}

int64_t count_words(std::string_view s) {
  int64_t runs = 0;
  bool in_space = false;
  for (size_t pos = 0; pos < s.size();) {
    const CodePoint c = next_code_point(s, pos);
    pos += c.size;
    const bool space = python_isspace(c.cp);
    if (space && !in_space) runs++;
    in_space = space;
  }
  return runs + 1;
}

std::string wikitext_detokenizer(std::string_view page) {
  // contractions
  std::string s = python_replace(page, "s '", "s'");
  {
    // re.sub(r"/' [0-9]/", r"/'[0-9]/", s): the replacement is the literal text "/'[0-9]/".
    std::string out;
    size_t pos = 0;
    while (pos < s.size()) {
      if (s.compare(pos, 3, "/' ") == 0 && pos + 4 < s.size() && is_ascii_digit(s[pos + 3]) &&
          s[pos + 4] == '/') {
        out += "/'[0-9]/";
        pos += 5;
      } else {
        out += s[pos++];
      }
    }
    s = std::move(out);
  }
  // number separators
  s = python_replace(s, " @-@ ", "-");
  s = python_replace(s, " @,@ ", ",");
  s = python_replace(s, " @.@ ", ".");
  // punctuation
  s = python_replace(s, " : ", ": ");
  s = python_replace(s, " ; ", "; ");
  s = python_replace(s, " . ", ". ");
  s = python_replace(s, " ! ", "! ");
  s = python_replace(s, " ? ", "? ");
  s = python_replace(s, " , ", ", ");
  // double brackets
  s = trim_inside_pairs(s, '(', ')');
  s = trim_inside_pairs(s, '[', ']');
  s = trim_inside_pairs(s, '{', '}');
  s = trim_inside_pairs(s, '"', '"');
  s = trim_inside_pairs(s, '\'', '\'');
  // miscellaneous
  s = python_replace(s, "= = = =", "====");
  s = python_replace(s, "= = =", "===");
  s = python_replace(s, "= =", "==");
  s = python_replace(s, " \xC2\xB0 ", "\xC2\xB0");  // chr(176), the degree sign
  s = python_replace(s, " \n", "\n");
  s = python_replace(s, "\n ", "\n");
  s = python_replace(s, " N ", " 1 ");
  s = python_replace(s, " 's", "'s");
  return s;
}

std::string hellaswag_preprocess(std::string_view text) {
  std::string s = python_strip(text);
  s = python_replace(s, " [title]", ". ");
  {
    // re.sub("\\[.*?\\]", "", s): "[" up to the first "]" on the same line ("." excludes "\n").
    std::string out;
    size_t pos = 0;
    while (pos < s.size()) {
      if (s[pos] == '[') {
        const size_t close = s.find_first_of("]\n", pos + 1);
        if (close != std::string::npos && s[close] == ']') {
          pos = close + 1;
          continue;
        }
      }
      out += s[pos++];
    }
    s = std::move(out);
  }
  return python_replace(s, "  ", " ");
}

std::vector<std::string> split_wikitext_documents(std::string_view raw) {
  std::string text = python_replace(raw, "\r\n", "\n");
  text = python_replace(text, "\r", "\n");
  std::vector<std::string> pages;
  std::vector<std::string> lines;
  auto join = [](const std::vector<std::string>& parts) {
    std::string page;
    for (size_t i = 0; i < parts.size(); i++) page += (i ? "\n" : "") + parts[i];
    return page;
  };
  for (const std::string& line : python_split(text, "\n")) {
    const std::string rline =
        python_strip(python_replace(python_replace(line, "= = =", "==="), "= =", "=="));
    const bool heading = rline.starts_with("= ") && rline.ends_with(" =");
    if (heading) {
      std::string page = join(lines);
      if (!python_strip(page).empty()) pages.push_back(std::move(page));
      lines.clear();
    }
    lines.push_back(line);
  }
  pages.push_back(join(lines));
  return pages;
}

}  // namespace gaincell::eval
