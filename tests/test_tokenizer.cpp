// GPT-2 tokenizer: golden ids from the independent Python reference
// (tests/reference/gpt2_bpe_reference.py -> tests/fixtures/tokenizer_cases.json), hand-derived
// pre-tokenization and UTF-8 cases, fast-vs-reference BPE, round trips and robustness.
#include <gtest/gtest.h>

#include <chrono>
#include <nlohmann/json.hpp>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/tokenizer.h"
#include "test_tokenizer_util.h"
#include "test_util.h"

namespace gaincell {
namespace {

using test_util::random_bytes;
using test_util::shared_tokenizer;
using test_util::TempDir;

std::string base64_decode(std::string_view in) {
  static const std::string alphabet =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  uint32_t buffer = 0;
  int bits = 0;
  for (const char c : in) {
    if (c == '=') break;
    const size_t v = alphabet.find(c);
    if (v == std::string::npos) throw std::runtime_error("bad base64");
    buffer = (buffer << 6) | static_cast<uint32_t>(v);
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out.push_back(static_cast<char>((buffer >> bits) & 0xFF));
    }
  }
  return out;
}

const nlohmann::json& fixture() {
  static const nlohmann::json j = nlohmann::json::parse(read_text_file(
      std::filesystem::path(GAINCELL_SOURCE_DIR) / "tests/fixtures/tokenizer_cases.json"));
  return j;
}

// FNV-1a 64 over the ids as little-endian uint32, as in gen_tokenizer_cases.py.
uint64_t fnv1a_ids(const std::vector<int32_t>& ids) {
  uint64_t h = 0xCBF29CE484222325ull;
  for (const int32_t id : ids) {
    for (int k = 0; k < 4; ++k) {
      h ^= (static_cast<uint32_t>(id) >> (8 * k)) & 0xFF;
      h *= 0x100000001B3ull;
    }
  }
  return h;
}

std::vector<std::string> split_views(std::string_view text) {
  std::vector<std::string> out;
  for (const auto piece : pretokenize(text)) out.emplace_back(piece);
  return out;
}

// ----- vocabulary-independent: UTF-8, classes, pre-tokenization -----------------------------

TEST(Utf8, DecodesValidSequences) {
  uint32_t cp;
  EXPECT_EQ(decode_utf8("A", 0, &cp), 1);
  EXPECT_EQ(cp, 0x41u);
  EXPECT_EQ(decode_utf8("\xC3\xA9", 0, &cp), 2);
  EXPECT_EQ(cp, 0xE9u);
  EXPECT_EQ(decode_utf8("\xE2\x82\xAC", 0, &cp), 3);
  EXPECT_EQ(cp, 0x20ACu);
  EXPECT_EQ(decode_utf8("\xF0\x9F\x98\x80", 0, &cp), 4);
  EXPECT_EQ(cp, 0x1F600u);
  EXPECT_EQ(decode_utf8("\xF4\x8F\xBF\xBF", 0, &cp), 4);
  EXPECT_EQ(cp, 0x10FFFFu);
}

TEST(Utf8, RejectsInvalidSequencesOneByteAtATime) {
  const std::vector<std::string> invalid = {
      "\x80",              // stray continuation
      "\xC0\xAF",          // overlong '/'
      "\xC1\xBF",          // overlong
      "\xE0\x80\xAF",      // overlong 3-byte
      "\xED\xA0\x80",      // UTF-16 surrogate
      "\xF0\x80\x80\x80",  // overlong 4-byte
      "\xF4\x90\x80\x80",  // above U+10FFFF
      "\xF5\x80\x80\x80",  // invalid lead
      "\xFF",
      "\xE2\x82",  // truncated at the end
      "\xE2\x82"
      "A",  // truncated before ASCII
      "\xC3",
  };
  for (const auto& s : invalid) {
    uint32_t cp = 0;
    EXPECT_EQ(decode_utf8(s, 0, &cp), 1) << ::testing::PrintToString(s);
    EXPECT_EQ(cp, kInvalidByte) << ::testing::PrintToString(s);
  }
}

TEST(CharClasses, MatchUnicodeCategories) {
  EXPECT_EQ(classify_code_point('a'), CharClass::kLetter);
  EXPECT_EQ(classify_code_point(0xE9), CharClass::kLetter);    // é
  EXPECT_EQ(classify_code_point(0x65E5), CharClass::kLetter);  // 日
  EXPECT_EQ(classify_code_point(0x02B0), CharClass::kLetter);  // modifier letter (Lm)
  EXPECT_EQ(classify_code_point('7'), CharClass::kNumber);
  EXPECT_EQ(classify_code_point(0x0663), CharClass::kNumber);  // Arabic-Indic three (Nd)
  EXPECT_EQ(classify_code_point(0x00BD), CharClass::kNumber);  // ½ (No)
  EXPECT_EQ(classify_code_point(0x216B), CharClass::kNumber);  // Roman numeral twelve (Nl)
  EXPECT_EQ(classify_code_point(' '), CharClass::kSpace);
  EXPECT_EQ(classify_code_point('\n'), CharClass::kSpace);
  EXPECT_EQ(classify_code_point(0x00A0), CharClass::kSpace);
  EXPECT_EQ(classify_code_point(0x3000), CharClass::kSpace);
  EXPECT_EQ(classify_code_point(0x2028), CharClass::kSpace);
  EXPECT_EQ(classify_code_point(0x1C), CharClass::kOther);     // not \s in `regex`
  EXPECT_EQ(classify_code_point(0x0301), CharClass::kOther);   // combining acute (Mn)
  EXPECT_EQ(classify_code_point(0x1F600), CharClass::kOther);  // emoji
  EXPECT_EQ(classify_code_point(0xDC80), CharClass::kOther);   // surrogate
  EXPECT_EQ(classify_code_point(kInvalidByte), CharClass::kOther);
  EXPECT_EQ(classify_code_point('!'), CharClass::kOther);
}

TEST(Pretokenize, HandDerivedSplits) {
  using V = std::vector<std::string>;
  EXPECT_EQ(split_views("Hello world"), (V{"Hello", " world"}));
  EXPECT_EQ(split_views("I'm here, they're 'RE"),
            (V{"I", "'m", " here", ",", " they", "'re", " '", "RE"}));
  EXPECT_EQ(split_views("a  b"), (V{"a", " ", " b"}));  // \s+(?!\S) leaves the last space
  EXPECT_EQ(split_views("a\n\nb"), (V{"a", "\n", "\n", "b"}));
  EXPECT_EQ(split_views("a \n b"), (V{"a", " \n", " b"}));
  EXPECT_EQ(split_views("x   "), (V{"x", "   "}));  // trailing run stays whole
  EXPECT_EQ(split_views("\tb"), (V{"\t", "b"}));    // single \s then \S
  EXPECT_EQ(split_views(" 123abc!!"), (V{" 123", "abc", "!!"}));
  EXPECT_EQ(split_views("x ?! y"), (V{"x", " ?!", " y"}));
  EXPECT_EQ(split_views("''s"), (V{"''", "s"}));
  EXPECT_EQ(split_views("caf\xC3\xA9 \xE6\x97\xA5"), (V{"caf\xC3\xA9", " \xE6\x97\xA5"}));
  EXPECT_EQ(split_views("x\xFF\xFEy"), (V{"x", "\xFF\xFE", "y"}));  // invalid bytes: "other"
  EXPECT_EQ(split_views(" \xFF"), (V{" \xFF"}));
  EXPECT_EQ(split_views("\xE2\x82"
                        "A"),
            (V{"\xE2\x82", "A"}));
  EXPECT_EQ(split_views(""), V{});
}

TEST(Pretokenize, PiecesCoverRandomBytesExactly) {
  std::mt19937_64 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    const std::string s = random_bytes(rng, rng() % 300);
    std::string joined;
    for (const auto piece : pretokenize(s)) {
      ASSERT_FALSE(piece.empty());
      joined += piece;
    }
    ASSERT_EQ(joined, s);
  }
}

