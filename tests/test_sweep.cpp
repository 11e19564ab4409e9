// gaincell sweep (issue 13): the sweep file, seed statistics, Pareto fronts, the point runner on
// tiny committed models, and the CLI (resume after a kill, worker processes, failed points).
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/tools/sweep/statistics.h"
#include "gaincell/tools/sweep/sweep_driver.h"
#include "gaincell/tools/sweep/sweep_runner.h"
#include "gaincell/tools/sweep/sweep_spec.h"
#include "gaincell/train/perplexity.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell::sweep {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

const fs::path kTinyModel = fs::path(GAINCELL_SOURCE_DIR) / "tests/fixtures/gpt2_tiny";
const fs::path kAdaptModel = fs::path(GAINCELL_SOURCE_DIR) / "tests/fixtures/adaptation_linear";

class SweepTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("gaincell_sweep_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  // Random tokens below `vocab` (a token file in the `prepare` layout).
  fs::path token_file(const std::string& name, int n, int vocab, uint32_t seed = 7) {
    std::mt19937 rng(seed);
    std::vector<int32_t> tokens(n);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % vocab);
    write_token_file(dir_ / name, tokens);
    return dir_ / name;
  }

  SweepSpec parse(const std::string& text) { return SweepSpec::parse(text, dir_); }

  fs::path dir_;
};

// ---------------------------------------------------------------------------------------------
// Sweep file

TEST_F(SweepTest, GridExpandsInFileOrderWithTheLastAxisFastest) {
  const SweepSpec s = parse(R"({"axes": {"quantization.k.levels": [4, 8, 16],
                                          "array_size": [32, 64]}})");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 6u);
  EXPECT_EQ(points[0].label(), "quantization.k.levels=4, array_size=32");
  EXPECT_EQ(points[1].label(), "quantization.k.levels=4, array_size=64");
  EXPECT_EQ(points[5].label(), "quantization.k.levels=16, array_size=64");
  EXPECT_EQ(points[3].hw.k.levels, 8);
  EXPECT_EQ(points[3].hw.array_size, 64);
  EXPECT_EQ(points[3].hw.v.levels, 8);  // untouched fields keep the base's values
}

TEST_F(SweepTest, ListModeAndRoundTripThroughTheResolvedFile) {
  const SweepSpec s = parse(R"({"name": "l", "base": "paper-linear", "attention": "gaincell-linear",
    "points": [{"noise.gain_variation": 0.1}, {"noise.gain_variation": 0.0, "window": 512}],
    "seeds": 3, "evaluation": {"tokens": "val.bin", "limit": 100}})");
  const auto points = s.points();
  ASSERT_EQ(points.size(), 2u);
  EXPECT_EQ(points[0].hw.cell, CellModel::kLinear);
  EXPECT_DOUBLE_EQ(points[0].hw.noise.gain_variation, 0.1);
  EXPECT_EQ(points[1].hw.window, 512);
  EXPECT_EQ(points[0].hw.window, 1024);
  EXPECT_EQ(s.evaluation.tokens, dir_ / "val.bin");
  const SweepSpec again = SweepSpec::parse(s.to_json().dump(), dir_);
  EXPECT_EQ(again.to_json(), s.to_json());
  ASSERT_EQ(again.points().size(), 2u);
  EXPECT_EQ(again.points()[1].label(), points[1].label());
}

