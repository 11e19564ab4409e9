#include "gaincell/core/npy.h"

#include <array>
#include <cstring>
#include <limits>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"

namespace gaincell {

namespace {

// ---- small helpers ---------------------------------------------------------------------------

uint64_t read_le(const uint8_t* p, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

void put_le(std::vector<uint8_t>& out, uint64_t v, int n) {
  for (int i = 0; i < n; ++i) out.push_back(static_cast<uint8_t>(v >> (8 * i)));
}

std::string trim(const std::string& s) {
  const size_t b = s.find_first_not_of(" \t\n");
  const size_t e = s.find_last_not_of(" \t\n,");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

// Value text of 'key' in the header dict, up to the next top-level comma or closing brace.
std::string header_value(const std::string& header, const std::string& key,
                         const std::string& what) {
  const std::string quoted[] = {"'" + key + "'", "\"" + key + "\""};
  size_t pos = std::string::npos;
  for (const auto& q : quoted) {
    pos = header.find(q);
    if (pos != std::string::npos) {
      pos += q.size();
      break;
    }
  }
  if (pos == std::string::npos) throw Error(what + ": .npy header has no '" + key + "' entry");
  pos = header.find(':', pos);
  if (pos == std::string::npos) throw Error(what + ": malformed .npy header near '" + key + "'");
  ++pos;
  int depth = 0;
  size_t end = pos;
  for (; end < header.size(); ++end) {
    const char c = header[end];
    if (c == '(' || c == '[') ++depth;
    if (c == ')' || c == ']') --depth;
    if (depth == 0 && (c == ',' || c == '}')) break;
    if (depth < 0) throw Error(what + ": malformed .npy header near '" + key + "'");
  }
  return trim(header.substr(pos, end - pos));
}

std::vector<int64_t> parse_shape(const std::string& text, const std::string& what) {
  if (text.size() < 2 || text.front() != '(' || text.back() != ')')
    throw Error(what + ": .npy shape '" + text + "' is not a tuple");
  std::vector<int64_t> shape;
  const std::string inner = text.substr(1, text.size() - 2);
  size_t pos = 0;
  while (pos < inner.size()) {
    size_t comma = inner.find(',', pos);
    if (comma == std::string::npos) comma = inner.size();
    const std::string item = trim(inner.substr(pos, comma - pos));
    pos = comma + 1;
    if (item.empty()) continue;
    if (item.find_first_not_of("0123456789") != std::string::npos || item.size() > 15)
      throw Error(what + ": .npy shape entry '" + item + "' is not a valid dimension");
    shape.push_back(std::stoll(item));
  }
  return shape;
}

struct DtypeInfo {
  char kind = 0;  // 'f', 'i', 'u', 'b'
  size_t size = 0;
};

DtypeInfo parse_descr(const std::string& descr, const std::string& what) {
  if (descr.size() < 3) throw Error(what + ": unsupported .npy dtype '" + descr + "'");
  const char order = descr[0];
  const char kind = descr[1];
  const std::string size_text = descr.substr(2);
  // At most two digits (sizes are 1..8): a longer run would overflow std::stoul (found by fuzzing:
  // fuzz/corpus/npy/crash-descr-size-overflow).
  if (size_text.size() > 2 || size_text.find_first_not_of("0123456789") != std::string::npos)
    throw Error(what + ": unsupported .npy dtype '" + descr + "'");
  const size_t size = std::stoul(size_text);
  const bool kind_ok =
      (kind == 'f' && (size == 4 || size == 8)) ||
      ((kind == 'i' || kind == 'u') && (size == 1 || size == 2 || size == 4 || size == 8)) ||
      (kind == 'b' && size == 1);
  if (!kind_ok) throw Error(what + ": unsupported .npy dtype '" + descr + "'");
  if (order == '>' && size > 1)
    throw Error(what + ": big-endian .npy dtype '" + descr + "' is not supported");
  if (order != '<' && order != '|' && order != '=' && order != '>')
    throw Error(what + ": unsupported .npy dtype '" + descr + "'");
  return {kind, size};
}

template <typename Out>
std::vector<Out> convert_elements(const NpyArray& a) {
  const DtypeInfo info = parse_descr(a.descr, "array");
  const int64_t n = a.numel();
  std::vector<Out> out(static_cast<size_t>(n));
  const uint8_t* p = a.bytes.data();
  for (int64_t i = 0; i < n; ++i, p += info.size) {
    const uint64_t raw = read_le(p, static_cast<int>(info.size));
    double v = 0;
    if (info.kind == 'f') {
      if (info.size == 4) {
        float f;
        const uint32_t r32 = static_cast<uint32_t>(raw);
        std::memcpy(&f, &r32, 4);
        v = f;
      } else {
        std::memcpy(&v, &raw, 8);
      }
    } else if (info.kind == 'i') {
      const int shift = 64 - 8 * static_cast<int>(info.size);
      v = static_cast<double>(static_cast<int64_t>(raw << shift) >> shift);
    } else {
      v = static_cast<double>(raw);
    }
    out[static_cast<size_t>(i)] = static_cast<Out>(v);
  }
  return out;
}

}  // namespace

// ---- NpyArray ----------------------------------------------------------------------------------

int64_t NpyArray::numel() const {
  int64_t n = 1;
  for (int64_t s : shape) n *= s;
  return n;
}

size_t NpyArray::item_size() const {
  return parse_descr(descr, "array").size;
}
std::vector<float> NpyArray::to_float() const {
  return convert_elements<float>(*this);
}
std::vector<double> NpyArray::to_double() const {
  return convert_elements<double>(*this);
}

// ---- .npy -------------------------------------------------------------------------------------

NpyArray parse_npy(std::span<const uint8_t> data, const std::string& what) {
  static const uint8_t kMagic[6] = {0x93, 'N', 'U', 'M', 'P', 'Y'};
  if (data.size() < 10 || std::memcmp(data.data(), kMagic, 6) != 0)
    throw Error(what + ": not a .npy file (bad magic)");
  const int major = data[6];
  size_t header_len = 0;
  size_t header_start = 0;
  if (major == 1) {
    header_len = read_le(data.data() + 8, 2);
    header_start = 10;
  } else if (major == 2 || major == 3) {
    if (data.size() < 12) throw Error(what + ": truncated .npy header");
    header_len = read_le(data.data() + 8, 4);
    header_start = 12;
  } else {
    throw Error(what + ": unsupported .npy version " + std::to_string(major));
  }
  if (header_start + header_len > data.size()) throw Error(what + ": truncated .npy header");
  const std::string header(reinterpret_cast<const char*>(data.data() + header_start), header_len);
  if (header.find('{') == std::string::npos || header.find('}') == std::string::npos)
    throw Error(what + ": malformed .npy header");

  NpyArray a;
  std::string descr = header_value(header, "descr", what);
  if (descr.size() < 2 || (descr.front() != '\'' && descr.front() != '"') ||
      descr.back() != descr.front())
    throw Error(what + ": .npy dtype must be a simple string, got " + descr);
  a.descr = descr.substr(1, descr.size() - 2);
  const DtypeInfo info = parse_descr(a.descr, what);
  const std::string fortran = header_value(header, "fortran_order", what);
  if (fortran == "True") throw Error(what + ": Fortran-ordered .npy arrays are not supported");
  if (fortran != "False") throw Error(what + ": bad fortran_order '" + fortran + "'");
  a.shape = parse_shape(header_value(header, "shape", what), what);

  uint64_t numel = 1;
  for (int64_t s : a.shape) {
    if (s != 0 && numel > std::numeric_limits<uint64_t>::max() / 16 / static_cast<uint64_t>(s))
      throw Error(what + ": .npy shape is too large");
    numel *= static_cast<uint64_t>(s);
  }
  const uint64_t nbytes = numel * info.size;
  const size_t payload = data.size() - header_start - header_len;
  if (payload < nbytes)
    throw Error(what + ": truncated .npy data (" + std::to_string(payload) + " bytes, expected " +
                std::to_string(nbytes) + ")");
  if (payload > nbytes)
    throw Error(what + ": .npy has " + std::to_string(payload - nbytes) +
                " trailing bytes after the data");
  const uint8_t* begin = data.data() + header_start + header_len;
  a.bytes.assign(begin, begin + nbytes);
  return a;
}

NpyArray read_npy(const std::filesystem::path& path) {
  const std::vector<uint8_t> data = read_binary_file(path);
  return parse_npy(data, path.string());
}

std::vector<uint8_t> npy_bytes(std::span<const float> values, const std::vector<int64_t>& shape) {
  int64_t n = 1;
  for (int64_t s : shape) {
    if (s < 0) throw Error("npy_bytes: negative dimension");
    n *= s;
  }
  if (n != static_cast<int64_t>(values.size()))
    throw Error("npy_bytes: shape holds " + std::to_string(n) + " elements but " +
                std::to_string(values.size()) + " values were given");
  std::string dims;
  for (int64_t s : shape) dims += std::to_string(s) + ", ";
  if (shape.size() > 1)
    dims.resize(dims.size() - 2);  // (a, b) but (a,) for one dimension
  else if (shape.size() == 1)
    dims.resize(dims.size() - 1);
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  // Preallocated and filled with memcpy (GCC 12 warns falsely on vector::insert from a string).
  const size_t payload = values.size() * sizeof(float);
  std::vector<uint8_t> out(10 + header.size() + payload);
  static const uint8_t kPrefix[8] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  std::memcpy(out.data(), kPrefix, 8);
  out[8] = static_cast<uint8_t>(header.size() & 0xff);
  out[9] = static_cast<uint8_t>(header.size() >> 8);
  std::memcpy(out.data() + 10, header.data(), header.size());
  if (payload > 0) std::memcpy(out.data() + 10 + header.size(), values.data(), payload);  // LE host
  return out;
}

void write_npy(const std::filesystem::path& path, std::span<const float> values,
               const std::vector<int64_t>& shape) {
  const std::vector<uint8_t> bytes = npy_bytes(values, shape);
  write_file_atomic(path, bytes.data(), bytes.size());
}

// ---- zip (.npz) ---------------------------------------------------------------------------------

uint32_t crc32(std::span<const uint8_t> data) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t c = 0xffffffffu;
  for (uint8_t b : data) c = table[(c ^ b) & 0xff] ^ (c >> 8);
  return c ^ 0xffffffffu;
}

std::map<std::string, NpyArray> parse_npz(std::span<const uint8_t> data, const std::string& what) {
  const size_t n = data.size();
  auto need = [&](uint64_t offset, uint64_t len, const char* part) {
    if (offset > n || len > n - offset)
      throw Error(what + ": truncated or corrupt .npz (" + part + " out of range)");
  };
  // End of central directory: last occurrence of its signature within the final 64 KiB + 22.
  if (n < 22) throw Error(what + ": not a zip/.npz file (too short)");
  size_t eocd = std::string::npos;
  const size_t lowest = n > 22 + 65535 ? n - 22 - 65535 : 0;
  for (size_t p = n - 22 + 1; p-- > lowest;) {
    if (read_le(&data[p], 4) == 0x06054b50) {
      eocd = p;
      break;
    }
  }
  if (eocd == std::string::npos) throw Error(what + ": not a zip/.npz file (no end record)");
  uint64_t entries = read_le(&data[eocd + 10], 2);
  uint64_t cd_size = read_le(&data[eocd + 12], 4);
  uint64_t cd_offset = read_le(&data[eocd + 16], 4);
  if (cd_offset == 0xffffffffu || entries == 0xffff) {
    // Zip64 end-of-central-directory locator right before the end record.
    if (eocd < 20 || read_le(&data[eocd - 20], 4) != 0x07064b50)
      throw Error(what + ": corrupt .npz (zip64 locator missing)");
    const uint64_t z64 = read_le(&data[eocd - 20 + 8], 8);
    need(z64, 56, "zip64 end record");
    if (read_le(&data[z64], 4) != 0x06064b50) throw Error(what + ": corrupt .npz zip64 record");
    entries = read_le(&data[z64 + 32], 8);
    cd_size = read_le(&data[z64 + 40], 8);
    cd_offset = read_le(&data[z64 + 48], 8);
  }
  need(cd_offset, cd_size, "central directory");

  std::map<std::string, NpyArray> members;
  uint64_t p = cd_offset;
  for (uint64_t e = 0; e < entries; ++e) {
    need(p, 46, "central directory entry");
    if (read_le(&data[p], 4) != 0x02014b50) throw Error(what + ": corrupt .npz central directory");
    const uint64_t flags = read_le(&data[p + 8], 2);
    const uint64_t method = read_le(&data[p + 10], 2);
    const uint32_t crc = static_cast<uint32_t>(read_le(&data[p + 16], 4));
    uint64_t comp_size = read_le(&data[p + 20], 4);
    uint64_t size = read_le(&data[p + 24], 4);
    const uint64_t name_len = read_le(&data[p + 28], 2);
    const uint64_t extra_len = read_le(&data[p + 30], 2);
    const uint64_t comment_len = read_le(&data[p + 32], 2);
    uint64_t local = read_le(&data[p + 42], 4);
    need(p + 46, name_len + extra_len + comment_len, "central directory entry");
    const std::string name(reinterpret_cast<const char*>(&data[p + 46]), name_len);
    // Zip64 extended information: present fields are those whose 32-bit value is saturated.
    for (uint64_t x = p + 46 + name_len; x + 4 <= p + 46 + name_len + extra_len;) {
      const uint64_t id = read_le(&data[x], 2);
      const uint64_t len = read_le(&data[x + 2], 2);
      uint64_t f = x + 4;
      if (id == 0x0001) {
        auto take = [&](uint64_t& field) {
          if (field != 0xffffffffu) return;
          if (f + 8 > x + 4 + len) throw Error(what + ": corrupt .npz zip64 field");
          field = read_le(&data[f], 8);
          f += 8;
        };
        take(size);
        take(comp_size);
        take(local);
      }
      x += 4 + len;
    }
    p += 46 + name_len + extra_len + comment_len;

    if (flags & 1) throw Error(what + ": member '" + name + "' is encrypted");
    if (method != 0)
      throw Error(what + ": member '" + name + "' is compressed (method " + std::to_string(method) +
                  "); only uncompressed .npz (numpy.savez) is supported");
    if (comp_size != size) throw Error(what + ": corrupt .npz member '" + name + "' sizes");
    need(local, 30, "local header");
    if (read_le(&data[local], 4) != 0x04034b50)
      throw Error(what + ": corrupt .npz local header of '" + name + "'");
    const uint64_t data_start =
        local + 30 + read_le(&data[local + 26], 2) + read_le(&data[local + 28], 2);
    need(data_start, size, ("data of member '" + name + "'").c_str());
    const std::span<const uint8_t> bytes = data.subspan(data_start, size);
    if (crc32(bytes) != crc)
      throw Error(what + ": member '" + name + "' fails its CRC-32 check (corrupt file)");
    std::string key = name;
    if (key.size() > 4 && key.compare(key.size() - 4, 4, ".npy") == 0) key.resize(key.size() - 4);
    members[key] = parse_npy(bytes, what + ":" + name);
  }
  return members;
}

std::map<std::string, NpyArray> read_npz(const std::filesystem::path& path) {
  const std::vector<uint8_t> data = read_binary_file(path);
  return parse_npz(data, path.string());
}

void write_npz(const std::filesystem::path& path, const std::vector<NpzMember>& members) {
  std::vector<uint8_t> out, central;
  for (const NpzMember& m : members) {
    const std::vector<uint8_t> body = npy_bytes(m.values, m.shape);
    const std::string name = m.name + ".npy";
    if (out.size() > 0xfffffff0u || body.size() > 0xfffffff0u)
      throw Error("write_npz: archive too large for a plain zip (" + path.string() + ")");
    const uint32_t crc = crc32(body);
    const uint64_t local = out.size();
    auto put_common = [&](std::vector<uint8_t>& v) {
      put_le(v, 20, 2);    // version needed
      put_le(v, 0, 2);     // flags
      put_le(v, 0, 2);     // method: stored
      put_le(v, 0, 2);     // time
      put_le(v, 0x21, 2);  // date 1980-01-01
      put_le(v, crc, 4);
      put_le(v, body.size(), 4);
      put_le(v, body.size(), 4);
      put_le(v, name.size(), 2);
      put_le(v, 0, 2);  // extra
    };
    put_le(out, 0x04034b50, 4);
    put_common(out);
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), body.begin(), body.end());

    put_le(central, 0x02014b50, 4);
    put_le(central, 20, 2);  // version made by
    put_common(central);
    put_le(central, 0, 2);  // comment
    put_le(central, 0, 2);  // disk
    put_le(central, 0, 2);  // internal attributes
    put_le(central, 0, 4);  // external attributes
    put_le(central, local, 4);
    central.insert(central.end(), name.begin(), name.end());
  }
  const uint64_t cd_offset = out.size();
  out.insert(out.end(), central.begin(), central.end());
  put_le(out, 0x06054b50, 4);
  put_le(out, 0, 2);
  put_le(out, 0, 2);
  put_le(out, members.size(), 2);
  put_le(out, members.size(), 2);
  put_le(out, central.size(), 4);
  put_le(out, cd_offset, 4);
  put_le(out, 0, 2);
  write_file_atomic(path, out.data(), out.size());
}

}  // namespace gaincell
