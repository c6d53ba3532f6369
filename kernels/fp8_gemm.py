"""fp8 (e4m3) quantization and the scaled matmul of fp8 linear layers.

References: ``ltxengine.ops.reference.quantize_fp8`` / ``scaled_mm`` / ``fp8_linear`` (fp32).

- ``quantize_fp8``: q = e4m3(clamp(x / scale, -448, 448)), round to nearest even, bit-equal to
  the reference. A static scale is one elementwise pass; a dynamic per-row scale is one kernel
  (a program owns whole rows: amax loop, then quantize loop, the row being L2-resident); a
  dynamic per-tensor scale is an amax pass (tile max + one fp32 atomic max per program) and the
  elementwise pass, which turns the amax into the scale itself.
- ``scaled_mm``: (a @ b.T) * scale_a * scale_b.T + bias with a (M, K), b (N, K) e4m3, one tiled
  ``tl.dot`` (fp8 x fp8 -> fp32 accumulators; wgmma on Hopper, promoted to fp32 every K
  tile), the scales, bias and the cast to the output dtype in the epilogue. Tiles are visited
  in GROUP_M-row groups so that consecutive programs share b tiles in L2.
- ``fp8_linear``: the two above, as ``reference.fp8_linear``.
- ``gelu_quantize_fp8``: the per-row quantizer with a GELU (tanh) prologue, rounded to the input
  dtype before the amax (``reference.gelu_quantize_fp8``): the fp8 FFN's activation in one pass.

Static scales are checked for finite, positive values only when they live on the CPU: on CUDA
that check would cost a device sync per call and break CUDA-graph capture, so it is skipped.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ltxengine.ops.reference import FP8_MAX, FP8_MIN_AMAX

from ._common import (GemmConfig, check_rows, check_runnable, describe, gelu_tanh, grouped_tile, round_bf16,
                      to_e4m3)

# Read once, like triton.jit does when the kernels below are decorated.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_FP8 = torch.float8_e4m3fn
_IN_DTYPES = (torch.bfloat16, torch.float16, torch.float32)
_OUT_DTYPES = (torch.bfloat16, torch.float16, torch.float32)

_MAX: tl.constexpr = tl.constexpr(FP8_MAX)
_MIN_AMAX: tl.constexpr = tl.constexpr(FP8_MIN_AMAX)


# --------------------------------------------------------------------------------------------
# kernels


@triton.jit
def _quantize_tile_kernel(
    x_ptr,  # (M, K) bf16/fp16/fp32, row stride stride_xm, unit column stride
    q_ptr,  # (M, K) float8_e4m3fn, row stride stride_qm, unit column stride
    scale_ptr,  # (1,) fp32: the static scale, or with FROM_AMAX the amax of all of x
    scale_out_ptr,  # (1,) fp32: receives the scale from program (0, 0); may be scale_ptr itself
    M, K, stride_xm, stride_qm,
    FROM_AMAX: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid_r = tl.program_id(0)
    pid_k = tl.program_id(1)
    rows = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    rows64 = rows.to(tl.int64)[:, None]  # M * stride can pass 2^31 at video token counts
    scale = tl.load(scale_ptr)
    if FROM_AMAX:
        # True division, as the fp32 reference does: x * (1 / 448) differs in the last bit.
        scale = tl.math.div_rn(tl.maximum(scale, _MIN_AMAX), _MAX)
    # A static scale is copied too (the destination-passing caller owns scale_out); when it is
    # the scale itself, the same bits are written back, harmless to concurrent readers.
    tl.store(scale_out_ptr, scale, mask=(pid_r == 0) & (pid_k == 0))
    x = tl.load(x_ptr + rows64 * stride_xm + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    q = to_e4m3(tl.math.div_rn(x, scale))
    tl.store(q_ptr + rows64 * stride_qm + cols[None, :], q, mask=mask)


@triton.jit
def _amax_kernel(
    x_ptr,  # (M, K) bf16/fp16/fp32, row stride stride_xm, unit column stride
    amax_ptr,  # (1,) fp32, zero on entry; receives max |x|
    M, K, stride_xm,
    BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    cols = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
    mask = (rows[:, None] < M) & (cols[None, :] < K)
    x = tl.load(x_ptr + rows.to(tl.int64)[:, None] * stride_xm + cols[None, :], mask=mask, other=0.0)
    # One atomic per tile; max is exact, so the order of the atomics does not matter.
    tl.atomic_max(amax_ptr, tl.max(tl.max(tl.abs(x.to(tl.float32)), axis=1), axis=0))


@triton.jit
def _load_rows(ptrs, mask, GELU: tl.constexpr, INTERPRET_BF16: tl.constexpr):
    """fp32 values of x, or with GELU of gelu_tanh(x) rounded to x's dtype first: the bits the
    unfused F.gelu writes and the quantizer then reads back (amax and division see those)."""
    x = tl.load(ptrs, mask=mask, other=0.0)
    if GELU:
        g = gelu_tanh(x.to(tl.float32))
        if INTERPRET_BF16:
            return round_bf16(g)  # the interpreter's fp32 -> bf16 cast truncates
        return g.to(x.dtype).to(tl.float32)
    return x.to(tl.float32)


@triton.jit
def _quantize_rows_kernel(
    x_ptr,  # (M, K) bf16/fp16/fp32, row stride stride_xm, unit column stride
    q_ptr,  # (M, K) float8_e4m3fn, row stride stride_qm, unit column stride
    scale_out_ptr,  # (M,) fp32: per-row scale amax / 448
    M, K, stride_xm, stride_qm,
    GELU: tl.constexpr, INTERPRET_BF16: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    rows = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    row_mask = rows < M
    x_rows = x_ptr + rows.to(tl.int64)[:, None] * stride_xm
    q_rows = q_ptr + rows.to(tl.int64)[:, None] * stride_qm
    amax = tl.zeros((BLOCK_R,), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = row_mask[:, None] & (cols[None, :] < K)
        x = _load_rows(x_rows + cols[None, :], mask, GELU, INTERPRET_BF16)
        amax = tl.maximum(amax, tl.max(tl.abs(x), axis=1))
    scale = tl.math.div_rn(tl.maximum(amax, _MIN_AMAX), _MAX)
    tl.store(scale_out_ptr + rows, scale, mask=row_mask)
    # Second read of the rows: they were just read, so this one is served from L2 (with GELU,
    # recomputing it is cheaper than a round trip of the activation through memory).
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        mask = row_mask[:, None] & (cols[None, :] < K)
        x = _load_rows(x_rows + cols[None, :], mask, GELU, INTERPRET_BF16)
        q = to_e4m3(tl.math.div_rn(x, scale[:, None]))
        tl.store(q_rows + cols[None, :], q, mask=mask)


@triton.jit
def _scaled_mm_kernel(
    a_ptr,  # (M, K) float8_e4m3fn, row stride stride_am, unit column stride
    b_ptr,  # (N, K) float8_e4m3fn (nn.Linear layout), row stride stride_bn, unit column stride
    sa_ptr,  # (M,) fp32 if SA_ROWS else (1,)
    sb_ptr,  # (N,) fp32 if SB_COLS else (1,)
    bias_ptr,  # (N,) bf16/fp16/fp32 if HAS_BIAS (else unused)
    c_ptr,  # (M, N) bf16/fp16/fp32, row stride stride_cm, unit column stride
    M, N, K, stride_am, stride_bn, stride_cm,
    SA_ROWS: tl.constexpr, SB_COLS: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

    # Rows / columns past M / N wrap around instead of being masked: the loads stay unmasked in
    # those dims (only K needs a mask) and the stores below drop the duplicates.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m.to(tl.int64)[:, None] * stride_am + offs_k[None, :]
    # b tile read as (BLOCK_K, BLOCK_N) with K contiguous: the K-major operand fp8 wgmma wants.
    b_ptrs = b_ptr + offs_n.to(tl.int64)[None, :] * stride_bn + offs_k[:, None]
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        # On sm_90 Triton by default lets fp8 wgmma accumulate over all of K in the tensor cores'
        # reduced-precision accumulator (cuBLAS's use_fast_accum=True); promoting to the fp32
        # accumulator after every K tile (128 products, DeepSeek-V3's interval) keeps the error
        # at fp32-accumulation level, at some throughput cost (bench/ops_fp8_gemm.py to measure).
        acc = tl.dot(a, b, acc, max_num_imprecise_acc=BLOCK_K)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K

    # Epilogue in the reference's order: * scale_a, * scale_b, + bias, one rounding to c's dtype.
    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if SA_ROWS:
        acc = acc * tl.load(sa_ptr + rm, mask=rm < M, other=0.0)[:, None]
    else:
        acc = acc * tl.load(sa_ptr)
    if SB_COLS:
        acc = acc * tl.load(sb_ptr + rn, mask=rn < N, other=0.0)[None, :]
    else:
        acc = acc * tl.load(sb_ptr)
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    c_ptrs = c_ptr + rm.to(tl.int64)[:, None] * stride_cm + rn[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=(rm[:, None] < M) & (rn[None, :] < N))


# --------------------------------------------------------------------------------------------
# launch configurations


# H100 defaults: UNTUNED (written without a GPU; bench/ must confirm or replace them). The fp32
# promotion in the K loop keeps a second (partial) accumulator, so 128x128 tiles over 8 warps
# hold 2 x 64 accumulator registers a thread (128x256 needs 2 x 128 and spills: seen in an sm_90
# compile without a GPU); 4 stages of (128 + 128) x 128 fp8 bytes = 128 KiB of shared memory.
# Short M (decode-like) gets 64-row tiles.
_MM_H100 = GemmConfig(128, 128, 128, 8, 8, 4)
_MM_H100_SMALL_M = GemmConfig(64, 128, 128, 8, 4, 4)
# Interpreter: tl.dot's 16 minimum; small tiles keep the odd test shapes multi-tile (masking,
# grouping) while the per-program Python cost stays low.
_MM_TINY = GemmConfig(16, 16, 32, 2, 4, 1)


def _tiny(t: torch.Tensor) -> bool:
    return _INTERPRET or not t.is_cuda


def _mm_config(a: torch.Tensor, m: int) -> GemmConfig:
    if _tiny(a):
        return _MM_TINY
    return _MM_H100_SMALL_M if m <= 64 else _MM_H100


def _tile_config(x: torch.Tensor, m: int, k: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_K, num_warps) for the elementwise / amax passes: 4096-element tiles on a
    GPU (16 elements a thread over 8 warps: 16-byte loads of bf16 in pairs), a row-major tile of
    up to 32 x 128 under the interpreter. Untuned."""
    block_k = min(triton.next_power_of_2(k), 128 if _tiny(x) else 1024)
    block_r = min(triton.next_power_of_2(m), max(1, (1024 if _tiny(x) else 4096) // block_k))
    return block_r, block_k, 8


def _rows_config(x: torch.Tensor, m: int, k: int) -> tuple[int, int, int]:
    """(BLOCK_R, BLOCK_K, num_warps) for the per-row pass: a chunk of 2048 elements a step over
    4 warps on a GPU (16 a thread); rows are batched when they are shorter than a chunk."""
    block_k = min(triton.next_power_of_2(k), 128 if _tiny(x) else 2048)
    block_r = min(triton.next_power_of_2(m), max(1, (1024 if _tiny(x) else 2048) // block_k))
    return block_r, block_k, 4


# --------------------------------------------------------------------------------------------
# validation


def _check_device(fn: str, name: str, t: torch.Tensor, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{fn}: {name} must be on {device} like the other inputs, got {t.device}")


def _check_fp8_matrix(fn: str, name: str, t, shape_doc: str) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != 2:
        raise ValueError(f"{fn}: {name} must be a 2-D {shape_doc} tensor, got {describe(t)}")
    if t.dtype != _FP8:
        raise ValueError(f"{fn}: {name} must be float8_e4m3fn, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{fn}: {name} must not be empty, got shape {tuple(t.shape)}")


def _check_scale_values(fn: str, name: str, s: torch.Tensor) -> None:
    # CPU only: on CUDA this would be a device sync per call (and no CUDA-graph capture).
    if s.device.type == "cpu" and not bool((torch.isfinite(s) & (s > 0)).all()):
        raise ValueError(f"{fn}: {name} must be finite and > 0, got {s.flatten()[:8].tolist()}")


def _scale_arg(fn: str, name: str, s, rows: int, rows_doc: str, device: torch.device):
    """Validate a 0-d / (1,) / (rows, 1) fp32 scale; returns (flat contiguous scale, per_row)."""
    if not isinstance(s, torch.Tensor) or s.dtype != torch.float32:
        raise ValueError(f"{fn}: {name} must be a float32 tensor, got {describe(s)}")
    per_tensor = s.ndim <= 1 and s.numel() == 1
    if not per_tensor and tuple(s.shape) != (rows, 1):
        raise ValueError(f"{fn}: {name} must have shape (), (1,) or ({rows}, 1) ({rows_doc}), "
                         f"got {tuple(s.shape)}")
    _check_device(fn, name, s, device)
    _check_scale_values(fn, name, s)
    return s.reshape(-1).contiguous(), not per_tensor and rows > 1


def _static_scale_arg(fn: str, name: str, s, device: torch.device) -> torch.Tensor:
    if not isinstance(s, torch.Tensor) or s.dtype != torch.float32:
        raise ValueError(f"{fn}: {name} must be a float32 tensor, got {describe(s)}")
    if s.ndim > 1 or s.numel() != 1:
        raise ValueError(f"{fn}: {name} must be a per-tensor scale of shape () or (1,), got {tuple(s.shape)}")
    _check_device(fn, name, s, device)
    _check_scale_values(fn, name, s)
    return s


def _rows_of(fn: str, name: str, x) -> torch.Tensor:
    """x (..., K) float as an (M, K) view with a unit column stride (copies only if needed)."""
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise ValueError(f"{fn}: {name} must be a tensor of shape (..., K), got {describe(x)}")
    if x.dtype not in _IN_DTYPES:
        raise ValueError(f"{fn}: {name} must be bfloat16, float16 or float32, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{fn}: {name} must not be empty, got shape {tuple(x.shape)}")
    check_runnable(fn, name, x, _INTERPRET)
    x2 = x.reshape(-1, x.shape[-1])  # a view whenever the leading dims allow one
    return x2 if x2.stride(-1) == 1 else x2.contiguous()


def _bias_arg(fn: str, bias, n: int, device: torch.device):
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor) or bias.dtype not in _IN_DTYPES or tuple(bias.shape) != (n,):
        raise ValueError(f"{fn}: bias must be a ({n},) bfloat16, float16 or float32 tensor, got {describe(bias)}")
    _check_device(fn, "bias", bias, device)
    return bias.contiguous()


def _scale_out_arg(fn: str, scale_out, shape: tuple, device: torch.device) -> torch.Tensor:
    if scale_out is None:
        return torch.empty(shape, dtype=torch.float32, device=device)
    ok_shape = tuple(scale_out.shape) == shape or (shape in ((), (1,)) and tuple(scale_out.shape) in ((), (1,)))
    if not ok_shape or scale_out.dtype != torch.float32 or scale_out.device != device:
        raise ValueError(f"{fn}: scale_out must be {shape} float32 on {device}, "
                         f"got {tuple(scale_out.shape)} {scale_out.dtype} on {scale_out.device}")
    if not scale_out.is_contiguous():
        raise ValueError(f"{fn}: scale_out must be contiguous, got strides {scale_out.stride()}")
    return scale_out


# --------------------------------------------------------------------------------------------
# launchers (inputs already validated)


def _launch_rows(x2: torch.Tensor, q: torch.Tensor, scale_out: torch.Tensor, gelu: bool) -> None:
    m, k = x2.shape
    block_r, block_k, warps = _rows_config(x2, m, k)
    _quantize_rows_kernel[(triton.cdiv(m, block_r),)](
        x2, q, scale_out, m, k, x2.stride(0), q.stride(0),
        GELU=gelu, INTERPRET_BF16=gelu and _INTERPRET and x2.dtype == torch.bfloat16,
        BLOCK_R=block_r, BLOCK_K=block_k, num_warps=warps)


def _launch_quantize(x2: torch.Tensor, scale, per_row: bool, q: torch.Tensor, scale_out: torch.Tensor) -> None:
    m, k = x2.shape
    if scale is None and per_row:
        _launch_rows(x2, q, scale_out, gelu=False)
        return
    block_r, block_k, warps = _tile_config(x2, m, k)
    grid = (triton.cdiv(m, block_r), triton.cdiv(k, block_k))
    scale_in = scale
    if scale is None:
        scale_in = torch.zeros(1, dtype=torch.float32, device=x2.device)  # atomic max target
        _amax_kernel[grid](x2, scale_in, m, k, x2.stride(0), BLOCK_R=block_r, BLOCK_K=block_k, num_warps=warps)
    _quantize_tile_kernel[grid](
        x2, q, scale_in, scale_out, m, k, x2.stride(0), q.stride(0),
        FROM_AMAX=scale is None, BLOCK_R=block_r, BLOCK_K=block_k, num_warps=warps)


def _launch_mm(a, b, sa, sa_rows, sb, sb_cols, bias, c) -> None:
    m, k = a.shape
    n = b.shape[0]
    cfg = _mm_config(a, m)
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _scaled_mm_kernel[grid](
        a, b, sa, sb, bias if bias is not None else sb, c,
        m, n, k, a.stride(0), b.stride(0), c.stride(0),
        SA_ROWS=sa_rows, SB_COLS=sb_cols, HAS_BIAS=bias is not None,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)


# --------------------------------------------------------------------------------------------
# public API


def quantize_fp8(
    x: torch.Tensor,
    scale: torch.Tensor | None = None,
    per_row: bool = False,
    *,
    out: torch.Tensor | None = None,
    scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) bf16/fp16/fp32 -> (q (M, K) float8_e4m3fn, fp32 scale) with x ~ q * scale.

    ``scale`` given: static per-tensor fp32 scale, shape () or (1,) (``per_row`` must be False);
    it is copied into ``scale_out`` when one is given, else returned as is. Otherwise dynamic:
    a 0-d scale, or (M, 1) per row when ``per_row``. ``out`` / ``scale_out`` are written in place.
    """
    fn = "quantize_fp8"
    x2 = _rows_of(fn, "x", x)
    m, k = x2.shape
    if scale is not None and per_row:
        raise ValueError(f"{fn}: per_row=True applies to dynamic scales only (scale=None), got a static scale")
    if scale is not None:
        scale = _static_scale_arg(fn, "scale", scale, x.device)
    q = check_rows(fn, "out", out, (m, k), _FP8, x.device)
    shape = (m, 1) if per_row else (tuple(scale.shape) if scale is not None else ())
    s_out = scale if scale is not None and scale_out is None else _scale_out_arg(fn, scale_out, shape, x.device)
    _launch_quantize(x2, scale, per_row, q, s_out)
    return q, s_out


def gelu_quantize_fp8(
    h: torch.Tensor,
    *,
    out: torch.Tensor | None = None,
    scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h (..., K) bf16/fp16/fp32 -> (q (M, K) float8_e4m3fn, per-row fp32 scale (M, 1)) of
    gelu_tanh(h) rounded to h.dtype: ``quantize_fp8(F.gelu(h, approximate="tanh"), per_row=True)``
    in one pass over h (the fp8 FFN's GELU and its down-projection's activation quantization)."""
    fn = "gelu_quantize_fp8"
    h2 = _rows_of(fn, "h", h)
    m, k = h2.shape
    q = check_rows(fn, "out", out, (m, k), _FP8, h.device)
    s_out = _scale_out_arg(fn, scale_out, (m, 1), h.device)
    _launch_rows(h2, q, s_out, gelu=True)
    return q, s_out


def scaled_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """(a @ b.T) * scale_a * scale_b.T + bias in fp32, rounded once to ``out_dtype``.

    a (M, K), b (N, K) float8_e4m3fn (row-strided views accepted); scale_a fp32 () / (1,) /
    (M, 1); scale_b fp32 () / (1,) / (N, 1); bias (N,); out_dtype bf16, fp16 or fp32.
    """
    fn = "scaled_mm"
    _check_fp8_matrix(fn, "a", a, "(M, K)")
    _check_fp8_matrix(fn, "b", b, "(N, K)")
    m, k = a.shape
    n = b.shape[0]
    if b.shape[1] != k:
        raise ValueError(f"{fn}: b must be (N, K) with K = a.shape[1] = {k}, got {tuple(b.shape)}")
    check_runnable(fn, "a", a, _INTERPRET)
    _check_device(fn, "b", b, a.device)
    sa, sa_rows = _scale_arg(fn, "scale_a", scale_a, m, "per row of a", a.device)
    sb, sb_cols = _scale_arg(fn, "scale_b", scale_b, n, "per output channel", a.device)
    bias = _bias_arg(fn, bias, n, a.device)
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"{fn}: out_dtype must be bfloat16, float16 or float32, got {out_dtype}")
    c = check_rows(fn, "out", out, (m, n), out_dtype, a.device)
    a = a if a.stride(1) == 1 else a.contiguous()
    b = b if b.stride(1) == 1 else b.contiguous()
    _launch_mm(a, b, sa, sa_rows, sb, sb_cols, bias, c)
    return c


def fp8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
    per_token: bool = True,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Linear layer with an e4m3 weight (N, K): quantize x (static per-tensor ``input_scale``,
    else dynamic per token or per tensor), scaled matmul; output (..., N) in x.dtype."""
    fn = "fp8_linear"
    x2 = _rows_of(fn, "x", x)
    _check_fp8_matrix(fn, "weight", weight, "(N, K)")
    m, k = x2.shape
    n = weight.shape[0]
    if weight.shape[1] != k:
        raise ValueError(f"{fn}: weight must be (N, K) with K = x.shape[-1] = {k}, got {tuple(weight.shape)}")
    _check_device(fn, "weight", weight, x.device)
    sw, sw_cols = _scale_arg(fn, "weight_scale", weight_scale, n, "per output channel", x.device)
    bias = _bias_arg(fn, bias, n, x.device)
    if input_scale is not None:
        input_scale = _static_scale_arg(fn, "input_scale", input_scale, x.device)
    y = check_rows(fn, "out", out, (*x.shape[:-1], n), x.dtype, x.device)
    y2 = _as_rows_out(fn, y, m, n)
    per_row = per_token and input_scale is None
    q = torch.empty((m, k), dtype=_FP8, device=x.device)
    sx = input_scale if input_scale is not None else \
        torch.empty((m, 1) if per_row else (), dtype=torch.float32, device=x.device)
    _launch_quantize(x2, input_scale, per_row, q, sx)
    _launch_mm(q, weight if weight.stride(1) == 1 else weight.contiguous(),
               sx.reshape(-1), per_row and m > 1, sw, sw_cols, bias, y2)
    return y


def _as_rows_out(fn: str, y: torch.Tensor, m: int, n: int) -> torch.Tensor:
    try:
        return y.view(m, n)
    except RuntimeError:
        raise ValueError(f"{fn}: out must be viewable as ({m}, {n}) rows, got strides {y.stride()}") from None


__all__ = ["quantize_fp8", "gelu_quantize_fp8", "scaled_mm", "fp8_linear"]
