// gaincell.HwConfig: the typed hardware configuration, loaded and validated by the same code as
// the CLI's --hw (HwConfig::load / from_json), so errors carry the CLI's messages.
#include <filesystem>

#include "bindings.h"
#include "gaincell/core/error.h"
#include "gaincell/hw/hw_config.h"

namespace gaincell::python {

HwConfig hw_from_object(const py::handle& obj) {
  if (py::isinstance<HwConfig>(obj)) return obj.cast<HwConfig>();
  if (py::isinstance<py::str>(obj)) return HwConfig::load(obj.cast<std::string>());
  if (py::isinstance<py::dict>(obj)) {
    HwConfig hw = HwConfig::from_json(to_json(obj));
    hw.validate();
    return hw;
  }
  throw py::type_error("hw must be a gaincell.HwConfig, a preset name, a JSON file path or a dict");
}

void bind_hw(py::module_& m) {
  py::class_<HwConfig>(m, "HwConfig", R"(Hardware configuration of the gain-cell attention.

HwConfig(name_or_file="paper-nonlinear") takes a preset name or a JSON file, exactly as the CLI's
--hw option. See also HwConfig.preset, HwConfig.from_dict, HwConfig.from_file.)")
      .def(py::init([](const std::string& name_or_file) { return HwConfig::load(name_or_file); }),
           py::arg("name_or_file") = "paper-nonlinear")
      .def_static(
          "preset", [](const std::string& name) { return HwConfig::preset(name); }, py::arg("name"),
          "A named preset (see presets()).")
      .def_static("presets", &HwConfig::preset_names, "The preset names.")
      .def_static(
          "from_dict",
          [](const py::dict& d) {
            HwConfig hw = HwConfig::from_json(to_json(d));
            hw.validate();
            return hw;
          },
          py::arg("config"),
          "From a dict in the JSON file format (may start from {'preset': NAME}); unknown keys "
          "and bad values raise gaincell.Error naming the field.")
      .def_static(
          "from_file",
          [](const std::string& path) {
            require(std::filesystem::is_regular_file(path),
                    "hardware config file '" + path + "' does not exist");
            return HwConfig::load(path);
          },
          py::arg("path"), "From a JSON file (a relative device_file resolves against its folder).")
      .def(
          "to_dict", [](const HwConfig& hw) { return from_json(hw.to_json()); },
          "The effective configuration as a dict (HwConfig.from_dict(c.to_dict()) == c).")
      .def("validate", &HwConfig::validate)
      .def_property_readonly("name", [](const HwConfig& hw) { return hw.name; })
      .def_property_readonly("cell", [](const HwConfig& hw) { return to_string(hw.cell); })
      .def("__eq__",
           [](const HwConfig& a, const py::object& b) {
             if (!py::isinstance<HwConfig>(b)) return false;
             return a.to_json() == b.cast<const HwConfig&>().to_json();
           })
      .def("__repr__",
           [](const HwConfig& hw) { return "gaincell.HwConfig(" + hw.to_json().dump() + ")"; });
}

}  // namespace gaincell::python
