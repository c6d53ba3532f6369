"""Launcher helpers shared by the Triton kernels: input views, output checks, launch sizes, the GEMM
tile configuration."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from ltxengine.ops.reference import FP8_MAX, FP8_MIN_AMAX

_MAX: tl.constexpr = tl.constexpr(FP8_MAX)
_MIN_AMAX: tl.constexpr = tl.constexpr(FP8_MIN_AMAX)

FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def row_view(fn: str, name: str, x: torch.Tensor, ndim: int) -> torch.Tensor:
    """x as an ndim-D float tensor whose last dim is contiguous (other dims may be strided views,
    e.g. q sliced out of a fused qkv projection); copies only when the last dim is strided."""
    if not isinstance(x, torch.Tensor) or x.ndim != ndim:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: {name} must be a {ndim}-D tensor, got {got}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{fn}: {name} must be float32, bfloat16 or float16, got {x.dtype}")
    if x.numel() == 0:
        raise ValueError(f"{fn}: {name} must not be empty, got shape {tuple(x.shape)}")
    return x if x.stride(-1) == 1 else x.contiguous()


def check_rows(fn: str, name: str, out, shape, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Allocate an output, or check a given one (destination passing: never reallocated)."""
    if out is None:
        return torch.empty(shape, dtype=dtype, device=device)
    if tuple(out.shape) != tuple(shape) or out.dtype != dtype or out.device != device:
        raise ValueError(f"{fn}: {name} must be {tuple(shape)} {dtype} on {device}, "
                         f"got {tuple(out.shape)} {out.dtype} on {out.device}")
    if out.stride(-1) != 1:
        raise ValueError(f"{fn}: {name} must have a contiguous last dim, got strides {out.stride()}")
    return out


def describe(t) -> str:
    """What an argument is, for error messages: shape and dtype of a tensor, else its type."""
    return f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else type(t).__name__


def check_runnable(fn: str, name: str, t: torch.Tensor, interpret: bool) -> None:
    """A CPU tensor runs only under Triton's interpreter; ``interpret`` is the calling module's
    TRITON_INTERPRET, read when it was imported (as triton.jit reads it)."""
    if not t.is_cuda and not interpret:
        raise ValueError(f"{fn}: {name} must be a CUDA tensor (CPU tensors need TRITON_INTERPRET=1 set "
                         f"before ltxengine.kernels is imported), got device {t.device}")


@dataclass(frozen=True)
class GemmConfig:
    """Launch configuration of a tiled GEMM: output tile, K step, tile-grouping width (L2 reuse),
    warps and pipeline stages."""
    block_m: int
    block_n: int
    block_k: int
    group_m: int
    num_warps: int
    num_stages: int


def launch_config(width: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps) for one row of ``width`` elements per program: the whole row in
    registers, ~8-16 elements per thread so loads vectorize to 16 bytes. Untuned: no GPU has
    measured these yet (bench/ops_*.py)."""
    block = triton.next_power_of_2(width)
    return block, max(1, min(16, block // 256))


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program ``pid`` in grouped order: GROUP_M row-tiles sweep the N tiles
    together, so an operand tile loaded by one program is still in L2 for the next GROUP_M - 1."""
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n = tl.cdiv(N, BLOCK_N)
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % group_rows
    pid_n = (pid % (GROUP_M * tiles_n)) // group_rows
    return pid_m, pid_n


