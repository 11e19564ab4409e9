// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Tests of the gain-cell component cost model: the paper preset against spec §9.1/§9.2, the
// scaling laws (each derived by hand from the geometry), the activity-based estimate and the
// rejection of invalid configurations.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "gaincell/core/error.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/cost/cost_model.h"
#include "gaincell/tools/cost/cost_report.h"
#include "test_util.h"

using gaincell::Error;
using gaincell::HwConfig;
using namespace gaincell::cost;
using gaincell::test_util::error_of;

namespace {

HwConfig paper_hw() {
  return HwConfig::preset("paper-nonlinear");
}
CostConfig paper_cost() {
  return CostConfig::preset("paper");
}

std::map<std::string, ComponentCost> by_name(const CostEstimate& e) {
  std::map<std::string, ComponentCost> m;
  for (const auto& c : e.components) m[c.name] = c;
  return m;
}

}  // namespace

TEST(CostModel, PaperPresetReproducesSpec9) {
  const CostEstimate e = estimate_cost(paper_hw(), paper_cost(), ModelShape{});
  // Spec §9.1: 1120 + 700 + 4000 + 330 pJ = 6.15 nJ per token per head, 65 ns.
  EXPECT_NEAR(e.energy_per_token_per_head_j, 6.15e-9, 1e-21);
  EXPECT_NEAR(e.latency_per_token_s, 65e-9, 1e-21);
  // Spec §9.2: 0.5 mm² per head incl. control, 15.7e-3 mm² of arrays.
  EXPECT_NEAR(e.area_per_head_mm2, 0.5, 1e-12);
  EXPECT_NEAR(e.array_area_per_head_mm2, 15.7e-3, 1e-15);
  // The stage totals of spec §9.1, whatever the assumed split inside a stage.
  auto c = by_name(e);
  EXPECT_NEAR(c["array_read_qk"].energy_per_token_j + c["charge_to_pulse"].energy_per_token_j,
              1120e-12, 1e-22);
  EXPECT_NEAR(c["array_read_av"].energy_per_token_j + c["output_converter"].energy_per_token_j +
                  c["pulse_counter"].energy_per_token_j,
              700e-12, 1e-22);
  EXPECT_NEAR(c["control_routing"].energy_per_token_j + c["digital_adders"].energy_per_token_j,
              4e-9, 1e-21);
  EXPECT_NEAR(c["cell_write_dac"].energy_per_token_j, 330e-12, 1e-22);
  EXPECT_EQ(c["refresh"].energy_per_token_j, 0.0);  // window rewritten within 5 ms (spec §1.3)
  // 12 heads: the 73.8 nJ of plot_energy.py (spec §9.4).
  EXPECT_NEAR(12 * e.energy_per_token_per_head_j, 73.8e-9, 1e-20);
}

TEST(CostModel, PaperGeometry) {
  const HeadGeometry g = HeadGeometry::from(paper_hw(), ModelShape{});
  EXPECT_EQ(g.tiles, 16);        // spec §1.1: 16 sub-tiles per head
  EXPECT_EQ(g.cells, 131072.0);  // 32 arrays of 64 x 64
  EXPECT_EQ(g.count_steps, 15);  // sign + 16 levels
  EXPECT_EQ(g.adder_stages, 4);
}

TEST(CostModel, StackingDividesTheStackedArrayArea) {
  CostConfig cost = paper_cost();
  cost.stack_layers.value = 12;
  const CostEstimate e = estimate_cost(paper_hw(), cost, ModelShape{});
  // Spec §9.2: 36.7e-3 / N mm², N = 12 -> 3.06e-3 mm².
  EXPECT_NEAR(e.array_area_per_head_mm2, 36.7e-3 / 12, 1e-15);
}