// ----- against the GPT-2 vocabulary -----------------------------------------------------------

TEST(Tokenizer, LoadsGpt2Vocabulary) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  EXPECT_EQ(tok.vocab_size(), 50257);
  EXPECT_EQ(tok.token_text(Tokenizer::kEndOfText), "<|endoftext|>");
  EXPECT_EQ(tok.token_text(0), "!");  // byte '!' is the first printable byte symbol
  EXPECT_THROW(tok.token_text(50257), Error);
  EXPECT_THROW(tok.token_text(-1), Error);
  // As Hugging Face's gpt2 tokenizer: BOS and EOS are both <|endoftext|>, no BOS is added.
  EXPECT_EQ(tok.bos_token(), std::optional<int32_t>(Tokenizer::kEndOfText));
  EXPECT_EQ(tok.eos_token(), std::optional<int32_t>(Tokenizer::kEndOfText));
  EXPECT_FALSE(tok.add_bos());
}

TEST(Tokenizer, MatchesPythonReferenceOnTrickyStrings) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  const auto& cases = fixture().at("cases");
  ASSERT_GE(cases.size(), 50u);
  for (const auto& c : cases) {
    const std::string bytes = base64_decode(c.at("b64").get<std::string>());
    const auto expected = c.at("ids").get<std::vector<int32_t>>();
    const auto ids = tok.encode(bytes);
    EXPECT_EQ(ids, expected) << "case " << c.at("name");
    EXPECT_EQ(tok.decode(ids), bytes) << "round trip of case " << c.at("name");
  }
}

