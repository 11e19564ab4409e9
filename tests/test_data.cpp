// Token files, the batch sampler and prepare_token_files().
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/data.h"
#include "gaincell/tools/eval/token_file.h"
#include "test_tokenizer_util.h"
#include "test_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using test_util::error_of;
using test_util::random_bytes;
using test_util::shared_tokenizer;
using test_util::TempDir;

bool contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// Tokens t_i = (i * 7919) % 50000, distinct enough to identify a window's start.
std::vector<int32_t> ramp(size_t n) {
  std::vector<int32_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<int32_t>((i * 7919) % 50000);
  return v;
}

// ----- TokenDataset -----------------------------------------------------------------------------

TEST(TokenDataset, RoundTripsLittleEndianUint16) {
  TempDir dir;
  const std::vector<int32_t> tokens = {0, 1, 255, 256, 50256, 12345};
  write_token_file(dir.path() / "t.bin", tokens);
  // Byte layout: little-endian uint16 (nanoGPT), checked byte by byte.
  const auto raw = read_binary_file(dir.path() / "t.bin");
  ASSERT_EQ(raw.size(), 12u);
  EXPECT_EQ(raw[6], 0x00);  // 256 = 0x0100
  EXPECT_EQ(raw[7], 0x01);
  EXPECT_EQ(raw[8], 50256 & 0xFF);
  EXPECT_EQ(raw[9], 50256 >> 8);
  const auto data = TokenDataset::open(dir.path() / "t.bin");
  ASSERT_EQ(data.size(), tokens.size());
  for (size_t i = 0; i < tokens.size(); ++i) EXPECT_EQ(data[i], tokens[i]);
}

TEST(TokenDataset, EmptyFileIsEmptyDataset) {
  TempDir dir;
  write_token_file(dir.path() / "e.bin", {});
  EXPECT_EQ(TokenDataset::open(dir.path() / "e.bin").size(), 0u);
}

TEST(TokenDataset, OddSizeIsAnError) {
  TempDir dir;
  write_file_atomic(dir.path() / "odd.bin", std::string("\x01\x00\x02", 3));
  const auto msg = error_of([&] { TokenDataset::open(dir.path() / "odd.bin"); });
  EXPECT_TRUE(contains(msg, "odd.bin")) << msg;
  EXPECT_TRUE(contains(msg, "3 bytes")) << msg;
}

TEST(TokenDataset, TokenBeyondVocabularyNamesFileAndOffset) {
  TempDir dir;
  write_token_file(dir.path() / "bad.bin", {1, 2, 3, 50257, 4});
  const auto msg = error_of([&] { TokenDataset::open(dir.path() / "bad.bin"); });
  EXPECT_TRUE(contains(msg, "bad.bin")) << msg;
  EXPECT_TRUE(contains(msg, "50257")) << msg;
  EXPECT_TRUE(contains(msg, "index 3")) << msg;
  EXPECT_TRUE(contains(msg, "byte offset 6")) << msg;
  // A smaller vocabulary rejects tokens that GPT-2's accepts.
  write_token_file(dir.path() / "small.bin", {1, 2, 300});
  EXPECT_NO_THROW(TokenDataset::open(dir.path() / "small.bin"));
  EXPECT_TRUE(
      contains(error_of([&] { TokenDataset::open(dir.path() / "small.bin", 256); }), "300"));
}

TEST(TokenDataset, MissingOrDirectoryIsAnError) {
  TempDir dir;
  EXPECT_TRUE(contains(error_of([&] { TokenDataset::open(dir.path() / "nope.bin"); }), "nope.bin"));
  EXPECT_THROW(TokenDataset::open(dir.path()), Error);
  EXPECT_THROW(TokenDataset::open(dir.path() / "x.bin", 0), Error);
  EXPECT_THROW(TokenDataset::open(dir.path() / "x.bin", -1), Error);
}

