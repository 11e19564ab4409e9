// The main job: the paper in miniature (issue 4 item 5). Trains (or reuses) a small softmax GPT-2
// on Debian's fortunes (run_demo), runs the three-stage recipe (run_pipeline: linear stage A,
// adaptation B, nonlinear fine-tuning C), and reports validation perplexity and a greedy sample
// of every model, the per-token attention energy and latency on gain-cell hardware against GPUs,
// and a Markdown report with SVG plots of the loss curves and of the adaptation trajectory.
#pragma once

#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "gaincell/tools/demo.h"

namespace gaincell {

// The five models the demo reports, in order: label and summary key (ppl_<key>, samples[key]).
struct DemoModelRow {
  const char* label;
  const char* key;
};
inline constexpr DemoModelRow kDemoModels[] = {
    {"softmax (stage 0)", "softmax"},
    {"linear hardware (stage A)", "linear"},
    {"nonlinear hardware, before adaptation", "nonlinear_unadapted"},
    {"nonlinear hardware, adapted (stage B)", "nonlinear_adapted"},
    {"nonlinear hardware, fine-tuned (stage C)", "nonlinear_finetuned"}};

struct PaperDemoOptions {
  DemoOptions demo;           // corpus, model shape, softmax training (stage 0)
  int64_t steps_a = 150;      // linear stage A
  int64_t steps_c = 150;      // nonlinear stage C
  float lr_hardware = 1e-3f;  // peak learning rate of stages A and C
  int adapt_batch = 8;
  std::string nonlinear_attention = "gaincell-nonlinear";

  // The --quick variant (smoke tests, under 2 minutes on 2 cores).
  static PaperDemoOptions quick();
};

// Runs everything under options.demo.out_dir; returns the summary (also summary.json) with
// ppl_softmax, ppl_linear, ppl_nonlinear_unadapted, ppl_nonlinear_adapted,
// ppl_nonlinear_finetuned, samples, cost, and the report paths.
nlohmann::json run_paper_demo(const PaperDemoOptions& options,
                              const std::function<void(const std::string&)>& log = {});

}  // namespace gaincell
