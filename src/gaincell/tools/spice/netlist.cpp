#include "gaincell/tools/spice/netlist.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <vector>

#include "gaincell/core/error.h"

namespace gaincell::spice {

namespace {

std::string lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::vector<std::string> split_lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    lines.push_back(line);
  }
  return lines;
}

std::string join_lines(const std::vector<std::string>& lines) {
  std::string out;
  for (const auto& l : lines) out += l + "\n";
  return out;
}

std::string first_token(const std::string& line) {
  std::istringstream in(line);
  std::string tok;
  in >> tok;
  return tok;
}

// For ".param name=value" returns true and sets name/value position.
bool parse_param_line(const std::string& line, std::string& name, size_t& value_pos) {
  const std::string l = lower(line);
  size_t p = l.find_first_not_of(" \t");
  if (p == std::string::npos || l.compare(p, 6, ".param") != 0) return false;
  p = l.find_first_not_of(" \t", p + 6);
  if (p == std::string::npos) return false;
  const size_t eq = l.find('=', p);
  if (eq == std::string::npos) return false;
  name = l.substr(p, eq - p);
  while (!name.empty() && std::isspace(static_cast<unsigned char>(name.back()))) name.pop_back();
  value_pos = eq + 1;
  return true;
}

bool is_valid_param_value(const std::string& v) {
  if (v.empty()) return false;
  for (char c : v)
    if (std::isspace(static_cast<unsigned char>(c)) || c == '\n' || c == ';') return false;
  return true;
}

}  // namespace

std::string apply_params(const std::string& netlist,
                         const std::map<std::string, std::string>& params) {
  auto lines = split_lines(netlist);
  for (const auto& [name, value] : params) {
    require(is_valid_param_value(value),
            "netlist parameter '" + name + "': value '" + value + "' must be one token");
    bool found = false;
    for (auto& line : lines) {
      std::string pname;
      size_t pos = 0;
      if (parse_param_line(line, pname, pos) && pname == lower(name)) {
        line = line.substr(0, pos) + value;
        found = true;
      }
    }
    require(found, "netlist has no '.param " + name + "=...' line to override");
  }
  return join_lines(lines);
}

std::string param_value(const std::string& netlist, const std::string& name) {
  for (const auto& line : split_lines(netlist)) {
    std::string pname;
    size_t pos = 0;
    if (parse_param_line(line, pname, pos) && pname == lower(name)) {
      std::string v = line.substr(pos);
      const size_t a = v.find_first_not_of(" \t");
      const size_t b = v.find_last_not_of(" \t");
      return a == std::string::npos ? "" : v.substr(a, b - a + 1);
    }
  }
  throw Error("netlist has no '.param " + name + "=...' line");
}

std::string replace_element(const std::string& netlist, const std::string& name,
                            const std::string& line) {
  auto lines = split_lines(netlist);
  std::vector<std::string> out;
  bool found = false;
  for (size_t k = 0; k < lines.size(); ++k) {
    if (k > 0 && lower(first_token(lines[k])) == lower(name)) {
      out.push_back(line);
      found = true;
      while (k + 1 < lines.size() && !lines[k + 1].empty() && lines[k + 1][0] == '+') ++k;
      continue;
    }
    out.push_back(lines[k]);
  }
  require(found, "netlist has no element '" + name +
                     "' (required by gaincell characterize, see "
                     "docs/spice.md)");
  return join_lines(out);
}

std::string with_cards(const std::string& netlist, const std::string& cards) {
  auto lines = split_lines(netlist);
  while (!lines.empty() && first_token(lines.back()).empty()) lines.pop_back();
  if (!lines.empty() && lower(first_token(lines.back())) == ".end") lines.pop_back();
  return join_lines(lines) + cards + (cards.empty() || cards.back() == '\n' ? "" : "\n") + ".end\n";
}

std::string netlist_hash(const std::string& text) {
  uint64_t h = 14695981039346656037ull;  // FNV-1a 64-bit offset basis
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

double parse_spice_number(const std::string& text) {
  const char* begin = text.c_str();
  char* end = nullptr;
  double v = std::strtod(begin, &end);
  require(end != begin && std::isfinite(v), "'" + text + "' is not a SPICE number");
  const std::string suffix = lower(std::string(end));
  static const std::pair<const char*, double> kScales[] = {{"meg", 1e6}, {"f", 1e-15}, {"p", 1e-12},
                                                           {"n", 1e-9},  {"u", 1e-6},  {"m", 1e-3},
                                                           {"k", 1e3},   {"g", 1e9},   {"t", 1e12}};
  if (suffix.empty()) return v;
  for (const auto& [s, scale] : kScales)
    if (suffix.rfind(s, 0) == 0) return v * scale;
  // SPICE ignores unit letters after the number (e.g. "1.0v").
  require(std::isalpha(static_cast<unsigned char>(suffix[0])),
          "'" + text + "' is not a SPICE number");
  return v;
}

}  // namespace gaincell::spice
