#include "targets.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/core/npy.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/model/data.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/safetensors.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/cost/cost_config.h"
#include "gaincell/tools/fit/device.h"
#include "gaincell/tools/fit/iv_table.h"
#include "gaincell/train/trainer.h"

namespace gaincell::fuzz {

namespace {

namespace fs = std::filesystem;

std::string_view text_of(const uint8_t* data, size_t size) {
  return {reinterpret_cast<const char*>(data), size};
}

// A property violation is a bug like a crash: abort so libFuzzer keeps the input.
void check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz property violated: %s\n", what);
    std::abort();
  }
}

// Runs `parse`; gaincell::Error is the expected answer to bad input and is swallowed. Anything
// else (std::out_of_range, nlohmann exceptions, bad_alloc, ...) escapes and is a finding.
template <typename F>
void expect_clean(F&& parse) {
  try {
    parse();
  } catch (const Error&) {
  }
}

// Inputs are parsed as JSON first: the JSON-shaped formats take the same bytes.
nlohmann::json json_or_skip(const uint8_t* data, size_t size) {
  return parse_json(text_of(data, size), "fuzz input");
}

void walk_numbers(const nlohmann::json& j) {
  // The checked getters on every number: each either converts or throws Error.
  if (j.is_number()) {
    expect_clean([&] { json_int<int32_t>(j, "x"); });
    expect_clean([&] { json_int<uint64_t>(j, "x"); });
    expect_clean([&] { json_int<int64_t>(j, "x"); });
    expect_clean([&] { json_float(j, "x"); });
    expect_clean([&] { json_number(j, "x"); });
  } else if (j.is_structured()) {
    for (const auto& v : j) walk_numbers(v);  // depth <= 64 (parse_json's limit)
  }
}

void fuzz_json(const uint8_t* data, size_t size) {
  expect_clean([&] {
    const nlohmann::json j = json_or_skip(data, size);
    walk_numbers(j);
    // What was parsed prints and parses back to the same value.
    check(parse_json(j.dump(), "dump") == j, "json dump round trip");
  });
}

void fuzz_safetensors(const uint8_t* data, size_t size) {
  expect_clean([&] {
    const SafeTensorsFile f =
        SafeTensorsFile::from_bytes(std::vector<uint8_t>(data, data + size), "fuzz.safetensors");
    for (const auto& t : f.tensors()) {
      if (t.numel() > (1 << 20)) continue;
      std::vector<float> out(static_cast<size_t>(t.numel()));
      f.read_f32(t.name, out.data());
    }
  });
}

void fuzz_model_config(const uint8_t* data, size_t size) {
  expect_clean([&] {
    const GPT2Config c = GPT2Config::from_json(json_or_skip(data, size));
    // A config that loads round-trips through its JSON form.
    check(GPT2Config::from_json(c.to_json()).to_json() == c.to_json(), "config round trip");
  });
}

void fuzz_hw_config(const uint8_t* data, size_t size) {
  expect_clean([&] {
    const HwConfig hw = HwConfig::from_json(json_or_skip(data, size), "/nonexistent-fuzz-dir");
    hw.validate();
  });
}

void fuzz_device_file(const uint8_t* data, size_t size) {
  expect_clean([&] { fit::DeviceModel::from_json(json_or_skip(data, size)); });
}

void fuzz_train_options(const uint8_t* data, size_t size) {
  expect_clean([&] { TrainOptions::from_json(json_or_skip(data, size)); });
}

void fuzz_cost_config(const uint8_t* data, size_t size) {
  expect_clean([&] { cost::CostConfig::from_json(json_or_skip(data, size), "fuzz"); });
}

void fuzz_npy(const uint8_t* data, size_t size) {
  expect_clean([&] {
    const NpyArray a = parse_npy({data, size}, "fuzz.npy");
    if (a.numel() <= (1 << 20)) a.to_double();
  });
}

void fuzz_npz(const uint8_t* data, size_t size) {
  expect_clean([&] {
    for (const auto& [name, a] : parse_npz({data, size}, "fuzz.npz"))
      if (a.numel() <= (1 << 20)) a.to_float();
  });
}

void fuzz_iv_csv(const uint8_t* data, size_t size) {
  expect_clean([&] { fit::parse_iv_table(std::string(text_of(data, size)), "fuzz.csv"); });
}

// Token files are memory-mapped from disk: the input goes through a per-process file.
void fuzz_token_file(const uint8_t* data, size_t size) {
  static const fs::path path =
      fs::temp_directory_path() / ("gaincell_fuzz_tokens_" + std::to_string(::getpid()) + ".bin");
  write_file_atomic(path, data, size);
  expect_clean([&] {
    const TokenDataset d = TokenDataset::open(path, 50257);
    if (d.size() >= 9) {
      BatchSampler s(d, 2, 4, 1);
      int32_t x[8], y[8];
      s.next(x, y);
      for (int i = 0; i < 8; ++i) check(x[i] >= 0 && x[i] < 50257, "token in range");
    }
  });
  expect_clean([&] { TokenDataset::open(path, 300); });  // a small vocabulary rejects more
}

const Tokenizer* gpt2_tokenizer() {
  static const std::optional<Tokenizer> tok = []() -> std::optional<Tokenizer> {
    try {
      return Tokenizer::load_default();
    } catch (const Error&) {
      return std::nullopt;  // no data/vocab: the byte tokenizer is still fuzzed
    }
  }();
  return tok ? &*tok : nullptr;
}

void fuzz_tokenizer_encode(const uint8_t* data, size_t size) {
  const std::string_view text = text_of(data, size);
  static const Tokenizer bytes = Tokenizer::bytes();
  check(bytes.decode(bytes.encode(text)) == text, "byte tokenizer round trip");
  if (const Tokenizer* tok = gpt2_tokenizer()) {
    const std::vector<int32_t> ids = tok->encode(text);
    for (int32_t id : ids) check(id >= 0 && id < tok->vocab_size(), "GPT-2 id in range");
    check(tok->decode(ids) == text, "GPT-2 tokenizer round trip");
  }
}

void fuzz_tokenizer_decode(const uint8_t* data, size_t size) {
  std::vector<int32_t> ids(size / 4);
  for (size_t i = 0; i < ids.size(); ++i)
    ids[i] =
        static_cast<int32_t>(uint32_t{data[4 * i]} | uint32_t{data[4 * i + 1]} << 8 |
                             uint32_t{data[4 * i + 2]} << 16 | uint32_t{data[4 * i + 3]} << 24);
  static const Tokenizer bytes = Tokenizer::bytes();
  expect_clean([&] { bytes.decode(ids); });
  if (const Tokenizer* tok = gpt2_tokenizer()) expect_clean([&] { tok->decode(ids); });
}

}  // namespace

const std::vector<Target>& targets() {
  static const std::vector<Target> all = {
      {"json", fuzz_json},
      {"safetensors", fuzz_safetensors},
      {"model_config", fuzz_model_config},
      {"hw_config", fuzz_hw_config},
      {"device_file", fuzz_device_file},
      {"train_options", fuzz_train_options},
      {"cost_config", fuzz_cost_config},
      {"npy", fuzz_npy},
      {"npz", fuzz_npz},
      {"iv_csv", fuzz_iv_csv},
      {"token_file", fuzz_token_file},
      {"tokenizer_encode", fuzz_tokenizer_encode},
      {"tokenizer_decode", fuzz_tokenizer_decode},
  };
  return all;
}

const Target* find_target(const std::string& name) {
  for (const Target& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace gaincell::fuzz
