// Kill and resume (issue 17 item 2): `gaincell train`, `gaincell pipeline` and `gaincell sweep`
// are killed with SIGKILL at random moments, many times, and resumed each time. After every kill
// the output directory holds only complete files (loadable checkpoints, JSON that parses, results
// lines that are whole); the final models and results are bit-identical to an uninterrupted run.
// It starts ~50 processes of tiny models.
// ctest-labels: release-only (slow: the sanitizer pass skips it)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/tools/sweep/sweep_driver.h"
#include "gaincell/train/trainer.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using test_util::TempDir;
using Clock = std::chrono::steady_clock;

// Byte-level vocabulary (257) and a 1-layer model: each checkpoint is ~100 kB, so a kill lands
// in the middle of a checkpoint write often (every step writes one).
void write_inputs(const fs::path& dir) {
  std::mt19937 rng(17);
  std::vector<int32_t> tokens(4000);
  for (auto& t : tokens) t = static_cast<int32_t>(rng() % 200);
  fs::create_directories(dir / "tok");
  write_token_file(dir / "tok/train.bin", std::vector<int32_t>(tokens.begin(), tokens.end() - 600));
  write_token_file(dir / "tok/val.bin", std::vector<int32_t>(tokens.end() - 600, tokens.end()));
  write_file_atomic(dir / "config.json",
                    std::string(R"({"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 16,
                                    "vocab_size": 257, "gaincell_tokenizer": "bytes"})"));
}

std::vector<std::string> train_args(const fs::path& dir, const fs::path& out) {
  return {"train",
          "--data",
          (dir / "tok").string(),
          "--config",
          (dir / "config.json").string(),
          "--out",
          out.string(),
          "--steps",
          "60",
          "--seq-len",
          "16",
          "--batch-size",
          "2",
          "--lr",
          "1e-2",
          "--warmup",
          "2",
          "--lr-decay-steps",
          "60",
          "--eval-interval",
          "5",
          "--eval-iters",
          "2",
          "--checkpoint-interval",
          "1",
          "--log-interval",
          "0",
          "--seed",
          "3"};
}

