"""scaled_mm: (a @ b.T) * scale_a * scale_b.T + bias for e4m3 a and b, fp32 accumulation.

Reference: ``reference.scaled_mm``. Kernels: Triton ``kernels/fp8_gemm.py``; under
kernels="cuda", cuBLASLt through ``torch._scaled_mm`` (``cublas.py``), itself an aten op, so it
is put on ``Ops`` as it is. Our wgmma fp8 GEMM (csrc/fp8_gemm.cu) is not wired here until a GPU
run has checked it against the reference and measured it against cuBLASLt
(tests/kernels/test_fp8_gemm_cuda.py, bench/).
"""

from __future__ import annotations

import torch

from .library import FusedOp, check_tensor, empty

SCHEMA = "(Tensor a, Tensor b, Tensor scale_a, Tensor scale_b, Tensor? bias, Tensor(a!) out) -> ()"


def adapter(launch):
    def impl(a, b, sa, sb, bias, out) -> None:
        launch(a, b, sa, sb, bias, out.dtype, out=out)

    return impl


def wrap(op):
    def scaled_mm(a, b, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16, *, out=None):
        check_tensor("scaled_mm", "a", a, 2)
        check_tensor("scaled_mm", "b", b, 2)
        out = empty((a.shape[0], b.shape[0]), a, out_dtype) if out is None else out
        op(a, b, scale_a, scale_b, bias, out)
        return out

    return scaled_mm


def _triton():
    from ..kernels.fp8_gemm import scaled_mm
    return scaled_mm


def _cublas():
    from .cublas import scaled_mm
    return scaled_mm


SCALED_MM = FusedOp("scaled_mm", SCHEMA, adapter, wrap, launchers={"triton": _triton},
                    plain={"cuda": ("cublas", _cublas)}, auto=("cuda", "triton"))
