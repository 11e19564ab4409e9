// gaincell.Model: a GPT-2-family model directory as the CLI loads it (model/checkpoint.h), with
// logits, per-token log-likelihoods (the `perplexity` code), generation (the `generate` code),
// gradients of a batch (the trainer's forward/backward) and the cost model. Results are plain
// Python objects and NumPy arrays; the GIL is released while the model runs.
#include <pybind11/stl/filesystem.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <memory>
#include <optional>

#include "bindings.h"
#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/sampling.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/cost/cost_report.h"
#include "gaincell/tools/cost/trace.h"
#include "gaincell/tools/eval/eval.h"
#include "gaincell/tools/sweep/sweep_driver.h"
#include "gaincell/train/perplexity.h"

namespace gaincell::python {

namespace {

class Model {
 public:
  Model(std::unique_ptr<GPT2Model> model, std::string vocab_dir, std::string model_dir = "")
      : model_(std::move(model)), vocab_dir_(std::move(vocab_dir)), dir_(std::move(model_dir)) {}

  GPT2Model& gpt() { return *model_; }
  const GPT2Config& config() const { return model_->config(); }

  // The CLI's rule (Tokenizer::for_model): the model directory's tokenizer.json when it has one
  // (Llama, Mistral, Qwen2 checkpoints), else the tokenizer its config names.
  const Tokenizer& tokenizer() {
    if (!tok_) {
      tok_ = dir_.empty() ? Tokenizer::by_name(config().tokenizer, vocab_dir_)
                          : Tokenizer::for_model(dir_, config().tokenizer, vocab_dir_);
    }
    return *tok_;
  }

  // lm-eval's prefix token, as `gaincell perplexity` and `generate` use it: BOS when the tokenizer
  // defines one, else its end-of-text token.
  int32_t prefix_token() { return tokenizer().bos_token().value_or(tokenizer().end_of_text()); }

  // Token ids of a str (through the model's tokenizer) or of a sequence/array of ints.
  TokenBatch tokens_of(const py::handle& obj, const char* what) {
    if (py::isinstance<py::str>(obj)) {
      TokenBatch t;
      t.ids = tokenizer().encode(obj.cast<std::string>());
      t.cols = static_cast<int>(t.ids.size());
      if (t.ids.empty()) throw py::value_error(std::string(what) + " holds no text");
      for (int32_t id : t.ids) {
        if (id >= config().vocab_size) {
          throw py::value_error(std::string(what) + ": token " + std::to_string(id) +
                                " is outside the model's vocabulary of " +
                                std::to_string(config().vocab_size));
        }
      }
      return t;
    }
    return read_tokens(obj, config().vocab_size, what);
  }

  void require_context(int T, const char* what) const {
    if (T > config().block_size) {
      throw py::value_error(std::string(what) + " has " + std::to_string(T) +
                            " tokens per row, more than the model's n_positions " +
                            std::to_string(config().block_size));
    }
  }

  py::array_t<float> logits(const py::handle& tokens) {
    const TokenBatch t = tokens_of(tokens, "tokens");
    require_context(t.cols, "tokens");
    const int V = config().vocab_size;
    std::vector<py::ssize_t> shape = {t.rows, t.cols, V};
    py::array_t<float> out(shape);
    {
      py::gil_scoped_release release;
      model_->forward(t.ids.data(), nullptr, t.rows, t.cols, /*training=*/false);
      std::memcpy(out.mutable_data(), model_->logits(), sizeof(float) * t.ids.size() * V);
    }
    if (!t.batched) return out.attr("reshape")(t.cols, V).cast<py::array_t<float>>();
    return out;
  }

