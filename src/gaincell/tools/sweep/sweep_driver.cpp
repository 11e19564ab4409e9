#include "gaincell/tools/sweep/sweep_driver.h"

#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/tools/sweep/sweep_report.h"

extern char** environ;

namespace gaincell::sweep {

using nlohmann::json;
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

constexpr const char* kFormat = "gaincell-sweep";
constexpr int kVersion = 1;

// Ordered: the axes keep their order, which defines the point indices.
nlohmann::ordered_json sweep_record(const SweepSpec& spec, const fs::path& model_dir) {
  nlohmann::ordered_json j;
  j["format"] = kFormat;
  j["version"] = kVersion;
  j["model"] = fs::absolute(model_dir).lexically_normal().string();
  j["spec_dir"] = spec.dir.string();
  j["spec"] = spec.to_json();
  return j;
}

// A resumed sweep must be the same sweep: same resolved file, same model directory.
void check_same_sweep(const nlohmann::ordered_json& stored, const nlohmann::ordered_json& now,
                      const fs::path& file) {
  for (const char* key : {"format", "version", "model", "spec"}) {
    if (!stored.contains(key) || stored.at(key) != now.at(key))
      throw Error("--resume: " + file.string() + " records another sweep ('" + key +
                  "' differs); use a new --out directory or the same sweep file and model");
  }
}

std::string format_metric(const json& line, const std::string& name) {
  if (json_string_or(line, "status", "", "sweep result") != "ok")
    return "failed: " + json_string_or(line, "error", "", "sweep result");
  const json& m = line["metrics"][name];
  char buf[96];
  if (m["n"].get<int>() >= 2)
    std::snprintf(buf, sizeof buf, "%s %.4g ± %.2g (std, %d seeds)", name.c_str(),
                  m["mean"].get<double>(), m["std"].get<double>(), m["n"].get<int>());
  else
    std::snprintf(buf, sizeof buf, "%s %.4g", name.c_str(), m["mean"].get<double>());
  return buf;
}

// Progress and ETA over the points this invocation runs.
class Progress {
 public:
  Progress(int total, const LogFn& log) : total_(total), log_(log), start_(Clock::now()) {}
  void point_done(const json& line, const std::string& metric) {
    ++done_;
    if (!log_) return;
    const double elapsed = std::chrono::duration<double>(Clock::now() - start_).count();
    const double eta = done_ > 0 ? elapsed / done_ * (total_ - done_) : 0.0;
    char buf[160];
    std::snprintf(buf, sizeof buf, "sweep: %d/%d points, %.2f points/min, ETA %.0f s: ", done_,
                  total_, elapsed > 0 ? 60.0 * done_ / elapsed : 0.0, eta);
    log_(std::string(buf) + "point " + std::to_string(line["point"].get<int>()) + " (" +
         json_string_or(line, "label", "", "sweep result") + ") " + format_metric(line, metric));
  }