TEST(TokenDataset, RandomBytesAndTruncationsGiveErrorsNotCrashes) {
  TempDir dir;
  std::mt19937_64 rng(23);
  int rejected = 0;
  for (int trial = 0; trial < 100; ++trial) {
    const std::string bytes = random_bytes(rng, rng() % 400);
    write_file_atomic(dir.path() / "r.bin", bytes);
    try {
      const auto data = TokenDataset::open(dir.path() / "r.bin");
      // Accepted only when it is a valid token file.
      ASSERT_EQ(bytes.size() % 2, 0u);
      for (size_t i = 0; i < data.size(); ++i) ASSERT_LT(data[i], 50257);
    } catch (const Error&) {
      ++rejected;
    }
  }
  EXPECT_GT(rejected, 50);
  // A valid file truncated by one byte.
  write_token_file(dir.path() / "t.bin", ramp(100));
  const auto raw = read_binary_file(dir.path() / "t.bin");
  write_file_atomic(dir.path() / "t.bin", raw.data(), raw.size() - 1);
  EXPECT_THROW(TokenDataset::open(dir.path() / "t.bin"), Error);
}

TEST(TokenDataset, CopiesShareTheMapping) {
  TempDir dir;
  write_token_file(dir.path() / "t.bin", ramp(10));
  TokenDataset copy;
  {
    const auto data = TokenDataset::open(dir.path() / "t.bin");
    copy = data;
  }
  ASSERT_EQ(copy.size(), 10u);
  EXPECT_EQ(copy[9], ramp(10)[9]);
}

// ----- uint32 token files (vocabularies over 65536: Llama 3, Qwen2) ---------------------------

// The 32-byte header of model/data.h, written by hand (not by write_token_file).
std::string uint32_header(uint32_t version, uint32_t width, uint64_t count, uint64_t reserved = 0) {
  std::string h = "GCTOKENS";
  for (int b = 0; b < 4; ++b) h.push_back(static_cast<char>(version >> (8 * b)));
  for (int b = 0; b < 4; ++b) h.push_back(static_cast<char>(width >> (8 * b)));
  for (int b = 0; b < 8; ++b) h.push_back(static_cast<char>(count >> (8 * b)));
  for (int b = 0; b < 8; ++b) h.push_back(static_cast<char>(reserved >> (8 * b)));
  return h;
}

std::string le32(const std::vector<uint32_t>& ids) {
  std::string s;
  for (uint32_t v : ids)
    for (int b = 0; b < 4; ++b) s.push_back(static_cast<char>(v >> (8 * b)));
  return s;
}

TEST(TokenFileUint32, WriterPicksTheWidthFromTheVocabulary) {
  TempDir dir;
  EXPECT_EQ(token_bytes_for_vocab(50257), 2);
  EXPECT_EQ(token_bytes_for_vocab(65536), 2);
  EXPECT_EQ(token_bytes_for_vocab(65537), 4);
  EXPECT_EQ(token_bytes_for_vocab(128256), 4);
  EXPECT_THROW(token_bytes_for_vocab(0), Error);
  // Up to 65536: headerless uint16 (nanoGPT), 2 bytes per token.
  write_token_file(dir.path() / "a.bin", {1, 65535}, 65536);
  EXPECT_EQ(fs::file_size(dir.path() / "a.bin"), 4u);
  // Above: the header, then 4 bytes per token, byte for byte.
  write_token_file(dir.path() / "b.bin", {0, 65536, 128255, 7}, 128256);
  const auto raw = read_binary_file(dir.path() / "b.bin");
  const std::string want = uint32_header(1, 4, 4) + le32({0, 65536, 128255, 7});
  EXPECT_EQ(std::string(raw.begin(), raw.end()), want);
  const auto data = TokenDataset::open(dir.path() / "b.bin", 128256);
  EXPECT_EQ(data.token_bytes(), 4);
  ASSERT_EQ(data.size(), 4u);
  EXPECT_EQ(data[1], 65536);
  EXPECT_EQ(data[2], 128255);
  EXPECT_EQ(data.slice(1, 3), (std::vector<int32_t>{65536, 128255, 7}));
  EXPECT_THROW(data.slice(2, 3), Error);
  // Ids outside the vocabulary are refused by the writer.
  EXPECT_TRUE(contains(error_of([&] {
                         write_token_file(dir.path() / "c.bin", {5, 128256}, 128256);
                       }),
                       "128256"));
  EXPECT_THROW(write_token_file(dir.path() / "c.bin", {-1}, 128256), Error);
  EXPECT_THROW(write_token_file(dir.path() / "c.bin", {70000}), Error);  // default: uint16
  EXPECT_FALSE(fs::exists(dir.path() / "c.bin"));
}

