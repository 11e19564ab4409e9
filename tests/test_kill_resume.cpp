// Kill and resume (issue 17 item 2): `gaincell train` is killed with SIGKILL at random moments,
// many times, and resumed each time. After every kill the output directory holds only complete,
// loadable checkpoints; the final model, optimizer state and loss history are bit-identical to an
// uninterrupted run. Labelled slow (the sanitizer pass skips it): it starts ~20 processes.
// ctest-labels: release-only (slow: the sanitizer pass skips it)
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>
#include <thread>

#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
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

TEST(KillResume, RandomKillsLeaveCompleteCheckpointsAndBitIdenticalResults) {
  if (std::getenv("GAINCELL_SANITIZED")) GTEST_SKIP() << "slow; covered by the Release pass";
  TempDir dir;
  write_inputs(dir.path());

  // The uninterrupted run, also timed to spread the kills over a run's length.
  const auto t0 = Clock::now();
  ASSERT_EQ(wait_exit(spawn(dir.path(), train_args(dir.path(), dir.path() / "ref"))), 0)
      << read_text_file(dir.path() / "child.err");
  const double run_s = std::chrono::duration<double>(Clock::now() - t0).count();

  const fs::path out = dir.path() / "killed";
  std::mt19937 rng(2024);
  // Each start gets a random part of a whole run's time (process start-up included), so most
  // starts are killed, at every phase: start-up, a step, a checkpoint write, the clean-up.
  std::uniform_real_distribution<double> when(0.0, 0.2 * run_s);
  int kills = 0, starts = 0, completed_by_kill_loop = 0;
  int64_t last_step = 0;
  constexpr int kMaxKills = 16;
  for (; kills < kMaxKills; ++starts) {
    const bool first = !fs::exists(fs::symlink_status(out / "latest"));
    const auto args = first ? train_args(dir.path(), out)
                            : std::vector<std::string>{"train", "--resume", out.string()};
    const pid_t pid = spawn(dir.path(), args);
    std::this_thread::sleep_for(std::chrono::duration<double>(when(rng)));
    if (::waitpid(pid, nullptr, WNOHANG) == pid) {  // finished before the kill
      ++completed_by_kill_loop;
      break;
    }
    ::kill(pid, SIGKILL);
    EXPECT_EQ(wait_exit(pid), -SIGKILL);
    ++kills;
    const int64_t step = check_only_complete_checkpoints(out);
    EXPECT_GE(step, last_step) << "a kill lost a committed checkpoint";
    last_step = step;
  }
  // Run to the end.
  if (completed_by_kill_loop == 0) {
    const bool first = !fs::exists(fs::symlink_status(out / "latest"));
    const auto args = first ? train_args(dir.path(), out)
                            : std::vector<std::string>{"train", "--resume", out.string()};
    ASSERT_EQ(wait_exit(spawn(dir.path(), args)), 0) << read_text_file(dir.path() / "child.err");
  }
  std::printf("kill-resume: %d kills over %d starts, run %.2f s, last step at a kill %lld\n", kills,
              starts + 1, run_s, static_cast<long long>(last_step));
  // Record for docs/reliability.md (scripts/reliability_figures.py reads it when present).
  if (const char* record = std::getenv("GAINCELL_KILL_RESUME_RECORD"))
    std::ofstream(record, std::ios::app)
        << nlohmann::json{{"kills", kills}, {"starts", starts + 1}}.dump() << "\n";
  EXPECT_GE(kills, 3) << "the kills did not interrupt the run";

  // Bit-identical to the uninterrupted run.
  EXPECT_EQ(results_of(out), results_of(dir.path() / "ref"));
  EXPECT_EQ(read_binary_file(out / "model.safetensors"),
            read_binary_file(dir.path() / "ref/model.safetensors"));
  EXPECT_EQ(read_binary_file(out / "training_state.bin"),
            read_binary_file(dir.path() / "ref/training_state.bin"));
  // No temporaries left after the final (unkilled) run, and one checkpoint kept.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(out / "checkpoints")) {
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
    ++entries;
  }
  EXPECT_EQ(entries, 1);
  for (const auto& e : fs::directory_iterator(out))
    EXPECT_EQ(e.path().filename().string().find(".tmp."), std::string::npos) << e.path();
}

}  // namespace
}  // namespace gaincell
