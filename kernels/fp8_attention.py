"""fp8 (e4m3) attention: q, k and v quantized per (batch, head), then a flash-attention forward
whose two products run on fp8 tensor cores.

Reference: ``ltxengine.ops.reference.attention_fp8`` (fp32). Same contract as ``ops.attention``:
q (B, Nq, H*D), k and v (B, Nk, H*D), an optional additive mask broadcastable to (B, H, Nq, Nk),
output (B, Nq, H*D) in q.dtype.

Launches (per call: one memset, 3 + 3 small ones, the attention):
1. ``_head_amax_kernel``, once per tensor: a program reduces a (rows, D) tile of one head and
   issues one fp32 atomic max into amax[tensor, b, h] (max is exact: the order does not matter).
2. ``_head_quantize_kernel``, once per tensor: scale = max(amax, 1e-12) / 448 (true division, as
   the reference) and e4m3 = round-to-nearest-even(clamp(x / scale)), bit-equal to the reference,
   into packed buffers: q8 and k8 (B, H, N, BD) row-major, v8 transposed (B, H, BD, Nk16). BD is
   D padded to a power of two >= 32 (zeros: they add nothing to q.k), Nk16 is Nk padded to 16
   keys. Why v is transposed: the fp8 wgmma needs both operands K-major, and the reduction axis
   of P @ V is the key axis, so keys must be contiguous (FA3 transposes V in its kernel for the
   same reason; here the quantization pass writes it that way for free).
3. ``_attention_kernel``: one program per (BLOCK_M queries, batch, head); online softmax over
   BLOCK_N-key tiles. S = q8 @ k8^T (fp8 tl.dot, fp32 result) * (s_q s_k log2(e) / sqrt(D)), plus
   the mask bias (in log2 units) per tile; P = exp2(S - m + log2(448)) lies in (0, 448] and is
   rounded to e4m3 (a fixed scale of 1/448: the largest weight of a row uses the top of the e4m3
   range, weights down to ~2e-6 of it survive as subnormals), then acc += P8 @ v8 (fp8 tl.dot,
   promoted to the fp32 accumulator every tile). The row sum l adds the rounded P8, so the
   weights that multiply v are exactly the ones that normalize them. out = acc * s_v / l.

P in e4m3 rather than bf16, measured with a torch emulation (unit-RMS q and k, N=2048, D=64, with
and without outlier channels, logit std 1-8): rounding P to e4m3 adds 0.05-2.5% relative error
against the fp8 reference (bf16 P: 0.003-0.15%), while quantizing q, k and v already costs 5-20%
against fp32 attention (zero-mean v): the fp8 PV product (twice the bf16 rate) does not change the
quality picture (tests/kernels/test_fp8_attention.py reports it). Summing the rounded P into l
rather than the fp32 P: 2-3x less P error when v has a common offset, equal otherwise.

Masks: loaded per tile through broadcast strides (no expanded copy); a mask that is constant along
the queries (the models' key-padding bias (B, 1, 1, Nk)) is read as one BLOCK_N vector per tile.
Finite mask values are clamped at -1e38 before the conversion to log2 units, so LTX-2's
(mask - 1) * finfo(bf16).max stays finite (* log2(e) would overflow it to -inf) and a row whose
keys all carry it averages all its keys, as the fp32 reference does. -inf excludes a key; a row
whose keys are all -inf gives 0, as torch's SDPA does.

Interpreter (TRITON_INTERPRET=1, CPU tensors): fp8 tl.dot is exact there (e4m3 x e4m3 products
are exact in fp32; checked against a float64 matmul), so no upcast is needed (bf16 tl.dot, broken
there, triton-lang/triton#11584, is not used). Its fp32 -> e4m3 cast does not round to nearest
even, so P goes through ``_common.to_e4m3`` under the interpreter; on a GPU it is the hardware
cast (cvt.rn.satfinite: also round to nearest even, saturating) because the bit-level rounding
would add ~12 integer ops per score to the softmax, the part of an fp8 attention that already
bounds its speed at D=64. The quantization kernels are memory-bound and always use to_e4m3.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ltxengine.ops.reference import FP8_MAX, FP8_MIN_AMAX

from ._common import check_rows, check_runnable, describe, to_e4m3

# Read once, like triton.jit does when the kernels below are decorated.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_FN = "attention_fp8"
_FP8 = torch.float8_e4m3fn
_IN_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_MAX_HEAD_DIM = 256

_MAX: tl.constexpr = tl.constexpr(FP8_MAX)
_MIN_AMAX: tl.constexpr = tl.constexpr(FP8_MIN_AMAX)
_LOG2E: tl.constexpr = tl.constexpr(math.log2(math.e))
_LOG2_P_SCALE: tl.constexpr = tl.constexpr(math.log2(FP8_MAX))  # P's fixed scale 1/448
_MASK_FLOOR: tl.constexpr = tl.constexpr(-1e38)  # finite mask values are clamped here (see _clamped_log2)


# --------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _head_amax_kernel(
    x_ptr,  # (B, N, H*D) bf16/fp16/fp32, strides (stride_b, stride_n, 1)
    amax_ptr,  # (B*H,) fp32, zero on entry: receives max |x| of each head's (N, D) slice
    N, H, D, stride_b, stride_n, row_tiles,
    BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Flat grid, row tiles fastest: no 65535 limit on grid axes 1/2 at any (B*H, N).
    pid = tl.program_id(0)
    bh = pid // row_tiles
    rows = (pid % row_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    head = x_ptr + (bh // H).to(tl.int64) * stride_b + (bh % H) * D
    mask = (rows[:, None] < N) & (cols[None, :] < D)
    x = tl.load(head + rows.to(tl.int64)[:, None] * stride_n + cols[None, :], mask=mask, other=0.0)
    tl.atomic_max(amax_ptr + bh, tl.max(tl.max(tl.abs(x.to(tl.float32)), axis=1), axis=0))


@triton.jit
def _head_quantize_kernel(
    x_ptr,  # (B, N, H*D) bf16/fp16/fp32, strides (stride_b, stride_n, 1)
    amax_ptr,  # (B*H,) fp32: max |x| per head
    y_ptr,  # e4m3: (B*H, N, BLOCK_D) contiguous, or with TRANSPOSE (B*H, BLOCK_D, n_pad)
    N, H, D, stride_b, stride_n, n_pad, row_tiles,
    TRANSPOSE: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    bh = pid // row_tiles
    rows = (pid % row_tiles) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.arange(0, BLOCK_D)
    head = x_ptr + (bh // H).to(tl.int64) * stride_b + (bh % H) * D
    x = tl.load(head + rows.to(tl.int64)[:, None] * stride_n + cols[None, :],
                mask=(rows[:, None] < N) & (cols[None, :] < D), other=0.0)
    # True divisions, as the fp32 reference: x * (1 / scale) differs in the last bit.
    scale = tl.math.div_rn(tl.maximum(tl.load(amax_ptr + bh), _MIN_AMAX), _MAX)
    y = to_e4m3(tl.math.div_rn(x.to(tl.float32), scale))  # padding columns d >= D: zeros
    if TRANSPOSE:
        out = y_ptr + bh.to(tl.int64) * BLOCK_D * n_pad + cols[None, :] * n_pad + rows[:, None]
    else:
        out = y_ptr + (bh.to(tl.int64) * N + rows[:, None]) * BLOCK_D + cols[None, :]
    tl.store(out, y, mask=rows[:, None] < N)


@triton.jit
def _dequant_scale(amax_ptr, idx):
    return tl.math.div_rn(tl.maximum(tl.load(amax_ptr + idx), _MIN_AMAX), _MAX)


@triton.jit
def _clamped_log2(bias):
    """Mask values -> log2 units. Finite values are clamped at -1e38 first, so LTX-2's
    (mask - 1) * finfo(bf16).max stays finite (* log2(e) would overflow it to -inf); -inf stays."""
    return tl.where(bias == float("-inf"), bias, tl.maximum(bias, _MASK_FLOOR)) * _LOG2E


@triton.jit
def _score_bias(m_base, rows, cols, col_ok, Nq, stride_mq, stride_mk,
                HAS_MASK: tl.constexpr, MASK_ROWS: tl.constexpr):
    """Additive bias of one score tile in log2 units (m_base: the mask at (b, h, 0, 0)): -inf
    past Nk, the mask otherwise. (1, BLOCK_N) for key-only masks (one vector load a tile),
    (BLOCK_M, BLOCK_N) for masks that vary along the queries."""
    if HAS_MASK:
        if MASK_ROWS:
            ok = (rows[:, None] < Nq) & col_ok[None, :]
            ptrs = m_base + rows.to(tl.int64)[:, None] * stride_mq + cols.to(tl.int64)[None, :] * stride_mk
            bias = _clamped_log2(tl.load(ptrs, mask=ok, other=0.0).to(tl.float32))
            bias = tl.where(col_ok[None, :], bias, float("-inf"))
        else:
            bias = tl.load(m_base + cols.to(tl.int64) * stride_mk, mask=col_ok, other=0.0).to(tl.float32)
            bias = tl.where(col_ok, _clamped_log2(bias), float("-inf"))[None, :]
    else:
        bias = tl.where(col_ok, 0.0, float("-inf"))[None, :]
    return bias


@triton.jit
def _attention_kernel(
    q_ptr,  # (B*H, Nq, BLOCK_D) e4m3, contiguous
    k_ptr,  # (B*H, Nk, BLOCK_D) e4m3, contiguous
    v_ptr,  # (B*H, BLOCK_D, nk_pad) e4m3, contiguous: v transposed, keys contiguous
    amax_ptr,  # (3, BH) fp32: max |q|, |k|, |v| per head
    mask_ptr,  # additive float bias read as (B, H, Nq, Nk) through broadcast strides (unused without HAS_MASK)
    o_ptr,  # (B, Nq, H*D) bf16/fp16/fp32, strides (stride_ob, stride_on, 1)
    Nq, Nk, H, D, BH, nk_pad, m_tiles,
    stride_mb, stride_mh, stride_mq, stride_mk, stride_ob, stride_on,
    sm_scale,  # 1 / sqrt(D)
    HAS_MASK: tl.constexpr, MASK_ROWS: tl.constexpr, EXACT_P_CAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # Flat grid, query tiles fastest: the programs of one head run together and share its k/v in L2.
    pid = tl.program_id(0)
    bh = pid // m_tiles
    b = bh // H
    h = bh % H
    # Scores in log2 units: exp2 is the hardware's exponential; the dequantization scales of q
    # and k fold into the one multiply every score needs anyway.
    qk_scale = _dequant_scale(amax_ptr, bh) * _dequant_scale(amax_ptr, BH + bh) * sm_scale * _LOG2E
    v_scale = _dequant_scale(amax_ptr, 2 * BH + bh)

    rows = (pid % m_tiles) * BLOCK_M + tl.arange(0, BLOCK_M)
    d = tl.arange(0, BLOCK_D)
    q = tl.load(q_ptr + (bh.to(tl.int64) * Nq + rows[:, None]) * BLOCK_D + d[None, :],
                mask=rows[:, None] < Nq, other=0.0)
    k_head = k_ptr + bh.to(tl.int64) * Nk * BLOCK_D
    v_head = v_ptr + bh.to(tl.int64) * BLOCK_D * nk_pad
    m_head = mask_ptr + b.to(tl.int64) * stride_mb + h.to(tl.int64) * stride_mh

    m_i = tl.full((BLOCK_M,), float("-inf"), tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    acc = tl.zeros((BLOCK_M, BLOCK_D), dtype=tl.float32)
    for start in range(0, Nk, BLOCK_N):
        cols = start + tl.arange(0, BLOCK_N)
        col_ok = cols < Nk
        # k^T tile (BLOCK_D, BLOCK_N) with D contiguous: the K-major operand fp8 wgmma wants.
        kt = tl.load(k_head + cols[None, :] * BLOCK_D + d[:, None], mask=col_ok[None, :], other=0.0)
        s = tl.dot(q, kt) * qk_scale + _score_bias(m_head, rows, cols, col_ok, Nq, stride_mq, stride_mk,
                                                    HAS_MASK, MASK_ROWS)
        m_new = tl.maximum(m_i, tl.max(s, axis=1))
        # A row whose keys so far are all -inf (mask or padding) keeps m = -inf: shift by 0 there
        # so that no -inf - -inf appears (its P is 0, its alpha 0). Per row, not per score.
        m_shift = tl.where(m_new == float("-inf"), 0.0, m_new)
        alpha = tl.math.exp2(m_i - m_shift)
        p = tl.math.exp2(s - (m_shift - _LOG2_P_SCALE)[:, None])  # (0, 448]: P / (1/448)
        if EXACT_P_CAST:
            p8 = to_e4m3(p)
        else:
            p8 = p.to(tl.float8e4nv)
        l_i = l_i * alpha + tl.sum(p8.to(tl.float32), axis=1)
        # v tile (BLOCK_N, BLOCK_D) read from the transposed copy: keys (the reduction) contiguous.
        # Masked: the padding keys of v8 are never written, and 0 * NaN would poison acc.
        vt = tl.load(v_head + d[None, :] * nk_pad + cols[:, None], mask=col_ok[:, None], other=0.0)
        # Promote to the fp32 accumulator after each tile (the fp8 MMA's own accumulator keeps
        # ~14 bits; the K of this product is one tile, BLOCK_N keys).
        acc = tl.dot(p8, vt, acc * alpha[:, None], max_num_imprecise_acc=BLOCK_N)
        m_i = m_new

    # l >= 448 once a row has a key (its largest P is 448); l = 0 only where every key is -inf,
    # where acc = 0 too: the clamp turns that 0 / 0 into 0, as torch's SDPA (the reference) returns.
    out = acc * (v_scale / tl.maximum(l_i, 1.0))[:, None]
    o_ptrs = o_ptr + b.to(tl.int64) * stride_ob + rows.to(tl.int64)[:, None] * stride_on + h * D + d[None, :]
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=(rows[:, None] < Nq) & (d[None, :] < D))


# --------------------------------------------------------------------------------------------
# launch configurations


@dataclass(frozen=True)
class _AttnConfig:
    block_m: int
    block_n: int
    num_warps: int
    num_stages: int


# H100, UNTUNED (written without a GPU; bench/ops_fp8_attention.py must confirm or replace it).
# 128 x 128 score tiles over 8 warps (two warpgroups of m64 wgmma): 64 fp32 score registers a
# thread plus the (128, D) accumulator (32 at D=64, 64 at D=128); the fp8 k and v tiles are 16 KiB
# each per stage at D=128, 3 stages + q = 112 KiB of shared memory. 128 keys a tile is the K of
# the P @ V wgmma (4 k32 steps) and halves the per-tile softmax bookkeeping against 64.
# sm_90a compiles (ptxas, Triton 3.9): 164 registers at D=64, 234 at D=128, 247 with the key-padding
# mask, no spills. A mask that varies per query loads a (128, 128) fp32 bias tile too: at D=128 it
# spilled (255 registers + 20 bytes), 64-key tiles do not (223). D > 128 (no LTX model): 64 x 64
# tiles over 8 warps (201 registers; 4 warps or 128-row tiles spill ~500 bytes).
_ATTN_H100 = _AttnConfig(128, 128, 8, 3)
_ATTN_H100_QUERY_MASK = _AttnConfig(128, 64, 8, 3)
_ATTN_H100_WIDE = _AttnConfig(64, 64, 8, 2)
# Interpreter: tl.dot's minimum of 16, so odd test shapes span several tiles on both axes while
# the Python cost per program stays small.
_ATTN_TINY = _AttnConfig(16, 16, 4, 1)


def _tiny(t: torch.Tensor) -> bool:
    return _INTERPRET or not t.is_cuda


def _attn_config(tiny: bool, block_d: int, mask_rows: bool) -> _AttnConfig:
    if tiny:
        return _ATTN_TINY
    if block_d > 128:
        return _ATTN_H100_WIDE
    return _ATTN_H100_QUERY_MASK if mask_rows and block_d > 64 else _ATTN_H100


def _quant_config(tiny: bool, block_d: int) -> tuple[int, int]:
    """(BLOCK_R, num_warps) of the amax / quantize passes: 4096-element tiles on a GPU (16
    elements a thread over 8 warps: two 16-byte bf16 loads each); 16 rows under the interpreter
    (odd test lengths still span several tiles). Untuned."""
    if tiny:
        return 16, 4
    return max(1, 4096 // block_d), 8


def _block_d(head_dim: int) -> int:
    # fp8 wgmma consumes K in steps of 32: narrower heads are zero-padded to 32.
    return max(32, triton.next_power_of_2(head_dim))


# --------------------------------------------------------------------------------------------
# validation


def _check_qkv(q, k, v) -> None:
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, torch.Tensor) or t.ndim != 3:
            raise ValueError(f"{_FN}: {name} must be a 3-D (B, N, H*D) tensor, got {describe(t)}")
        if t.dtype not in _IN_DTYPES:
            raise ValueError(f"{_FN}: {name} must be bfloat16, float16 or float32, got {t.dtype}")
        if t.numel() == 0:
            raise ValueError(f"{_FN}: {name} must not be empty, got shape {tuple(t.shape)}")
    check_runnable(_FN, "q", q, _INTERPRET)
    for name, t in (("k", k), ("v", v)):
        if t.dtype != q.dtype:
            raise ValueError(f"{_FN}: {name} must have q's dtype {q.dtype}, got {t.dtype}")
        if t.device != q.device:
            raise ValueError(f"{_FN}: {name} must be on q's device {q.device}, got {t.device}")
    b, _, width = q.shape
    if k.shape[0] != b or k.shape[2] != width:
        raise ValueError(f"{_FN}: k must be (B, Nk, H*D) = ({b}, Nk, {width}) like q, got {tuple(k.shape)}")
    if v.shape != k.shape:
        raise ValueError(f"{_FN}: v must have k's shape {tuple(k.shape)}, got {tuple(v.shape)}")


def _check_heads(heads, width: int) -> int:
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        raise ValueError(f"{_FN}: heads must be a positive int, got {heads!r}")
    if width % heads:
        raise ValueError(f"{_FN}: heads must divide the width H*D = {width}, got {heads}")
    if width // heads > _MAX_HEAD_DIM:
        raise ValueError(f"{_FN}: head dim width / heads must be <= {_MAX_HEAD_DIM}, got {width // heads}")
    return heads


def _check_mask(mask, shape: tuple[int, int, int, int], device: torch.device):
    """None, or the mask as a (B, H, Nq, Nk) view with zero strides on its broadcast dims."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor) or mask.dtype not in _IN_DTYPES:
        raise ValueError(f"{_FN}: mask must be an additive float bias (float32, bfloat16 or float16), "
                         f"got {describe(mask)}")
    if mask.device != device:
        raise ValueError(f"{_FN}: mask must be on q's device {device}, got {mask.device}")
    try:
        if mask.ndim > 4:
            raise RuntimeError
        return mask.expand(shape)
    except RuntimeError:
        raise ValueError(f"{_FN}: mask must broadcast to (B, H, Nq, Nk) = {shape}, "
                         f"got {tuple(mask.shape)}") from None


