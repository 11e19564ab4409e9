// Loading straight into reduced-precision weights (issue 14 item 3, last sentence): a model whose
// safetensors hold F32, F16 or BF16 data, loaded with weights bf16 or q8, fills its packed
// matrices from the file without an fp32 copy of them (GPT2Model::begin_packed_load). Checked
// against the other path (load as f32, then set_weight_format): the logits of a whole-sequence
// forward, of token-by-token decode and of prefill + extend are bit-identical, for GPT-2 (Conv1D
// and nn.Linear files) and the Llama family (untied and tied head); everything that would read the
// absent fp32 matrices throws; the model reports its fp32 bytes without them, and the process's
// anonymous memory grows by far less than the fp32 size of the model.
#include <gtest/gtest.h>

#include <bit>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <string>
#include <vector>

#include "gaincell/core/bf16.h"
#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/model/safetensors.h"
#include "test_util.h"

using namespace gaincell;
using gaincell::test_util::expect_error;
using gaincell::test_util::random_tokens;
using gaincell::test_util::TempDir;
namespace fs = std::filesystem;

namespace {

// IEEE half bits of x (round to nearest; magnitudes below half's normal range flush to zero,
// which random test weights do not mind: the file's bits are what both load paths read).
uint16_t half_bits(float x) {
  const uint16_t sign = std::signbit(x) ? 0x8000 : 0;
  const float a = std::fabs(x);
  if (a < 0x1p-14f) return sign;
  int e = 0;
  const float m = std::frexp(a, &e);  // a = m 2^e, m in [0.5, 1)
  int mant = static_cast<int>(std::nearbyint((2.0f * m - 1.0f) * 1024.0f));
  int exp = e - 1 + 15;
  if (mant == 1024) {
    mant = 0;
    ++exp;
  }
  return static_cast<uint16_t>(sign | (exp << 10) | mant);
}

// Builds a safetensors file of `dtype` ("F32", "F16", "BF16"): each tensor's fp32 values are
// rounded to the dtype. `layout` goes to the metadata gaincell_layout.
struct TensorData {
  std::string name;
  std::vector<int64_t> shape;
  std::vector<float> values;
};

void write_safetensors_as(const fs::path& path, const std::vector<TensorData>& tensors,
                          const std::string& dtype, const std::string& layout) {
  const size_t width = dtype == "F32" ? 4 : 2;
  nlohmann::json header;
  header["__metadata__"] = {{"format", "pt"}, {"gaincell_layout", layout}};
  std::string data;
  for (const TensorData& t : tensors) {
    const size_t begin = data.size();
    for (float v : t.values) {
      if (dtype == "F32") {
        data.append(reinterpret_cast<const char*>(&v), 4);
      } else {
        const uint16_t bits = dtype == "F16" ? half_bits(v) : float_to_bf16_bits(v);
        data.append(reinterpret_cast<const char*>(&bits), 2);
      }
    }
    header[t.name] = {{"dtype", dtype},
                      {"shape", t.shape},
                      {"data_offsets", {begin, begin + t.values.size() * width}}};
  }
  const std::string h = header.dump();
  const uint64_t n = h.size();
  std::string bytes(reinterpret_cast<const char*>(&n), 8);
  write_file_atomic(path, bytes + h + data);
}

// A model directory of `config` with random weights (norm weights near 1, everything else
// N(0, std)) stored as `dtype`. nn_linear: GPT-2's four projections stored [out, in] (nanoGPT).
void write_model_dir(const fs::path& dir, const GPT2Config& config, const std::string& dtype,
                     bool nn_linear = false, uint64_t seed = 1, float std = 0.08f) {
  GPT2Model shapes(config);
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, std);
  std::vector<TensorData> tensors;
  for (const ParamInfo& p : shapes.params()) {
    TensorData t{p.name, p.shape, std::vector<float>(p.numel)};
    const bool norm = p.shape.size() == 1 && p.name.find("bias") == std::string::npos;
    for (float& v : t.values) v = (norm ? 1.0f : 0.0f) + normal(rng);
    const bool projection = config.is_gpt2() && p.shape.size() == 2 && p.name.starts_with("h.");
    if (nn_linear && projection) {  // [in, out] -> [out, in]
      const int64_t in = p.shape[0], out = p.shape[1];
      std::vector<float> tr(t.values.size());
      for (int64_t r = 0; r < in; ++r)
        for (int64_t c = 0; c < out; ++c) tr[c * in + r] = t.values[r * out + c];
      t.values = tr;
      t.shape = {out, in};
    }
    tensors.push_back(std::move(t));
  }
  fs::create_directories(dir);
  write_safetensors_as(dir / "model.safetensors", tensors, dtype, nn_linear ? "linear" : "conv1d");
  write_file_atomic(dir / "config.json", config.to_json().dump(2));
}

