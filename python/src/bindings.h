// Shared helpers of the pybind11 bindings (module gaincell._core): array checks that turn bad
// input into clear Python exceptions, and JSON <-> Python conversion.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "gaincell/hw/hw_config.h"

namespace gaincell::python {

namespace py = pybind11;

// Python object (dict, list, numbers, strings) -> JSON, through Python's json module (which also
// rejects what JSON cannot hold).
nlohmann::json to_json(const py::handle& obj);
py::object from_json(const nlohmann::json& j);

// Raises TypeError/ValueError unless `a` is a C-contiguous float32 array of exactly `shape`
// (-1 = any extent). Returns the shape. The data is used in place (no copy).
std::vector<py::ssize_t> require_float_array(const py::array& a, const char* what,
                                             const std::vector<py::ssize_t>& shape);
// Token ids: a C-contiguous int32/int64 array or a sequence of ints, 1-D or 2-D, every id in
// [0, vocab). Copied to int32 (ids are small).
struct TokenBatch {
  std::vector<int32_t> ids;
  int rows = 1, cols = 0;
  bool batched = false;  // the input was 2-D
};
TokenBatch read_tokens(const py::handle& obj, int vocab, const char* what);

// An HwConfig from an HwConfig, a preset name or JSON file path (as --hw), or a dict.
HwConfig hw_from_object(const py::handle& obj);

void bind_hw(py::module_& m);
void bind_attention(py::module_& m);
void bind_model(py::module_& m);

}  // namespace gaincell::python
