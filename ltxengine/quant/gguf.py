"""GGUF (ggml) block quantization: the types, a pure-torch dequantization, and ``GGUFLinear``.

The dequantization follows the GGUF format's block layouts (ggml-common.h / ggml-quants.c) and
is written to equal the ``gguf`` package's numpy reference (``gguf.quants.dequantize``, gguf-py
0.19) bit for bit: every value is computed in fp32 with the same operations in the same order
(``d * q - m`` is a multiply then a subtract, never fused). A row of ``n`` elements is stored as
``n / block_size`` blocks of ``type_size`` bytes; a 2-D weight (out, in) is ``out`` such rows.

This module imports nothing of ltxengine (the ops, the kernel and the loader all read it);
``quant/gguf_linear.py`` holds the layer that keeps a weight in these blocks.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

QK_K = 256  # super-block size of the K-quants


@dataclass(frozen=True)
class GGMLType:
    name: str
    id: int
    block_size: int  # elements per block
    type_size: int  # bytes per block


# Every ggml type id the format defines (gguf-py 0.19 GGMLQuantizationType), so that an
# unsupported one is named; SUPPORTED are those ltxengine dequantizes.
TYPE_NAMES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
              11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
              18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8", 25: "I16",
              26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16", 34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
              40: "NVFP4", 41: "Q1_0"}
SUPPORTED = {t.id: t for t in (
    GGMLType("F32", 0, 1, 4), GGMLType("F16", 1, 1, 2), GGMLType("BF16", 30, 1, 2),
    GGMLType("Q8_0", 8, 32, 34), GGMLType("Q4_0", 2, 32, 18), GGMLType("Q3_K", 11, QK_K, 110),
    GGMLType("Q4_K", 12, QK_K, 144), GGMLType("Q5_K", 13, QK_K, 176), GGMLType("Q6_K", 14, QK_K, 210))}
BY_NAME = {t.name: t for t in SUPPORTED.values()}
FLOAT_TYPES = ("F32", "F16", "BF16")  # stored plainly: loaded dequantized, as any float tensor
QUANT_TYPES = tuple(t.name for t in SUPPORTED.values() if t.name not in FLOAT_TYPES)


def type_name(type_id: int) -> str:
    return TYPE_NAMES.get(type_id, f"unknown ggml type id {type_id}")


def ggml_type(type_id: int) -> GGMLType:
    """The supported type ``type_id``, or ValueError naming it and what is supported."""
    if type_id not in SUPPORTED:
        raise ValueError(f"quant type {type_name(type_id)} is not supported; ltxengine dequantizes "
                         f"{sorted(BY_NAME)}")
    return SUPPORTED[type_id]


def byte_shape(shape: tuple[int, ...], t: GGMLType) -> tuple[int, ...]:
    """The uint8 shape that stores a tensor of ``shape`` (the last dim a multiple of the block)."""
    if shape[-1] % t.block_size:
        raise ValueError(f"a {t.name} tensor's last dim must be a multiple of its block size {t.block_size}, "
                         f"got shape {tuple(shape)}")
    return (*shape[:-1], shape[-1] // t.block_size * t.type_size)


# -- the reference dequantization (fp32, bit-equal to gguf.quants) ------------------------------

def _f16(b: torch.Tensor) -> torch.Tensor:
    """Two little-endian bytes per row -> fp16 value as fp32 (n, 1)."""
    return b.contiguous().view(torch.float16).float()


def _nibbles(qs: torch.Tensor, n: int) -> torch.Tensor:
    """(blocks, groups * n) bytes -> (blocks, groups, 2, n): low nibbles, then high nibbles."""
    q = qs.reshape(qs.shape[0], -1, 1, n) >> torch.tensor([0, 4], dtype=torch.uint8, device=qs.device).view(1, 1, 2, 1)
    return q & 0x0F


def _bits(x: torch.Tensor, n: int, shifts: list[int], mask: int) -> torch.Tensor:
    s = torch.tensor(shifts, dtype=torch.uint8, device=x.device).view(1, 1, len(shifts), 1)
    return (x.reshape(x.shape[0], -1, 1, n) >> s) & mask


def _q8_0(b: torch.Tensor) -> torch.Tensor:
    return b[:, 2:].contiguous().view(torch.int8).float() * _f16(b[:, :2])


def _q4_0(b: torch.Tensor) -> torch.Tensor:
    q = _nibbles(b[:, 2:], 16).reshape(b.shape[0], -1).to(torch.int8) - 8
    return _f16(b[:, :2]) * q.float()


def _k_scale_min(scales: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K / Q5_K's twelve bytes -> 8 six-bit scales and 8 six-bit mins (each (blocks, 8))."""
    s = scales.reshape(-1, 3, 4)
    d, m, m_d = s[:, 0], s[:, 1], s[:, 2]
    sc = torch.cat([d & 0x3F, (m_d & 0x0F) | ((d >> 2) & 0x30)], dim=-1)
    mn = torch.cat([m & 0x3F, (m_d >> 4) | ((m >> 2) & 0x30)], dim=-1)
    return sc, mn


