// ModelOverrides: what --attention / --window / --hw do to a stored configuration.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gaincell/attention/gaincell_attention.h"
#include "gaincell/model/checkpoint.h"

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
