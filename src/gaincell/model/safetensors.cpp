#include "gaincell/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>

#include "gaincell/core/error.h"
#include "gaincell/core/json.h"

namespace gaincell {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian port needs byte swaps");

namespace {

// The safetensors reference implementation refuses headers above 100 MB; so do we, so that a
// corrupt length field cannot make us allocate gigabytes.
constexpr uint64_t kMaxHeaderBytes = 100ull << 20;

// Byte size of every dtype the format defines (so that files holding tensors we do not read can
// still be validated); 0 = unknown name.
int dtype_size(const std::string& dtype) {
  static const std::map<std::string, int> sizes = {
      {"F64", 8}, {"F32", 4}, {"F16", 2},  {"BF16", 2},    {"I64", 8},
      {"I32", 4}, {"I16", 2}, {"I8", 1},   {"U64", 8},     {"U32", 4},
      {"U16", 2}, {"U8", 1},  {"BOOL", 1}, {"F8_E4M3", 1}, {"F8_E5M2", 1}};
  auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

uint64_t read_u64_le(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void append_u64_le(std::string& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}

uint64_t checked_numel(const std::vector<int64_t>& shape, const std::string& what) {
  uint64_t n = 1;
  for (int64_t d : shape) {
    require(d >= 0, what + ": negative dimension in shape");
    if (d != 0 && n > (uint64_t{1} << 56) / static_cast<uint64_t>(d)) {
      throw Error(what + ": shape too large");
    }
    n *= static_cast<uint64_t>(d);
  }
  return n;
}

std::string shape_string(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

}  // namespace

float half_to_float(uint16_t h) {
  const uint32_t sign = (h >> 15) & 1;
  const uint32_t exponent = (h >> 10) & 0x1f;
  const uint32_t mantissa = h & 0x3ff;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);  // zero or subnormal
  } else if (exponent == 31) {
    magnitude =
        mantissa ? std::numeric_limits<float>::quiet_NaN() : std::numeric_limits<float>::infinity();
  } else {
    magnitude = std::ldexp(static_cast<float>(mantissa | 0x400), static_cast<int>(exponent) - 25);
  }
  return sign ? -magnitude : magnitude;
}

float bfloat16_to_float(uint16_t b) {
  // bfloat16 is the upper half of an IEEE binary32.
  return std::bit_cast<float>(static_cast<uint32_t>(b) << 16);
}

int64_t SafeTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// Owns the bytes: either a read-only mapping of a file or an in-memory vector.
struct SafeTensorsFile::Storage {
  void* map = nullptr;
  size_t map_size = 0;
  std::vector<uint8_t> owned;
  ~Storage() {
    if (map) munmap(map, map_size);
  }
};

SafeTensorsFile::SafeTensorsFile(SafeTensorsFile&&) noexcept = default;
SafeTensorsFile& SafeTensorsFile::operator=(SafeTensorsFile&&) noexcept = default;
SafeTensorsFile::~SafeTensorsFile() = default;

SafeTensorsFile SafeTensorsFile::open(const std::filesystem::path& path) {
  SafeTensorsFile f;
  f.source_ = path.string();
  f.storage_ = std::make_unique<Storage>();
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw Error("cannot open safetensors file " + path.string() + ": " + std::strerror(errno));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("safetensors file " + path.string() + " is not a regular file");
  }
  f.size_ = static_cast<uint64_t>(st.st_size);
  if (f.size_ > 0) {
    void* m = mmap(nullptr, f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      ::close(fd);
      throw Error("cannot map safetensors file " + path.string() + ": " + std::strerror(errno));
    }
    f.storage_->map = m;
    f.storage_->map_size = f.size_;
    f.bytes_ = static_cast<const uint8_t*>(m);
  }
  ::close(fd);
  f.parse_header();
  return f;
}

SafeTensorsFile SafeTensorsFile::from_bytes(std::vector<uint8_t> bytes, const std::string& source) {
  SafeTensorsFile f;
  f.source_ = source;
  f.storage_ = std::make_unique<Storage>();
  f.storage_->owned = std::move(bytes);
  f.bytes_ = f.storage_->owned.data();
  f.size_ = f.storage_->owned.size();
  f.parse_header();
  return f;
}

void SafeTensorsFile::parse_header() {
  const std::string where = "safetensors file " + source_;
  require(size_ >= 8, where + " is truncated: " + std::to_string(size_) +
                          " bytes, less than the 8-byte header length");
  const uint64_t header_len = read_u64_le(bytes_);
  require(header_len <= kMaxHeaderBytes,
          where + " is corrupt: header length " + std::to_string(header_len) + " exceeds 100 MB");
  require(header_len <= size_ - 8, where + " is truncated: header length " +
                                       std::to_string(header_len) + " but only " +
                                       std::to_string(size_ - 8) + " bytes follow");
  data_start_ = 8 + header_len;
  const char* text = reinterpret_cast<const char*>(bytes_ + 8);
  const nlohmann::json header =
      parse_json(std::string_view(text, header_len), where + " is corrupt: its header");
  require(header.is_object(), where + " is corrupt: the header is not a JSON object");

  const uint64_t data_size = size_ - data_start_;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      require(entry.is_object(), where + ": __metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        require(v.is_string(), where + ": __metadata__ value '" + k + "' is not a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string what = where + ", tensor '" + name + "'";
    require(entry.is_object(), what + ": entry is not an object");
    require(entry.contains("dtype") && entry["dtype"].is_string(), what + ": missing dtype");
    require(entry.contains("shape") && entry["shape"].is_array(), what + ": missing shape");
    require(entry.contains("data_offsets") && entry["data_offsets"].is_array() &&
                entry["data_offsets"].size() == 2,
            what + ": missing data_offsets [begin, end]");
    SafeTensorInfo t;
    t.name = name;
    t.dtype = entry["dtype"].get<std::string>();
    const int elem = dtype_size(t.dtype);
    require(elem > 0, what + ": unknown dtype '" + t.dtype + "'");
    for (const auto& d : entry["shape"]) {
      t.shape.push_back(json_int<int64_t>(d, what + ": shape entry"));
    }
    for (const auto& o : entry["data_offsets"]) {
      require(o.is_number_unsigned(), what + ": data_offsets must be non-negative integers");
    }
    t.begin = entry["data_offsets"][0].get<uint64_t>();
    t.end = entry["data_offsets"][1].get<uint64_t>();
    require(t.begin <= t.end, what + ": data_offsets begin > end");
    require(t.end <= data_size, what + ": data_offsets [" + std::to_string(t.begin) + ", " +
                                    std::to_string(t.end) + ") run past the end of the file (" +
                                    std::to_string(data_size) +
                                    " data bytes; the file is truncated or corrupt)");
    const uint64_t numel = checked_numel(t.shape, what);
    require(t.end - t.begin == numel * elem, what + ": " + std::to_string(t.end - t.begin) +
                                                 " bytes do not match shape " +
                                                 shape_string(t.shape) + " of dtype " + t.dtype +
                                                 " (" + std::to_string(numel * elem) + " bytes)");
    index_[t.name] = tensors_.size();
    tensors_.push_back(std::move(t));
  }

  std::vector<const SafeTensorInfo*> by_offset;
  for (const auto& t : tensors_) by_offset.push_back(&t);
  std::sort(by_offset.begin(), by_offset.end(),
            [](const auto* a, const auto* b) { return a->begin < b->begin; });
  for (size_t i = 1; i < by_offset.size(); ++i) {
    require(by_offset[i]->begin >= by_offset[i - 1]->end, where + " is corrupt: tensors '" +
                                                              by_offset[i - 1]->name + "' and '" +
                                                              by_offset[i]->name + "' overlap");
  }
}

bool SafeTensorsFile::contains(const std::string& name) const {
  return index_.count(name) > 0;
}

const SafeTensorInfo& SafeTensorsFile::info(const std::string& name) const {
  auto it = index_.find(name);
  if (it == index_.end())
    throw Error("safetensors file " + source_ + " has no tensor '" + name + "'");
  return tensors_[it->second];
}

void SafeTensorsFile::read_f32(const std::string& name, float* dst) const {
  read_f32(name, 0, info(name).numel(), dst);
}

void SafeTensorsFile::read_f32(const std::string& name, int64_t first, int64_t count,
                               float* dst) const {
  const SafeTensorInfo& t = info(name);
  require(first >= 0 && count >= 0 && first <= t.numel() && count <= t.numel() - first,
          "safetensors file " + source_ + ", tensor '" + name + "': elements [" +
              std::to_string(first) + ", " + std::to_string(first + count) + ") outside its " +
              std::to_string(t.numel()));
  // An empty range may come with a null `dst`; memcpy(nullptr, src, 0) is undefined behaviour
  // (found by fuzzing: fuzz/corpus/safetensors/seed-mixed under UBSan).
  if (count == 0) return;
  if (t.dtype == "F32") {
    std::memcpy(dst, bytes_ + data_start_ + t.begin + 4 * first, static_cast<size_t>(count) * 4);
  } else if (t.dtype == "F16" || t.dtype == "BF16") {
    const uint8_t* src = bytes_ + data_start_ + t.begin + 2 * first;
    const bool half = t.dtype == "F16";
    for (int64_t i = 0; i < count; ++i) {
      uint16_t bits;
      std::memcpy(&bits, src + 2 * i, 2);  // the data section need not be aligned
      dst[i] = half ? half_to_float(bits) : bfloat16_to_float(bits);
    }
  } else {
    throw Error("safetensors file " + source_ + ", tensor '" + name + "': dtype " + t.dtype +
                " is not supported (gaincell reads F32, F16 and BF16)");
  }
}

std::vector<float> SafeTensorsFile::read_f32(const std::string& name) const {
  std::vector<float> out(static_cast<size_t>(info(name).numel()));
  read_f32(name, out.data());
  return out;
}

namespace {

// Header JSON padded with spaces to a multiple of 8 bytes, so the data section is 8-aligned (as
// the Hugging Face writer does).
std::string make_header(const std::vector<TensorView>& tensors,
                        const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header;
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
    header["__metadata__"] = m;
  }
  uint64_t offset = 0;
  for (const auto& t : tensors) {
    require(!t.name.empty() && t.name != "__metadata__", "safetensors writer: bad tensor name");
    require(!header.contains(t.name), "safetensors writer: duplicate tensor '" + t.name + "'");
    const uint64_t bytes =
        checked_numel(t.shape, "safetensors writer, tensor '" + t.name + "'") * 4;
    require(bytes == 0 || t.data != nullptr,
            "safetensors writer: tensor '" + t.name + "' has no data");
    header[t.name] = {
        {"dtype", "F32"}, {"shape", t.shape}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  std::string out;
  append_u64_le(out, text.size());
  return out + text;
}

void write_all(int fd, const void* data, size_t size, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = ::write(fd, p, size);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) throw Error("cannot write " + path + ": " + std::strerror(errno));
    p += n;
    size -= static_cast<size_t>(n);
  }
}

}  // namespace

