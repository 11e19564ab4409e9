// ModelOverrides: what --attention / --window / --hw do to a stored configuration.
#include <gtest/gtest.h>

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
