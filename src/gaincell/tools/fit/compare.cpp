#include "gaincell/tools/fit/compare.h"

#include <cmath>
#include <cstdio>

#include "gaincell/core/error.h"
#include "gaincell/device/gain_cell.h"

namespace gaincell::fit {

double hw_cell_current_ua(const HwConfig& hw, double vstore) {
  const GainCell cell(hw);
  if (!cell.is_polynomial())
    throw Error("model comparison supports the 'polynomial' and 'linear' cell models, not '" +
                to_string(hw.cell) + "'");
  return cell.current(vstore - hw.k_offset);
}

ModelComparison compare_hw_to_table(const HwConfig& hw, const IvTable& table) {
  ModelComparison m;
  m.vin = hw.vin;
  const size_t col = table.column_of(hw.vin);
  double sum_sq = 0;
  for (size_t r = 0; r < table.vstore.size(); ++r) {
    const double spice = table.at(r, col) * 1e6;
    const double model = hw_cell_current_ua(hw, table.vstore[r]);
    m.vstore.push_back(table.vstore[r]);
    m.spice_ua.push_back(spice);
    m.model_ua.push_back(model);
    sum_sq += (model - spice) * (model - spice);
    m.max_abs_ua = std::max(m.max_abs_ua, std::fabs(model - spice));
  }
  m.rms_ua = std::sqrt(sum_sq / table.vstore.size());
  return m;
}

std::string ModelComparison::csv() const {
  std::string out = "vstore_v,spice_ua,model_ua,diff_ua\n";
  char buf[128];
  for (size_t k = 0; k < vstore.size(); ++k) {
    std::snprintf(buf, sizeof buf, "%.6f,%.6f,%.6f,%.6f\n", vstore[k], spice_ua[k], model_ua[k],
                  model_ua[k] - spice_ua[k]);
    out += buf;
  }
  return out;
}

}  // namespace gaincell::fit

namespace gaincell::fit {

TableDifference compare_tables(const IvTable& a, const IvTable& ref, double vin_only) {
  TableDifference d;
  double sum_sq = 0;
  for (size_t c = 0; c < ref.vin.size(); ++c) {
    if (vin_only >= 0 && std::fabs(ref.vin[c] - vin_only) > 1e-6) continue;
    const size_t ca = a.column_of(ref.vin[c]);
    for (size_t r = 0; r < ref.vstore.size(); ++r) {
      const double v = ref.vstore[r];
      require(v >= a.vstore.front() - 1e-9 && v <= a.vstore.back() + 1e-9,
              "table comparison: reference Vstore outside the simulated range");
      size_t k = 1;
      while (k + 1 < a.vstore.size() && a.vstore[k] < v) ++k;
      const double w = (v - a.vstore[k - 1]) / (a.vstore[k] - a.vstore[k - 1]);
      const double ia = (1 - w) * a.at(k - 1, ca) + w * a.at(k, ca);
      const double diff = (ia - ref.at(r, c)) * 1e6;
      sum_sq += diff * diff;
      d.max_abs_ua = std::max(d.max_abs_ua, std::fabs(diff));
      ++d.points;
    }
  }
  require(d.points > 0, "table comparison: no common Vin column");
  d.rms_ua = std::sqrt(sum_sq / d.points);
  return d;
}

double zero_crossing_vstore(const IvTable& t, double vin) {
  const size_t c = t.column_of(vin);
  for (size_t r = 1; r < t.vstore.size(); ++r) {
    const double a = t.at(r - 1, c), b = t.at(r, c);
    if ((a <= 0 && b > 0) || (a >= 0 && b < 0))
      return t.vstore[r - 1] + (t.vstore[r] - t.vstore[r - 1]) * a / (a - b);
  }
  return NAN;
}

bool is_monotone_increasing(const IvTable& t, double vin) {
  const size_t c = t.column_of(vin);
  for (size_t r = 1; r < t.vstore.size(); ++r)
    if (!(t.at(r, c) > t.at(r - 1, c))) return false;
  return true;
}

}  // namespace gaincell::fit