def _rows(t: torch.Tensor) -> torch.Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()


# --------------------------------------------------------------------------------------------
# launchers (inputs already validated)


def _quantize_heads(x: torch.Tensor, heads: int, block_d: int, amax: torch.Tensor, transpose: bool,
                    tiny: bool) -> torch.Tensor:
    """x (B, N, H*D) -> e4m3 (B*H, N, block_d), or (B*H, block_d, N16) when ``transpose``;
    amax (B*H,) fp32 zeros on entry, max |x| per head on return."""
    b, n, width = x.shape
    d = width // heads
    block_r, warps = _quant_config(tiny, block_d)
    row_tiles = triton.cdiv(n, block_r)
    grid = (b * heads * row_tiles,)
    n_pad = triton.cdiv(n, 16) * 16  # 16-byte aligned rows of the transposed copy
    shape = (b * heads, block_d, n_pad) if transpose else (b * heads, n, block_d)
    y = torch.empty(shape, dtype=_FP8, device=x.device)
    _head_amax_kernel[grid](x, amax, n, heads, d, x.stride(0), x.stride(1), row_tiles,
                            BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps)
    _head_quantize_kernel[grid](x, amax, y, n, heads, d, x.stride(0), x.stride(1), n_pad, row_tiles,
                                TRANSPOSE=transpose, BLOCK_R=block_r, BLOCK_D=block_d, num_warps=warps)
    return y


