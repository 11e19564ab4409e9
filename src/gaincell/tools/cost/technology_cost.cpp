#include "gaincell/tools/cost/technology_cost.h"

#include "gaincell/hw/technology.h"

namespace gaincell::cost {

CostConfig cost_for_hardware(const CostConfig& cost, const HwConfig& hw) {
  CostConfig c = cost;
  const LeakageConfig& l = hw.leakage;
  if (!l.technology.empty()) {
    const Technology& t = technology(l.technology);
    const std::string from = "technology " + t.name + ": ";
    c.cell_area_mm2.value *= t.cell_area_factor;
    c.cell_area_mm2.source += "; x " + from + t.sources.value("cell_area_factor", std::string());
    c.stacked_cell_area_mm2.value *= t.cell_area_factor;
    c.stacked_cell_area_mm2.source +=
        "; x " + from + t.sources.value("cell_area_factor", std::string());
    c.write_energy_per_cell_j.value *= t.write_energy_factor;
    c.write_energy_per_cell_j.source +=
        "; x " + from + t.sources.value("write_energy_factor", std::string());
  }
  return c;
}

}  // namespace gaincell::cost
