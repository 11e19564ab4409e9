// Full disks and failing writes (issue 17 item 3): `gaincell` runs with a file-size limit
// (setrlimit(RLIMIT_FSIZE) in the child, SIGXFSZ ignored, so a write past the limit fails with
// EFBIG as on a full disk). Every writer must fail with a clear error, leave no partial or
// temporary file, and keep the previous checkpoint intact and resumable. Also: the lock file on
// --out directories (item 5).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <random>

#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/train/trainer.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using test_util::TempDir;

struct ChildResult {
  int exit_code;
  std::string err;
};

// Runs `gaincell ARGS` with stdout/stderr in `dir`; with `fsize_limit` > 0, files it writes may
// not grow past that many bytes (stdout/stderr are opened before the limit and stay small).
ChildResult run_limited(const fs::path& dir, const std::vector<std::string>& args,
                        rlim_t fsize_limit) {
  const std::string out = (dir / "limited.out").string(), err = (dir / "limited.err").string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    if (!std::freopen(out.c_str(), "w", stdout) || !std::freopen(err.c_str(), "w", stderr))
      ::_exit(126);
    if (fsize_limit > 0) {
      ::signal(SIGXFSZ, SIG_IGN);  // kept across exec: writes fail with EFBIG instead
      const rlimit limit{fsize_limit, fsize_limit};
      if (::setrlimit(RLIMIT_FSIZE, &limit) != 0) ::_exit(125);
    }
    std::vector<std::string> copy = args;
    std::string exe = GAINCELL_CLI_PATH;
    std::vector<char*> argv{exe.data()};
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::setenv("OMP_NUM_THREADS", "1", 1);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  int status = 0;
  ::waitpid(pid, &status, 0);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), read_text_file(err)};
}

// Names under `dir` (recursive) that an interrupted write leaves: *.tmp.<pid>.
std::vector<std::string> temporaries(const fs::path& dir) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.path().filename().string().find(".tmp.") != std::string::npos)
      found.push_back(e.path().string());
  return found;
}

class FullDisk : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937 rng(5);
    std::vector<int32_t> tokens(3000);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % 200);
    fs::create_directories(dir.path() / "tok");
    write_token_file(dir.path() / "tok/train.bin",
                     std::vector<int32_t>(tokens.begin(), tokens.end() - 500));
    write_token_file(dir.path() / "tok/val.bin",
                     std::vector<int32_t>(tokens.end() - 500, tokens.end()));
    write_file_atomic(dir.path() / "config.json",
                      std::string(R"({"n_layer": 1, "n_head": 2, "n_embd": 16, "n_positions": 16,
                                      "vocab_size": 257, "gaincell_tokenizer": "bytes"})"));
    std::string corpus(20000, 'a');  // (string + "\n" trips GCC 12's -Warray-bounds at -O1)
    corpus += '\n';
    write_file_atomic(dir.path() / "corpus.txt", corpus);
  }
  std::vector<std::string> train_args(const fs::path& out, int steps) {
    return {"train",
            "--data",
            (dir.path() / "tok").string(),
            "--config",
            (dir.path() / "config.json").string(),
            "--out",
            out.string(),
            "--steps",
            std::to_string(steps),
            "--seq-len",
            "16",
            "--batch-size",
            "2",
            "--eval-iters",
            "1",
            "--log-interval",
            "0",
            "--lr-decay-steps",
            "8"};
  }
  TempDir dir;
};

