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
