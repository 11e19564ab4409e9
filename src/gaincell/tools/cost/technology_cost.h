// The cost parameters a hardware configuration's storage technology and retention imply
// (hw/technology.h, issue 13 item 4): the retention time that decides refresh, and the cell area
// and write energy relative to the calibrated silicon cell.
#pragma once

#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/cost/cost_config.h"

namespace gaincell::cost {

// `cost` with retention_time_s from hw.leakage (its retention_time_s, else its technology's), and
// cell areas and write energy scaled by the technology's factors; unchanged when hw.leakage
// names neither. Sources name where each changed value came from.
CostConfig cost_for_hardware(const CostConfig& cost, const HwConfig& hw);

}  // namespace gaincell::cost