TEST_F(SweepTest, InvalidFilesFailBeforeAnyWorkWithTheFieldNamed) {
  auto message = [&](const std::string& text) {
    try {
      parse(text);
    } catch (const Error& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(R"({"axes": {"array_size": [32]}, "seed": 3})").find("'seed'"),
            std::string::npos);  // unknown top-level key
  EXPECT_NE(message(R"({"axes": {"quantization.k.level": [4]}})").find("quantization.k.level"),
            std::string::npos);  // unknown hardware field
  EXPECT_NE(message(R"({"axes": {"array_size": []}})").find("empty"), std::string::npos);
  // A value that fails validation names the point and the field.
  const std::string bad = message(R"({"axes": {"quantization.k.levels": [8, 1]}})");
  EXPECT_NE(bad.find("sweep point 1"), std::string::npos) << bad;
  EXPECT_NE(bad.find("quantization.k.levels"), std::string::npos) << bad;
  EXPECT_NE(message(R"({"axes": {"window": [100]}})").find("multiple of array_size"),
            std::string::npos);
  EXPECT_NE(message(R"({"axes": {"quantization.k.levels": [4.5]}})").find("integer"),
            std::string::npos);
  EXPECT_NE(message(R"({"axes": {"cell.alphas.0": [1]}})").find("derived"), std::string::npos);
  EXPECT_NE(message(R"({"axes": {"quantization.k": [1]}})").find("group"), std::string::npos);
  EXPECT_NE(message(R"({"axes": {"a": [1]}, "points": [{}]})").find("exclude"), std::string::npos);
  EXPECT_NE(message(R"({"axes": {"array_size": [64]}, "prepare": {"adapt": "yes"}})")
                .find("prepare.adapt"),
            std::string::npos);
  EXPECT_NE(message(R"({"axes": {"array_size": [64]}, "seeds": 0})").find("seeds"),
            std::string::npos);
  EXPECT_NE(message("{").find("not valid JSON"), std::string::npos);
  // The tasks evaluation: known task names, no perplexity-only keys, a known weight format.
  EXPECT_NE(message(R"({"axes": {"array_size": [64]},
                        "evaluation": {"type": "tasks", "tasks": ["mmlu"]}})")
                .find("unknown task 'mmlu'"),
            std::string::npos);
  EXPECT_NE(message(R"({"axes": {"array_size": [64]},
                        "evaluation": {"type": "tasks", "tasks": ["piqa"], "tokens": "v.bin"}})")
                .find("evaluation.tokens"),
            std::string::npos);
  EXPECT_NE(message(R"({"axes": {"array_size": [64]}, "evaluation": {"type": "tasks"}})")
                .find("evaluation.tasks"),
            std::string::npos);
  EXPECT_NE(message(R"({"axes": {"array_size": [64]}, "weights": "q4"})").find("'weights'"),
            std::string::npos);
}

TEST(SweepFieldPath, SetsNestedFieldsAndArrayElements) {
  json config = HwConfig::preset("paper-nonlinear").to_json();
  set_hw_field(config, "cell.coefficients.3", 0.5);
  set_hw_field(config, "leakage.retention_time_s", 2e-3);
  EXPECT_EQ(config["cell"]["coefficients"][3], 0.5);
  EXPECT_EQ(config["leakage"]["retention_time_s"], 2e-3);
  EXPECT_THROW(set_hw_field(config, "cell.coefficients.10", 1.0), Error);
  EXPECT_THROW(set_hw_field(config, "cell.coefficients.x", 1.0), Error);
}

// ---------------------------------------------------------------------------------------------
// Statistics and Pareto fronts

TEST(SweepStatistics, MeanStdAndConfidenceIntervalByHand) {
  // values 1, 2, 3, 4: mean 2.5, sample variance 5/3, t(0.975, 3) = 3.182.
  const SeedStatistics s = seed_statistics({1, 2, 3, 4});
  EXPECT_DOUBLE_EQ(s.mean, 2.5);
  EXPECT_NEAR(s.std, std::sqrt(5.0 / 3.0), 1e-12);
  EXPECT_NEAR(s.ci95_half_width, 3.182 * std::sqrt(5.0 / 3.0) / 2.0, 1e-12);
  const json j = s.to_json();
  EXPECT_NEAR(j["ci95"][0].get<double>(), 2.5 - s.ci95_half_width, 1e-12);
  const SeedStatistics one = seed_statistics({7});
  EXPECT_EQ(one.std, 0.0);
  EXPECT_TRUE(one.to_json()["ci95"].is_null());
  EXPECT_EQ(seed_statistics({3, 3, 3}).std, 0.0);
  EXPECT_THROW(seed_statistics({}), Error);
  EXPECT_THROW(seed_statistics({1.0, NAN}), Error);
  EXPECT_NEAR(student_t_975(1), 12.706, 1e-9);
  EXPECT_NEAR(student_t_975(60), 2.000, 2e-3);   // tables: 2.000
  EXPECT_NEAR(student_t_975(120), 1.980, 2e-3);  // tables: 1.980
}

