"""qk_norm_rope: RMSNorm of q and k over their full width with learned weights, then RoPE.

Reference: ``reference.qk_norm_rope``. Kernels: Triton ``kernels/qk_norm_rope.py``; CUDA
``cuda.qk_norm_rope`` -> ``csrc/qk_norm_rope.{cpp,cu}``.
"""

from __future__ import annotations

import torch

from .library import FusedOp, check_tensor, empty

SCHEMA = ("(Tensor q, Tensor k, Tensor q_weight, Tensor k_weight, float eps, Tensor? cos, Tensor? sin, "
          "Tensor? k_cos, Tensor? k_sin, Tensor? q_scale, Tensor? k_scale, Tensor(a!) q_out, "
          "Tensor(b!) k_out) -> ()")


def adapter(launch):
    """The schema's flat arguments -> the launcher's (rope tables and fp8 scales as pairs)."""
    def impl(q, k, qw, kw, eps, cos, sin, kcos, ksin, qs, ks, q_out, k_out) -> None:
        launch(q, k, qw, kw, eps, None if cos is None else (cos, sin), None if kcos is None else (kcos, ksin),
               fp8_scales=None if qs is None else (qs, ks), q_out=q_out, k_out=k_out)

    return impl


def wrap(op):
    def qk_norm_rope(q, k, q_weight, k_weight, eps, rope, k_rope=None, *, fp8_scales=None, q_out=None,
                     k_out=None):
        check_tensor("qk_norm_rope", "q", q, 3)
        check_tensor("qk_norm_rope", "k", k, 3)
        dtype = q.dtype if fp8_scales is None else torch.float8_e4m3fn
        q_out = empty(q.shape, q, dtype) if q_out is None else q_out
        k_out = empty(k.shape, k, dtype) if k_out is None else k_out
        scales = (None, None) if fp8_scales is None else tuple(fp8_scales)
        op(q, k, q_weight, k_weight, float(eps), *_pair(rope), *_pair(k_rope), *scales, q_out, k_out)
        return q_out, k_out

    return qk_norm_rope


def _pair(rope):
    return (None, None) if rope is None else tuple(rope)


def _triton():
    from ..kernels.qk_norm_rope import qk_norm_rope
    return qk_norm_rope


def _cuda():
    from .cuda import qk_norm_rope
    return qk_norm_rope


def reads_half_tables(source: str) -> bool:
    """Whether the qk_norm_rope of ``source`` (a backend name as in Ops.sources) reads fp16 tables:
    the Triton kernel does (kernels/qk_norm_rope.py TABLE_DTYPES); the CUDA C++ one takes fp32."""
    return source == "triton"


QK_NORM_ROPE = FusedOp("qk_norm_rope", SCHEMA, adapter, wrap, launchers={"triton": _triton, "cuda": _cuda},
                       auto=("triton", "cuda"))
