"""gguf_dequant: GGUF weight blocks (uint8 rows of a ggml quant type) -> values in a float dtype.

Reference: ``reference_gguf_dequant`` below (``quant.gguf.dequantize``, fp32, bit-equal to the
``gguf`` package's numpy dequantization, then one rounding to the output dtype). Kernel: Triton
``kernels/gguf_dequant.py`` for Q8_0, Q4_0, Q3_K, Q4_K, Q5_K and Q6_K (bit-equal to the reference
in fp32); the float types F32 / F16 / BF16, which the loader never keeps as blocks, take the
reference inside the launcher.
"""

from __future__ import annotations

import torch

from .library import FusedOp

SCHEMA = "(Tensor blocks, int qtype, Tensor(a!) out) -> ()"


def reference_gguf_dequant(blocks, qtype, n, dtype=torch.float32, *, out=None):
    """blocks (..., bytes per row) uint8 of ggml type ``qtype`` -> (..., n) in ``dtype`` (out's when given)."""
    from ..quant.gguf import dequantize  # on first call: the quant package's __init__ imports ops
    values = dequantize(blocks, qtype, (*blocks.shape[:-1], n))
    if out is None:
        return values.to(dtype)
    if out.shape != values.shape or out.device != values.device:
        raise ValueError(f"gguf_dequant: out must be {tuple(values.shape)} on {values.device}, got "
                         f"{tuple(out.shape)} on {out.device}")
    return out.copy_(values)  # one rounding to out's dtype


def adapter(launch):
    def impl(blocks, qtype, out) -> None:
        launch(blocks, qtype, out.shape[-1], out=out)

    return impl


def wrap(op):
    def gguf_dequant(blocks, qtype, n, dtype=torch.float32, *, out=None):
        if out is None:
            out = torch.empty((*blocks.shape[:-1], n), dtype=dtype, device=blocks.device)
        op(blocks, int(qtype), out)
        return out

    return gguf_dequant


def _triton():
    from ..kernels.gguf_dequant import gguf_dequant
    return gguf_dequant


GGUF_DEQUANT = FusedOp("gguf_dequant", SCHEMA, adapter, wrap, launchers={"triton": _triton}, auto=("triton",))
