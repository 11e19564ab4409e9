#include "gaincell/tools/sweep/sweep_runner.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/core/error.h"
#include "gaincell/core/json.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/tools/adapt/adaptation.h"
#include "gaincell/tools/cost/cost_report.h"
#include "gaincell/tools/sweep/statistics.h"
#include "gaincell/train/trainer.h"

namespace gaincell::sweep {

using nlohmann::json;
namespace fs = std::filesystem;

SweepContext::~SweepContext() = default;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) {
  return std::chrono::duration<double>(Clock::now() - start).count();
}

// Stage A of the recipe records per-head target statistics (buffers ending in target_std); a
// model without them (all zero) cannot be adapted.
bool has_adaptation_targets(const GPT2Model& model) {
  for (const ParamInfo& p : model.params()) {
    if (p.name.size() < 10 || p.name.compare(p.name.size() - 10, 10, "target_std") != 0) continue;
    const float* x = model.param_data() + p.offset;
    for (int64_t i = 0; i < p.numel; ++i)
      if (x[i] != 0.0f) return true;
  }
  return false;
}

// The gain-cell variant fixes the cell model (attention/gaincell_attention.h); a point asking
// for another cell would silently run the variant's, so it is refused.
void check_cell_model(const SweepPoint& point, const std::string& attention) {
  const CellModel cell = gaincell_cell_model(attention);
  if (point.hw.cell == cell) return;
  throw Error("sweep point " + std::to_string(point.index) + " (" + point.label() +
              "): hardware cell model '" + to_string(point.hw.cell) + "' differs from '" +
              to_string(cell) + "', the cell of the attention variant '" + attention +
              "' that runs it; set the sweep's \"attention\" to the variant of that cell (or use "
              "a base configuration with the '" +
              to_string(cell) + "' cell)");
}

void prepare_adaptation_batch(SweepContext& ctx) {
  const PrepareSpec& p = ctx.spec.prepare;
  if (!p.any()) return;
  require(!p.tokens.empty(),
          "sweep: prepare.tokens (a training token file such as DIR/train.bin) is required for "
          "the adaptation and the fine-tune (or give --train-tokens)");
  ctx.train_tokens = TokenDataset::open(p.tokens, ctx.prototype->config().vocab_size);
  const int block = ctx.prototype->config().block_size;
  ctx.adapt_T = p.seq_len > 0 ? p.seq_len : block;
  require(ctx.adapt_T <= block, "sweep: prepare.seq_len exceeds the model's n_positions");
  require(ctx.train_tokens->size() > static_cast<size_t>(ctx.adapt_T),
          "sweep: prepare.tokens holds too few tokens for one sequence of " +
              std::to_string(ctx.adapt_T));
  if (p.adapt != "none") {
    require(has_adaptation_targets(*ctx.prototype),
            "sweep: prepare.adapt needs the stage-A target statistics (target_mean/target_std) "
            "in the model; '" +
                ctx.model_dir.string() +
                "' has none (use a model from `gaincell pipeline` or the demo)");
    BatchSampler sampler(*ctx.train_tokens, p.batch, ctx.adapt_T, p.batch_seed);
    ctx.adapt_inputs.resize(static_cast<size_t>(p.batch) * ctx.adapt_T);
    ctx.adapt_targets.resize(ctx.adapt_inputs.size());
    sampler.next(ctx.adapt_inputs.data(), ctx.adapt_targets.data());
  }
}

// The Pareto objective must be a metric of the evaluation: checked before any point runs.
void check_objective(const std::string& objective, const std::vector<MetricInfo>& metrics) {
  if (objective.empty()) return;
  std::string known;
  for (const MetricInfo& m : metrics) {
    if (m.name == objective) return;
    known += (known.empty() ? "" : ", ") + m.name;
  }
  throw Error("sweep file: 'objective' '" + objective + "' is not a metric of the evaluation (" +
              known + ")");
}

}  // namespace

