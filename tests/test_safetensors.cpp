// Safetensors reader/writer: against a hand-built fixture written by PyTorch
// (tests/reference/make_safetensors_fixture.py), round trips, and corrupt inputs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/safetensors.h"

namespace gaincell {
namespace {

const std::filesystem::path kFixtures =
    std::filesystem::path(GAINCELL_SOURCE_DIR) / "tests/fixtures";

std::vector<uint8_t> fixture_bytes() {
  return read_binary_file(kFixtures / "safetensors_mixed.safetensors");
}

// Expects `fn` to throw gaincell::Error whose message contains `needle`.
template <typename Fn>
void expect_error(Fn fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << "no error; expected one containing '" << needle << "'";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

std::vector<uint8_t> with_header(const std::string& header_json, size_t data_bytes) {
  std::string all(8, '\0');
  uint64_t n = header_json.size();
  for (int i = 0; i < 8; ++i) all[i] = static_cast<char>(n >> (8 * i));
  all += header_json;
  all.append(data_bytes, '\0');
  return std::vector<uint8_t>(all.begin(), all.end());
}

TEST(SafeTensors, ReadsPyTorchFixtureBitExactly) {
  auto expected = nlohmann::json::parse(read_text_file(kFixtures / "safetensors_mixed.json"));
  auto f = SafeTensorsFile::open(kFixtures / "safetensors_mixed.safetensors");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  EXPECT_EQ(f.metadata().at("note"), "hand-built fixture");
  EXPECT_EQ(f.tensors().size(), 5u);
  int checked = 0;
  for (const auto& [name, e] : expected["tensors"].items()) {
    const SafeTensorInfo& info = f.info(name);
    EXPECT_EQ(info.dtype, e["dtype"].get<std::string>());
    EXPECT_EQ(info.shape, e["shape"].get<std::vector<int64_t>>()) << name;
    std::vector<float> got = f.read_f32(name);
    ASSERT_EQ(got.size(), e["values"].size()) << name;
    for (size_t i = 0; i < got.size(); ++i) {
      const auto& v = e["values"][i];
      if (v.is_string()) {
        const std::string s = v.get<std::string>();
        if (s == "nan") {
          EXPECT_TRUE(std::isnan(got[i])) << name << "[" << i << "]";
        } else {
          EXPECT_EQ(got[i], s == "inf" ? INFINITY : -INFINITY) << name << "[" << i << "]";
        }
      } else {
        EXPECT_EQ(got[i], static_cast<float>(v.get<double>())) << name << "[" << i << "]";
      }
      ++checked;
    }
  }
  EXPECT_EQ(checked, 12 + 12 + 12 + 1);
}

TEST(SafeTensors, RejectsUnsupportedDtypeNamingTensorAndDtype) {
  auto f = SafeTensorsFile::open(kFixtures / "safetensors_mixed.safetensors");
  EXPECT_EQ(f.info("counts").dtype, "I64");  // validated, listed, but not convertible
  try {
    f.read_f32("counts");
    FAIL() << "I64 read as float";
  } catch (const Error& e) {
    std::string m = e.what();
    EXPECT_NE(m.find("counts"), std::string::npos) << m;
    EXPECT_NE(m.find("I64"), std::string::npos) << m;
  }
  expect_error([&] { f.info("missing.weight"); }, "missing.weight");
}

// IEEE 754 binary16 by its definition, in double arithmetic: (-1)^s * 2^(e-15) * (1 + m/1024), with
// subnormals m * 2^-24. (The compiler's _Float16 is not a portable reference: clang 14 on x86
// without AVX512-FP16 rejects it.)
float half_by_definition(uint16_t h) {
  const bool negative = (h >> 15) != 0;
  const int exponent = (h >> 10) & 0x1f, mantissa = h & 0x3ff;
  double v;
  if (exponent == 0) {
    v = std::ldexp(static_cast<double>(mantissa), -24);
  } else if (exponent == 31) {
    v = mantissa != 0 ? std::numeric_limits<double>::quiet_NaN()
                      : std::numeric_limits<double>::infinity();
  } else {
    v = std::ldexp(static_cast<double>(1024 + mantissa), exponent - 25);
  }
  return static_cast<float>(negative ? -v : v);
}

TEST(SafeTensors, HalfConversionMatchesTheDefinitionForAllBitPatterns) {
  EXPECT_EQ(half_by_definition(0x3c00), 1.0f);  // the reference itself, on known values
  EXPECT_EQ(half_by_definition(0xc000), -2.0f);
  EXPECT_EQ(half_by_definition(0x7bff), 65504.0f);
  EXPECT_EQ(half_by_definition(0x0001), std::ldexp(1.0f, -24));
  for (uint32_t bits = 0; bits < 65536; ++bits) {
    uint16_t h = static_cast<uint16_t>(bits);
    const float want = half_by_definition(h);
    const float got = half_to_float(h);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(got)) << bits;
    } else {
      ASSERT_EQ(std::memcmp(&want, &got, 4), 0)
          << "bits " << bits << " want " << want << " got " << got;
    }
  }
}

TEST(SafeTensors, BFloat16IsUpperHalfOfFloat) {
  EXPECT_EQ(bfloat16_to_float(0x3f80), 1.0f);
  EXPECT_EQ(bfloat16_to_float(0xc000), -2.0f);
  EXPECT_EQ(bfloat16_to_float(0x7f80), INFINITY);
  EXPECT_TRUE(std::isnan(bfloat16_to_float(0x7fc0)));
  EXPECT_EQ(bfloat16_to_float(0x0001), std::ldexp(1.0f, -133));  // smallest subnormal
}

TEST(SafeTensors, WriterRoundTripsAndProducesAlignedHuggingFaceLayout) {
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-30f, -7.0f};
  std::vector<float> b = {42.0f};
  std::vector<TensorView> tensors = {{"h.0.attn.c_attn.weight", {2, 3}, a.data()},
                                     {"ln_f.bias", {1}, b.data()},
                                     {"empty", {0, 4}, nullptr}};
  std::map<std::string, std::string> meta = {{"format", "pt"}, {"gaincell_layout", "conv1d"}};
  const auto dir = std::filesystem::temp_directory_path() / ("gc_st_" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  write_safetensors(dir / "m.safetensors", tensors, meta);
  auto bytes = read_binary_file(dir / "m.safetensors");
  EXPECT_EQ(bytes, serialize_safetensors(tensors, meta));
  // No temporary file left behind.
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir), {}), 1);
  std::filesystem::remove_all(dir);

  // Independent look at the layout: 8-byte length, JSON header padded to 8, data in order.
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
  EXPECT_EQ(n % 8, 0u);
  auto header = nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + n);
  EXPECT_EQ(header["__metadata__"]["gaincell_layout"], "conv1d");
  EXPECT_EQ(header["h.0.attn.c_attn.weight"]["data_offsets"], nlohmann::json({0, 24}));
  EXPECT_EQ(header["ln_f.bias"]["data_offsets"], nlohmann::json({24, 28}));
  EXPECT_EQ(bytes.size(), 8 + n + 28);
  float first;
  std::memcpy(&first, bytes.data() + 8 + n, 4);
  EXPECT_EQ(first, 1.5f);

  auto f = SafeTensorsFile::from_bytes(bytes, "roundtrip");
  EXPECT_EQ(f.read_f32("h.0.attn.c_attn.weight"), a);
  EXPECT_EQ(f.read_f32("ln_f.bias"), b);
  EXPECT_EQ(f.info("empty").numel(), 0);
  EXPECT_EQ(f.metadata(), meta);
}