def _q4_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    d = (_f16(b[:, 0:2]) * sc.float()).reshape(n, -1, 1)
    dm = (_f16(b[:, 2:4]) * mn.float()).reshape(n, -1, 1)
    q = _nibbles(b[:, 16:], 32).reshape(n, -1, 32).float()
    return (d * q - dm).reshape(n, QK_K)


def _q5_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    sc, mn = _k_scale_min(b[:, 4:16])
    d = (_f16(b[:, 0:2]) * sc.float()).reshape(n, -1, 1)
    dm = (_f16(b[:, 2:4]) * mn.float()).reshape(n, -1, 1)
    ql = _nibbles(b[:, 48:], 32).reshape(n, -1, 32)
    qh = _bits(b[:, 16:48], 32, list(range(8)), 1).reshape(n, -1, 32)
    q = (ql | (qh << 4)).float()
    return (d * q - dm).reshape(n, QK_K)


def _q6_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    scales = b[:, 192:208].contiguous().view(torch.int8).float()
    d = (_f16(b[:, 208:210]) * scales).reshape(n, QK_K // 16, 1)
    ql = _bits(b[:, :128], 64, [0, 4], 0x0F).reshape(n, -1, 32)
    qh = _bits(b[:, 128:192], 32, [0, 2, 4, 6], 0x03).reshape(n, -1, 32)
    q = (ql | (qh << 4)).to(torch.int8) - 32
    return (d * q.reshape(n, QK_K // 16, -1).float()).reshape(n, QK_K)


def _q3_k(b: torch.Tensor) -> torch.Tensor:
    n = b.shape[0]
    hmask, qs, scales = b[:, :32], b[:, 32:96], b[:, 96:108]
    low = _bits(scales[:, :8], 8, [0, 4], 0x0F).reshape(n, 16)
    high = _bits(scales[:, 8:12], 4, [0, 2, 4, 6], 0x03).reshape(n, 16)
    sc = ((low | (high << 4)).to(torch.int8) - 32).float()
    dl = (_f16(b[:, 108:110]) * sc).reshape(n, 16, 1)
    ql = _bits(qs, 32, [0, 2, 4, 6], 3).reshape(n, 16, 16)
    qh = _bits(hmask, 32, list(range(8)), 1).reshape(n, 16, 16) ^ 1  # offset 4 where the bit is 0
    q = (ql.to(torch.int8) - (qh << 2).to(torch.int8)).float()
    return (dl * q).reshape(n, QK_K)


_BLOCKS = {"Q8_0": _q8_0, "Q4_0": _q4_0, "Q3_K": _q3_k, "Q4_K": _q4_k, "Q5_K": _q5_k, "Q6_K": _q6_k}


def dequantize(data: torch.Tensor, type_id: int, shape: tuple[int, ...] | None = None) -> torch.Tensor:
    """fp32 values of ``data`` (uint8, last dim the rows' bytes) stored as ggml type ``type_id``;
    reshaped to ``shape`` (default: the byte shape with its last dim in elements)."""
    t = ggml_type(type_id)
    if data.dtype != torch.uint8:
        raise ValueError(f"dequantize: data must be uint8 bytes, got {data.dtype}")
    if data.shape[-1] % t.type_size:
        raise ValueError(f"dequantize: a {t.name} row holds whole {t.type_size}-byte blocks, got "
                         f"{data.shape[-1]} bytes per row")
    out_shape = tuple(shape) if shape is not None else (*data.shape[:-1], data.shape[-1] // t.type_size * t.block_size)
    blocks = data.contiguous().reshape(-1, t.type_size)
    if t.name == "F32":
        values = blocks.view(torch.float32)
    elif t.name in ("F16", "BF16"):
        values = blocks.view(torch.float16 if t.name == "F16" else torch.bfloat16).float()
    else:
        values = _BLOCKS[t.name](blocks)
    return values.reshape(out_shape)


__all__ = ["GGMLType", "SUPPORTED", "BY_NAME", "QUANT_TYPES", "FLOAT_TYPES", "TYPE_NAMES", "type_name", "ggml_type",
           "byte_shape", "dequantize"]
