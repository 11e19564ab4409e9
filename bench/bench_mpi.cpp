// Data-parallel training step (issue 16 item 3, docs/scale-out.md): run it alone and under
// `mpirun -np N`; rank 0 prints one JSON object with the step time, the throughput of the global
// batch, the time spent inside communication (starting and polling bucket all-reduces during
// backward, then waiting for them after it) and its share of the step, the bytes all-reduced per
// step, and the machine limits (sgemm GFLOP/s, triad GB/s) measured in the same run on each rank.
//
//   [mpirun -np N] bench_mpi [--layers L] [--embd C] [--seq T] [--batch B] [--steps S]
//
// The model uses the byte vocabulary (257) so that the blocks, which overlap with communication,
// dominate; the global batch B is split over the ranks (B must be a multiple of N).
#include <omp.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "bench_common.h"
#include "gaincell/core/comm.h"
#include "gaincell/core/error.h"
#include "gaincell/model/data.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/train/trainer.h"

using namespace gaincell;
using namespace gaincell::bench;

namespace {

struct BenchOptions {
  int layers = 4, embd = 256, seq = 64, batch = 8, steps = 6;
};

BenchOptions parse(int argc, char** argv) {
  BenchOptions o;
  for (int i = 1; i + 1 < argc; i += 2) {
    const std::string flag = argv[i];
    const int value = std::stoi(argv[i + 1]);
    if (flag == "--layers") {
      o.layers = value;
    } else if (flag == "--embd") {
      o.embd = value;
    } else if (flag == "--seq") {
      o.seq = value;
    } else if (flag == "--batch") {
      o.batch = value;
    } else if (flag == "--steps") {
      o.steps = value;
    } else {
      throw Error("bench_mpi: unknown option " + flag);
    }
  }
  return o;
}

}  // namespace

int run(int argc, char** argv) {
  const BenchOptions o = parse(argc, argv);
  Comm& comm = world_comm();
  // The limits, every rank at once (they share the cores as the training does).
  comm.barrier();
  const double sgemm = measure_sgemm_gflops(2);
  comm.barrier();
  const double triad = measure_triad_gbps(2, size_t{1} << 24);

  GPT2Config c = GPT2Config::named("tiny");
  c.n_layer = o.layers;
  c.n_embd = o.embd;
  c.n_head = std::max(1, o.embd / 64);
  c.block_size = o.seq;
  c.tokenizer = Tokenizer::kBytes;
  c.vocab_size = 257;
  GPT2Model model(c);
  model.init_random(7);

  // A token file per rank (the same tokens): the trainer's sampler reads a file.
  const auto path =
      std::filesystem::temp_directory_path() / ("bench_mpi_" + std::to_string(::getpid()) + ".bin");
  write_token_file(path, random_tokens(size_t{1} << 16, 256, 11));
  const TokenDataset data = TokenDataset::open(path, c.vocab_size);
  std::filesystem::remove(path);

  TrainOptions t;
  t.steps = o.steps + 1;  // the first step warms up
  t.batch_size = o.batch;
  t.seq_len = o.seq;
  t.warmup_steps = 1;
  t.eval_interval = 0;
  t.log_interval = 0;
  Trainer trainer(model, data, nullptr, t, comm);
  trainer.train_step();
  const double comm0 = trainer.gradient_sync().comm_seconds();
  const double wait0 = trainer.gradient_sync().wait_seconds();
  comm.barrier();
  const auto start = Clock::now();
  for (int s = 0; s < o.steps; ++s) trainer.train_step();
  const double seconds = seconds_since(start);
  std::vector<double> times = {seconds, trainer.gradient_sync().comm_seconds() - comm0,
                               trainer.gradient_sync().wait_seconds() - wait0, sgemm, triad};
  // Means over the ranks. The step times agree (the ranks meet in every step's all-reduce);
  // the communication times differ: a rank that finishes backward first waits for the others.
  comm.allreduce_sum(times.data(), times.size());
  for (double& x : times) x /= comm.size();
  if (!comm.is_root()) return 0;

  const double step_s = times[0] / o.steps;
  const double flops_per_token = 6.0 * static_cast<double>(model.num_params());
  const double tokens_per_step = static_cast<double>(o.batch) * o.seq;
  nlohmann::json j = {
      {"benchmark", "mpi_data_parallel"},
      {"ranks", comm.size()},
      {"omp_threads_per_rank", omp_get_max_threads()},
      {"model", {{"n_layer", c.n_layer}, {"n_embd", c.n_embd}, {"params", model.num_params()}}},
      {"global_batch", o.batch},
      {"seq_len", o.seq},
      {"steps_timed", o.steps},
      {"step_s", step_s},
      {"tokens_per_s", tokens_per_step / step_s},
      {"comm_s_per_step", times[1] / o.steps},
      {"wait_s_per_step", times[2] / o.steps},
      {"comm_share", times[1] / times[0]},
      {"wait_share", times[2] / times[0]},
      {"allreduce_bytes_per_step", comm.size() > 1 ? model.num_params() * sizeof(float) : 0},
      {"buckets_per_step", comm.size() > 1 ? c.n_layer + 2 : 0},
      {"approx_gflops", flops_per_token * tokens_per_step / step_s / 1e9},
      {"limits_mean_per_rank", {{"sgemm_gflops", times[3]}, {"triad_gbps", times[4]}}},
      {"fraction_of_ranks_sgemm",
       flops_per_token * tokens_per_step / step_s / 1e9 / (times[3] * comm.size())},
      {"openblas_core", openblas_core()},
      {"omp_wait_policy", gaincell::bench::omp_wait_policy()}};
  std::cout << j.dump(2) << "\n";
  return 0;
}

int main(int argc, char** argv) {
  use_cli_thread_settings(argv);
  try {
    init_world_comm(&argc, &argv);
    const int code = run(argc, argv);
    finalize_world_comm();
    return code;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_mpi: %s\n", e.what());
    if (world_comm().size() > 1) abort_world_comm(1);
    return 1;
  }
}
