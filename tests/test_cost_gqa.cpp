// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Issue 12 item 3: the cost model under grouped-query attention. Arrays are counted per key/value
// head; the two mappings (the group's query heads reading shared arrays in turn, or replicated
// arrays) trade latency against area. Head dimensions above the array size tile over rows.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "gaincell/core/error.h"
#include "gaincell/tools/cost/cost_model.h"

namespace gaincell::cost {
namespace {

struct Hardware {
  HwConfig hw = HwConfig::preset("paper-nonlinear");
  CostConfig cost = CostConfig::load("paper");
};

// The per-head estimate split by hand: the array set's share (writes, refresh, array storage
// area) and the read path's share (everything else).
struct Split {
  double set_latency = 0, read_latency = 0, set_energy = 0, read_energy = 0;
};
Split split(const CostEstimate& e) {
  Split s;
  for (const ComponentCost& c : e.components) {
    const bool set = c.name == "cell_write_dac" || c.name == "refresh";
    (set ? s.set_latency : s.read_latency) += c.latency_s;
    (set ? s.set_energy : s.read_energy) += c.energy_per_token_j;
  }
  return s;
}

TEST(CostGqa, WithoutGroupingBothMappingsAreMultiHeadAttention) {
  Hardware x;
  ModelShape shape;  // GPT-2: 12 heads, n_kv_head 0 = 12
  const CostEstimate e = estimate_cost(x.hw, x.cost, shape);
  const auto maps = gqa_mapping_costs(e, shape);
  ASSERT_EQ(maps.size(), 2u);
  for (const GqaMappingCost& m : maps) {
    SCOPED_TRACE(m.mapping);
    EXPECT_EQ(m.n_rep, 1);
    EXPECT_EQ(m.array_sets_per_layer, 12);
    EXPECT_DOUBLE_EQ(m.latency_per_token_s, e.latency_per_token_s);
    EXPECT_NEAR(m.area_per_layer_mm2, 12 * e.area_per_head_mm2, 1e-12);
    EXPECT_NEAR(m.energy_per_token_per_layer_j, 12 * e.energy_per_token_per_head_j,
                1e-9 * 12 * e.energy_per_token_per_head_j);
  }
}

TEST(CostGqa, SequentialSharesArraysAndPaysLatencyReplicatedPaysArea) {
  Hardware x;
  ModelShape shape;
  shape.n_head = 8;
  shape.n_kv_head = 2;  // n_rep 4
  const CostEstimate e = estimate_cost(x.hw, x.cost, shape);
  const Split s = split(e);
  const auto maps = gqa_mapping_costs(e, shape);
  const GqaMappingCost& seq = maps[0];
  const GqaMappingCost& rep = maps[1];
  ASSERT_EQ(seq.mapping, "sequential");
  ASSERT_EQ(rep.mapping, "replicated");
  // Arrays: 2 (K and V) x sub-tiles x row tiles per set; one set per KV head vs per query head.
  const double per_set = 2.0 * (x.hw.window / x.hw.array_size) * 1;
  EXPECT_DOUBLE_EQ(seq.arrays_per_kv_head, per_set);
  EXPECT_DOUBLE_EQ(seq.arrays_per_layer, 2 * per_set);
  EXPECT_DOUBLE_EQ(rep.arrays_per_layer, 8 * per_set);
  EXPECT_EQ(seq.array_sets_per_layer, 2);
  EXPECT_EQ(rep.array_sets_per_layer, 8);
  // Latency: four reads in turn vs one.
  EXPECT_DOUBLE_EQ(seq.latency_per_token_s, s.set_latency + 4 * s.read_latency);
  EXPECT_DOUBLE_EQ(rep.latency_per_token_s, e.latency_per_token_s);
  EXPECT_GT(seq.latency_per_token_s, 3.5 * rep.latency_per_token_s);
  // Area: 2 heads' worth vs 8.
  EXPECT_NEAR(seq.area_per_layer_mm2, 2 * e.area_per_head_mm2, 1e-12);
  EXPECT_NEAR(rep.area_per_layer_mm2, 8 * e.area_per_head_mm2, 1e-12);
  // Energy: writes once per KV head vs once per replica; reads once per query head in both.
  EXPECT_NEAR(seq.energy_per_token_per_layer_j, 2 * s.set_energy + 8 * s.read_energy,
              1e-9 * rep.energy_per_token_per_layer_j);
  EXPECT_NEAR(rep.energy_per_token_per_layer_j, 8 * (s.set_energy + s.read_energy),
              1e-9 * rep.energy_per_token_per_layer_j);
  EXPECT_LT(seq.energy_per_token_per_layer_j, rep.energy_per_token_per_layer_j);
}

TEST(CostGqa, HeadDimensionAboveTheArraySizeTilesOverRows) {
  Hardware x;
  ModelShape shape;
  shape.n_head = 32;
  shape.n_kv_head = 8;
  shape.head_dim = 128;  // two 64-row arrays per K (and V) array column
  const CostEstimate e = estimate_cost(x.hw, x.cost, shape);
  EXPECT_EQ(e.geometry.row_tiles, 2);
  const auto maps = gqa_mapping_costs(e, shape);
  EXPECT_DOUBLE_EQ(maps[0].arrays_per_kv_head, 2.0 * (x.hw.window / x.hw.array_size) * 2);
  EXPECT_DOUBLE_EQ(maps[0].arrays_per_layer, 8 * maps[0].arrays_per_kv_head);
}

TEST(CostGqa, LlamaConfigGivesTheGroupedShape) {
  const nlohmann::json config = {{"model_type", "llama"},    {"num_hidden_layers", 5},
                                 {"num_attention_heads", 8}, {"num_key_value_heads", 4},
                                 {"hidden_size", 64},        {"max_position_embeddings", 512}};
  const ModelShape s = ModelShape::from_hf_config(config, "config.json");
  EXPECT_EQ(s.n_layer, 5);
  EXPECT_EQ(s.n_head, 8);
  EXPECT_EQ(s.kv_heads(), 4);
  EXPECT_EQ(s.head_dim, 8);
  EXPECT_EQ(s.tokens, 512);
  nlohmann::json bad = config;
  bad["num_key_value_heads"] = 3;
  try {
    ModelShape::from_hf_config(bad, "config.json");
    FAIL() << "3 KV heads cannot serve 8 query heads";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_key_value_heads"), std::string::npos);
  }
}

}  // namespace
}  // namespace gaincell::cost
