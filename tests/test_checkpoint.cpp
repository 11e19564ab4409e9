// Model directories: loading the PyTorch-written tiny GPT-2, round trips, prefixes, nn.Linear
// layout, attention extras, and bad inputs.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "test_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
const fs::path kFixtures = test_util::fixture_path("");
using test_util::expect_error;
using test_util::TempDir;

std::vector<float> params_of(const GPT2Model& m) {
  return std::vector<float>(m.param_data(), m.param_data() + m.num_params());
}

// A tiny model's tensors renamed/transposed as another tool would write them.
std::vector<uint8_t> export_tensors(const GPT2Model& model, const std::string& prefix,
                                    bool linear_layout, std::map<std::string, std::string> meta,
                                    std::vector<std::vector<float>>& storage,
                                    const std::string& skip = "") {
  std::vector<TensorView> views;
  storage.clear();
  storage.reserve(model.params().size() + 4);
  for (const ParamInfo& p : model.params()) {
    if (p.name == skip) continue;
    const float* src = model.param_data() + p.offset;
    std::vector<int64_t> shape = p.shape;
    const bool proj = p.name.find("c_attn.weight") != std::string::npos ||
                      p.name.find("c_proj.weight") != std::string::npos ||
                      p.name.find("c_fc.weight") != std::string::npos;
    if (linear_layout && proj) {
      const int64_t r = p.shape[0], c = p.shape[1];
      storage.emplace_back(p.numel);
      for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < c; ++j) storage.back()[j * r + i] = src[i * c + j];
      shape = {c, r};
      src = storage.back().data();
    }
    views.push_back({prefix + p.name, shape, src});
  }
  // What HF and nanoGPT checkpoints carry besides the parameters.
  const ParamInfo& wte = model.param("wte.weight");
  views.push_back({"lm_head.weight", wte.shape, model.param_data() + wte.offset});
  storage.emplace_back(32 * 32, 1.0f);
  views.push_back({prefix + "h.0.attn.bias", {1, 1, 32, 32}, storage.back().data()});
  return serialize_safetensors(views, meta);
}

std::unique_ptr<GPT2Model> random_tiny(uint64_t seed) {
  auto m = std::make_unique<GPT2Model>(GPT2Config::named("tiny"));
  m->init_random(seed);
  return m;
}

TEST(Checkpoint, LoadsPyTorchWrittenModelAndReproducesItsLoss) {
  auto model = load_model(kFixtures / "gpt2_tiny");
  EXPECT_EQ(model->config().n_layer, 2);
  EXPECT_EQ(model->config().vocab_size, 101);
  // The reference debug state holds a batch and the loss PyTorch computed with these weights.
  auto ref = SafeTensorsFile::open(kFixtures / "gpt2_tiny_reference.safetensors");
  const auto& shape = ref.info("inputs").shape;
  ASSERT_EQ(ref.info("inputs").dtype, "I32");
  // The project reader converts only floats; I32 ids are read from the raw tensor by value.
  std::vector<int32_t> inputs, targets;
  {
    auto bytes = read_binary_file(kFixtures / "gpt2_tiny_reference.safetensors");
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];
    auto read_i32 = [&](const std::string& name) {
      const auto& info = ref.info(name);
      std::vector<int32_t> out(info.numel());
      std::memcpy(out.data(), bytes.data() + 8 + n + info.begin, info.end - info.begin);
      return out;
    };
    inputs = read_i32("inputs");
    targets = read_i32("targets");
  }
  const float loss = model->forward(inputs.data(), targets.data(), shape[0], shape[1]);
  EXPECT_NEAR(loss, ref.read_f32("loss")[0], 1e-5);
}