TEST(SweepPareto, NonDominatedPointsByHand) {
  // (objective lower is better, cost): A(1, 10) B(2, 5) C(3, 6) D(2, 5) E(0.5, 20) F(4, 1)
  const std::vector<double> obj = {1, 2, 3, 2, 0.5, 4}, cost = {10, 5, 6, 5, 20, 1};
  EXPECT_EQ(pareto_front(obj, cost, false), (std::vector<size_t>{0, 1, 3, 4, 5}));
  // Higher is better: B(2,5) is beaten by C? no: C costs more. F(4,1) dominates all with cost >= 1
  // and objective <= 4: every other point.
  EXPECT_EQ(pareto_front(obj, cost, true), (std::vector<size_t>{5}));
}

// ---------------------------------------------------------------------------------------------
// Points on a tiny model

std::string tiny_spec(const std::string& axes, int seeds, const std::string& extra = "") {
  return R"({"attention": "gaincell-nonlinear", "base": {"preset": "paper-nonlinear",
    "window": 64, "array_size": 16}, )" +
         axes + R"(, "seeds": )" + std::to_string(seeds) +
         R"(, "evaluation": {"tokens": "val.bin", "limit": 200}, "cost": {"tokens": 64, "batch": 1})" +
         extra + "}";
}

TEST_F(SweepTest, SameSeedIsBitIdenticalAndZeroVariationHasZeroSpread) {
  token_file("val.bin", 400, 101);
  const SweepSpec s = parse(tiny_spec(R"("axes": {"noise.gain_variation": [0.0, 0.2]})", 3));
  auto ctx = open_sweep(s, kTinyModel);
  const json a = run_point(*ctx, 1), b = run_point(*ctx, 1);
  ASSERT_EQ(a["status"], "ok") << a.dump();
  EXPECT_EQ(a["metrics"], b["metrics"]);  // same seeds: bit-identical (JSON keeps every bit)
  EXPECT_GT(a["metrics"]["ppl"]["std"].get<double>(), 0.0);
  const json zero = run_point(*ctx, 0);
  ASSERT_EQ(zero["status"], "ok");
  EXPECT_EQ(zero["metrics"]["ppl"]["std"].get<double>(), 0.0);
  EXPECT_EQ(zero["metrics"]["ppl"]["values"].size(), 3u);
  EXPECT_EQ(zero["seeds"], json({0, 1, 2}));
  EXPECT_TRUE(zero["cost"]["energy_per_token_j"].get<double>() > 0);
  EXPECT_EQ(a["hw"]["noise"]["gain_variation"], 0.2);
}

TEST_F(SweepTest, ConfidenceIntervalShrinksWithMoreSeeds) {
  token_file("val.bin", 400, 101);
  auto width = [&](int seeds) {
    auto ctx = open_sweep(parse(tiny_spec(R"("axes": {"noise.gain_variation": [0.3]})", seeds)),
                          kTinyModel);
    const json r = run_point(*ctx, 0);
    const json ci = r["metrics"]["ppl"]["ci95"];
    return ci[1].get<double>() - ci[0].get<double>();
  };
  const double w2 = width(2), w8 = width(8);
  EXPECT_GT(w2, 0.0);
  EXPECT_LT(w8, w2);
}

