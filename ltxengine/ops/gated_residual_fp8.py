"""gated_residual_fp8: the gated residual x + gate * y that also writes the new stream as e4m3
with a per-row fp32 scale, for an fp8 GEMM that reads the raw stream.

LTX-Video's cross-attention (models/transformer.py TransformerBlock) reads the residual stream
right after attn1's gated residual, with no norm between: under fp8-scaled-mm its to_q quantizes
that stream per token. Unfused, the residual writes the bf16 stream and the quantizer reads it
twice (amax, then quantize) and writes the e4m3 copy; fused, the row is quantized while it is in
registers. The bf16 stream is still written (it is the residual stream).

Reference: ``reference.gated_residual_fp8`` = ``gated_residual``, then ``quantize_fp8(out,
per_row=True)``: the quantization reads the stream as rounded to x.dtype, so the kernel's (q,
scale) equal quantize_fp8 of its own output bit for bit. Kernel: Triton ``kernels/ada_norm.py``
(the gated residual kernel's ``QUANT`` option). No CUDA kernel: kernels="cuda" keeps its gated
residual and quantizer (models/residual.py ``quantizing_residual``).
"""

from __future__ import annotations

from .library import FusedOp, check_tensor, empty, fp8_rows

SCHEMA = "(Tensor x, Tensor y, Tensor? gate, Tensor(a!) out, Tensor(b!) q_out, Tensor(c!) scale_out) -> ()"


def adapter(launch):
    def impl(x, y, gate, out, q_out, scale_out) -> None:
        launch(x, y, gate, out=out, q_out=q_out, scale_out=scale_out)

    return impl


def wrap(op):
    def gated_residual_fp8(x, y, gate, *, out=None, q_out=None, scale_out=None):
        check_tensor("gated_residual_fp8", "x", x, 3)
        q_out, scale_out = fp8_rows("gated_residual_fp8", "x", x, q_out, scale_out)
        out = empty(x.shape, x) if out is None else out
        op(x, y, gate, out, q_out, scale_out)
        return out, q_out, scale_out

    return gated_residual_fp8


def _triton():
    from ..kernels.ada_norm import gated_residual_fp8
    return gated_residual_fp8


GATED_RESIDUAL_FP8 = FusedOp("gated_residual_fp8", SCHEMA, adapter, wrap, launchers={"triton": _triton},
                             auto=("triton",))