TEST(Checkpoint, SaveThenLoadIsBitExact) {
  auto model = random_tiny(11);
  TempDir dir;
  save_model(*model, dir.path() / "m");
  EXPECT_TRUE(fs::exists(dir.path() / "m/config.json"));
  auto file = SafeTensorsFile::open(dir.path() / "m/model.safetensors");
  EXPECT_EQ(file.metadata().at("gaincell_layout"), "conv1d");
  EXPECT_EQ(file.info("h.1.attn.c_attn.weight").shape, (std::vector<int64_t>{32, 96}));
  auto loaded = load_model(dir.path() / "m");
  EXPECT_EQ(params_of(*loaded), params_of(*model));
  auto cfg = nlohmann::json::parse(read_text_file(dir.path() / "m/config.json"));
  EXPECT_EQ(cfg["n_positions"], 32);
  EXPECT_EQ(cfg["model_type"], "gpt2");
  // No temporary files left behind.
  for (const auto& e : fs::directory_iterator(dir.path() / "m")) {
    EXPECT_EQ(e.path().filename().string().find(".tmp"), std::string::npos) << e.path();
  }
}

TEST(Checkpoint, AcceptsPrefixesTiedHeadAndMaskBuffers) {
  auto model = random_tiny(12);
  std::vector<std::vector<float>> storage;
  for (const std::string prefix : {"transformer.", "_orig_mod.transformer.", "_orig_mod."}) {
    auto bytes = export_tensors(*model, prefix, false, {{"format", "pt"}}, storage);
    auto file = SafeTensorsFile::from_bytes(bytes, "prefixed");
    GPT2Model target(GPT2Config::named("tiny"));
    auto report = load_weights(target, file);
    EXPECT_EQ(params_of(target), params_of(*model)) << prefix;
    EXPECT_EQ(report.loaded, static_cast<int>(model->params().size()));
    EXPECT_EQ(report.ignored.size(), 2u);  // lm_head.weight and the attn.bias buffer
  }
}

TEST(Checkpoint, LinearLayoutTransposesTheFourProjectionWeights) {
  auto model = random_tiny(13);
  std::vector<std::vector<float>> storage;
  auto with_meta = export_tensors(*model, "", true, {{"gaincell_layout", "linear"}}, storage);
  GPT2Model a(GPT2Config::named("tiny"));
  auto report = load_weights(a, SafeTensorsFile::from_bytes(with_meta, "linear"));
  EXPECT_EQ(report.layout, WeightLayout::kLinear);
  EXPECT_EQ(params_of(a), params_of(*model));

  auto no_meta = export_tensors(*model, "transformer.", true, {}, storage);
  GPT2Model b(GPT2Config::named("tiny"));
  load_weights(b, SafeTensorsFile::from_bytes(no_meta, "flag"), WeightLayout::kLinear);
  EXPECT_EQ(params_of(b), params_of(*model));
  GPT2Model c(GPT2Config::named("tiny"));
  expect_error([&] { load_weights(c, SafeTensorsFile::from_bytes(no_meta, "noflag")); },
               "--linear-layout");
}

TEST(Checkpoint, MissingWrongShapeAndNonFiniteTensorsAreNamed) {
  auto model = random_tiny(14);
  std::vector<std::vector<float>> storage;
  auto missing = export_tensors(*model, "", false, {}, storage, "h.1.mlp.c_fc.bias");
  GPT2Model t(GPT2Config::named("tiny"));
  expect_error([&] { load_weights(t, SafeTensorsFile::from_bytes(missing, "m")); },
               "no tensor 'h.1.mlp.c_fc.bias'");

  // Weights of a differently shaped model.
  GPT2Config wide = GPT2Config::named("tiny");
  wide.n_embd = 48;
  GPT2Model other(wide);
  std::vector<TensorView> views;
  for (const ParamInfo& p : other.params())
    views.push_back({p.name, p.shape, other.param_data() + p.offset});
  expect_error(
      [&] { load_weights(t, SafeTensorsFile::from_bytes(serialize_safetensors(views, {}), "w")); },
      "has shape [101, 48], the model expects [101, 32]");

  model->param_data()[model->param("ln_f.bias").offset + 3] = NAN;
  auto nan_bytes = export_tensors(*model, "", false, {}, storage);
  expect_error([&] { load_weights(t, SafeTensorsFile::from_bytes(nan_bytes, "nan")); },
               "'ln_f.bias' contains a non-finite value");
  expect_error(
      [&] { load_weights(t, SafeTensorsFile::from_bytes(missing, "m"), WeightLayout::kAuto); },
      "h.1.mlp.c_fc.bias");
  auto bad_meta =
      export_tensors(*random_tiny(1), "", false, {{"gaincell_layout", "rows"}}, storage);
  expect_error([&] { load_weights(t, SafeTensorsFile::from_bytes(bad_meta, "meta")); },
               "unknown gaincell_layout 'rows'");
}

