"""fp8_linear: a linear layer with an e4m3 weight, made of the backend's own ``quantize_fp8``
(static ``input_scale``, else dynamic per token or per tensor) and ``scaled_mm``; no kernel of
its own.

Reference: ``reference.fp8_linear``.
"""

from __future__ import annotations

from .library import FusedOp


def compose(quantize, mm):
    def fp8_linear(x, weight, weight_scale, bias=None, input_scale=None, per_token=True, *, out=None):
        q, sx = quantize(x, input_scale, per_token and input_scale is None)
        flat = None if out is None else out.view(-1, weight.shape[0])
        y = mm(q, weight, sx, weight_scale, bias, x.dtype, out=flat)
        return y.view(*x.shape[:-1], weight.shape[0]) if out is None else out

    return fp8_linear


FP8_LINEAR = FusedOp("fp8_linear", parts=("quantize_fp8", "scaled_mm"), compose=compose,
                     auto=("cuda", "triton"))
