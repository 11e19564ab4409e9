// The cost parameters a hardware configuration's storage technology implies (hw/technology.h,
// issue 13 item 4): the cell area and write energy relative to the calibrated silicon cell. The
// retention time that decides refresh is the hardware's own (LeakageConfig::retention_s()).
#pragma once

#include "gaincell/hw/hw_config.h"
#include "gaincell/tools/cost/cost_config.h"

namespace gaincell::cost {

// `cost` with cell areas and write energy scaled by the technology's factors; unchanged when
// hw.leakage names no technology. Sources name where each changed value came from.
CostConfig cost_for_hardware(const CostConfig& cost, const HwConfig& hw);

}  // namespace gaincell::cost
