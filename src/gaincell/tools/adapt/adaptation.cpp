#include "gaincell/tools/adapt/adaptation.h"

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "gaincell/core/error.h"
#include "gaincell/train/data_parallel.h"

namespace gaincell {

namespace {

// Views of one scaler's tensors in the model's parameter buffer.
struct ScalerTensors {
  std::string name;  // "h.3.attn.q_scaler" (GPT-2), "model.layers.3.attn.q_scaler" (Llama)
  std::span<float> a, b, target_mean, target_std;
};

std::span<float> param_span(GPT2Model& model, const std::string& name) {
  const ParamInfo& p = model.param(name);
  return {model.param_data() + p.offset, static_cast<size_t>(p.numel)};
}

std::vector<std::vector<ScalerTensors>> find_scalers(GPT2Model& model) {
  std::vector<std::vector<ScalerTensors>> layers(model.config().n_layer);
  for (int l = 0; l < model.config().n_layer; ++l) {
    for (int s = 0; s < ScalerStatistics::kCount; ++s) {
      const std::string base =
          model.layer_prefix(l) + "attn." + ScalerStatistics::kNames[s] + "_scaler";
      layers[l].push_back({base, param_span(model, base + ".a"), param_span(model, base + ".b"),
                           param_span(model, base + ".target_mean"),
                           param_span(model, base + ".target_std")});
    }
  }
  return layers;
}

void check_adaptable(GPT2Model& model) {
  const std::string& name = model.config().attention;
  bool has_scalers = false;
  const std::string first = model.layer_prefix(0) + "attn.q_scaler.a";
  for (const ParamInfo& p : model.params()) has_scalers |= p.name == first;
  require(has_scalers,
          "adaptation needs a gain-cell attention variant with range scalers; the "
          "model uses '" +
              name + "'");
}

// A model whose target buffers are all zero never had targets recorded (a single scaler may
// legitimately have a zero std, e.g. an output that quantises to 0 everywhere).
void check_targets_recorded(const std::vector<std::vector<ScalerTensors>>& layers) {
  for (const auto& layer : layers) {
    for (const ScalerTensors& s : layer) {
      for (float x : s.target_std)
        if (x != 0.0f) return;
    }
  }
  throw Error(
      "model has no target statistics (every *_scaler.target_std is zero): train the linear "
      "intermediate model (stage A) with target recording first");
}

// The forward of this rank's rows; the loss is the mean over the whole batch (each rank's mean
// over its equal share, averaged over the ranks).
float training_forward(GPT2Model& model, std::span<const int32_t> inputs,
                       std::span<const int32_t> targets, const BatchShard& shard, int T,
                       Comm& comm) {
  const size_t at = static_cast<size_t>(shard.first_row) * T;
  // training = true: the spec records statistics only when self.training is set.
  double loss = model.forward(inputs.data() + at, targets.data() + at, shard.rows, T,
                              /*training=*/true);
  require(std::isfinite(loss), "adaptation: the forward pass gave a non-finite loss");
  if (comm.size() == 1) return static_cast<float>(loss);
  comm.allreduce_sum(&loss, 1);
  return static_cast<float>(loss / comm.size());
}

}  // namespace

nlohmann::json AdaptationOptions::to_json() const {
  return {{"alpha_max", matching.alpha_max},           {"alpha_min", matching.alpha_min},
          {"schedule_steps", matching.schedule_steps}, {"threshold", matching.threshold},
          {"max_passes", matching.max_passes},         {"reset", reset}};
}

nlohmann::json AdaptationPass::to_json() const {
  return {{"pass", pass},
          {"alpha", alpha},
          {"loss", loss},
          {"statistics", statistics},
          {"converged", converged},
          {"worst_std_error", worst_std_error},
          {"worst_mean_error", worst_mean_error}};
}

nlohmann::json AdaptationResult::to_json() const {
  nlohmann::json j = {{"converged", converged},
                      {"initial_loss", initial_loss},
                      {"final_loss", final_loss},
                      {"initial_ppl", std::exp(initial_loss)},
                      {"final_ppl", std::exp(final_loss)},
                      {"passes", nlohmann::json::array()},
                      {"unconverged", unconverged}};
  for (const AdaptationPass& p : passes) j["passes"].push_back(p.to_json());
  return j;
}

void reset_adapted_scalers(GPT2Model& model) {
  check_adaptable(model);
  for (auto& layer : find_scalers(model)) {
    for (ScalerTensors& s : layer) {
      std::fill(s.a.begin(), s.a.end(), 1.0f);
      std::fill(s.b.begin(), s.b.end(), 0.0f);
    }
  }
}

AdaptationResult adapt_scalers(GPT2Model& model, std::span<const int32_t> inputs,
                               std::span<const int32_t> targets, int B, int T,
                               const AdaptationOptions& options,
                               const std::function<void(const AdaptationPass&)>& progress,
                               Comm& comm) {
  require(B > 0 && T > 0 && inputs.size() == static_cast<size_t>(B) * T &&
              targets.size() == inputs.size(),
          "adaptation: the batch must hold B*T inputs and targets");
  options.matching.validate();
  check_adaptable(model);
  auto layers = find_scalers(model);
  check_targets_recorded(layers);
  if (options.reset) reset_adapted_scalers(model);
  const BatchShard shard = batch_shard(B, comm.rank(), comm.size());
  if (comm.size() > 1) {
    nlohmann::json run = options.to_json();
    run["model"] = model.config().to_json();
    run["batch"] = {B, T, fnv1a(inputs.data(), inputs.size_bytes()),
                    fnv1a(targets.data(), targets.size_bytes())};
    check_same_run(comm, run.dump());
    broadcast_parameters(comm, model);
    share_statistics(comm, model);
  }

  const StatisticsMatchingOptions& m = options.matching;
  AdaptationResult result;
  for (int pass = 0; pass < m.max_passes; ++pass) {
    AdaptationPass info;
    info.pass = pass;
    info.alpha = adaptation_alpha(m, pass);
    info.loss = training_forward(model, inputs, targets, shard, T, comm);
    if (pass == 0) result.initial_loss = info.loss;
    for (int l = 0; l < model.config().n_layer; ++l) {
      const ScalerStatistics* stats = model.attention(l).scaler_statistics();
      require(stats != nullptr,
              "adaptation: layer " + std::to_string(l) + " recorded no scaler statistics");
      for (int s = 0; s < ScalerStatistics::kCount; ++s) {
        ScalerTensors& t = layers[l][s];
        const MatchingCounts c =
            match_statistics(t.a, t.b, stats->std[s], stats->mean[s], t.target_std, t.target_mean,
                             info.alpha, m.threshold);
        info.statistics += c.statistics;
        info.converged += c.converged;
        info.worst_std_error = std::max(info.worst_std_error, c.worst_std_error);
        info.worst_mean_error = std::max(info.worst_mean_error, c.worst_mean_error);
      }
    }
    result.passes.push_back(info);
    if (progress) progress(info);
    if (info.converged == info.statistics) {
      result.converged = true;
      break;
    }
  }

  // One more forward measures the adapted model and lists what is still off target.
  result.final_loss = training_forward(model, inputs, targets, shard, T, comm);
  for (int l = 0; l < model.config().n_layer; ++l) {
    const ScalerStatistics* stats = model.attention(l).scaler_statistics();
    for (int s = 0; s < ScalerStatistics::kCount; ++s) {
      const ScalerTensors& t = layers[l][s];
      for (size_t h = 0; h < t.a.size(); ++h) {
        const std::pair<const char*, std::pair<float, float>> checks[] = {
            {"std", {stats->std[s][h], t.target_std[h]}},
            {"mean", {stats->mean[s][h], t.target_mean[h]}}};
        for (const auto& [what, values] : checks) {
          if (std::fabs(values.first - values.second) <= m.threshold) continue;
          char line[160];
          std::snprintf(line, sizeof line, "%s head %zu %s: %.6g vs target %.6g", t.name.c_str(), h,
                        what, values.first, values.second);
          result.unconverged.push_back(line);
        }
      }
    }
  }
  return result;
}

}  // namespace gaincell
