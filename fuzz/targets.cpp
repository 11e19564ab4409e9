#include "targets.h"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "cli/app.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/core/json.h"
#include "gaincell/core/npy.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/model/data.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/hf_tokenizer.h"
#include "gaincell/model/safetensors.h"
#include "gaincell/model/tokenizer.h"
#include "gaincell/tools/cost/cost_config.h"
#include "gaincell/tools/eval/task.h"
#include "gaincell/tools/eval/token_file.h"
#include "gaincell/tools/fit/device.h"
#include "gaincell/tools/fit/iv_table.h"
#include "gaincell/tools/sweep/sweep_spec.h"
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

// The sweep file: parsing validates every point's hardware. What parses also round-trips through
// the resolved form written to OUT/sweep.json (which --resume and the workers read back).
void fuzz_sweep_file(const uint8_t* data, size_t size) {
  expect_clean([&] {
    const fs::path dir = "/nonexistent-fuzz-dir";
    const sweep::SweepSpec spec = sweep::SweepSpec::parse(std::string(text_of(data, size)), dir);
    const std::string resolved = spec.to_json().dump();
    check(sweep::SweepSpec::parse(resolved, dir).to_json().dump() == resolved,
          "sweep file round trip");
  });
}

// A per-process scratch directory, removed at exit: the evaluation and tokenizer readers take
// file paths.
class ScratchDir {
 public:
  ScratchDir()
      : path_(fs::temp_directory_path() / ("gaincell_fuzz_" + std::to_string(::getpid()))) {
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

const fs::path& scratch_dir() {
  static const ScratchDir dir;
  return dir.path();
}

// Writes `text` up to the first NUL byte to `main`, and what follows it (if any) to `side`
// (removed when there is no NUL): one input drives a file and the file read beside it.
void write_split(std::string_view text, const fs::path& main, const fs::path& side) {
  const size_t nul = text.find('\0');
  write_file_atomic(main, text.substr(0, nul).data(), std::min(nul, text.size()));
  std::error_code ec;
  fs::remove(side, ec);
  if (nul != std::string_view::npos)
    write_file_atomic(side, text.data() + nul + 1, text.size() - nul - 1);
}

// Every evaluation data format: the first byte picks the reader (the tasks' JSON lines, the raw
// wikitext file, PIQA's labels file after a NUL byte, the --tokens file as JSON, uint16 or uint32).
void fuzz_eval_data(const uint8_t* data, size_t size) {
  if (size == 0) return;
  static const char* const kTasks[] = {"wikitext",   "wikitext", "lambada_openai",
                                       "hellaswag",  "piqa",     "arc_easy",
                                       "winogrande", "",         ""};
  constexpr int kFormats = sizeof kTasks / sizeof kTasks[0];
  const int format = data[0] % kFormats;
  const std::string_view text = text_of(data + 1, size - 1);
  const fs::path& dir = scratch_dir();
  if (format >= 7) {  // the --tokens file of perplexity and eval
    const fs::path file = dir / "tokens.bin";
    write_file_atomic(file, text.data(), text.size());
    expect_clean([&] {
      const auto kind = format == 7 ? eval::TokenFileFormat::kAuto : eval::TokenFileFormat::kUint32;
      for (int32_t id : eval::read_token_file(file, kind, 50257))
        check(id >= 0 && id < 50257, "token file id in range");
    });
    return;
  }
  // The raw wikitext reader is chosen by the file name (not .jsonl/.json).
  const fs::path file = dir / (format == 1 ? "wiki.test.raw" : "data.jsonl");
  write_split(text, file, dir / "data-labels.lst");
  expect_clean([&] {
    const eval::TaskInfo& task = eval::task_info(kTasks[format]);
    for (const eval::EvalDoc& doc : eval::load_task_docs(task, file, 64)) {
      check(!doc.requests.empty(), "a document makes a request");
      if (task.type == eval::OutputType::kMultipleChoice) {
        check(doc.gold >= 0 && doc.gold < static_cast<int>(doc.choices.size()), "gold in range");
        check(doc.requests.size() == doc.choices.size(), "one request per choice");
      }
    }
  });
}

// A Hugging Face tokenizer.json (tokenizer_config.json after a NUL byte): loading either fails
// with an error or gives a tokenizer whose ids are in range on a fixed text.
void fuzz_tokenizer_json(const uint8_t* data, size_t size) {
  const fs::path dir = scratch_dir() / "hf";
  fs::create_directories(dir);
  write_split(text_of(data, size), dir / "tokenizer.json", dir / "tokenizer_config.json");
  expect_clean([&] {
    const auto tok = HfTokenizer::load(dir / "tokenizer.json");
    const std::string sample = "Hello world, it's 2025!\n\t  caf\xc3\xa9 \xf0\x9f\x99\x82 x";
    for (const auto& ids : {tok->encode(sample), tok->encode_with_special_tokens(sample)}) {
      for (int32_t id : ids) check(id >= 0 && id < tok->vocab_size(), "HF id in range");
      tok->decode(ids);
    }
    std::vector<int32_t> first;
    for (int32_t id = 0; id < std::min<int32_t>(tok->vocab_size(), 64); ++id) first.push_back(id);
    tok->decode(first);
  });
}

// The command line: arguments separated by newlines, parsed by the executable's own CLI11 app
// without running the command, then checked by the command's own validation (cli/app.h
// validate_without_running: option values, the configuration files the options name; paths are
// relative to the checkout, where the fuzzers and the replay test run).
void fuzz_cli_args(const uint8_t* data, size_t size) {
  std::vector<std::string> args;
  const std::string_view text = text_of(data, size);
  size_t start = 0;
  while (start <= text.size() && args.size() < 64) {
    const size_t nl = std::min(text.find('\n', start), text.size());
    args.emplace_back(text.substr(start, nl - start));
    start = nl + 1;
  }
  expect_clean([&] {
    const int code = cli::validate_without_running(args);
    check(code == 0 || code == 1 || code == 2, "CLI exit status");
  });
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
      {"sweep_file", fuzz_sweep_file},
      {"eval_data", fuzz_eval_data},
      {"tokenizer_json", fuzz_tokenizer_json},
      {"cli_args", fuzz_cli_args},
  };
  return all;
}

const Target* find_target(const std::string& name) {
  for (const Target& t : targets())
    if (name == t.name) return &t;
  return nullptr;
}

}  // namespace gaincell::fuzz
