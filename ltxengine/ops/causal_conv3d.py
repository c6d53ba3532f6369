"""causal_conv3d: the VAEs' 3D conv with replicate time padding, optionally behind a fused
prologue (pixel norm, per-sample modulation, SiLU).

Reference: ``reference.causal_conv3d`` (and ``reference.conv_prologue``). Kernel: Triton
``kernels/causal_conv3d.py`` (an implicit GEMM); no CUDA C++ kernel: cuDNN serves the reference.
"""

from __future__ import annotations

import torch

from .library import FusedOp, check_tensor, empty

SCHEMA = ("(Tensor x, Tensor weight, Tensor? bias, int[] stride, bool causal, str padding, "
          "float? norm_eps, Tensor? scale, Tensor? shift, bool silu, Tensor(a!) out) -> ()")


def conv_out_shape(x: torch.Tensor, weight: torch.Tensor, stride, causal: bool) -> tuple[int, ...]:
    """(B, Cout, To, Ho, Wo) of reference.causal_conv3d (replicate time padding, k//2 in space)."""
    check_tensor("causal_conv3d", "x", x, 5)
    check_tensor("causal_conv3d", "weight", weight, 5)
    if len(tuple(stride)) != 3:
        raise ValueError(f"causal_conv3d: stride must have 3 entries, got {stride!r}")
    kt, kh, kw = weight.shape[2:]
    t_pad = kt - 1 if causal else 2 * ((kt - 1) // 2)
    sizes = (x.shape[2] + t_pad, x.shape[3] + 2 * (kh // 2), x.shape[4] + 2 * (kw // 2))
    out = tuple((n - k) // s + 1 for n, k, s in zip(sizes, (kt, kh, kw), stride))
    return (x.shape[0], weight.shape[0], *out)


def adapter(launch):
    def impl(x, w, b, stride, causal, padding, norm_eps, scale, shift, silu, out) -> None:
        launch(x, w, b, tuple(stride), causal, padding, norm_eps=norm_eps, scale=scale, shift=shift, silu=silu,
               out=out)

    return impl


def wrap(op):
    def causal_conv3d(x, weight, bias, stride, causal, spatial_padding_mode="zeros", *, norm_eps=None,
                      scale=None, shift=None, silu=False, out=None):
        out = empty(conv_out_shape(x, weight, stride, causal), x) if out is None else out
        op(x, weight, bias, list(stride), causal, spatial_padding_mode, norm_eps, scale, shift, silu, out)
        return out

    return causal_conv3d


def _triton():
    from ..kernels.causal_conv3d import causal_conv3d
    return causal_conv3d


# auto keeps cuDNN until the implicit GEMM beats it in bench/ on the GPU (bench/README.md)
CAUSAL_CONV3D = FusedOp("causal_conv3d", SCHEMA, adapter, wrap, launchers={"triton": _triton},
                        auto=("torch",))
