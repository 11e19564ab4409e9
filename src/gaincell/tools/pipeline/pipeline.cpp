#include "gaincell/tools/pipeline/pipeline.h"

#include <cmath>
#include <vector>

#include "gaincell/core/comm.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/train/perplexity.h"

namespace gaincell {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr const char* kStageMarker = "stage.json";

bool stage_done(const fs::path& dir) {
  return fs::exists(dir / kStageMarker);
}

// A stage directory with a committed checkpoint (`latest`, or the files of the single-directory
// layout of earlier versions): the stage resumes from it.
bool holds_checkpoint(const fs::path& dir) {
  std::error_code ec;
  return fs::exists(fs::symlink_status(dir / "latest", ec)) ||
         fs::exists(dir / "training_state.json", ec);
}

json read_stage(const fs::path& dir) {
  return read_json_file(dir / kStageMarker);
}

// Data parallel (under mpirun, docs/scale-out.md): every rank runs every stage (the training
// and the adaptation are collective), rank 0 alone writes, and the others wait until it has, so
// that every rank then reads the same files.
void write_on_root(const std::function<void()>& write) {
  Comm& comm = world_comm();
  if (comm.is_root()) write();
  comm.barrier();
}

void write_stage(const fs::path& dir, const json& j) {
  write_on_root([&] { write_file_atomic(dir / kStageMarker, j.dump(2) + "\n"); });
}

json evaluation_json(const StageEvaluation& e) {
  return {{"val_loss", e.loss}, {"val_ppl", e.ppl}, {"val_tokens", e.tokens}};
}

void set_record_targets(GPT2Model& model, bool on) {
  for (int l = 0; l < model.config().n_layer; ++l) model.attention(l).set_record_targets(on);
}

std::unique_ptr<GPT2Model> load_as(const fs::path& dir, const std::string& attention,
                                   const HwConfig& hw,
                                   const std::function<void(const std::string&)>& log) {
  LoadModelOptions load;
  load.overrides.attention = attention;
  load.overrides.hw = hw;
  if (log) load.log = log;
  return load_model(dir, load);
}

json history_json(const Trainer& t) {
  json losses = json::array(), val = json::array();
  for (float l : t.loss_history()) losses.push_back(l);
  for (const auto& [step, loss] : t.val_history()) val.push_back({step, loss});
  return {{"train_loss", losses}, {"val_loss", val}};
}

// Trains `model` (already loaded from `init_or_checkpoint`) into `dir`, resuming when `dir`
// holds a checkpoint of an interrupted run. Returns the stage's summary.
json run_training_stage(const std::string& name, GPT2Model& model, const fs::path& dir, bool resume,
                        TrainOptions options, const TokenDataset& train, const TokenDataset& val,
                        int64_t eval_tokens, const std::function<void(const std::string&)>& log) {
  options.out_dir = dir;
  if (options.checkpoint_interval == 0) options.checkpoint_interval = 50;
  Trainer trainer(model, train, &val, options);
  if (resume) {
    trainer.resume(dir);
    if (log) log("stage " + name + ": resumed at step " + std::to_string(trainer.step()));
  }
  const TrainResult r = trainer.run();
  const StageEvaluation e = evaluate_on_tokens(model, val, options.seq_len, eval_tokens);
  json j = evaluation_json(e);
  j["stage"] = name;
  j["attention"] = model.config().attention;
  j["train"] = r.to_json();
  j["train_options"] = options.to_json();
  j["history"] = history_json(trainer);
  j["gaincell_hw"] = model.config().hw.to_json();
  return j;
}

// The options a run directory is bound to (stop_after only says where this call stops).
json recorded_options(const PipelineOptions& o) {
  json j = o.to_json();
  j.erase("stop_after");
  return j;
}

}  // namespace

