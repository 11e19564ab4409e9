// gaincell perplexity: token-level perplexity of a text file under a model, with lm-eval-style
// rolling windows (train/perplexity.h).
//   gaincell perplexity --model DIR (--text FILE | --tokens FILE) [--context T] [--stride S]
//                       [--json] [--per-token]
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>

#include "cli/command.h"
#include "cli/model_options.h"
#include "cli/tokenizer_options.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/eval/token_file.h"
#include "gaincell/train/perplexity.h"

namespace gaincell::cli {
namespace {

struct PerplexityOptions {
  std::string model_dir;
  std::string text_file;
  std::string tokens_file;
  std::string tokens_format = "auto";
  int context = 0;
  int stride = 0;
  bool json = false;
  bool per_token = false;
  bool no_eot = false;
  std::string vocab_dir;
  ModelCliOptions model;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void run_perplexity(const PerplexityOptions& o) {
  require(o.text_file.empty() != o.tokens_file.empty(), "give exactly one of --text and --tokens");
  // Where the process's time goes (load, tokenisation, scoring) is printed on stderr at the end.
  const auto start = std::chrono::steady_clock::now();
  const std::string text = o.text_file.empty() ? std::string() : read_text_file(o.text_file);
  LoadModelOptions load;
  load.overrides = o.model.overrides();
  load.layout = o.model.layout();
  load.allow_nonfinite = o.model.allow_nonfinite;
  load.weights = o.model.weight_format();
  load.log = [](const std::string& line) { std::cerr << "gaincell: " << line << "\n"; };
  auto model = load_model(o.model_dir, load);
  const double load_s = seconds_since(start);
  const auto tokenize_start = std::chrono::steady_clock::now();
  const int context = o.context > 0 ? o.context : model->config().block_size;
  const int stride = o.stride > 0 ? o.stride : context;
  require(o.context >= 0 && o.stride >= 0, "--context and --stride must be >= 0");
  // Pre-tokenised input needs the tokenizer only for the prepended <|endoftext|>.
  const bool need_tokenizer = o.tokens_file.empty() || !o.no_eot;
  const std::optional<Tokenizer> tok =
      need_tokenizer ? std::optional<Tokenizer>(Tokenizer::for_model(
                           o.model_dir, model->config().tokenizer, o.vocab_dir))
                     : std::nullopt;
  std::vector<int32_t> tokens;
  // lm-eval's prefix token: BOS if the tokenizer defines one, else EOS (GPT-2: <|endoftext|>).
  if (!o.no_eot) tokens.push_back(tok->bos_token().value_or(tok->end_of_text()));
  const std::vector<int32_t> body =
      o.tokens_file.empty()
          ? tok->encode(text)
          : eval::read_token_file(o.tokens_file, eval::parse_token_file_format(o.tokens_format),
                                  model->config().vocab_size);
  tokens.insert(tokens.end(), body.begin(), body.end());
  require(!body.empty(), o.text_file + " holds no text");
  const std::string unit = tok ? tok->name() : "input";
  const double tokenize_s = seconds_since(tokenize_start);
  const auto score_start = std::chrono::steady_clock::now();
  const PerplexityResult r = rolling_perplexity(*model, tokens, context, stride);
  const double score_s = seconds_since(score_start);
  char timing[256];
  std::snprintf(timing, sizeof timing,
                "gaincell: perplexity: load %.2f s, tokenize %.2f s, score %.2f s (%.0f tokens/s), "
                "total %.2f s\n",
                load_s, tokenize_s, score_s, r.tokens / std::max(score_s, 1e-9),
                seconds_since(start));
  std::cerr << timing;
  if (o.json || o.per_token) {
    nlohmann::json j = {
        {"metric", "token-level perplexity (" + unit + " tokens)"},
        {"tokens", r.tokens},
        {"mean_nll", r.mean_nll},
        {"ppl", r.ppl},
        {"nll_sum", r.nll_sum},
        {"bytes", o.tokens_file.empty() ? nlohmann::json(text.size()) : nlohmann::json(nullptr)},
        {"context", context},
        {"stride", stride},
        {"windows", r.windows},
        {"prepend_eot", !o.no_eot},
        {"model", o.model_dir},
        {"attention", model->config().attention},
        {"weights", to_string(model->weight_format())}};
    if (o.per_token) j["nll"] = r.nll;
    std::cout << j.dump() << "\n";
  } else {
    std::printf("tokens %lld  mean_nll %.6f  ppl %.4f  (context %d, stride %d)\n",
                static_cast<long long>(r.tokens), r.mean_nll, r.ppl, context, stride);
  }
}

void setup_perplexity(CLI::App& app) {
  auto o = std::make_shared<PerplexityOptions>();
  app.footer(
      "A leading <|endoftext|> is prepended (as lm-eval's rolling loglikelihood does), so the "
      "first token of the text is predicted too and 'tokens' equals the number of text tokens; "
      "--no-eot turns this off. With --stride S < --context T each window after the first "
      "predicts S new tokens with up to T tokens of context (Hugging Face strided evaluation); "
      "S = T gives lm-eval's disjoint rolling windows.");
  app.add_option("--model", o->model_dir, "model directory (config.json, model.safetensors)")
      ->required();
  app.add_option("--text", o->text_file, "UTF-8 text file to score");
  app.add_option("--tokens", o->tokens_file,
                 "pre-tokenised input instead of --text: JSON {\"ids\": [...]} or uint16/uint32 "
                 "token ids (for models without a shipped tokenizer; with --no-eot no tokenizer "
                 "is loaded)");
  app.add_option("--tokens-format", o->tokens_format,
                 "auto (JSON, a GCTOKENS header, else uint16), uint16, uint32 (headerless)");
  app.add_option("--context", o->context, "tokens per window (default: the model's n_positions)");
  app.add_option("--stride", o->stride, "new tokens predicted per window (default: --context)");
  app.add_flag("--json", o->json, "print one JSON object: tokens, mean_nll (nats/token), ppl, ...");
  app.add_flag("--per-token", o->per_token,
               "add 'nll', the per-token values in text order (implies --json)");
  app.add_flag("--no-eot", o->no_eot,
               "do not prepend <|endoftext|> (the first token is then not predicted)");
  add_vocab_option(app, o->vocab_dir);
  add_model_options(app, o->model);
  add_weights_option(app, o->model);
  app.callback([o] { run_perplexity(*o); });
}

CommandRegistration reg({"perplexity", "token-level perplexity of a text file (rolling windows)",
                         setup_perplexity});

}  // namespace
}  // namespace gaincell::cli