def _launch_attention(q8, k8, v8t, amax, mask, out, heads: int, head_dim: int, tiny: bool) -> None:
    b, nq, _ = out.shape
    nk = k8.shape[1]
    block_d = q8.shape[2]
    mask_rows = mask is not None and mask.stride(2) != 0  # the bias varies along the queries
    cfg = _attn_config(tiny, block_d, mask_rows)
    m_tiles = triton.cdiv(nq, cfg.block_m)
    # Without a mask the kernel reads none; amax stands in for the pointer (strides 0).
    mask_arg, mask_strides = (mask, mask.stride()) if mask is not None else (amax, (0, 0, 0, 0))
    _attention_kernel[(b * heads * m_tiles,)](
        q8, k8, v8t, amax, mask_arg, out,
        nq, nk, heads, head_dim, b * heads, v8t.shape[2], m_tiles, *mask_strides, out.stride(0), out.stride(1),
        1.0 / math.sqrt(head_dim),
        HAS_MASK=mask is not None, MASK_ROWS=mask_rows,
        EXACT_P_CAST=tiny,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_D=block_d,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)


# --------------------------------------------------------------------------------------------
# public API


def attention_fp8(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    heads: int,
    mask: torch.Tensor | None = None,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Multi-head attention with q, k, v in e4m3 (dynamic per-(batch, head) scales); the numerics
    of ``reference.attention_fp8``, P rounded to e4m3 before the PV product.

    q (B, Nq, H*D), k and v (B, Nk, H*D): bf16/fp16/fp32, one dtype, views whose last dim is
    contiguous (e.g. slices of a fused qkv projection); D <= 256. mask: None or an additive float
    bias broadcastable to (B, H, Nq, Nk). Returns (B, Nq, H*D) in q.dtype; ``out`` (that shape and
    dtype, unit last-dim stride) is written in place and returned. Inputs are not modified.
    """
    _check_qkv(q, k, v)
    heads = _check_heads(heads, q.shape[2])
    b, nq, width = q.shape
    nk = k.shape[1]
    mask = _check_mask(mask, (b, heads, nq, nk), q.device)
    out = check_rows(_FN, "out", out, (b, nq, width), q.dtype, q.device)
    head_dim = width // heads
    block_d = _block_d(head_dim)
    tiny = _tiny(q)  # interpreter-sized blocks, exact P rounding
    amax = torch.zeros((3, b * heads), dtype=torch.float32, device=q.device)  # atomic max targets
    q8 = _quantize_heads(_rows(q), heads, block_d, amax[0], False, tiny)
    k8 = _quantize_heads(_rows(k), heads, block_d, amax[1], False, tiny)
    v8t = _quantize_heads(_rows(v), heads, block_d, amax[2], True, tiny)
    _launch_attention(q8, k8, v8t, amax, mask, out, heads, head_dim, tiny)
    return out


__all__ = ["attention_fp8"]