TEST(TokenFileUint32, SamplerWindowsAreSlicesOfAUint32File) {
  TempDir dir;
  std::vector<int32_t> tokens(300);
  for (size_t i = 0; i < tokens.size(); ++i) tokens[i] = static_cast<int32_t>(70000 + 311 * i);
  write_token_file(dir.path() / "t.bin", tokens, 200000);
  const auto data = TokenDataset::open(dir.path() / "t.bin", 200000);
  BatchSampler sampler(data, 3, 16, 5);
  std::vector<int32_t> x(48), y(48);
  sampler.next(x.data(), y.data());
  for (int b = 0; b < 3; ++b) {
    const size_t start = static_cast<size_t>((x[b * 16] - 70000) / 311);
    for (int t = 0; t < 16; ++t) {
      EXPECT_EQ(x[b * 16 + t], tokens[start + t]);
      EXPECT_EQ(y[b * 16 + t], tokens[start + t + 1]);
    }
  }
}

TEST(TokenFileUint32, BadHeadersAndSizesNameTheProblem) {
  TempDir dir;
  const auto path = dir.path() / "h.bin";
  const auto open_error = [&](const std::string& bytes) {
    write_file_atomic(path, bytes);
    return error_of([&] { TokenDataset::open(path, 200000); });
  };
  const std::string ids = le32({1, 2, 3});
  EXPECT_TRUE(contains(open_error(uint32_header(1, 4, 3) + ids.substr(0, 11)), "truncated"));
  EXPECT_TRUE(contains(open_error(uint32_header(1, 4, 4) + ids), "truncated"));
  EXPECT_TRUE(contains(open_error(uint32_header(1, 4, 2) + ids), "extra bytes"));
  EXPECT_TRUE(contains(open_error(uint32_header(1, 4, 3).substr(0, 20)), "header"));
  EXPECT_TRUE(contains(open_error(uint32_header(2, 4, 3) + ids), "version 2"));
  EXPECT_TRUE(contains(open_error(uint32_header(1, 3, 3) + ids), "3 bytes per token"));
  EXPECT_TRUE(contains(open_error(uint32_header(1, 4, 3, 9) + ids), "reserved"));
  // A count so large that count * width overflows 64 bits is still "truncated", not accepted.
  EXPECT_TRUE(contains(open_error(uint32_header(1, 4, uint64_t{1} << 62) + ids), "truncated"));
  // Out-of-range id: named with its index and byte offset (header included).
  const std::string msg = open_error(uint32_header(1, 4, 3) + le32({1, 250000, 3}));
  EXPECT_TRUE(contains(msg, "250000")) << msg;
  EXPECT_TRUE(contains(msg, "index 1")) << msg;
  EXPECT_TRUE(contains(msg, "byte offset 36")) << msg;
  // A header with 2-byte ids is read as such.
  write_file_atomic(path, uint32_header(1, 2, 2) + std::string("\x05\x00\x06\x01", 4));
  const auto two = TokenDataset::open(path, 300);
  ASSERT_EQ(two.size(), 2u);
  EXPECT_EQ(two[1], 0x106);
}

