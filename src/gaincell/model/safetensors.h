// Reader and writer of the safetensors format (Hugging Face): an 8-byte little-endian header
// length N, N bytes of JSON ({"name": {"dtype", "shape", "data_offsets": [begin, end]}, ...,
// optional "__metadata__": {string: string}}), then the raw little-endian tensor bytes, offsets
// relative to the end of the header.
//
// The reader validates everything before any tensor is read (header length, JSON, dtype names,
// shapes against byte sizes, offsets inside the file, no overlaps), so a truncated or corrupt file
// raises gaincell::Error naming the file and the problem instead of reading out of bounds. Tensor
// data converts to fp32 from F32, F16 and BF16; any other dtype is rejected by name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace gaincell {

struct SafeTensorInfo {
  std::string name;
  std::string dtype;  // as in the file: "F32", "F16", "BF16", "I64", ...
  std::vector<int64_t> shape;
  uint64_t begin = 0;  // byte offsets into the data section
  uint64_t end = 0;
  int64_t numel() const;
};

class SafeTensorsFile {
 public:
  // Maps the file read-only and validates its header. `path` names the file in errors.
  static SafeTensorsFile open(const std::filesystem::path& path);
  // Validates an in-memory copy of a file (tests, small files). `source` names it in errors.
  static SafeTensorsFile from_bytes(std::vector<uint8_t> bytes, const std::string& source);

  SafeTensorsFile(SafeTensorsFile&&) noexcept;
  SafeTensorsFile& operator=(SafeTensorsFile&&) noexcept;
  ~SafeTensorsFile();

  const std::string& source() const { return source_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  const std::vector<SafeTensorInfo>& tensors() const { return tensors_; }  // in header order
  bool contains(const std::string& name) const;
  const SafeTensorInfo& info(const std::string& name) const;  // throws naming the tensor

  // Converts the tensor to fp32 into dst, which holds exactly info(name).numel() floats.
  void read_f32(const std::string& name, float* dst) const;
  std::vector<float> read_f32(const std::string& name) const;
  // Elements [first, first + count) of the tensor (in its row-major order) to fp32 into dst: a
  // large tensor converted a chunk at a time (loading straight into packed weights).
  void read_f32(const std::string& name, int64_t first, int64_t count, float* dst) const;

 private:
  SafeTensorsFile() = default;
  void parse_header();

  struct Storage;
  std::unique_ptr<Storage> storage_;
  const uint8_t* bytes_ = nullptr;  // the whole file
  uint64_t size_ = 0;
  uint64_t data_start_ = 0;  // 8 + header length
  std::string source_;
  std::map<std::string, std::string> metadata_;
  std::vector<SafeTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
};

// One fp32 tensor to write. `data` holds numel(shape) floats and must outlive the call.
struct TensorView {
  std::string name;
  std::vector<int64_t> shape;
  const float* data = nullptr;
};

// Writes F32 tensors (in the given order) with `metadata` as "__metadata__". Atomic: the bytes go
// to a temporary file next to `path`, which is renamed over `path` only when complete.
void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata);

// The same bytes as write_safetensors would write, in memory (tests).
std::vector<uint8_t> serialize_safetensors(const std::vector<TensorView>& tensors,
                                           const std::map<std::string, std::string>& metadata);

// IEEE half and bfloat16 to float (exact; subnormals, infinities and NaN included).
float half_to_float(uint16_t h);
float bfloat16_to_float(uint16_t b);

}  // namespace gaincell
