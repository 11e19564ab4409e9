// gaincell prepare: tokenizes text files into DIR/train.bin, DIR/val.bin and DIR/meta.json
// (little-endian uint16 tokens in nanoGPT's layout, or uint32 with a header for vocabularies over
// 65536: model/data.h), for `--data DIR` of the training commands. A Hugging Face tokenizer.json
// is copied into DIR, so that `train` can build a new model for it.
//   gaincell prepare --text a.txt b.txt --out data/mine [--val-fraction 0.1]
//   gaincell prepare --fortunes --out data/fortunes      (Debian's fortunes, one document each)
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "cli/command.h"
#include "cli/tokenizer_options.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/data.h"
#include "gaincell/model/tokenizer.h"

namespace gaincell::cli {
namespace {

struct PrepareCliOptions {
  std::vector<std::string> texts;
  std::string out_dir;
  double val_fraction = 0.1;
  bool fortunes = false;
  std::string fortunes_dir = "/usr/share/games/fortunes";
  TokenizerCliOptions tokenizer;
};

void run_prepare(const PrepareCliOptions& o) {
  std::vector<std::filesystem::path> files(o.texts.begin(), o.texts.end());
  if (o.fortunes && files.empty()) files = default_corpus_files(o.fortunes_dir);
  require(!files.empty(), "give --text FILE [FILE...] or --fortunes");
  const Tokenizer tok = o.tokenizer.load();
  PrepareOptions options;
  options.val_fraction = o.val_fraction;
  options.split_fortunes = o.fortunes;
  options.progress = [](const std::string& line) { std::cerr << line << std::endl; };
  // One process per output directory (a second one gets a clear error, not mixed files).
  const DirectoryLock lock = DirectoryLock::acquire(o.out_dir);
  // Before the token files: meta.json, written last, means the directory is complete.
  if (const auto hf_file = o.tokenizer.hf_file(); !hf_file.empty()) {
    copy_hf_tokenizer_file(hf_file, o.out_dir);
  }
  const PrepareResult r = prepare_token_files(tok, files, o.out_dir, options);
  std::cout << nlohmann::json{{"out", o.out_dir},
                              {"train_tokens", r.train_tokens},
                              {"val_tokens", r.val_tokens}}
                   .dump()
            << "\n";
}

void setup_prepare(CLI::App& app) {
  auto o = std::make_shared<PrepareCliOptions>();
  app.add_option("--text", o->texts, "text files; each is one document (see --fortunes)")
      ->expected(1, -1);
  app.add_option("--out", o->out_dir, "output directory for train.bin, val.bin, meta.json")
      ->required();
  app.add_option("--val-fraction", o->val_fraction,
                 "last fraction of the token stream kept for validation, in [0, 1)")
      ->capture_default_str();
  app.add_flag("--fortunes", o->fortunes,
               "inputs are fortune(6) files: one document per fortune (split at '%' lines); "
               "without --text, use the plain-text files of --fortunes-dir");
  app.add_option("--fortunes-dir", o->fortunes_dir, "where the fortune files are")
      ->capture_default_str();
  add_tokenizer_options(app, o->tokenizer);
  app.callback([o] { run_prepare(*o); });
}

CommandRegistration reg({"prepare", "tokenize text files into train/val token files for training",
                         setup_prepare});

}  // namespace
}  // namespace gaincell::cli