TEST(Tokenizer, MatchesPythonReferenceOnTinyShakespeare) {
  GAINCELL_REQUIRE_VOCAB();
  GAINCELL_SHARED_DATA(shared, "");
  const auto& ref = fixture().at("tinyshakespeare");
  const std::string text = read_text_file(shared / ref.at("file").get<std::string>());
  ASSERT_EQ(text.size(), ref.at("file_bytes").get<size_t>());
  const Tokenizer& tok = *shared_tokenizer();
  const auto prefix =
      tok.encode(std::string_view(text).substr(0, ref.at("prefix_bytes").get<size_t>()));
  EXPECT_EQ(prefix, ref.at("prefix_ids").get<std::vector<int32_t>>());
  const auto ids = tok.encode(text);
  EXPECT_EQ(ids.size(), ref.at("total_tokens").get<size_t>());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(fnv1a_ids(ids)));
  EXPECT_EQ(std::string(hex), ref.at("fnv1a64_ids").get<std::string>());
  EXPECT_EQ(tok.decode(ids), text);
}

TEST(Tokenizer, KnownGpt2Encodings) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  // Published GPT-2 ids (e.g. the HuggingFace / tiktoken "gpt2" documentation examples).
  EXPECT_EQ(tok.encode("Hello, world!"), (std::vector<int32_t>{15496, 11, 995, 0}));
  // "<|endoftext|>" in the input is plain text (GPT-2's encoder.py), never the special id.
  const auto eot_text = tok.encode("<|endoftext|>");
  EXPECT_GT(eot_text.size(), 1u);
  for (const int32_t id : eot_text) EXPECT_NE(id, Tokenizer::kEndOfText);
  EXPECT_TRUE(tok.encode("").empty());
}

TEST(Tokenizer, FastBpeMatchesLoopReference) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  std::mt19937_64 rng(11);
  std::vector<std::string> pieces = {"aaaaaaaaaaaaaaaaa", " supercalifragilistic", "!!!!!!!!!!",
                                     "            ", "1111111111111"};
  for (int i = 0; i < 300; ++i) pieces.push_back(random_bytes(rng, 1 + rng() % 40));
  for (const auto& c : fixture().at("cases")) {
    const std::string bytes = base64_decode(c.at("b64").get<std::string>());
    for (const auto piece : pretokenize(bytes)) {
      if (piece.size() < 600) pieces.emplace_back(piece);
    }
  }
  for (const auto& piece : pieces) {
    ASSERT_EQ(tok.bpe_word(piece), tok.bpe_word_reference(piece))
        << ::testing::PrintToString(piece);
  }
}

TEST(Tokenizer, RoundTripsRandomBytes) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  std::mt19937_64 rng(3);
  for (int trial = 0; trial < 300; ++trial) {
    const std::string s = random_bytes(rng, rng() % 500);
    const auto ids = tok.encode(s);
    for (const int32_t id : ids) ASSERT_TRUE(id >= 0 && id < Tokenizer::kEndOfText);
    ASSERT_EQ(tok.decode(ids), s);
  }
}

