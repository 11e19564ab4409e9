#include "gaincell/core/file_io.h"

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

namespace {

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
