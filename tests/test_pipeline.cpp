// ctest-labels: release-only (arithmetic or long runs: the sanitizer pass skips it)
// Smoke and resume tests of the three-stage pipeline (issue 4) on a tiny model.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/tools/adapt/adaptation.h"
#include "gaincell/tools/pipeline/pipeline.h"
#include "test_cli_util.h"

using namespace gaincell;
namespace fs = std::filesystem;

namespace {

constexpr int kVocab = 40;

std::vector<int32_t> corpus(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int32_t> t(n);
  for (size_t i = 0; i < n; ++i) t[i] = i < 2 ? 0 : (t[i - 2] * 7 + 3 + (rng() % 4 == 0)) % kVocab;
  return t;
}

class PipelineTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("gaincell_pipeline_" + std::to_string(::getpid()));
    fs::create_directories(dir_ / "tok");
    write_token_file(dir_ / "tok" / "train.bin", corpus(6000, 1));
    write_token_file(dir_ / "tok" / "val.bin", corpus(1500, 2));
    GPT2Config c;
    c.n_layer = 1;
    c.n_head = 2;
    c.n_embd = 16;
    c.block_size = 32;
    c.vocab_size = kVocab;
    GPT2Model softmax(c);
    softmax.init_random(7);
    save_model(softmax, dir_ / "init");
  }
  void TearDown() override { fs::remove_all(dir_); }

  PipelineOptions options(const std::string& out) const {
    PipelineOptions o;
    o.init_dir = dir_ / "init";
    o.data_dir = dir_ / "tok";
    o.out_dir = dir_ / out;
    for (TrainOptions* t : {&o.stage_a, &o.stage_c}) {
      t->steps = 6;
      t->batch_size = 2;
      t->seq_len = 32;
      t->warmup_steps = 2;
      t->lr_decay_steps = 6;  // the schedule must not depend on `steps` (see the resume test)
      t->lr = 1e-2f;
      t->eval_interval = 3;
      t->eval_iters = 2;
      t->checkpoint_interval = 3;
      t->log_interval = 0;
    }
    o.adapt_batch = 2;
    o.eval_tokens = 512;
    return o;
  }
  fs::path dir_;
};

}  // namespace

TEST_F(PipelineTest, RunsAllStagesAndWritesModelDirectories) {
  const nlohmann::json s = run_pipeline(options("run"));
  for (const char* key : {"ppl_softmax", "ppl_linear", "ppl_nonlinear_unadapted",
                          "ppl_nonlinear_adapted", "ppl_nonlinear_finetuned"}) {
    ASSERT_TRUE(s.contains(key)) << key;
    EXPECT_TRUE(std::isfinite(s[key].get<double>())) << key;
    EXPECT_GT(s[key].get<double>(), 1.0) << key;
  }
  EXPECT_TRUE(fs::exists(dir_ / "run" / "pipeline.json"));
  // Each stage is a standard model directory carrying its hardware and scalers.
  EXPECT_EQ(read_model_config(dir_ / "run" / "A").attention, "gaincell-linear");
  EXPECT_EQ(read_model_config(dir_ / "run" / "B").attention, "gaincell-nonlinear");
  EXPECT_EQ(read_model_config(dir_ / "run" / "C").attention, "gaincell-nonlinear");
  EXPECT_EQ(read_model_config(dir_ / "run" / "C").hw.name, "paper-nonlinear");
  auto a = load_model(dir_ / "run" / "A");
  const ParamInfo& ts = a->param("h.0.attn.q_scaler.target_std");
  EXPECT_GT(a->param_data()[ts.offset], 0.0f) << "stage A must record target statistics";
  EXPECT_FALSE(s["B"]["adaptation"]["passes"].empty());
}

TEST_F(PipelineTest, ResumingAfterEachStageGivesTheSameResult) {
  const nlohmann::json full = run_pipeline(options("full"));
  PipelineOptions staged = options("staged");
  staged.stop_after = "A";
  run_pipeline(staged);
  staged.stop_after = "B";
  run_pipeline(staged);
  // Interrupt stage C after its checkpoint at step 3: a run to step 3 (same LR schedule), then
  // its marker removed, leaves exactly what an interrupted run leaves behind.
  PipelineOptions shorter = options("staged");
  shorter.stage_c.steps = 3;
  fs::remove(dir_ / "staged" / "pipeline_options.json");  // the run directory check, by hand
  run_pipeline(shorter);
  fs::remove(dir_ / "staged" / "C" / "stage.json");
  fs::remove(dir_ / "staged" / "pipeline_options.json");  // the shorter run recorded steps = 3
  const nlohmann::json resumed = run_pipeline(options("staged"));
  for (const char* key : {"ppl_linear", "ppl_nonlinear_unadapted", "ppl_nonlinear_adapted",
                          "ppl_nonlinear_finetuned"}) {
    EXPECT_DOUBLE_EQ(full[key].get<double>(), resumed[key].get<double>()) << key;
  }
}

