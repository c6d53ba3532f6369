"""gated_residual: x + gate * y, the gated residual update after each attention and MLP.

Reference: ``reference.gated_residual``. Kernels: Triton ``kernels/ada_norm.py`` (beside
ada_norm, which shares its row layout); CUDA ``cuda.gated_residual`` ->
``csrc/gated_residual.{cpp,cu}``.
"""

from __future__ import annotations

import torch

from .library import FusedOp

SCHEMA = "(Tensor x, Tensor y, Tensor? gate, Tensor(a!) out) -> ()"


def adapter(launch):
    def impl(x, y, gate, out) -> None:
        launch(x, y, gate, out=out)

    return impl


def wrap(op):
    def gated_residual(x, y, gate, *, out=None):
        out = torch.empty_like(x) if out is None else out
        op(x, y, gate, out)
        return out

    return gated_residual


def _triton():
    from ..kernels.ada_norm import gated_residual
    return gated_residual


def _cuda():
    from .cuda import gated_residual
    return gated_residual


GATED_RESIDUAL = FusedOp("gated_residual", SCHEMA, adapter, wrap, launchers={"triton": _triton, "cuda": _cuda},
                         auto=("triton", "cuda"))
