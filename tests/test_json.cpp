// The hardened JSON reader (core/json.h): depth limit, non-finite numbers, duplicate keys, checked
// integer getters, file errors that name the input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <string>

#include "gaincell/core/json.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using nlohmann::json;

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Json, ParsesOrdinaryDocuments) {
  const json j = parse_json(
      R"({"a": [1, -2, 3.5, "x", true, null], "b": {"c": 18446744073709551615}})", "doc");
  EXPECT_EQ(j["a"][0], 1);
  EXPECT_EQ(j["a"][1], -2);
  EXPECT_DOUBLE_EQ(j["a"][2].get<double>(), 3.5);
  EXPECT_EQ(j["a"][3], "x");
  EXPECT_TRUE(j["a"][5].is_null());
  EXPECT_EQ(j["b"]["c"].get<uint64_t>(), UINT64_MAX);
  EXPECT_EQ(parse_json("42", "scalar"), 42);
  // Same DOM as nlohmann's own parser.
  const std::string text = R"({"z": [[], {}, [{"k": [0.25]}]], "y": "\u00e9"})";
  EXPECT_EQ(parse_json(text, "doc"), json::parse(text));
}

TEST(Json, DeepNestingIsAnErrorNotACrash) {
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  const std::string msg = error_of([&] { parse_json(deep, "training_state.json"); });
  EXPECT_NE(msg.find("training_state.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("nesting deeper than 64"), std::string::npos) << msg;
  // Unbalanced deep input too.
  EXPECT_NE(error_of([&] { parse_json(std::string(100000, '{'), "x"); }), "(no error)");
  // The limit itself is accepted.
  const std::string ok = std::string(64, '[') + std::string(64, ']');
  EXPECT_NO_THROW(parse_json(ok, "x"));
  const std::string over = std::string(65, '[') + std::string(65, ']');
  EXPECT_THROW(parse_json(over, "x"), Error);
}

TEST(Json, NonFiniteNumbersNameFileAndPath) {
  const std::string msg =
      error_of([] { parse_json(R"({"noise": {"sigma": [0.1, 1e999]}})", "hw.json"); });
  EXPECT_NE(msg.find("hw.json"), std::string::npos) << msg;
  EXPECT_NE(msg.find("'noise.sigma[1]'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("1e999"), std::string::npos) << msg;
  EXPECT_THROW(parse_json("-1e400", "x"), Error);
  // NaN and Infinity are not JSON at all.
  EXPECT_THROW(parse_json("[NaN]", "x"), Error);
  EXPECT_THROW(parse_json("[Infinity]", "x"), Error);
}

TEST(Json, SyntaxErrorsNameSourceAndLine) {
  const std::string msg = error_of([] { parse_json("{\n  \"a\": 1,\n  \"b\": }", "cfg.json"); });
  EXPECT_NE(msg.find("cfg.json is not valid JSON"), std::string::npos) << msg;
  EXPECT_NE(msg.find("line 3"), std::string::npos) << msg;
  EXPECT_THROW(parse_json("", "x"), Error);
  EXPECT_THROW(parse_json("{} trailing", "x"), Error);
  EXPECT_THROW(parse_json("\"\xff\"", "x"), Error);  // invalid UTF-8
}

TEST(Json, DuplicateKeysAreRejected) {
  const std::string msg = error_of([] { parse_json(R"({"a": {"n": 1, "n": 2}})", "f"); });
  EXPECT_NE(msg.find("duplicate key 'n' in 'a'"), std::string::npos) << msg;
}

TEST(Json, OrderedVariantKeepsTheOrderWithTheSameChecks) {
  const nlohmann::ordered_json j = parse_ordered_json(R"({"z": 1, "a": {"y": 2, "b": 3}})", "s");
  std::string keys;
  for (auto it = j.begin(); it != j.end(); ++it) keys += it.key();
  for (auto it = j["a"].begin(); it != j["a"].end(); ++it) keys += it.key();
  EXPECT_EQ(keys, "zayb");
  EXPECT_EQ(j.dump(), R"({"z":1,"a":{"y":2,"b":3}})");
  const std::string deep = std::string(100000, '[') + std::string(100000, ']');
  std::string msg = error_of([&] { parse_ordered_json(deep, "sweep file"); });
  EXPECT_NE(msg.find("sweep file: nesting deeper than 64"), std::string::npos) << msg;
  msg = error_of([] { parse_ordered_json(R"({"axes": {"noise.sigma": [1e999]}})", "s"); });
  EXPECT_NE(msg.find("'axes.noise.sigma[0]'"), std::string::npos) << msg;
  EXPECT_NE(msg.find("numbers must be finite"), std::string::npos) << msg;
  msg = error_of([] { parse_ordered_json(R"({"a": 1, "a": 2})", "s"); });
  EXPECT_NE(msg.find("duplicate key 'a'"), std::string::npos) << msg;
  // 64-bit integers arrive exact (the checked getters decide whether they fit).
  const auto big = parse_ordered_json(R"([4294967312, -9223372036854775808])", "s");
  EXPECT_EQ(big[0].get<uint64_t>(), 4294967312u);
  EXPECT_EQ(big[1].get<int64_t>(), INT64_MIN);
  msg = error_of([&] { json_int<int32_t>(nlohmann::json(big[0]), "levels"); });
  EXPECT_NE(msg.find("levels = 4294967312 is out of range"), std::string::npos) << msg;
}

TEST(Json, CheckedIntegersRejectWhatDoesNotFit) {
  // The issue's cases: 4294967312 into a 32-bit field used to become 16; -1 into a 64-bit
  // unsigned seed used to become 2^64-1.
  const json big = parse_json("4294967312", "x");
  const std::string msg = error_of([&] { json_int<int>(big, "'quantization.q.levels'"); });
  EXPECT_NE(msg.find("'quantization.q.levels' = 4294967312 is out of range"), std::string::npos)
      << msg;
  EXPECT_EQ(json_int<int64_t>(big, "x"), 4294967312LL);
  const json minus_one = parse_json("-1", "x");
  const std::string neg = error_of([&] { json_int<uint64_t>(minus_one, "'noise.seed'"); });
  EXPECT_NE(neg.find("must not be negative"), std::string::npos) << neg;
  EXPECT_EQ(json_int<int>(minus_one, "x"), -1);
  // 2^64-1 does not fit int64 (nlohmann's get<int64_t> would give -1).
  EXPECT_THROW(json_int<int64_t>(parse_json("18446744073709551615", "x"), "x"), Error);
  EXPECT_EQ(json_int<uint64_t>(parse_json("18446744073709551615", "x"), "x"), UINT64_MAX);
  // Limits of each type.
  EXPECT_EQ(json_int<int32_t>(json(INT32_MAX), "x"), INT32_MAX);
  EXPECT_EQ(json_int<int32_t>(json(INT32_MIN), "x"), INT32_MIN);
  EXPECT_THROW(json_int<int32_t>(json(int64_t{INT32_MAX} + 1), "x"), Error);
  EXPECT_THROW(json_int<int32_t>(json(int64_t{INT32_MIN} - 1), "x"), Error);
  EXPECT_THROW(json_int<uint8_t>(json(256), "x"), Error);
  // Not integers.
  EXPECT_THROW(json_int<int>(json(3.0), "x"), Error);
  EXPECT_THROW(json_int<int>(json("3"), "x"), Error);
  EXPECT_THROW(json_int<int>(json(true), "x"), Error);
  EXPECT_THROW(json_int<int>(parse_json("100000000000000000000", "x"), "x"), Error);
  // Bounded.
  EXPECT_EQ(json_int<int>(json(5), "x", 1, 10), 5);
  const std::string bounded = error_of([] { json_int<int>(json(0), "'n_layer'", 1, 10); });
  EXPECT_NE(bounded.find("'n_layer' = 0 is out of range (allowed: 1 to 10)"), std::string::npos)
      << bounded;
}

TEST(Json, OtherCheckedGetters) {
  EXPECT_DOUBLE_EQ(json_number(json(2), "x"), 2.0);
  EXPECT_THROW(json_number(json("2"), "x"), Error);
  EXPECT_THROW(json_float(json(1e300), "eps"), Error);
  EXPECT_FLOAT_EQ(json_float(json(1e-5), "eps"), 1e-5f);
  EXPECT_EQ(json_string(json("a"), "x"), "a");
  EXPECT_THROW(json_string(json(1), "x"), Error);
  EXPECT_TRUE(json_bool(json(true), "x"));
  EXPECT_THROW(json_bool(json(1), "x"), Error);
  const json obj = {{"n", 3}};
  EXPECT_EQ(json_int_or<int>(obj, "n", 7, "cfg"), 3);
  EXPECT_EQ(json_int_or<int>(obj, "m", 7, "cfg"), 7);
}

// A string field read with a fallback: absent -> fallback, a string -> itself, anything else ->
// an error naming the field (nlohmann's value() threw its type_error: "internal error" in the
// CLI; the device_file fuzz target found one such reader).
TEST(Json, StringWithFallbackRejectsOtherTypes) {
  const json state = {{"format", "gaincell-training-state"}, {"kind", json::array({1})}};
  EXPECT_EQ(json_string_or(state, "format", "", "state.json"), "gaincell-training-state");
  EXPECT_EQ(json_string_or(state, "missing", "fb", "state.json"), "fb");
  EXPECT_EQ(json_string_or(json::array(), "format", "fb", "state.json"), "fb");
  try {
    json_string_or(state, "kind", "", "state.json");
    FAIL() << "a non-string field was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("state.json: 'kind'"), std::string::npos) << e.what();
  }
}

TEST(Json, FileErrorsNameThePath) {
  const fs::path dir = fs::temp_directory_path() / ("gaincell_json_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  // A symlink loop.
  fs::create_symlink(dir / "b", dir / "a");
  fs::create_symlink(dir / "a", dir / "b");
  std::string msg = error_of([&] { read_json_file(dir / "a"); });
  EXPECT_NE(msg.find((dir / "a").string()), std::string::npos) << msg;
  // Missing, a directory, too large.
  msg = error_of([&] { read_json_file(dir / "missing.json"); });
  EXPECT_NE(msg.find("missing.json"), std::string::npos) << msg;
  msg = error_of([&] { read_json_file(dir); });
  EXPECT_NE(msg.find("is a directory"), std::string::npos) << msg;
  { std::ofstream(dir / "big.json") << "[" << std::string(100, ' ') << "]"; }
  msg = error_of([&] { read_json_file(dir / "big.json", JsonLimits{64, 50}); });
  EXPECT_NE(msg.find("more than the 50"), std::string::npos) << msg;
  EXPECT_EQ(read_json_file(dir / "big.json"), json::array());
  fs::remove_all(dir);
}

}  // namespace
}  // namespace gaincell
