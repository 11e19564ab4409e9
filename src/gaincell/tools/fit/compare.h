// Closing the loop (issue 6, point 5): the cell current a hardware configuration implies, compared
// point by point with a SPICE table at the configuration's read amplitude.
#pragma once

#include <string>
#include <vector>

#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/fit/iv_table.h"

namespace gaincell::fit {

// Per-cell current in uA for a full-width pulse (x = 1) at stored voltage `vstore`: the polynomial
// sum_i alpha_i (V - k_offset)^i (spec §2.3) or linear_amplitude (V - k_offset) (spec §2.4).
// Throws gaincell::Error for the ablation cell models, which have no current scale.
double hw_cell_current_ua(const HwConfig& hw, double vstore);

struct ModelComparison {
  double vin = 0;
  std::vector<double> vstore, spice_ua, model_ua;
  double rms_ua = 0, max_abs_ua = 0;
  std::string csv() const;  // vstore_v,spice_ua,model_ua,diff_ua
};

ModelComparison compare_hw_to_table(const HwConfig& hw, const IvTable& table);

}  // namespace gaincell::fit

namespace gaincell::fit {

// RMS and max |a - ref| in uA over the reference grid, with `a` linearly interpolated along Vstore
// (both tables must share the Vin columns; vin_only >= 0 restricts to one column).
struct TableDifference {
  double rms_ua = 0, max_abs_ua = 0;
  size_t points = 0;
};
TableDifference compare_tables(const IvTable& a, const IvTable& ref, double vin_only = -1.0);

// Vstore where Iout at column `vin` changes sign (linear interpolation); NaN when it never does.
double zero_crossing_vstore(const IvTable& t, double vin);
// True when Iout at column `vin` is strictly increasing in Vstore.
bool is_monotone_increasing(const IvTable& t, double vin);

}  // namespace gaincell::fit
