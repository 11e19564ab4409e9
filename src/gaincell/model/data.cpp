#include "gaincell/model/data.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstring>
#include <iomanip>
#include <sstream>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"

namespace gaincell {

namespace fs = std::filesystem;

static_assert(std::endian::native == std::endian::little,
              "token files are little-endian and are memory-mapped as-is");

// ---------------------------------------------------------------------------------------------
// Layout

namespace {

uint32_t read_u32(const uint8_t* p) {
  uint32_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

uint64_t read_u64(const uint8_t* p) {
  uint64_t v = 0;
  std::memcpy(&v, p, sizeof v);
  return v;
}

bool starts_with_magic(const uint8_t* head, size_t file_bytes) {
  return file_bytes >= sizeof kTokenFileMagic &&
         std::memcmp(head, kTokenFileMagic, sizeof kTokenFileMagic) == 0;
}

}  // namespace

TokenFileLayout token_file_layout(const uint8_t* head, size_t file_bytes, const std::string& name) {
  const std::string where = "token file '" + name + "'";
  TokenFileLayout layout;
  if (!starts_with_magic(head, file_bytes)) {
    if (file_bytes % 2 != 0) {
      throw Error(where + " has " + std::to_string(file_bytes) +
                  " bytes, an odd number: not a uint16 token file (truncated?)");
    }
    layout.count = file_bytes / 2;
    return layout;
  }
  if (file_bytes < kTokenFileHeaderBytes) {
    throw Error(where + " starts with the GCTOKENS magic but has only " +
                std::to_string(file_bytes) + " bytes, less than the " +
                std::to_string(kTokenFileHeaderBytes) + "-byte header (truncated)");
  }
  const uint32_t version = read_u32(head + 8);
  const uint32_t width = read_u32(head + 12);
  const uint64_t count = read_u64(head + 16);
  const uint64_t reserved = read_u64(head + 24);
  if (version != kTokenFileVersion) {
    throw Error(where + ": header version " + std::to_string(version) + " is not supported (this " +
                "build reads version " + std::to_string(kTokenFileVersion) + ")");
  }
  if (width != 2 && width != 4) {
    throw Error(where + ": header says " + std::to_string(width) +
                " bytes per token; only 2 and 4 are defined");
  }
  if (reserved != 0) throw Error(where + ": header bytes 24..31 (reserved) are not zero");
  const uint64_t payload = file_bytes - kTokenFileHeaderBytes;
  const std::string claim = ": header says " + std::to_string(count) + " tokens of " +
                            std::to_string(width) + " bytes, but " + std::to_string(payload) +
                            " bytes follow the header";
  if (count > payload / width) throw Error(where + claim + " (truncated)");
  if (count * width != payload) throw Error(where + claim + " (extra bytes after the last token)");
  layout.header_bytes = kTokenFileHeaderBytes;
  layout.token_bytes = static_cast<int>(width);
  layout.count = static_cast<size_t>(count);
  return layout;
}

// ---------------------------------------------------------------------------------------------
// TokenDataset

struct TokenDataset::Mapping {
  const uint8_t* tokens = nullptr;  // the first id (after any header)
  int token_bytes = 2;
  size_t count = 0;
  void* address = nullptr;
  size_t bytes = 0;
  ~Mapping() {
    if (address) ::munmap(address, bytes);
  }
  uint32_t at(size_t i) const {
    if (token_bytes == 2) {
      uint16_t v;
      std::memcpy(&v, tokens + 2 * i, 2);
      return v;
    }
    return read_u32(tokens + 4 * i);
  }
};

namespace {

std::shared_ptr<TokenDataset::Mapping> map_file(const fs::path& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    throw Error("cannot open token file '" + path.string() + "': " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("token file '" + path.string() + "' is not a regular file");
  }
  auto mapping = std::make_shared<TokenDataset::Mapping>();
  mapping->bytes = static_cast<size_t>(st.st_size);
  if (mapping->bytes > 0) {
    void* address = ::mmap(nullptr, mapping->bytes, PROT_READ, MAP_PRIVATE, fd, 0);
    if (address == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw Error("cannot map token file '" + path.string() + "': " + std::strerror(err));
    }
    mapping->address = address;
  }
  ::close(fd);
  const auto* bytes = static_cast<const uint8_t*>(mapping->address);
  const TokenFileLayout layout = token_file_layout(bytes, mapping->bytes, path.string());
  mapping->token_bytes = layout.token_bytes;
  mapping->count = layout.count;
  mapping->tokens = bytes ? bytes + layout.header_bytes : nullptr;
  return mapping;
}

}  // namespace

TokenDataset TokenDataset::open(const fs::path& bin_file, int32_t vocab_size) {
  require(vocab_size > 0, "vocab_size must be > 0, got " + std::to_string(vocab_size));
  auto mapping = map_file(bin_file);
  const auto limit = static_cast<uint32_t>(vocab_size);
  // One pass over the whole file: a corrupt or foreign file is caught here, not mid-training.
  for (size_t i = 0; i < mapping->count; ++i) {
    const uint32_t t = mapping->at(i);
    if (t < limit) continue;
    const size_t offset = (mapping->tokens - static_cast<const uint8_t*>(mapping->address)) +
                          i * static_cast<size_t>(mapping->token_bytes);
    throw Error("token file '" + bin_file.string() + "': token " + std::to_string(t) +
                " at index " + std::to_string(i) + " (byte offset " + std::to_string(offset) +
                ") is >= vocab size " + std::to_string(vocab_size) +
                " (corrupt file, or not a token file of this vocabulary)");
  }
  TokenDataset data;
  data.mapping_ = std::move(mapping);
  data.path_ = bin_file;
  return data;
}

size_t TokenDataset::size() const {
  return mapping_ ? mapping_->count : 0;
}
int TokenDataset::token_bytes() const {
  return mapping_ ? mapping_->token_bytes : 2;
}
int32_t TokenDataset::operator[](size_t i) const {
  return static_cast<int32_t>(mapping_->at(i));
}
void TokenDataset::copy(size_t begin, size_t n, int32_t* out) const {
  require(begin <= size() && n <= size() - begin,
          "token file '" + path_.string() + "': tokens [" + std::to_string(begin) + ", " +
              std::to_string(begin + n) + ") outside its " + std::to_string(size()) + " tokens");
  for (size_t i = 0; i < n; ++i) out[i] = static_cast<int32_t>(mapping_->at(begin + i));
}
std::vector<int32_t> TokenDataset::slice(size_t begin, size_t n) const {
  std::vector<int32_t> out(n);
  copy(begin, n, out.data());
  return out;
}

// ---------------------------------------------------------------------------------------------
// BatchSampler

namespace {

uint64_t splitmix64(uint64_t* state) {
  uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

std::string to_hex(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

BatchSampler::BatchSampler(const TokenDataset& data, int B, int T, uint64_t seed)
    : data_(&data), batch_(B), context_(T), rng_state_(seed) {
  require(B >= 1, "batch size B must be >= 1, got " + std::to_string(B));
  require(T >= 1, "context length T must be >= 1, got " + std::to_string(T));
  require(data.size() >= static_cast<size_t>(T) + 1,
          "token file '" + data.path().string() + "' has " + std::to_string(data.size()) +
              " tokens, too few for windows of T = " + std::to_string(T) +
              " (needs at least T + 1)");
}

size_t BatchSampler::next_start() {
  // i uniform in [0, size - T - 1]: reject the first 2^64 mod n values, then reduce modulo n.
  const uint64_t n = data_->size() - static_cast<uint64_t>(context_);
  const uint64_t reject_below = (0 - n) % n;
  uint64_t r;
  do {
    r = splitmix64(&rng_state_);
  } while (r < reject_below);
  return static_cast<size_t>(r % n);
}

void BatchSampler::next(int32_t* inputs, int32_t* targets) {
  const auto T = static_cast<size_t>(context_);
  for (size_t b = 0; b < static_cast<size_t>(batch_); ++b) {
    const size_t start = next_start();
    for (size_t t = 0; t < T; ++t) {
      inputs[b * T + t] = (*data_)[start + t];
      targets[b * T + t] = (*data_)[start + t + 1];
    }
  }
}

nlohmann::json BatchSampler::state() const {
  return {{"kind", "splitmix64"},
          {"state", to_hex(rng_state_)},
          {"B", batch_},
          {"T", context_},
          {"tokens", data_->size()}};
}

void BatchSampler::set_state(const nlohmann::json& state) {
  const auto bad = [&](const std::string& why) {
    return Error("invalid sampler state " + state.dump() + ": " + why);
  };
  if (!state.is_object() || json_string_or(state, "kind", "", "sampler state") != "splitmix64") {
    throw bad("expected an object with \"kind\": \"splitmix64\"");
  }
  const auto field = [&](const char* name) -> const nlohmann::json& {
    if (!state.contains(name)) throw bad(std::string("missing \"") + name + "\"");
    return state.at(name);
  };
  const auto& hex = field("state");
  if (!hex.is_string() || hex.get<std::string>().size() != 16 ||
      hex.get<std::string>().find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
    throw bad("\"state\" must be 16 hex digits");
  }
  const auto& B = field("B");
  const auto& T = field("T");
  const auto& tokens = field("tokens");
  if (!B.is_number_integer() || !T.is_number_integer() || !tokens.is_number_integer()) {
    throw bad("\"B\", \"T\" and \"tokens\" must be integers");
  }
  if (B.get<int64_t>() != batch_ || T.get<int64_t>() != context_ ||
      tokens.get<int64_t>() != static_cast<int64_t>(data_->size())) {
    throw bad("saved for B = " + B.dump() + ", T = " + T.dump() + ", " + tokens.dump() +
              " tokens, but this sampler has B = " + std::to_string(batch_) + ", T = " +
              std::to_string(context_) + ", " + std::to_string(data_->size()) + " tokens");
  }
  rng_state_ = std::stoull(hex.get<std::string>(), nullptr, 16);
}

// ---------------------------------------------------------------------------------------------
// prepare

std::vector<std::string_view> split_fortunes(std::string_view text) {
  std::vector<std::string_view> docs;
  const auto keep = [&](std::string_view doc) {
    if (doc.find_first_not_of(" \t\r\n\f\v") != std::string_view::npos) docs.push_back(doc);
  };
  size_t doc_start = 0, line_start = 0;
  while (line_start < text.size()) {
    size_t line_end = text.find('\n', line_start);
    const size_t next_line = line_end == std::string_view::npos ? text.size() : line_end + 1;
    if (line_end == std::string_view::npos) line_end = text.size();
    std::string_view line = text.substr(line_start, line_end - line_start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line == "%") {
      keep(text.substr(doc_start, line_start - doc_start));
      doc_start = next_line;
    }
    line_start = next_line;
  }
  keep(text.substr(doc_start));
  return docs;
}

std::vector<fs::path> default_corpus_files(const fs::path& dir) {
  std::vector<fs::path> files;
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(dir, ec)) {
    const fs::path& p = entry.path();
    // Skip the strfile indexes (.dat) and the .u8 symlinks to the same texts.
    if (entry.is_symlink() || !entry.is_regular_file() || p.extension() == ".dat") continue;
    files.push_back(p);
  }
  require(!files.empty(), "no fortune files in '" + dir.string() +
                              "': install Debian's fortunes package (apt-get install fortunes)");
  std::sort(files.begin(), files.end());
  return files;
}

std::string read_input_text(const fs::path& path) {
  std::error_code ec;
  require(fs::exists(path, ec), "input file '" + path.string() + "' does not exist");
  require(fs::is_regular_file(path, ec), "input '" + path.string() + "' is not a regular file");
  return read_text_file(path);
}

int token_bytes_for_vocab(int64_t vocab_size) {
  require(vocab_size > 0 && vocab_size <= (int64_t{1} << 32),
          "vocab_size " + std::to_string(vocab_size) + " does not fit a token file");
  return vocab_size <= 65536 ? 2 : 4;
}

namespace {

void append_le(std::vector<uint8_t>& out, uint64_t v, int bytes) {
  for (int b = 0; b < bytes; ++b) out.push_back(static_cast<uint8_t>(v >> (8 * b)));
}

}  // namespace

void write_token_file(const fs::path& path, const std::vector<int32_t>& tokens,
                      int64_t vocab_size) {
  const int width = token_bytes_for_vocab(vocab_size);
  std::vector<uint8_t> bytes;
  bytes.reserve((width == 4 ? kTokenFileHeaderBytes : 0) + tokens.size() * width);
  if (width == 4) {
    bytes.insert(bytes.end(), kTokenFileMagic, kTokenFileMagic + sizeof kTokenFileMagic);
    append_le(bytes, kTokenFileVersion, 4);
    append_le(bytes, 4, 4);
    append_le(bytes, tokens.size(), 8);
    append_le(bytes, 0, 8);
  }
  for (size_t i = 0; i < tokens.size(); ++i) {
    require(tokens[i] >= 0 && tokens[i] < vocab_size,
            "token " + std::to_string(tokens[i]) + " at index " + std::to_string(i) +
                " is outside the vocabulary of " + std::to_string(vocab_size));
    append_le(bytes, static_cast<uint32_t>(tokens[i]), width);
  }
  write_file_atomic(path, bytes.data(), bytes.size());
}

PrepareResult prepare_token_files(const Tokenizer& tok, const std::vector<fs::path>& texts,
                                  const fs::path& out_dir, double val_fraction) {
  PrepareOptions options;
  options.val_fraction = val_fraction;
  return prepare_token_files(tok, texts, out_dir, options);
}

PrepareResult prepare_token_files(const Tokenizer& tok, const std::vector<fs::path>& texts,
                                  const fs::path& out_dir, const PrepareOptions& options) {
  const double f = options.val_fraction;
  require(std::isfinite(f) && f >= 0.0 && f < 1.0,
          "val_fraction must be in [0, 1), got " + std::to_string(f));
  require(!texts.empty(), "prepare needs at least one text file");
  std::vector<int32_t> stream;
  size_t documents = 0;
  nlohmann::json sources = nlohmann::json::array();
  for (size_t k = 0; k < texts.size(); ++k) {
    const auto start = std::chrono::steady_clock::now();
    const std::string text = read_input_text(texts[k]);
    std::vector<std::string_view> docs;
    if (options.split_fortunes) {
      docs = split_fortunes(text);
    } else if (!text.empty()) {
      docs.push_back(text);
    }
    const size_t before = stream.size();
    for (const std::string_view doc : docs) {
      if (!stream.empty()) stream.push_back(tok.end_of_text());  // document separator
      const auto ids = tok.encode(doc);
      stream.insert(stream.end(), ids.begin(), ids.end());
    }
    documents += docs.size();
    const size_t file_tokens = stream.size() - before;
    sources.push_back({{"path", texts[k].string()},
                       {"bytes", text.size()},
                       {"documents", docs.size()},
                       {"tokens", file_tokens}});
    if (options.progress) {
      const double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      std::ostringstream line;
      line << "prepare: [" << k + 1 << "/" << texts.size() << "] " << texts[k].string() << ": "
           << text.size() << " bytes, " << docs.size() << " documents, " << file_tokens
           << " tokens (" << std::fixed << std::setprecision(1)
           << text.size() / 1e6 / std::max(seconds, 1e-9) << " MB/s)";
      options.progress(line.str());
    }
  }
  require(!stream.empty(), "the input files hold no text to tokenize");

  const auto val_tokens = static_cast<size_t>(std::llround(static_cast<double>(stream.size()) * f));
  const size_t train_tokens = stream.size() - val_tokens;
  require(train_tokens > 0, "val_fraction leaves no training tokens");
  const std::vector<int32_t> train(stream.begin(),
                                   stream.begin() + static_cast<long>(train_tokens));
  const std::vector<int32_t> val(stream.begin() + static_cast<long>(train_tokens), stream.end());
  const int width = token_bytes_for_vocab(tok.vocab_size());
  write_token_file(out_dir / "train.bin", train, tok.vocab_size());
  write_token_file(out_dir / "val.bin", val, tok.vocab_size());
  const nlohmann::json meta = {{"format", "gaincell-tokens"},
                               {"version", 1},
                               {"dtype", width == 2 ? "uint16" : "uint32"},
                               {"header_bytes", width == 2 ? 0 : kTokenFileHeaderBytes},
                               {"byte_order", "little"},
                               {"tokenizer", tok.name()},
                               {"vocab_size", tok.vocab_size()},
                               {"eot_token", tok.end_of_text()},
                               {"documents", documents},
                               {"split_fortunes", options.split_fortunes},
                               {"val_fraction", f},
                               {"train_tokens", train_tokens},
                               {"val_tokens", val_tokens},
                               {"sources", sources}};
  // meta.json last: its presence means both token files are complete.
  write_file_atomic(out_dir / "meta.json", meta.dump(2) + "\n");
  if (options.progress) {
    options.progress("prepare: wrote " + (out_dir / "train.bin").string() + " (" +
                     std::to_string(train_tokens) + " tokens), " + (out_dir / "val.bin").string() +
                     " (" + std::to_string(val_tokens) + " tokens), meta.json");
  }
  return {train_tokens, val_tokens};
}

std::string token_dir_tokenizer(const fs::path& dir) {
  const fs::path meta_path = dir / "meta.json";
  std::error_code ec;
  if (!fs::exists(fs::symlink_status(meta_path, ec))) return "";
  const auto meta = read_json_file(meta_path);
  require(meta.is_object(), "'" + meta_path.string() + "' is not a JSON object");
  if (!meta.contains("tokenizer")) return "";
  require(meta["tokenizer"].is_string(),
          "'" + meta_path.string() + "': 'tokenizer' must be a string");
  return meta["tokenizer"].get<std::string>();
}

void check_token_dir_tokenizer(const fs::path& dir, const std::string& model_tokenizer) {
  const std::string data_tokenizer = token_dir_tokenizer(dir);
  require(data_tokenizer.empty() || data_tokenizer == model_tokenizer,
          "token directory '" + dir.string() + "' was made with the '" + data_tokenizer +
              "' tokenizer, the model uses '" + model_tokenizer + "'");
}

}  // namespace gaincell