GPT2Config gpt2_config() {
  GPT2Config c = GPT2Config::named("tiny");
  c.n_embd = 48;  // rows of 48 inputs: a full and a partial q8 block of 32
  c.n_head = 4;
  c.vocab_size = 97;
  return c;
}

GPT2Config llama_config(bool tied) {
  GPT2Config c = GPT2Config::named("llama-tiny");
  c.tie_word_embeddings = tied;
  c.qkv_bias = c.o_bias = tied;  // attention biases (Llama attention_bias) in one of the two
  return c;
}

struct Family {
  std::string name;
  GPT2Config config;
  bool nn_linear = false;
};

std::vector<Family> families() {
  return {{"gpt2", gpt2_config()},
          {"gpt2-nn-linear", gpt2_config(), true},
          {"llama", llama_config(false)},
          {"llama-tied", llama_config(true)}};
}

LoadModelOptions options(WeightFormat weights, bool allow_nonfinite = false) {
  LoadModelOptions o;
  o.weights = weights;
  o.allow_nonfinite = allow_nonfinite;
  return o;
}

// The logits of a whole-sequence forward, then (with decode) of token-by-token decode and of
// prefill + extend.
std::vector<float> inference_logits(GPT2Model& m, const std::vector<int32_t>& x,
                                    bool decode = true) {
  const int T = static_cast<int>(x.size()), V = m.config().vocab_size;
  m.forward(x.data(), nullptr, 1, T);
  std::vector<float> out(m.logits(), m.logits() + static_cast<size_t>(T) * V);
  if (!decode) return out;
  auto session = m.start_decoding();
  for (int32_t t : x) {
    const float* step = session->step(t);
    out.insert(out.end(), step, step + V);
  }
  auto prefilled = m.start_decoding();
  const int half = T / 2;
  const float* last = prefilled->prefill(x.data(), half);
  out.insert(out.end(), last, last + V);
  const float* rest = prefilled->extend(x.data() + half, T - half);
  out.insert(out.end(), rest, rest + static_cast<size_t>(T - half) * V);
  return out;
}

// Floats of the matrices held packed (independent of the model's own bookkeeping): per layer the
// attention projections and the MLP, plus an untied LM head.
size_t packed_matrix_floats(const GPT2Config& c) {
  const size_t C = c.n_embd, H = c.n_head, Hkv = c.kv_heads(), D = c.head_dim(), I = c.mlp_width();
  const size_t per_layer = c.is_gpt2() ? 12 * C * C : (H + 2 * Hkv) * D * C + C * H * D + 3 * I * C;
  return c.n_layer * per_layer + (c.tie_word_embeddings ? 0 : size_t(c.vocab_size) * C);
}

// RssAnon of this process in bytes (/proc/self/status); -1 when unavailable.
int64_t rss_anon_bytes() {
  std::ifstream f("/proc/self/status");
  std::string line;
  while (std::getline(f, line)) {
    if (line.rfind("RssAnon:", 0) == 0) return std::stoll(line.substr(8)) * 1024;  // kB
  }
  return -1;
}

}  // namespace

// The acceptance check: both paths give the same packed matrices, so every inference product is
// bit-identical, for each file dtype, format and family.
TEST(PackedLoad, LogitsEqualLoadThenPackForEveryDtypeFormatAndFamily) {
  for (const Family& family : families()) {
    for (const std::string dtype : {"BF16", "F16", "F32"}) {
      TempDir dir;
      write_model_dir(dir.path(), family.config, dtype, family.nn_linear);
      const auto x = random_tokens(8, family.config.vocab_size, 3);
      for (WeightFormat f : {WeightFormat::kBF16, WeightFormat::kQ8}) {
        SCOPED_TRACE(family.name + " " + dtype + " " + to_string(f));
        auto direct = load_model(dir.path(), options(f));
        auto reference = load_model(dir.path());
        reference->set_weight_format(f);
        ASSERT_FALSE(direct->has_fp32_weights());
        ASSERT_TRUE(reference->has_fp32_weights());
        EXPECT_EQ(direct->weight_format(), f);
        EXPECT_EQ(direct->packed_weight_bytes(), reference->packed_weight_bytes());
        const std::vector<float> got = inference_logits(*direct, x);
        const std::vector<float> want = inference_logits(*reference, x);
        ASSERT_EQ(got.size(), want.size());
        size_t differing = 0;
        for (size_t i = 0; i < got.size(); ++i)
          differing += std::bit_cast<uint32_t>(got[i]) != std::bit_cast<uint32_t>(want[i]);
        EXPECT_EQ(differing, 0u) << "of " << got.size() << " logits";
        // Packed weights were used: bf16/q8 logits differ from fp32 ones.
        if (dtype != "BF16" || f == WeightFormat::kQ8) {
          auto fp32 = load_model(dir.path());
          const std::vector<float> whole(got.begin(),
                                         got.begin() + x.size() * fp32->config().vocab_size);
          EXPECT_NE(inference_logits(*fp32, x, /*decode=*/false), whole)
              << "the packed weights were not used";
        }
      }
    }
  }
}