TEST_F(SweepTest, PointEqualsADirectEvaluationOfTheSameConfiguration) {
  const fs::path val = token_file("val.bin", 300, 101);
  const SweepSpec s = parse(tiny_spec(R"("axes": {"quantization.k.levels": [4, 8]})", 1));
  auto ctx = open_sweep(s, kTinyModel);
  const json r = run_point(*ctx, 1);
  ASSERT_EQ(r["status"], "ok");
  // Independently: load the model with that configuration from disk and score the tokens.
  LoadModelOptions load;
  load.overrides.attention = "gaincell-nonlinear";
  load.overrides.hw = HwConfig::from_json(r["hw"]);
  auto model = load_model(kTinyModel, load);
  const TokenDataset data = TokenDataset::open(val, 101);
  std::vector<int32_t> tokens = data.slice(0, 200);
  const PerplexityResult direct = rolling_perplexity(*model, tokens, 32, 32);
  EXPECT_EQ(r["metrics"]["ppl"]["mean"].get<double>(), direct.ppl);
  EXPECT_EQ(r["metrics"]["mean_nll"]["mean"].get<double>(), direct.mean_nll);
}

TEST_F(SweepTest, AFailingPointIsRecordedAndTheOthersRun) {
  token_file("val.bin", 300, 101);
  // Read noise on A in tile-mean mode is simulated token by token only: the whole-sequence
  // evaluation refuses it at run time (a valid configuration that fails to run).
  const SweepSpec s = parse(tiny_spec(
      R"("points": [{"noise.read_noise_a": 0.0}, {"noise.read_noise_a": 0.1,
          "quantization.out_mode": "tile-mean"}, {"noise.read_noise_a": 0.05}])",
      1));
  auto ctx = open_sweep(s, kTinyModel);
  const json bad = run_point(*ctx, 1);
  EXPECT_EQ(bad["status"], "failed");
  EXPECT_NE(bad["error"].get<std::string>().find("tile-mean"), std::string::npos);
  EXPECT_EQ(run_point(*ctx, 2)["status"], "ok");
}

TEST_F(SweepTest, AdaptationPerPointRecordsConvergence) {
  const fs::path train = token_file("train.bin", 2000, 48, 3);
  token_file("val.bin", 300, 48, 4);
  const SweepSpec s = parse(R"({"attention": "gaincell-nonlinear",
      "base": {"preset": "paper-nonlinear", "window": 64, "array_size": 16},
      "axes": {"quantization.q.levels": [16]}, "evaluation": {"tokens": "val.bin"},
      "prepare": {"adapt": "from-reset", "tokens": "train.bin", "batch": 4, "max_passes": 30,
                  "finetune_steps": 2}})");
  auto ctx = open_sweep(s, kAdaptModel);
  const json r = run_point(*ctx, 0);
  ASSERT_EQ(r["status"], "ok") << r.dump();
  const json& seed = r["per_seed"][0];
  EXPECT_GE(seed["adaptation"]["passes"].get<int>(), 1);
  EXPECT_LE(seed["adaptation"]["passes"].get<int>(), 30);
  EXPECT_LT(seed["adaptation"]["final_loss"].get<double>(),
            seed["adaptation"]["initial_loss"].get<double>());
  EXPECT_EQ(seed["finetune"]["steps"], 2);
  EXPECT_EQ(r["adaptation"]["seeds"], 1);
  // A model without stage-A targets cannot be adapted: an error before any point runs.
  EXPECT_THROW(open_sweep(s, kTinyModel), Error);
}

TEST_F(SweepTest, ModelAndCellMismatchesAreErrorsBeforeAnyPointRuns) {
  token_file("val.bin", 300, 101);
  // The tiny model is softmax: without "attention" nothing would run on the hardware.
  EXPECT_THROW(open_sweep(parse(R"({"axes": {"array_size": [64]},
                                   "evaluation": {"tokens": "val.bin"}})"),
                          kTinyModel),
               Error);
  // The variant fixes the cell model: sweeping it would silently run another cell.
  EXPECT_THROW(open_sweep(parse(tiny_spec(R"("axes": {"cell.model": ["polynomial", "x3"]})", 1)),
                          kTinyModel),
               Error);
  // Missing evaluation data.
  EXPECT_THROW(open_sweep(parse(R"({"attention": "gaincell-nonlinear",
                                   "axes": {"array_size": [64]}})"),
                          kTinyModel),
               Error);
}

