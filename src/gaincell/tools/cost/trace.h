// Activity traces from the simulator: the hardware events counted by the gain-cell arrays of a
// token-by-token run (array/head_array.h), summed over heads and layers in the format of the
// cost model (events.h), so `gaincell generate --trace FILE` feeds `gaincell cost --trace FILE`.
#pragma once

#include <optional>

#include "gaincell/array/head_array.h"
#include "gaincell/model/gpt2.h"
#include "gaincell/tools/cost/events.h"

namespace gaincell::cost {

// `events` summed over `heads` heads of `layers` layers for `tokens` decode steps.
HardwareEventCounts event_counts_from_arrays(const ArrayEvents& events, int64_t tokens, int heads,
                                             int layers);

// The events of every layer of a decode session; empty when its attention is not a gain-cell
// variant (nothing was simulated on arrays).
std::optional<HardwareEventCounts> decode_session_events(const DecodeSession& session,
                                                         const GPT2Config& config);

}  // namespace gaincell::cost
