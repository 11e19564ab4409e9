// Event counts of a hardware-simulator run, the input of the activity-based energy estimate
// (docs/cost-model.md, "Trace format"). The events themselves are hw/hardware_events.h (the same
// struct the simulated arrays count); this adds the run size. The simulator fills one
// HardwareEventCounts per run (totals over all tokens, heads and layers) and writes it with
// to_json(); `gaincell cost --trace` reads it back with from_json().
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

#include "gaincell/hw/hardware_events.h"

namespace gaincell::cost {

struct HardwareEventCounts : HardwareEvents {
  // Run size: tokens processed (summed over all sequences), heads per layer, layers. The events
  // are totals over the whole run (all tokens, heads, layers).
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t layers = 0;

  // Throws gaincell::Error naming the first invalid field (negative counts, widths larger than the
  // number of pulses, zero run size).
  void validate() const;

  // {"format": "gaincell-hardware-events", "version": 1, "tokens", "heads", "layers",
  //  "events": {...}}. from_json rejects missing or unknown event keys and wrong types.
  nlohmann::json to_json() const;
  static HardwareEventCounts from_json(const nlohmann::json& j);
};

}  // namespace gaincell::cost