TEST(CostModel, DoublingTheWindowDoublesArraysNotWritesNorLatency) {
  HwConfig hw = paper_hw();
  const CostEstimate a = estimate_cost(hw, paper_cost(), ModelShape{});
  hw.window = 2048;
  const CostEstimate b = estimate_cost(hw, paper_cost(), ModelShape{});
  auto ca = by_name(a), cb = by_name(b);
  EXPECT_NEAR(b.array_area_per_head_mm2, 2 * a.array_area_per_head_mm2, 1e-15);
  for (const char* n :
       {"array_read_qk", "array_read_av", "charge_to_pulse", "output_converter", "pulse_counter"})
    EXPECT_NEAR(cb[n].energy_per_token_j, 2 * ca[n].energy_per_token_j, 1e-24) << n;
  // One slot is written per token whatever the window (spec §1.2 step 3).
  EXPECT_EQ(cb["cell_write_dac"].energy_per_token_j, ca["cell_write_dac"].energy_per_token_j);
  // Sub-tiles run in parallel: only one more adder stage (32 tiles -> 5 stages).
  EXPECT_NEAR(b.latency_per_token_s - a.latency_per_token_s, paper_cost().adder_delay_s.value,
              1e-21);
  EXPECT_NEAR(cb["digital_adders"].ops_per_token, 64.0 * 31, 1e-9);
}

TEST(CostModel, DoublingTheHeadDimension) {
  ModelShape shape;
  shape.head_dim = 128;
  const CostEstimate a = estimate_cost(paper_hw(), paper_cost(), ModelShape{});
  const CostEstimate b = estimate_cost(paper_hw(), paper_cost(), shape);
  auto ca = by_name(a), cb = by_name(b);
  EXPECT_EQ(b.geometry.row_tiles, 2);
  EXPECT_NEAR(b.array_area_per_head_mm2, 2 * a.array_area_per_head_mm2, 1e-15);
  for (const char* n : {"array_read_qk", "array_read_av", "cell_write_dac", "output_converter",
                        "pulse_counter", "digital_adders"})
    EXPECT_NEAR(cb[n].energy_per_token_j, 2 * ca[n].energy_per_token_j, 1e-24) << n;
  // One HardSigmoid converter per key column, whatever the head dimension.
  EXPECT_EQ(cb["charge_to_pulse"].energy_per_token_j, ca["charge_to_pulse"].energy_per_token_j);
  EXPECT_EQ(b.latency_per_token_s, a.latency_per_token_s);
}

TEST(CostModel, SmallerArraysMoreSubTiles) {
  HwConfig hw = paper_hw();
  hw.array_size = 32;
  const CostEstimate e = estimate_cost(hw, paper_cost(), ModelShape{});
  EXPECT_EQ(e.geometry.tiles, 32);
  EXPECT_EQ(e.geometry.row_tiles, 2);
  EXPECT_EQ(e.geometry.cells, 131072.0);  // same cells, cut differently
  auto c = by_name(e);
  EXPECT_NEAR(c["output_converter"].ops_per_token, 64.0 * 32, 1e-9);
  EXPECT_NEAR(c["digital_adders"].ops_per_token, 64.0 * 31, 1e-9);
}

TEST(CostModel, PulseWidthScalesReadEnergyAndLatency) {
  HwConfig hw = paper_hw();
  const CostEstimate a = estimate_cost(hw, paper_cost(), ModelShape{});
  hw.tmax_s = 30e-9;
  const CostEstimate b = estimate_cost(hw, paper_cost(), ModelShape{});
  auto ca = by_name(a), cb = by_name(b);
  EXPECT_NEAR(b.latency_per_token_s - a.latency_per_token_s, 2 * 15e-9, 1e-20);
  EXPECT_NEAR(cb["array_read_qk"].energy_per_token_j, 2 * ca["array_read_qk"].energy_per_token_j,
              1e-24);
  EXPECT_EQ(cb["charge_to_pulse"].energy_per_token_j, ca["charge_to_pulse"].energy_per_token_j);
}

TEST(CostModel, BitWidths) {
  HwConfig hw = paper_hw();
  hw.k.levels = hw.v.levels = 16;  // 4-bit K/V: DAC energy x 15/7
  hw.out.levels = 64;              // counter full scale 31 steps of 1 ns
  const CostEstimate a = estimate_cost(paper_hw(), paper_cost(), ModelShape{});
  const CostEstimate b = estimate_cost(hw, paper_cost(), ModelShape{});
  auto ca = by_name(a), cb = by_name(b);
  EXPECT_NEAR(cb["cell_write_dac"].energy_per_token_j,
              ca["cell_write_dac"].energy_per_token_j * 15.0 / 7.0, 1e-24);
  EXPECT_NEAR(cb["pulse_counter"].latency_s, 31e-9, 1e-21);
  EXPECT_NEAR(b.latency_per_token_s - a.latency_per_token_s, 16e-9, 1e-20);
  EXPECT_NEAR(cb["pulse_counter"].energy_per_token_j,
              ca["pulse_counter"].energy_per_token_j * 31.0 / 15.0, 1e-24);
}