 private:
  int total_, done_ = 0;
  LogFn log_;
  Clock::time_point start_;
};

void write_all(int fd, const std::string& s) {
  size_t off = 0;
  while (off < s.size()) {
    const ssize_t n = ::write(fd, s.data() + off, s.size() - off);
    if (n < 0 && errno == EINTR) continue;
    require(n > 0, std::string("sweep: write to a worker pipe failed: ") + std::strerror(errno));
    off += static_cast<size_t>(n);
  }
}

struct Worker {
  pid_t pid = -1;
  int to_worker = -1;    // its stdin
  int from_worker = -1;  // its stdout
  std::string buffer;
  int current = -1;  // point being run
  bool produced = false;
};

Worker spawn_worker(const fs::path& exe, const fs::path& out_dir, int threads) {
  int in_pipe[2], out_pipe[2];
  require(::pipe(in_pipe) == 0 && ::pipe(out_pipe) == 0,
          std::string("sweep: pipe() failed: ") + std::strerror(errno));
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  for (int fd : {in_pipe[0], in_pipe[1], out_pipe[0], out_pipe[1]})
    posix_spawn_file_actions_addclose(&actions, fd);
  // Each worker gets its share of the cores unless the user chose a thread count.
  std::vector<std::string> env_strings;
  for (char** e = environ; *e; ++e) env_strings.emplace_back(*e);
  const std::string threads_text = std::to_string(threads);
  if (!std::getenv("OMP_NUM_THREADS")) env_strings.push_back("OMP_NUM_THREADS=" + threads_text);
  if (!std::getenv("OPENBLAS_NUM_THREADS"))
    env_strings.push_back("OPENBLAS_NUM_THREADS=" + threads_text);
  std::vector<char*> envp;
  for (auto& s : env_strings) envp.push_back(s.data());
  envp.push_back(nullptr);
  std::string exe_s = exe.string(), cmd = "sweep", flag = "--worker", dir = out_dir.string();
  char* argv[] = {exe_s.data(), cmd.data(), flag.data(), dir.data(), nullptr};
  Worker w;
  const int rc = posix_spawn(&w.pid, exe_s.c_str(), &actions, nullptr, argv, envp.data());
  posix_spawn_file_actions_destroy(&actions);
  ::close(in_pipe[0]);
  ::close(out_pipe[1]);
  if (rc != 0) {
    ::close(in_pipe[1]);
    ::close(out_pipe[0]);
    throw Error("sweep: cannot start worker '" + exe_s + "': " + std::strerror(rc));
  }
  w.to_worker = in_pipe[1];
  w.from_worker = out_pipe[0];
  return w;
}

std::string exit_text(int status) {
  if (WIFSIGNALED(status)) return "killed by signal " + std::to_string(WTERMSIG(status));
  if (WIFEXITED(status)) return "exit code " + std::to_string(WEXITSTATUS(status));
  return "unknown status";
}

// Runs `pending` over worker processes; `on_result` receives every line (results or failures of
// points whose worker died).
void run_with_workers(const SweepRunOptions& o, std::vector<int> pending, const SweepContext& proto,
                      const std::function<void(const json&)>& on_result) {
  require(!o.executable.empty(), "sweep: --jobs > 1 needs the gaincell executable");
  const int jobs = std::min<int>(o.jobs, static_cast<int>(pending.size()));
  const int cores = std::max(1u, std::thread::hardware_concurrency());
  const int threads = std::max(1, cores / jobs);
  std::reverse(pending.begin(), pending.end());  // pop_back gives the lowest index first
  ::signal(SIGPIPE, SIG_IGN);
  std::vector<Worker> workers;
  auto feed = [&](Worker& w) {
    if (pending.empty()) {
      if (w.to_worker >= 0) ::close(w.to_worker);
      w.to_worker = -1;
      w.current = -1;
      return;
    }
    w.current = pending.back();
    pending.pop_back();
    write_all(w.to_worker, std::to_string(w.current) + "\n");
  };
  for (int i = 0; i < jobs; ++i) {
    workers.push_back(spawn_worker(o.executable, o.out_dir, threads));
    feed(workers.back());
  }
  while (true) {
    std::vector<pollfd> fds;
    std::vector<size_t> owner;
    for (size_t i = 0; i < workers.size(); ++i) {
      if (workers[i].from_worker < 0) continue;
      fds.push_back({workers[i].from_worker, POLLIN, 0});
      owner.push_back(i);
    }
    if (fds.empty()) break;
    if (::poll(fds.data(), fds.size(), -1) < 0) {
      if (errno == EINTR) continue;
      throw Error(std::string("sweep: poll() failed: ") + std::strerror(errno));
    }
    for (size_t k = 0; k < fds.size(); ++k) {
      if (!(fds[k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      Worker& w = workers[owner[k]];
      char buf[65536];
      const ssize_t n = ::read(w.from_worker, buf, sizeof buf);
      if (n < 0 && errno == EINTR) continue;
      if (n > 0) {
        w.buffer.append(buf, static_cast<size_t>(n));
        size_t nl;
        while ((nl = w.buffer.find('\n')) != std::string::npos) {
          const std::string text = w.buffer.substr(0, nl);
          w.buffer.erase(0, nl + 1);
          json line;
          try {
            line = parse_json(text, "worker line");
          } catch (const Error& e) {
            throw Error("sweep: worker " + std::to_string(w.pid) +
                        " wrote a line that is not a result: " + e.what());
          }
          w.produced = true;
          on_result(line);
          feed(w);
        }
        continue;
      }
      // End of output: the worker exited.
      ::close(w.from_worker);
      w.from_worker = -1;
      if (w.to_worker >= 0) ::close(w.to_worker);
      w.to_worker = -1;
      int status = 0;
      ::waitpid(w.pid, &status, 0);
      if (w.current >= 0) {
        const int lost = w.current;
        w.current = -1;
        if (!w.produced)
          throw Error("sweep: worker process " + std::to_string(w.pid) + " ended (" +
                      exit_text(status) + ") before finishing any point; see its messages above");
        const SweepPoint& p = proto.points.at(lost);
        on_result(
            {{"point", lost},
             {"label", p.label()},
             {"axes", p.axes_json()},
             {"hw", p.hw.to_json()},
             {"status", "failed"},
             {"error", "the worker process running this point ended (" + exit_text(status) + ")"},
             {"timing", {{"seconds", 0.0}}}});
        if (!pending.empty()) {
          workers.push_back(spawn_worker(o.executable, o.out_dir, threads));
          feed(workers.back());
        }
      }
    }
  }
}

}  // namespace

std::vector<json> read_results(const fs::path& file) {
  std::vector<json> lines;
  std::error_code ec;
  if (!fs::exists(file, ec)) return lines;
  std::istringstream in(read_text_file(file));
  std::string text;
  int number = 0;
  while (std::getline(in, text)) {
    ++number;
    if (text.empty()) continue;
    const std::string where = file.string() + ": line " + std::to_string(number);
    json j;
    try {
      j = parse_json(text, where);
    } catch (const Error& e) {
      throw Error(std::string(e.what()) + " (corrupt file?)");
    }
    require(j.is_object() && j.contains("point"), where + " is not a sweep result (corrupt file?)");
    json_int<int>(j["point"], where + ": 'point'");  // an index, not 1e20 or 4294967296
    lines.push_back(std::move(j));
  }
  return lines;
}

void append_result(const fs::path& file, const json& line) {
  std::string contents;
  std::error_code ec;
  if (fs::exists(file, ec)) contents = read_text_file(file);
  contents += line.dump() + "\n";
  write_file_atomic(file, contents);
}

void run_worker(const fs::path& out_dir, int in_fd, int out_fd) {
  const auto record = read_ordered_json_file(out_dir / "sweep.json");
  const SweepSpec spec =
      SweepSpec::parse(record.at("spec").dump(), record.at("spec_dir").get<std::string>());
  auto ctx = open_sweep(spec, record.at("model").get<std::string>());
  std::string buffer;
  char buf[256];
  while (true) {
    const ssize_t n = ::read(in_fd, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    buffer.append(buf, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buffer.find('\n')) != std::string::npos) {
      const int index = std::stoi(buffer.substr(0, nl));
      buffer.erase(0, nl + 1);
      write_all(out_fd, run_point(*ctx, index).dump() + "\n");
    }
  }
}

SweepOutcome run_sweep(const SweepSpec& spec, const fs::path& model_dir, const SweepRunOptions& o) {
  require(o.jobs >= 1, "sweep: --jobs must be >= 1");
  require(!o.out_dir.empty(), "sweep: --out is required");
  const fs::path results_file = o.out_dir / "results.jsonl";
  const fs::path record_file = o.out_dir / "sweep.json";
  const auto record = sweep_record(spec, model_dir);
  std::error_code ec;
  if (fs::exists(record_file, ec)) {
    if (!o.resume)
      throw Error("sweep: " + o.out_dir.string() +
                  " already holds a sweep; give --resume to continue it or choose another --out");
    nlohmann::ordered_json stored;
    try {
      stored = read_ordered_json_file(record_file);
    } catch (const Error& e) {
      throw Error(std::string("--resume: ") + e.what() + " (corrupt?)");
    }
    check_same_sweep(stored, record, record_file);
  }
  // Everything is checked (file, points, model, data) before the first point runs.
  auto ctx = open_sweep(spec, model_dir, o.log);
  fs::create_directories(o.out_dir);
  // One process per output directory (a second sweep would interleave results.jsonl), and the
  // temporaries of a killed run's last atomic write removed.
  const DirectoryLock lock = DirectoryLock::acquire(o.out_dir);
  remove_stale_temporaries(o.out_dir);
  write_file_atomic(record_file, record.dump(2) + "\n");

  SweepOutcome outcome;
  outcome.points = static_cast<int>(ctx->points.size());
  std::set<int> finished;
  for (const json& line : read_results(results_file)) {
    const int point = line["point"].get<int>();
    require(point >= 0 && point < outcome.points,
            results_file.string() + ": point " + std::to_string(point) + " is not one of the " +
                std::to_string(outcome.points) + " points of this sweep (corrupt file?)");
    finished.insert(point);
  }
  outcome.resumed = static_cast<int>(finished.size());
  std::vector<int> pending;
  for (const SweepPoint& p : ctx->points)
    if (!finished.count(p.index)) pending.push_back(p.index);
  if (o.log && outcome.resumed > 0)
    o.log("sweep: " + std::to_string(outcome.resumed) + " of " + std::to_string(outcome.points) +
          " points already in " + results_file.string() + "; running the other " +
          std::to_string(pending.size()));

  const std::string primary = ctx->evaluator->metrics().front().name;
  Progress progress(static_cast<int>(pending.size()), o.log);
  auto on_result = [&](const json& line) {
    append_result(results_file, line);
    ++outcome.ran;
    progress.point_done(line, primary);
    if (o.kill_after >= 0 && outcome.ran >= o.kill_after) ::raise(SIGKILL);
  };
  if (o.jobs == 1 || pending.size() <= 1) {
    for (int index : pending) on_result(run_point(*ctx, index));
  } else {
    ctx->prototype.reset();  // the workers hold their own copies
    run_with_workers(o, pending, *ctx, on_result);
  }

  std::vector<json> results = read_results(results_file);
  for (const json& r : results)
    outcome.failed += json_string_or(r, "status", "", "sweep result") == "ok" ? 0 : 1;
  outcome.files =
      write_sweep_outputs(spec, ctx->evaluator->metrics(), std::move(results), o.out_dir);
  outcome.files.insert(outcome.files.begin(), results_file);
  return outcome;
}

std::vector<size_t> pareto_front(const std::vector<double>& objective,
                                 const std::vector<double>& cost, bool higher_is_better) {
  require(objective.size() == cost.size(), "pareto_front: sizes differ");
  auto better_or_equal = [&](double a, double b) { return higher_is_better ? a >= b : a <= b; };
  std::vector<size_t> front;
  for (size_t i = 0; i < objective.size(); ++i) {
    bool dominated = false;
    for (size_t j = 0; j < objective.size() && !dominated; ++j) {
      if (j == i) continue;
      const bool no_worse = better_or_equal(objective[j], objective[i]) && cost[j] <= cost[i];
      const bool better = objective[j] != objective[i] || cost[j] != cost[i];
      dominated = no_worse && better;
    }
    if (!dominated) front.push_back(i);
  }
  return front;
}

}  // namespace gaincell::sweep
