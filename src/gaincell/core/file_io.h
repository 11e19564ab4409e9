// File helpers: whole-file reads with clear errors and atomic writes (temporary file, then rename),
// so that no command ever leaves a half-written result behind.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace gaincell {

std::string read_text_file(const std::filesystem::path& path);
std::vector<uint8_t> read_binary_file(const std::filesystem::path& path);

// Writes `contents` to `path` through `path.tmp.<pid>` and a rename.
void write_file_atomic(const std::filesystem::path& path, std::string_view contents);
void write_file_atomic(const std::filesystem::path& path, const void* data, size_t size);

// Flushes a file or directory to stable storage (a directory: the names it holds).
void fsync_path(const std::filesystem::path& path);

// Removes the `*.tmp.<pid>` files and directories that interrupted atomic writes left in `dir`
// (not recursing) when process <pid> no longer runs. Returns the number removed.
int remove_stale_temporaries(const std::filesystem::path& dir);

// An exclusive lock on an output directory (`DIR/.lock`, flock(2)): a second process that wants
// the same directory gets an Error naming it and the holder's pid instead of interleaving files.
// Released when destroyed or when the process dies (also by SIGKILL).
class DirectoryLock {
 public:
  DirectoryLock() = default;
  // Creates `dir` if needed. `what` names the option in the error ("--out").
  static DirectoryLock acquire(const std::filesystem::path& dir, const std::string& what = "--out");
  DirectoryLock(DirectoryLock&& other) noexcept;
  DirectoryLock& operator=(DirectoryLock&& other) noexcept;
  DirectoryLock(const DirectoryLock&) = delete;
  DirectoryLock& operator=(const DirectoryLock&) = delete;
  ~DirectoryLock();
  bool held() const { return fd_ >= 0; }

 private:
  int fd_ = -1;
};

// A directory installed with gaincell, found from the running executable (never from the path of
// the checkout it was built in, so an installed or moved binary works): <exe>/../share/gaincell/
// NAME in an installation, else <exe>/../NAME (a build directory inside the checkout). Returns
// the latter when neither exists, so that errors name a place to put it.
std::filesystem::path installed_dir(const std::string& name);

// Directory holding the data (vocab/encoder.json, ...): $GAINCELL_DATA if set, otherwise
// installed_dir("data") (the checkout's data/ as written by scripts/setup.sh).
std::filesystem::path default_data_dir();

// The read-only reference data beside the project: $GAINCELL_SHARED if set, otherwise
// shared/data beside the project that holds the data directory (default_data_dir()/../../shared/
// data). Empty when absent.
std::filesystem::path shared_data_dir();

}  // namespace gaincell
