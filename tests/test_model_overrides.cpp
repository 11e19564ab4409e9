// ModelOverrides: what --attention / --window / --hw do to a stored configuration.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/gpt2.h"

using namespace gaincell;

namespace {
GPT2Config small(const std::string& attention) {
  GPT2Config c;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = 32;
  c.vocab_size = 50;
  c.attention = attention;
  return c;
}
}  // namespace

TEST(ModelOverrides, SwitchingToAnAblationCellTakesItsHardware) {
  GPT2Config c = small("softmax");
  ModelOverrides o;
  o.attention = "gaincell-x3";
  o.apply(c);
  EXPECT_EQ(c.attention, "gaincell-x3");
  EXPECT_EQ(c.hw.to_json(), gaincell_default_hw("gaincell-x3").to_json());
  EXPECT_FALSE(c.hw.q.enabled);  // the ablation classes run without Q quantisation (spec §2.7)
}

TEST(ModelOverrides, ExplicitHardwareWins) {
  GPT2Config c = small("softmax");
  ModelOverrides o;
  o.attention = "gaincell-x3";
  o.hw = HwConfig::preset("ideal");
  o.apply(c);
  EXPECT_EQ(c.hw.name, "ideal");
}

TEST(ModelOverrides, SameVariantKeepsStoredHardware) {
  GPT2Config c = small("gaincell-nonlinear");
  c.hw.window = 128;
  c.hw.name = "mine";
  ModelOverrides o;
  o.attention = "gaincell-nonlinear";
  o.apply(c);
  EXPECT_EQ(c.hw.name, "mine");
  EXPECT_EQ(c.hw.window, 128);
}

// Issue 11 defect 1: `--attention gaincell-nonlinear --hw paper-linear` ran the polynomial cell but
// recorded "linear". The rule: the variant sets the cell, in every place a configuration is built.
TEST(ModelOverrides, RecordedCellIsTheCellThatRuns) {
  GPT2Config c = small("softmax");
  ModelOverrides o;
  o.attention = "gaincell-nonlinear";
  o.hw = HwConfig::preset("paper-linear");
  o.apply(c);
  EXPECT_EQ(c.hw.cell, CellModel::kPolynomial);
  GPT2Model model(c);
  const HwConfig& ran = static_cast<const GainCellAttention&>(model.attention(0)).hw();
  EXPECT_EQ(ran.cell, CellModel::kPolynomial);
  EXPECT_EQ(model.config().to_json()["gaincell_hw"]["cell"]["model"], to_string(ran.cell));

  // A configuration built by hand or read from a file follows the same rule.
  GPT2Config by_hand = small("gaincell-nonlinear");
  by_hand.hw = HwConfig::preset("paper-linear");
  EXPECT_EQ(GPT2Model(by_hand).config().hw.cell, CellModel::kPolynomial);
  nlohmann::json file = by_hand.to_json();
  ASSERT_EQ(file["gaincell_hw"]["cell"]["model"], "linear");
  EXPECT_EQ(GPT2Config::from_json(file).hw.cell, CellModel::kPolynomial);
}

// Issue 11 defect 2: an ablation variant named in config.json (without gaincell_hw) runs on the
// same hardware as when it is chosen with --attention (Q and output quantisers off, spec §2.7).
TEST(ModelOverrides, AblationHardwareIsTheSameFromFileAndFromAttention) {
  for (const std::string variant : {"gaincell-x3", "gaincell-sigmoid", "gaincell-linear"}) {
    GPT2Config via_option = small("softmax");
    ModelOverrides o;
    o.attention = variant;
    o.apply(via_option);
    nlohmann::json j = small("softmax").to_json();
    j["gaincell_attention"] = variant;
    j.erase("gaincell_hw");
    const GPT2Config via_file = GPT2Config::from_json(j);
    EXPECT_EQ(via_file.hw.to_json(), via_option.hw.to_json()) << variant;
    EXPECT_EQ(via_file.hw.q.enabled, variant == "gaincell-linear") << variant;
  }
}

// Loading a softmax checkpoint into a gain-cell variant: the scalers it lacks keep their initial
// values, and the log names each kind of tensor once with the range of layers.
TEST(ModelOverrides, LoadLogSummarizesTheMissingScalersPerLayer) {
  GPT2Config c = small("softmax");
  c.n_layer = 3;
  GPT2Model softmax(c);
  softmax.init_random(1);
  const auto dir =
      std::filesystem::temp_directory_path() / ("gaincell_overrides_" + std::to_string(::getpid()));
  save_model(softmax, dir);
  std::vector<std::string> lines;
  LoadModelOptions load;
  load.overrides.attention = "gaincell-linear";
  load.log = [&](const std::string& line) { lines.push_back(line); };
  const auto model = load_model(dir, load);
  std::filesystem::remove_all(dir);
  ASSERT_EQ(lines.size(), 1u);
  const std::string& l = lines[0];
  EXPECT_NE(l.find("48 tensors not in the checkpoint"), std::string::npos) << l;
  EXPECT_NE(l.find("h.*.attn.q_scaler.a, h.*.attn.q_scaler.b"), std::string::npos) << l;
  EXPECT_NE(l.find("(layers 0-2)"), std::string::npos) << l;
  EXPECT_EQ(l.find("h.1."), std::string::npos) << l;
  EXPECT_EQ(model->param_data()[model->param("h.2.attn.k_scaler.b").offset], 0.45f);
}
