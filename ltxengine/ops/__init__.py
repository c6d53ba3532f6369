"""The ops object: every fusable site in the models calls through one of these.

Models never import a kernel. They hold an ``Ops`` instance (``module.ops``) chosen once when
the engine is built; the default is the pure-torch reference (``TORCH_OPS``). The kernels issue
adds Triton/CUDA instances with the same fields; ``set_ops`` swaps them in without touching
model code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch.nn as nn

from . import reference

BACKENDS = ("auto", "torch", "triton", "cuda")


@dataclass(frozen=True)
class Ops:
    name: str
    qk_norm_rope: Callable = reference.qk_norm_rope
    ada_norm: Callable = reference.ada_norm
    gated_residual: Callable = reference.gated_residual
    linear: Callable = reference.linear
    attention: Callable = reference.attention
    causal_conv3d: Callable = reference.causal_conv3d


TORCH_OPS = Ops(name="torch")


def get_ops(kernels: str = "auto") -> Ops:
    """Resolve the ``kernels=`` option of Engine.from_pretrained to an Ops instance."""
    if kernels not in BACKENDS:
        raise ValueError(f"kernels must be one of {BACKENDS}, got {kernels!r}")
    if kernels in ("auto", "torch"):
        # Only the reference backend exists so far; "auto" will prefer fused kernels once
        # they are registered here.
        return TORCH_OPS
    raise ValueError(
        f"kernels={kernels!r}: this build of ltxengine has no {kernels} backend yet; use 'torch' or 'auto'"
    )


def set_ops(model: nn.Module, ops: Ops) -> nn.Module:
    """Point every ops-using submodule of ``model`` at ``ops``."""
    for module in model.modules():
        if hasattr(module, "ops"):
            module.ops = ops
    return model


__all__ = ["Ops", "TORCH_OPS", "get_ops", "set_ops", "reference"]
