// Memory estimates checked before allocation (issue 17 item 6): a model or batch that cannot fit
// is refused with the estimate and what is available, instead of an out-of-memory kill or
// std::bad_alloc in the middle of a run. The sums are in double, so absurd configurations
// (n_layer 2147483647) give an honest huge number instead of an integer overflow.
#pragma once

#include <cstdint>
#include <string>

#include "gaincell/model/gpt2.h"

namespace gaincell {

// Parameters of a GPT-2-shaped model (embeddings, blocks, final norm, an untied LM head), without
// variant extras.
double estimated_param_count(const GPT2Config& config);
// Weights, plus gradients when `with_grads`. `stored` bf16 or q8: a model loaded straight into
// packed storage (GPT2Model::begin_packed_load), whose projection matrices and LM head take their
// packed size and are not held in fp32 (a tied LM head is also the embedding: fp32 and packed).
double estimated_model_bytes(const GPT2Config& config, bool with_grads,
                             WeightFormat stored = WeightFormat::kF32);
// The address space the model's allocations map, which RLIMIT_AS / RLIMIT_DATA (`ulimit -v`,
// `ulimit -d`) count: a packed load maps the whole fp32 parameter buffer (calloc'd, its matrices'
// pages never touched) beside the packed matrices, so it maps more than it makes resident.
double estimated_model_address_space(const GPT2Config& config, WeightFormat stored);
// Training with micro-batches of B x T tokens: weights, gradients, AdamW moments, forward
// activations and backward scratch, logits.
double estimated_training_bytes(const GPT2Config& config, int batch, int seq_len);

// Bytes this process may still make resident: the smaller of MemAvailable + SwapFree
// (/proc/meminfo) and $GAINCELL_MEMORY_LIMIT (bytes; for tests and for users who want a lower
// ceiling). 0 when nothing is known (then no check is made).
uint64_t available_memory_bytes();
// Address space this process may still map: the smaller of RLIMIT_AS and RLIMIT_DATA less what
// it maps already (/proc/self/status VmSize). 0 when neither limit is set.
uint64_t available_address_space_bytes();

// Throws Error("<what> needs about X GB (<detail>), more than the Y GB available") when `bytes`
// (what the allocation makes resident) exceeds available_memory_bytes(), and an error that names
// the process's address-space limit when `mapped_bytes` (what it maps; `bytes` when negative)
// exceeds available_address_space_bytes().
void require_memory(double bytes, const std::string& what, const std::string& detail,
                    double mapped_bytes = -1.0);

// "1.5 GB", "12.0 MB", "3.2e+09 TB".
std::string format_bytes(double bytes);

}  // namespace gaincell