// ---------------------------------------------------------------------------------------------
// The tasks evaluation (the evaluation harness's library API) and --weights

const fs::path kEvalModel = fs::path(GAINCELL_SOURCE_DIR) / "tests/fixtures/eval_tiny";
const fs::path kEvalData = fs::path(GAINCELL_SOURCE_DIR) / "tests/fixtures/eval";

// Every metric `gaincell eval --json` reports for every task equals the sweep line's value of
// that (task, metric), bit for bit (JSON keeps every bit of a double).
void expect_metrics_equal_eval(const json& line, const json& eval_report, int expected_metrics) {
  int compared = 0;
  for (const auto& [task, values] : eval_report["results"].items()) {
    for (const auto& [metric, value] : values.items()) {
      if (!value.is_number_float() || metric.find("_stderr") != std::string::npos ||
          metric == "seconds")
        continue;
      const std::string name = task + "." + metric;
      ASSERT_TRUE(line["metrics"].contains(name)) << name << "\n" << line.dump();
      EXPECT_EQ(line["metrics"][name]["mean"].get<double>(), value.get<double>()) << name;
      ++compared;
    }
  }
  EXPECT_EQ(compared, expected_metrics);
}

class SweepTasksTest : public SweepTest {
 protected:
  // A bits sweep around the paper's design (point 1 is the paper-nonlinear preset itself) and a
  // point with device variation, evaluated on four task types, 2 documents each.
  void write_spec(const std::string& extra = "") {
    write_file_atomic(dir_ / "s.json", R"({"attention": "gaincell-nonlinear",
      "base": "paper-nonlinear",
      "points": [{"quantization.k.levels": 4}, {"quantization.k.levels": 8},
                 {"noise.gain_variation": 0.2, "noise.seed": 5}],
      "evaluation": {"type": "tasks", "limit": 2, "data_dir": ")" +
                                           kEvalData.string() + R"(",
        "tasks": ["arc_easy", "winogrande", "lambada_openai", "wikitext=)" +
                                           (kEvalData / "wikitext_test.jsonl").string() + R"("]})" +
                                           extra + "}");
  }
  json sweep_point(int k, const std::string& args = "") {
    const auto r = cli_test::run_cli(dir_, "sweep --quiet --model " + kEvalModel.string() +
                                               " --spec " + (dir_ / "s.json").string() +
                                               " --point " + std::to_string(k) + args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  }
  json direct_eval(const std::string& hw, const std::string& args = "") {
    const auto r = cli_test::run_cli(
        dir_, "eval --quiet --json --bootstrap-iters 0 --model " + kEvalModel.string() +
                  " --attention gaincell-nonlinear --hw " + hw +
                  " --tasks arc_easy,winogrande,lambada_openai,wikitext --data-dir " +
                  kEvalData.string() + " --limit 2" + args);
    EXPECT_EQ(r.exit_code, 0) << r.err;
    return json::parse(r.out);
  }
};

