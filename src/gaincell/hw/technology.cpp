#include "gaincell/hw/technology.h"

#include "gaincell/core/error.h"

namespace gaincell {

const std::vector<Technology>& technologies() {
  static const std::vector<Technology> list = [] {
    Technology si;
    si.name = "si-cmos";
    si.description = "silicon CMOS gain cell with a storage capacitor (the paper's design)";
    si.retention_time_s = 5e-3;
    si.sources = {
        {"retention_time_s",
         "spec §1.3 [SUM]: 'relatively short retention time of 5 ms due to capacitor leakage'"},
        {"cell_area_factor", "1: the cost preset 'paper' is calibrated on this cell (spec §9.2)"},
        {"write_energy_factor", "1: the cost preset 'paper' is calibrated on this cell"}};
    Technology os;
    os.name = "osfet-igzo";
    os.description =
        "oxide-semiconductor (IGZO) two-transistor gain cell without capacitor (2T0C); the "
        "paper names OSFET cells for dense 3D integration and much longer retention (spec §1.3)";
    os.retention_time_s = 100.0;
    os.sources = {
        {"retention_time_s",
         "Li et al., Science Advances 11(21) eadu4323 (2025): 3D-stacked 8x8 IGZO 2T0C array, "
         "3-bit storage, retention over 100 s (Belmonte et al., IEDM 2020, report > 400 s for a "
         "single IGZO 2T0C cell)"},
        {"cell_area_factor",
         "assumption: the planar footprint of the silicon cell; 3D stacking is the cost model's "
         "separate stack_layers parameter"},
        {"write_energy_factor",
         "assumption: as the silicon cell (no published write energy at this operating point)"}};
    return std::vector<Technology>{si, os};
  }();
  return list;
}

const Technology& technology(std::string_view name) {
  std::string known;
  for (const Technology& t : technologies()) {
    if (t.name == name) return t;
    known += (known.empty() ? "" : ", ") + t.name;
  }
  throw Error("unknown gain-cell technology '" + std::string(name) + "' (known: " + known + ")");
}

nlohmann::json Technology::to_json() const {
  return {{"name", name},
          {"description", description},
          {"retention_time_s", retention_time_s},
          {"cell_area_factor", cell_area_factor},
          {"write_energy_factor", write_energy_factor},
          {"sources", sources}};
}

}  // namespace gaincell
