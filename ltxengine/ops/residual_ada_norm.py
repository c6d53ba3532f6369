"""residual_ada_norm: x + gate * y, then the adaLN of the result, in one pass over the stream.

Where a residual update is immediately followed by an adaLN of the same stream (LTX-Video's
cross-attention residual and norm2; LTX-2's attention residuals and the next norm), the unfused
pair reads the residual stream twice and costs two launches. Returns (x_new, normed); x_new is
rounded to x's dtype and the norm reads that rounded value, like the pair.

Reference: ``reference.residual_ada_norm`` = ``gated_residual`` then ``ada_norm``, the models'
unfused path bit for bit. Kernel: Triton ``kernels/ada_norm.py`` (the same row layout). No
CUDA kernel yet; where this op is the reference the models keep the unfused calls.
"""

from __future__ import annotations

from .library import FusedOp, check_tensor, empty

SCHEMA = ("(Tensor x, Tensor y, Tensor? gate, Tensor? shift, Tensor? scale, float eps, str kind, "
          "Tensor(a!) x_out, Tensor(b!) norm_out) -> ()")


def adapter(launch):
    def impl(x, y, gate, shift, scale, eps, kind, x_out, norm_out) -> None:
        launch(x, y, gate, shift, scale, eps, kind, x_out=x_out, norm_out=norm_out)

    return impl


def wrap(op):
    def residual_ada_norm(x, y, gate, shift, scale, eps, kind="rms", *, x_out=None, norm_out=None):
        check_tensor("residual_ada_norm", "x", x, 3)
        x_out = empty(x.shape, x) if x_out is None else x_out
        norm_out = empty(x.shape, x) if norm_out is None else norm_out
        op(x, y, gate, shift, scale, float(eps), kind, x_out, norm_out)
        return x_out, norm_out

    return residual_ada_norm


def _triton():
    from ..kernels.ada_norm import residual_ada_norm
    return residual_ada_norm


RESIDUAL_ADA_NORM = FusedOp("residual_ada_norm", SCHEMA, adapter, wrap, launchers={"triton": _triton},
                            auto=("triton",))
