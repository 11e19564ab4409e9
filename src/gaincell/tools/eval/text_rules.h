// The string rules of lm-evaluation-harness's task definitions, on UTF-8 text, with Python 3 `str`
// semantics (characters are Unicode code points; whitespace is str.isspace(), which is also what
// `re`'s \s matches in a str pattern). Each function names the Python expression it reproduces.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace gaincell::eval {

// str.isspace() for one code point.
bool python_isspace(uint32_t cp);
// len(s): code points (malformed UTF-8 bytes count one each).
int64_t python_len(std::string_view s);
// s.strip() / s.rstrip() (no argument: Unicode whitespace).
std::string python_strip(std::string_view s);
std::string python_rstrip(std::string_view s);
// s.capitalize() (Python >= 3.8): the first code point in title case, the rest in lower case,
// with Unicode's full case mappings (ICU) for every script. Malformed UTF-8 bytes are kept.
std::string python_capitalize(std::string_view s);
// s.replace(old, new) (every non-overlapping occurrence, left to right).
std::string python_replace(std::string_view s, std::string_view from, std::string_view to);
// s.split(sep) for a non-empty separator.
std::vector<std::string> python_split(std::string_view s, std::string_view sep);

// len(re.split(r"\s+", s)): maximal whitespace runs + 1 (wikitext's word count).
int64_t count_words(std::string_view s);

// lm_eval/tasks/wikitext/preprocess_wikitext.py wikitext_detokenizer(doc["page"]).
std::string wikitext_detokenizer(std::string_view page);
// lm_eval/tasks/hellaswag/utils.py preprocess(text).
std::string hellaswag_preprocess(std::string_view text);

// The document split of the Hugging Face dataset EleutherAI/wikitext_document_level applied to a
// raw WikiText file (wiki.test.raw): a line whose stripped form (after "= = =" -> "===" and
// "= =" -> "==") starts with "= " and ends with " =" opens a new page; pages that are only
// whitespace are dropped, except the last one. "\r\n" and "\r" count as "\n" (Python text mode).
std::vector<std::string> split_wikitext_documents(std::string_view raw);

}  // namespace gaincell::eval