TEST(CostModel, HeadsLayersAndTokensScaleTheTotals) {
  ModelShape shape;
  shape.n_layer = 48;
  shape.n_head = 25;
  shape.tokens = 10;
  shape.batch = 3;
  CostReportInputs in;
  in.hw = paper_hw();
  in.cost = paper_cost();
  in.shape = shape;
  const auto j = build_cost_report(in).to_json();
  EXPECT_NEAR(j["energy_per_token_per_head_j"].get<double>(), 6.15e-9, 1e-21);
  EXPECT_NEAR(j["energy_per_token_model_j"].get<double>(), 6.15e-9 * 25 * 48, 1e-18);
  EXPECT_NEAR(j["latency_per_token_model_s"].get<double>(), 65e-9 * 48, 1e-18);
  EXPECT_NEAR(j["area_model_mm2"].get<double>(), 0.5 * 25 * 48, 1e-9);
  EXPECT_NEAR(j["run_energy_j"].get<double>(), 6.15e-9 * 25 * 48 * 30, 1e-15);
}

TEST(CostModel, RefreshOnlyWhenTheWindowOutlivesRetention) {
  // Window 8192, 12 layers: a slot lives 8192 x 12 x latency ≈ 6.4 ms > 5 ms (spec §1.3).
  HwConfig hw = paper_hw();
  hw.window = 8192;
  const CostEstimate e = estimate_cost(hw, paper_cost(), ModelShape{});
  const double interval = 12 * e.latency_per_token_s;
  ASSERT_GT(8192 * interval, 5e-3);
  const double cells = 2.0 * 64 * 8192;
  const double expected = cells * interval / 5e-3 * paper_cost().write_energy_per_cell_j.value;
  EXPECT_NEAR(by_name(e)["refresh"].energy_per_token_j, expected, expected * 1e-12);
  hw.window = 4096;  // 4096 x 12 x ~65 ns ≈ 3.2 ms: no refresh
  EXPECT_EQ(by_name(estimate_cost(hw, paper_cost(), ModelShape{}))["refresh"].energy_per_token_j,
            0.0);
}

// Issue 11 item 8: the retention time is the hardware's (HwConfig leakage), not a second copy in
// the cost configuration.
TEST(CostModel, RefreshFollowsTheHardwareRetentionTime) {
  HwConfig hw = paper_hw();
  EXPECT_NEAR(hw.leakage.retention_s(), 5e-3, 1e-15);  // 0.8 us / 1.6e-4 (spec §1.3)
  const CostEstimate paper = estimate_cost(hw, paper_cost(), ModelShape{});
  EXPECT_EQ(by_name(paper)["refresh"].energy_per_token_j, 0.0);
  // A 0.1 ms retention: a slot of the 1024-token window lives 1024 x 12 x latency ≈ 0.8 ms.
  hw.leakage.retention_time_s = 1e-4;
  const CostEstimate leaky = estimate_cost(hw, paper_cost(), ModelShape{});
  const double interval = 12 * leaky.latency_per_token_s;
  const double expected =
      2.0 * 64 * 1024 * interval / 1e-4 * paper_cost().write_energy_per_cell_j.value;
  EXPECT_NEAR(by_name(leaky)["refresh"].energy_per_token_j, expected, expected * 1e-12);
  // No leakage: the cells never need a refresh, however long the window.
  hw = paper_hw();
  hw.window = 65536;
  hw.leakage.enabled = false;
  EXPECT_EQ(by_name(estimate_cost(hw, paper_cost(), ModelShape{}))["refresh"].energy_per_token_j,
            0.0);
  // The old cost parameter is an error that says where the value lives now.
  EXPECT_NE(error_of([] {
              CostConfig::from_json({{"params", {{"retention_time_s", 5e-3}}}});
            }).find("leakage.retention_time_s"),
            std::string::npos);
}

