// The main job: the paper in miniature (issue 4 item 5). Trains (or reuses) a small softmax GPT-2
// on Debian's fortunes (run_demo), runs the three-stage recipe (run_pipeline: linear stage A,
// adaptation B, nonlinear fine-tuning C), and reports validation perplexity and a greedy sample
// of every model, the per-token attention energy and latency on gain-cell hardware against GPUs,
// and a Markdown report with SVG plots of the loss curves and of the adaptation trajectory.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/tools/demo.h"

namespace gaincell {

// The models the demo reports, in order: label and summary key (ppl_<key>, samples[key]).
struct DemoModelRow {
  const char* label;
  const char* key;
};

// Six rows when the adaptation started from reset scalers (the paper's Fig. 4c, spec §5.2): the
// nonlinear cell with stage A's scalers, then with a = 1, b = 0 (the algorithm's start, the
// summary's ppl_nonlinear_unadapted). Five otherwise, where the two are the same model.
std::vector<DemoModelRow> demo_model_rows(const nlohmann::json& summary);

struct PaperDemoOptions {
  DemoOptions demo;           // corpus, model shape, softmax training (stage 0)
  int64_t steps_a = 600;      // linear stage A
  int64_t steps_c = 400;      // nonlinear stage C
  float lr_hardware = 1e-3f;  // peak learning rate of stages A and C
  int adapt_batch = 8;
  std::string nonlinear_attention = "gaincell-nonlinear";
  // Stage B starts from a = 1, b = 0 (the paper's adaptation script and Fig. 4c, spec §5.2)
  // instead of stage A's scalers (the HEAD code).
  bool reset_scalers = true;

  // The --quick variant (smoke tests, under 2 minutes on 2 cores).
  static PaperDemoOptions quick();
};

// Runs everything under options.demo.out_dir; returns the summary (also summary.json) with
// ppl_softmax, ppl_linear, ppl_nonlinear_stage_a_scalers, ppl_nonlinear_unadapted,
// ppl_nonlinear_adapted, ppl_nonlinear_finetuned, samples, cost, and the report paths.
nlohmann::json run_paper_demo(const PaperDemoOptions& options,
                              const std::function<void(const std::string&)>& log = {});

}  // namespace gaincell
