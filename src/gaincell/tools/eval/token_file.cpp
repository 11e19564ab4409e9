#include "gaincell/tools/eval/token_file.h"

#include <cstring>
#include <nlohmann/json.hpp>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/model/data.h"

namespace gaincell::eval {

TokenFileFormat parse_token_file_format(const std::string& name) {
  if (name == "auto") return TokenFileFormat::kAuto;
  if (name == "uint16") return TokenFileFormat::kUint16;
  if (name == "uint32") return TokenFileFormat::kUint32;
  throw Error("token file format must be auto, uint16 or uint32, got '" + name + "'");
}

namespace {

std::vector<int32_t> read_json_ids(const std::filesystem::path& file, const std::string& text) {
  const nlohmann::json j = parse_json(text, file.string());
  require(j.is_object() && j.contains("ids") && j["ids"].is_array(),
          file.string() + ": expected a JSON object with an \"ids\" list");
  std::vector<int32_t> ids;
  for (size_t i = 0; i < j["ids"].size(); i++) {
    const nlohmann::json& v = j["ids"][i];
    const std::string what = file.string() + ": ids[" + std::to_string(i) + "]";
    require(v.is_number_integer(), what + " is not a token id");
    // Read in 64 bits so that the error names the id range, not int32_t's.
    ids.push_back(static_cast<int32_t>(json_int<int64_t>(v, what, 0, INT32_MAX)));
  }
  return ids;
}

// Ids of `width` bytes each, little-endian, from bytes[begin, end).
std::vector<int32_t> read_binary_ids(const std::filesystem::path& file,
                                     const std::vector<uint8_t>& bytes, size_t begin, int width) {
  const size_t n = bytes.size() - begin;
  require(n % width == 0, file.string() + ": " + std::to_string(n) +
                              " bytes is not a whole number of " + std::to_string(8 * width) +
                              "-bit token ids");
  std::vector<int32_t> ids(n / width);
  for (size_t i = 0; i < ids.size(); i++) {
    uint32_t v = 0;
    for (int b = 0; b < width; b++)
      v |= static_cast<uint32_t>(bytes[begin + i * width + b]) << (8 * b);
    require(v <= INT32_MAX, file.string() + ": token " + std::to_string(i) + " is out of range");
    ids[i] = static_cast<int32_t>(v);
  }
  return ids;
}

}  // namespace

std::vector<int32_t> read_token_file(const std::filesystem::path& file, TokenFileFormat format,
                                     int32_t vocab_size) {
  const std::vector<uint8_t> bytes = read_binary_file(file);
  size_t first = 0;
  while (first < bytes.size() && std::strchr(" \t\r\n", bytes[first]) && bytes[first] != 0) first++;
  const bool json = format == TokenFileFormat::kAuto && first < bytes.size() && bytes[first] == '{';
  const bool has_header = !json && bytes.size() >= sizeof kTokenFileMagic &&
                          std::memcmp(bytes.data(), kTokenFileMagic, sizeof kTokenFileMagic) == 0;
  std::vector<int32_t> ids;
  if (json) {
    ids = read_json_ids(file, std::string(bytes.begin(), bytes.end()));
  } else if (has_header) {
    // The header (gaincell prepare's uint32 layout, model/data.h) says the width and the count.
    const TokenFileLayout layout = token_file_layout(bytes.data(), bytes.size(), file.string());
    const int expected = format == TokenFileFormat::kUint16   ? 2
                         : format == TokenFileFormat::kUint32 ? 4
                                                              : layout.token_bytes;
    require(expected == layout.token_bytes,
            file.string() + ": --tokens-format says " + std::to_string(8 * expected) +
                "-bit ids, the file's header says " + std::to_string(8 * layout.token_bytes));
    ids = read_binary_ids(file, bytes, layout.header_bytes, layout.token_bytes);
  } else {
    ids = read_binary_ids(file, bytes, 0, format == TokenFileFormat::kUint32 ? 4 : 2);
  }
  require(!ids.empty(), file.string() + " holds no tokens");
  if (vocab_size > 0) {
    for (size_t i = 0; i < ids.size(); i++) {
      require(ids[i] < vocab_size,
              file.string() + ": token " + std::to_string(i) + " (id " + std::to_string(ids[i]) +
                  ") is outside the model's vocabulary of " + std::to_string(vocab_size));
    }
  }
  return ids;
}

}  // namespace gaincell::eval