TEST(Checkpoint, BadModelDirectoriesGiveErrors) {
  TempDir dir;
  expect_error([&] { load_model(dir.path() / "absent"); }, "does not exist");
  expect_error([&] { load_model(dir.path()); }, "has no config.json");
  auto model = random_tiny(15);
  save_model(*model, dir.path());
  // Truncated weights.
  auto bytes = read_binary_file(dir.path() / "model.safetensors");
  write_file_atomic(dir.path() / "model.safetensors", bytes.data(), bytes.size() / 2);
  expect_error([&] { load_model(dir.path()); }, "truncated");
  // Random bytes.
  std::mt19937 rng(1);
  for (auto& b : bytes) b = static_cast<uint8_t>(rng());
  write_file_atomic(dir.path() / "model.safetensors", bytes.data(), bytes.size());
  EXPECT_THROW(load_model(dir.path()), Error);
  save_model(*model, dir.path());
  // Corrupt and invalid configs.
  write_file_atomic(dir.path() / "config.json", std::string("{\"n_layer\": 2,"));
  expect_error([&] { load_model(dir.path()); }, "not valid JSON");
  write_file_atomic(dir.path() / "config.json", std::string("{\"n_layer\": -2}"));
  expect_error([&] { load_model(dir.path()); }, "n_layer");
  write_file_atomic(dir.path() / "config.json", std::string("{\"n_layer\": \"two\"}"));
  expect_error([&] { load_model(dir.path()); }, "n_layer");
  // A config that does not match the weights (wrong shapes).
  GPT2Config cfg = GPT2Config::named("tiny");
  cfg.vocab_size = 50;
  write_file_atomic(dir.path() / "config.json", cfg.to_json().dump());
  expect_error([&] { load_model(dir.path()); }, "wte.weight");
  cfg.vocab_size = 101;
  write_file_atomic(dir.path() / "config.json", cfg.to_json().dump());
  fs::remove(dir.path() / "model.safetensors");
  expect_error([&] { load_model(dir.path()); }, "has no model.safetensors");
}

// An attention variant with per-head extras (like the gain-cell scalers): softmax attention plus
// a trainable tensor "attn.q_scaler.a" of shape [n_head], initialised to 1, 2, 3, ...
class ScaledSoftmax : public Attention {
 public:
  explicit ScaledSoftmax(const AttentionContext& ctx)
      : ctx_(ctx), inner_(make_attention("softmax", ctx)) {}
  std::string name() const override { return "test-scaled"; }
  std::vector<ParamSpec> param_specs() const override {
    ParamSpec s;
    s.name = "attn.q_scaler.a";
    s.shape = {ctx_.n_head};
    for (int h = 0; h < ctx_.n_head; ++h) s.init.push_back(1.0f + h);
    return {s};
  }
  void forward(const float* q, const float* k, const float* v, float* out, int B, int T,
               bool training) override {
    inner_->forward(q, k, v, out, B, T, training);
  }
  void backward(const float* q, const float* k, const float* v, const float* dout, float* dq,
                float* dk, float* dv, int B, int T) override {
    inner_->backward(q, k, v, dout, dq, dk, dv, B, T);
  }
  bool has_kv_cache() const override { return inner_->has_kv_cache(); }

