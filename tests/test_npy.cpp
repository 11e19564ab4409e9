// .npy/.npz reader and writer: fixtures written by NumPy itself (tests/reference/
// make_npy_fixtures.py), round trips, and every kind of malformed input.
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <string>
#include <vector>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/npy.h"
#include "test_util.h"

using namespace gaincell;
namespace fs = std::filesystem;

namespace {

using test_util::expect_error;

fs::path fixture(const std::string& name) {
  return test_util::fixture_path(name);
}

fs::path temp_path(const std::string& name) {
  return fs::temp_directory_path() / ("gaincell_test_npy_" + std::to_string(::getpid()) + name);
}

}  // namespace

TEST(Npz, ReadsEveryDtypeWrittenByNumpy) {
  const auto npz = read_npz(fixture("npy_dtypes.npz"));
  const NpyArray& f4 = npz.at("f4");
  EXPECT_EQ(f4.descr, "<f4");
  EXPECT_EQ(f4.shape, (std::vector<int64_t>{2, 3, 4}));
  const auto f4v = f4.to_float();
  ASSERT_EQ(f4v.size(), 24u);
  for (int i = 0; i < 24; ++i) EXPECT_EQ(f4v[i], i * 0.5f - 3.0f);
  const auto f8v = npz.at("f8").to_double();
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f8v[i], i * 0.5 - 3.0);
  for (const char* name : {"i1", "i2", "i4", "i8"}) {
    const auto v = npz.at(name).to_double();
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], double(i) - 3.0) << name;
  }
  EXPECT_EQ(npz.at("i1").shape, (std::vector<int64_t>{3, 2}));
  for (const char* name : {"u1", "u2"}) {
    const auto v = npz.at(name).to_double();
    for (size_t i = 0; i < v.size(); ++i) EXPECT_EQ(v[i], double(i)) << name;
  }
  const auto b = npz.at("b1").to_float();
  for (size_t i = 0; i < b.size(); ++i) EXPECT_EQ(b[i], i % 3 == 0 ? 1.0f : 0.0f);
  EXPECT_TRUE(npz.at("scalar").shape.empty());
  EXPECT_EQ(npz.at("scalar").to_float().at(0), 2.5f);
  EXPECT_EQ(npz.at("empty").shape, (std::vector<int64_t>{0, 3}));
  EXPECT_EQ(npz.at("empty").numel(), 0);
}

TEST(Npy, ReadsVersion2) {
  const NpyArray a = read_npy(fixture("npy_v2.npy"));
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3, 4}));
  EXPECT_EQ(a.to_float()[5], 5 * 0.5f - 3.0f);
}

TEST(Npy, RejectsUnsupportedLayouts) {
  expect_error([] { read_npy(fixture("npy_fortran.npy")); }, "Fortran");
  expect_error([] { read_npy(fixture("npy_bigendian.npy")); }, "big-endian");
  expect_error([] { read_npz(fixture("npy_compressed.npz")); }, "compressed");
  expect_error([] { read_npy(fixture("does_not_exist.npy")); }, "does_not_exist.npy");
}

TEST(Npy, RoundTripThroughWriter) {
  const std::vector<float> values = {1.0f, -2.5f, 3.25f, 0.0f, 1e-30f, 7.0f};
  const auto path = temp_path("a.npy");
  write_npy(path, values, {2, 3});
  const NpyArray a = read_npy(path);
  EXPECT_EQ(a.shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(a.to_float(), values);
  fs::remove(path);

  const auto npz_path = temp_path("b.npz");
  write_npz(npz_path, {{"S", values, {6}}, {"phi", {0.5f}, {}}});
  const auto npz = read_npz(npz_path);
  EXPECT_EQ(npz.at("S").to_float(), values);
  EXPECT_EQ(npz.at("S").shape, (std::vector<int64_t>{6}));
  EXPECT_TRUE(npz.at("phi").shape.empty());
  fs::remove(npz_path);
  expect_error([&] { write_npy(path, values, {4}); }, "shape");
}

TEST(Npy, MalformedImagesGiveClearErrors) {
  const std::vector<uint8_t> good = npy_bytes(std::vector<float>{1, 2, 3, 4}, {4});
  auto parse = [](std::vector<uint8_t> bytes) { return parse_npy(bytes, "x.npy"); };
  expect_error([&] { parse({'n', 'o', 't'}); }, "bad magic");
  {
    auto b = good;
    b.resize(b.size() - 3);
    expect_error([&] { parse(b); }, "truncated .npy data");
  }
  {
    auto b = good;
    b.push_back(0);
    expect_error([&] { parse(b); }, "trailing");
  }
  {
    auto b = good;
    b.resize(20);
    expect_error([&] { parse(b); }, "truncated .npy header");
  }
  auto with_header = [&](const std::string& header) {
    const uint8_t prefix[10] = {
        0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, static_cast<uint8_t>(header.size()), 0};
    // Sized once and filled (an insert after the 10-byte list trips a GCC 12 -Warray-bounds
    // false positive).
    std::vector<uint8_t> b(sizeof prefix + header.size());
    std::copy(std::begin(prefix), std::end(prefix), b.begin());
    std::copy(header.begin(), header.end(), b.begin() + sizeof prefix);
    return b;
  };
  expect_error(
      [&] { parse(with_header("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }")); },
      "unsupported .npy dtype");
  expect_error([&] { parse(with_header("{'descr': '<f4', 'fortran_order': False, }")); },
               "no 'shape'");
  expect_error(
      [&] { parse(with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }")); },
      "not a valid dimension");
  {
    auto b = good;
    b[6] = 9;
    expect_error([&] { parse(b); }, "version 9");
  }
}

TEST(Npz, CorruptArchivesGiveClearErrors) {
  const auto path = temp_path("c.npz");
  write_npz(path, {{"A", {1, 2, 3}, {3}}});
  std::vector<uint8_t> bytes = read_binary_file(path);
  fs::remove(path);
  {
    auto b = bytes;
    b[60] ^= 0xff;  // inside the member's data: CRC mismatch
    expect_error([&] { parse_npz(b, "c.npz"); }, "CRC-32");
  }
  {
    auto b = bytes;
    b.resize(b.size() - 10);  // end record cut
    expect_error([&] { parse_npz(b, "c.npz"); }, "c.npz");
  }
  {
    std::vector<uint8_t> b(bytes.begin() + 30, bytes.end());  // local header gone
    expect_error([&] { parse_npz(b, "c.npz"); }, "c.npz");
  }
  expect_error([&] { parse_npz(std::vector<uint8_t>(100, 0), "zeros.npz"); }, "not a zip");
}