TEST(SafeTensors, WriterRejectsDuplicatesAndLeavesNoFile) {
  std::vector<float> a = {1.0f};
  const auto path = std::filesystem::temp_directory_path() / "gc_st_dup.safetensors";
  std::filesystem::remove(path);
  expect_error(
      [&] {
        write_safetensors(path, {{"x", {1}, a.data()}, {"x", {1}, a.data()}}, {});
      },
      "duplicate tensor 'x'");
  EXPECT_FALSE(std::filesystem::exists(path));
  expect_error(
      [&] {
        write_safetensors("/nonexistent-dir/x.safetensors", {{"x", {1}, a.data()}}, {});
      },
      "cannot create");
}

TEST(SafeTensors, EveryTruncationIsAnError) {
  const auto bytes = fixture_bytes();
  for (size_t len = 0; len < bytes.size(); ++len) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + len);
    EXPECT_THROW(SafeTensorsFile::from_bytes(cut, "cut"), Error) << "length " << len;
  }
  EXPECT_NO_THROW(SafeTensorsFile::from_bytes(bytes, "whole"));
}

TEST(SafeTensors, RandomBytesAndBitFlipsNeverCrash) {
  std::mt19937 rng(7);
  for (int trial = 0; trial < 200; ++trial) {
    std::vector<uint8_t> junk(rng() % 300);
    for (auto& b : junk) b = static_cast<uint8_t>(rng());
    EXPECT_THROW(SafeTensorsFile::from_bytes(junk, "junk"), Error);
  }
  // Flipping header bytes either still parses (then every tensor must read within bounds) or
  // raises Error; ASan builds check the "within bounds".
  const auto bytes = fixture_bytes();
  for (int trial = 0; trial < 2000; ++trial) {
    auto mutated = bytes;
    mutated[rng() % 200] ^= static_cast<uint8_t>(1u << (rng() % 8));
    try {
      auto f = SafeTensorsFile::from_bytes(mutated, "flipped");
      for (const auto& t : f.tensors()) {
        if (t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16") f.read_f32(t.name);
      }
    } catch (const Error&) {
    }
  }
}

TEST(SafeTensors, HeaderProblemsAreNamed) {
  expect_error([] { SafeTensorsFile::from_bytes({1, 2, 3}, "tiny"); }, "truncated");
  expect_error([] { SafeTensorsFile::from_bytes(with_header("{not json", 0), "x"); },
               "not valid JSON");
  expect_error([] { SafeTensorsFile::from_bytes(with_header("[1,2]", 0), "x"); },
               "not a JSON object");
  std::vector<uint8_t> huge(16, 0);
  huge[6] = 1;  // header length 2^48
  expect_error([&] { SafeTensorsFile::from_bytes(huge, "x"); }, "exceeds 100 MB");
  expect_error(
      [] {
        SafeTensorsFile::from_bytes(
            with_header(R"({"w":{"dtype":"F32","shape":[3,5],"data_offsets":[0,48]}})", 48), "x");
      },
      "do not match shape [3, 5]");
  expect_error(
      [] {
        SafeTensorsFile::from_bytes(
            with_header(R"({"w":{"dtype":"Q4","shape":[2],"data_offsets":[0,8]}})", 8), "x");
      },
      "unknown dtype 'Q4'");
  expect_error(
      [] {
        SafeTensorsFile::from_bytes(
            with_header(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        12),
            "x");
      },
      "overlap");
  expect_error(
      [] {
        SafeTensorsFile::from_bytes(
            with_header(R"({"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 4), "x");
      },
      "past the end");
  expect_error(
      [] {
        SafeTensorsFile::from_bytes(
            with_header(R"({"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8), "x");
      },
      "negative dimension");
  expect_error(
      [] {
        SafeTensorsFile::from_bytes(
            with_header(R"({"w":{"dtype":"F32","shape":[1099511627776,1099511627776],)"
                        R"("data_offsets":[0,8]}})",
                        8),
            "x");
      },
      "shape too large");
  expect_error([] { SafeTensorsFile::open("/nonexistent/model.safetensors"); }, "cannot open");
}

}  // namespace
}  // namespace gaincell