// Issue 11 item 8: the calibration point is the paper's hardware preset, not a copy of it.
TEST(CostConfig, CalibrationPointIsThePaperHardwarePreset) {
  const ReferencePoint ref;
  const HwConfig paper = paper_hw();
  EXPECT_EQ(ref.hw.to_json(), paper.to_json());
  EXPECT_EQ(paper_cost().read_energy_ref_tmax_s.value, paper.tmax_s);
  EXPECT_EQ(paper_cost().write_ref_levels.value, paper.k.levels);
}

TEST(CostModel, ActivityAtTheCalibrationPointEqualsTheConstantModel) {
  for (int window : {1024, 2048}) {
    HwConfig hw = paper_hw();
    hw.window = window;
    ModelShape shape;
    shape.head_dim = window == 1024 ? 64 : 96;
    const CostEstimate e = estimate_cost(hw, paper_cost(), shape);
    const HardwareEventCounts ev = typical_event_counts(hw, paper_cost(), shape, 100);
    const ActivityEstimate a = estimate_activity(hw, paper_cost(), shape, ev);
    EXPECT_NEAR(a.energy_per_token_per_head_j / e.energy_per_token_per_head_j, 1.0, 1e-12);
  }
}

TEST(CostModel, ActivityFollowsTheCountedEvents) {
  const HwConfig hw = paper_hw();
  const ModelShape shape;
  HardwareEventCounts ev = typical_event_counts(hw, paper_cost(), shape, 10);
  const double base = estimate_activity(hw, paper_cost(), shape, ev).energy_per_token_per_head_j;
  // Halving every Q pulse removes half of the K-array read energy: 560 pJ / 2.
  ev.q_pulse_width_sum_tmax /= 2;
  const double halved = estimate_activity(hw, paper_cost(), shape, ev).energy_per_token_per_head_j;
  EXPECT_NEAR(base - halved, 280e-12, 1e-22);
  // A hand-made trace of one token step of one head: 10 cell writes only, plus control.
  HardwareEventCounts one;
  one.tokens = one.heads = one.layers = 1;
  one.cell_writes = 10;
  const double e = estimate_activity(hw, paper_cost(), shape, one).energy_per_token_per_head_j;
  EXPECT_NEAR(e, 10 * 330e-12 / 128 + paper_cost().control_energy_j.value, 1e-22);
}

TEST(CostModel, InvalidConfigurationsAreRejected) {
  const CostConfig cost = paper_cost();
  HwConfig hw = paper_hw();
  hw.window = 1000;
  EXPECT_NE(error_of([&] { estimate_cost(hw, cost, ModelShape{}); }).find("window"),
            std::string::npos);
  ModelShape shape;
  shape.head_dim = 0;
  EXPECT_NE(error_of([&] { estimate_cost(paper_hw(), cost, shape); }).find("model.head_dim"),
            std::string::npos);
  shape = ModelShape{};
  shape.batch = 0;
  EXPECT_NE(error_of([&] { estimate_cost(paper_hw(), cost, shape); }).find("model.batch"),
            std::string::npos);
  CostConfig bad = cost;
  bad.c2p_energy_j.value = -1.0;
  EXPECT_NE(
      error_of([&] { estimate_cost(paper_hw(), bad, ModelShape{}); }).find("cost.c2p_energy_j"),
      std::string::npos);
  bad = cost;
  bad.typical_q_width_tmax.value = 1.5;
  EXPECT_NE(error_of([&] { bad.validate(); }).find("cost.typical_q_width_tmax"), std::string::npos);
  bad = cost;
  bad.stack_layers.value = 2.5;
  EXPECT_NE(error_of([&] { bad.validate(); }).find("cost.stack_layers"), std::string::npos);
  bad = cost;
  bad.refresh_margin.value = NAN;
  EXPECT_NE(error_of([&] { bad.validate(); }).find("cost.refresh_margin"), std::string::npos);
}

