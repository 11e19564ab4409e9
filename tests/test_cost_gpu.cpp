// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Tests of the GPU baselines: the paper's ratios from the measured files (spec §9.4), the analytic
// decode model against hand-computed roofline numbers, and malformed measurement files.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/tools/cost/cost_model.h"
#include "gaincell/tools/cost/cost_report.h"
#include "gaincell/tools/cost/gpu_model.h"
#include "test_util.h"

using namespace gaincell::cost;
namespace fs = std::filesystem;

namespace {

CostEstimate paper_estimate() {
  return estimate_cost(gaincell::HwConfig::preset("paper-nonlinear"), CostConfig::preset("paper"),
                       ModelShape{});
}

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() /
                     ("gaincell_test_cost_gpu_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(GpuMeasured, PaperRatiosFromTheMeasuredFiles) {
  GAINCELL_SHARED_DATA(dir, "gaincell-reference");
  const auto measured = load_measured_gpus(dir);
  ASSERT_EQ(measured.size(), 2u);
  const CostEstimate e = paper_estimate();
  std::map<std::string, std::pair<long, long>> ratios;
  for (const auto& m : measured) {
    EXPECT_EQ(m.heads, 12);
    EXPECT_EQ(m.sequences, 64);
    ratios[m.gpu] = {std::lround(speedup_vs(m.latency_per_token_s, e)),
                     std::lround(energy_reduction_vs(m.energy_per_token_j, m.heads, e))};
  }
  // Spec §9.4, to the integer.
  EXPECT_EQ(ratios["RTX 4090"].first, 344);
  EXPECT_EQ(ratios["RTX 4090"].second, 97266);
  EXPECT_EQ(ratios["Jetson Nano"].first, 7521);
  EXPECT_EQ(ratios["Jetson Nano"].second, 43981);
}

TEST(GpuMeasured, ReportListsMeasuredAndModelEntries) {
  GAINCELL_SHARED_DATA(dir, "gaincell-reference");
  CostReportInputs in;
  in.hw = gaincell::HwConfig::preset("paper-nonlinear");
  in.cost = CostConfig::preset("paper");
  in.shape = ModelShape{};
  in.measured_dir = dir;
  const CostReport r = build_cost_report(in);
  int measured = 0, model = 0;
  for (const auto& g : r.gpus) (g.source == "measured" ? measured : model)++;
  EXPECT_EQ(measured, 2);
  EXPECT_EQ(model, 5);
  ASSERT_EQ(r.measured_vs_model.size(), 2u);
  for (const auto& m : r.measured_vs_model) {
    // The measured protocol cannot beat the bandwidth bound.
    EXPECT_GT(m.latency_ratio, 1.0) << m.measured.gpu;
    EXPECT_GT(m.implied_overhead_per_step_s, 0.0) << m.measured.gpu;
  }
}

TEST(GpuMeasured, WithoutSharedDataOnlyTheModelIsShown) {
  CostReportInputs in;
  in.hw = gaincell::HwConfig::preset("paper-nonlinear");
  in.cost = CostConfig::preset("paper");
  in.shape = ModelShape{};
  in.measured_dir = fs::path();
  const CostReport r = build_cost_report(in);
  for (const auto& g : r.gpus) EXPECT_EQ(g.source, "model");
  EXPECT_NE(r.measured_status.find("skipped"), std::string::npos);
  EXPECT_NE(r.to_table().find("skipped"), std::string::npos);
}

TEST(GpuMeasured, MalformedFilesNameTheProblem) {
  const fs::path d = temp_dir("malformed");
  const fs::path f = d / "gpu_test_attention.json";
  gaincell::write_file_atomic(f, std::string(R"({"S": 64, "H": 12, "D_h": 64, "N_tokens": 1024,
      "mean_latency_per_token": 1e-5, "mean_power_per_token": 1e-3})"));
  try {
    load_measured_gpu(f);
    FAIL() << "expected an error";
  } catch (const gaincell::Error& e) {
    EXPECT_NE(std::string(e.what()).find("mean_energy_per_token"), std::string::npos);
  }
  gaincell::write_file_atomic(f, std::string("{not json"));
  EXPECT_THROW(load_measured_gpu(f), gaincell::Error);
  gaincell::write_file_atomic(f, std::string(R"({"S": 0, "H": 12, "D_h": 64, "N_tokens": 1024,
      "mean_latency_per_token": 1e-5, "mean_power_per_token": 1e-3, "mean_energy_per_token": 1})"));
  EXPECT_THROW(load_measured_gpu(f), gaincell::Error);
  EXPECT_TRUE(load_measured_gpus(fs::path()).empty());
  fs::remove_all(d);
}

TEST(GpuModel, HandComputedRooflineForTheMeasuredSetting) {
  const GpuSpec& g = gpu_spec("RTX 4090");
  DecodeWorkload w;  // 12 heads, head dim 64, 1024-token cache, 64 sequences, fp32
  const GpuEstimate e = estimate_gpu_decode(g, w);
  // K and V of 1024 tokens x 768 values, plus new k, v, q and out: (2*768*1024 + 4*768) * 4 B.
  EXPECT_DOUBLE_EQ(e.bytes_per_token, 6303744.0);
  EXPECT_DOUBLE_EQ(e.flops_per_token, 12.0 * 1024 * (4 * 64 + 5));
  EXPECT_EQ(e.bound, "memory");
  const double step = 64 * 6303744.0 / 1008e9 + 5e-6;
  EXPECT_NEAR(e.latency_per_token_s, step / 64, 1e-18);
  EXPECT_NEAR(e.energy_per_token_j, 450.0 * step / 64, 1e-15);
  EXPECT_NEAR(e.dynamic_energy_per_token_j,
              6303744.0 * 58e-12 + 12.0 * 1024 * 261 * (450.0 - 20.0) / 82.6e12, 1e-15);
  // Static power over the token's share of the step plus the dynamic energy.
  EXPECT_NEAR(e.modelled_energy_per_token_j, 20.0 * step / 64 + e.dynamic_energy_per_token_j,
              1e-15);
}

TEST(GpuModel, BatchAmortisesOnlyTheOverheadAndComputeBoundIsDetected) {
  const GpuSpec& g = gpu_spec("H100");
  DecodeWorkload w;
  w.batch = 1;
  const double one = estimate_gpu_decode(g, w).latency_per_token_s;
  w.batch = 1000;
  const double many = estimate_gpu_decode(g, w).latency_per_token_s;
  EXPECT_NEAR(one - many, g.step_overhead_s * (1.0 - 1.0 / 1000), 1e-15);
  GpuSpec slow = g;
  slow.peak_fp32_flops = 1e9;  // a hypothetical GPU with almost no compute
  EXPECT_EQ(estimate_gpu_decode(slow, w).bound, "compute");
  w.batch = 0;
  EXPECT_THROW(estimate_gpu_decode(g, w), gaincell::Error);
  EXPECT_THROW(gpu_spec("GTX 280"), gaincell::Error);
}

TEST(GpuModel, EverySpecNamesItsSources) {
  ASSERT_EQ(gpu_specs().size(), 5u);
  for (const auto& g : gpu_specs()) {
    for (const char* k :
         {"memory_bandwidth_bytes_per_s", "peak_fp32_flops", "peak_fp16_flops", "board_power_w",
          "idle_power_w", "memory_energy_j_per_byte", "kernel_launch_s", "die_area_mm2"})
      EXPECT_TRUE(g.sources.contains(k) && !g.sources[k].get<std::string>().empty())
          << g.name << " " << k;
    EXPECT_GT(g.memory_bandwidth_bytes_per_s, 0.0);
    EXPECT_GT(g.peak_fp32_flops, 0.0);
  }
}

TEST(GpuComparison, ZeroEnergyConfigurationIsAnErrorNotInfinity) {
  CostConfig zero = CostConfig::preset("paper");
  for (Param* p :
       {&zero.qk_read_energy_per_cell_tmax_j, &zero.av_read_energy_per_cell_tmax_j,
        &zero.write_energy_per_cell_j, &zero.c2p_energy_j, &zero.out_c2p_energy_j,
        &zero.counter_energy_per_increment_j, &zero.adder_energy_j, &zero.control_energy_j})
    p->value = 0.0;
  CostReportInputs in;
  in.hw = gaincell::HwConfig::preset("paper-nonlinear");
  in.cost = zero;
  in.shape = ModelShape{};
  in.measured_dir = fs::path();
  try {
    build_cost_report(in);
    FAIL() << "expected an error";
  } catch (const gaincell::Error& e) {
    EXPECT_NE(std::string(e.what()).find("zero energy"), std::string::npos);
  }
}