// The byte tokenizer: ids are the bytes, 256 is <|endoftext|>; it needs no vocabulary files.
TEST(ByteTokenizer, IdsAreTheBytesAndRoundTrip) {
  const Tokenizer tok = Tokenizer::bytes();
  EXPECT_EQ(tok.vocab_size(), 257);
  EXPECT_EQ(tok.end_of_text(), 256);
  EXPECT_STREQ(tok.name(), "bytes");
  EXPECT_EQ(tok.encode("Ab\n\xff"), (std::vector<int32_t>{65, 98, 10, 255}));
  EXPECT_EQ(tok.token_text(256), "<|endoftext|>");
  EXPECT_EQ(tok.bos_token(), std::nullopt);
  EXPECT_EQ(tok.eos_token(), std::optional<int32_t>(256));
  EXPECT_FALSE(tok.add_bos());
  std::mt19937_64 rng(5);
  for (int trial = 0; trial < 100; ++trial) {
    const std::string s = random_bytes(rng, rng() % 300);
    const auto ids = tok.encode(s);
    ASSERT_EQ(ids.size(), s.size());
    ASSERT_EQ(tok.decode(ids), s);
  }
  EXPECT_THROW(tok.decode(std::vector<int32_t>{257}), Error);
  EXPECT_STREQ(Tokenizer::by_name("bytes").name(), "bytes");
  try {
    Tokenizer::by_name("words");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("unknown tokenizer 'words'"), std::string::npos);
  }
}

TEST(Tokenizer, VeryLongInputsRoundTrip) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  std::mt19937_64 rng(5);
  const size_t n = test_util::sanitized() ? 100'000 : 1'000'000;
  // One huge piece each (letters, punctuation, spaces), and random bytes: no crash, exact bytes.
  for (const std::string& s :
       {std::string(n, 'a'), std::string(n, '!'), std::string(n, ' '), random_bytes(rng, n)}) {
    const auto ids = tok.encode(s);
    ASSERT_FALSE(ids.empty());
    ASSERT_EQ(tok.decode(ids), s);
  }
}

TEST(Tokenizer, DecodeRejectsOutOfRangeIds) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  const std::vector<int32_t> bad = {15496, 50257};
  try {
    tok.decode(bad);
    FAIL() << "expected gaincell::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("50257"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("position 1"), std::string::npos) << e.what();
  }
  EXPECT_THROW(tok.decode(std::vector<int32_t>{-5}), Error);
  EXPECT_EQ(tok.decode(std::vector<int32_t>{Tokenizer::kEndOfText}), "<|endoftext|>");
}

TEST(Tokenizer, ConcurrentEncodingAgrees) {
  GAINCELL_REQUIRE_VOCAB();
  const Tokenizer& tok = *shared_tokenizer();
  const std::string text = base64_decode(fixture().at("cases").back().at("b64").get<std::string>());
  const auto expected = tok.encode(text);
  std::vector<std::vector<int32_t>> results(4);
#pragma omp parallel for num_threads(4)
  for (int i = 0; i < 4; ++i) results[static_cast<size_t>(i)] = tok.encode(text);
  for (const auto& r : results) EXPECT_EQ(r, expected);
}

// ----- loading errors ---------------------------------------------------------------------------

TEST(TokenizerLoad, MissingDirectoryNamesTheFile) {
  TempDir dir;
  try {
    Tokenizer::load(dir.path());
    FAIL() << "expected gaincell::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("encoder.json"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("setup.sh"), std::string::npos) << e.what();
  }
}

class CorruptVocab : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!shared_tokenizer()) GTEST_SKIP() << "GPT-2 vocabulary not found (see scripts/setup.sh)";
    const auto src = default_data_dir() / "vocab";
    encoder_ = nlohmann::json::parse(read_text_file(src / "encoder.json"));
    merges_ = read_text_file(src / "vocab.bpe");
  }
  // Writes the (modified) vocabulary and returns the error message of loading it ("" if none).
  std::string load_error() {
    write_file_atomic(dir_.path() / "encoder.json", encoder_.dump());
    write_file_atomic(dir_.path() / "vocab.bpe", merges_);
    try {
      Tokenizer::load(dir_.path());
    } catch (const Error& e) {
      return e.what();
    }
    return "";
  }
  TempDir dir_;
  nlohmann::json encoder_;
  std::string merges_;
};

TEST_F(CorruptVocab, UnmodifiedCopyLoads) {
  EXPECT_EQ(load_error(), "");
}

TEST_F(CorruptVocab, TruncatedEncoderJson) {
  write_file_atomic(dir_.path() / "encoder.json", encoder_.dump().substr(0, 5000));
  write_file_atomic(dir_.path() / "vocab.bpe", merges_);
  EXPECT_THROW(Tokenizer::load(dir_.path()), Error);
}

TEST_F(CorruptVocab, IdOutOfRange) {
  encoder_["hello"] = 99999;
  EXPECT_NE(load_error().find("99999"), std::string::npos);
}

