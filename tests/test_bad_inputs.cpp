// Regression tests of issue 17's findings and the bad-input promises of docs/reliability.md: each
// bad input ends in "gaincell: error: <message naming the input>" and a non-zero exit, never a
// crash, an "internal error" or a silently wrapped value.
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/model/checkpoint.h"
#include "gaincell/model/data.h"
#include "gaincell/model/hf_tokenizer.h"
#include "gaincell/model/memory_estimate.h"
#include "gaincell/tools/eval/task.h"
#include "gaincell/tools/eval/token_file.h"
#include "gaincell/tools/sweep/sweep_driver.h"
#include "gaincell/tools/sweep/sweep_spec.h"
#include "gaincell/train/trainer.h"
#include "test_cli_util.h"
#include "test_tokenizer_util.h"

namespace gaincell {
namespace {

namespace fs = std::filesystem;
using cli_test::run_cli;
using test_util::error_of;
using test_util::TempDir;

const fs::path kFixtures = "tests/fixtures";  // tests run in the source directory

// Runs the CLI and checks the error contract; returns stderr.
std::string cli_error(const fs::path& dir, const std::string& args) {
  const auto r = run_cli(dir, args);
  EXPECT_NE(r.exit_code, 0) << args;
  EXPECT_NE(r.err.find("gaincell: error:"), std::string::npos) << args << "\n" << r.err;
  EXPECT_EQ(r.err.find("internal error"), std::string::npos) << args << "\n" << r.err;
  return r.err;
}

void expect_has(const std::string& text, const std::string& part) {
  EXPECT_NE(text.find(part), std::string::npos) << "'" << part << "' not in: " << text;
}

TEST(BadInputs, IntegersThatDoNotFitAreRejectedNotWrapped) {
  TempDir dir;
  const fs::path hw = dir.path() / "hw.json";
  write_file_atomic(hw, std::string(R"({"quantization": {"q": {"levels": 4294967312}}})"));
  std::string err = cli_error(dir.path(), "cost --hw " + hw.string());
  expect_has(err, "quantization.q.levels");
  expect_has(err, "4294967312 is out of range");
  write_file_atomic(hw, std::string(R"({"noise": {"seed": -1}})"));
  err = cli_error(dir.path(), "cost --hw " + hw.string());
  expect_has(err, "noise.seed");
  expect_has(err, "must not be negative");
}

TEST(BadInputs, NonFiniteAndAbsurdConfigValues) {
  TempDir dir;
  const fs::path cfg = dir.path() / "config.json";
  const std::string train = "train --data " + (dir.path() / "none").string() + " --out " +
                            (dir.path() / "o").string() + " --config " + cfg.string();
  write_file_atomic(cfg, std::string(R"({"n_layer": 2, "layer_norm_epsilon": 1e999})"));
  std::string err = cli_error(dir.path(), train);
  expect_has(err, cfg.string());
  expect_has(err, "'layer_norm_epsilon'");
  expect_has(err, "finite");
  // A model that cannot fit: refused with the estimate before anything is allocated.
  write_file_atomic(cfg, std::string(R"({"n_layer": 2147483647, "n_embd": 768})"));
  err = cli_error(dir.path(), train);
  expect_has(err, "the model needs about");
  expect_has(err, "of memory available");
  EXPECT_FALSE(fs::exists(dir.path() / "o/checkpoints"));
}

TEST(BadInputs, SymlinkLoopsAreNamed) {
  TempDir dir;
  const fs::path loop = dir.path() / "loop";
  fs::create_symlink(dir.path() / "loop2", loop);
  fs::create_symlink(loop, dir.path() / "loop2");
  expect_has(cli_error(dir.path(), "cost --hw " + loop.string()), loop.string());
  expect_has(cli_error(dir.path(), "train --data x --out " + (dir.path() / "o").string() +
                                       " --config " + loop.string()),
             loop.string());
  write_file_atomic(dir.path() / "text.txt", std::string("some text\n"));
  expect_has(cli_error(dir.path(), "perplexity --model " + loop.string() + " --text " +
                                       (dir.path() / "text.txt").string()),
             loop.string());
}

TEST(BadInputs, DeeplyNestedTrainingStateIsAnErrorNotACrash) {
  TempDir dir;
  const fs::path ck = dir.path() / "ck";
  fs::create_directories(ck);
  fs::copy(kFixtures / "gpt2_tiny/config.json", ck / "config.json");
  fs::copy(kFixtures / "gpt2_tiny/model.safetensors", ck / "model.safetensors");
  write_file_atomic(ck / "training_state.json",
                    std::string(200000, '[') + std::string(200000, ']'));
  const std::string err = cli_error(dir.path(), "train --resume " + ck.string());
  expect_has(err, "training_state.json");
  expect_has(err, "nesting deeper than 64");
}

// The sweep file, its results file and the evaluation data readers go through core/json.h: a
// depth bomb, a 64-bit integer in a 32-bit field and 1e999 are errors naming file and field.
TEST(BadInputs, SweepAndEvaluationReadersUseTheHardenedJsonReader) {
  const std::string bomb = std::string(5000, '[') + std::string(5000, ']');
  auto sweep_error = [](const std::string& text) {
    return error_of([&] { sweep::SweepSpec::parse(text, "/nonexistent"); });
  };
  expect_has(sweep_error(R"({"axes": {"array_size": [32]}, "x": )" + bomb + "}"),
             "sweep file: nesting deeper than 64 levels");
  // Was static_cast<int>: 4294967297 seeds ran as 1.
  expect_has(sweep_error(R"({"axes": {"array_size": [32]}, "seeds": 4294967297})"),
             "sweep file: 'seeds' = 4294967297 is out of range");
  expect_has(sweep_error(R"({"axes": {"array_size": [32]}, "prepare": {"batch_seed": -1}})"),
             "'prepare.batch_seed' = -1 is out of range (must not be negative)");
  // Was an infinite float learning rate.
  expect_has(sweep_error(R"({"axes": {"array_size": [32]}, "prepare": {"finetune_lr": 1e300}})"),
             "'prepare.finetune_lr' = 1e+300 is out of range (it overflows a 32-bit float)");
  // Was nlohmann's out_of_range (an "internal error").
  expect_has(sweep_error(R"({"axes": {"noise.sigma": [0.1, 1e999]}})"), "at 'axes.noise.sigma[1]'");
  // The axes keep the order of the file (the point order depends on it).
  const auto spec = sweep::SweepSpec::parse(
      R"({"axes": {"array_size": [32, 64], "quantization.k.levels": [8, 16]}})", "/nonexistent");
  ASSERT_EQ(spec.axes.size(), 2u);
  EXPECT_EQ(spec.axes[0].field, "array_size");

  TempDir dir;
  const fs::path results = dir.path() / "results.jsonl";
  write_file_atomic(results, std::string("{\"point\": 0}\n{\"point\": 4294967296}\n"));
  expect_has(error_of([&] { sweep::read_results(results); }),
             "results.jsonl: line 2: 'point' = 4294967296 is out of range");
  write_file_atomic(results, bomb + "\n");
  expect_has(error_of([&] { sweep::read_results(results); }), "nesting deeper than 64");

  const fs::path rows = dir.path() / "hellaswag.jsonl";
  auto task_error = [&](const std::string& task, const std::string& text) {
    write_file_atomic(rows, text);
    return error_of([&] { eval::load_task_docs(eval::task_info(task), rows); });
  };
  const std::string hellaswag =
      R"({"activity_label": "a", "ctx_a": "b", "ctx_b": "c", "endings": ["d", "e"], )";
  expect_has(task_error("hellaswag", hellaswag + R"("label": 9223372036854775808})"),
             "hellaswag.jsonl:1: field 'label' = 9223372036854775808 is out of range");
  expect_has(task_error("hellaswag", hellaswag + R"("label": 1}
{"text": )" + bomb + "}"),
             "hellaswag.jsonl:2: nesting deeper than 64");
  expect_has(task_error("lambada_openai", R"({"text": "a b", "x": 1e999})"),
             "hellaswag.jsonl:1: number overflow parsing '1e999' at 'x'");

  const fs::path ids = dir.path() / "ids.json";
  auto ids_error = [&](const std::string& text) {
    write_file_atomic(ids, text);
    return error_of([&] { eval::read_token_file(ids); });
  };
  expect_has(ids_error(R"({"ids": [1, 4294967297]})"),
             "ids[1] = 4294967297 is out of range (allowed: 0 to 2147483647)");
  expect_has(ids_error(R"({"ids": [1, 1e999]})"), "number overflow parsing '1e999'");
  expect_has(ids_error("{\"ids\": " + bomb + "}"), "ids.json: nesting deeper than 64");

  fs::create_directories(dir.path() / "tok");
  write_file_atomic(dir.path() / "tok/tokenizer.json", "{\"model\": " + bomb + "}");
  expect_has(error_of([&] { HfTokenizer::load(dir.path() / "tok/tokenizer.json"); }),
             "tokenizer.json': nesting deeper than 64");
}

TEST(BadInputs, OutOfRangeTokenIds) {
  TempDir dir;
  write_file_atomic(dir.path() / "ids.txt", std::string("1 999999\n"));
  expect_has(cli_error(dir.path(), "tokenize --tokenizer bytes --decode --text " +
                                       (dir.path() / "ids.txt").string()),
             "999999");
  // A token file with an id beyond the vocabulary.
  write_token_file(dir.path() / "train.bin", std::vector<int32_t>{1, 2, 3, 300, 4, 5});
  EXPECT_THROW(TokenDataset::open(dir.path() / "train.bin", 257), Error);
}

class BadNumbers : public ::testing::Test {
 protected:
  void SetUp() override {
    std::mt19937 rng(3);
    std::vector<int32_t> tokens(2000);
    for (auto& t : tokens) t = static_cast<int32_t>(rng() % 64);
    write_token_file(dir.path() / "train.bin", tokens);
    data = std::make_unique<TokenDataset>(TokenDataset::open(dir.path() / "train.bin", 256));
    config = GPT2Config::named("tiny");
  }
  TrainOptions options() const {
    TrainOptions o;
    o.steps = 3;
    o.batch_size = 2;
    o.seq_len = 8;
    o.warmup_steps = 1;
    o.eval_interval = 0;
    o.checkpoint_interval = 1;
    o.log_interval = 0;
    o.out_dir = dir.path() / "run";
    return o;
  }
  TempDir dir;
  std::unique_ptr<TokenDataset> data;
  GPT2Config config;
};

TEST_F(BadNumbers, NonFiniteWeightsNameTheTensorUnlessAllowed) {
  GPT2Model m(config);
  m.init_random(1);
  m.param_data()[m.param("h.1.mlp.c_fc.weight").offset + 5] = INFINITY;
  save_model(m, dir.path() / "bad");
  try {
    load_model(dir.path() / "bad");
    ADD_FAILURE() << "loaded a model holding inf";
  } catch (const Error& e) {
    expect_has(e.what(), "'h.1.mlp.c_fc.weight' contains a non-finite value (inf) at element 5");
    expect_has(e.what(), "--allow-nonfinite-weights");
  }
  LoadModelOptions allow;
  allow.allow_nonfinite = true;
  const auto loaded = load_model(dir.path() / "bad", allow);
  EXPECT_TRUE(std::isinf(loaded->param_data()[loaded->param("h.1.mlp.c_fc.weight").offset + 5]));
}

TEST_F(BadNumbers, DivergedTrainingStopsNamingTheStepAndKeepsTheLastGoodCheckpoint) {
  GPT2Model m(config);
  m.init_random(1);
  TrainOptions o = options();
  o.steps = 2;
  {
    Trainer first(m, *data, nullptr, o);
    first.run();
  }
  const auto good = read_binary_file(o.out_dir / "model.safetensors");
  // The weights go bad (as after an overflow): every logit, so the step-3 loss, is NaN.
  m.param_data()[m.param("ln_f.weight").offset] = NAN;
  o.steps = 4;
  Trainer second(m, *data, nullptr, o);
  second.resume(o.out_dir);  // optimizer state and step; the weights are the model's own
  try {
    second.run();
    ADD_FAILURE() << "training went on with a NaN loss";
  } catch (const Error& e) {
    expect_has(e.what(), "training diverged at step 3");
  }
  // The step-2 checkpoint is still the current one, unchanged and resumable.
  EXPECT_EQ(read_binary_file(o.out_dir / "model.safetensors"), good);
  EXPECT_EQ(Trainer::checkpoint_to_resume(o.out_dir).filename(), "step-00000002");
}

// Whether this binary runs under AddressSanitizer (GCC defines __SANITIZE_ADDRESS__, clang has
// __has_feature).
#if defined(__SANITIZE_ADDRESS__)
constexpr bool kAddressSanitizer = true;
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
constexpr bool kAddressSanitizer = true;
#else
constexpr bool kAddressSanitizer = false;
#endif
#else
constexpr bool kAddressSanitizer = false;
#endif

// Sets $GAINCELL_MEMORY_LIMIT for one scope (unset again even when a check throws).
class MemoryLimitForScope {
 public:
  explicit MemoryLimitForScope(const char* bytes) { ::setenv("GAINCELL_MEMORY_LIMIT", bytes, 1); }
  ~MemoryLimitForScope() { ::unsetenv("GAINCELL_MEMORY_LIMIT"); }
  MemoryLimitForScope(const MemoryLimitForScope&) = delete;
  MemoryLimitForScope& operator=(const MemoryLimitForScope&) = delete;
};

TEST(BadInputs, MemoryEstimateIsCheckedBeforeAllocation) {
  GPT2Config c = GPT2Config::named("gpt2");
  // 124M parameters: the estimate matches the model's own count within 0.1%.
  GPT2Config tiny = GPT2Config::named("tiny");
  GPT2Model m(tiny);
  EXPECT_NEAR(estimated_param_count(tiny), static_cast<double>(m.num_params()),
              0.001 * m.num_params() + 64);
  EXPECT_NEAR(estimated_param_count(c), 124.44e6, 0.01e6);
  // With a 100 MB ceiling, GPT-2 (500 MB of weights) is refused before allocation.
  MemoryLimitForScope limit("100000000");
  try {
    GPT2Model big(c);
    ADD_FAILURE() << "allocated a model above the limit";
  } catch (const Error& e) {
    expect_has(e.what(), "the model needs about 497.8 MB (1.24e+08 float32 parameters)");
    expect_has(e.what(), "100.0 MB");
  }
}

// A model loaded straight into packed storage (load_model --weights bf16|q8) is checked at its
// packed size: GPT-2 124M needs about 498 MB in fp32, 405 MB with bf16 matrices and under 300 MB
// with q8 ones (the 39.5 M parameters outside the matrices, wte among them, stay fp32).
TEST(BadInputs, MemoryEstimateOfAPackedLoadCountsThePackedSize) {
  const GPT2Config c = GPT2Config::named("gpt2");
  const double f32 = estimated_model_bytes(c, false);
  const double bf16 = estimated_model_bytes(c, false, WeightFormat::kBF16);
  const double q8 = estimated_model_bytes(c, false, WeightFormat::kQ8);
  EXPECT_GT(f32, bf16);
  EXPECT_GT(bf16, q8);
  std::unique_ptr<GPT2Model> packed;
  {
    MemoryLimitForScope limit("350000000");
    try {
      GPT2Model refused(c, WeightFormat::kBF16);
      ADD_FAILURE() << "allocated a bf16 model above the limit";
    } catch (const Error& e) {
      expect_has(e.what(), "parameters, the matrices as bf16)");
      expect_has(e.what(), "350.0 MB");
    }
    EXPECT_THROW(GPT2Model{c}, Error);
    packed = std::make_unique<GPT2Model>(c, WeightFormat::kQ8);  // its matrices are never fp32
  }
  EXPECT_FALSE(packed->has_fp32_weights());
  EXPECT_EQ(packed->weight_format(), WeightFormat::kQ8);
  // The estimate is the storage the model then holds, within 1 %.
  const double held =
      static_cast<double>(packed->fp32_param_bytes() + packed->packed_weight_bytes());
  EXPECT_NEAR(q8, held, 0.01 * held);
  // It maps the whole fp32 buffer besides (calloc'd, the matrices' pages untouched).
  EXPECT_NEAR(estimated_model_address_space(c, WeightFormat::kQ8),
              4.0 * packed->num_params() + packed->packed_weight_bytes(), 0.01 * f32);
}

// An untied LM head (Llama family) is counted in the parameters, and kept out of the fp32 part of
// a packed load. The config's matrices are exactly the 12 C^2 per block the estimate assumes
// (q|k|v 3C^2, output C^2, gate|up and down 3 C F with F = 8C/3); the estimate's GPT-2 extras
// (position embeddings, biases) make it about 2 % high.
TEST(BadInputs, MemoryEstimateCountsAnUntiedLmHead) {
  GPT2Config c = GPT2Config::named("llama-tiny");
  c.n_embd = 48;
  c.n_head = 4;
  c.n_kv_head = 4;
  c.intermediate_size = 128;
  c.vocab_size = 1000;
  ASSERT_FALSE(c.tie_word_embeddings);
  const GPT2Model f32(c);
  EXPECT_NEAR(estimated_param_count(c), static_cast<double>(f32.num_params()),
              0.03 * f32.num_params());
  const GPT2Model packed(c, WeightFormat::kQ8);
  const double held = static_cast<double>(packed.fp32_param_bytes() + packed.packed_weight_bytes());
  EXPECT_NEAR(estimated_model_bytes(c, false, WeightFormat::kQ8), held, 0.03 * held);
}

// The process's address-space limit (ulimit -v) counts what a packed load maps, not only what it
// makes resident: a q8 GPT-2 124M maps its 498 MB fp32 buffer (untouched) and 131 MB of packed
// matrices, so under a limit 450 MB above what the process maps it is refused by the check, with
// the limit named, instead of failing in calloc. Run in a child process (the limit would bind the
// rest of the test binary); not under AddressSanitizer, whose shadow memory a limit breaks.
TEST(BadInputs, AddressSpaceLimitCountsWhatAPackedLoadMaps) {
  if (kAddressSanitizer)
    GTEST_SKIP() << "AddressSanitizer: an address-space limit breaks its shadow memory";
  const GPT2Config c = GPT2Config::named("gpt2");
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    ::alarm(60);
    std::ifstream status("/proc/self/status");
    std::string line;
    double mapped = 0;
    while (std::getline(status, line))
      if (line.rfind("VmSize:", 0) == 0) mapped = std::strtod(line.c_str() + 7, nullptr) * 1024;
    const rlimit limit{static_cast<rlim_t>(mapped + 450e6), static_cast<rlim_t>(mapped + 450e6)};
    if (mapped == 0 || ::setrlimit(RLIMIT_AS, &limit) != 0) ::_exit(3);
    try {
      GPT2Model packed(c, WeightFormat::kQ8);
      ::_exit(1);  // constructed above the limit
    } catch (const Error& e) {
      const std::string what = e.what();
      ::_exit(what.find("of address space") != std::string::npos &&
                      what.find("RLIMIT_AS") != std::string::npos
                  ? 0
                  : 2);
    } catch (...) {
      ::_exit(4);  // std::bad_alloc: the allocation failed before the check
    }
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "the child was killed (signal " << WTERMSIG(status) << ")";
  EXPECT_EQ(WEXITSTATUS(status), 0)
      << "1: constructed above the limit, 2: another error, 3: no limit set, 4: bad_alloc";
}

}  // namespace
}  // namespace gaincell
