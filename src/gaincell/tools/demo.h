// The main job, first version (issue 2 item 9): tokenize Debian's fortunes, train a small
// GPT-2-architecture model, report validation perplexity and a greedy sample. A library function
// so that later work (the paper's linear -> adaptation -> nonlinear pipeline) extends it.
//
// Outputs under out_dir: tokens/ (cached train.bin, val.bin, meta.json, corpus.json), model/ (a
// training checkpoint, i.e. a model directory usable by generate/perplexity), summary.json.
#pragma once

#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>

#include "gaincell/hw/hw_config.h"
#include "gaincell/train/trainer.h"

namespace gaincell {

struct DemoOptions {
  std::filesystem::path out_dir = "demo-out";
  std::filesystem::path corpus_dir = "/usr/share/games/fortunes";
  std::filesystem::path vocab_dir;  // empty: default_data_dir()/vocab
  // "bytes" (one token per byte: a character-level model, whose predictions rest on attention)
  // or "gpt2-bpe" (GPT-2's vocabulary of 50,257).
  std::string tokenizer = "bytes";
  double val_fraction = 0.1;
  // Model: GPT-2 architecture, small (about 0.8M non-embedding parameters); two heads of
  // dimension 64, as in GPT-2, so that a head fills the 64 rows of a gain-cell array.
  int n_layer = 4;
  int n_head = 2;
  int n_embd = 128;
  std::string attention = "softmax";
  int window = 0;
  std::optional<HwConfig> hw;
  TrainOptions train = default_train_options();
  int64_t eval_tokens = 32768;  // validation tokens scored for the final perplexity (0 = all)
  std::string prompt;           // empty: start from <|endoftext|>
  int sample_tokens = 120;

  static TrainOptions default_train_options();
};

class GPT2Model;
class Tokenizer;

// Greedy continuation of `prompt` (empty: from <|endoftext|>), up to max_tokens or the end of
// text; the prompt is cut to half the model's context.
std::string greedy_sample(GPT2Model& model, const Tokenizer& tok, const std::string& prompt,
                          int max_tokens);

// Runs the demo; `log` receives progress lines (the trainer prints its own on stderr). Returns
// the summary also written to out_dir/summary.json.
nlohmann::json run_demo(const DemoOptions& options,
                        const std::function<void(const std::string&)>& log = {});

}  // namespace gaincell
