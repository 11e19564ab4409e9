// gaincell tokenize: token ids of a text (or, with --decode, the text of ids), with GPT-2's BPE,
// bytes, a Hugging Face tokenizer.json (--tokenizer FILE) or a model's tokenizer (--model DIR).
//   gaincell tokenize --text FILE|- [--json]     ids of a file's bytes (- reads stdin)
//   gaincell tokenize --string TEXT [--json]     ids of a string
//   gaincell tokenize --decode --string "15496 11 995 0"   text of ids (space-separated, or JSON
//                                                           [..] or {"ids": [..]}), raw bytes
#include <cctype>
#include <iostream>
#include <iterator>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "cli/command.h"
#include "cli/tokenizer_options.h"
#include "gaincell/core/error.h"
#include "gaincell/core/json.h"
#include "gaincell/model/data.h"
#include "gaincell/model/tokenizer.h"

namespace gaincell::cli {
namespace {

struct TokenizeOptions {
  std::string text_file;
  std::string text;
  bool has_string = false;
  bool json = false;
  bool decode = false;
  TokenizerCliOptions tokenizer;
};

std::string read_input(const TokenizeOptions& o) {
  if (o.has_string) return o.text;
  if (o.text_file == "-") {
    return std::string(std::istreambuf_iterator<char>(std::cin), std::istreambuf_iterator<char>());
  }
  return read_input_text(o.text_file);
}

int32_t parse_id(const std::string& word) {
  size_t used = 0;
  long long value = 0;
  try {
    value = std::stoll(word, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  require(used == word.size() && value >= INT32_MIN && value <= INT32_MAX,
          "cannot read token id '" + word + "' (expected an integer)");
  return static_cast<int32_t>(value);
}

// Ids as whitespace-separated integers, a JSON array, or a JSON object {"ids": [...]}.
std::vector<int32_t> parse_ids(const std::string& input) {
  const size_t first = input.find_first_not_of(" \t\r\n");
  std::vector<int32_t> ids;
  if (first != std::string::npos && (input[first] == '[' || input[first] == '{')) {
    nlohmann::json json = parse_json(input, "token ids");
    if (json.is_object()) {
      require(json.contains("ids"), "JSON token ids must be an array or {\"ids\": [...]}");
      json = json["ids"];
    }
    require(json.is_array(), "JSON token ids must be an array or {\"ids\": [...]}");
    for (const auto& v : json) {
      ids.push_back(parse_id(std::to_string(json_int<int64_t>(v, "token id"))));
    }
    return ids;
  }
  std::string word;
  for (const char c : input) {
    if (std::isspace(static_cast<unsigned char>(c))) {
      if (!word.empty()) ids.push_back(parse_id(word));
      word.clear();
    } else {
      word += c;
    }
  }
  if (!word.empty()) ids.push_back(parse_id(word));
  return ids;
}

void run_tokenize(const TokenizeOptions& o) {
  require(o.has_string != !o.text_file.empty(),
          "give exactly one of --text FILE and --string TEXT");
  const Tokenizer tok = o.tokenizer.load();
  const std::string input = read_input(o);
  if (o.decode) {
    const std::string text = tok.decode(parse_ids(input));
    if (o.json) {
      // JSON needs UTF-8: bytes that are not valid UTF-8 are shown as U+FFFD here.
      std::cout << nlohmann::json{{"text", text}}.dump(-1, ' ', false,
                                                       nlohmann::json::error_handler_t::replace)
                << "\n";
    } else {
      std::cout.write(text.data(), static_cast<std::streamsize>(text.size()));
    }
    return;
  }
  const std::vector<int32_t> ids = tok.encode(input);
  if (o.json) {
    std::cout << nlohmann::json{{"ids", ids}}.dump() << "\n";
    return;
  }
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ' ';
    line += std::to_string(ids[i]);
  }
  std::cout << line << "\n";
}

void setup_tokenize(CLI::App& app) {
  auto o = std::make_shared<TokenizeOptions>();
  app.add_option("--text", o->text_file, "input file (- for stdin); its bytes are tokenized as-is");
  app.add_option_function<std::string>(
      "--string",
      [o](const std::string& s) {
        o->text = s;
        o->has_string = true;
      },
      "input given on the command line");
  app.add_flag("--json", o->json, "print {\"ids\": [...]} (with --decode: {\"text\": ...})");
  app.add_flag("--decode", o->decode,
               "the input is token ids (space-separated, a JSON array or {\"ids\": [...]}); print "
               "their text (raw bytes)");
  add_tokenizer_options(app, o->tokenizer);
  app.callback([o] { run_tokenize(*o); });
}

CommandRegistration reg({"tokenize", "text to token ids, or ids to text (--decode)",
                         setup_tokenize});

}  // namespace
}  // namespace gaincell::cli