void PipelineOptions::validate() const {
  require(!init_dir.empty(), "pipeline: --init is required");
  require(!data_dir.empty(), "pipeline: --data is required");
  require(!out_dir.empty(), "pipeline: --out is required");
  require(adapt_batch >= 1, "pipeline: the adaptation batch must hold at least one sequence");
  require(eval_tokens >= 0, "pipeline: eval tokens must be >= 0");
  require(stop_after.empty() || stop_after == "A" || stop_after == "B",
          "pipeline: stop_after must be empty, \"A\" or \"B\"");
  stage_a.validate();
  stage_c.validate();
  adaptation.matching.validate();
}

json PipelineOptions::to_json() const {
  return {{"init", init_dir.string()},
          {"data", data_dir.string()},
          {"out", out_dir.string()},
          {"linear_attention", linear_attention},
          {"nonlinear_attention", nonlinear_attention},
          {"stage_a", stage_a.to_json()},
          {"stage_c", stage_c.to_json()},
          {"adaptation", adaptation.to_json()},
          {"adapt_batch", adapt_batch},
          {"adapt_seed", adapt_seed},
          {"eval_tokens", eval_tokens}};
}

StageEvaluation evaluate_on_tokens(GPT2Model& model, const TokenDataset& val, int context,
                                   int64_t max_tokens) {
  const int64_t n =
      max_tokens > 0 ? std::min<int64_t>(max_tokens, val.size()) : static_cast<int64_t>(val.size());
  require(n >= 2, "pipeline: the validation set needs at least 2 tokens");
  std::vector<int32_t> tokens = val.slice(0, n);
  const PerplexityResult p = rolling_perplexity(model, tokens, context, context);
  return {p.mean_nll, p.ppl, p.tokens};
}

bool holds_other_pipeline_run(const PipelineOptions& o) {
  const fs::path options_file = o.out_dir / "pipeline_options.json";
  if (!fs::exists(options_file)) return false;
  try {
    return read_json_file(options_file) != recorded_options(o);
  } catch (const Error&) {
    return true;  // unreadable or corrupt: not this run's file
  }
}

