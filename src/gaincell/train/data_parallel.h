// Data-parallel training over a process group (issue 16, docs/scale-out.md). Every rank draws
// the same global batch (the same sampler, seed and state as one process) and computes the
// gradient of its own contiguous rows; the gradients are summed by all-reduce, bucket by bucket
// while backward goes on, and every rank then takes the same AdamW step. Rank 0 alone writes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "gaincell/core/comm.h"
#include "gaincell/model/gpt2.h"

namespace gaincell {

// The rows [first_row, first_row + rows) of a global batch of `batch` sequences that this rank
// computes. An Error when the ranks outnumber the sequences or do not divide them evenly (each
// rank's loss is then a mean over the same number of tokens, and their average is the mean of
// one process).
struct BatchShard {
  int first_row = 0;
  int rows = 0;
};
BatchShard batch_shard(int batch, int rank, int ranks);

// Sums the gradients of one backward over the ranks. arm() before the backward whose gradients
// are final (the last micro-batch): each parameter range backward reports done
// (GPT2Model::set_grad_ready_hook) starts a non-blocking all-reduce at once; finish() waits for
// them and removes the hook. With one rank it does nothing.
class GradientAllReduce {
 public:
  GradientAllReduce(Comm& comm, GPT2Model& model);
  ~GradientAllReduce();
  GradientAllReduce(const GradientAllReduce&) = delete;
  GradientAllReduce& operator=(const GradientAllReduce&) = delete;

  void arm();
  void finish();

  // Seconds spent inside communication calls (starting buckets, polling, waiting), and in
  // finish() alone: the part that did not overlap with backward.
  double comm_seconds() const { return comm_seconds_; }
  double wait_seconds() const { return wait_seconds_; }
  int64_t buckets() const { return buckets_; }
  size_t floats_reduced() const { return floats_; }

 private:
  Comm& comm_;
  GPT2Model& model_;
  bool armed_ = false;
  size_t covered_ = 0;  // floats started this step (all of them, checked by finish())
  double comm_seconds_ = 0, wait_seconds_ = 0;
  int64_t buckets_ = 0;
  size_t floats_ = 0;
};

// Every rank must run the same binary with the same options: `description` (the options and
// model configuration as text) and this executable's bytes are hashed, rank 0's hashes are
// broadcast, and every rank throws an Error naming the ranks that differ and what differs.
void check_same_run(Comm& comm, const std::string& description);

// Makes every layer's attention sum its recorded statistics (range scalers: sums, sums of
// squares, counts) over the ranks (Attention::set_statistics_reducer), so that target recording
// (stage A) and the adaptation (stage B) see the statistics of the whole global batch. Stays
// installed for the model's life. No-op with one rank.
void share_statistics(Comm& comm, GPT2Model& model);

// Copies rank 0's parameters to every rank (one identical starting point however each rank
// initialised or loaded its model).
void broadcast_parameters(Comm& comm, GPT2Model& model);

// An Error when the ranks' parameters differ (they must stay bit-identical: same gradient sums,
// same AdamW step). `when` names the moment ("step 20").
void check_replicas_agree(Comm& comm, const GPT2Model& model, const std::string& when);

// 64-bit FNV-1a of a byte range, continued from `h`.
uint64_t fnv1a(const void* data, size_t bytes, uint64_t h = 0xcbf29ce484222325ull);

}  // namespace gaincell