TEST(TokenFileUint32, PreTokenisedInputReadsTheHeader) {
  TempDir dir;
  const auto path = dir.path() / "ids.bin";
  write_token_file(path, {3, 100000, 5}, 150000);
  using eval::read_token_file;
  using eval::TokenFileFormat;
  EXPECT_EQ(read_token_file(path), (std::vector<int32_t>{3, 100000, 5}));
  EXPECT_EQ(read_token_file(path, TokenFileFormat::kUint32), (std::vector<int32_t>{3, 100000, 5}));
  EXPECT_TRUE(contains(error_of([&] { read_token_file(path, TokenFileFormat::kUint16); }),
                       "header says 32"));
  EXPECT_TRUE(
      contains(error_of([&] { read_token_file(path, TokenFileFormat::kAuto, 100000); }), "100000"));
  // A headerless uint32 file still needs the explicit format.
  write_file_atomic(dir.path() / "raw.bin", le32({70000, 1}));
  EXPECT_EQ(read_token_file(dir.path() / "raw.bin", TokenFileFormat::kUint32),
            (std::vector<int32_t>{70000, 1}));
  const auto truncated = read_binary_file(path);
  write_file_atomic(dir.path() / "cut.bin", truncated.data(), truncated.size() - 2);
  EXPECT_TRUE(contains(error_of([&] { read_token_file(dir.path() / "cut.bin"); }), "truncated"));
}

// The npm Llama 3 tokenizer (128256 ids): prepare writes uint32 files that read back as its ids.
TEST(Prepare, LargeVocabularyWritesUint32Files) {
  const fs::path json = default_data_dir() / "tokenizers" / "llama3" / "tokenizer.json";
  if (!fs::exists(json)) {
    GAINCELL_SKIP_UNLESS_CI("data/tokenizers/llama3 not found (run scripts/setup.sh)");
  }
  const Tokenizer tok = Tokenizer::load_hf(json);
  ASSERT_GT(tok.vocab_size(), 65536);
  TempDir dir;
  // Cyrillic, CJK and Devanagari words: Llama 3 has ids above 65535 for many of them.
  const std::string text =
      "\xd0\x9f\xd1\x80\xd0\xb8\xd0\xb2\xd0\xb5\xd1\x82 \xd0\xbc\xd0\xb8\xd1\x80 "
      "\xe4\xbd\xa0\xe5\xa5\xbd\xe4\xb8\x96\xe7\x95\x8c "
      "\xe0\xa4\xa8\xe0\xa4\xae\xe0\xa4\xb8\xe0\xa5\x8d\xe0\xa4\xa4\xe0\xa5\x87 1234567\n";
  write_file_atomic(dir.path() / "a.txt", text);
  const auto out = dir.path() / "out";
  prepare_token_files(tok, {dir.path() / "a.txt"}, out, 0.0);
  const auto ids = tok.encode(text);
  ASSERT_TRUE(std::any_of(ids.begin(), ids.end(), [](int32_t id) { return id > 65535; }))
      << "the sample text should need ids above 65535";
  const auto train = TokenDataset::open(out / "train.bin", tok.vocab_size());
  EXPECT_EQ(train.token_bytes(), 4);
  EXPECT_EQ(train.slice(0, train.size()), ids);
  const auto meta = nlohmann::json::parse(read_text_file(out / "meta.json"));
  EXPECT_EQ(meta.at("dtype"), "uint32");
  EXPECT_EQ(meta.at("header_bytes"), 32);
  EXPECT_EQ(meta.at("vocab_size"), tok.vocab_size());
}

// ----- BatchSampler -----------------------------------------------------------------------------

