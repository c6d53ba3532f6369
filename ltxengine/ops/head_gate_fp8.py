"""head_gate_fp8: gated attention's output gate (LTX-2.3+) writing to_out's per-token fp8 input.

Under fp8-scaled-mm the attention's to_out quantizes its input per token. Unfused, head_gate
writes the gated 16-bit output and to_out's quantizer reads it twice (amax, then quantize) and
writes the e4m3 copy; fused, the gated row is quantized while it is in registers and only the
e4m3 values (1 byte each) and the row scales are written: to_out is the gated output's only reader
(STG's blend runs before the gate; a LoRA hook on to_out, which needs the 16-bit input, keeps the
unfused pair: models/transformer.py Attention).

Reference: ``reference.head_gate_fp8`` = ``quantize_fp8(head_gate(x, logits), per_row=True)``: the
quantization reads the gated output as rounded to x.dtype, so the kernel's (q, scale) equal
quantize_fp8 of its own head_gate output bit for bit. Kernel: Triton ``kernels/head_gate.py`` (the
head-gate kernel's ``QUANT`` option). No CUDA kernel (there is no CUDA head gate either).
"""

from __future__ import annotations

from .library import FusedOp, check_tensor, fp8_rows

SCHEMA = "(Tensor x, Tensor logits, Tensor(a!) q_out, Tensor(b!) scale_out) -> ()"


def adapter(launch):
    def impl(x, logits, q_out, scale_out) -> None:
        launch(x, logits, q_out=q_out, scale_out=scale_out)

    return impl


def wrap(op):
    def head_gate_fp8(x, logits, *, q_out=None, scale_out=None):
        check_tensor("head_gate_fp8", "x", x, 3)
        q_out, scale_out = fp8_rows("head_gate_fp8", "x", x, q_out, scale_out)
        op(x, logits, q_out, scale_out)
        return q_out, scale_out

    return head_gate_fp8


def _triton():
    from ..kernels.head_gate import head_gate_fp8
    return head_gate_fp8


HEAD_GATE_FP8 = FusedOp("head_gate_fp8", SCHEMA, adapter, wrap, launchers={"triton": _triton}, auto=("triton",))
