// Trainer: the PyTorch AdamW acceptance fixture (10 losses to 1e-4), bit-identical resume,
// gradient accumulation, checkpoint integrity, learning, and options validation.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/model/safetensors.h"
#include "gaincell/train/trainer.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = fs::path(GAINCELL_SOURCE_DIR) / "tests/fixtures";

template <typename Fn>
void expect_error(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

class TrainTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir = fs::temp_directory_path() /
          ("gc_train_" + std::to_string(::getpid()) + "_" + std::to_string(counter++));
    fs::create_directories(dir);
    // Token stream over the tiny vocabulary (101) with learnable structure: a noisy counter.
    std::mt19937 rng(99);
    std::vector<int32_t> tokens;
    int32_t t = 0;
    for (int i = 0; i < 6000; ++i) {
      t = (rng() % 5 == 0) ? static_cast<int32_t>(rng() % 101) : (t + 1) % 101;
      tokens.push_back(t);
    }
    write_token_file(dir / "train.bin",
                     std::vector<int32_t>(tokens.begin(), tokens.begin() + 5000));
    write_token_file(dir / "val.bin", std::vector<int32_t>(tokens.begin() + 5000, tokens.end()));
    train = std::make_unique<TokenDataset>(TokenDataset::open(dir / "train.bin", 101));
    val = std::make_unique<TokenDataset>(TokenDataset::open(dir / "val.bin", 101));
  }
  void TearDown() override { fs::remove_all(dir); }

  static TrainOptions small_options() {
    TrainOptions o;
    o.steps = 8;
    o.batch_size = 2;
    o.seq_len = 16;
    o.grad_accum = 2;
    o.lr = 3e-3f;
    o.min_lr = 3e-4f;
    o.warmup_steps = 2;
    o.lr_decay_steps = 8;
    o.eval_interval = 4;
    o.eval_iters = 2;
    o.checkpoint_interval = 4;
    o.log_interval = 0;
    o.seed = 5;
    return o;
  }
  static std::unique_ptr<GPT2Model> new_tiny() {
    auto m = std::make_unique<GPT2Model>(GPT2Config::named("tiny"));
    m->init_random(17);
    return m;
  }

  fs::path dir;
  std::unique_ptr<TokenDataset> train, val;
};

std::vector<int32_t> read_i32(const SafeTensorsFile& f, const fs::path& path,
                              const std::string& name) {
  const auto bytes = read_binary_file(path);
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  const auto& info = f.info(name);
  EXPECT_EQ(info.dtype, "I32");
  std::vector<int32_t> out(info.numel());
  std::memcpy(out.data(), bytes.data() + 8 + n + info.begin, info.end - info.begin);
  return out;
}

// Acceptance (issue 2): the header of tests/reference/gpt2_reference.py documents the recipe:
// constant lr 1e-3, betas 0.9/0.95, eps 1e-8, weight decay 0.1 on rank >= 2, clip 1.0, the same
// batch every step; adamw_losses[i] is the loss before update i.
TEST_F(TrainTest, TenAdamWStepLossesMatchPyTorchFixture) {
  auto model = load_model(kFixtures / "gpt2_tiny");
  const fs::path ref_path = kFixtures / "gpt2_tiny_reference.safetensors";
  auto ref = SafeTensorsFile::open(ref_path);
  const std::vector<int32_t> inputs = read_i32(ref, ref_path, "inputs");
  const std::vector<int32_t> targets = read_i32(ref, ref_path, "targets");
  const std::vector<float> want = ref.read_f32("adamw_losses");
  ASSERT_EQ(want.size(), 10u);
  TrainOptions o;
  o.steps = 10;
  o.batch_size = static_cast<int>(ref.info("inputs").shape[0]);
  o.seq_len = static_cast<int>(ref.info("inputs").shape[1]);
  o.lr = 1e-3f;
  o.min_lr = 1e-3f;
  o.warmup_steps = 0;
  o.weight_decay = 0.1f;
  o.grad_clip = 1.0f;
  o.eval_interval = 0;
  o.log_interval = 0;
  Trainer trainer(*model, *train, nullptr, o);
  trainer.set_batch_source([&](int32_t* x, int32_t* y) {
    std::copy(inputs.begin(), inputs.end(), x);
    std::copy(targets.begin(), targets.end(), y);
  });
  int calls = 0;
  trainer.add_step_callback([&](Trainer&, const StepInfo& info) {
    EXPECT_EQ(info.step, ++calls);
    EXPECT_FLOAT_EQ(info.lr, 1e-3f);
  });
  trainer.run();
  ASSERT_EQ(trainer.loss_history().size(), 10u);
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_NEAR(trainer.loss_history()[i], want[i], 1e-4) << "step " << i;
  }
  EXPECT_EQ(calls, 10);
  EXPECT_LT(want.back(), want.front());  // the fixture itself makes progress
}

