"""gelu_quantize_fp8: h -> e4m3 values and per-row fp32 scales of gelu_tanh(h), in one pass.

The fp8 FFN (models/transformer.py FeedForward): the up-projection writes the 4D-wide bf16
pre-activation h; unfused, GELU reads it and writes a bf16 copy that the down-projection's
per-token quantizer reads twice (amax, then quantize). Fused, h is read (twice, the second from
L2) and only the e4m3 values (1 byte each) are written.

Reference: ``reference.gelu_quantize_fp8`` (``quantize_fp8(F.gelu(h, approximate="tanh"),
per_row=True)``; the kernel rounds the GELU to h.dtype first, so only the GELU's own last-bit
differences between torch and the kernel can change a value). Kernel: Triton
``kernels/fp8_gemm.py`` (the per-row quantizer with a GELU prologue).
"""

from __future__ import annotations


from .library import FusedOp, fp8_rows

SCHEMA = "(Tensor h, Tensor(a!) out, Tensor(b!) scale_out) -> ()"


def adapter(launch):
    def impl(h, out, scale_out) -> None:
        launch(h, out=out, scale_out=scale_out)

    return impl


def wrap(op):
    def gelu_quantize_fp8(h, *, out=None, scale_out=None):
        out, scale_out = fp8_rows("gelu_quantize_fp8", "h", h, out, scale_out)
        op(h, out, scale_out)
        return out, scale_out

    return gelu_quantize_fp8


def _triton():
    from ..kernels.fp8_gemm import gelu_quantize_fp8
    return gelu_quantize_fp8


GELU_QUANTIZE_FP8 = FusedOp("gelu_quantize_fp8", SCHEMA, adapter, wrap, launchers={"triton": _triton},
                            auto=("triton",))