// With --reset the adaptation starts from a = 1, b = 0: the summary reports that start as the
// unadapted model and stage A's scalers on the nonlinear cell separately.
TEST_F(PipelineTest, ResetReportsBothUnadaptedModels) {
  PipelineOptions plain = options("plain");
  plain.stop_after = "B";
  const nlohmann::json p = run_pipeline(plain);
  PipelineOptions reset = options("reset");
  reset.stop_after = "B";
  reset.adaptation.reset = true;
  const nlohmann::json r = run_pipeline(reset);
  EXPECT_DOUBLE_EQ(p["B"]["unadapted"]["val_ppl"].get<double>(),
                   p["B"]["unadapted_stage_a_scalers"]["val_ppl"].get<double>());
  EXPECT_DOUBLE_EQ(r["B"]["unadapted_stage_a_scalers"]["val_ppl"].get<double>(),
                   p["B"]["unadapted"]["val_ppl"].get<double>());
  EXPECT_NE(r["B"]["unadapted"]["val_ppl"].get<double>(),
            r["B"]["unadapted_stage_a_scalers"]["val_ppl"].get<double>());
  EXPECT_TRUE(r["B"]["adaptation_options"]["reset"].get<bool>());
  EXPECT_FALSE(p["B"]["adaptation_options"]["reset"].get<bool>());
}

TEST_F(PipelineTest, RefusesARunDirectoryOfOtherOptions) {
  PipelineOptions o = options("run");
  o.stop_after = "A";
  run_pipeline(o);
  o.stage_a.steps = 4;
  try {
    run_pipeline(o);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("other options"), std::string::npos) << e.what();
  }
}

// `gaincell adapt` as a user runs it on a stage A directory: the adapted model, the JSON
// trajectory (the library's result on the same batch), and validation before and after.
TEST_F(PipelineTest, AdaptCommandMatchesTheLibraryAndValidates) {
  PipelineOptions o = options("run");
  o.stop_after = "A";
  run_pipeline(o);
  const fs::path a = dir_ / "run" / "A", out = dir_ / "adapted";
  const auto r = cli_test::run_cli(dir_, "adapt --model " + a.string() + " --data " +
                                             (dir_ / "tok").string() + " --out " + out.string() +
                                             " --reset --batch 2 --eval-tokens 256 --json");
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto j = nlohmann::json::parse(r.out);
  EXPECT_EQ(j, nlohmann::json::parse(read_text_file(out / "adaptation.json")));
  EXPECT_TRUE(j["options"]["reset"].get<bool>());
  EXPECT_EQ(j["passes"].size(), j["converged"].get<bool>() ? j["passes"].size() : 101u);
  EXPECT_NE(r.err.find("adapt: pass   0"), std::string::npos) << r.err;
  EXPECT_EQ(j["validation"]["before"]["tokens"], 255);  // 256 tokens, the first not predicted
  EXPECT_TRUE(j["validation"]["after"]["val_loss"].is_number());
  EXPECT_EQ(read_model_config(out).attention, "gaincell-nonlinear");

  // The same algorithm in the library, on the batch the command draws (seed 1337).
  LoadModelOptions load;
  load.overrides.attention = "gaincell-nonlinear";
  auto model = load_model(a, load);
  const TokenDataset train = TokenDataset::open(dir_ / "tok" / "train.bin", kVocab);
  BatchSampler sampler(train, 2, 32, 1337);
  std::vector<int32_t> x(64), y(64);
  sampler.next(x.data(), y.data());
  AdaptationOptions opt;
  opt.reset = true;
  const AdaptationResult lib = adapt_scalers(*model, x, y, 2, 32, opt);
  EXPECT_EQ(j["passes"].size(), lib.passes.size());
  EXPECT_FLOAT_EQ(j["final_loss"].get<float>(), lib.final_loss);
  // The validation after the adaptation is that of the written model.
  const StageEvaluation after = evaluate_on_tokens(
      *load_model(out), TokenDataset::open(dir_ / "tok" / "val.bin", kVocab), 32, 256);
  EXPECT_DOUBLE_EQ(j["validation"]["after"]["val_loss"].get<double>(), after.loss);

  // A model without recorded targets, a missing directory, a bad option: named errors.
  const auto no_targets =
      cli_test::run_cli(dir_, "adapt --model " + (dir_ / "init").string() + " --data " +
                                  (dir_ / "tok").string() + " --out " + (dir_ / "x").string());
  EXPECT_NE(no_targets.exit_code, 0);
  EXPECT_NE(no_targets.err.find("target"), std::string::npos) << no_targets.err;
  EXPECT_FALSE(fs::exists(dir_ / "x"));
  const auto missing =
      cli_test::run_cli(dir_, "adapt --model " + (dir_ / "nope").string() + " --data " +
                                  (dir_ / "tok").string() + " --out " + (dir_ / "y").string());
  EXPECT_NE(missing.exit_code, 0);
  EXPECT_NE(missing.err.find("nope"), std::string::npos) << missing.err;
  const auto bad =
      cli_test::run_cli(dir_, "adapt --model " + a.string() + " --data " + (dir_ / "tok").string() +
                                  " --out " + (dir_ / "z").string() + " --eval-tokens -3");
  EXPECT_NE(bad.exit_code, 0);
  EXPECT_NE(bad.err.find("--eval-tokens"), std::string::npos) << bad.err;
}

TEST_F(PipelineTest, RejectsBadOptions) {
  PipelineOptions o = options("bad");
  o.stop_after = "Z";
  EXPECT_THROW(run_pipeline(o), Error);
  o = options("bad");
  o.data_dir = dir_ / "missing";
  EXPECT_THROW(run_pipeline(o), Error);
}