std::unique_ptr<SweepContext> open_sweep(const SweepSpec& spec, const fs::path& model_dir,
                                         LogFn log) {
  auto ctx = std::make_unique<SweepContext>();
  ctx->spec = spec;
  ctx->model_dir = model_dir;
  ctx->log = log;
  ctx->points = spec.points();
  LoadModelOptions load;
  const GPT2Config stored = read_model_config(model_dir);
  const std::string attention = spec.attention.empty() ? stored.attention : spec.attention;
  require(
      is_gaincell_attention(attention),
      "sweep: the model's attention '" + attention +
          "' does not run on gain-cell hardware; set \"attention\" in the sweep file to a "
          "gain-cell variant (" +
          [] {
            std::string s;
            for (const auto& n : gaincell_attention_names()) s += (s.empty() ? "" : ", ") + n;
            return s;
          }() +
          ")");
  for (const SweepPoint& p : ctx->points) check_cell_model(p, attention);
  load.overrides.attention = attention;
  load.overrides.hw = spec.base_hw();
  load.overrides.hw->cell = gaincell_cell_model(attention);
  if (log) load.log = [log](const std::string& line) { log(line); };
  ctx->prototype = load_model(model_dir, load);
  ctx->evaluator = make_evaluator(spec.evaluation, ctx->prototype->config());
  check_objective(spec.objective, ctx->evaluator->metrics());
  ctx->weights = parse_weight_format(spec.weights);
  prepare_adaptation_batch(*ctx);
  ctx->cost = cost::CostConfig::load(spec.cost.preset);
  const GPT2Config& c = ctx->prototype->config();
  ctx->shape.n_layer = c.n_layer;
  ctx->shape.n_head = c.n_head;
  ctx->shape.head_dim = c.head_dim();
  ctx->shape.tokens = spec.cost.tokens;
  ctx->shape.batch = spec.cost.batch;
  ctx->shape.source = "the swept model (" + model_dir.string() + "); sweep file cost.tokens/batch";
  ctx->shape.validate();
  return ctx;
}

std::unique_ptr<GPT2Model> model_with_hw(const SweepContext& ctx, const HwConfig& hw) {
  GPT2Config config = ctx.prototype->config();
  config.hw = hw;
  auto model = std::make_unique<GPT2Model>(config);
  require(model->num_params() == ctx.prototype->num_params(),
          "sweep: the point's model has another parameter layout than the loaded one");
  std::copy_n(ctx.prototype->param_data(), ctx.prototype->num_params(), model->param_data());
  return model;
}

json point_cost(const SweepContext& ctx, const HwConfig& hw) {
  cost::CostReportInputs in;
  in.hw = hw;
  in.cost = ctx.cost;
  in.shape = ctx.shape;
  in.measured_dir = cost::default_measured_dir();
  const cost::CostReport report = cost::build_cost_report(in);
  const cost::CostEstimate& e = report.estimate;
  const double heads = static_cast<double>(ctx.shape.n_layer) * ctx.shape.n_head;
  json gpus = json::array();
  for (const auto& g : report.gpus)
    gpus.push_back({{"gpu", g.gpu},
                    {"source", g.source},
                    {"speedup", g.speedup},
                    {"energy_reduction", g.energy_reduction}});
  return {{"energy_per_token_per_head_j", e.energy_per_token_per_head_j},
          {"latency_per_token_per_layer_s", e.latency_per_token_s},
          {"area_per_head_mm2", e.area_per_head_mm2},
          {"array_area_per_head_mm2", e.array_area_per_head_mm2},
          {"energy_per_token_j", e.energy_per_token_per_head_j * heads},
          {"latency_per_token_s", e.latency_per_token_s * ctx.shape.n_layer},
          {"area_mm2", e.area_per_head_mm2 * heads},
          {"heads", heads},
          {"cost_preset", ctx.cost.name},
          {"gpus", gpus}};
}

