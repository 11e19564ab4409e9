// The gain-cell characterisation table Iout(Vstore, Vin) (spec §2.2): rows are stored voltages,
// columns read word-line voltages, values in ampere. Read and written in the CSV layout of
// ../shared/data/gaincell-reference/gain_cell_iv_table.csv: '#' comment lines, a header
// "vstore_v,vin=0.450000,...", then one row per Vstore.
#pragma once

#include <filesystem>
#include <string>
#include <vector>

namespace gaincell::fit {

struct IvTable {
  std::vector<double> vstore;         // V, rows
  std::vector<double> vin;            // V, columns
  std::vector<double> iout;           // A, row-major [vstore.size()][vin.size()]
  std::vector<std::string> comments;  // without the leading "# "

  double at(size_t row, size_t col) const { return iout[row * vin.size() + col]; }
  // Index of the column whose Vin is closest to `v`; throws when none lies within 1e-6 V.
  size_t column_of(double v) const;
};

// Throws gaincell::Error naming the problem (missing file, ragged rows, non-numbers, NaN,
// unsorted axes, fewer than 2 rows/columns).
IvTable parse_iv_table(const std::string& text, const std::string& source_name);
IvTable read_iv_table(const std::filesystem::path& path);

std::string format_iv_table(const IvTable& table);

}  // namespace gaincell::fit
