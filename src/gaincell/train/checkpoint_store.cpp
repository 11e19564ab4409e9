#include "gaincell/train/checkpoint_store.h"

#include <unistd.h>

#include <cstdio>
#include <optional>
#include <string>
#include <vector>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"

namespace gaincell {

namespace fs = std::filesystem;

namespace {

constexpr const char* kCheckpoints = "checkpoints";
constexpr const char* kLatest = "latest";
// The files of a checkpoint that OUT links to, so that OUT itself reads as the latest one.
constexpr const char* kLinkedFiles[] = {"config.json", "model.safetensors", "training_state.bin",
                                        "training_state.json"};

std::string step_name(int64_t step) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

// A name not used yet under `parent`: step-<N>, else step-<N>-2, -3, ... (a fresh run in a
// directory that already holds the same step of an earlier run must not overwrite the checkpoint
// `latest` still names).
std::string unused_name(const fs::path& parent, int64_t step) {
  const std::string base = step_name(step);
  std::error_code ec;
  std::string name = base;
  for (int k = 2; fs::exists(fs::symlink_status(parent / name, ec)); ++k)
    name = base + "-" + std::to_string(k);
  return name;
}

// Replaces `link` by a symlink to `target` in one rename(2) (atomic: a reader sees the old or
// the new link, never none).
void replace_symlink(const fs::path& link, const fs::path& target) {
  const fs::path tmp = link.string() + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_symlink(target, tmp, ec);
  if (ec) throw Error("cannot create the link '" + tmp.string() + "': " + ec.message());
  fs::rename(tmp, link, ec);
  if (ec) {
    fs::remove(tmp);
    throw Error("cannot switch '" + link.string() + "': " + ec.message());
  }
}

bool is_symlink_to(const fs::path& link, const fs::path& target) {
  std::error_code ec;
  return fs::is_symlink(fs::symlink_status(link, ec)) && fs::read_symlink(link, ec) == target &&
         !ec;
}

void sync_tree(const fs::path& dir) {
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file()) fsync_path(entry.path());
  fsync_path(dir);
}

// Removes the step-* checkpoints in `parent` (OUT/checkpoints) other than `keep`, each first
// renamed to a temporary name, so that a kill during the removal leaves no incomplete checkpoint.
void remove_checkpoints_except(const fs::path& parent, const std::string& keep) {
  std::error_code ec;
  std::vector<fs::path> old;
  for (const auto& entry : fs::directory_iterator(parent)) {
    const std::string other = entry.path().filename().string();
    if (other != keep && other.rfind("step-", 0) == 0 && other.find(".tmp.") == std::string::npos)
      old.push_back(entry.path());
  }
  for (const fs::path& dir : old) {
    const fs::path doomed = dir.string() + ".tmp." + std::to_string(::getpid());
    fs::rename(dir, doomed, ec);
    if (!ec) fs::remove_all(doomed, ec);
  }
}

}  // namespace

void prepare_checkpoint_dir(const fs::path& out) {
  std::error_code ec;
  fs::create_directories(out / kCheckpoints, ec);
  if (ec) throw Error("cannot create '" + (out / kCheckpoints).string() + "': " + ec.message());
  remove_stale_temporaries(out);
  remove_stale_temporaries(out / kCheckpoints);
}

fs::path commit_checkpoint(const fs::path& out, int64_t step,
                           const std::function<void(const fs::path&)>& write_files) {
  const fs::path parent = out / kCheckpoints;
  fs::create_directories(parent);
  const std::string name = unused_name(parent, step);
  const fs::path tmp = parent / (name + ".tmp." + std::to_string(::getpid()));
  const fs::path final_dir = parent / name;
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    write_files(tmp);
    sync_tree(tmp);
  } catch (...) {
    fs::remove_all(tmp, ec);  // a failed write (disk full, ...) leaves nothing behind
    throw;
  }
  fs::rename(tmp, final_dir, ec);
  if (ec) {
    fs::remove_all(tmp, ec);
    throw Error("cannot commit checkpoint '" + final_dir.string() + "': " + ec.message());
  }
  fsync_path(parent);

  // The commit point: `latest` names the new checkpoint.
  const fs::path relative = fs::path(kCheckpoints) / name;
  replace_symlink(out / kLatest, relative);
  fsync_path(out);

  // OUT's own names follow `latest` (set once; legacy regular files are replaced).
  for (const char* file : kLinkedFiles) {
    const fs::path target = fs::path(kLatest) / file;
    if (!is_symlink_to(out / file, target)) replace_symlink(out / file, target);
  }

  // Older checkpoints go only now that the new one is current.
  remove_checkpoints_except(parent, name);
  return final_dir;
}

void remove_superseded_checkpoints(const fs::path& out, const fs::path& resumed) {
  std::error_code ec;
  const fs::path latest = fs::weakly_canonical(out / kLatest, ec);
  if (ec || latest != resumed) return;  // resumed from an older one: `latest` was damaged
  const fs::path parent = fs::weakly_canonical(out / kCheckpoints, ec);
  if (ec || resumed.parent_path() != parent) return;  // the single-directory layout
  remove_checkpoints_except(parent, resumed.filename().string());
}

fs::path find_resumable_checkpoint(const fs::path& out, const CheckpointVerifier& verify) {
  std::error_code ec;
  const fs::path latest = out / kLatest;
  const bool has_latest = fs::exists(fs::symlink_status(latest, ec));
  if (!has_latest && !fs::exists(out / kCheckpoints, ec)) {
    verify(out);  // the single-directory layout; throws the reason when it is not a checkpoint
    return out;
  }
  std::optional<fs::path> best;
  int64_t best_step = -1;
  std::string latest_problem = "it does not exist";
  auto consider = [&](const fs::path& dir, bool is_latest) {
    try {
      const int64_t step = verify(dir);
      if (step > best_step || (step == best_step && is_latest)) {
        best_step = step;
        best = dir;
      }
    } catch (const Error& e) {
      if (is_latest) latest_problem = e.what();
    }
  };
  // `latest` is the commit point: when it is complete it wins, even over a newer complete
  // directory that a kill left uncommitted (load_model(OUT) reads `latest` too).
  if (has_latest) {
    consider(latest, true);
    if (best) return fs::weakly_canonical(*best);
  }
  for (fs::directory_iterator it(out / kCheckpoints, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.rfind("step-", 0) != 0 || name.find(".tmp.") != std::string::npos) continue;
    std::error_code dir_ec;
    if (it->is_directory(dir_ec)) consider(it->path(), false);
  }
  if (!best)
    throw Error("'" + out.string() + "' holds no complete checkpoint (" + (out / kLatest).string() +
                ": " + latest_problem + ")");
  return fs::weakly_canonical(*best);
}

}  // namespace gaincell
