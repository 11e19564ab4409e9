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

// Directory holding the installed data (data/vocab/encoder.json, ...): $GAINCELL_DATA if set,
// otherwise <source tree>/data as written by scripts/setup.sh.
std::filesystem::path default_data_dir();

// ../shared/data relative to the source tree (read-only reference data for tests and benchmarks).
// Empty when absent; tests then skip with a message.
std::filesystem::path shared_data_dir();

}  // namespace gaincell
