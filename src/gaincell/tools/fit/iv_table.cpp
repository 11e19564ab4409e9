#include "gaincell/tools/fit/iv_table.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "gaincell/core/error.h"
#include "gaincell/core/file_io.h"

namespace gaincell::fit {

namespace {

std::vector<std::string> split_commas(const std::string& line) {
  std::vector<std::string> out;
  std::string cell;
  std::istringstream in(line);
  while (std::getline(in, cell, ',')) out.push_back(cell);
  if (!line.empty() && line.back() == ',') out.emplace_back();
  return out;
}

double parse_number(const std::string& s, const std::string& where) {
  const char* begin = s.c_str();
  char* end = nullptr;
  errno = 0;
  const double v = std::strtod(begin, &end);
  while (end && (*end == ' ' || *end == '\r')) ++end;
  if (end == begin || (end && *end != '\0') || errno == ERANGE || !std::isfinite(v)) {
    throw Error(where + ": '" + s + "' is not a finite number");
  }
  return v;
}

void require_increasing(const std::vector<double>& axis, const std::string& what) {
  for (size_t i = 1; i < axis.size(); ++i)
    require(axis[i] > axis[i - 1], what + " values must be strictly increasing");
}

}  // namespace

size_t IvTable::column_of(double v) const {
  for (size_t c = 0; c < vin.size(); ++c)
    if (std::fabs(vin[c] - v) < 1e-6) return c;
  throw Error("the table has no column at Vin = " + std::to_string(v) + " V");
}

IvTable parse_iv_table(const std::string& text, const std::string& source_name) {
  IvTable t;
  std::istringstream in(text);
  std::string line;
  size_t line_no = 0;
  bool have_header = false;
  while (std::getline(in, line)) {
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    if (line[0] == '#') {
      t.comments.push_back(line.size() > 2 && line[1] == ' ' ? line.substr(2) : line.substr(1));
      continue;
    }
    const std::string where = source_name + " line " + std::to_string(line_no);
    const auto cells = split_commas(line);
    if (!have_header) {
      require(cells.size() >= 3 && cells[0] == "vstore_v",
              where + ": expected header 'vstore_v,vin=...,vin=...'");
      for (size_t c = 1; c < cells.size(); ++c) {
        require(cells[c].rfind("vin=", 0) == 0,
                where + ": header column '" + cells[c] + "' must look like 'vin=<volts>'");
        t.vin.push_back(parse_number(cells[c].substr(4), where));
      }
      have_header = true;
      continue;
    }
    require(cells.size() == t.vin.size() + 1, where + ": expected " +
                                                  std::to_string(t.vin.size() + 1) +
                                                  " values, found " + std::to_string(cells.size()));
    t.vstore.push_back(parse_number(cells[0], where));
    for (size_t c = 1; c < cells.size(); ++c) t.iout.push_back(parse_number(cells[c], where));
  }
  require(have_header, source_name + ": no header line 'vstore_v,vin=...' (empty or not a table)");
  require(t.vstore.size() >= 2, source_name + ": needs at least 2 Vstore rows");
  require_increasing(t.vstore, source_name + ": Vstore");
  require_increasing(t.vin, source_name + ": Vin");
  return t;
}

IvTable read_iv_table(const std::filesystem::path& path) {
  return parse_iv_table(read_text_file(path), path.string());
}

std::string format_iv_table(const IvTable& t) {
  require(t.iout.size() == t.vstore.size() * t.vin.size(), "I-V table: inconsistent shape");
  std::string out;
  for (const auto& c : t.comments) out += "# " + c + "\n";
  char buf[64];
  out += "vstore_v";
  for (double v : t.vin) {
    std::snprintf(buf, sizeof buf, ",vin=%.6f", v);
    out += buf;
  }
  out += "\n";
  for (size_t r = 0; r < t.vstore.size(); ++r) {
    std::snprintf(buf, sizeof buf, "%.6f", t.vstore[r]);
    out += buf;
    for (size_t c = 0; c < t.vin.size(); ++c) {
      std::snprintf(buf, sizeof buf, ",%.9e", t.at(r, c));
      out += buf;
    }
    out += "\n";
  }
  return out;
}

}  // namespace gaincell::fit
