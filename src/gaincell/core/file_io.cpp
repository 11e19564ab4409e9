#include "gaincell/core/file_io.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>

#include "gaincell/core/error.h"

namespace gaincell {

namespace fs = std::filesystem;

namespace {

template <typename Container>
Container read_whole_file(const fs::path& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) throw Error("'" + path.string() + "' is a directory, not a file");
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open '" + path.string() + "': " + std::strerror(errno));
  in.seekg(0, std::ios::end);
  const std::streamoff size = in.tellg();
  if (size < 0) throw Error("cannot read '" + path.string() + "' (not a regular file?)");
  in.seekg(0, std::ios::beg);
  Container data(static_cast<size_t>(size), 0);
  if (size > 0 && !in.read(reinterpret_cast<char*>(data.data()), size)) {
    throw Error("short read from '" + path.string() + "'");
  }
  return data;
}

}  // namespace

std::string read_text_file(const fs::path& path) {
  return read_whole_file<std::string>(path);
}

std::vector<uint8_t> read_binary_file(const fs::path& path) {
  return read_whole_file<std::vector<uint8_t>>(path);
}

void write_file_atomic(const fs::path& path, const void* data, size_t size) {
  if (path.has_parent_path()) fs::create_directories(path.parent_path());
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error("cannot write '" + tmp.string() + "': " + std::strerror(errno));
  const bool ok = (size == 0 || std::fwrite(data, 1, size, f) == size) && std::fflush(f) == 0;
  const bool closed = std::fclose(f) == 0;
  if (!ok || !closed) {
    std::remove(tmp.c_str());
    throw Error("failed writing '" + tmp.string() + "' (disk full?)");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  if (ec) {
    std::remove(tmp.c_str());
    throw Error("cannot rename '" + tmp.string() + "' to '" + path.string() + "': " + ec.message());
  }
}

void write_file_atomic(const fs::path& path, std::string_view contents) {
  write_file_atomic(path, contents.data(), contents.size());
}

void fsync_path(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw Error("cannot open '" + path.string() + "' to sync it: " + std::strerror(errno));
  const bool ok = ::fsync(fd) == 0;
  const int saved = errno;
  ::close(fd);
  if (!ok) throw Error("cannot sync '" + path.string() + "': " + std::strerror(saved));
}

namespace {

// "<name>.tmp.<digits>" -> true (the suffix write_file_atomic and checkpoint commits use).
bool is_temporary_name(const std::string& name, pid_t* pid) {
  const size_t at = name.rfind(".tmp.");
  if (at == std::string::npos || at + 5 >= name.size()) return false;
  const std::string digits = name.substr(at + 5);
  if (digits.find_first_not_of("0123456789") != std::string::npos || digits.size() > 9)
    return false;
  *pid = static_cast<pid_t>(std::stol(digits));
  return true;
}

fs::path executable_dir() {
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  return ec ? fs::current_path() : exe.parent_path();
}

}  // namespace

fs::path installed_dir(const std::string& name) {
  const fs::path exe_dir = executable_dir();
  const fs::path installed = (exe_dir / ".." / "share" / "gaincell" / name).lexically_normal();
  std::error_code ec;
  if (fs::is_directory(installed, ec)) return installed;
  return (exe_dir / ".." / name).lexically_normal();
}

int remove_stale_temporaries(const fs::path& dir) {
  std::error_code ec;
  int removed = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    pid_t pid = 0;
    if (!is_temporary_name(it->path().filename().string(), &pid)) continue;
    // A live writer's file stays (another process without the lock, or this one).
    if (pid == ::getpid() || ::kill(pid, 0) == 0 || errno == EPERM) continue;
    std::error_code rm;
    fs::remove_all(it->path(), rm);
    if (!rm) ++removed;
  }
  return removed;
}

DirectoryLock DirectoryLock::acquire(const fs::path& dir, const std::string& what) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec)
    throw Error("cannot create " + what + " directory '" + dir.string() + "': " + ec.message());
  const fs::path file = dir / ".lock";
  DirectoryLock lock;
  lock.fd_ = ::open(file.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (lock.fd_ < 0)
    throw Error("cannot create the lock file '" + file.string() + "': " + std::strerror(errno));
  if (::flock(lock.fd_, LOCK_EX | LOCK_NB) != 0) {
    const int saved = errno;
    std::string holder;
    char buf[32] = {};
    if (::pread(lock.fd_, buf, sizeof buf - 1, 0) > 0) holder = std::string(buf);
    while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
    if (saved == EWOULDBLOCK)
      throw Error(what + " directory '" + dir.string() + "' is in use by another gaincell process" +
                  (holder.empty() ? "" : " (pid " + holder + ")") +
                  "; wait for it to finish or choose another directory");
    throw Error("cannot lock '" + file.string() + "': " + std::strerror(saved));
  }
  // The holder's pid, for the message above (informational: the flock is what excludes).
  const std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(lock.fd_, 0) != 0 || ::pwrite(lock.fd_, pid.data(), pid.size(), 0) < 0) {
    // Not fatal: the lock is held either way.
  }
  return lock;
}

DirectoryLock::DirectoryLock(DirectoryLock&& other) noexcept : fd_(other.fd_) {
  other.fd_ = -1;
}

DirectoryLock& DirectoryLock::operator=(DirectoryLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

DirectoryLock::~DirectoryLock() {
  if (fd_ >= 0) ::close(fd_);
}

fs::path default_data_dir() {
  if (const char* env = std::getenv("GAINCELL_DATA"); env && *env) return fs::path(env);
  return installed_dir("data");
}

fs::path shared_data_dir() {
  fs::path p;
  if (const char* env = std::getenv("GAINCELL_SHARED"); env && *env) {
    p = fs::path(env);
  } else {
    p = (default_data_dir() / ".." / ".." / "shared" / "data").lexically_normal();
  }
  std::error_code ec;
  return fs::is_directory(p, ec) ? p : fs::path();
}

}  // namespace gaincell
