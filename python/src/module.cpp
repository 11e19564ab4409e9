// gaincell._core: the pybind11 extension behind the Python package `gaincell` (python/gaincell/).
#include "bindings.h"
#include "gaincell/core/error.h"
#include "gaincell/core/json.h"

namespace gaincell::python {

nlohmann::json to_json(const py::handle& obj) {
  const std::string text = py::module_::import("json")
                               .attr("dumps")(obj, py::arg("allow_nan") = false)
                               .cast<std::string>();
  return parse_json(text, "Python object");  // depth limit, checked numbers
}

py::object from_json(const nlohmann::json& j) {
  return py::module_::import("json").attr("loads")(j.dump());
}

namespace {

std::string shape_text(const std::vector<py::ssize_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) {
    s += (i ? ", " : "") + (shape[i] < 0 ? std::string("*") : std::to_string(shape[i]));
  }
  return s + (shape.size() == 1 ? ",)" : ")");
}

}  // namespace

std::vector<py::ssize_t> require_float_array(const py::array& a, const char* what,
                                             const std::vector<py::ssize_t>& shape) {
  if (!a.dtype().is(py::dtype::of<float>())) {
    throw py::type_error(std::string(what) + " must be float32, got " +
                         py::str(a.dtype()).cast<std::string>());
  }
  std::vector<py::ssize_t> got(a.shape(), a.shape() + a.ndim());
  bool ok = got.size() == shape.size();
  for (size_t i = 0; ok && i < shape.size(); ++i) ok = shape[i] < 0 || shape[i] == got[i];
  if (!ok) {
    throw py::value_error(std::string(what) + " must have shape " + shape_text(shape) + ", got " +
                          shape_text(got));
  }
  if (!(a.flags() & py::array::c_style)) {
    throw py::value_error(std::string(what) +
                          " must be C-contiguous (call .contiguous() on a tensor or "
                          "numpy.ascontiguousarray on an array)");
  }
  return got;
}

TokenBatch read_tokens(const py::handle& obj, int vocab, const char* what) {
  py::array arr = py::array::ensure(obj);
  if (!arr) throw py::type_error(std::string(what) + " must be a sequence or array of token ids");
  if (arr.dtype().kind() != 'i' && arr.dtype().kind() != 'u') {
    throw py::type_error(std::string(what) + " must hold integers, got " +
                         py::str(arr.dtype()).cast<std::string>());
  }
  if (arr.ndim() != 1 && arr.ndim() != 2) {
    throw py::value_error(std::string(what) + " must be 1-D [T] or 2-D [B, T], got " +
                          std::to_string(arr.ndim()) + " dimensions");
  }
  auto ids = py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(arr);
  TokenBatch t;
  t.batched = arr.ndim() == 2;
  t.rows = t.batched ? static_cast<int>(arr.shape(0)) : 1;
  t.cols = static_cast<int>(arr.shape(arr.ndim() - 1));
  if (t.rows < 1 || t.cols < 1) throw py::value_error(std::string(what) + " is empty");
  t.ids.resize(static_cast<size_t>(t.rows) * t.cols);
  const int64_t* p = ids.data();
  for (size_t i = 0; i < t.ids.size(); ++i) {
    if (p[i] < 0 || p[i] >= vocab) {
      throw py::value_error(std::string(what) + ": token id " + std::to_string(p[i]) +
                            " at index " + std::to_string(i) + " is outside the vocabulary [0, " +
                            std::to_string(vocab) + ")");
    }
    t.ids[i] = static_cast<int32_t>(p[i]);
  }
  return t;
}

}  // namespace gaincell::python

PYBIND11_MODULE(_core, m) {
  namespace gp = gaincell::python;
  m.doc() = "gaincell: gain-cell analog attention simulator (C++ core)";
  m.attr("__version__") = GAINCELL_VERSION;
  // Every gaincell::Error (bad files, configurations, values) arrives as gaincell.Error, a
  // ValueError, with the message the CLI prints.
  pybind11::register_exception<gaincell::Error>(m, "Error", PyExc_ValueError);
  gp::bind_hw(m);
  gp::bind_attention(m);
  gp::bind_model(m);
}
