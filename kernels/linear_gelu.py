"""Linear layers with their epilogue fused into the GEMM: the FFN up-projection's GELU (tanh)
and the output projections' gated residual.

References: ``ltxengine.ops.reference.linear_gelu`` / ``linear_gated_residual``.

- ``linear_gelu``: gelu_tanh(x @ W^T + b). Unfused, the 4D-wide pre-activation is written by
  the GEMM, read and written again by GELU: for the 2B model's FFN that second pass is the
  largest elementwise byte mover of a step (issue 24's trace: ~3.4 ms at 768x512x121).
- ``linear_gated_residual``: x + gate * (h @ W^T + b), gate (B|1, T|1, N) or None. Unfused,
  the projection is written and then read again with x and the gate.

One tiled ``tl.dot`` kernel serves both (``EPILOGUE``): fp32 accumulators, bias, the epilogue
in fp32 and one rounding to the output dtype, where the references round the GEMM's result
first (so the kernel is slightly more exact; the tests' error budget covers both). Tiles are
visited in GROUP_M-row groups so consecutive programs share weight tiles in L2.

Not the default on a GPU: ``kernels="auto"`` prefers cuBLASLt (GELU epilogue) / cuBLAS until
bench/ has measured this kernel beating them on the device (see ops/linear_gelu.py).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from ._common import (FLOAT_DTYPES, GemmConfig, check_rows, check_runnable, describe, gelu_tanh, grouped_tile,
                      round_bf16)

# Read once, like triton.jit does when the kernels below are decorated.
_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"

_GELU, _GATED_RESIDUAL = 0, 1


@triton.jit
def _linear_epilogue_kernel(
    a_ptr,  # (M, K) activations, row stride s_am, column stride s_ak
    w_ptr,  # (N, K) weight (nn.Linear layout), strides s_wn, s_wk
    bias_ptr,  # (N,) any float dtype if HAS_BIAS (else unused)
    res_ptr,  # (M, N) residual x if EPILOGUE == 1, row stride s_rm, unit column stride
    gate_ptr,  # (B|1, T|1, N) gate rows if HAS_GATE, strides s_gb, s_gt (0 on size-1 dims), unit column
    c_ptr,  # (M, N) output, row stride s_cm, unit column stride; may alias res_ptr (in-place residual)
    M, N, K, T,  # T: tokens per sample, row r = b * T + t (gate indexing)
    s_am, s_ak, s_wn, s_wk, s_rm, s_gb, s_gt, s_cm,
    EPILOGUE: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_GATE: tl.constexpr,
    DOT_PRECISION: tl.constexpr, INTERPRET_BF16: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = grouped_tile(tl.program_id(0), M, N, BLOCK_M, BLOCK_N, GROUP_M)

    # Rows / columns past M / N wrap around instead of being masked (only K needs a mask in the
    # loop); the stores drop the duplicates.
    offs_m = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)) % M
    offs_n = (pid_n * BLOCK_N + tl.arange(0, BLOCK_N)) % N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_m.to(tl.int64)[:, None] * s_am + offs_k[None, :] * s_ak
    w_ptrs = w_ptr + offs_n.to(tl.int64)[None, :] * s_wn + offs_k[:, None] * s_wk  # (BLOCK_K, BLOCK_N)
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        k_left = K - k * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0.0)
        w = tl.load(w_ptrs, mask=offs_k[:, None] < k_left, other=0.0)
        if INTERPRET_BF16:
            # The interpreter's tl.dot multiplies bf16 bit patterns (triton-lang/triton#11584);
            # bf16 products are exact in fp32, so fp32 operands give the tensor cores' numerics.
            a = a.to(tl.float32)
            w = w.to(tl.float32)
        acc = tl.dot(a, w, acc, input_precision=DOT_PRECISION)
        a_ptrs += BLOCK_K * s_ak
        w_ptrs += BLOCK_K * s_wk

    rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (rm[:, None] < M) & (rn[None, :] < N)
    rows = rm.to(tl.int64)[:, None]
    if HAS_BIAS:
        acc = acc + tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)[None, :]
    if EPILOGUE == 0:
        acc = gelu_tanh(acc)
    else:
        if HAS_GATE:
            g_row = (rm // T).to(tl.int64) * s_gb + (rm % T).to(tl.int64) * s_gt
            acc = acc * tl.load(gate_ptr + g_row[:, None] + rn[None, :], mask=mask, other=0.0).to(tl.float32)
        acc = acc + tl.load(res_ptr + rows * s_rm + rn[None, :], mask=mask, other=0.0).to(tl.float32)
    if INTERPRET_BF16:
        acc = round_bf16(acc)
    tl.store(c_ptr + rows * s_cm + rn[None, :], acc.to(c_ptr.dtype.element_ty), mask=mask)


# --------------------------------------------------------------------------------------------
# launch configurations


# H100, bf16/fp16: UNTUNED (written without a GPU; bench/ must confirm or replace it). 128x128
# fp32 accumulators over 8 warps are 64 registers a thread, leaving room for the epilogue's
# loads; 4 stages of (128 + 128) x 64 bf16 = 128 KiB of shared memory.
_H100 = GemmConfig(128, 128, 64, 8, 8, 4)
# fp32 operands take twice the shared memory per stage.
_H100_FP32 = GemmConfig(128, 128, 32, 8, 8, 3)
# Interpreter: tl.dot's 16 minimum; small tiles keep odd test shapes multi-tile (masking,
# wrapping, grouping) while the per-program Python cost stays low.
_TINY = GemmConfig(16, 16, 16, 2, 4, 1)


def _config(x: torch.Tensor) -> GemmConfig:
    if _INTERPRET or not x.is_cuda:
        return _TINY
    return _H100_FP32 if x.dtype == torch.float32 else _H100


# --------------------------------------------------------------------------------------------
# validation


def _operand(fn: str, name: str, t, ndim: int | None, doc: str) -> None:
    if not isinstance(t, torch.Tensor) or (ndim is not None and t.ndim != ndim) or (ndim is None and t.ndim < 1):
        raise ValueError(f"{fn}: {name} must be a {doc} tensor, got {describe(t)}")
    if t.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{fn}: {name} must be float32, bfloat16 or float16, got {t.dtype}")
    if t.numel() == 0:
        raise ValueError(f"{fn}: {name} must not be empty, got shape {tuple(t.shape)}")


def _check_gemm(fn: str, a: torch.Tensor, a_name: str, weight, bias) -> int:
    """Checks the GEMM operands; returns N."""
    _operand(fn, "weight", weight, 2, "2-D (N, K)")
    n, k = weight.shape
    if a.shape[-1] != k:
        raise ValueError(f"{fn}: weight must be (N, K) with K = {a_name}.shape[-1] = {a.shape[-1]}, "
                         f"got {tuple(weight.shape)}")
    if weight.dtype != a.dtype or weight.device != a.device:
        raise ValueError(f"{fn}: weight must be {a.dtype} on {a.device} like {a_name}, "
                         f"got {weight.dtype} on {weight.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (n,) or bias.dtype not in FLOAT_DTYPES \
                or bias.device != a.device:
            raise ValueError(f"{fn}: bias must be a ({n},) float tensor on {a.device}, got {describe(bias)}")
    check_runnable(fn, a_name, a, _INTERPRET)
    return n


def _rows(t: torch.Tensor) -> torch.Tensor:
    """t (..., C) as an (M, C) view (a copy only when the leading dims do not fold)."""
    return t.reshape(-1, t.shape[-1])


def _out_rows(fn: str, out: torch.Tensor, m: int, n: int) -> torch.Tensor:
    try:
        return out.view(m, n)
    except RuntimeError:
        raise ValueError(f"{fn}: out must be viewable as ({m}, {n}) rows, got strides {out.stride()}") from None


def _gate(fn: str, gate, x: torch.Tensor):
    """(gate, batch stride, token stride) of a (B|1, T|1, N) gate for x (B, T, N)."""
    if gate is None:
        return None, 0, 0
    b, t, n = x.shape
    if not isinstance(gate, torch.Tensor) or gate.ndim != 3 or gate.shape[0] not in (1, b) \
            or gate.shape[1] not in (1, t) or gate.shape[2] != n:
        raise ValueError(f"{fn}: gate must be (B|1, T|1, N) = ({b}|1, {t}|1, {n}) for x {tuple(x.shape)}, "
                         f"got {describe(gate)}")
    if gate.dtype not in FLOAT_DTYPES or gate.device != x.device:
        raise ValueError(f"{fn}: gate must be a float tensor on {x.device}, got {gate.dtype} on {gate.device}")
    gate = gate if gate.stride(-1) == 1 else gate.contiguous()
    return gate, (gate.stride(0) if gate.shape[0] > 1 else 0), (gate.stride(1) if gate.shape[1] > 1 else 0)


# --------------------------------------------------------------------------------------------
# launch


def _launch(a2, weight, bias, res2, gate, s_gb, s_gt, tokens, c2, epilogue: int) -> None:
    m, k = a2.shape
    n = weight.shape[0]
    cfg = _config(a2)
    interpret_bf16 = (_INTERPRET or not a2.is_cuda) and a2.dtype == torch.bfloat16
    grid = (triton.cdiv(m, cfg.block_m) * triton.cdiv(n, cfg.block_n),)
    _linear_epilogue_kernel[grid](
        a2, weight, bias if bias is not None else weight, res2 if res2 is not None else c2,
        gate if gate is not None else weight, c2,
        m, n, k, tokens,
        a2.stride(0), a2.stride(1), weight.stride(0), weight.stride(1),
        res2.stride(0) if res2 is not None else 0, s_gb, s_gt, c2.stride(0),
        EPILOGUE=epilogue, HAS_BIAS=bias is not None, HAS_GATE=gate is not None,
        # fp32 inputs: exact fp32 products (no TF32 rounding), as the fp32 reference computes.
        DOT_PRECISION="ieee" if a2.dtype == torch.float32 or interpret_bf16 else "tf32",
        INTERPRET_BF16=interpret_bf16,
        BLOCK_M=cfg.block_m, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, GROUP_M=cfg.group_m,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)


# --------------------------------------------------------------------------------------------
# public API


def linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, *,
                out: torch.Tensor | None = None) -> torch.Tensor:
    """gelu_tanh(x @ weight^T + bias) for x (..., K), weight (N, K) of x's dtype, bias (N,) or
    None; returns (..., N) in x's dtype (written into ``out`` when given)."""
    fn = "linear_gelu"
    _operand(fn, "x", x, None, "(..., K)")
    n = _check_gemm(fn, x, "x", weight, bias)
    y = check_rows(fn, "out", out, (*x.shape[:-1], n), x.dtype, x.device)
    a2 = _rows(x)
    _launch(a2, weight, bias, None, None, 0, 0, 1, _out_rows(fn, y, a2.shape[0], n), _GELU)
    return y


