// The tokenizer options of the commands that read or write text, defined once: --tokenizer NAME
// and --vocab DIR (demo); --tokenizer NAME|FILE and --model DIR for the commands that tokenize
// without running a model (tokenize, prepare); model_dir_tokenizer() for those that run one
// (generate, perplexity, train, adapt). The rule itself is Tokenizer::for_model().
#pragma once

#include <CLI/CLI.hpp>
#include <filesystem>
#include <string>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/tokenizer.h"

namespace gaincell::cli {

// --vocab DIR: where the GPT-2 BPE files are (a std::string or a std::filesystem::path).
template <typename Dir>
void add_vocab_option(CLI::App& app, Dir& vocab_dir) {
  app.add_option("--vocab", vocab_dir,
                 "directory with encoder.json and vocab.bpe (default: $GAINCELL_DATA/vocab)");
}

// --tokenizer NAME (gpt2-bpe or bytes), then --vocab DIR.
template <typename Dir>
void add_tokenizer_options(CLI::App& app, std::string& tokenizer, Dir& vocab_dir) {
  app.add_option("--tokenizer", tokenizer,
                 "gpt2-bpe (GPT-2's BPE) or bytes (one token per byte, vocabulary 257)")
      ->capture_default_str()
      ->check(CLI::IsMember({Tokenizer::kGpt2Bpe, Tokenizer::kBytes}));
  add_vocab_option(app, vocab_dir);
}

// A model directory's tokenizer: its tokenizer.json when present, else the one its config.json
// names (read only then, so a directory whose config gaincell cannot read still tokenizes).
inline Tokenizer model_dir_tokenizer(const std::filesystem::path& model_dir,
                                     const std::filesystem::path& vocab_dir = {}) {
  std::error_code ec;
  const bool has_json = std::filesystem::is_regular_file(model_dir / "tokenizer.json", ec);
  return Tokenizer::for_model(model_dir, has_json ? "" : read_model_config(model_dir).tokenizer,
                              vocab_dir);
}

// Copies a model's tokenizer.json and tokenizer_config.json into a directory the model is saved
// to, so that the saved model tokenizes as the one it came from.
inline void copy_tokenizer_files(const std::filesystem::path& from,
                                 const std::filesystem::path& to) {
  std::error_code ec;
  if (from.empty() || std::filesystem::equivalent(from, to, ec)) return;
  for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
    if (!std::filesystem::is_regular_file(from / name, ec)) continue;
    std::filesystem::create_directories(to);
    write_file_atomic(to / name, read_text_file(from / name));
  }
}

struct TokenizerCliOptions {
  std::string tokenizer = Tokenizer::kGpt2Bpe;  // a name, or a tokenizer.json file
  std::string model_dir;
  std::string vocab_dir;
  CLI::Option* tokenizer_option = nullptr;

  Tokenizer load() const {
    if (!model_dir.empty()) {
      require(tokenizer_option->count() == 0, "--model and --tokenizer exclude each other");
      return model_dir_tokenizer(model_dir, vocab_dir);
    }
    if (tokenizer == Tokenizer::kGpt2Bpe || tokenizer == Tokenizer::kBytes) {
      return Tokenizer::by_name(tokenizer, vocab_dir);
    }
    std::error_code ec;
    require(std::filesystem::is_regular_file(tokenizer, ec),
            "--tokenizer '" + tokenizer + "' is neither '" + Tokenizer::kGpt2Bpe + "', '" +
                Tokenizer::kBytes + "' nor an existing tokenizer.json file");
    return Tokenizer::load_hf(tokenizer);
  }

  // The tokenizer.json file load() reads, or empty (a named tokenizer, or a model directory
  // without one).
  std::filesystem::path hf_file() const {
    std::error_code ec;
    if (!model_dir.empty()) {
      const auto json = std::filesystem::path(model_dir) / "tokenizer.json";
      return std::filesystem::is_regular_file(json, ec) ? json : std::filesystem::path();
    }
    if (tokenizer == Tokenizer::kGpt2Bpe || tokenizer == Tokenizer::kBytes) return {};
    return tokenizer;
  }
};

// Copies a tokenizer.json (and the tokenizer_config.json beside it, when present) into `dir` as
// DIR/tokenizer.json and DIR/tokenizer_config.json: a token directory made with it carries the
// tokenizer, so that a new model trained on it takes its vocabulary and tokenizes the same way.
inline void copy_hf_tokenizer_file(const std::filesystem::path& tokenizer_json,
                                   const std::filesystem::path& dir) {
  std::error_code ec;
  std::filesystem::create_directories(dir);
  if (std::filesystem::equivalent(tokenizer_json, dir / "tokenizer.json", ec)) return;
  write_file_atomic(dir / "tokenizer.json", read_text_file(tokenizer_json));
  const auto config = tokenizer_json.parent_path() / "tokenizer_config.json";
  if (std::filesystem::is_regular_file(config, ec)) {
    write_file_atomic(dir / "tokenizer_config.json", read_text_file(config));
  } else {
    std::filesystem::remove(dir / "tokenizer_config.json", ec);  // one of an earlier tokenizer
  }
}

inline void add_tokenizer_options(CLI::App& app, TokenizerCliOptions& o) {
  o.tokenizer_option =
      app.add_option("--tokenizer", o.tokenizer,
                     "gpt2-bpe (GPT-2's BPE), bytes (one token per byte, vocabulary 257), or a "
                     "Hugging Face tokenizer.json file (tokenizer_config.json beside it is read)")
          ->capture_default_str();
  app.add_option("--model", o.model_dir,
                 "use this model directory's tokenizer (its tokenizer.json, else the one its "
                 "config.json names)");
  add_vocab_option(app, o.vocab_dir);
}

}  // namespace gaincell::cli
