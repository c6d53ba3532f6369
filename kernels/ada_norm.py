"""Fused adaLN: norm(x) * (1 + scale) + shift, the gated residual x + gate * y (optionally with
its per-row e4m3 copy: gated_residual_fp8), and the two in one pass (residual_ada_norm: the
residual update followed by the next adaLN of the same stream; dual_ada_norm: optionally that
update, then one norm modulated twice, LTX-2's a2v / v2a rows).

References: ``ltxengine.ops.reference.ada_norm`` / ``gated_residual`` / ``residual_ada_norm`` /
``dual_ada_norm`` (fp32). One program per row of x (B, N, D): each element is read once and
written once. The modulation rows come from a
per-sample (B, 1, D) or per-token (B, N, D) table, usually a strided slice of the model's
(B, N|1, 6, D) modulation tensor; size-1 dims get stride 0 so both cases are one kernel.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import check_rows, fp8_rows, launch_config, quantize_row, row_view


_KINDS = {"rms": 0, "layer": 1, "none": 2}  # "none": ada_norm / ada_norm_fp8 only (_ROW_KINDS elsewhere)
_ROW_KINDS = ("rms", "layer")  # the residual and dual norms: every model normalizes after a residual


@triton.jit
def _ada_norm_kernel(
    x_ptr,  # (B, N, D), last dim contiguous
    shift_ptr, scale_ptr,  # (B|1, N|1, D) modulation rows, any float dtype
    out_ptr,  # (B, N, D)
    q_ptr,  # (B * N, D) float8_e4m3fn, contiguous: the rows of out quantized (QUANT), else None
    qs_ptr,  # (B * N,) fp32 per-row scales of q (QUANT), else None
    n_tokens, D, eps,
    s_xb, s_xn, s_ob, s_on, s_shb, s_shn, s_scb, s_scn,
    KIND: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_SCALE: tl.constexpr, QUANT: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // n_tokens
    n = row % n_tokens
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + b * s_xb + n * s_xn + offs, mask=mask, other=0.0).to(tl.float32)
    y = _modulated_norm(x, offs, mask, b, n, D, eps, shift_ptr, scale_ptr, s_shb, s_shn, s_scb, s_scn,
                        KIND, HAS_SHIFT, HAS_SCALE).to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + b * s_ob + n * s_on + offs, y, mask=mask)
    if QUANT:
        quantize_row(y, q_ptr, qs_ptr, row, offs, mask, D)


@triton.jit
def _modulated_norm(x, offs, mask, b, n, D, eps, shift_ptr, scale_ptr, s_shb, s_shn, s_scb, s_scn,
                    KIND: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_SCALE: tl.constexpr):
    """norm(x) * (1 + scale) + shift of one fp32 row (masked lanes hold 0), in fp32."""
    return _modulate(_norm(x, mask, D, eps, KIND), offs, mask, b, n, shift_ptr, scale_ptr, s_shb, s_shn, s_scb, s_scn,
                     HAS_SHIFT, HAS_SCALE)


@triton.jit
def _norm(x, mask, D, eps, KIND: tl.constexpr):
    """RMSNorm (KIND 0), LayerNorm (1) or the row itself (2) of one fp32 row (masked lanes hold 0), in fp32."""
    if KIND == 0:
        y = x * tl.rsqrt(tl.sum(x * x, axis=0) / D + eps)
    elif KIND == 2:
        y = x
    else:
        mean = tl.sum(x, axis=0) / D
        centered = tl.where(mask, x - mean, 0.0)
        y = centered * tl.rsqrt(tl.sum(centered * centered, axis=0) / D + eps)
    return y


@triton.jit
def _modulate(y, offs, mask, b, n, shift_ptr, scale_ptr, s_shb, s_shn, s_scb, s_scn,
              HAS_SHIFT: tl.constexpr, HAS_SCALE: tl.constexpr):
    """y * (1 + scale) + shift of one normed fp32 row, in fp32."""
    if HAS_SCALE:
        y = y * (1.0 + tl.load(scale_ptr + b * s_scb + n * s_scn + offs, mask=mask, other=0.0).to(tl.float32))
    if HAS_SHIFT:
        y = y + tl.load(shift_ptr + b * s_shb + n * s_shn + offs, mask=mask, other=0.0).to(tl.float32)
    return y


@triton.jit
def _residual(x, y_ptr, gate_ptr, offs, mask, b, n, s_yb, s_yn, s_gb, s_gn, HAS_GATE: tl.constexpr):
    """x + gate * y of one row (x loaded, any float dtype; y and the gate row read here), in fp32."""
    y = tl.load(y_ptr + b * s_yb + n * s_yn + offs, mask=mask, other=0.0).to(tl.float32)
    if HAS_GATE:
        y = y * tl.load(gate_ptr + b * s_gb + n * s_gn + offs, mask=mask, other=0.0).to(tl.float32)
    return x.to(tl.float32) + y


@triton.jit
def _gated_residual_kernel(
    x_ptr, y_ptr,  # (B, N, D), last dim contiguous
    gate_ptr,  # (B|1, N|1, D) or None
    out_ptr,  # (B, N, D); may be x itself (in-place residual: each element is read before written)
    q_ptr,  # (B * N, D) float8_e4m3fn, contiguous: the rows of out quantized (QUANT), else None
    qs_ptr,  # (B * N,) fp32 per-row scales of q (QUANT), else None
    n_tokens, D,
    s_xb, s_xn, s_yb, s_yn, s_ob, s_on, s_gb, s_gn,
    HAS_GATE: tl.constexpr, QUANT: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // n_tokens
    n = row % n_tokens
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + b * s_xb + n * s_xn + offs, mask=mask, other=0.0)
    new = _residual(x, y_ptr, gate_ptr, offs, mask, b, n, s_yb, s_yn, s_gb, s_gn, HAS_GATE).to(
        out_ptr.dtype.element_ty)
    tl.store(out_ptr + b * s_ob + n * s_on + offs, new, mask=mask)
    if QUANT:
        # the stream as stored (rounded to out's dtype) is what a per-token quantizer of it reads
        quantize_row(new, q_ptr, qs_ptr, row, offs, mask, D)


@triton.jit
def _residual_ada_norm_kernel(
    x_ptr, y_ptr,  # (B, N, D), last dim contiguous
    gate_ptr, shift_ptr, scale_ptr,  # (B|1, N|1, D) modulation rows or None
    xo_ptr,  # (B, N, D) x + gate * y; may be x itself (the row is read before it is written)
    no_ptr,  # (B, N, D) ada_norm of xo
    q_ptr,  # (B * N, D) float8_e4m3fn, contiguous: the rows of no quantized (QUANT), else None
    qs_ptr,  # (B * N,) fp32 per-row scales of q (QUANT), else None
    n_tokens, D, eps,
    s_xb, s_xn, s_yb, s_yn, s_xob, s_xon, s_nob, s_non, s_gb, s_gn, s_shb, s_shn, s_scb, s_scn,
    KIND: tl.constexpr, HAS_GATE: tl.constexpr, HAS_SHIFT: tl.constexpr, HAS_SCALE: tl.constexpr,
    QUANT: tl.constexpr, BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // n_tokens
    n = row % n_tokens
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + b * s_xb + n * s_xn + offs, mask=mask, other=0.0)
    # The norm reads the residual rounded to its stored dtype, as the unfused pair does (the
    # stream the next op sees is the rounded one; fp32 rows round-trip exactly).
    new = _residual(x, y_ptr, gate_ptr, offs, mask, b, n, s_yb, s_yn, s_gb, s_gn, HAS_GATE).to(
        xo_ptr.dtype.element_ty)
    tl.store(xo_ptr + b * s_xob + n * s_xon + offs, new, mask=mask)
    h = _modulated_norm(new.to(tl.float32), offs, mask, b, n, D, eps, shift_ptr, scale_ptr, s_shb, s_shn, s_scb,
                        s_scn, KIND, HAS_SHIFT, HAS_SCALE).to(no_ptr.dtype.element_ty)
    tl.store(no_ptr + b * s_nob + n * s_non + offs, h, mask=mask)
    if QUANT:
        quantize_row(h, q_ptr, qs_ptr, row, offs, mask, D)


@triton.jit
def _dual_ada_norm_kernel(
    x_ptr, y_ptr,  # (B, N, D), last dim contiguous; y None: no pending residual, x is only read
    gate_ptr, sh1_ptr, sc1_ptr, sh2_ptr, sc2_ptr,  # (B|1, N|1, D) modulation rows or None
    xo_ptr,  # (B, N, D) x + gate * y, or None with y; may be x itself (the row is read before it is written)
    n1_ptr, n2_ptr,  # (B, N, D) the two adaLNs of the (updated) row
    q1_ptr, qs1_ptr, q2_ptr, qs2_ptr,  # (B * N, D) e4m3 rows of n1 / n2 and (B * N,) fp32 scales (QUANT), else None
    n_tokens, D, eps,
    s_xb, s_xn, s_yb, s_yn, s_xob, s_xon, s_n1b, s_n1n, s_n2b, s_n2n, s_gb, s_gn,
    s_sh1b, s_sh1n, s_sc1b, s_sc1n, s_sh2b, s_sh2n, s_sc2b, s_sc2n,
    KIND: tl.constexpr, HAS_Y: tl.constexpr, HAS_GATE: tl.constexpr, HAS_SHIFT1: tl.constexpr,
    HAS_SCALE1: tl.constexpr, HAS_SHIFT2: tl.constexpr, HAS_SCALE2: tl.constexpr, QUANT: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    row = tl.program_id(0)
    b = row // n_tokens
    n = row % n_tokens
    offs = tl.arange(0, BLOCK_D)
    mask = offs < D
    x = tl.load(x_ptr + b * s_xb + n * s_xn + offs, mask=mask, other=0.0)
    if HAS_Y:
        # rounded to the stream's dtype before the norm reads it, as in _residual_ada_norm_kernel
        x = _residual(x, y_ptr, gate_ptr, offs, mask, b, n, s_yb, s_yn, s_gb, s_gn, HAS_GATE).to(
            xo_ptr.dtype.element_ty)
        tl.store(xo_ptr + b * s_xob + n * s_xon + offs, x, mask=mask)
    # One norm, two modulations: the statistics and the normed row are shared, the rest is per output.
    h = _norm(x.to(tl.float32), mask, D, eps, KIND)
    h1 = _modulate(h, offs, mask, b, n, sh1_ptr, sc1_ptr, s_sh1b, s_sh1n, s_sc1b, s_sc1n, HAS_SHIFT1,
                   HAS_SCALE1).to(n1_ptr.dtype.element_ty)
    tl.store(n1_ptr + b * s_n1b + n * s_n1n + offs, h1, mask=mask)
    h2 = _modulate(h, offs, mask, b, n, sh2_ptr, sc2_ptr, s_sh2b, s_sh2n, s_sc2b, s_sc2n, HAS_SHIFT2,
                   HAS_SCALE2).to(n2_ptr.dtype.element_ty)
    tl.store(n2_ptr + b * s_n2b + n * s_n2n + offs, h2, mask=mask)
    if QUANT:
        quantize_row(h1, q1_ptr, qs1_ptr, row, offs, mask, D)
        quantize_row(h2, q2_ptr, qs2_ptr, row, offs, mask, D)


def _modulation(fn, name, t, x):
    """(tensor, batch stride, token stride) of a row table broadcastable to x (B, N, D)."""
    if t is None:
        return None, 0, 0
    b, n, d = x.shape
    if not isinstance(t, torch.Tensor) or t.ndim != 3 or t.shape[0] not in (1, b) or t.shape[1] not in (1, n) \
            or t.shape[2] != d:
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{fn}: {name} must be (B|1, N|1, D) = ({b}|1, {n}|1, {d}) for x {tuple(x.shape)}, got {got}")
    if t.device != x.device or not t.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a float tensor on {x.device}, got {t.dtype} on {t.device}")
    t = t if t.stride(-1) == 1 else t.contiguous()
    return t, (t.stride(0) if t.shape[0] > 1 else 0), (t.stride(1) if t.shape[1] > 1 else 0)


def ada_norm(x, shift, scale, eps, kind="rms", *, out=None):
    """norm(x) * (1 + scale) + shift over the last dim of x (B, N, D); parameter-free RMSNorm
    (``kind="rms"``), LayerNorm (``"layer"``) or no norm (``"none"``: x * (1 + scale) + shift in fp32,
    rounded once; eps unused but still checked); shift/scale None, (B, 1, D) or (B, N, D)."""
    return _ada_norm("ada_norm", x, shift, scale, eps, kind, out, None)[0]


def ada_norm_fp8(x, shift, scale, eps, kind="rms", *, out=None, q_out=None, scale_out=None):
    """(ada_norm(x, ...), q, row scales) in one pass: q (B * N, D) float8_e4m3fn and scale
    (B * N, 1) fp32 are ``quantize_fp8(out, per_row=True)`` of the output as stored, bit for bit
    (an fp8 GEMM's per-token input written by the norm that produces it)."""
    return _ada_norm("ada_norm_fp8", x, shift, scale, eps, kind, out, (q_out, scale_out))


def _ada_norm(fn, x, shift, scale, eps, kind, out, quant):
    if kind not in _KINDS:
        raise ValueError(f"{fn}: kind must be 'rms', 'layer' or 'none', got {kind!r}")
    if not eps > 0:
        raise ValueError(f"{fn}: eps must be > 0, got {eps}")
    x = row_view(fn, "x", x, ndim=3)
    shift, s_shb, s_shn = _modulation(fn, "shift", shift, x)
    scale, s_scb, s_scn = _modulation(fn, "scale", scale, x)
    out = check_rows(fn, "out", out, x.shape, x.dtype, x.device)
    q, qs = fp8_rows(fn, quant, x)
    block, warps = launch_config(x.shape[-1])
    _ada_norm_kernel[(x.shape[0] * x.shape[1],)](
        x, shift, scale, out, q, qs, x.shape[1], x.shape[2], float(eps),
        x.stride(0), x.stride(1), out.stride(0), out.stride(1), s_shb, s_shn, s_scb, s_scn,
        KIND=_KINDS[kind], HAS_SHIFT=shift is not None, HAS_SCALE=scale is not None, QUANT=quant is not None,
        BLOCK_D=block, num_warps=warps,
    )
    return (out,) if quant is None else (out, q, qs)


def gated_residual(x, y, gate, *, out=None):
    """x + gate * y for x, y (B, N, D); gate None (means 1), (B, 1, D) or (B, N, D). ``out=x``
    updates the residual stream in place."""
    return _gated_residual("gated_residual", x, y, gate, out, None)[0]


def gated_residual_fp8(x, y, gate, *, out=None, q_out=None, scale_out=None):
    """(x + gate * y, q, row scales) in one pass: q (B * N, D) float8_e4m3fn and scale (B * N, 1)
    fp32 are ``quantize_fp8(out, per_row=True)`` of the new stream as stored, bit for bit (an fp8
    GEMM reading the raw stream, LTX-Video's cross-attention query, gets its input from the residual)."""
    return _gated_residual("gated_residual_fp8", x, y, gate, out, (q_out, scale_out))


def _gated_residual(fn, x, y, gate, out, quant):
    x = row_view(fn, "x", x, ndim=3)
    y = row_view(fn, "y", y, ndim=3)
    if y.shape != x.shape or y.device != x.device:
        raise ValueError(f"{fn}: y must match x {tuple(x.shape)} on {x.device}, got {tuple(y.shape)} on {y.device}")
    gate, s_gb, s_gn = _modulation(fn, "gate", gate, x)
    out = check_rows(fn, "out", out, x.shape, x.dtype, x.device)
    q, qs = fp8_rows(fn, quant, x)
    block, warps = launch_config(x.shape[-1])
    _gated_residual_kernel[(x.shape[0] * x.shape[1],)](
        x, y, gate, out, q, qs, x.shape[1], x.shape[2],
        x.stride(0), x.stride(1), y.stride(0), y.stride(1), out.stride(0), out.stride(1), s_gb, s_gn,
        HAS_GATE=gate is not None, QUANT=quant is not None, BLOCK_D=block, num_warps=warps,
    )
    return (out,) if quant is None else (out, q, qs)


def residual_ada_norm(x, y, gate, shift, scale, eps, kind="rms", *, x_out=None, norm_out=None):
    """(x + gate * y, ada_norm of it) for x, y (B, N, D) in one pass: gate, shift, scale None,
    (B, 1, D) or (B, N, D). ``x_out=x`` updates the residual stream in place."""
    return _residual_ada_norm("residual_ada_norm", x, y, gate, shift, scale, eps, kind, x_out, norm_out, None)


def residual_ada_norm_fp8(x, y, gate, shift, scale, eps, kind="rms", *, x_out=None, norm_out=None, q_out=None,
                          scale_out=None):
    """(x_new, normed, q, row scales): ``residual_ada_norm`` that also writes ``quantize_fp8(normed,
    per_row=True)`` (q (B * N, D) e4m3, scale (B * N, 1) fp32) from the rows as stored, bit for bit."""
    return _residual_ada_norm("residual_ada_norm_fp8", x, y, gate, shift, scale, eps, kind, x_out, norm_out,
                              (q_out, scale_out))


def _residual_ada_norm(fn, x, y, gate, shift, scale, eps, kind, x_out, norm_out, quant):
    if kind not in _ROW_KINDS:
        raise ValueError(f"{fn}: kind must be 'rms' or 'layer', got {kind!r}")
    if not eps > 0:
        raise ValueError(f"{fn}: eps must be > 0, got {eps}")
    x = row_view(fn, "x", x, ndim=3)
    y = row_view(fn, "y", y, ndim=3)
    if y.shape != x.shape or y.device != x.device:
        raise ValueError(f"{fn}: y must match x {tuple(x.shape)} on {x.device}, got {tuple(y.shape)} on {y.device}")
    gate, s_gb, s_gn = _modulation(fn, "gate", gate, x)
    shift, s_shb, s_shn = _modulation(fn, "shift", shift, x)
    scale, s_scb, s_scn = _modulation(fn, "scale", scale, x)
    x_out = check_rows(fn, "x_out", x_out, x.shape, x.dtype, x.device)
    norm_out = check_rows(fn, "norm_out", norm_out, x.shape, x.dtype, x.device)
    q, qs = fp8_rows(fn, quant, x)
    block, warps = launch_config(x.shape[-1])
    _residual_ada_norm_kernel[(x.shape[0] * x.shape[1],)](
        x, y, gate, shift, scale, x_out, norm_out, q, qs, x.shape[1], x.shape[2], float(eps),
        x.stride(0), x.stride(1), y.stride(0), y.stride(1), x_out.stride(0), x_out.stride(1),
        norm_out.stride(0), norm_out.stride(1), s_gb, s_gn, s_shb, s_shn, s_scb, s_scn,
        KIND=_KINDS[kind], HAS_GATE=gate is not None, HAS_SHIFT=shift is not None, HAS_SCALE=scale is not None,
        QUANT=quant is not None, BLOCK_D=block, num_warps=warps,
    )
    return (x_out, norm_out) if quant is None else (x_out, norm_out, q, qs)


def dual_ada_norm(x, y, gate, shift1, scale1, shift2, scale2, eps, kind="rms", *, x_out=None, norm1_out=None,
                  norm2_out=None):
    """(x_new, ada_norm(x_new, shift1, scale1), ada_norm(x_new, shift2, scale2)) in one pass over
    x (B, N, D): x_new = x + gate * y, or x itself when y is None (then gate and x_out must be None).
    Modulation rows None, (B, 1, D) or (B, N, D). ``x_out=x`` updates the stream in place."""
    return _dual("dual_ada_norm", x, y, gate, shift1, scale1, shift2, scale2, eps, kind, x_out, norm1_out,
                 norm2_out, None)


def dual_ada_norm_fp8(x, y, gate, shift1, scale1, shift2, scale2, eps, kind="rms", *, x_out=None, norm1_out=None,
                      norm2_out=None, q1_out=None, scale1_out=None, q2_out=None, scale2_out=None):
    """``dual_ada_norm`` that also writes each norm's rows as stored quantized per row: returns
    (x_new, norm1, norm2, q1, s1, q2, s2), (qi, si) = quantize_fp8(normi, per_row=True) bit for bit."""
    return _dual("dual_ada_norm_fp8", x, y, gate, shift1, scale1, shift2, scale2, eps, kind, x_out, norm1_out,
                 norm2_out, (q1_out, scale1_out, q2_out, scale2_out))


def _dual(fn, x, y, gate, shift1, scale1, shift2, scale2, eps, kind, x_out, norm1_out, norm2_out, quant):
    if kind not in _ROW_KINDS:
        raise ValueError(f"{fn}: kind must be 'rms' or 'layer', got {kind!r}")
    if not eps > 0:
        raise ValueError(f"{fn}: eps must be > 0, got {eps}")
    x = row_view(fn, "x", x, ndim=3)
    if y is None and (gate is not None or x_out is not None):
        raise ValueError(f"{fn}: gate and x_out need a residual y, got y None with "
                         f"{'gate' if gate is not None else 'x_out'} set")
    if y is not None:
        y = row_view(fn, "y", y, ndim=3)
        if y.shape != x.shape or y.device != x.device:
            raise ValueError(f"{fn}: y must match x {tuple(x.shape)} on {x.device}, got {tuple(y.shape)} on {y.device}")
        x_out = check_rows(fn, "x_out", x_out, x.shape, x.dtype, x.device)
    mods = [_modulation(fn, name, t, x) for name, t in
            (("gate", gate), ("shift1", shift1), ("scale1", scale1), ("shift2", shift2), ("scale2", scale2))]
    norm1_out = check_rows(fn, "norm1_out", norm1_out, x.shape, x.dtype, x.device)
    norm2_out = check_rows(fn, "norm2_out", norm2_out, x.shape, x.dtype, x.device)
    q = (None,) * 4 if quant is None else (*fp8_rows(fn, quant[:2], x, ("q1_out", "scale1_out")),
                                           *fp8_rows(fn, quant[2:], x, ("q2_out", "scale2_out")))
    _launch_dual(x, y, x_out, norm1_out, norm2_out, q, mods, float(eps), _KINDS[kind])
    out = ((x if y is None else x_out), norm1_out, norm2_out)
    return out if quant is None else (*out, *q)


def _launch_dual(x, y, x_out, n1, n2, q, mods, eps, kind):
    block, warps = launch_config(x.shape[-1])
    strides = [s for t in (y, x_out) for s in ((t.stride(0), t.stride(1)) if t is not None else (0, 0))]
    _dual_ada_norm_kernel[(x.shape[0] * x.shape[1],)](
        x, y, *(t for t, _, _ in mods), x_out, n1, n2, *q, x.shape[1], x.shape[2], eps,
        x.stride(0), x.stride(1), *strides, n1.stride(0), n1.stride(1), n2.stride(0), n2.stride(1),
        *(s for _, sb, sn in mods for s in (sb, sn)),
        KIND=kind, HAS_Y=y is not None, QUANT=q[0] is not None, **{f"HAS_{k}": t is not None for k, (t, _, _) in
                                           zip(("GATE", "SHIFT1", "SCALE1", "SHIFT2", "SCALE2"), mods)},
        BLOCK_D=block, num_warps=warps,
    )