class Sampler : public ::testing::Test {
 protected:
  void SetUp() override {
    tokens_ = ramp(kTokens);
    write_token_file(dir_.path() / "d.bin", tokens_);
    data_ = TokenDataset::open(dir_.path() / "d.bin");
  }
  static constexpr size_t kTokens = 1000;
  TempDir dir_;
  std::vector<int32_t> tokens_;
  TokenDataset data_;
};

TEST_F(Sampler, WindowsAreShiftedSlicesOfTheData) {
  const int B = 4, T = 16;
  BatchSampler sampler(data_, B, T, 42);
  std::vector<int32_t> x(B * T), y(B * T);
  std::map<int32_t, size_t> start_of;  // ramp values are distinct over 1000 tokens
  for (size_t i = 0; i < kTokens; ++i) start_of[tokens_[i]] = i;
  for (int step = 0; step < 50; ++step) {
    sampler.next(x.data(), y.data());
    for (int b = 0; b < B; ++b) {
      const size_t i = start_of.at(x[b * T]);
      ASSERT_LE(i, kTokens - T - 1);
      for (int t = 0; t < T; ++t) {
        ASSERT_EQ(x[b * T + t], tokens_[i + t]);
        ASSERT_EQ(y[b * T + t], tokens_[i + t + 1]);
      }
    }
  }
}

TEST_F(Sampler, StartsCoverTheWholeRangeUniformly) {
  const int T = 990;  // 10 possible starts: 0..9
  BatchSampler sampler(data_, 1, T, 7);
  std::vector<int> counts(10, 0);
  const int draws = 20000;
  for (int k = 0; k < draws; ++k) {
    const size_t i = sampler.next_start();
    ASSERT_LT(i, 10u);
    ++counts[i];
  }
  // Chi-square with 9 degrees of freedom; 27.9 is the 0.999 quantile.
  double chi2 = 0;
  for (const int c : counts) chi2 += (c - draws / 10.0) * (c - draws / 10.0) / (draws / 10.0);
  EXPECT_LT(chi2, 27.9);
}

TEST_F(Sampler, ReproducibleFromSeed) {
  const int B = 3, T = 8;
  BatchSampler a(data_, B, T, 123), b(data_, B, T, 123), c(data_, B, T, 124);
  std::vector<int32_t> xa(B * T), ya(B * T), xb(B * T), yb(B * T), xc(B * T), yc(B * T);
  bool differs = false;
  for (int step = 0; step < 20; ++step) {
    a.next(xa.data(), ya.data());
    b.next(xb.data(), yb.data());
    c.next(xc.data(), yc.data());
    ASSERT_EQ(xa, xb);
    ASSERT_EQ(ya, yb);
    differs |= xa != xc;
  }
  EXPECT_TRUE(differs);
}

TEST_F(Sampler, ResumesBitIdenticallyFromSavedState) {
  const int B = 2, T = 32;
  BatchSampler original(data_, B, T, 99);
  std::vector<int32_t> x(B * T), y(B * T);
  for (int step = 0; step < 5; ++step) original.next(x.data(), y.data());
  // Through text, as a checkpoint would store it.
  const auto saved = nlohmann::json::parse(original.state().dump());
  std::vector<std::vector<int32_t>> expected;
  for (int step = 0; step < 10; ++step) {
    original.next(x.data(), y.data());
    expected.push_back(x);
    expected.push_back(y);
  }
  BatchSampler resumed(data_, B, T, 1);  // a different seed: the state must override it
  resumed.set_state(saved);
  for (int step = 0; step < 10; ++step) {
    resumed.next(x.data(), y.data());
    ASSERT_EQ(x, expected[2 * step]);
    ASSERT_EQ(y, expected[2 * step + 1]);
  }
}