// Starts `gaincell ARGS` (stdout/stderr to files in `dir`); returns its pid.
pid_t spawn(const fs::path& dir, const std::vector<std::string>& args) {
  const pid_t pid = ::fork();
  if (pid == 0) {
    const std::string out = (dir / "child.out").string(), err = (dir / "child.err").string();
    if (!std::freopen(out.c_str(), "w", stdout) || !std::freopen(err.c_str(), "w", stderr))
      ::_exit(126);
    std::vector<char*> argv;
    std::string exe = GAINCELL_CLI_PATH;
    argv.push_back(exe.data());
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::setenv("OMP_NUM_THREADS", "1", 1);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

int wait_exit(pid_t pid) {
  int status = 0;
  ::waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

// Every checkpoint directory under OUT (except temporaries, removed on the next start) is
// complete: the trainer's verifier accepts it and the model loads from it. Returns the step a
// resume would continue from (0 before the first commit).
int64_t check_only_complete_checkpoints(const fs::path& out) {
  std::error_code ec;
  for (fs::directory_iterator it(out / "checkpoints", ec), end; !ec && it != end;
       it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find(".tmp.") != std::string::npos) continue;
    EXPECT_NO_THROW(Trainer::checkpoint_to_resume(out)) << name;
    EXPECT_NO_THROW(load_model(it->path())) << name;
  }
  // A kill between the first checkpoint's rename and the switch of `latest` leaves a complete
  // directory and no `latest` yet (checked above); the next start begins again.
  if (!fs::exists(fs::symlink_status(out / "latest", ec))) return 0;
  EXPECT_NO_THROW(load_model(out)) << "OUT itself must load as the latest model";
  const fs::path ck = Trainer::checkpoint_to_resume(out);
  return json_int<int64_t>(read_json_file(ck / "training_state.json")["step"], "step");
}

nlohmann::json results_of(const fs::path& out) {
  nlohmann::json s = read_json_file(out / "training_state.json");
  return {{"step", s["step"]},
          {"losses", s["losses"]},
          {"val_losses", s["val_losses"]},
          {"sampler", s["sampler"]}};
}

struct KillLoop {
  int kills = 0, starts = 0, rounds = 0;
};

// Kills a command again and again and resumes it. Each start of `args()` is killed with SIGKILL
// after a random part of `range_s` and followed by `after_kill` (the checks of what a kill
// leaves); a start that finishes before its kill ends a round, checked by `after_round` (the final
// results against the uninterrupted run). Rounds are repeated, from a fresh output directory
// (`reset`) and with half the delay range, until `min_kills` kills were made; a round ends by
// itself after `max_kills` kills, running the command to the end. So whatever the machine's load,
// the kills land at every phase (start-up, a step, a file write, the clean-up).
KillLoop kill_and_resume(const fs::path& dir, const std::function<std::vector<std::string>()>& args,
                         double range_s, int min_kills, int max_kills, uint32_t seed,
                         const std::function<void()>& after_kill,
                         const std::function<void()>& after_round,
                         const std::function<void()>& reset) {
  std::mt19937 rng(seed);
  KillLoop loop;
  int round_kills = 0;
  while (true) {
    const pid_t pid = spawn(dir, args());
    ++loop.starts;
    int code = 0;
    if (round_kills >= max_kills) {  // enough kills in this round: run to the end
      code = wait_exit(pid);
    } else {
      std::this_thread::sleep_for(
          std::chrono::duration<double>(std::uniform_real_distribution<double>(0, range_s)(rng)));
      // Not reaped yet, so the pid is still the child's: a start that ended by itself just
      // before the SIGKILL reports its own exit status.
      ::kill(pid, SIGKILL);
      code = wait_exit(pid);
    }
    if (code != -SIGKILL) {  // finished before the kill
      EXPECT_EQ(code, 0) << read_text_file(dir / "child.err");
      ++loop.rounds;
      after_round();
      if (loop.kills >= min_kills || ::testing::Test::HasFailure()) break;
      reset();
      round_kills = 0;
      range_s /= 2;
      continue;
    }
    ++loop.kills;
    ++round_kills;
    after_kill();
  }
  return loop;
}

// Appends the counts to GAINCELL_KILL_RESUME_RECORD (scripts/reliability_figures.py reads it for
// docs/reliability.md).
void record(const char* test, const KillLoop& loop, double run_s,
            const nlohmann::json& where = nlohmann::json::object()) {
  std::printf("kill-resume %s: %d kills over %d starts in %d rounds, uninterrupted run %.2f s\n",
              test, loop.kills, loop.starts, loop.rounds, run_s);
  if (const char* file = std::getenv("GAINCELL_KILL_RESUME_RECORD"))
    std::ofstream(file, std::ios::app) << nlohmann::json{{"test", test},
                                                         {"kills", loop.kills},
                                                         {"starts", loop.starts},
                                                         {"rounds", loop.rounds},
                                                         {"kills_at", where}}
                                              .dump()
                                       << "\n";
}

// Runs `args` to the end; returns its wall time.
double timed_run(const fs::path& dir, const std::vector<std::string>& args) {
  const auto t0 = Clock::now();
  EXPECT_EQ(wait_exit(spawn(dir, args)), 0) << read_text_file(dir / "child.err");
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

bool is_temporary(const fs::path& p) {
  return p.filename().string().find(".tmp.") != std::string::npos;
}

// Every file under `out` that is not a temporary of a killed process is complete: JSON parses,
// every results line is whole, plots end with their closing tag, tables with a newline.
void check_only_complete_files(const fs::path& out) {
  std::error_code ec;
  for (fs::recursive_directory_iterator it(out, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path p = it->path();
    if (is_temporary(p)) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file() || it->is_symlink()) continue;
    const std::string ext = p.extension().string();
    if (ext == ".json") {
      EXPECT_NO_THROW(read_json_file(p)) << p;
    } else if (ext == ".jsonl") {
      EXPECT_NO_THROW(sweep::read_results(p)) << p;
    } else if (ext == ".svg") {
      EXPECT_NE(read_text_file(p).find("</svg>"), std::string::npos) << p;
    } else if (ext == ".csv" || ext == ".md") {
      const std::string text = read_text_file(p);
      EXPECT_TRUE(!text.empty() && text.back() == '\n') << p;
    }
  }
}

void check_no_temporaries(const fs::path& dir) {
  for (const auto& e : fs::directory_iterator(dir))
    EXPECT_FALSE(is_temporary(e.path())) << e.path();
}

// A kill after `latest` names the final checkpoint but before the older ones are removed leaves
// two complete checkpoints. A resume at the last step trains and commits nothing, so the resume
// itself finishes the removal (the random kills below hit that window now and then).
TEST(KillResume, ResumeAtTheLastStepFinishesAnInterruptedRemoval) {
  TempDir dir;
  write_inputs(dir.path());
  const fs::path out = dir.path() / "out";
  ASSERT_EQ(wait_exit(spawn(dir.path(), train_args(dir.path(), out))), 0);
  const nlohmann::json finished = results_of(out);
  const fs::path latest = fs::canonical(out / "latest");
  fs::copy(latest, out / "checkpoints" / "step-interrupted", fs::copy_options::recursive);
  auto checkpoints = [&] {
    return std::distance(fs::directory_iterator(out / "checkpoints"), fs::directory_iterator());
  };
  ASSERT_EQ(checkpoints(), 2);
  ASSERT_EQ(wait_exit(spawn(dir.path(), {"train", "--resume", out.string()})), 0);
  EXPECT_EQ(checkpoints(), 1);
  EXPECT_EQ(fs::canonical(out / "latest"), latest);
  EXPECT_EQ(results_of(out), finished);
}

TEST(KillResume, RandomKillsLeaveCompleteCheckpointsAndBitIdenticalResults) {
  if (std::getenv("GAINCELL_SANITIZED")) GTEST_SKIP() << "slow; covered by the Release pass";
  TempDir dir;
  write_inputs(dir.path());
  // The uninterrupted run, also timed to spread the kills over a run's length.
  const fs::path ref = dir.path() / "ref";
  const double run_s = timed_run(dir.path(), train_args(dir.path(), ref));

  const fs::path out = dir.path() / "killed";
  int64_t last_step = 0;
  auto args = [&] {
    const bool first = !fs::exists(fs::symlink_status(out / "latest"));
    return first ? train_args(dir.path(), out)
                 : std::vector<std::string>{"train", "--resume", out.string()};
  };
  auto after_kill = [&] {
    const int64_t step = check_only_complete_checkpoints(out);
    EXPECT_GE(step, last_step) << "a kill lost a committed checkpoint";
    last_step = step;
  };
  auto after_round = [&] {
    // Bit-identical to the uninterrupted run.
    EXPECT_EQ(results_of(out), results_of(ref));
    EXPECT_EQ(read_binary_file(out / "model.safetensors"),
              read_binary_file(ref / "model.safetensors"));
    EXPECT_EQ(read_binary_file(out / "training_state.bin"),
              read_binary_file(ref / "training_state.bin"));
    // No temporaries left after the final (unkilled) start, and one checkpoint kept.
    check_no_temporaries(out / "checkpoints");
    EXPECT_EQ(std::distance(fs::directory_iterator(out / "checkpoints"), fs::directory_iterator()),
              1);
    check_no_temporaries(out);
  };
  auto reset = [&] {
    fs::remove_all(out);
    last_step = 0;
  };
  const KillLoop loop =
      kill_and_resume(dir.path(), args, 0.2 * run_s, 6, 16, 2024, after_kill, after_round, reset);
  record("train", loop, run_s);
}

// The pipeline's summary without what depends on the process: wall-clock seconds and the tokens
// trained by the last start of a stage (TrainResult counts "this run").
nlohmann::json without_per_process_figures(nlohmann::json j) {
  if (j.is_object()) {
    if (j.contains("seconds")) j.erase("tokens");
    j.erase("seconds");
    for (auto& [key, value] : j.items()) value = without_per_process_figures(value);
  }
  return j;
}

TEST(KillResume, PipelineKilledAtRandomEndsBitIdentical) {
  if (std::getenv("GAINCELL_SANITIZED")) GTEST_SKIP() << "slow; covered by the Release pass";
  TempDir dir;
  write_inputs(dir.path());
  GPT2Config c;
  c.n_layer = 1;
  c.n_head = 2;
  c.n_embd = 16;
  c.block_size = 16;
  c.vocab_size = 257;
  GPT2Model softmax(c);
  softmax.init_random(7);
  save_model(softmax, dir.path() / "init");
  auto args = [&](const fs::path& out) {
    return std::vector<std::string>{"pipeline",
                                    "--init",
                                    (dir.path() / "init").string(),
                                    "--data",
                                    (dir.path() / "tok").string(),
                                    "--out",
                                    out.string(),
                                    "--steps-a",
                                    "8",
                                    "--steps-c",
                                    "8",
                                    "--batch-size",
                                    "2",
                                    "--seq-len",
                                    "16",
                                    "--warmup",
                                    "2",
                                    "--eval-interval",
                                    "4",
                                    "--eval-tokens",
                                    "128",
                                    "--adapt-batch",
                                    "2",
                                    "--checkpoint-interval",
                                    "1",
                                    "--json"};
  };
  const fs::path ref = dir.path() / "ref", out = dir.path() / "killed";
  const double run_s = timed_run(dir.path(), args(ref));
  // The run directory is part of the recorded options; compare the rest.
  auto summary = [](const fs::path& run) {
    nlohmann::json s = without_per_process_figures(read_json_file(run / "pipeline.json"));
    s.erase("options");
    for (const char* stage : {"A", "C"}) s[stage].erase("train_options");
    return s;
  };
  std::map<std::string, int> kills_at;  // where the kills landed: the last stage begun
  auto after_kill = [&] {
    std::string at = "start-up";
    for (const char* stage : {"A", "B", "C"})
      if (fs::exists(out / stage))
        at = std::string(stage) + (fs::exists(out / stage / "stage.json") ? " done" : "");
    ++kills_at[at];
    check_only_complete_files(out);
    for (const char* stage : {"A", "C"})
      if (fs::exists(out / stage / "checkpoints")) check_only_complete_checkpoints(out / stage);
    for (const char* stage : {"A", "B", "C"}) {
      if (fs::exists(out / stage / "stage.json")) {
        EXPECT_NO_THROW(load_model(out / stage)) << stage;
      }
    }
  };
  auto after_round = [&] {
    EXPECT_EQ(summary(out), summary(ref))
        << "differences: " << nlohmann::json::diff(summary(ref), summary(out)).dump();
    for (const char* stage : {"A", "B", "C"}) check_no_temporaries(out / stage);
    for (const char* stage : {"A", "B", "C"})
      EXPECT_EQ(read_binary_file(out / stage / "model.safetensors"),
                read_binary_file(ref / stage / "model.safetensors"))
          << stage;
    check_no_temporaries(out);
  };
  const KillLoop loop = kill_and_resume(
      dir.path(), [&] { return args(out); }, run_s, 6, 10, 17, after_kill, after_round,
      [&] { fs::remove_all(out); });
  record("pipeline", loop, run_s, kills_at);
  for (const auto& [at, n] : kills_at) std::printf("  %d kills in %s\n", n, at.c_str());
}

nlohmann::json results_without_timing(const fs::path& out) {
  nlohmann::json all = nlohmann::json::object();
  for (nlohmann::json line : sweep::read_results(out / "results.jsonl")) {
    line.erase("timing");
    all[std::to_string(line["point"].get<int>())] = line;
  }
  return all;
}

TEST(KillResume, SweepKilledAtRandomEndsBitIdentical) {
  if (std::getenv("GAINCELL_SANITIZED")) GTEST_SKIP() << "slow; covered by the Release pass";
  TempDir dir;
  std::mt19937 rng(5);
  std::vector<int32_t> val(300);
  for (auto& t : val) t = static_cast<int32_t>(rng() % 101);
  write_token_file(dir.path() / "val.bin", val);
  write_file_atomic(dir.path() / "s.json", std::string(R"({"attention": "gaincell-nonlinear",
      "base": {"preset": "paper-nonlinear", "window": 64, "array_size": 16},
      "axes": {"quantization.k.levels": [4, 8, 16], "noise.read_noise_s": [0.0, 0.05]},
      "seeds": 2, "evaluation": {"tokens": "val.bin", "limit": 200},
      "cost": {"tokens": 64, "batch": 1}})"));
  auto args = [&](const fs::path& out) {
    return std::vector<std::string>{
        "sweep",
        "--model",
        (fs::path(GAINCELL_SOURCE_DIR) / "tests/fixtures/gpt2_tiny").string(),
        "--spec",
        (dir.path() / "s.json").string(),
        "--out",
        out.string(),
        "--resume",
        "--quiet"};
  };
  const fs::path ref = dir.path() / "ref", out = dir.path() / "killed";
  const double run_s = timed_run(dir.path(), args(ref));

  size_t last_results = 0;
  auto after_kill = [&] {
    check_only_complete_files(out);
    const fs::path results = out / "results.jsonl";
    const size_t n = fs::exists(results) ? sweep::read_results(results).size() : 0;
    EXPECT_GE(n, last_results) << "a kill lost a finished point";
    last_results = n;
  };
  auto after_round = [&] {
    EXPECT_EQ(results_without_timing(out), results_without_timing(ref));
    for (const char* file : {"summary.csv", "pareto.json"})
      EXPECT_EQ(read_text_file(out / file), read_text_file(ref / file)) << file;
    check_no_temporaries(out);
  };
  auto reset = [&] {
    fs::remove_all(out);
    last_results = 0;
  };
  const KillLoop loop = kill_and_resume(
      dir.path(), [&] { return args(out); }, run_s, 6, 10, 13, after_kill, after_round, reset);
  record("sweep", loop, run_s);
}

}  // namespace
}  // namespace gaincell