  // Mean loss and d loss / d parameter of one batch, exactly as Trainer::train_step computes
  // them for one micro-batch (targets < 0 are ignored).
  py::tuple loss_and_grads(const py::handle& inputs, const py::handle& targets) {
    TokenBatch x = read_tokens(inputs, config().vocab_size, "inputs");
    py::array tarr = py::array::ensure(targets);
    if (!tarr) throw py::type_error("targets must be an array of token ids");
    auto y = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(tarr);
    if (y.size() != static_cast<py::ssize_t>(x.ids.size()) || y.ndim() != (x.batched ? 2 : 1)) {
      throw py::value_error("targets must have the shape of inputs");
    }
    std::vector<int32_t> tg(x.ids.size());
    for (size_t i = 0; i < tg.size(); ++i) {
      const int64_t id = y.data()[i];
      if (id >= config().vocab_size) {
        throw py::value_error("targets: token id " + std::to_string(id) +
                              " is outside the vocabulary");
      }
      tg[i] = static_cast<int32_t>(std::max<int64_t>(id, -1));
    }
    require_context(x.cols, "inputs");
    float loss = 0.0f;
    {
      py::gil_scoped_release release;
      model_->zero_grad();
      loss = model_->forward(x.ids.data(), tg.data(), x.rows, x.cols, /*training=*/true);
      model_->backward();
    }
    py::dict grads;
    const float* g = model_->grad_data();
    for (const ParamInfo& p : model_->params()) {
      if (!p.trainable) continue;
      py::array_t<float> a(std::vector<py::ssize_t>(p.shape.begin(), p.shape.end()));
      std::memcpy(a.mutable_data(), g + p.offset, sizeof(float) * p.numel);
      grads[py::str(p.name)] = a;
    }
    return py::make_tuple(loss, grads);
  }

  // save_model, plus the tokenizer files of the directory the model came from, so that the saved
  // model tokenizes as this one (what `gaincell train --init` and `adapt` do).
  void save(const std::string& dir) {
    save_model(*model_, dir);
    if (dir_.empty()) return;
    std::error_code ec;
    if (std::filesystem::equivalent(dir_, dir, ec)) return;
    for (const char* name : {"tokenizer.json", "tokenizer_config.json"}) {
      const auto from = std::filesystem::path(dir_) / name;
      if (std::filesystem::is_regular_file(from, ec)) {
        write_file_atomic(std::filesystem::path(dir) / name, read_text_file(from));
      }
    }
  }

  // The parameters as NumPy views of the model's own storage (writes change the model).
  py::dict params(const py::object& self) {
    // A model loaded with weights "bf16"/"q8" holds its matrices only packed: no views of zeros.
    model_->require_fp32_weights("Model.params");
    py::dict out;
    for (const ParamInfo& p : model_->params()) {
      std::vector<py::ssize_t> shape(p.shape.begin(), p.shape.end());
      out[py::str(p.name)] = py::array_t<float>(shape, model_->param_data() + p.offset, self);
    }
    return out;
  }

  py::dict perplexity(const py::handle& text_or_tokens, int context, int stride, bool prepend_eot) {
    if (context < 0 || stride < 0) throw py::value_error("context and stride must be >= 0");
    const int ctx = context > 0 ? context : config().block_size;
    const int str = stride > 0 ? stride : ctx;
    std::vector<int32_t> tokens;
    if (prepend_eot) tokens.push_back(prefix_token());
    const TokenBatch body = tokens_of(text_or_tokens, "text");
    if (body.batched) throw py::value_error("text: one token sequence (1-D), got a batch");
    tokens.insert(tokens.end(), body.ids.begin(), body.ids.end());
    PerplexityResult r;
    {
      py::gil_scoped_release release;
      r = rolling_perplexity(*model_, tokens, ctx, str);
    }
    py::dict d;
    d["tokens"] = r.tokens;
    d["mean_nll"] = r.mean_nll;
    d["ppl"] = r.ppl;
    d["nll_sum"] = r.nll_sum;
    d["context"] = ctx;
    d["stride"] = str;
    d["windows"] = r.windows;
    d["prepend_eot"] = prepend_eot;
    d["attention"] = config().attention;
    d["nll"] = py::array_t<float>(static_cast<py::ssize_t>(r.nll.size()), r.nll.data());
    return d;
  }

