"""attention_fp8: attention with q, k, v in e4m3, per-(batch, head) dynamic scales; opt-in
through ``with_fp8_attention`` (see ``Ops.attention_fp8``).

Reference: ``reference.attention_fp8``. Kernel: Triton ``kernels/fp8_attention.py`` (flash
attention with fp8 QK^T and PV); no CUDA C++ kernel.
"""

from __future__ import annotations

import torch

from .library import FusedOp, check_tensor

SCHEMA = "(Tensor q, Tensor k, Tensor v, int heads, Tensor? mask, Tensor(a!) out) -> ()"


def adapter(launch):
    def impl(q, k, v, heads, mask, out) -> None:
        launch(q, k, v, heads, mask, out=out)

    return impl


def wrap(op):
    def attention_fp8(q, k, v, heads, mask=None, *, out=None):
        check_tensor("attention_fp8", "q", q, 3)
        # q may be a strided slice of a fused projection: a fresh contiguous output
        out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
        op(q, k, v, int(heads), mask, out)
        return out

    return attention_fp8


def _triton():
    from ..kernels.fp8_attention import attention_fp8
    return attention_fp8


ATTENTION_FP8 = FusedOp("attention_fp8", SCHEMA, adapter, wrap, launchers={"triton": _triton},
                        auto=("triton",))
