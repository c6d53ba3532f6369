"""ada_norm_fp8 / residual_ada_norm_fp8: the adaLN (after its pending residual) that also writes
its output as e4m3 with a per-row fp32 scale, for the fp8 GEMMs that read it.

fp8-scaled-mm's packed q/k/v (models/transformer.py ``Attention._in_proj``) quantize their
input per token: unfused, the norm writes the bf16 row and the quantizer reads it twice (amax,
then quantize) and writes the e4m3 copy. Fused, the row is quantized while it is in registers:
one read of the stream, no re-read of the normed row. The bf16 output is still written (LTX-2.3's
gate logits and STG's value path read it).

Reference: ``reference.ada_norm_fp8`` / ``residual_ada_norm_fp8`` = the norm, then
``quantize_fp8(out, per_row=True)``: the quantization reads the output as rounded to x.dtype,
so the kernel's (q, scale) equal quantize_fp8 of its own bf16 output bit for bit. Kernel:
Triton ``kernels/ada_norm.py`` (the norm kernels' ``QUANT`` option). No CUDA kernel.
"""

from __future__ import annotations

import torch

from .library import FusedOp, check_tensor, empty

SCHEMA = ("(Tensor x, Tensor? shift, Tensor? scale, float eps, str kind, Tensor(a!) out, Tensor(b!) q_out, "
          "Tensor(c!) scale_out) -> ()")
RESIDUAL_SCHEMA = ("(Tensor x, Tensor y, Tensor? gate, Tensor? shift, Tensor? scale, float eps, str kind, "
                   "Tensor(a!) x_out, Tensor(b!) norm_out, Tensor(c!) q_out, Tensor(d!) scale_out) -> ()")


def _fp8_outputs(fn, x, q_out, scale_out):
    check_tensor(fn, "x", x, 3)
    rows = x.shape[0] * x.shape[1]
    q_out = empty((rows, x.shape[2]), x, torch.float8_e4m3fn) if q_out is None else q_out
    return q_out, empty((rows, 1), x, torch.float32) if scale_out is None else scale_out


def adapter(launch):
    def impl(x, shift, scale, eps, kind, out, q_out, scale_out) -> None:
        launch(x, shift, scale, eps, kind, out=out, q_out=q_out, scale_out=scale_out)

    return impl


def wrap(op):
    def ada_norm_fp8(x, shift, scale, eps, kind="rms", *, out=None, q_out=None, scale_out=None):
        q_out, scale_out = _fp8_outputs("ada_norm_fp8", x, q_out, scale_out)
        out = empty(x.shape, x) if out is None else out
        op(x, shift, scale, float(eps), kind, out, q_out, scale_out)
        return out, q_out, scale_out

    return ada_norm_fp8


def residual_adapter(launch):
    def impl(x, y, gate, shift, scale, eps, kind, x_out, norm_out, q_out, scale_out) -> None:
        launch(x, y, gate, shift, scale, eps, kind, x_out=x_out, norm_out=norm_out, q_out=q_out, scale_out=scale_out)

    return impl


def residual_wrap(op):
    def residual_ada_norm_fp8(x, y, gate, shift, scale, eps, kind="rms", *, x_out=None, norm_out=None, q_out=None,
                              scale_out=None):
        q_out, scale_out = _fp8_outputs("residual_ada_norm_fp8", x, q_out, scale_out)
        x_out = empty(x.shape, x) if x_out is None else x_out
        norm_out = empty(x.shape, x) if norm_out is None else norm_out
        op(x, y, gate, shift, scale, float(eps), kind, x_out, norm_out, q_out, scale_out)
        return x_out, norm_out, q_out, scale_out

    return residual_ada_norm_fp8


def _triton():
    from ..kernels.ada_norm import ada_norm_fp8
    return ada_norm_fp8


def _triton_residual():
    from ..kernels.ada_norm import residual_ada_norm_fp8
    return residual_ada_norm_fp8


ADA_NORM_FP8 = FusedOp("ada_norm_fp8", SCHEMA, adapter, wrap, launchers={"triton": _triton}, auto=("triton",))
RESIDUAL_ADA_NORM_FP8 = FusedOp("residual_ada_norm_fp8", RESIDUAL_SCHEMA, residual_adapter, residual_wrap,
                                launchers={"triton": _triton_residual}, auto=("triton",))