TEST_F(FullDisk, FailedCheckpointKeepsThePreviousOneIntact) {
  const fs::path out = dir.path() / "run";
  ChildResult ok = run_limited(dir.path(), train_args(out, 2), 0);
  ASSERT_EQ(ok.exit_code, 0) << ok.err;
  const auto before = read_binary_file(out / "model.safetensors");
  const auto state_before = read_binary_file(out / "training_state.json");

  // The next checkpoint cannot be written: model.safetensors alone is larger than 4 kB.
  ChildResult full =
      run_limited(dir.path(), {"train", "--resume", out.string(), "--steps", "4"}, 4096);
  EXPECT_NE(full.exit_code, 0);
  EXPECT_NE(full.err.find("gaincell: error:"), std::string::npos) << full.err;
  EXPECT_TRUE(full.err.find("disk full") != std::string::npos ||
              full.err.find("File too large") != std::string::npos)
      << full.err;
  EXPECT_EQ(full.err.find("internal error"), std::string::npos) << full.err;
  EXPECT_TRUE(temporaries(out).empty()) << temporaries(out)[0];
  // The step-2 checkpoint is still the current one, byte for byte, and resumes.
  EXPECT_EQ(read_binary_file(out / "model.safetensors"), before);
  EXPECT_EQ(read_binary_file(out / "training_state.json"), state_before);
  EXPECT_NO_THROW(Trainer::checkpoint_to_resume(out));
  ChildResult resumed =
      run_limited(dir.path(), {"train", "--resume", out.string(), "--steps", "4"}, 0);
  EXPECT_EQ(resumed.exit_code, 0) << resumed.err;
  EXPECT_NE(resumed.err.find("at step 2"), std::string::npos) << resumed.err;
}

TEST_F(FullDisk, EveryWriterFailsCleanly) {
  const fs::path model = dir.path() / "model";
  ASSERT_EQ(run_limited(dir.path(), train_args(model, 1), 0).exit_code, 0);
  struct Case {
    const char* what;
    std::vector<std::string> args;
    fs::path out;  // directory that must hold no partial or temporary file afterwards
    std::vector<std::string> absent;  // files that must not exist
  };
  const fs::path d = dir.path();
  const std::vector<Case> cases = {
      {"token files",
       {"prepare", "--text", (d / "corpus.txt").string(), "--tokenizer", "bytes", "--out",
        (d / "tok2").string()},
       d / "tok2",
       {"train.bin", "val.bin", "meta.json"}},
      {"first checkpoint",
       train_args(d / "fresh", 1),
       d / "fresh",
       {"model.safetensors", "latest", "training_state.json"}},
      {"model from --init",
       {"train", "--init", model.string(), "--data", (d / "tok").string(), "--out",
        (d / "init").string(), "--steps", "1", "--seq-len", "16", "--batch-size", "2"},
       d / "init",
       {"model.safetensors", "latest"}},
      {"cost configuration",
       {"cost", "--write-cost-config", (d / "cc/cost_config.json").string()},
       d / "cc",
       {"cost_config.json"}},
      {"cost report",
       {"cost", "--output", (d / "rep/cost.json").string()},
       d / "rep",
       {"cost.json"}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    fs::create_directories(c.out);
    ChildResult r = run_limited(d, c.args, 1024);
    EXPECT_NE(r.exit_code, 0) << r.err;
    EXPECT_NE(r.err.find("gaincell: error:"), std::string::npos) << r.err;
    EXPECT_EQ(r.err.find("internal error"), std::string::npos) << r.err;
    // It failed because of the write, not earlier.
    EXPECT_TRUE(r.err.find("disk full") != std::string::npos ||
                r.err.find("File too large") != std::string::npos)
        << r.err;
    EXPECT_TRUE(temporaries(c.out).empty()) << temporaries(c.out)[0];
    for (const auto& f : c.absent) {
      const fs::path p = c.out / f;
      // Absent, or complete (small files that fit the limit are written whole).
      if (fs::exists(fs::symlink_status(p))) {
        EXPECT_LT(fs::file_size(p), 1024u) << p;
      }
      if (f == "model.safetensors" || f == "train.bin") {
        EXPECT_FALSE(fs::exists(p)) << p;
      }
    }
  }
}

TEST_F(FullDisk, SecondProcessOnTheSameOutDirIsRefused) {
  const fs::path out = dir.path() / "busy";
  // This process holds the lock, as a running `gaincell train --out busy` would.
  DirectoryLock lock = DirectoryLock::acquire(out);
  ChildResult r = run_limited(dir.path(), train_args(out, 1), 0);
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.err.find("is in use by another gaincell process (pid " + std::to_string(getpid())),
            std::string::npos)
      << r.err;
  EXPECT_FALSE(fs::exists(out / "checkpoints")) << "the refused process wrote into the directory";
  // Released: a new run proceeds (and a killed holder releases it too: flock).
  lock = DirectoryLock();
  ChildResult after = run_limited(dir.path(), train_args(out, 1), 0);
  EXPECT_EQ(after.exit_code, 0) << after.err;
}

}  // namespace
}  // namespace gaincell