TEST_F(CorruptVocab, DuplicateId) {
  encoder_["!"] = 1;  // '"' also has id 1
  EXPECT_NE(load_error().find("used twice"), std::string::npos);
}

TEST_F(CorruptVocab, EndOfTextMissing) {
  encoder_.erase("<|endoftext|>");
  encoder_["zzzz-not-eot"] = 50256;
  EXPECT_NE(load_error().find("50256"), std::string::npos);
}

TEST_F(CorruptVocab, MergeResultMissing) {
  merges_ += "\nzzzq qqqz\n";
  EXPECT_NE(load_error().find("not in encoder.json"), std::string::npos);
}

TEST_F(CorruptVocab, MalformedMergeLine) {
  merges_.insert(merges_.find('\n') + 1, "onlyone\n");
  EXPECT_NE(load_error().find("line 2"), std::string::npos);
}

TEST_F(CorruptVocab, RandomBytesNeverCrash) {
  std::mt19937_64 rng(13);
  for (int trial = 0; trial < 20; ++trial) {
    write_file_atomic(dir_.path() / "encoder.json", random_bytes(rng, 2000));
    write_file_atomic(dir_.path() / "vocab.bpe", random_bytes(rng, 2000));
    EXPECT_THROW(Tokenizer::load(dir_.path()), Error);
  }
}

// ----- BPE merge semantics on a synthetic vocabulary with adversarial ranks -------------------

// Builds a valid vocabulary (256 byte tokens, random merges over {a,b,c} in random rank order,
// padding up to <|endoftext|> = 50256) and checks the heap BPE against the loop reference.
TEST(BpeSemantics, HeapMatchesReferenceOnRandomMergeTables) {
  std::mt19937_64 rng(17);
  const std::string bytes_symbols = [] {
    // Printable byte symbols of GPT-2's bytes_to_unicode for a, b, c are the letters themselves.
    return std::string("abc");
  }();
  for (int table = 0; table < 5; ++table) {
    TempDir dir;
    nlohmann::json encoder;
    // 256 byte tokens in bytes_to_unicode order (ids need only be dense and unique).
    int32_t next_id = 0;
    for (uint32_t b = 0, extra = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      const uint32_t cp = printable ? b : 256 + extra++;
      std::string utf8;
      if (cp < 0x80) {
        utf8 = std::string(1, static_cast<char>(cp));
      } else {
        utf8 = {static_cast<char>(0xC0 | (cp >> 6)), static_cast<char>(0x80 | (cp & 0x3F))};
      }
      encoder[utf8] = next_id++;
    }
    std::vector<std::string> tokens = {"a", "b", "c"};
    std::string merges = "#version: 0.2\n";
    for (int m = 0; m < 40; ++m) {
      const auto& l = tokens[rng() % tokens.size()];
      const auto& r = tokens[rng() % tokens.size()];
      const std::string merged = l + r;
      if (merged.size() > 8) continue;
      merges += l + " " + r + "\n";
      if (!encoder.contains(merged)) {
        encoder[merged] = next_id++;
        tokens.push_back(merged);
      }
    }
    // Shuffle the merge lines (after the header) so ranks need not follow creation order.
    std::vector<std::string> lines;
    for (size_t p = merges.find('\n') + 1; p < merges.size();) {
      const size_t e = merges.find('\n', p);
      lines.push_back(merges.substr(p, e - p));
      p = e + 1;
    }
    std::shuffle(lines.begin(), lines.end(), rng);
    std::string shuffled = "#version: 0.2\n";
    for (const auto& l : lines) shuffled += l + "\n";
    for (int k = 0; next_id < Tokenizer::kEndOfText; ++k)
      encoder["<pad" + std::to_string(k) + ">"] = next_id++;
    encoder["<|endoftext|>"] = next_id++;
    write_file_atomic(dir.path() / "encoder.json", encoder.dump());
    write_file_atomic(dir.path() / "vocab.bpe", shuffled);
    const Tokenizer tok = Tokenizer::load(dir.path());
    for (int trial = 0; trial < 300; ++trial) {
      std::string word;
      const size_t n = 1 + rng() % 24;
      for (size_t i = 0; i < n; ++i) word += bytes_symbols[rng() % 3];
      ASSERT_EQ(tok.bpe_word(word), tok.bpe_word_reference(word))
          << "table " << table << " word " << word;
      ASSERT_EQ(tok.decode(tok.encode(word)), word);
    }
  }
}

}  // namespace
}  // namespace gaincell