namespace {

// Adaptation (and fine-tune) of one seed's model, as the sweep file asks; returns their record.
json prepare_model(SweepContext& ctx, GPT2Model& model) {
  const PrepareSpec& p = ctx.spec.prepare;
  json record = json::object();
  if (p.adapt != "none") {
    AdaptationOptions options;
    options.reset = p.adapt == "from-reset";
    options.matching.max_passes = p.max_passes;
    const AdaptationResult r =
        adapt_scalers(model, ctx.adapt_inputs, ctx.adapt_targets, p.batch, ctx.adapt_T, options);
    record["adaptation"] = {{"converged", r.converged},
                            {"passes", r.passes.size()},
                            {"initial_loss", r.initial_loss},
                            {"final_loss", r.final_loss},
                            {"unconverged", r.unconverged.size()}};
  }
  if (p.finetune_steps > 0) {
    TrainOptions t;
    t.steps = p.finetune_steps;
    t.batch_size = p.finetune_batch;
    t.seq_len = ctx.adapt_T;
    t.lr = p.finetune_lr;
    t.min_lr = p.finetune_lr / 10;
    t.warmup_steps = std::max<int64_t>(1, p.finetune_steps / 10);
    t.eval_interval = 0;
    t.log_interval = 0;
    t.seed = p.batch_seed;
    Trainer trainer(model, *ctx.train_tokens, nullptr, t);
    const TrainResult r = trainer.run();
    record["finetune"] = {{"steps", r.steps}, {"final_loss", r.final_loss}};
  }
  return record;
}

json adaptation_summary(const std::vector<json>& per_seed) {
  int adapted = 0, converged = 0;
  double passes = 0;
  for (const json& s : per_seed) {
    if (!s.contains("adaptation")) continue;
    ++adapted;
    converged += s["adaptation"]["converged"].get<bool>() ? 1 : 0;
    passes += s["adaptation"]["passes"].get<double>();
  }
  if (adapted == 0) return nullptr;
  return {{"seeds_converged", converged}, {"seeds", adapted}, {"mean_passes", passes / adapted}};
}

}  // namespace

json run_point(SweepContext& ctx, int index) {
  require(index >= 0 && index < static_cast<int>(ctx.points.size()),
          "sweep: point " + std::to_string(index) + " does not exist (the sweep has " +
              std::to_string(ctx.points.size()) + ")");
  const SweepPoint& point = ctx.points[index];
  const auto start = Clock::now();
  json line = {{"point", index}, {"label", point.label()}, {"axes", point.axes_json()}};
  HwConfig hw = point.hw;
  line["hw"] = hw.to_json();
  line["weights"] = to_string(ctx.weights);
  json seeds = json::array();
  for (int s = 0; s < ctx.spec.seeds; ++s) seeds.push_back(point.hw.noise.seed + s);
  line["seeds"] = seeds;
  double eval_seconds = 0.0, prepare_seconds = 0.0;
  try {
    std::map<std::string, std::vector<double>> values;
    std::vector<json> per_seed;
    for (int s = 0; s < ctx.spec.seeds; ++s) {
      hw.noise.seed = point.hw.noise.seed + static_cast<uint64_t>(s);
      auto model = model_with_hw(ctx, hw);
      const auto t0 = Clock::now();
      json record = prepare_model(ctx, *model);
      // Packed after the adaptation and fine-tune, which need the fp32 weights.
      model->set_weight_format(ctx.weights);
      prepare_seconds += seconds_since(t0);
      const auto t1 = Clock::now();
      const auto metrics = ctx.evaluator->evaluate(*model);
      eval_seconds += seconds_since(t1);
      record["seed"] = hw.noise.seed;
      for (const auto& [name, v] : metrics) {
        require(std::isfinite(v),
                "metric '" + name + "' is not finite for seed " + std::to_string(hw.noise.seed));
        values[name].push_back(v);
        record["metrics"][name] = v;
      }
      per_seed.push_back(std::move(record));
    }
    json metrics = json::object();
    for (const MetricInfo& m : ctx.evaluator->metrics())
      metrics[m.name] = seed_statistics(values.at(m.name)).to_json();
    line["status"] = "ok";
    line["metrics"] = metrics;
    line["per_seed"] = per_seed;
    if (json a = adaptation_summary(per_seed); !a.is_null()) line["adaptation"] = a;
  } catch (const Error& e) {
    line["status"] = "failed";
    line["error"] = e.what();
  }
  try {
    line["cost"] = point_cost(ctx, point.hw);
  } catch (const Error& e) {
    line["status"] = "failed";
    line["error"] = json_string_or(line, "error", "", "sweep result") +
                    (line.contains("error") ? "; " : "") + "cost model: " + e.what();
  }
  line["timing"] = {{"seconds", seconds_since(start)},
                    {"evaluation_s", eval_seconds},
                    {"prepare_s", prepare_seconds}};
  return line;
}

}  // namespace gaincell::sweep