@triton.jit
def to_e4m3(v):
    """fp32 -> float8_e4m3fn: round to nearest even, saturate at +-448, NaN -> NaN.

    The rounding is done here, in fp32, so the cast to e4m3 at the end is exact and the result
    does not depend on how a backend rounds that cast (Triton's interpreter does not round to
    nearest even, nor map NaN; a GPU's cvt.rn.satfinite does both)."""
    bits = v.to(tl.uint32, bitcast=True)
    sign = bits & 0x80000000
    mag = tl.minimum((bits & 0x7FFFFFFF).to(tl.float32, bitcast=True), _MAX)
    # Normal range (>= 2^-6): keep 3 of fp32's 23 mantissa bits; adding 0x7FFFF plus the lowest
    # kept bit rounds half to even, and a carry moves into the exponent as it should.
    mb = mag.to(tl.uint32, bitcast=True)
    normal = ((mb + 0x7FFFF + ((mb >> 20) & 1)) & 0xFFF00000).to(tl.float32, bitcast=True)
    # Subnormal range: a fixed step of 2^-9; next to 2^14 an fp32 ulp is 2^-9, so fp32's own
    # round-to-nearest-even addition does the rounding (no fast-math: the pair is not folded).
    sub = (mag + 16384.0) - 16384.0
    r = tl.where(mag < 0.015625, sub, normal)
    q = (r.to(tl.uint32, bitcast=True) | sign).to(tl.float32, bitcast=True).to(tl.float8e4nv)
    # NaN: 0x7F, e4m3fn's NaN (the clamp above may have turned it into 448).
    q_bits = tl.where(v != v, 0x7F, q.to(tl.uint8, bitcast=True)).to(tl.uint8)
    return q_bits.to(tl.float8e4nv, bitcast=True)


@triton.jit
def quantize_row(y, q_ptr, qs_ptr, row, offs, mask, D):
    """The per-row e4m3 quantization of the row y as the producing kernel stores it (already in its
    output dtype: the bits quantize_fp8 of that output would read), exactly as kernels/fp8_gemm.py's
    per-row pass: scale = max(amax, FP8_MIN_AMAX) / 448 by true division, q = e4m3(y / scale). The
    row kernels that write an fp8 GEMM's input (ada_norm.py's norms and gated residual, head_gate.py)
    all quantize through this one function."""
    v = y.to(tl.float32)
    amax = tl.max(tl.where(mask, tl.abs(v), 0.0), axis=0)
    scale = tl.math.div_rn(tl.maximum(amax, _MIN_AMAX), _MAX)
    tl.store(qs_ptr + row, scale)
    tl.store(q_ptr + row.to(tl.int64) * D + offs, to_e4m3(tl.math.div_rn(v, scale)), mask=mask)


def fp8_rows(fn, quant, x, names=("q_out", "scale_out")):
    """(q, scale) outputs of ``quantize_row`` for x (B, N, D), checked or allocated: (B * N, D)
    e4m3 and (B * N, 1) fp32, both contiguous; (None, None) without ``quant``."""
    if quant is None:
        return None, None
    rows = x.shape[0] * x.shape[1]
    q = check_rows(fn, names[0], quant[0], (rows, x.shape[2]), torch.float8_e4m3fn, x.device)
    s = check_rows(fn, names[1], quant[1], (rows, 1), torch.float32, x.device)
    if not (q.is_contiguous() and s.is_contiguous()):
        raise ValueError(f"{fn}: {names[0]} and {names[1]} must be contiguous, got strides {q.stride()}, {s.stride()}")
    return q, s


@triton.jit
def round_bf16(x):
    """fp32 -> nearest bf16 value (ties to even), kept in fp32. For the interpreter: it has no bf16
    arithmetic (tl.dot multiplies bf16 bit patterns, triton-lang/triton#11584) and its fp32 -> bf16
    cast truncates, which would double the rounding error the tests measure. Rounding the bits by
    hand makes the later bf16 cast exact, so the interpreter reproduces the GPU's numerics."""
    bits = x.to(tl.uint32, bitcast=True)
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return bits.to(tl.float32, bitcast=True)


SQRT_2_OVER_PI: tl.constexpr = tl.constexpr(math.sqrt(2.0 / math.pi))


@triton.jit
def gelu_tanh(v):
    """GELU, tanh approximation, of an fp32 value: 0.5 v (1 + tanh(u)) = v sigmoid(2u), no
    cancellation in 1 + tanh(u) for negative v, and exp overflow gives the right limits (v for
    u -> inf, -0 for u -> -inf)."""
    u = SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)
    return v / (1.0 + tl.exp(-2.0 * u))