TEST(PackedLoad, ReportsFp32BytesWithoutThePackedMatrices) {
  for (const Family& family : families()) {
    SCOPED_TRACE(family.name);
    TempDir dir;
    write_model_dir(dir.path(), family.config, "BF16", family.nn_linear);
    auto full = load_model(dir.path());
    EXPECT_EQ(full->fp32_param_bytes(), full->num_params() * sizeof(float));
    auto packed = load_model(dir.path(), options(WeightFormat::kQ8));
    EXPECT_EQ(packed->fp32_param_bytes(),
              (packed->num_params() - packed_matrix_floats(family.config)) * sizeof(float));
  }
}

TEST(PackedLoad, EverythingThatReadsTheAbsentFp32MatricesThrows) {
  TempDir dir;
  const GPT2Config config = gpt2_config();
  write_model_dir(dir.path() / "model", config, "BF16");
  auto m = load_model(dir.path() / "model", options(WeightFormat::kBF16));
  const auto x = random_tokens(8, config.vocab_size, 5);
  const std::string needle = "loaded with bf16 weights and no fp32 copy";
  expect_error([&] { m->forward(x.data(), x.data(), 1, 8, /*training=*/true); }, needle);
  expect_error([&] { m->backward(); }, "backward()");
  expect_error([&] { m->init_random(1); }, needle);
  expect_error([&] { m->set_weight_format(WeightFormat::kF32); }, needle);
  expect_error([&] { m->set_weight_format(WeightFormat::kQ8); }, needle);
  expect_error([&] { save_model(*m, dir.path() / "saved"); }, needle);
  expect_error([&] { save_weights(*m, dir.path() / "w.safetensors"); }, needle);
  EXPECT_FALSE(fs::exists(dir.path() / "saved" / "model.safetensors"));
  EXPECT_FALSE(fs::exists(dir.path() / "w.safetensors"));
  // Its own format is no change; inference still runs.
  m->set_weight_format(WeightFormat::kBF16);
  EXPECT_EQ(m->weight_format(), WeightFormat::kBF16);
  EXPECT_GT(m->packed_weight_bytes(), 0u);
  m->forward(x.data(), nullptr, 1, 8);
  for (int i = 0; i < 8 * config.vocab_size; ++i) ASSERT_TRUE(std::isfinite(m->logits()[i]));
}

namespace {

// Overwrites element `index` of tensor `name` in dir/model.safetensors (of `dtype`) with `bits`.
void poison_element(const fs::path& dir, const std::string& name, size_t index,
                    const std::string& dtype, uint32_t bits) {
  const uint64_t begin = SafeTensorsFile::open(dir / "model.safetensors").info(name).begin;
  std::string bytes = read_text_file(dir / "model.safetensors");
  uint64_t header_length = 0;
  std::memcpy(&header_length, bytes.data(), 8);
  const size_t width = dtype == "F32" ? 4 : 2;
  const auto half = static_cast<uint16_t>(bits);
  std::memcpy(&bytes[8 + header_length + begin + index * width],
              width == 4 ? static_cast<const void*>(&bits) : &half, width);
  write_file_atomic(dir / "model.safetensors", bytes);
}

}  // namespace

TEST(PackedLoad, NonFiniteValuesAreRefusedNamingTheTensor) {
  const GPT2Config config = llama_config(false);
  for (const std::string dtype : {"BF16", "F16", "F32"}) {
    SCOPED_TRACE(dtype);
    TempDir dir;
    write_model_dir(dir.path(), config, dtype);
    // Poison one element of a packed matrix (k_proj of layer 1, element 70) in the file.
    const std::string name = "model.layers.1.self_attn.k_proj.weight";
    const float nan = std::numeric_limits<float>::quiet_NaN();
    poison_element(dir.path(), name, 70, dtype,
                   dtype == "F32"   ? std::bit_cast<uint32_t>(nan)
                   : dtype == "F16" ? 0x7e00u
                                    : float_to_bf16_bits(nan));
    for (WeightFormat f : {WeightFormat::kBF16, WeightFormat::kQ8}) {
      expect_error([&] { load_model(dir.path(), options(f)); },
                   "tensor '" + name + "' contains a non-finite value (NaN) at element 70");
      auto loaded = load_model(dir.path(), options(f, /*allow_nonfinite=*/true));
      EXPECT_FALSE(loaded->has_fp32_weights());
    }
  }
}

