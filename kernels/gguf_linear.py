"""GGUF linear with the dequantization fused into the GEMM's operand load (Q8_0, Q4_0): experimental.

y (M, N) = x (M, K) @ W^T + bias, W (N, K) stored as ggml blocks of 32 (bytes (N, K / 32 * size)).
Each K-tile of W is read as bytes, dequantized in registers (the reference's fp32 arithmetic, then
one rounding to x's dtype: the same operand values GGUFLinear's unfused path feeds the GEMM) and
fed to ``tl.dot`` with fp32 accumulation, so the weight never exists in the compute dtype in
memory. The accumulation order is this kernel's, not cuBLAS's: the result equals the unfused
path within the GEMM's own rounding, not bit for bit.

Not wired into GGUFLinear: the unfused path (Triton dequant + cuBLAS) is what the engine runs. This
kernel is measured against it by ``bench/ops_gguf_linear.py`` (impl "triton-fused") on the first
GPU session; it replaces the unfused path only where it is faster (expected: small M, where the
weight's bytes dominate). Tile sizes are untuned guesses.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

_LAYOUT = {8: 34, 2: 18}  # ggml type id -> bytes per block of 32 (Q8_0, Q4_0)


@triton.jit
def _weight_tile(w_ptr, rk, rn, K, N, row_bytes, QTYPE: tl.constexpr):
    """(BK, BN) fp32 values of W^T at rows rk, columns rn (zeros outside K x N)."""
    m = (rk[:, None] < K) & (rn[None, :] < N)
    block = w_ptr + rn[None, :].to(tl.int64) * row_bytes + (rk[:, None] // 32) * (34 if QTYPE == 8 else 18)
    j = rk[:, None] % 32
    lo = tl.load(block, mask=m, other=0).to(tl.int32)
    hi = tl.load(block + 1, mask=m, other=0).to(tl.int32)
    d = (lo | (hi << 8)).to(tl.uint16).to(tl.float16, bitcast=True).to(tl.float32)
    if QTYPE == 8:
        q = tl.load(block + 2 + j, mask=m, other=0).to(tl.int8, bitcast=True).to(tl.float32)
        return q * d
    q = ((tl.load(block + 2 + j % 16, mask=m, other=0).to(tl.int32) >> ((j // 16) * 4)) & 0x0F) - 8
    return d * q.to(tl.float32)


@triton.jit
def _gguf_linear_kernel(
    x_ptr,  # (M, K), last dim contiguous
    w_ptr,  # (N, K / 32 * TYPE_SIZE) uint8, contiguous
    bias_ptr,  # (N,) or a dummy when HAS_BIAS is False
    out_ptr,  # (M, N), contiguous
    M, N, K, row_bytes, s_xm,
    QTYPE: tl.constexpr, HAS_BIAS: tl.constexpr, BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr,
):
    rm = tl.program_id(0) * BM + tl.arange(0, BM)
    rn = tl.program_id(1) * BN + tl.arange(0, BN)
    acc = tl.zeros((BM, BN), dtype=tl.float32)
    for k0 in range(0, K, BK):
        rk = k0 + tl.arange(0, BK)
        x = tl.load(x_ptr + rm[:, None].to(tl.int64) * s_xm + rk[None, :],
                    mask=(rm[:, None] < M) & (rk[None, :] < K), other=0.0)
        w = _weight_tile(w_ptr, rk, rn, K, N, row_bytes, QTYPE).to(x.dtype)  # the operand GGUFLinear feeds
        acc += tl.dot(x, w)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + rn, mask=rn < N, other=0.0).to(tl.float32)
    tl.store(out_ptr + rm[:, None].to(tl.int64) * N + rn[None, :], acc.to(out_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


def gguf_linear(x: torch.Tensor, blocks: torch.Tensor, qtype: int, bias: torch.Tensor | None = None, *,
                block_m: int = 64, block_n: int = 64, block_k: int = 64) -> torch.Tensor:
    """x (..., K) float -> (..., N) in x's dtype; blocks (N, K / 32 * size) uint8 of Q8_0 (8) or Q4_0 (2)."""
    if qtype not in _LAYOUT:
        raise ValueError(f"gguf_linear: the fused kernel takes Q8_0 (8) or Q4_0 (2), got type id {qtype}")
    if blocks.dtype != torch.uint8 or blocks.ndim != 2 or blocks.shape[1] % _LAYOUT[qtype]:
        raise ValueError(f"gguf_linear: blocks must be (N, K / 32 * {_LAYOUT[qtype]}) uint8, got "
                         f"{tuple(blocks.shape)} {blocks.dtype}")
    k = blocks.shape[1] // _LAYOUT[qtype] * 32
    if x.shape[-1] != k or x.dtype not in (torch.float32, torch.bfloat16, torch.float16) or block_k % 32:
        raise ValueError(f"gguf_linear: x must be (..., {k}) float32/bfloat16/float16 and block_k a multiple of "
                         f"32, got {tuple(x.shape)} {x.dtype}, block_k={block_k}")
    x2 = x.reshape(-1, k)
    x2 = x2 if x2.stride(-1) == 1 else x2.contiguous()
    m, n = x2.shape[0], blocks.shape[0]
    out = torch.empty((m, n), dtype=x.dtype, device=x.device)
    w = blocks.contiguous()
    grid = (triton.cdiv(m, block_m), triton.cdiv(n, block_n))
    _gguf_linear_kernel[grid](x2, w, bias if bias is not None else w, out, m, n, k, w.shape[1], x2.stride(0),
                              QTYPE=qtype, HAS_BIAS=bias is not None, BM=block_m, BN=block_n, BK=block_k)
    return out.view(*x.shape[:-1], n)
