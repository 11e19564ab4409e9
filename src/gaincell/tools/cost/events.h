// Event counts of a hardware-simulator run, the input of the activity-based energy estimate
// (docs/cost-model.md, "Trace format"). The simulator fills one HardwareEventCounts per run
// (totals over all tokens, heads and layers) and writes it with to_json(); `gaincell cost --trace`
// reads it back with from_json().
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>

namespace gaincell::cost {

struct HardwareEventCounts {
  // Run size: tokens processed (summed over all sequences), heads per layer, layers.
  int64_t tokens = 0;
  int64_t heads = 0;
  int64_t layers = 0;

  // Events, totals over the whole run (all tokens, heads, layers); docs/cost-model.md §2.
  // Gain cells written through a DAC (K and V).
  int64_t cell_writes = 0;
  // Q pulses on K-array rows: one per dimension and sub-tile; each drives N cells.
  int64_t q_pulses = 0;
  double q_pulse_width_sum_tmax = 0.0;  // sum of their widths, in units of Tmax
  // φ pulses on V-array rows: one per key slot; each drives D cells.
  int64_t phi_pulses = 0;
  double phi_pulse_width_sum_tmax = 0.0;  // sum of their widths, in units of Tmax
  // First-stage charge-to-pulse (HardSigmoid) conversions, one per key column.
  int64_t c2p_conversions = 0;
  // Output-stage signed charge-to-pulse conversions, D per sub-tile.
  int64_t output_conversions = 0;
  // Pulse-counter counts: sum of |output level| over the output conversions.
  int64_t counter_increments = 0;
  // Sub-tile (K array + V array pair) evaluations (informational).
  int64_t tile_reads = 0;
  // Additions of sub-tile outputs in the digital adders.
  int64_t digital_adds = 0;

  // Throws gaincell::Error naming the first invalid field (negative counts, widths larger than the
  // number of pulses, zero run size).
  void validate() const;

  // {"format": "gaincell-hardware-events", "version": 1, "tokens", "heads", "layers",
  //  "events": {...}}. from_json rejects missing or unknown event keys and wrong types.
  nlohmann::json to_json() const;
  static HardwareEventCounts from_json(const nlohmann::json& j);
};

}  // namespace gaincell::cost
