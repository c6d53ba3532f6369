"""Launcher helpers shared by the row-wise Triton kernels: input views, output checks, launch sizes."""

from __future__ import annotations

import torch
import triton
import triton.language as tl

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


def launch_config(width: int) -> tuple[int, int]:
    """(BLOCK_D, num_warps) for one row of ``width`` elements per program: the whole row in
    registers, ~8-16 elements per thread so loads vectorize to 16 bytes. Untuned: no GPU has
    measured these yet (bench/ops_*.py)."""
    block = triton.next_power_of_2(width)
    return block, max(1, min(16, block // 256))


@triton.jit
def round_to_e4m3(y):
    """fp32 y (already clamped to +-448) rounded to the nearest float8_e4m3fn value, ties to
    even, still as fp32, so the cast that follows is exact.

    Why not just ``y.to(fp8)``: Triton's interpreter (3.9) rounds wrongly when rounding carries
    into the next binade (127.9 -> 64 instead of 128). On the GPU the cast is RNE already and this
    costs a few integer ops per element. Method: with u the e4m3 spacing in y's binade (2^(E-3),
    E >= -6 so subnormals share 2^-9), (y + c) - c rounds y to a multiple of u when c = 1.5 * 2^23 * u
    (an fp32 whose own spacing is u, an even multiple of u so ties stay to even).
    """
    exp = (y.to(tl.int32, bitcast=True) >> 23) & 0xFF
    exp = tl.maximum(exp, 127 - 6)
    c = (((exp + 20) << 23) | 0x400000).to(tl.float32, bitcast=True)
    r = (y + c) - c
    return tl.where(r == 0.0, y * 0.0, r)  # keep the sign of values that round to zero, like a cast
