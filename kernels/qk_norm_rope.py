"""Q/K RMSNorm across heads fused with 3D RoPE: q and k in one launch, one program per row.

Reference: ``ltxengine.ops.reference.qk_norm_rope`` (fp32). Each row of q (B, Nq, D) and k
(B, Nk, D) is read once, normalized over the full width D with the learned weight, rotated and
written once, in the input dtype or, for an fp8 attention, as e4m3 divided by a per-tensor scale.

Rotary layouts (see reference.apply_rope):
- interleaved (LTX-Video): cos/sin (Bt, N, D), adjacent pairs (2j, 2j+1) rotate together;
- split (LTX-2): cos/sin (Bt, H, N, D/H/2), within each of the table's H heads the first
  half rotates against the second half.
Tables are fp32 or fp16 (``TABLE_DTYPES``), read and used in fp32.
A rotation partner is another element of the same row; it is re-read from memory (an L1/L2 hit)
rather than shuffled in registers, which keeps the kernel layout-agnostic and interpreter-safe.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_rows, launch_config, row_view, to_e4m3

_NONE, _INTERLEAVED, _SPLIT = 0, 1, 2
# fp16 tables halve their traffic (cos/sin lie in [-1, 1]: 11 significant bits, 2^-12 relative, below
# a bf16 / fp16 output's own rounding); models store them so for 16-bit activations (models.common)
TABLE_DTYPES = (torch.float32, torch.float16)


@triton.jit
def _norm_rope_row(
    x_ptr, w_ptr, cos_ptr, sin_ptr, out_ptr, scale_ptr,
    row, n_tokens, stride_xb, stride_xn, stride_ob, stride_on,
    stride_tb, stride_th, stride_tn, eps, D,
    HALF: tl.constexpr,  # split layout: half of the table's head width
    LAYOUT: tl.constexpr, FP8_OUT: tl.constexpr, BLOCK_D: tl.constexpr,
):
    b = row // n_tokens
    n = row % n_tokens
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x_row = x_ptr + b * stride_xb + n * stride_xn  # one row of x: (D,)
    x = tl.load(x_row + offs, mask=mask, other=0.0).to(tl.float32)
    rstd = tl.rsqrt(tl.sum(x * x, axis=0) / D + eps)
    w = tl.load(w_ptr + offs, mask=mask, other=0.0).to(tl.float32)  # (D,)
    y = x * rstd * w
    if LAYOUT == 1:
        partner = offs ^ 1
        t_off = b * stride_tb + n * stride_tn + offs
        sign = tl.where((offs & 1) == 0, -1.0, 1.0)
    elif LAYOUT == 2:
        head = offs // (2 * HALF)
        within = offs % (2 * HALF)
        first = within < HALF
        partner = tl.where(first, offs + HALF, offs - HALF)
        t_off = b * stride_tb + head * stride_th + n * stride_tn + within % HALF
        sign = tl.where(first, -1.0, 1.0)
    if LAYOUT != 0:
        xp = tl.load(x_row + partner, mask=mask, other=0.0).to(tl.float32)
        wp = tl.load(w_ptr + partner, mask=mask, other=0.0).to(tl.float32)
        c = tl.load(cos_ptr + t_off, mask=mask, other=0.0).to(tl.float32)  # fp32 or fp16 tables
        s = tl.load(sin_ptr + t_off, mask=mask, other=0.0).to(tl.float32)
        y = y * c + sign * (xp * rstd * wp) * s
    if FP8_OUT:
        y = to_e4m3(tl.math.div_rn(y, tl.load(scale_ptr)))  # IEEE division like the reference
    tl.store(out_ptr + b * stride_ob + n * stride_on + offs, y.to(out_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _qk_norm_rope_kernel(
    q_ptr, k_ptr,  # (B, Nq, D), (B, Nk, D); last dim contiguous
    qw_ptr, kw_ptr,  # (D,) learned norm weights
    qc_ptr, qs_ptr, kc_ptr, ks_ptr,  # rope tables for q and for k (layout above), fp32 / fp16
    qo_ptr, ko_ptr,  # outputs shaped like q and k
    qsc_ptr, ksc_ptr,  # fp8 output: per-tensor fp32 scales (1,)
    q_rows, nq, nk,
    s_qb, s_qn, s_kb, s_kn, s_qob, s_qon, s_kob, s_kon,
    s_qtb, s_qth, s_qtn, s_ktb, s_kth, s_ktn,
    eps, D,
    HALF: tl.constexpr, LAYOUT: tl.constexpr, FP8_OUT: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    if pid < q_rows:
        _norm_rope_row(q_ptr, qw_ptr, qc_ptr, qs_ptr, qo_ptr, qsc_ptr, pid, nq, s_qb, s_qn, s_qob, s_qon,
                       s_qtb, s_qth, s_qtn, eps, D, HALF, LAYOUT, FP8_OUT, BLOCK_D)
    else:
        _norm_rope_row(k_ptr, kw_ptr, kc_ptr, ks_ptr, ko_ptr, ksc_ptr, pid - q_rows, nk, s_kb, s_kn, s_kob, s_kon,
                       s_ktb, s_kth, s_ktn, eps, D, HALF, LAYOUT, FP8_OUT, BLOCK_D)


def _table(name, rope, x, layout_hint):
    """(cos, sin, strides (b, h, n), layout, half) of a rope table for x (B, N, D); checks shapes."""
    if rope is None:
        return None, None, (0, 0, 0), _NONE, 1
    cos, sin = rope
    b, n, d = x.shape
    if cos.shape != sin.shape or cos.dtype != sin.dtype or cos.dtype not in TABLE_DTYPES:
        raise ValueError(f"qk_norm_rope: {name} cos/sin must be fp32 or fp16 tables of equal shape and dtype, got "
                         f"{tuple(cos.shape)} {cos.dtype} and {tuple(sin.shape)} {sin.dtype}")
    if cos.device != x.device or sin.device != x.device:
        raise ValueError(f"qk_norm_rope: {name} tables must be on {x.device}, got {cos.device}")
    if cos.ndim == 3 and cos.shape[0] in (1, b) and cos.shape[1:] == (n, d):
        layout, half = _INTERLEAVED, 1
    elif cos.ndim == 4 and cos.shape[0] in (1, b) and cos.shape[2] == n and d % (2 * cos.shape[1]) == 0 \
            and cos.shape[3] * 2 * cos.shape[1] == d:
        layout, half = _SPLIT, cos.shape[3]
    else:
        raise ValueError(f"qk_norm_rope: {name} tables must be (B|1, N, D) interleaved or (B|1, H, N, D/H/2) split "
                         f"for an input of shape {tuple(x.shape)}, got {tuple(cos.shape)}")
    if layout_hint is not None and layout != layout_hint:
        raise ValueError("qk_norm_rope: k_rope must use the same layout as rope")
    cos, sin = cos.contiguous(), sin.contiguous()
    st = cos.stride()
    sb = 0 if cos.shape[0] == 1 else st[0]
    strides = (sb, 0, st[1]) if layout == _INTERLEAVED else (sb, st[1], st[2])
    return cos, sin, strides, layout, half


def _fp8_scale(name, scale, x):
    if not isinstance(scale, torch.Tensor) or scale.numel() != 1 or scale.dtype != torch.float32:
        raise ValueError(f"qk_norm_rope: {name} must be a one-element fp32 tensor, got {scale!r}")
    if scale.device != x.device:
        raise ValueError(f"qk_norm_rope: {name} must be on {x.device}, got {scale.device}")
    return scale


def qk_norm_rope(q, k, q_weight, k_weight, eps, rope, k_rope=None, *, fp8_scales=None, q_out=None, k_out=None):
    """Normalize and rotate q (B, Nq, D) and k (B, Nk, D) in one launch; returns (q_out, k_out).

    ``rope`` rotates q and (unless ``k_rope`` is given) k; None skips the rotation. With
    ``fp8_scales=(q_scale, k_scale)`` the outputs are float8_e4m3fn holding value / scale.
    """
    q, k = row_view("qk_norm_rope", "q", q, ndim=3), row_view("qk_norm_rope", "k", k, ndim=3)
    d = q.shape[-1]
    if k.shape[0] != q.shape[0] or k.shape[-1] != d:
        raise ValueError(f"qk_norm_rope: k must be (B={q.shape[0]}, Nk, D={d}), got {tuple(k.shape)}")
    for name, w in (("q_weight", q_weight), ("k_weight", k_weight)):
        if w.shape != (d,) or w.device != q.device:
            raise ValueError(f"qk_norm_rope: {name} must be ({d},) on {q.device}, got {tuple(w.shape)} on {w.device}")
    if not eps > 0:
        raise ValueError(f"qk_norm_rope: eps must be > 0, got {eps}")
    qc, qs, qst, layout, half = _table("rope", rope, q, None)
    kc, ks, kst, k_layout, k_half = _table("k_rope", rope if k_rope is None else k_rope, k, layout)
    if k_layout == _SPLIT and k_half != half:
        raise ValueError(f"qk_norm_rope: k_rope head width {2 * k_half} differs from rope's {2 * half}")
    out_dtype = q.dtype
    q_scale = k_scale = None
    if fp8_scales is not None:
        q_scale = _fp8_scale("fp8_scales[0]", fp8_scales[0], q)
        k_scale = _fp8_scale("fp8_scales[1]", fp8_scales[1], k)
        out_dtype = torch.float8_e4m3fn
    q_out = check_rows("qk_norm_rope", "q_out", q_out, q.shape, out_dtype, q.device)
    k_out = check_rows("qk_norm_rope", "k_out", k_out, k.shape, out_dtype, k.device)
    q_rows = q.shape[0] * q.shape[1]
    grid = (q_rows + k.shape[0] * k.shape[1],)
    block, warps = launch_config(d)
    _qk_norm_rope_kernel[grid](
        q, k, q_weight, k_weight, qc, qs, kc, ks, q_out, k_out, q_scale, k_scale,
        q_rows, q.shape[1], k.shape[1],
        q.stride(0), q.stride(1), k.stride(0), k.stride(1),
        q_out.stride(0), q_out.stride(1), k_out.stride(0), k_out.stride(1),
        *qst, *kst, float(eps), d,
        HALF=half, LAYOUT=layout, FP8_OUT=fp8_scales is not None, BLOCK_D=block, num_warps=warps,
    )
    return q_out, k_out
