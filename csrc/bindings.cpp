// pybind11 bindings for ltxengine._C: no logic here, only names and docstrings.
#include <pybind11/pybind11.h>

#include "gated_residual.h"

namespace py = pybind11;

static py::dict build_info() {
  py::dict info;
  info["cuda_version"] = CUDART_VERSION;
  return info;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "ltxengine CUDA kernels (raw-pointer interface; call through ltxengine.ops)";
  m.def("build_info", &build_info, "CUDA runtime version the extension was compiled against");
  m.def("gated_residual", &ltxe::gated_residual, "out = x + gate * y (bf16, contiguous rows)", py::arg("x"),
        py::arg("y"), py::arg("gate"), py::arg("out"), py::arg("rows"), py::arg("dim"), py::arg("gate_rows"),
        py::arg("stream") = 0);
}