TEST(CostConfig, JsonRoundTripAndErrors) {
  const CostConfig c = paper_cost();
  const CostConfig back = CostConfig::from_json(c.to_json());
  EXPECT_EQ(back.to_json(), c.to_json());
  // Every parameter carries a unit and a source.
  for (const auto& [name, p] : c.params()) {
    EXPECT_FALSE(p->source.empty()) << name;
    EXPECT_FALSE(p->unit.empty()) << name;
  }
  const CostConfig set = CostConfig::from_json({{"params", {{"adder_energy_j", 1e-13}}}}, "x.json");
  EXPECT_EQ(set.adder_energy_j.value, 1e-13);
  EXPECT_EQ(set.adder_energy_j.source, "set in x.json");
  EXPECT_NE(error_of([] {
              CostConfig::from_json({{"params", {{"bogus", 1}}}});
            }).find("bogus"),
            std::string::npos);
  EXPECT_NE(
      error_of([] {
        CostConfig::from_json({{"params", {{"adder_energy_j", {{"value", 1}, {"unit", "W"}}}}}});
      }).find("cost.adder_energy_j.unit"),
      std::string::npos);
  EXPECT_NE(error_of([] {
              CostConfig::from_json({{"params", {{"adder_energy_j", "x"}}}});
            }).find("cost.adder_energy_j"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              CostConfig::from_json({{"preset", "nope"}});
            }).find("nope"),
            std::string::npos);
  EXPECT_NE(error_of([] { CostConfig::load("/nonexistent/cost.json"); }).find("/nonexistent"),
            std::string::npos);
}

TEST(ModelShape, HuggingFaceConfig) {
  const ModelShape s = ModelShape::from_hf_config(
      {{"n_layer", 48}, {"n_head", 25}, {"n_embd", 1600}, {"n_positions", 1024}}, "cfg");
  EXPECT_EQ(s.n_layer, 48);
  EXPECT_EQ(s.head_dim, 64);
  EXPECT_EQ(s.tokens, 1024);
  EXPECT_NE(error_of([] {
              ModelShape::from_hf_config({{"n_layer", 2}, {"n_head", 5}, {"n_embd", 768}}, "cfg");
            }).find("n_embd"),
            std::string::npos);
  EXPECT_NE(error_of([] {
              ModelShape::from_hf_config({{"n_head", 5}}, "cfg");
            }).find("n_layer"),
            std::string::npos);
  EXPECT_NE(error_of([] { ModelShape::load_hf_dir("/nonexistent"); }).find("config.json"),
            std::string::npos);
}

TEST(HardwareEventCounts, JsonRoundTripAndErrors) {
  HardwareEventCounts ev = typical_event_counts(paper_hw(), paper_cost(), ModelShape{}, 3);
  const auto back = HardwareEventCounts::from_json(ev.to_json());
  EXPECT_EQ(back.to_json(), ev.to_json());
  auto j = ev.to_json();
  j["events"].erase("counter_increments");
  EXPECT_NE(error_of([&] { HardwareEventCounts::from_json(j); }).find("events.counter_increments"),
            std::string::npos);
  j = ev.to_json();
  j["events"]["typo_pulses"] = 1;
  EXPECT_NE(error_of([&] { HardwareEventCounts::from_json(j); }).find("typo_pulses"),
            std::string::npos);
  j = ev.to_json();
  j["events"]["q_pulse_width_sum_tmax"] = double(ev.q_pulses) * 2;
  EXPECT_NE(error_of([&] { HardwareEventCounts::from_json(j); }).find("q_pulse_width_sum_tmax"),
            std::string::npos);
  j = ev.to_json();
  j["events"]["cell_writes"] = -4;
  EXPECT_NE(error_of([&] { HardwareEventCounts::from_json(j); }).find("cell_writes"),
            std::string::npos);
  j = ev.to_json();
  j["tokens"] = 0;
  EXPECT_NE(error_of([&] { HardwareEventCounts::from_json(j); }).find("tokens"), std::string::npos);
  j = ev.to_json();
  j["events"]["tile_reads"] = 1.5;
  EXPECT_NE(error_of([&] { HardwareEventCounts::from_json(j); }).find("tile_reads"),
            std::string::npos);
}
