// The hardware events of gain-cell attention (docs/cost-model.md §2): counted by the simulated
// arrays (array/head_array.h, ArrayEvents) and priced by the cost model (tools/cost/events.h,
// HardwareEventCounts). Both derive from this one struct, and one field list (for_each_field)
// drives summing, comparing, JSON and validation, so a new event is one edit here.
#pragma once

#include <cstdint>

namespace gaincell {

struct HardwareEvents {
  // Gain cells written through a DAC (K and V): 2 * head_dim per token.
  int64_t cell_writes = 0;
  // Nonzero Q pulses on K-array rows: one per dimension and active sub-tile; each drives N cells.
  int64_t q_pulses = 0;
  double q_pulse_width_sum_tmax = 0.0;  // sum of their widths, in units of Tmax
  // Nonzero φ pulses on V-array rows: one per key slot with φ > 0; each drives D cells.
  int64_t phi_pulses = 0;
  double phi_pulse_width_sum_tmax = 0.0;  // sum of their widths, in units of Tmax
  // First-stage charge-to-pulse (HardSigmoid) conversions, one per active key column.
  int64_t c2p_conversions = 0;
  // Output-stage signed charge-to-pulse conversions: head_dim per active sub-tile.
  int64_t output_conversions = 0;
  // Pulse-counter counts: sum of |output level| over the output conversions.
  int64_t counter_increments = 0;
  // Sub-tiles (K array + V array pair) read.
  int64_t tile_reads = 0;
  // Additions of sub-tile outputs in the digital adders: (active sub-tiles - 1) * head_dim.
  int64_t digital_adds = 0;

  // Calls f(name, pointer-to-member) for every event in file order; the name is the JSON key.
  template <typename F>
  static constexpr void for_each_field(F&& f) {
    f("cell_writes", &HardwareEvents::cell_writes);
    f("q_pulses", &HardwareEvents::q_pulses);
    f("q_pulse_width_sum_tmax", &HardwareEvents::q_pulse_width_sum_tmax);
    f("phi_pulses", &HardwareEvents::phi_pulses);
    f("phi_pulse_width_sum_tmax", &HardwareEvents::phi_pulse_width_sum_tmax);
    f("c2p_conversions", &HardwareEvents::c2p_conversions);
    f("output_conversions", &HardwareEvents::output_conversions);
    f("counter_increments", &HardwareEvents::counter_increments);
    f("tile_reads", &HardwareEvents::tile_reads);
    f("digital_adds", &HardwareEvents::digital_adds);
  }

  HardwareEvents& operator+=(const HardwareEvents& o) {
    for_each_field([&](const char*, auto member) { this->*member += o.*member; });
    return *this;
  }
  bool operator==(const HardwareEvents& o) const = default;
};

}  // namespace gaincell