json run_pipeline(const PipelineOptions& o, const std::function<void(const std::string&)>& log) {
  o.validate();
  const HwConfig hw_linear = o.hw_linear.value_or(HwConfig::preset("paper-linear"));
  const HwConfig hw_nonlinear = o.hw_nonlinear.value_or(HwConfig::preset("paper-nonlinear"));
  const GPT2Config init_config = read_model_config(o.init_dir);
  const TokenDataset train = TokenDataset::open(o.data_dir / "train.bin", init_config.vocab_size);
  const TokenDataset val = TokenDataset::open(o.data_dir / "val.bin", init_config.vocab_size);
  const fs::path dir_a = o.out_dir / "A", dir_b = o.out_dir / "B", dir_c = o.out_dir / "C";
  const int T = o.stage_a.seq_len;

  // A run directory belongs to one set of options: a rerun with other options would mix stages.
  require(!holds_other_pipeline_run(o), "pipeline: '" + o.out_dir.string() +
                                            "' holds a run with other options; use another "
                                            "--out or delete it");
  const fs::path options_file = o.out_dir / "pipeline_options.json";
  const bool fresh = !fs::exists(options_file);
  write_on_root([&] {
    // The temporaries of a killed run's atomic writes (stage.json, pipeline.json, B's model).
    for (const fs::path& dir : {o.out_dir, dir_a, dir_b, dir_c})
      if (fs::is_directory(dir)) remove_stale_temporaries(dir);
    if (fresh) write_file_atomic(options_file, recorded_options(o).dump(2) + "\n");
  });
  json summary = {{"options", o.to_json()}};
  {
    std::unique_ptr<GPT2Model> init = load_model(o.init_dir);
    summary["init"] = evaluation_json(evaluate_on_tokens(*init, val, T, o.eval_tokens));
    summary["init"]["attention"] = init->config().attention;
  }

  // Stage A: linear intermediate model with target recording.
  if (!stage_done(dir_a)) {
    const bool resume = holds_checkpoint(dir_a);
    if (log) log(resume ? "stage A: resuming" : "stage A: linear intermediate model");
    auto model = load_as(resume ? dir_a : o.init_dir, o.linear_attention, hw_linear, log);
    set_record_targets(*model, true);
    TrainOptions a = o.stage_a;
    a.data_dir = o.data_dir;
    write_stage(dir_a,
                run_training_stage("A", *model, dir_a, resume, a, train, val, o.eval_tokens, log));
  }
  summary["A"] = read_stage(dir_a);
  if (o.stop_after == "A") return summary;

  // Stage B: the same weights on the nonlinear cell, then the statistics matching.
  if (!stage_done(dir_b)) {
    if (log) log("stage B: adaptation of the nonlinear model");
    auto model = load_as(dir_a, o.nonlinear_attention, hw_nonlinear, log);
    // Two unadapted models: stage A's scalers on the nonlinear cell, and the algorithm's start
    // (the same, or a = 1, b = 0 with --reset, as in the paper's Fig. 4c script, spec §5.2).
    const StageEvaluation with_a_scalers = evaluate_on_tokens(*model, val, T, o.eval_tokens);
    if (o.adaptation.reset) reset_adapted_scalers(*model);
    const StageEvaluation unadapted =
        o.adaptation.reset ? evaluate_on_tokens(*model, val, T, o.eval_tokens) : with_a_scalers;
    BatchSampler sampler(train, o.adapt_batch, T, o.adapt_seed);
    std::vector<int32_t> x(static_cast<size_t>(o.adapt_batch) * T), y(x.size());
    sampler.next(x.data(), y.data());
    const AdaptationResult r =
        adapt_scalers(*model, x, y, o.adapt_batch, T, o.adaptation, [&](const AdaptationPass& p) {
          if (log)
            log("stage B: pass " + std::to_string(p.pass) + " loss " + std::to_string(p.loss) +
                " converged " + std::to_string(p.converged) + "/" + std::to_string(p.statistics));
        });
    const StageEvaluation adapted = evaluate_on_tokens(*model, val, T, o.eval_tokens);
    write_on_root([&] { save_model(*model, dir_b); });
    json j = evaluation_json(adapted);
    j["stage"] = "B";
    j["attention"] = model->config().attention;
    j["unadapted"] = evaluation_json(unadapted);
    j["unadapted_stage_a_scalers"] = evaluation_json(with_a_scalers);
    j["adaptation"] = r.to_json();
    j["adaptation_options"] = o.adaptation.to_json();
    j["gaincell_hw"] = model->config().hw.to_json();
    write_stage(dir_b, j);
  }
  summary["B"] = read_stage(dir_b);
  if (o.stop_after == "B") return summary;

  // Stage C: hardware-aware fine-tuning of the adapted nonlinear model.
  if (!stage_done(dir_c)) {
    const bool resume = holds_checkpoint(dir_c);
    if (log) log(resume ? "stage C: resuming" : "stage C: nonlinear fine-tuning");
    auto model = load_as(resume ? dir_c : dir_b, o.nonlinear_attention, hw_nonlinear, log);
    TrainOptions c = o.stage_c;
    c.data_dir = o.data_dir;
    write_stage(dir_c,
                run_training_stage("C", *model, dir_c, resume, c, train, val, o.eval_tokens, log));
  }
  summary["C"] = read_stage(dir_c);

  summary["ppl_softmax"] = summary["init"]["val_ppl"];
  summary["ppl_linear"] = summary["A"]["val_ppl"];
  summary["ppl_nonlinear_unadapted"] = summary["B"]["unadapted"]["val_ppl"];
  summary["ppl_nonlinear_stage_a_scalers"] = summary["B"]["unadapted_stage_a_scalers"]["val_ppl"];
  summary["ppl_nonlinear_adapted"] = summary["B"]["val_ppl"];
  summary["ppl_nonlinear_finetuned"] = summary["C"]["val_ppl"];
  write_on_root([&] { write_file_atomic(o.out_dir / "pipeline.json", summary.dump(2) + "\n"); });
  return summary;
}

}  // namespace gaincell