// Issue 13's acceptance: the paper's design as one point of a (tasks) sweep equals a direct
// `gaincell eval` with the same configuration and seed.
TEST_F(SweepTasksTest, PaperDesignPointEqualsADirectGaincellEval) {
  GAINCELL_REQUIRE_VOCAB();
  write_spec();
  const json paper = sweep_point(1);
  ASSERT_EQ(paper["status"], "ok") << paper.dump();
  EXPECT_EQ(paper["weights"], "f32");
  EXPECT_EQ(HwConfig::from_json(paper["hw"]).to_json(),
            HwConfig::preset("paper-nonlinear").to_json());
  // arc_easy acc, acc_norm; winogrande acc; lambada perplexity, acc; wikitext 3 perplexities.
  expect_metrics_equal_eval(paper, direct_eval("paper-nonlinear"), 8);
  EXPECT_EQ(paper["metrics"]["avg_acc"]["mean"].get<double>(),
            (paper["metrics"]["arc_easy.acc"]["mean"].get<double>() +
             paper["metrics"]["winogrande.acc"]["mean"].get<double>() +
             paper["metrics"]["lambada_openai.acc"]["mean"].get<double>()) /
                3);
  // A point with device variation and its own seed: the same configuration file to eval.
  const json varied = sweep_point(2);
  ASSERT_EQ(varied["status"], "ok") << varied.dump();
  EXPECT_EQ(varied["seeds"], json({5}));
  write_file_atomic(dir_ / "varied_hw.json", varied["hw"].dump());
  expect_metrics_equal_eval(varied, direct_eval((dir_ / "varied_hw.json").string()), 8);
  EXPECT_NE(varied["metrics"]["wikitext.word_perplexity"]["mean"],
            paper["metrics"]["wikitext.word_perplexity"]["mean"]);
}

// --weights on sweep and eval: the same packed weights in both, recorded in both results.
TEST_F(SweepTasksTest, WeightsOptionOfSweepAndEvalAgreeAndAreRecorded) {
  GAINCELL_REQUIRE_VOCAB();
  write_spec(R"(, "weights": "bf16")");
  const json f32 = sweep_point(1, " --weights f32");
  const json q8 = sweep_point(1, " --weights q8");
  const json bf16 = sweep_point(1);  // the sweep file's
  EXPECT_EQ(f32["weights"], "f32");
  EXPECT_EQ(q8["weights"], "q8");
  EXPECT_EQ(bf16["weights"], "bf16");
  const json eval_q8 = direct_eval("paper-nonlinear", " --weights q8");
  EXPECT_EQ(eval_q8["config"]["weights"], "q8");
  expect_metrics_equal_eval(q8, eval_q8, 8);
  expect_metrics_equal_eval(bf16, direct_eval("paper-nonlinear", " --weights bf16"), 8);
  // The packed weights are used: rounding changes the perplexities a little, not much.
  const double ppl32 = f32["metrics"]["lambada_openai.perplexity"]["mean"];
  const double ppl8 = q8["metrics"]["lambada_openai.perplexity"]["mean"];
  EXPECT_NE(ppl32, ppl8);
  EXPECT_NEAR(ppl8, ppl32, 0.05 * ppl32);
}

TEST_F(SweepTasksTest, MissingTaskDataIsAnErrorBeforeAnyPointRuns) {
  write_file_atomic(dir_ / "s.json", R"({"attention": "gaincell-nonlinear",
      "axes": {"array_size": [64]}, "evaluation": {"type": "tasks", "tasks": ["piqa"]}})");
  EXPECT_THROW(open_sweep(SweepSpec::load(dir_ / "s.json"), kEvalModel), Error);  // no data_dir
  write_file_atomic(dir_ / "s.json", R"({"attention": "gaincell-nonlinear",
      "axes": {"array_size": [64]}, "objective": "ppl",
      "evaluation": {"type": "tasks", "tasks": ["piqa=none.jsonl"]}})");
  try {
    open_sweep(SweepSpec::load(dir_ / "s.json"), kEvalModel);
    ADD_FAILURE() << "a missing task file must be an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("none.jsonl"), std::string::npos) << e.what();
  }
}

// ---------------------------------------------------------------------------------------------
// The command: outputs, resume after a kill, worker processes

json without_timing(json line) {
  line.erase("timing");
  return line;
}

std::map<int, json> results_by_point(const fs::path& out) {
  std::map<int, json> m;
  for (const json& r : read_results(out / "results.jsonl"))
    m[r["point"].get<int>()] = without_timing(r);
  return m;
}