 protected:
  std::unique_ptr<AttentionDecodeState> new_decode_state(KvCacheFormat format) const override {
    return inner_->make_decode_state(format);
  }

 private:
  AttentionContext ctx_;
  std::unique_ptr<Attention> inner_;
};

TEST(Checkpoint, AttentionExtrasAcceptPaperShapeAndKeepInitWhenMissing) {
  register_attention("test-scaled", "test variant with per-head scalers",
                     [](const AttentionContext& c) { return std::make_unique<ScaledSoftmax>(c); });
  GPT2Config cfg = GPT2Config::named("tiny");
  cfg.attention = "test-scaled";
  GPT2Model source(cfg);
  source.init_random(3);
  const ParamInfo& extra = source.param("h.1.attn.q_scaler.a");
  EXPECT_FALSE(is_gpt2_core_tensor(extra.name));
  EXPECT_TRUE(is_gpt2_core_tensor("h.1.attn.c_proj.bias"));
  for (int h = 0; h < 4; ++h) source.param_data()[extra.offset + h] = 0.5f * h - 7.0f;

  // Paper form (1, H, 1, 1).
  std::vector<TensorView> views;
  for (const ParamInfo& p : source.params()) {
    std::vector<int64_t> shape =
        p.name.find("q_scaler") != std::string::npos ? std::vector<int64_t>{1, 4, 1, 1} : p.shape;
    views.push_back({"transformer." + p.name, shape, source.param_data() + p.offset});
  }
  GPT2Model target(cfg);
  load_weights(target, SafeTensorsFile::from_bytes(serialize_safetensors(views, {}), "paper"));
  EXPECT_EQ(params_of(target), params_of(source));

  // A plain softmax checkpoint loaded with the variant: extras keep their init values.
  TempDir dir;
  auto plain = random_tiny(4);
  save_model(*plain, dir.path());
  LoadModelOptions options;
  options.overrides.attention = "test-scaled";
  std::vector<std::string> log;
  options.log = [&](const std::string& line) { log.push_back(line); };
  auto loaded = load_model(dir.path(), options);
  EXPECT_EQ(loaded->config().attention, "test-scaled");
  const ParamInfo& e = loaded->param("h.0.attn.q_scaler.a");
  for (int h = 0; h < 4; ++h) EXPECT_EQ(loaded->param_data()[e.offset + h], 1.0f + h);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("h.*.attn.q_scaler.a (layers 0-1)"), std::string::npos) << log[0];
  EXPECT_EQ(loaded->param_data()[loaded->param("wte.weight").offset],
            plain->param_data()[plain->param("wte.weight").offset]);

  // The other way round: extras in the file but not in the model are reported, not fatal.
  TempDir dir2;
  save_model(source, dir2.path());
  LoadModelOptions to_softmax;
  to_softmax.overrides.attention = "softmax";
  log.clear();
  to_softmax.log = options.log;
  load_model(dir2.path(), to_softmax);
  ASSERT_EQ(log.size(), 1u);
  EXPECT_NE(log[0].find("not used"), std::string::npos) << log[0];

  // Wrong element count for an extra.
  views.clear();
  for (const ParamInfo& p : source.params()) {
    std::vector<int64_t> shape =
        p.name == "h.0.attn.q_scaler.a" ? std::vector<int64_t>{3} : p.shape;
    views.push_back({p.name, shape, source.param_data() + p.offset});
  }
  GPT2Model t2(cfg);
  expect_error(
      [&] { load_weights(t2, SafeTensorsFile::from_bytes(serialize_safetensors(views, {}), "x")); },
      "3 elements, the model expects 4");
}

}  // namespace
}  // namespace gaincell
