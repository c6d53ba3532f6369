"""GGUF block dequantization (Q8_0, Q4_0, Q3_K, Q4_K, Q5_K, Q6_K) to fp32 / bf16 / fp16.

Reference: ``ltxengine.quant.gguf.dequantize`` (fp32, bit-equal to the ``gguf`` package's numpy
dequantization). A program dequantizes a tile of 1024 elements, several quant blocks (one per
row of the tile): the blocks' bytes are read once (the scales gathered per element from a few
cached bytes), each output element is written once. Every value
is computed in fp32 with the reference's operations in its order; ``d * q - m`` must stay a
multiply and a subtract (an FMA rounds once and differs in the last bit), so the launcher turns
Triton's fp fusion off on the GPU. The float types (F32 / F16 / BF16) take the reference: the
loader never keeps them as blocks.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# ggml type id -> (elements, bytes) per block
_LAYOUT = {8: (32, 34), 2: (32, 18), 11: (256, 110), 12: (256, 144), 13: (256, 176), 14: (256, 210)}
_OUT_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
# Output elements per program: 32 Q8_0 / Q4_0 blocks or 4 K-quant super-blocks, 8 per thread at 4
# warps (a block of 32 per program would leave most of a 128-thread program idle). Untuned: no GPU
# has measured it yet (bench/ops_gguf_linear.py).
_ELEMENTS_PER_PROGRAM = 1024


@triton.jit
def _byte(p, idx, m):
    return tl.load(p + idx, mask=m, other=0).to(tl.int32)


@triton.jit
def _half(p, idx, m):
    """The little-endian fp16 at bytes idx, idx+1 (blocks are only 2-byte aligned), as fp32."""
    bits = (_byte(p, idx, m) | (_byte(p, idx + 1, m) << 8)).to(tl.uint16)
    return bits.to(tl.float16, bitcast=True).to(tl.float32)


@triton.jit
def _k_scale_min(p, j, m):
    """Q4_K / Q5_K: six-bit scale and min of sub-block j (0..7) from the 12 bytes at p."""
    lo = j < 4
    jj = tl.where(lo, j, j - 4)
    a = _byte(p, jj, m)  # for j >= 4: the byte holding the scale's top two bits
    b = _byte(p, jj + 4, m)
    c = _byte(p, jj + 8, m)
    sc = tl.where(lo, a & 63, (c & 0x0F) | ((a >> 6) << 4))
    mn = tl.where(lo, b & 63, (c >> 4) | ((b >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _gguf_dequant_kernel(
    src_ptr,  # (n_blocks, TYPE_SIZE) uint8, contiguous
    out_ptr,  # (n_blocks, BLOCK) fp32 / bf16 / fp16, contiguous
    n_blocks,
    QTYPE: tl.constexpr, BLOCK: tl.constexpr, TYPE_SIZE: tl.constexpr, PER_PROGRAM: tl.constexpr,
):
    # PER_PROGRAM quant blocks per program (rows of the tile), their BLOCK elements across
    blk = tl.program_id(0).to(tl.int64) * PER_PROGRAM + tl.arange(0, PER_PROGRAM)[:, None]
    m = blk < n_blocks
    p = src_ptr + blk * TYPE_SIZE
    offs = tl.arange(0, BLOCK)[None, :]
    if QTYPE == 8:  # Q8_0: d (fp16), 32 int8
        q = tl.load(p + 2 + offs, mask=m, other=0).to(tl.int8, bitcast=True).to(tl.float32)
        y = q * _half(p, 0, m)
    elif QTYPE == 2:  # Q4_0: d, 16 bytes of nibbles (low nibbles are elements 0..15)
        q = ((_byte(p, 2 + offs % 16, m) >> ((offs // 16) * 4)) & 0x0F) - 8
        y = _half(p, 0, m) * q.to(tl.float32)
    elif QTYPE == 14:  # Q6_K: ql[128], qh[64], int8 scales[16], d
        h = offs // 128
        r = offs % 128
        ql = (_byte(p, h * 64 + r % 64, m) >> ((r // 64) * 4)) & 0x0F
        qh = (_byte(p, 128 + h * 32 + r % 32, m) >> ((r // 32) * 2)) & 0x03
        q = (ql | (qh << 4)) - 32
        scale = _byte(p, 192 + offs // 16, m).to(tl.int8).to(tl.float32)
        y = (_half(p, 208, m) * scale) * q.to(tl.float32)
    elif QTYPE == 11:  # Q3_K: hmask[32], qs[64], packed 6-bit scales[12], d
        h = offs // 128
        r = offs % 128
        ql = (_byte(p, 32 + h * 32 + r % 32, m) >> ((r // 32) * 2)) & 0x03
        hbit = ((_byte(p, offs % 32, m) >> (offs // 32)) & 1) ^ 1  # offset 4 where the bit is 0
        q = ql - (hbit << 2)
        j = offs // 16
        low = (_byte(p, 96 + j % 8, m) >> ((j // 8) * 4)) & 0x0F
        high = (_byte(p, 104 + j % 4, m) >> ((j // 4) * 2)) & 0x03
        sc = ((low | (high << 4)) - 32).to(tl.float32)
        y = (_half(p, 108, m) * sc) * q.to(tl.float32)
    else:  # Q4_K (12) / Q5_K (13): d, dmin, scales[12], [qh[32]], qs[128]
        g = offs // 32
        sc, mn = _k_scale_min(p + 4, g, m)
        d = _half(p, 0, m) * sc
        dm = _half(p, 2, m) * mn
        QS: tl.constexpr = 16 if QTYPE == 12 else 48
        q = (_byte(p, QS + (offs // 64) * 32 + offs % 32, m) >> ((g % 2) * 4)) & 0x0F
        if QTYPE == 13:
            q = q | (((_byte(p, 16 + offs % 32, m) >> g) & 1) << 4)
        y = d * q.to(tl.float32) - dm
    tl.store(out_ptr + blk * BLOCK + offs, y.to(out_ptr.dtype.element_ty), mask=m)


def gguf_dequant(blocks: torch.Tensor, qtype: int, n: int, dtype: torch.dtype = torch.float32, *, out=None):
    """blocks (..., n / block_size * type_size) uint8 of ggml type ``qtype`` -> (..., n) in ``dtype``
    (``out``'s dtype when given; it must be contiguous)."""
    shape = (*blocks.shape[:-1], n)
    dtype = out.dtype if out is not None else dtype
    if out is None:
        out = torch.empty(shape, dtype=dtype, device=blocks.device)
    elif tuple(out.shape) != shape or out.device != blocks.device or not out.is_contiguous():
        raise ValueError(f"gguf_dequant: out must be a contiguous {shape} tensor on {blocks.device}, got "
                         f"{tuple(out.shape)} on {out.device} (strides {out.stride()})")
    if dtype not in _OUT_DTYPES:
        raise ValueError(f"gguf_dequant: the output dtype must be one of {_OUT_DTYPES}, got {dtype}")
    if blocks.dtype != torch.uint8:
        raise ValueError(f"gguf_dequant: blocks must be uint8, got {blocks.dtype}")
    if qtype not in _LAYOUT:
        from ltxengine.quant.gguf import dequantize  # the float types (and a named error for the rest)
        return out.copy_(dequantize(blocks, qtype, shape))
    block, size = _LAYOUT[qtype]
    if n % block or blocks.shape[-1] != n // block * size:
        raise ValueError(f"gguf_dequant: rows of {n} elements of type id {qtype} take {n // block * size} bytes "
                         f"(n a multiple of {block}), got {blocks.shape[-1]} bytes per row")
    src = blocks.contiguous()
    n_blocks = src.numel() // size
    if n_blocks:
        options = {} if src.device.type == "cpu" else {"enable_fp_fusion": False}
        per = _ELEMENTS_PER_PROGRAM // block
        _gguf_dequant_kernel[(triton.cdiv(n_blocks, per),)](src, out, n_blocks, QTYPE=qtype, BLOCK=block,
                                                             TYPE_SIZE=size, PER_PROGRAM=per, **options)
    return out