std::vector<uint8_t> serialize_safetensors(const std::vector<TensorView>& tensors,
                                           const std::map<std::string, std::string>& metadata) {
  std::string header = make_header(tensors, metadata);
  std::vector<uint8_t> out(header.begin(), header.end());
  for (const auto& t : tensors) {
    const auto* p = reinterpret_cast<const uint8_t*>(t.data);
    const size_t bytes = static_cast<size_t>(checked_numel(t.shape, t.name)) * 4;
    if (bytes) out.insert(out.end(), p, p + bytes);
  }
  return out;
}

void write_safetensors(const std::filesystem::path& path, const std::vector<TensorView>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string header = make_header(tensors, metadata);  // validates before touching disk
  const std::string tmp = path.string() + ".tmp." + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) throw Error("cannot create " + tmp + ": " + std::strerror(errno));
  try {
    write_all(fd, header.data(), header.size(), tmp);
    for (const auto& t : tensors) {
      const size_t bytes = static_cast<size_t>(checked_numel(t.shape, t.name)) * 4;
      if (bytes) write_all(fd, t.data, bytes, tmp);
    }
    if (::fsync(fd) != 0) throw Error("cannot flush " + tmp + ": " + std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw Error("cannot write " + tmp + ": " + std::strerror(errno));
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string reason = std::strerror(errno);
    ::unlink(tmp.c_str());
    throw Error("cannot rename " + tmp + " to " + path.string() + ": " + reason);
  }
}

}  // namespace gaincell