TEST_F(SweepTest, CliResumeAfterAKillEqualsAnUninterruptedRun) {
  token_file("val.bin", 300, 101);
  write_file_atomic(dir_ / "s.json", tiny_spec(R"("axes": {"quantization.k.levels": [4, 8, 16],
                                          "noise.read_noise_s": [0.0, 0.05]})",
                                               2));
  const std::string common = "sweep --model " + kTinyModel.string() + " --spec " +
                             (dir_ / "s.json").string() + " --quiet --out ";
  const auto full = cli_test::run_cli(dir_, common + (dir_ / "full").string());
  ASSERT_EQ(full.exit_code, 0) << full.err;
  const auto killed =
      cli_test::run_cli(dir_, common + (dir_ / "part").string() + " --kill-after 2");
  EXPECT_NE(killed.exit_code, 0);
  EXPECT_EQ(read_results(dir_ / "part/results.jsonl").size(), 2u);
  EXPECT_FALSE(fs::exists(dir_ / "part/summary.csv"));
  // Without --resume an existing sweep is not overwritten.
  EXPECT_NE(cli_test::run_cli(dir_, common + (dir_ / "part").string()).exit_code, 0);
  const auto resumed = cli_test::run_cli(dir_, common + (dir_ / "part").string() + " --resume");
  ASSERT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_EQ(json::parse(resumed.out)["ran"], 4);
  EXPECT_EQ(json::parse(resumed.out)["resumed"], 2);
  EXPECT_EQ(results_by_point(dir_ / "part"), results_by_point(dir_ / "full"));
  EXPECT_EQ(read_text_file(dir_ / "part/summary.csv"), read_text_file(dir_ / "full/summary.csv"));
  // The outputs: a CSV row per point, the fronts, the plots and the report.
  const std::string csv = read_text_file(dir_ / "full/summary.csv");
  EXPECT_EQ(std::count(csv.begin(), csv.end(), '\n'), 7);
  for (const char* f : {"pareto.json", "pareto_energy.svg", "pareto_area.svg", "report.md",
                        "axis_quantization_k_levels.svg", "axis_noise_read_noise_s.svg"})
    EXPECT_TRUE(fs::exists(dir_ / "full" / f)) << f;
  // A resume with another sweep file is refused.
  write_file_atomic(dir_ / "s2.json", tiny_spec(R"("axes": {"quantization.k.levels": [4]})", 2));
  EXPECT_NE(cli_test::run_cli(dir_, "sweep --model " + kTinyModel.string() + " --spec " +
                                        (dir_ / "s2.json").string() + " --quiet --resume --out " +
                                        (dir_ / "part").string())
                .exit_code,
            0);
}

TEST_F(SweepTest, CliWorkerProcessesGiveTheSameResults) {
  token_file("val.bin", 300, 101);
  write_file_atomic(dir_ / "s.json", tiny_spec(R"("points": [{"quantization.v.levels": 4},
                                  {"noise.read_noise_a": 0.1, "quantization.out_mode": "tile-mean"},
                                  {"quantization.v.levels": 16}, {"array_size": 32}])",
                                               1));
  const std::string common = "sweep --model " + kTinyModel.string() + " --spec " +
                             (dir_ / "s.json").string() + " --quiet --out ";
  ASSERT_EQ(cli_test::run_cli(dir_, common + (dir_ / "one").string()).exit_code, 0);
  const auto two = cli_test::run_cli(dir_, common + (dir_ / "two").string() + " --jobs 2");
  ASSERT_EQ(two.exit_code, 0) << two.err;
  EXPECT_EQ(json::parse(two.out)["failed"], 1);
  EXPECT_EQ(results_by_point(dir_ / "one"), results_by_point(dir_ / "two"));
  // One point as a plain job equals its line in the sweep.
  const auto job =
      cli_test::run_cli(dir_, "sweep --quiet --model " + kTinyModel.string() + " --spec " +
                                  (dir_ / "s.json").string() + " --point 2");
  ASSERT_EQ(job.exit_code, 0) << job.err;
  EXPECT_EQ(without_timing(json::parse(job.out)), results_by_point(dir_ / "one")[2]);
}

}  // namespace
}  // namespace gaincell::sweep
