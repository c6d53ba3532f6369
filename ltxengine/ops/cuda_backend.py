"""kernels="cuda": the CUDA C++ kernels of ``ltxengine._C`` for the memory-bound fusions and fp8
quantization, cuBLASLt (``torch._scaled_mm``) for fp8 GEMMs, cuDNN (the reference) for conv3d.

Our wgmma fp8 GEMM (csrc/fp8_gemm.cu) is not wired here until a GPU run has checked it against
the reference and measured it against cuBLASLt (tests/kernels/test_fp8_gemm_cuda.py, bench/).
"""

from __future__ import annotations

from . import cublas
from .library import bind, register


def build():
    from . import cuda

    if not cuda.available():
        raise RuntimeError("kernels='cuda': ltxengine._C is missing or no CUDA device is usable")
    handles = register("cuda", {
        "qk_norm_rope": cuda.qk_norm_rope,
        "ada_norm": cuda.ada_norm,
        "gated_residual": cuda.gated_residual,
        "quantize_fp8": cuda.quantize_fp8,
    })
    return bind(handles, "cuda", extra={"scaled_mm": cublas.scaled_mm}, extra_sources={"scaled_mm": "cublas"})
