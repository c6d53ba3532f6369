"""ada_norm_fp8 / residual_ada_norm_fp8 / dual_ada_norm_fp8: the adaLN (after its pending
residual; dual: LTX-2's one norm modulated twice) that also writes its output(s) as e4m3 with a
per-row fp32 scale, for the fp8 GEMMs that read them.

fp8-scaled-mm's packed q/k/v (models/transformer.py ``Attention._in_proj``) quantize their
input per token: unfused, the norm writes the bf16 row and the quantizer reads it twice (amax,
then quantize) and writes the e4m3 copy. Fused, the row is quantized while it is in registers:
one read of the stream, no re-read of the normed row. The bf16 output is still written (LTX-2.3's
gate logits and STG's value path read it). ``ada_norm_fp8`` with kind "none" is LTX-2.3+'s text
context modulation writing the per-token input of the packed fp8 to_k / to_v.

Reference: ``reference.ada_norm_fp8`` / ``residual_ada_norm_fp8`` = the norm, then
``quantize_fp8(out, per_row=True)``: the quantization reads the output as rounded to x.dtype,
so the kernel's (q, scale) equal quantize_fp8 of its own bf16 output bit for bit. Kernel:
Triton ``kernels/ada_norm.py`` (the norm kernels' ``QUANT`` option). No CUDA kernel.
"""

from __future__ import annotations


from .library import FusedOp, check_tensor, empty, fp8_rows

SCHEMA = ("(Tensor x, Tensor? shift, Tensor? scale, float eps, str kind, Tensor(a!) out, Tensor(b!) q_out, "
          "Tensor(c!) scale_out) -> ()")
DUAL_SCHEMA = ("(Tensor x, Tensor? y, Tensor? gate, Tensor? shift1, Tensor? scale1, Tensor? shift2, Tensor? scale2, "
               "float eps, str kind, Tensor(a!)? x_out, Tensor(b!) norm1_out, Tensor(c!) norm2_out, Tensor(d!) q1_out, "
               "Tensor(e!) scale1_out, Tensor(f!) q2_out, Tensor(g!) scale2_out) -> ()")
RESIDUAL_SCHEMA = ("(Tensor x, Tensor y, Tensor? gate, Tensor? shift, Tensor? scale, float eps, str kind, "
                   "Tensor(a!) x_out, Tensor(b!) norm_out, Tensor(c!) q_out, Tensor(d!) scale_out) -> ()")


def _fp8_outputs(fn, x, q_out, scale_out):
    check_tensor(fn, "x", x, 3)
    return fp8_rows(fn, "x", x, q_out, scale_out)


def adapter(launch):
    def impl(x, shift, scale, eps, kind, out, q_out, scale_out) -> None:
        launch(x, shift, scale, eps, kind, out=out, q_out=q_out, scale_out=scale_out)

    return impl


def wrap(op):
    def ada_norm_fp8(x, shift, scale, eps, kind="rms", *, out=None, q_out=None, scale_out=None):
        q_out, scale_out = _fp8_outputs("ada_norm_fp8", x, q_out, scale_out)
        out = empty(x.shape, x) if out is None else out
        op(x, shift, scale, float(eps), kind, out, q_out, scale_out)
        return out, q_out, scale_out

    return ada_norm_fp8


def residual_adapter(launch):
    def impl(x, y, gate, shift, scale, eps, kind, x_out, norm_out, q_out, scale_out) -> None:
        launch(x, y, gate, shift, scale, eps, kind, x_out=x_out, norm_out=norm_out, q_out=q_out, scale_out=scale_out)

    return impl


def residual_wrap(op):
    def residual_ada_norm_fp8(x, y, gate, shift, scale, eps, kind="rms", *, x_out=None, norm_out=None, q_out=None,
                              scale_out=None):
        q_out, scale_out = _fp8_outputs("residual_ada_norm_fp8", x, q_out, scale_out)
        x_out = empty(x.shape, x) if x_out is None else x_out
        norm_out = empty(x.shape, x) if norm_out is None else norm_out
        op(x, y, gate, shift, scale, float(eps), kind, x_out, norm_out, q_out, scale_out)
        return x_out, norm_out, q_out, scale_out

    return residual_ada_norm_fp8


def dual_adapter(launch):
    def impl(x, y, gate, sh1, sc1, sh2, sc2, eps, kind, x_out, n1, n2, q1, s1, q2, s2) -> None:
        launch(x, y, gate, sh1, sc1, sh2, sc2, eps, kind, x_out=x_out, norm1_out=n1, norm2_out=n2, q1_out=q1,
               scale1_out=s1, q2_out=q2, scale2_out=s2)

    return impl


def dual_wrap(op):
    def dual_ada_norm_fp8(x, y, gate, shift1, scale1, shift2, scale2, eps, kind="rms", *, x_out=None,
                          norm1_out=None, norm2_out=None, q1_out=None, scale1_out=None, q2_out=None, scale2_out=None):
        q1_out, scale1_out = _fp8_outputs("dual_ada_norm_fp8", x, q1_out, scale1_out)
        q2_out, scale2_out = _fp8_outputs("dual_ada_norm_fp8", x, q2_out, scale2_out)
        x_out = empty(x.shape, x) if y is not None and x_out is None else x_out
        norm1_out = empty(x.shape, x) if norm1_out is None else norm1_out
        norm2_out = empty(x.shape, x) if norm2_out is None else norm2_out
        op(x, y, gate, shift1, scale1, shift2, scale2, float(eps), kind, x_out, norm1_out, norm2_out, q1_out,
           scale1_out, q2_out, scale2_out)
        return (x if y is None else x_out), norm1_out, norm2_out, q1_out, scale1_out, q2_out, scale2_out

    return dual_ada_norm_fp8


def _triton():
    from ..kernels.ada_norm import ada_norm_fp8
    return ada_norm_fp8


def _triton_residual():
    from ..kernels.ada_norm import residual_ada_norm_fp8
    return residual_ada_norm_fp8


ADA_NORM_FP8 = FusedOp("ada_norm_fp8", SCHEMA, adapter, wrap, launchers={"triton": _triton}, auto=("triton",))
RESIDUAL_ADA_NORM_FP8 = FusedOp("residual_ada_norm_fp8", RESIDUAL_SCHEMA, residual_adapter, residual_wrap,
                                launchers={"triton": _triton_residual}, auto=("triton",))


def _triton_dual():
    from ..kernels.ada_norm import dual_ada_norm_fp8
    return dual_ada_norm_fp8


DUAL_ADA_NORM_FP8 = FusedOp("dual_ada_norm_fp8", DUAL_SCHEMA, dual_adapter, dual_wrap,
                            launchers={"triton": _triton_dual}, auto=("triton",))