TEST_F(Sampler, RejectsForeignOrMalformedStates) {
  BatchSampler sampler(data_, 2, 8, 5);
  const auto good = sampler.state();
  BatchSampler other_batch(data_, 3, 8, 5);
  EXPECT_TRUE(contains(error_of([&] { other_batch.set_state(good); }), "B = 2"));
  auto bad = good;
  bad["state"] = "xyz";
  EXPECT_THROW(sampler.set_state(bad), Error);
  bad = good;
  bad.erase("T");
  EXPECT_THROW(sampler.set_state(bad), Error);
  EXPECT_THROW(sampler.set_state(nlohmann::json::array()), Error);
  EXPECT_THROW(sampler.set_state(nlohmann::json{{"kind", "mt19937"}}), Error);
  bad = good;
  bad["kind"] = nlohmann::json::array({1});  // not a string: a named error, not a type_error
  EXPECT_TRUE(contains(error_of([&] { sampler.set_state(bad); }), "'kind'"));
}

TEST_F(Sampler, ContextMustLeaveRoomForTheTarget) {
  EXPECT_TRUE(
      contains(error_of([&] { BatchSampler(data_, 1, static_cast<int>(kTokens), 1); }), "T + 1"));
  EXPECT_THROW(BatchSampler(data_, 1, static_cast<int>(kTokens) + 5, 1), Error);
  EXPECT_THROW(BatchSampler(data_, 0, 8, 1), Error);
  EXPECT_THROW(BatchSampler(data_, 1, 0, 1), Error);
  // size == T + 1: exactly one window, i = 0.
  BatchSampler one(data_, 1, static_cast<int>(kTokens) - 1, 1);
  for (int k = 0; k < 5; ++k) EXPECT_EQ(one.next_start(), 0u);
}

// ----- fortunes and prepare --------------------------------------------------------------------

TEST(Fortunes, SplitAtPercentLines) {
  const std::string text = "First one.\n%\nSecond\n  -- someone\n%\n%\n   \n%\nLast 100%\n";
  const auto docs = split_fortunes(text);
  ASSERT_EQ(docs.size(), 3u);
  EXPECT_EQ(docs[0], "First one.\n");
  EXPECT_EQ(docs[1], "Second\n  -- someone\n");
  EXPECT_EQ(docs[2], "Last 100%\n");  // '%' inside a line is text
  EXPECT_TRUE(split_fortunes("").empty());
  EXPECT_EQ(split_fortunes("no separator").size(), 1u);
}

TEST(Fortunes, DefaultCorpusSkipsIndexesAndLinks) {
  TempDir dir;
  write_file_atomic(dir.path() / "riddles", "a\n%\nb\n");
  write_file_atomic(dir.path() / "riddles.dat", "\x01\x02");
  write_file_atomic(dir.path() / "art", "c\n");
  fs::create_symlink(dir.path() / "riddles", dir.path() / "riddles.u8");
  const auto files = default_corpus_files(dir.path());
  ASSERT_EQ(files.size(), 2u);
  EXPECT_EQ(files[0].filename(), "art");
  EXPECT_EQ(files[1].filename(), "riddles");
  TempDir empty;
  EXPECT_TRUE(contains(error_of([&] { default_corpus_files(empty.path()); }), "fortunes"));
}

