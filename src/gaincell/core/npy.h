// Minimal reader/writer of NumPy .npy files and uncompressed .npz archives (zip, method "stored"),
// for golden data (spec §3.9) and for dumping named intermediates (style-lessons §11).
//
// .npy: magic "\x93NUMPY", versions 1.0/2.0/3.0, a Python-dict header with 'descr', 'fortran_order'
// and 'shape'. Supported dtypes: little-endian or byte-order-free f4, f8, i1/i2/i4/i8, u1/u2/u4/u8,
// b1; C order only. .npz: local/central directory records including zip64 extra fields (numpy
// writes zip64 local headers), CRC-32 checked. Compressed (deflate) members are rejected with a
// message. Every malformed input raises gaincell::Error naming the file and the problem.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <vector>

namespace gaincell {

struct NpyArray {
  std::string descr;           // numpy dtype string, e.g. "<f4"
  std::vector<int64_t> shape;  // empty for a scalar
  std::vector<uint8_t> bytes;  // raw element data, C order, little endian

  int64_t numel() const;
  size_t item_size() const;
  // Element values converted to float / double (any supported dtype).
  std::vector<float> to_float() const;
  std::vector<double> to_double() const;
};

// Parses one .npy image; `what` names it in error messages.
NpyArray parse_npy(std::span<const uint8_t> data, const std::string& what);
NpyArray read_npy(const std::filesystem::path& path);
// Members of an .npz archive by name without the ".npy" suffix.
std::map<std::string, NpyArray> parse_npz(std::span<const uint8_t> data, const std::string& what);
std::map<std::string, NpyArray> read_npz(const std::filesystem::path& path);

// Encodes a float32 array as a version 1.0 .npy image.
std::vector<uint8_t> npy_bytes(std::span<const float> values, const std::vector<int64_t>& shape);
// Writes .npy / uncompressed .npz atomically (temporary file + rename).
void write_npy(const std::filesystem::path& path, std::span<const float> values,
               const std::vector<int64_t>& shape);
struct NpzMember {
  std::string name;  // without ".npy"
  std::vector<float> values;
  std::vector<int64_t> shape;
};
void write_npz(const std::filesystem::path& path, const std::vector<NpzMember>& members);

uint32_t crc32(std::span<const uint8_t> data);

}  // namespace gaincell
