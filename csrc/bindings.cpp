// pybind11 bindings for ltxengine._C: no logic here, only names and docstrings. Every function
// takes raw device addresses (tensor.data_ptr()), strides in elements and a stream handle
// (torch.cuda.current_stream().cuda_stream); argument errors raise ValueError before any device
// call. Call through ltxengine.ops.cuda, which builds these arguments from tensors.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "ada_norm.h"
#include "common.h"
#include "fp8_gemm.h"
#include "fp8_quantize.h"
#include "gated_residual.h"
#include "qk_norm_rope.h"

namespace py = pybind11;

static py::dict build_info() {
  py::dict info;
  info["cuda_version"] = CUDART_VERSION;
  return info;
}

PYBIND11_MODULE(_C, m) {
  m.doc() = "ltxengine CUDA kernels (raw-pointer interface; call through ltxengine.ops.cuda)";
  m.def("build_info", &build_info, "CUDA runtime version the extension was compiled against");

  py::class_<ltxe::Rows>(m, "Rows", "(batch, tokens, dim) view: address, strides in elements (0 broadcasts), "
                                    "last dim contiguous; bf16 elements unless fp32")
      .def(py::init<>())
      .def(py::init<uintptr_t, int64_t, int64_t, bool>(), py::arg("ptr"), py::arg("batch_stride"),
           py::arg("token_stride"), py::arg("fp32") = false)
      .def_readwrite("ptr", &ltxe::Rows::ptr)
      .def_readwrite("batch_stride", &ltxe::Rows::batch_stride)
      .def_readwrite("token_stride", &ltxe::Rows::token_stride)
      .def_readwrite("fp32", &ltxe::Rows::fp32);

  py::class_<ltxe::Rope>(m, "Rope", "fp32 RoPE table: layout 'none' | 'interleaved' (B|1, N, D) | "
                                    "'split' (B|1, H, N, D/H/2); strides in elements (0 broadcasts)")
      .def(py::init<>())
      .def(py::init<std::string, uintptr_t, uintptr_t, int64_t, int64_t, int64_t, int64_t>(), py::arg("layout"),
           py::arg("cos"), py::arg("sin"), py::arg("batch_stride"), py::arg("head_stride"), py::arg("token_stride"),
           py::arg("heads"))
      .def_readwrite("layout", &ltxe::Rope::layout)
      .def_readwrite("cos", &ltxe::Rope::cos)
      .def_readwrite("sin", &ltxe::Rope::sin)
      .def_readwrite("batch_stride", &ltxe::Rope::batch_stride)
      .def_readwrite("head_stride", &ltxe::Rope::head_stride)
      .def_readwrite("token_stride", &ltxe::Rope::token_stride)
      .def_readwrite("heads", &ltxe::Rope::heads);

  m.def("qk_norm_rope", &ltxe::qk_norm_rope,
        "q/k RMSNorm over the full width (learned weight) then RoPE, q and k in one launch; bf16 output, or "
        "e4m3 = value / scale when q_scale/k_scale are given",
        py::arg("q"), py::arg("k"), py::arg("q_out"), py::arg("k_out"), py::arg("q_weight"), py::arg("k_weight"),
        py::arg("weight_fp32"), py::arg("q_rope"), py::arg("k_rope"), py::arg("q_scale"), py::arg("k_scale"),
        py::arg("batch"), py::arg("q_tokens"), py::arg("k_tokens"), py::arg("dim"), py::arg("eps"),
        py::arg("stream") = 0);

  m.def("ada_norm", &ltxe::ada_norm, "out = norm(x) * (1 + scale) + shift, norm 'rms' or 'layer' (no affine)",
        py::arg("x"), py::arg("shift"), py::arg("scale"), py::arg("out"), py::arg("batch"), py::arg("tokens"),
        py::arg("dim"), py::arg("eps"), py::arg("kind"), py::arg("stream") = 0);

  m.def("gated_residual", &ltxe::gated_residual,
        "out = x + gate * y over (batch, tokens, dim) views; gate Rows() (ptr 0) means 1", py::arg("x"),
        py::arg("y"), py::arg("gate"), py::arg("out"), py::arg("batch"), py::arg("tokens"), py::arg("dim"),
        py::arg("stream") = 0);

  m.def("quantize_fp8_static", &ltxe::quantize_fp8_static,
        "out = e4m3(clamp(x / scale, +-448)); scale_row_stride 0 (per tensor) or 1 (per row)", py::arg("x"),
        py::arg("x_row_stride"), py::arg("out"), py::arg("out_row_stride"), py::arg("scale"),
        py::arg("scale_row_stride"), py::arg("rows"), py::arg("cols"), py::arg("stream") = 0);
  m.def("quantize_fp8_dynamic", &ltxe::quantize_fp8_dynamic,
        "scale_out = max(amax, 1e-12) / 448 per row (rows, 1) or per tensor (one scalar, reduced on the device), "
        "then out = e4m3(x / scale)",
        py::arg("x"), py::arg("x_row_stride"), py::arg("out"), py::arg("out_row_stride"), py::arg("scale_out"),
        py::arg("per_row"), py::arg("rows"), py::arg("cols"), py::arg("stream") = 0);

  // Not wired into any backend until a GPU run checks it (tests/kernels/test_fp8_gemm_cuda.py).
  m.def("fp8_gemm", &ltxe::fp8_gemm,
        "out = (a @ b^T) * scale_a * scale_b + bias (e4m3 in, fp32 accumulate, bf16 out; Hopper wgmma)", py::arg("a"),
        py::arg("b"), py::arg("scale_a"), py::arg("scale_b"), py::arg("bias"), py::arg("out"), py::arg("m"),
        py::arg("n"), py::arg("k"), py::arg("lda"), py::arg("scale_a_per_row"), py::arg("scale_b_per_col"),
        py::arg("stream") = 0);
}
