"""dual_ada_norm: one norm of a stream, two adaLN modulations of it, with a pending residual first.

LTX-2's audio<->video attentions read each stream twice through the same parameter-free norm, once
modulated for a2v and once for v2a (diffusers computes the norm once and modulates it twice). Two
ada_norm calls (the first also settling a pending residual) read the stream twice and cost two
launches; this op reads it once. Returns (x_new, norm1, norm2): x_new = x + gate * y rounded to
x's dtype (x itself when y is None), and both norms read that rounded value, like the unfused calls.

Reference: ``reference.dual_ada_norm`` = ``residual_ada_norm`` (or ``ada_norm``) then ``ada_norm``,
the models' unfused calls bit for bit; the torch backend's 16-bit version (``native``) normalizes
once and modulates twice, diffusers' arithmetic. Kernel: Triton ``kernels/ada_norm.py``.
"""

from __future__ import annotations

from .library import FusedOp, check_tensor, empty

SCHEMA = ("(Tensor x, Tensor? y, Tensor? gate, Tensor? shift1, Tensor? scale1, Tensor? shift2, Tensor? scale2, "
          "float eps, str kind, Tensor(a!)? x_out, Tensor(b!) norm1_out, Tensor(c!) norm2_out) -> ()")


def adapter(launch):
    def impl(x, y, gate, shift1, scale1, shift2, scale2, eps, kind, x_out, norm1_out, norm2_out) -> None:
        launch(x, y, gate, shift1, scale1, shift2, scale2, eps, kind, x_out=x_out, norm1_out=norm1_out,
               norm2_out=norm2_out)

    return impl


def wrap(op):
    def dual_ada_norm(x, y, gate, shift1, scale1, shift2, scale2, eps, kind="rms", *, x_out=None, norm1_out=None,
                      norm2_out=None):
        check_tensor("dual_ada_norm", "x", x, 3)
        if y is not None and x_out is None:
            x_out = empty(x.shape, x)
        norm1_out = empty(x.shape, x) if norm1_out is None else norm1_out
        norm2_out = empty(x.shape, x) if norm2_out is None else norm2_out
        op(x, y, gate, shift1, scale1, shift2, scale2, float(eps), kind, x_out, norm1_out, norm2_out)
        return (x if y is None else x_out), norm1_out, norm2_out

    return dual_ada_norm


def _triton():
    from ..kernels.ada_norm import dual_ada_norm
    return dual_ada_norm


DUAL_ADA_NORM = FusedOp("dual_ada_norm", SCHEMA, adapter, wrap, launchers={"triton": _triton}, auto=("triton",))
