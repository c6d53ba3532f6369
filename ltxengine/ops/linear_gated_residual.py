"""linear_gated_residual: x + gate * (h @ W^T + b), an output projection (attention out, FFN
down) with the gated residual update in the GEMM's epilogue.

Reference: ``reference.linear_gated_residual`` = ``gated_residual(x, linear(h, W, b), gate)``,
the models' unfused path bit for bit. Kernel: Triton ``kernels/linear_gelu.py`` (the same GEMM
as linear_gelu, with this epilogue).

No CUDA backend and an empty ``auto``: no library exposes a GEMM epilogue with a per-sample or
per-token gate and a residual read (cuBLASLt's alpha vectors need beta = 0), and the Triton GEMM
only becomes ``auto`` once bench/ has measured it beating cuBLAS + the fused gated residual on a
GPU. Where this op is the reference, the models take the unfused path (``ops.linear`` then
``ops.gated_residual``), so ``auto`` keeps choosing gated_residual's own kernel as before.
"""

from __future__ import annotations

import torch

from .library import FusedOp

SCHEMA = "(Tensor x, Tensor h, Tensor weight, Tensor? bias, Tensor? gate, Tensor(a!) out) -> ()"


def adapter(launch):
    def impl(x, h, weight, bias, gate, out) -> None:
        launch(x, h, weight, bias, gate, out=out)

    return impl


def wrap(op):
    def linear_gated_residual(x, h, weight, bias, gate, *, out=None):
        if not isinstance(x, torch.Tensor):
            raise ValueError(f"linear_gated_residual: x must be a tensor, got {type(x).__name__}")
        out = torch.empty_like(x) if out is None else out
        op(x, h, weight, bias, gate, out)
        return out

    return linear_gated_residual


def _triton():
    from ..kernels.linear_gelu import linear_gated_residual
    return linear_gated_residual


LINEAR_GATED_RESIDUAL = FusedOp("linear_gated_residual", SCHEMA, adapter, wrap, launchers={"triton": _triton},
                                auto=())
