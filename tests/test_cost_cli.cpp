// End-to-end tests of `gaincell cost`: JSON contract, sources of every number, plots, traces, and
// clear errors for bad input.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <array>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"
#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/cost/cost_model.h"
#include "gaincell/tools/cost/plot_svg.h"
#include "test_util.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct RunResult {
  int exit_code = -1;
  std::string out;  // stdout and stderr
};

RunResult run_cli(const std::string& args) {
  const std::string cmd = std::string(GAINCELL_CLI_PATH) + " cost " + args + " 2>&1";
  RunResult r;
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), pipe)) > 0) r.out.append(buf.data(), n);
  const int status = pclose(pipe);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

json run_json(const std::string& args) {
  const RunResult r = run_cli("--json " + args);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return json::parse(r.out);
}

fs::path temp_dir(const std::string& name) {
  const fs::path d = fs::temp_directory_path() /
                     ("gaincell_test_cost_cli_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

}  // namespace

TEST(CostCli, JsonContract) {
  const json j = run_json("");
  EXPECT_NEAR(j["energy_per_token_per_head_j"].get<double>(), 6.15e-9, 1e-21);
  EXPECT_NEAR(j["latency_per_token_s"].get<double>(), 65e-9, 1e-21);
  EXPECT_NEAR(j["area_per_head_mm2"].get<double>(), 0.5, 1e-12);
  ASSERT_TRUE(j["components"].is_array());
  EXPECT_EQ(j["components"].size(), 9u);
  ASSERT_TRUE(j["gpus"].is_array());
  for (const auto& g : j["gpus"]) {
    EXPECT_TRUE(g["gpu"].is_string());
    EXPECT_TRUE(g["source"] == "measured" || g["source"] == "model") << g["source"];
    EXPECT_GT(g["speedup"].get<double>(), 0.0);
    EXPECT_GT(g["energy_reduction"].get<double>(), 0.0);
  }
  EXPECT_TRUE(j.contains("hw_config"));
  EXPECT_EQ(j["cost_config"]["name"], "paper");
  // The effective configurations round-trip through their loaders.
  EXPECT_EQ(gaincell::HwConfig::from_json(j["hw_config"]).to_json(), j["hw_config"]);
}

TEST(CostCli, EveryNumberNamesItsSource) {
  const json j = run_json("");
  for (const auto& [key, value] : j.items()) {
    if (value.is_number()) {
      EXPECT_TRUE(j["sources"].contains(key)) << "top-level number without a source: " << key;
    }
  }
  for (const auto& c : j["components"])
    for (const char* k : {"energy_per_op_j", "ops_per_token", "latency_s", "area_mm2"})
      EXPECT_FALSE(c["sources"][k].get<std::string>().empty()) << c["name"] << " " << k;
  for (const auto& g : j["gpus"]) {
    EXPECT_TRUE(g["details"].contains("latency_source")) << g["gpu"];
    EXPECT_TRUE(g["details"].contains("energy_source")) << g["gpu"];
  }
  for (const auto& [name, p] : j["cost_config"]["params"].items())
    EXPECT_FALSE(p["source"].get<std::string>().empty()) << name;
}

TEST(CostCli, MeasuredRatios) {
  GAINCELL_SHARED_DATA(measured_dir, "gaincell-reference");
  const json j = run_json("");
  std::map<std::string, std::pair<long, long>> measured;
  for (const auto& g : j["gpus"])
    if (g["source"] == "measured")
      measured[g["gpu"]] = {std::lround(g["speedup"].get<double>()),
                            std::lround(g["energy_reduction"].get<double>())};
  EXPECT_EQ(measured["RTX 4090"], std::make_pair(344L, 97266L));
  EXPECT_EQ(measured["Jetson Nano"], std::make_pair(7521L, 43981L));
  EXPECT_EQ(j["measured_vs_model"].size(), 2u);
}

TEST(CostCli, ModelDirectoryAndOptions) {
  const fs::path d = temp_dir("model");
  gaincell::write_file_atomic(d / "config.json",
                              std::string(R"({"n_layer": 48, "n_head": 25, "n_embd": 1600,
                                              "n_positions": 1024})"));
  const json j = run_json("--model " + d.string() + " --window 2048 --batch 1");
  EXPECT_EQ(j["model_shape"]["n_layer"], 48);
  EXPECT_EQ(j["model_shape"]["n_head"], 25);
  EXPECT_EQ(j["model_shape"]["batch"], 1);
  EXPECT_EQ(j["hw_config"]["window"], 2048);
  EXPECT_NEAR(j["energy_per_token_model_j"].get<double>(),
              j["energy_per_token_per_head_j"].get<double>() * 25 * 48, 1e-18);
  fs::remove_all(d);
}

TEST(CostCli, TraceGivesTheActivityEstimate) {
  const fs::path d = temp_dir("trace");
  const auto hw = gaincell::HwConfig::preset("paper-nonlinear");
  const auto cost = gaincell::cost::CostConfig::preset("paper");
  auto ev = gaincell::cost::typical_event_counts(hw, cost, gaincell::cost::ModelShape{}, 8);
  ev.phi_pulse_width_sum_tmax = 0.0;  // no φ pulse at all: no V-array read energy (350 pJ)
  gaincell::write_file_atomic(d / "trace.json", ev.to_json().dump());
  const json j = run_json("--trace " + (d / "trace.json").string());
  ASSERT_TRUE(j.contains("activity"));
  EXPECT_NEAR(j["activity"]["energy_per_token_per_head_j"].get<double>(), 6.15e-9 - 350e-12, 1e-20);
  fs::remove_all(d);
}

TEST(CostCli, PlotsAndOutputFile) {
  const fs::path d = temp_dir("plots");
  const RunResult r =
      run_cli("--plot " + (d / "plots").string() + " -o " + (d / "cost.json").string() +
              " --write-cost-config " + (d / "cost_config.json").string());
  ASSERT_EQ(r.exit_code, 0) << r.out;
  const std::vector<std::pair<std::string, std::string>> plots = {
      {"latency.svg", "RTX 4090 (model)"},
      {"energy.svg", "gain cell"},
      {"breakdown_energy.svg", "control_routing"},
      {"breakdown_area.svg", "array_read_qk"}};
  for (const auto& [f, label] : plots) {
    const std::string svg = gaincell::read_text_file(d / "plots" / f);
    EXPECT_EQ(svg.rfind("<svg", 0), 0u) << f;
    EXPECT_NE(svg.find("</svg>"), std::string::npos) << f;
    EXPECT_NE(svg.find(label), std::string::npos) << f;
  }
  const json j = json::parse(gaincell::read_text_file(d / "cost.json"));
  EXPECT_NEAR(j["energy_per_token_per_head_j"].get<double>(), 6.15e-9, 1e-21);
  // The written cost configuration loads back as a preset file.
  const json again = run_json("--preset " + (d / "cost_config.json").string());
  EXPECT_EQ(again["energy_per_token_per_head_j"], j["energy_per_token_per_head_j"]);
  fs::remove_all(d);
}

TEST(CostCli, BadInputGivesClearErrors) {
  const fs::path d = temp_dir("bad");
  gaincell::write_file_atomic(d / "broken.json", std::string("{\"tokens\": 3,"));
  gaincell::write_file_atomic(d / "cost.json", std::string(R"({"params": {"c2p_energy_j": -1}})"));
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"--window 1000", "window"},
      {"--head-dim 0", "model.head_dim"},
      {"--preset nonsense", "nonsense"},
      {"--preset " + (d / "cost.json").string(), "cost.c2p_energy_j"},
      {"--hw nonsense-hw", "nonsense-hw"},
      {"--trace " + (d / "missing.json").string(), "missing.json"},
      {"--trace " + (d / "broken.json").string(), "not valid JSON"},
      {"--model " + d.string(), "config.json"},
      {"--stack-layers 0", "cost.stack_layers"},
      {"--tmax -1", "tmax_s"},
  };
  for (const auto& [args, needle] : cases) {
    const RunResult r = run_cli(args);
    EXPECT_EQ(r.exit_code, 1) << args << "\n" << r.out;
    EXPECT_NE(r.out.find("gaincell: error:"), std::string::npos) << args << "\n" << r.out;
    EXPECT_NE(r.out.find(needle), std::string::npos) << args << "\n" << r.out;
  }
  fs::remove_all(d);
}