  py::dict generate(const py::handle& prompt, int max_new_tokens, float temperature, int top_k,
                    uint64_t seed, bool stop_at_eot, const std::string& kv_cache) {
    require(max_new_tokens >= 0, "max_new_tokens must be >= 0");
    const KvCacheFormat kv_format = parse_kv_cache_format(kv_cache);
    SamplingOptions so;
    so.temperature = temperature;
    so.top_k = top_k;
    so.seed = seed;
    so.validate();
    std::vector<int32_t> ids;
    const bool is_text = py::isinstance<py::str>(prompt);
    if (is_text) {
      // As the tokenizer gives text to a model (BOS first for Llama 2), like `gaincell generate`.
      ids = tokenizer().encode_with_special_tokens(prompt.cast<std::string>());
    } else if (!prompt.is_none() && py::len(prompt) > 0) {
      const TokenBatch t = read_tokens(prompt, config().vocab_size, "prompt");
      if (t.batched) throw py::value_error("prompt: one token sequence (1-D), got a batch");
      ids = t.ids;
    }
    // An empty prompt starts from BOS, else <|endoftext|>, as `gaincell generate` does.
    if (ids.empty()) ids.push_back(prefix_token());
    for (int32_t id : ids) {
      require(id < config().vocab_size, "prompt token " + std::to_string(id) +
                                            " is outside the model's vocabulary of " +
                                            std::to_string(config().vocab_size));
    }
    require_context(static_cast<int>(ids.size()), "prompt");
    std::vector<int32_t> generated;
    const int32_t eot = tokenizer().end_of_text();
    {
      py::gil_scoped_release release;
      auto session = model_->start_decoding(kv_format);
      session->reserve(static_cast<int64_t>(ids.size()) + max_new_tokens);
      const float* logits = session->prefill(ids.data(), static_cast<int>(ids.size()));
      TokenSampler sampler(so);
      for (int i = 0; i < max_new_tokens; ++i) {
        const int32_t next = sampler.next(logits, config().vocab_size);
        if (next == eot && stop_at_eot) break;
        generated.push_back(next);
        if (session->position() >= config().block_size) break;
        logits = session->step(next);
      }
      last_events_ = cost::decode_session_events(*session, config());
    }
    py::dict d;
    d["prompt_tokens"] = ids;
    d["tokens"] = generated;
    d["completion"] = py::bytes(tokenizer().decode(generated)).attr("decode")("utf-8", "replace");
    return d;
  }

  // `gaincell eval --json` on this model: tasks by name (their files looked for in data_dir, as
  // --data-dir) and/or {task: file} (as --task-file), in that order.
  py::object evaluate(const std::vector<std::string>& tasks, const std::string& data_dir,
                      const std::map<std::string, std::string>& task_files,
                      std::optional<int64_t> limit, int batch_size, int bootstrap_iters,
                      bool share_context) {
    require(!limit || *limit > 0, "limit must be a positive number of documents (or None)");
    require(batch_size >= 1, "batch_size must be >= 1");
    require(bootstrap_iters >= 0, "bootstrap_iters must be >= 0");
    std::vector<std::string> names = tasks;
    for (const auto& [task, file] : task_files)
      if (std::find(names.begin(), names.end(), task) == names.end()) names.push_back(task);
    require(!names.empty(), "nothing to evaluate: give tasks (and data_dir) or task_files");
    std::vector<eval::TaskFile> files;
    for (const std::string& name : names) {
      const eval::TaskInfo& info = eval::task_info(name);
      if (auto it = task_files.find(name); it != task_files.end()) {
        files.push_back({name, it->second});
      } else {
        require(!data_dir.empty(),
                "task " + name + ": give data_dir or task_files={'" + name + "': PATH}");
        files.push_back({name, eval::find_task_file(info, data_dir)});
      }
    }
    eval::EvalOptions options;
    options.batch_size = batch_size;
    options.bootstrap_iters = bootstrap_iters;
    options.share_context = share_context;
    std::vector<eval::TaskResult> results;
    {
      py::gil_scoped_release release;
      const eval::TaskEvaluator evaluator(tokenizer(), files, limit.value_or(-1),
                                          config().block_size);
      results = evaluator.evaluate(*model_, options);
    }
    nlohmann::json report = eval::results_json(results);
    nlohmann::json data_files = nlohmann::json::object();
    for (const eval::TaskFile& f : files) data_files[f.task] = f.file.string();
    report["config"] = {{"attention", config().attention},
                        {"window", config().window},
                        {"weights", to_string(model_->weight_format())},
                        {"hw", config().hw.to_json()},
                        {"noise_seed", config().hw.noise.seed},
                        {"n_positions", config().block_size},
                        {"tokenizer", config().tokenizer},
                        {"limit", limit ? nlohmann::json(*limit) : nlohmann::json(nullptr)},
                        {"batch_size", batch_size},
                        {"share_context", share_context},
                        {"bootstrap_iters", bootstrap_iters},
                        {"data_files", data_files},
                        {"gaincell_version", GAINCELL_VERSION}};
    return from_json(report);
  }

