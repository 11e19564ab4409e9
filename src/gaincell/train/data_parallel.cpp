#include "gaincell/train/data_parallel.h"

#include <chrono>
#include <cstdio>
#include <cstring>
#include <vector>

#include "gaincell/core/error.h"
#include "gaincell/train/trainer.h"

namespace gaincell {

namespace {

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string hex64(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

// The ranks (other than 0) whose flag is set in `flags` [ranks], as "1, 3".
std::string rank_list(const std::vector<double>& flags) {
  std::string list;
  for (size_t r = 0; r < flags.size(); ++r) {
    if (flags[r] == 0) continue;
    if (!list.empty()) list += ", ";
    list += std::to_string(r);
  }
  return list;
}

// Broadcasts rank 0's `values` (into `root`) and returns, on every rank, for each value which
// ranks hold another one (a flag per rank).
std::vector<std::vector<double>> ranks_differing_from_root(Comm& comm,
                                                           const std::vector<uint64_t>& values,
                                                           std::vector<uint64_t>& root) {
  root = values;
  comm.broadcast(root.data(), root.size() * sizeof(uint64_t), 0);
  const size_t n = values.size(), ranks = static_cast<size_t>(comm.size());
  std::vector<double> flags(n * ranks, 0.0);
  for (size_t i = 0; i < n; ++i) flags[i * ranks + comm.rank()] = values[i] != root[i] ? 1 : 0;
  comm.allreduce_sum(flags.data(), flags.size());
  std::vector<std::vector<double>> per_value(n);
  for (size_t i = 0; i < n; ++i)
    per_value[i].assign(flags.begin() + i * ranks, flags.begin() + (i + 1) * ranks);
  return per_value;
}

}  // namespace

uint64_t fnv1a(const void* data, size_t bytes, uint64_t h) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < bytes; ++i) {
    h ^= p[i];
    h *= 0x100000001b3ull;
  }
  return h;
}

BatchShard batch_shard(int batch, int rank, int ranks) {
  require(ranks >= 1 && rank >= 0 && rank < ranks,
          "data parallel: bad rank " + std::to_string(rank) + " of " + std::to_string(ranks));
  require(ranks <= batch, "data parallel: " + std::to_string(ranks) +
                              " ranks but a global batch of only " + std::to_string(batch) +
                              " sequences (--batch-size): every rank needs at least one; use at "
                              "most " +
                              std::to_string(batch) + " ranks or a larger batch");
  require(batch % ranks == 0,
          "data parallel: the global batch of " + std::to_string(batch) +
              " sequences (--batch-size) does not divide evenly over " + std::to_string(ranks) +
              " ranks; use a batch size that is a multiple of the number of ranks");
  const int rows = batch / ranks;
  return {rank * rows, rows};
}

GradientAllReduce::GradientAllReduce(Comm& comm, GPT2Model& model) : comm_(comm), model_(model) {}

GradientAllReduce::~GradientAllReduce() {
  if (armed_) model_.set_grad_ready_hook({});
}

void GradientAllReduce::arm() {
  if (comm_.size() == 1) return;
  armed_ = true;
  covered_ = 0;
  float* grads = model_.grad_data();
  model_.set_grad_ready_hook([this, grads](size_t begin, size_t end) {
    const auto start = std::chrono::steady_clock::now();
    comm_.start_allreduce_sum(grads + begin, end - begin);
    comm_.progress();  // MPI moves earlier buckets on only inside MPI calls
    covered_ += end - begin;
    ++buckets_;
    comm_seconds_ += seconds_since(start);
  });
}

void GradientAllReduce::finish() {
  if (!armed_) return;
  armed_ = false;
  model_.set_grad_ready_hook({});
  const auto start = std::chrono::steady_clock::now();
  comm_.wait_all();
  const double waited = seconds_since(start);
  wait_seconds_ += waited;
  comm_seconds_ += waited;
  floats_ += covered_;
  // Every gradient must have been summed, or the ranks would step apart.
  require(covered_ == model_.num_params(), "data parallel: backward reported " +
                                               std::to_string(covered_) + " of " +
                                               std::to_string(model_.num_params()) + " gradients");
}

void check_same_run(Comm& comm, const std::string& description) {
  if (comm.size() == 1) return;
  const uint64_t binary = file_hash("/proc/self/exe");
  const uint64_t options = fnv1a(description.data(), description.size());
  std::vector<uint64_t> root;
  const auto differ = ranks_differing_from_root(comm, {binary, options}, root);
  std::string problems;
  if (!rank_list(differ[0]).empty()) {
    problems += "rank(s) " + rank_list(differ[0]) +
                " run a different gaincell binary than rank 0 (executable hash " + hex64(root[0]) +
                " on rank 0" +
                (binary != root[0] ? ", " + hex64(binary) + " here" : std::string()) + "); ";
  }
  if (!rank_list(differ[1]).empty()) {
    problems += "rank(s) " + rank_list(differ[1]) +
                " were given other options or another model than rank 0 (configuration hash " +
                hex64(root[1]) + " on rank 0" +
                (options != root[1] ? ", " + hex64(options) + " here" : std::string()) + "); ";
  }
  require(problems.empty(), "data parallel: " + problems +
                                "every rank must run the same binary with the same command line");
}

void share_statistics(Comm& comm, GPT2Model& model) {
  if (comm.size() == 1) return;
  for (int l = 0; l < model.config().n_layer; ++l) {
    model.attention(l).set_statistics_reducer(
        [&comm](double* values, size_t n) { comm.allreduce_sum(values, n); });
  }
}

void broadcast_parameters(Comm& comm, GPT2Model& model) {
  if (comm.size() == 1) return;
  comm.broadcast(model.param_data(), model.num_params() * sizeof(float), 0);
}

void check_replicas_agree(Comm& comm, const GPT2Model& model, const std::string& when) {
  if (comm.size() == 1) return;
  const uint64_t h = fnv1a(model.param_data(), model.num_params() * sizeof(float));
  std::vector<uint64_t> root;
  const auto differ = ranks_differing_from_root(comm, {h}, root);
  const std::string ranks = rank_list(differ[0]);
  require(ranks.empty(), "data parallel: at " + when + " the parameters of rank(s) " + ranks +
                             " differ from rank 0's (the replicas diverged)");
}

}  // namespace gaincell
