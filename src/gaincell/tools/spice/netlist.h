// Netlist text handling for the characterisation flow: parameter overrides on `.param` lines,
// replacement of the stimulus sources, appending analyses, and a content hash recorded with every
// fitted device (style lesson 15: cache fits with the netlist hash that produced them).
#pragma once

#include <map>
#include <string>

namespace gaincell::spice {

// Replaces the value of each `.param NAME=...` line (one parameter per line, case-insensitive
// name). Throws gaincell::Error naming a parameter the netlist does not define.
std::string apply_params(const std::string& netlist,
                         const std::map<std::string, std::string>& params);

// Value text of `.param NAME=VALUE` (throws when absent).
std::string param_value(const std::string& netlist, const std::string& name);

// Replaces the element line whose first token is `name` (case-insensitive) by `line`, including its
// '+' continuation lines. Throws gaincell::Error when the netlist has no such element.
std::string replace_element(const std::string& netlist, const std::string& name,
                            const std::string& line);

// Removes the final `.end` and appends `cards` (analysis, options) and a new `.end`.
std::string with_cards(const std::string& netlist, const std::string& cards);

// 64-bit FNV-1a of the text, as 16 hex digits.
std::string netlist_hash(const std::string& text);

// Parses a SPICE number with an optional scale suffix (f p n u m k meg g t), e.g. "50u".
double parse_spice_number(const std::string& text);

}  // namespace gaincell::spice