def linear_gated_residual(x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                          gate: torch.Tensor | None, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """x + gate * (h @ weight^T + bias) for x (B, T, N), h (B, T, K), weight (N, K) of h's dtype,
    bias (N,) or None, gate (B|1, T|1, N) or None (means 1). ``out=x`` updates the residual
    stream in place (each element of x is read by the program that writes it)."""
    fn = "linear_gated_residual"
    _operand(fn, "x", x, 3, "3-D (B, T, N)")
    _operand(fn, "h", h, 3, "3-D (B, T, K)")
    if h.shape[:2] != x.shape[:2] or h.device != x.device:
        raise ValueError(f"{fn}: h must be ({x.shape[0]}, {x.shape[1]}, K) on {x.device} like x, "
                         f"got {tuple(h.shape)} on {h.device}")
    n = _check_gemm(fn, h, "h", weight, bias)
    if x.shape[2] != n:
        raise ValueError(f"{fn}: x must have N = weight.shape[0] = {n} channels, got {tuple(x.shape)}")
    gate, s_gb, s_gt = _gate(fn, gate, x)
    y = check_rows(fn, "out", out, x.shape, x.dtype, x.device)
    res2 = _rows(x)
    res2 = res2 if res2.stride(-1) == 1 else res2.contiguous()
    a2 = _rows(h)
    _launch(a2, weight, bias, res2, gate, s_gb, s_gt, x.shape[1], _out_rows(fn, y, a2.shape[0], n), _GATED_RESIDUAL)
    return y


__all__ = ["linear_gelu", "linear_gated_residual"]
