"""quantize_fp8: x -> (e4m3 values, fp32 scale), static or dynamic (per tensor or per row).

Reference: ``reference.quantize_fp8``. Kernels: Triton ``kernels/fp8_gemm.py``; CUDA
``cuda.quantize_fp8`` -> ``csrc/fp8_quantize.{cpp,cu}``.
"""

from __future__ import annotations

import torch

from .library import FusedOp, empty

SCHEMA = "(Tensor x, Tensor? scale, bool per_row, Tensor(a!) out, Tensor(b!) scale_out) -> ()"


def adapter(launch):
    def impl(x, scale, per_row, out, scale_out) -> None:
        launch(x, scale, per_row, out=out, scale_out=scale_out)

    return impl


def wrap(op):
    def quantize_fp8(x, scale=None, per_row=False, *, out=None, scale_out=None):
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            raise ValueError(f"quantize_fp8: x must be a tensor with at least 1 dim, got {type(x).__name__}")
        rows = x.numel() // max(x.shape[-1], 1)
        out = empty((rows, x.shape[-1]), x, torch.float8_e4m3fn) if out is None else out
        if scale_out is None:
            shape = (rows, 1) if per_row and scale is None else (() if scale is None else scale.shape)
            scale_out = empty(shape, x, torch.float32)
        op(x, scale, per_row, out, scale_out)
        return out, scale_out

    return quantize_fp8


def _triton():
    from ..kernels.fp8_gemm import quantize_fp8
    return quantize_fp8


def _cuda():
    from .cuda import quantize_fp8
    return quantize_fp8


QUANTIZE_FP8 = FusedOp("quantize_fp8", SCHEMA, adapter, wrap, launchers={"triton": _triton, "cuda": _cuda},
                       auto=("triton", "cuda"))