TEST(Prepare, ConcatenatesDocumentsWithEndOfTextAndSplitsAtTheEnd) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  TempDir dir;
  const std::string a = "First document: Hello, world!\n", b = "Second one, 42 words?\n";
  write_file_atomic(dir.path() / "a.txt", a);
  write_file_atomic(dir.path() / "b.txt", b);
  const auto out = dir.path() / "out";
  const auto r = prepare_token_files(tok, {dir.path() / "a.txt", dir.path() / "b.txt"}, out, 0.25);
  std::vector<int32_t> stream = tok.encode(a);
  stream.push_back(Tokenizer::kEndOfText);
  const auto eb = tok.encode(b);
  stream.insert(stream.end(), eb.begin(), eb.end());
  const size_t val = static_cast<size_t>(std::llround(stream.size() * 0.25));
  EXPECT_EQ(r.val_tokens, val);
  EXPECT_EQ(r.train_tokens, stream.size() - val);
  const auto train = TokenDataset::open(out / "train.bin");
  const auto valid = TokenDataset::open(out / "val.bin");
  ASSERT_EQ(train.size() + valid.size(), stream.size());
  for (size_t i = 0; i < train.size(); ++i) EXPECT_EQ(train[i], stream[i]);
  for (size_t i = 0; i < valid.size(); ++i) EXPECT_EQ(valid[i], stream[train.size() + i]);
  const auto meta = nlohmann::json::parse(read_text_file(out / "meta.json"));
  EXPECT_EQ(meta.at("train_tokens"), r.train_tokens);
  EXPECT_EQ(meta.at("val_tokens"), r.val_tokens);
  EXPECT_EQ(meta.at("dtype"), "uint16");
  EXPECT_EQ(meta.at("documents"), 2);
  EXPECT_EQ(meta.at("sources").size(), 2u);
  // No temporary files left behind.
  for (const auto& e : fs::directory_iterator(out)) {
    EXPECT_FALSE(contains(e.path().filename().string(), ".tmp")) << e.path();
  }
}

TEST(Prepare, FortuneFilesBecomeOneDocumentPerFortune) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  TempDir dir;
  write_file_atomic(dir.path() / "f", "One.\n%\nTwo.\n%\nThree.\n");
  PrepareOptions options;
  options.val_fraction = 0.0;
  options.split_fortunes = true;
  std::vector<std::string> progress;
  options.progress = [&](const std::string& line) { progress.push_back(line); };
  const auto r = prepare_token_files(tok, {dir.path() / "f"}, dir.path() / "out", options);
  std::vector<int32_t> stream;
  for (const char* doc : {"One.\n", "Two.\n", "Three.\n"}) {
    if (!stream.empty()) stream.push_back(Tokenizer::kEndOfText);
    const auto ids = tok.encode(doc);
    stream.insert(stream.end(), ids.begin(), ids.end());
  }
  EXPECT_EQ(r.train_tokens, stream.size());
  EXPECT_EQ(r.val_tokens, 0u);
  const auto train = TokenDataset::open(dir.path() / "out" / "train.bin");
  ASSERT_EQ(train.size(), stream.size());
  for (size_t i = 0; i < stream.size(); ++i) EXPECT_EQ(train[i], stream[i]);
  EXPECT_FALSE(progress.empty());
  EXPECT_EQ(TokenDataset::open(dir.path() / "out" / "val.bin").size(), 0u);
}

TEST(Prepare, BadInputsWriteNothing) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  TempDir dir;
  write_file_atomic(dir.path() / "a.txt", "text");
  const auto out = dir.path() / "out";
  EXPECT_TRUE(contains(
      error_of([&] {
        prepare_token_files(tok, {dir.path() / "a.txt", dir.path() / "missing.txt"}, out, 0.1);
      }),
      "missing.txt"));
  EXPECT_THROW(prepare_token_files(tok, {dir.path() / "a.txt"}, out, 1.0), Error);
  EXPECT_THROW(prepare_token_files(tok, {dir.path() / "a.txt"}, out, -0.1), Error);
  EXPECT_THROW(prepare_token_files(tok, {dir.path() / "a.txt"}, out, std::nan("")), Error);
  EXPECT_THROW(prepare_token_files(tok, {}, out, 0.1), Error);
  EXPECT_TRUE(contains(error_of([&] { prepare_token_files(tok, {dir.path()}, out, 0.1); }),
                       "not a regular file"));
  write_file_atomic(dir.path() / "empty.txt", "");
  EXPECT_THROW(prepare_token_files(tok, {dir.path() / "empty.txt"}, out, 0.1), Error);
  EXPECT_FALSE(fs::exists(out / "train.bin"));
  EXPECT_FALSE(fs::exists(out / "meta.json"));
}

}  // namespace
}  // namespace gaincell
