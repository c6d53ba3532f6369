"""Gated attention's output gate (LTX-2.3+): head h of x (B, N, H*Dh) times 2 sigmoid(logits[b, n, h]).

Reference: ``ltxengine.ops.reference.head_gate`` (fp32). One program per row of x: the row's H logits
are gathered per element (H * 4 bytes, cached), each element of x is read once and written once.
The natural home of this multiply is an attention epilogue or the to_out GEMM's prologue; standing
alone it saves the sigmoid, broadcast and multiply kernels eager torch runs.

``head_gate_fp8`` (the ``QUANT`` option): the gated row quantized per row to e4m3 for to_out's fp8
GEMM (``reference.head_gate_fp8``), from the row as rounded to x.dtype (what quantize_fp8 of
head_gate's output reads), and only that: the 16-bit gated row is not stored, to_out is its only
reader (models/transformer.py Attention._gate_fp8).
"""

from __future__ import annotations

import triton
import triton.language as tl

from ._common import check_rows, fp8_rows, launch_config, quantize_row, row_view


@triton.jit
def _head_gate_kernel(
    x_ptr,  # (B, N, H*Dh), last dim contiguous
    logits_ptr,  # (B, N, H), last dim contiguous
    out_ptr,  # (B, N, H*Dh) in x's dtype; None with QUANT (not stored)
    q_ptr,  # (B * N, H*Dh) float8_e4m3fn, contiguous: the gated rows quantized (QUANT), else None
    qs_ptr,  # (B * N,) fp32 per-row scales of q (QUANT), else None
    n_tokens, D, head_dim,
    s_xb, s_xn, s_lb, s_ln, s_ob, s_on,
    QUANT: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // n_tokens
    n = row % n_tokens
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + b * s_xb + n * s_xn + offs, mask=mask, other=0.0)
    logit = tl.load(logits_ptr + b * s_lb + n * s_ln + offs // head_dim, mask=mask, other=0.0).to(tl.float32)
    # sigmoid from exp(-|l|) <= 1: no overflow for large negative logits
    e = tl.exp(-tl.abs(logit))
    gate = 2.0 * tl.where(logit >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
    # rounded to x's dtype (head_gate's output dtype) in both modes: the quantizer reads those bits
    y = (x.to(tl.float32) * gate).to(x_ptr.dtype.element_ty)
    if QUANT:
        quantize_row(y, q_ptr, qs_ptr, row, offs, mask, D)
    else:
        tl.store(out_ptr + b * s_ob + n * s_on + offs, y, mask=mask)


def head_gate(x, logits, *, out=None):
    """x (B, N, H*Dh) with head h scaled by 2 sigmoid(logits[..., h]); logits (B, N, H), any float dtype."""
    return _head_gate("head_gate", x, logits, out, None)[0]


def head_gate_fp8(x, logits, *, q_out=None, scale_out=None):
    """(q, row scales) of head_gate(x, logits): q (B * N, H*Dh) float8_e4m3fn and scale (B * N, 1)
    fp32 are ``quantize_fp8(head_gate(x, logits), per_row=True)``, bit for bit; the gated 16-bit
    rows themselves are not written (an fp8 to_out is their only reader)."""
    return _head_gate("head_gate_fp8", x, logits, None, (q_out, scale_out))


def _head_gate(fn, x, logits, out, quant):
    x = row_view(fn, "x", x, ndim=3)
    logits = row_view(fn, "logits", logits, ndim=3)
    b, n, d = x.shape
    heads = logits.shape[-1]
    if logits.shape[:2] != (b, n) or d % heads or logits.device != x.device:
        raise ValueError(f"{fn}: logits must be (B, N, H) = ({b}, {n}, H) with H dividing {d}, on {x.device}; "
                         f"got {tuple(logits.shape)} on {logits.device}")
    q, qs = (None, None) if quant is None else fp8_rows(fn, quant, x)
    out = None if quant is not None else check_rows(fn, "out", out, x.shape, x.dtype, x.device)
    s_ob, s_on = (0, 0) if out is None else (out.stride(0), out.stride(1))
    block, warps = launch_config(d)
    _head_gate_kernel[(b * n,)](
        x, logits, out, q, qs, n, d, d // heads,
        x.stride(0), x.stride(1), logits.stride(0), logits.stride(1), s_ob, s_on,
        QUANT=quant is not None, BLOCK_D=block, num_warps=warps,
    )
    return (out,) if quant is None else (q, qs)
