"""ada_norm: norm(x) * (1 + scale) + shift, the modulated norm of adaLN (RMSNorm or LayerNorm), or
the modulation alone (kind "none": LTX-2.3+'s text context, x * (1 + scale) + shift every step).

Reference: ``reference.ada_norm``. Kernels: Triton ``kernels/ada_norm.py``; CUDA
``cuda.ada_norm`` -> ``csrc/ada_norm.{cpp,cu}`` (rms and layer only: the models keep their eager
modulation there, models/residual.py ``modulating_norm``).
"""

from __future__ import annotations

import torch

from .library import FusedOp

SCHEMA = "(Tensor x, Tensor? shift, Tensor? scale, float eps, str kind, Tensor(a!) out) -> ()"


def adapter(launch):
    def impl(x, shift, scale, eps, kind, out) -> None:
        launch(x, shift, scale, eps, kind, out=out)

    return impl


def wrap(op):
    def ada_norm(x, shift, scale, eps, kind="rms", *, out=None):
        out = torch.empty_like(x) if out is None else out
        op(x, shift, scale, float(eps), kind, out)
        return out

    return ada_norm


def _triton():
    from ..kernels.ada_norm import ada_norm
    return ada_norm


def _cuda():
    from .cuda import ada_norm
    return ada_norm


ADA_NORM = FusedOp("ada_norm", SCHEMA, adapter, wrap, launchers={"triton": _triton, "cuda": _cuda},
                   auto=("triton", "cuda"))
