// gaincell generate: continues a prompt with a model directory, token by token (KV cache or the
// simulated arrays of the attention variant).
//   gaincell generate --model DIR --prompt TEXT --max-new-tokens N [--temperature T --top-k K
//                     --seed S] [--attention NAME --window W --hw NAME|FILE] [--json]
//                     [--weights f32|bf16|q8] [--kv-cache f32|bf16]
#include <cstdio>
#include <iostream>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/command.h"
#include "cli/model_options.h"
#include "cli/tokenizer_options.h"
#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/sampling.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/cost/trace.h"

namespace gaincell::cli {
namespace {

struct GenerateOptions {
  std::string model_dir;
  std::string prompt;
  int max_new_tokens = 64;
  SamplingOptions sampling;
  bool stop_at_eot = true;
  std::string trace_file;
  bool json = false;
  std::string vocab_dir;
  ModelCliOptions model;
};

// The hardware events the simulated arrays counted during this run (input of `gaincell cost
// --trace`), with the model and hardware they came from.
void write_trace(const std::string& path, const DecodeSession& session, const GPT2Config& cfg) {
  const auto events = cost::decode_session_events(session, cfg);
  require(events.has_value(), "--trace needs a gain-cell attention variant (the model runs '" +
                                  cfg.attention + "', which simulates no arrays)");
  nlohmann::json j = events->to_json();
  j["source"] = {{"command", "gaincell generate"},
                 {"attention", cfg.attention},
                 {"gaincell_hw", cfg.hw.to_json()}};
  write_file_atomic(path, j.dump(2) + "\n");
}

void run_generate(const GenerateOptions& o) {
  require(
      o.trace_file.empty() ||
          is_gaincell_attention(o.model.attention.empty() ? read_model_config(o.model_dir).attention
                                                          : o.model.attention),
      "--trace needs a gain-cell attention variant (--attention gaincell-...)");
  require(o.max_new_tokens >= 0, "--max-new-tokens must be >= 0");
  o.sampling.validate();
  LoadModelOptions load;
  load.overrides = o.model.overrides();
  load.layout = o.model.layout();
  load.allow_nonfinite = o.model.allow_nonfinite;
  load.weights = o.model.weight_format();
  load.log = [](const std::string& line) { std::cerr << "gaincell: " << line << "\n"; };
  auto model = load_model(o.model_dir, load);
  const GPT2Config& cfg = model->config();
  const Tokenizer tok = Tokenizer::for_model(o.model_dir, cfg.tokenizer, o.vocab_dir);

  // The prompt as the tokenizer gives it to a model (BOS first for Llama 2); an empty one starts
  // from BOS, else <|endoftext|>, as GPT-2's unconditional samples do.
  std::vector<int32_t> prompt = tok.encode_with_special_tokens(o.prompt);
  const bool unconditional = prompt.empty();
  if (unconditional) prompt.push_back(tok.bos_token().value_or(tok.end_of_text()));
  for (int32_t id : prompt) {
    require(id < cfg.vocab_size, "prompt token " + std::to_string(id) +
                                     " is outside the model's vocabulary of " +
                                     std::to_string(cfg.vocab_size));
  }
  require(static_cast<int64_t>(prompt.size()) <= cfg.block_size,
          "the prompt has " + std::to_string(prompt.size()) +
              " tokens, more than the model's n_positions " + std::to_string(cfg.block_size));

  const KvCacheFormat kv_cache = o.model.kv_cache_format();
  auto session = model->start_decoding(kv_cache);
  session->reserve(static_cast<int64_t>(prompt.size()) + o.max_new_tokens);
  const float* logits = session->prefill(prompt.data(), static_cast<int>(prompt.size()));
  TokenSampler sampler(o.sampling);
  std::vector<int32_t> generated;
  std::string text;
  if (!o.json && !unconditional) std::cout << o.prompt << std::flush;
  for (int i = 0; i < o.max_new_tokens; ++i) {
    const int32_t next = sampler.next(logits, cfg.vocab_size);
    if (next == tok.end_of_text() && o.stop_at_eot) break;
    generated.push_back(next);
    const std::string piece = next < tok.vocab_size() ? tok.token_text(next) : "";
    text += piece;
    if (!o.json) std::cout << piece << std::flush;
    if (session->position() >= cfg.block_size) {
      std::cerr << "gaincell: stopped at the model's context length " << cfg.block_size << "\n";
      break;
    }
    logits = session->step(next);
  }
  if (!o.trace_file.empty()) write_trace(o.trace_file, *session, cfg);
  if (o.json) {
    // decode() joins the bytes of all tokens, so multi-byte characters split across tokens are
    // whole here; invalid UTF-8 (a cut character) is replaced for the JSON output.
    nlohmann::json j = {{"prompt", o.prompt},
                        {"completion", tok.decode(generated)},
                        {"prompt_tokens", prompt.size()},
                        {"tokens", generated},
                        {"temperature", o.sampling.temperature},
                        {"top_k", o.sampling.top_k},
                        {"seed", o.sampling.seed},
                        {"attention", cfg.attention},
                        {"weights", to_string(model->weight_format())},
                        {"kv_cache", kv_cache_format_name(kv_cache)}};
    std::cout << j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) << "\n";
  } else {
    std::cout << "\n";
  }
}

void setup_generate(CLI::App& app) {
  auto o = std::make_shared<GenerateOptions>();
  app.add_option("--model", o->model_dir, "model directory (config.json, model.safetensors)")
      ->required();
  app.add_option("--prompt", o->prompt, "text to continue (empty: start from <|endoftext|>)");
  app.add_option("--max-new-tokens", o->max_new_tokens, "tokens to generate")
      ->capture_default_str();
  app.add_option("--temperature", o->sampling.temperature, "sampling temperature; 0 = greedy")
      ->capture_default_str();
  app.add_option("--top-k", o->sampling.top_k, "sample among the k most likely tokens; 0 = all")
      ->capture_default_str();
  app.add_option("--seed", o->sampling.seed, "random seed of the sampler")->capture_default_str();
  app.add_flag("!--no-stop", o->stop_at_eot, "keep generating after <|endoftext|>");
  app.add_flag("--json", o->json,
               "print one JSON object (prompt, completion, tokens) instead of text");
  add_vocab_option(app, o->vocab_dir);
  app.add_option("--trace", o->trace_file,
                 "write the simulated arrays' hardware event counts (JSON for gaincell cost "
                 "--trace); gain-cell variants only");
  add_model_options(app, o->model);
  add_weights_option(app, o->model);
  add_kv_cache_option(app, o->model);
  app.callback([o] { run_generate(*o); });
}

CommandRegistration reg({"generate", "continue a prompt with a model (greedy, temperature, top-k)",
                         setup_generate});

}  // namespace
}  // namespace gaincell::cli