TEST_F(TrainTest, ResumeContinuesBitIdentically) {
  // Uninterrupted: 8 steps.
  auto a = new_tiny();
  TrainOptions oa = small_options();
  oa.out_dir = dir / "a";
  Trainer ta(*a, *train, val.get(), oa);
  ta.run();

  // Interrupted after 4 steps (same schedule: lr_decay_steps is fixed at 8), then resumed.
  auto b = new_tiny();
  TrainOptions ob = oa;
  ob.steps = 4;
  ob.out_dir = dir / "b";
  Trainer tb(*b, *train, val.get(), ob);
  tb.run();
  ASSERT_TRUE(fs::exists(dir / "b/training_state.json"));
  EXPECT_EQ(Trainer::saved_options(dir / "b").lr_decay_steps, 8);

  auto c = load_model(dir / "b");
  TrainOptions oc = Trainer::saved_options(dir / "b");
  oc.steps = 8;
  Trainer tc(*c, *train, val.get(), oc);
  tc.resume(dir / "b");
  EXPECT_EQ(tc.step(), 4);
  tc.run();

  ASSERT_EQ(tc.loss_history().size(), 8u);
  for (size_t i = 0; i < 8; ++i) {
    EXPECT_EQ(tc.loss_history()[i], ta.loss_history()[i]) << "step " << i + 1;  // bit-identical
  }
  ASSERT_EQ(tc.val_history(), ta.val_history());
  EXPECT_EQ(ta.val_history().size(), 2u);  // steps 4 and 8
  EXPECT_EQ(std::memcmp(c->param_data(), a->param_data(), a->num_params() * sizeof(float)), 0);
  // The step-8 checkpoints of both runs hold the same weights.
  EXPECT_EQ(read_binary_file(dir / "a/model.safetensors"),
            read_binary_file(dir / "b/model.safetensors"));
  // The resumed run really continued: its first loss differs from the new run's step-5 loss only
  // if the state were lost; check that losses change over steps (non-trivial comparison).
  EXPECT_NE(ta.loss_history()[4], ta.loss_history()[0]);
}

TEST_F(TrainTest, GradientAccumulationEqualsLargerBatch) {
  // accum 2 x B 2 draws the same windows, in the same order, as accum 1 x B 4.
  auto a = new_tiny(), b = new_tiny();
  TrainOptions oa = small_options();
  oa.checkpoint_interval = 0;
  oa.steps = 3;
  TrainOptions ob = oa;
  ob.grad_accum = 1;
  ob.batch_size = 4;
  Trainer ta(*a, *train, nullptr, oa), tb(*b, *train, nullptr, ob);
  ta.run();
  tb.run();
  for (int i = 0; i < 3; ++i) EXPECT_NEAR(ta.loss_history()[i], tb.loss_history()[i], 1e-5);
  double max_diff = 0;
  for (size_t i = 0; i < a->num_params(); ++i) {
    max_diff =
        std::max(max_diff, static_cast<double>(std::fabs(a->param_data()[i] - b->param_data()[i])));
  }
  EXPECT_LT(max_diff, 1e-5);
  // And differs from no accumulation at B 2 (the check is not vacuous).
  auto c = new_tiny();
  TrainOptions oc = oa;
  oc.grad_accum = 1;
  Trainer tc(*c, *train, nullptr, oc);
  tc.run();
  EXPECT_NE(tc.loss_history()[1], ta.loss_history()[1]);
}

