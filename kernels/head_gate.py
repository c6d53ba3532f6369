"""Gated attention's output gate (LTX-2.3+): head h of x (B, N, H*Dh) times 2 sigmoid(logits[b, n, h]).

Reference: ``ltxengine.ops.reference.head_gate`` (fp32). One program per row of x: the row's H logits
are gathered per element (H * 4 bytes, cached), each element of x is read once and written once.
The natural home of this multiply is an attention epilogue or the to_out GEMM's prologue; standing
alone it saves the sigmoid, broadcast and multiply kernels eager torch runs.
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import check_rows, launch_config, row_view


@triton.jit
def _head_gate_kernel(
    x_ptr,  # (B, N, H*Dh), last dim contiguous
    logits_ptr,  # (B, N, H), last dim contiguous
    out_ptr,  # (B, N, H*Dh)
    n_tokens, D, head_dim,
    s_xb, s_xn, s_lb, s_ln, s_ob, s_on,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // n_tokens
    n = row % n_tokens
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + b * s_xb + n * s_xn + offs, mask=mask, other=0.0).to(tl.float32)
    logit = tl.load(logits_ptr + b * s_lb + n * s_ln + offs // head_dim, mask=mask, other=0.0).to(tl.float32)
    # sigmoid from exp(-|l|) <= 1: no overflow for large negative logits
    e = tl.exp(-tl.abs(logit))
    gate = 2.0 * tl.where(logit >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    tl.store(out_ptr + b * s_ob + n * s_on + offs, (x * gate).to(out_ptr.dtype.element_ty), mask=mask)


def head_gate(x, logits, *, out=None):
    """x (B, N, H*Dh) with head h scaled by 2 sigmoid(logits[..., h]); logits (B, N, H), any float dtype."""
    x = row_view("head_gate", "x", x, ndim=3)
    logits = row_view("head_gate", "logits", logits, ndim=3)
    b, n, d = x.shape
    heads = logits.shape[-1]
    if logits.shape[:2] != (b, n) or d % heads or logits.device != x.device:
        raise ValueError(f"head_gate: logits must be (B, N, H) = ({b}, {n}, H) with H dividing {d}, on {x.device}; "
                         f"got {tuple(logits.shape)} on {logits.device}")
    out = check_rows("head_gate", "out", out, x.shape, x.dtype, x.device)
    block, warps = launch_config(d)
    _head_gate_kernel[(b * n,)](
        x, logits, out, n, d, d // heads,
        x.stride(0), x.stride(1), logits.stride(0), logits.stride(1), out.stride(0), out.stride(1),
        BLOCK_D=block, num_warps=warps,
    )
    return out