TEST(CostCli, ServingComparisonFromTheCommandLine) {
  const fs::path dir = temp_dir("serving");
  // A small GPT-2 model directory, served with grouped-query attention (2 K/V heads).
  gaincell::write_file_atomic(dir / "config.json", json{{"model_type", "gpt2"},
                                                        {"n_layer", 2},
                                                        {"n_head", 4},
                                                        {"n_embd", 128},
                                                        {"n_positions", 256},
                                                        {"vocab_size", 1000}}
                                                       .dump());
  const json j = run_json(
      "--serving --batches 1,16 --gpu H100 --precision fp32 --kv-heads 2 "
      "--model " +
      dir.string());
  ASSERT_TRUE(j.contains("serving"));
  const json& c = j["serving"]["comparisons"][0];
  EXPECT_EQ(c["gpu"], "H100");
  EXPECT_EQ(c["bytes_per_element"], 4);
  EXPECT_EQ(c["model"]["kv_heads"], 2);
  EXPECT_DOUBLE_EQ(c["model"]["dense_params"].get<double>(), 2 * 12.0 * 128 * 128 + 1000.0 * 128);
  ASSERT_EQ(c["points"].size(), 2u);
  EXPECT_EQ(c["points"][1]["batch"], 16);
  EXPECT_GT(c["points"][0]["attention_speedup"].get<double>(), 1.0);

  // An extra GPU from a data file joins both comparisons.
  json gpu = json::parse(gaincell::read_text_file(fs::path(GAINCELL_SOURCE_DIR) /
                                                  "src/gaincell/tools/cost/gpus/h100.json"));
  gpu["name"] = "H100 at half bandwidth";
  gpu["memory_bandwidth_bytes_per_s"]["value"] = 1.675e12;
  gaincell::write_file_atomic(dir / "half.json", gpu.dump());
  const json k = run_json("--serving --batches 1 --gpu 'H100 at half bandwidth' --gpu-file " +
                          (dir / "half.json").string());
  EXPECT_EQ(k["serving"]["comparisons"][0]["gpu"], "H100 at half bandwidth");
  bool listed = false;
  for (const auto& g : k["gpus"]) listed |= g["gpu"] == "H100 at half bandwidth";
  EXPECT_TRUE(listed);
  fs::remove_all(dir);
}

TEST(CostCli, ServingBadInputIsAClearError) {
  const fs::path dir = temp_dir("serving_bad");
  gaincell::write_file_atomic(dir / "gpu.json", "{\"format\": \"gaincell-gpu\", \"version\": 1}");
  const std::pair<std::string, std::string> cases[] = {
      {"--serving --batches 1,x", "--batches: 'x' is not a positive integer"},
      {"--serving --batches 0", "--batches: '0' is not a positive integer"},
      {"--serving --gpu 'GTX 280'", "unknown GPU 'GTX 280'"},
      {"--serving --precision fp8", "--precision must be fp16, bf16 or fp32"},
      {"--serving --kv-heads 5", "kv_heads must divide the query heads"},
      {"--gpu-file " + (dir / "gpu.json").string(), "\"name\" must be a non-empty string"},
      {"--gpu-file " + (dir / "missing.json").string(), "missing.json"},
  };
  for (const auto& [args, message] : cases) {
    const RunResult r = run_cli(args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.out.find(message), std::string::npos) << args << "\n" << r.out;
    EXPECT_EQ(r.out.find("{\n"), std::string::npos) << "no partial JSON for " << args;
  }
  fs::remove_all(dir);
}