TEST_F(TrainTest, ResumeRefusesInconsistentOrIncompleteCheckpoints) {
  auto m = new_tiny();
  TrainOptions o = small_options();
  o.steps = 2;
  o.out_dir = dir / "ck";
  Trainer t(*m, *train, val.get(), o);
  t.run();
  auto fresh = [&] { return std::make_unique<Trainer>(*m, *train, val.get(), o); };
  EXPECT_NO_THROW(fresh()->resume(dir / "ck"));

  // The checkpoint is committed whole: OUT/latest names it and OUT's own files link to it.
  EXPECT_TRUE(fs::is_symlink(dir / "ck/latest"));
  EXPECT_TRUE(fs::is_symlink(dir / "ck/model.safetensors"));
  EXPECT_EQ(Trainer::checkpoint_to_resume(dir / "ck"),
            fs::canonical(dir / "ck/checkpoints/step-00000002"));

  // Weights rewritten after the state was committed (a damaged checkpoint).
  auto other = new_tiny();
  other->param_data()[0] += 1.0f;
  save_weights(*other, dir / "ck/latest/model.safetensors");
  expect_error([&] { fresh()->resume(dir / "ck"); }, "does not match training_state.json");
  save_weights(*m, dir / "ck/latest/model.safetensors");
  EXPECT_NO_THROW(fresh()->resume(dir / "ck"));

  // Truncated optimizer state.
  auto bytes = read_binary_file(dir / "ck/latest/training_state.bin");
  write_file_atomic(dir / "ck/latest/training_state.bin", bytes.data(), bytes.size() - 4);
  expect_error([&] { fresh()->resume(dir / "ck"); }, "training_state.bin");
  write_file_atomic(dir / "ck/latest/training_state.bin", bytes.data(), bytes.size());

  // Garbage JSON, and no JSON at all.
  const std::string json_text = read_text_file(dir / "ck/latest/training_state.json");
  write_file_atomic(dir / "ck/latest/training_state.json", std::string("{\"format\": 3"));
  expect_error([&] { fresh()->resume(dir / "ck"); }, "not valid JSON");
  write_file_atomic(dir / "ck/latest/training_state.json", std::string("{\"format\": \"other\"}"));
  expect_error([&] { fresh()->resume(dir / "ck"); }, "not a gaincell training state");
  write_file_atomic(dir / "ck/latest/training_state.json", std::string("{\"format\": 3}"));
  expect_error([&] { fresh()->resume(dir / "ck"); }, "'format' must be a string");
  std::string bad_step = json_text;
  bad_step.replace(bad_step.find("\"step\": 2"), 9, "\"step\": \"x\"");
  write_file_atomic(dir / "ck/latest/training_state.json", bad_step);
  expect_error([&] { fresh()->resume(dir / "ck"); }, "'step' must be an integer");
  fs::remove(dir / "ck/latest/training_state.json");
  expect_error([&] { fresh()->resume(dir / "ck"); }, "no training_state.json");

  // A checkpoint of another model size.
  write_file_atomic(dir / "ck/latest/training_state.json", json_text);
  GPT2Config bigger = GPT2Config::named("tiny");
  bigger.n_layer = 3;
  GPT2Model big(bigger);
  Trainer tbig(big, *train, val.get(), o);
  expect_error([&] { tbig.resume(dir / "ck"); }, "parameters");
}

TEST_F(TrainTest, LossFallsOnLearnableData) {
  auto m = new_tiny();
  TrainOptions o = small_options();
  o.steps = 40;
  o.grad_accum = 1;
  o.batch_size = 4;
  o.checkpoint_interval = 0;
  o.eval_interval = 0;
  o.lr = 1e-2f;
  o.lr_decay_steps = 0;
  Trainer t(*m, *train, val.get(), o);
  const float before = t.evaluate();
  TrainResult r = t.run();
  ASSERT_TRUE(r.final_val_loss.has_value());
  EXPECT_NEAR(before, std::log(101.0f), 0.3f);  // near-uniform at init
  EXPECT_LT(*r.final_val_loss, before - 1.0f);
  EXPECT_EQ(r.tokens, 40 * 4 * 16);
}

TEST_F(TrainTest, BadOptionsAreNamed) {
  auto m = new_tiny();
  TrainOptions o = small_options();
  o.seq_len = 64;  // tiny's block_size is 32
  expect_error([&] { Trainer(*m, *train, val.get(), o); }, "exceeds the model's n_positions");
  o = small_options();
  o.lr = -1;
  expect_error([&] { Trainer(*m, *train, val.get(), o); }, "learning rate");
  o = small_options();
  o.grad_accum = 0;
  expect_error([&] { Trainer(*m, *train, val.get(), o); }, "accumulation");
  write_token_file(dir / "short.bin", {1, 2, 3});
  auto shortval = TokenDataset::open(dir / "short.bin", 101);
  expect_error([&] { Trainer(*m, *train, &shortval, small_options()); },
               "validation set has 3 tokens");
  expect_error([] { TrainOptions::from_json({{"steps", "many"}}); }, "'steps'");
  TrainOptions round = TrainOptions::from_json(small_options().to_json());
  EXPECT_EQ(round.to_json(), small_options().to_json());
}

}  // namespace
}  // namespace gaincell
