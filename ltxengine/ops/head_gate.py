"""head_gate: gated attention's output gate (LTX-2.3+), head h of x times 2 sigmoid(logits_h).

Reference: ``reference.head_gate``. Kernel: Triton ``kernels/head_gate.py``.
"""

from __future__ import annotations

import torch

from .library import FusedOp

SCHEMA = "(Tensor x, Tensor logits, Tensor(a!) out) -> ()"


def adapter(launch):
    def impl(x, logits, out) -> None:
        launch(x, logits, out=out)

    return impl


def wrap(op):
    def head_gate(x, logits, *, out=None):
        out = torch.empty_like(x) if out is None else out
        op(x, logits, out)
        return out

    return head_gate


def _triton():
    from ..kernels.head_gate import head_gate
    return head_gate


HEAD_GATE = FusedOp("head_gate", SCHEMA, adapter, wrap, launchers={"triton": _triton}, auto=("triton",))
