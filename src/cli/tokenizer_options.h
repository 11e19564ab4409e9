// The tokenizer options of the commands that read or write text (prepare, tokenize, demo,
// generate, perplexity), defined once: --tokenizer NAME and --vocab DIR.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "gaincell/model/tokenizer.h"

namespace gaincell::cli {

// --vocab DIR: where the GPT-2 BPE files are.
inline void add_vocab_option(CLI::App& app, std::string& vocab_dir) {
  app.add_option("--vocab", vocab_dir,
                 "directory with encoder.json and vocab.bpe (default: $GAINCELL_DATA/vocab)");
}

// --tokenizer NAME (gpt2-bpe or bytes), then --vocab DIR.
inline void add_tokenizer_options(CLI::App& app, std::string& tokenizer, std::string& vocab_dir) {
  app.add_option("--tokenizer", tokenizer,
                 "gpt2-bpe (GPT-2's BPE) or bytes (one token per byte, vocabulary 257)")
      ->capture_default_str()
      ->check(CLI::IsMember({Tokenizer::kGpt2Bpe, Tokenizer::kBytes}));
  add_vocab_option(app, vocab_dir);
}

}  // namespace gaincell::cli