// q8's block scales are fp16, so a finite weight above 127 x 65504 cannot be stored: loading it as
// q8 is an error naming the tensor and element (each path of the packed load: a GPT-2 Conv1D
// tensor packed whole by its columns, nn.Linear and Llama tensors packed by chunks of rows, and a
// tied LM head packed from the fp32 embedding), raised before the packer's OpenMP loops; bf16
// loads the same file.
TEST(PackedLoad, WeightTooLargeForQ8IsRefusedNamingTheTensor) {
  const std::pair<std::string, std::string> cases[] = {
      {"gpt2", "h.1.attn.c_attn.weight"},
      {"gpt2-nn-linear", "h.0.mlp.c_proj.weight"},
      {"llama", "model.layers.1.mlp.down_proj.weight"},
      {"llama-tied", "model.embed_tokens.weight"}};
  for (const Family& family : families()) {
    std::string name;
    for (const auto& [f, n] : cases)
      if (f == family.name) name = n;
    SCOPED_TRACE(family.name);
    TempDir dir;
    write_model_dir(dir.path(), family.config, "F32", family.nn_linear);
    poison_element(dir.path(), name, 77, "F32", std::bit_cast<uint32_t>(-9e6f));
    expect_error([&] { load_model(dir.path(), options(WeightFormat::kQ8)); },
                 "tensor '" + name + "', element 77 holds -9000000, too large for q8 weights");
    expect_error([&] { load_model(dir.path(), options(WeightFormat::kQ8)); },
                 "--weights bf16 or f32");
    auto bf16 = load_model(dir.path(), options(WeightFormat::kBF16));
    EXPECT_EQ(bf16->weight_format(), WeightFormat::kBF16);
  }
}

// Tensors read by chunks of rows (about 2^18 floats) name the element by its index in the tensor,
// not in the chunk: an untied Llama head of 10000 x 32 is read as rows 0-8191 and 8192-9999, and
// elements 280000 and 300000 lie in the second chunk (from element 262144).
TEST(PackedLoad, ErrorsPastTheFirstChunkNameTheElementOfTheTensor) {
  GPT2Config config = llama_config(false);
  config.vocab_size = 10000;
  TempDir dir;
  write_model_dir(dir.path(), config, "F32");
  const std::string name = "lm_head.weight";
  poison_element(dir.path(), name, 300000, "F32", std::bit_cast<uint32_t>(-9e6f));
  expect_error([&] { load_model(dir.path(), options(WeightFormat::kQ8)); },
               "tensor '" + name + "', element 300000 holds -9000000, too large for q8 weights");
  poison_element(dir.path(), name, 280000, "F32",
                 std::bit_cast<uint32_t>(std::numeric_limits<float>::infinity()));
  expect_error([&] { load_model(dir.path(), options(WeightFormat::kBF16)); },
               "tensor '" + name + "' contains a non-finite value (inf) at element 280000");
}

// The point of the feature: the fp32 pages of the packed matrices are never backed by memory. A
// GPT-2-shaped model of 77 MB fp32 (its matrices 75 MB), loaded as q8 (20 MB packed), must grow
// the process's anonymous memory by well under half the fp32 size; the load-then-pack path holds
// all of it (77 MB) plus the packed copy.
TEST(PackedLoad, AnonymousMemoryGrowsByFarLessThanTheFp32Size) {
  if (rss_anon_bytes() < 0) GTEST_SKIP() << "no RssAnon in /proc/self/status";
  if (std::getenv("GAINCELL_SANITIZED")) GTEST_SKIP() << "sanitizer allocators; Release covers it";
  GPT2Config c = GPT2Config::named("tiny");
  c.n_layer = 6;
  c.n_embd = 512;
  c.n_head = 8;
  c.vocab_size = 512;
  c.block_size = 64;
  TempDir dir;
  write_model_dir(dir.path(), c, "BF16");
  const int64_t before = rss_anon_bytes();
  auto m = load_model(dir.path(), options(WeightFormat::kQ8));
  const int64_t grown = rss_anon_bytes() - before;
  const int64_t fp32_bytes = static_cast<int64_t>(m->num_params() * sizeof(float));
  EXPECT_GT(fp32_bytes, int64_t{70} << 20);
  EXPECT_LT(grown, fp32_bytes / 2) << "RssAnon grew by " << grown << " bytes";
  EXPECT_LT(m->fp32_param_bytes(), m->num_params() * sizeof(float) / 3);
  // And it runs: one inference forward.
  const auto x = random_tokens(4, c.vocab_size, 9);
  m->forward(x.data(), nullptr, 1, 4);
  EXPECT_TRUE(std::isfinite(m->logits()[0]));
}