  // `gaincell cost` for this model's shape and hardware configuration; with use_trace, the
  // activity-based energy from the events of the last generate() (gain-cell variants).
  py::object cost(std::optional<int64_t> tokens, std::optional<int64_t> batch,
                  const std::string& preset, bool use_trace) {
    cost::CostReportInputs in;
    in.hw = config().hw;
    in.hw.validate();
    in.cost = cost::CostConfig::load(preset);
    in.cost.validate();
    in.shape = cost::ModelShape::from_hf_config(config().to_json(), "gaincell.Model");
    if (tokens) in.shape.tokens = *tokens;
    if (batch) in.shape.batch = *batch;
    in.shape.validate();
    if (use_trace) {
      require(last_events_.has_value(),
              "cost(use_trace=True) needs a generate() call on a gain-cell attention variant "
              "first (the model runs '" +
                  config().attention + "')");
      in.events = last_events_;
      in.trace_file = "gaincell.Model.generate";
    }
    in.measured_dir = cost::default_measured_dir();
    return from_json(cost::build_cost_report(in).to_json());
  }

 private:
  std::unique_ptr<GPT2Model> model_;
  std::string vocab_dir_;
  std::string dir_;  // the model directory (empty for from_config models)
  std::optional<Tokenizer> tok_;
  std::optional<cost::HardwareEventCounts> last_events_;
};

std::unique_ptr<Model> load(const std::string& dir, std::optional<std::string> attention,
                            std::optional<int> window, const py::object& hw, bool linear_layout,
                            const std::string& vocab, bool verbose, const std::string& weights) {
  LoadModelOptions o;
  o.weights = parse_weight_format(weights);
  o.overrides.attention = attention;
  o.overrides.window = window;
  if (!hw.is_none()) o.overrides.hw = hw_from_object(hw);
  o.layout = linear_layout ? WeightLayout::kLinear : WeightLayout::kAuto;
  if (verbose) o.log = [](const std::string& line) { py::print("gaincell:", line); };
  std::unique_ptr<GPT2Model> m;
  if (verbose) {
    m = load_model(dir, o);  // the log callback needs the GIL
  } else {
    py::gil_scoped_release release;
    m = load_model(dir, o);
  }
  return std::make_unique<Model>(std::move(m), vocab, dir);
}

std::unique_ptr<Model> from_config(const py::object& config, std::optional<uint64_t> seed,
                                   const std::string& vocab) {
  GPT2Config c = py::isinstance<py::str>(config) ? GPT2Config::named(config.cast<std::string>())
                                                 : GPT2Config::from_json(to_json(config));
  c.validate();
  auto m = std::make_unique<GPT2Model>(c);
  if (seed) m->init_random(*seed);
  return std::make_unique<Model>(std::move(m), vocab);
}

// `gaincell sweep` (docs/sweeps.md): the sweep file as a path or a dict (paths in a dict resolve
// against the working directory); returns the outcome and the result lines of OUT/results.jsonl.
py::object run_sweep(const std::string& model_dir, const py::object& spec_obj,
                     const std::string& out, int jobs, bool resume,
                     std::optional<std::string> tokens, std::optional<std::string> train_tokens,
                     std::optional<int64_t> limit, std::optional<int> seeds,
                     std::optional<std::string> weights, const std::string& executable,
                     bool quiet) {
  namespace fs = std::filesystem;
  // A dict goes through Python's json.dumps, which keeps its key order (the axes' order).
  sweep::SweepSpec spec =
      py::isinstance<py::dict>(spec_obj)
          ? sweep::SweepSpec::parse(py::module_::import("json")
                                        .attr("dumps")(spec_obj, py::arg("allow_nan") = false)
                                        .cast<std::string>(),
                                    fs::current_path())
          : sweep::SweepSpec::load(spec_obj.cast<std::string>());
  // The overrides of the CLI's --tokens, --train-tokens, --limit, --seeds, --weights.
  if (tokens) spec.evaluation.tokens = fs::absolute(*tokens);
  if (train_tokens) spec.prepare.tokens = fs::absolute(*train_tokens);
  if (limit) spec.evaluation.limit = *limit;
  if (seeds) spec.seeds = *seeds;
  if (weights) {
    parse_weight_format(*weights);
    spec.weights = *weights;
  }
  sweep::SweepRunOptions o;
  o.out_dir = out;
  o.jobs = jobs;
  o.resume = resume;
  o.executable = executable;
  sweep::SweepOutcome r;
  if (quiet) {
    py::gil_scoped_release release;
    r = sweep::run_sweep(spec, model_dir, o);
  } else {
    o.log = [](const std::string& line) { py::print("gaincell:", line); };
    r = sweep::run_sweep(spec, model_dir, o);  // the log callback needs the GIL
  }
  nlohmann::json results = sweep::read_results(o.out_dir / "results.jsonl");
  return from_json({{"points", r.points},
                    {"ran", r.ran},
                    {"resumed", r.resumed},
                    {"failed", r.failed},
                    {"out", out},
                    {"results", results}});
}

}  // namespace

void bind_model(py::module_& m) {
  m.def("_sweep", &run_sweep, py::arg("model"), py::arg("spec"), py::arg("out"),
        py::arg("jobs") = 1, py::arg("resume") = false, py::arg("tokens") = py::none(),
        py::arg("train_tokens") = py::none(), py::arg("limit") = py::none(),
        py::arg("seeds") = py::none(), py::arg("weights") = py::none(), py::arg("executable") = "",
        py::arg("quiet") = true,
        "`gaincell sweep` (use gaincell.sweep, which finds the CLI for jobs > 1).");
  py::class_<Model>(m, "Model", R"(A GPT-2-family model on the simulator.

Model.load(dir, attention=None, window=None, hw=None, weights="f32") loads a model directory as
the CLI does (--attention, --window, --hw, --weights override its config.json). Model.from_config(config, seed) builds a
new one from a config dict (config.json keys) or a name ("gpt2", "tiny"), random when seeded.)")
      .def_static("load", &load, py::arg("path"), py::arg("attention") = py::none(),
                  py::arg("window") = py::none(), py::arg("hw") = py::none(),
                  py::arg("linear_layout") = false, py::arg("vocab") = "",
                  py::arg("verbose") = false, py::arg("weights") = "f32")
      .def_static("from_config", &from_config, py::arg("config"), py::arg("seed") = py::none(),
                  py::arg("vocab") = "")
      .def_property_readonly("config",
                             [](const Model& s) { return from_json(s.config().to_json()); })
      .def_property_readonly("attention", [](const Model& s) { return s.config().attention; })
      .def_property_readonly("hw", [](const Model& s) { return s.config().hw; })
      .def_property_readonly("vocab_size", [](const Model& s) { return s.config().vocab_size; })
      .def_property_readonly("weights", [](Model& s) { return to_string(s.gpt().weight_format()); })
      .def_property_readonly("block_size", [](const Model& s) { return s.config().block_size; })
      .def("save", &Model::save, py::arg("path"),
           "Writes a model directory (config.json, model.safetensors; the tokenizer.json and "
           "tokenizer_config.json of the directory it was loaded from, as the CLI copies them).")
      .def(
          "encode", [](Model& s, const std::string& text) { return s.tokenizer().encode(text); },
          py::arg("text"))
      .def(
          "decode",
          [](Model& s, const py::handle& ids) {
            const TokenBatch t = read_tokens(ids, s.config().vocab_size, "ids");
            return py::bytes(s.tokenizer().decode(t.ids)).attr("decode")("utf-8", "replace");
          },
          py::arg("ids"))
      .def_property_readonly("end_of_text", [](Model& s) { return s.tokenizer().end_of_text(); })
      .def(
          "params", [](py::object self) { return self.cast<Model&>().params(self); },
          "Parameters by name: NumPy views of the model's storage (writing changes the model).")
      .def("logits", &Model::logits, py::arg("tokens"),
           "Logits [T, V] (or [B, T, V] for a 2-D input) of token ids or a str.")
      .def("loss_and_grads", &Model::loss_and_grads, py::arg("inputs"), py::arg("targets"),
           "(mean cross-entropy, {name: gradient}) of one batch, as one training micro-step.")
      .def("perplexity", &Model::perplexity, py::arg("text"), py::arg("context") = 0,
           py::arg("stride") = 0, py::arg("prepend_eot") = true,
           "`gaincell perplexity --per-token` of a str or token ids: dict with tokens, mean_nll, "
           "ppl, windows and nll (per predicted token, NumPy).")
      .def(
          "log_likelihoods",
          [](Model& s, const py::handle& tokens, int context, int stride) {
            py::dict r = s.perplexity(tokens, context, stride, /*prepend_eot=*/false);
            return py::array(-r["nll"].cast<py::array_t<float>>().attr("astype")("float64"));
          },
          py::arg("tokens"), py::arg("context") = 0, py::arg("stride") = 0,
          "log p(tokens[i] | tokens[:i]) for i >= 1 (rolling windows of `context` tokens).")
      .def("generate", &Model::generate, py::arg("prompt") = "", py::arg("max_new_tokens") = 64,
           py::arg("temperature") = 1.0f, py::arg("top_k") = 0, py::arg("seed") = 1337,
           py::arg("stop_at_eot") = true, py::arg("kv_cache") = "f32",
           "Token-by-token generation (simulated arrays for gain-cell variants), as `gaincell "
           "generate`: dict with completion, tokens, prompt_tokens. kv_cache 'bf16' stores the "
           "softmax variants' KV cache in bfloat16 (as --kv-cache).")
      .def("evaluate", &Model::evaluate, py::arg("tasks") = std::vector<std::string>{},
           py::arg("data_dir") = "", py::arg("task_files") = std::map<std::string, std::string>{},
           py::arg("limit") = py::none(), py::arg("batch_size") = 8,
           py::arg("bootstrap_iters") = 100000, py::arg("share_context") = true,
           "`gaincell eval --json`: lm-eval tasks scored with the harness's rules; dict with "
           "results[task][metric], n-samples and config.")
      .def("cost", &Model::cost, py::arg("tokens") = py::none(), py::arg("batch") = py::none(),
           py::arg("preset") = "paper", py::arg("use_trace") = false,
           "`gaincell cost --json` for this model's shape and hardware.");
}

}  // namespace gaincell::python
