"""Residual-stream updates fused with what reads them next (both families' blocks).

A block's residual update x + gate * y runs as one op with the output projection's GEMM where the
backend has that epilogue (``linear_residual``), else it is left ``Pending`` and applied by the
adaLN that reads the stream next (``residual_norm``: one pass, one launch fewer), or by
``settle`` where no norm follows. ``residual_norm_fp8`` also lets that norm write the per-token
fp8 copy of its output for an fp8 GEMM reading it; ``attend_residual_fp8`` the residual itself,
where an fp8 GEMM reads the raw stream.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn as nn

from ..ops import TORCH_OPS, Ops
from .common import fusable


def _in_epilogue(ops: Ops, layer: nn.Module) -> bool:
    return ops.linear_gated_residual is not TORCH_OPS.linear_gated_residual and fusable(layer)


def linear_residual(ops: Ops, layer: nn.Module, x: torch.Tensor, h: torch.Tensor, gate) -> torch.Tensor:
    """x + gate * layer(h). One fused op where the backend has a kernel for it (the reference is
    this same unfused composition, so without one ``ops.gated_residual`` keeps its own backend)."""
    if _in_epilogue(ops, layer):
        return ops.linear_gated_residual(x, h, layer.weight, layer.bias, gate)
    return ops.gated_residual(x, layer(h), gate)


class Pending(NamedTuple):
    """A residual stream x + gate * y whose update waits for the adaLN that reads it next, so
    the two run as one ``ops.residual_ada_norm`` (one pass over the stream, one launch fewer)."""

    x: torch.Tensor
    y: torch.Tensor
    gate: torch.Tensor | None


def _defers(ops: Ops, layer: nn.Module) -> bool:
    # The backend has the fused residual + adaLN kernel and the projection cannot take the
    # residual in its GEMM epilogue (that writes the stream once: fewer bytes than writing the
    # projection's output for the fused norm to read back).
    return ops.residual_ada_norm is not TORCH_OPS.residual_ada_norm and not _in_epilogue(ops, layer)


def attend_residual(ops: Ops, attn: nn.Module, x: torch.Tensor, gate, *args, **kwargs):
    """x + gate * attn(*args, **kwargs), left ``Pending`` where ``_defers``; otherwise the
    residual through ``linear_residual`` as before."""
    if not _defers(ops, attn.to_out[0]):
        return attn(*args, residual=(x, gate), **kwargs)
    return Pending(x, attn(*args, **kwargs), gate)


def ff_residual(ops: Ops, ff: nn.Module, x: torch.Tensor, h: torch.Tensor, gate, h8=None):
    """x + gate * ff(h), the block's last residual: left ``Pending`` where ``_defers``, for the
    next block's first norm (or the final norm) to apply. ``h8``: h quantized per token by its norm."""
    if not _defers(ops, ff.net[2]):
        return ff.residual(ops, x, h, gate, h8)
    return Pending(x, ff(h, h8), gate)


def residual_norm(ops: Ops, x, shift, scale, eps: float, kind: str = "rms") -> tuple[torch.Tensor, torch.Tensor]:
    """(the stream x, ada_norm of it) for a tensor or a ``Pending`` stream (updated first)."""
    if isinstance(x, Pending):
        return ops.residual_ada_norm(x.x, x.y, x.gate, shift, scale, eps, kind)
    return x, ops.ada_norm(x, shift, scale, eps, kind)


def residual_norm_fp8(ops: Ops, x, shift, scale, eps: float, reader: nn.Module, keep=None):
    """(the stream x, h = its adaLN, x8) for ``reader`` (a self-attention or a FeedForward) on h:
    where its fp8 input GEMM (packed q/k/v; the up-projection) quantizes h per token (and STG does
    not skip the attention: ``keep`` False), x8 = (q8, scale) written by the norm itself
    (``ops.ada_norm_fp8``; after a pending residual ``ops.residual_ada_norm_fp8``), else
    ``residual_norm`` and x8 None."""
    pending = isinstance(x, Pending)
    if keep is False or not reader.takes_fp8_input() or not quantizing_norm(ops, pending):
        return (*residual_norm(ops, x, shift, scale, eps), None)
    if pending:
        x, h, q8, s = ops.residual_ada_norm_fp8(x.x, x.y, x.gate, shift, scale, eps, "rms")
    else:
        h, q8, s = ops.ada_norm_fp8(x, shift, scale, eps, "rms")
    return x, h, (q8, s)


def quantizing_norm(ops: Ops, pending: bool, dual: bool = False) -> bool:
    """Whether the norm may write the fp8 copy: the backend has the fused kernel, or the plain norm
    is the torch backend's too (then the fp8 op's native composition is the plain path's bits). A
    backend with its own plain norm but no fused one (kernels="cuda") keeps its norm + quantizer."""
    return _writes_fp8(ops, "dual_ada_norm" if dual else "residual_ada_norm" if pending else "ada_norm")


def modulating_norm(ops: Ops) -> bool:
    """Whether ``ops.ada_norm`` / ``ada_norm_fp8`` take kind "none" (the modulation alone): the torch
    backend's, or a backend with the fused fp8 adaLN (Triton: one kernel, the kind a constexpr).
    The CUDA ada_norm has rms and layer only: there (kernels="cuda", or "auto" without Triton) the
    model keeps its eager modulation, whose quantization is then to_k / to_v's own."""
    return quantizing_norm(ops, False)


def modulated_context(ops: Ops, context: torch.Tensor, shift, scale, eps: float, reader: nn.Module):
    """(context * (1 + scale) + shift, context8) for ``reader``, a cross-attention reading it (LTX-2.3+'s
    per-step text K/V modulation; shift / scale (D,) or (B, 1, D)): one ``ops.ada_norm`` of kind "none"
    where ``modulating_norm``, and where the packed fp8 to_k / to_v quantize it per token
    (``takes_fp8_context``) ``ops.ada_norm_fp8`` writing that quantization too, context8 = (q8, scale);
    else the eager expression and context8 None."""
    if not modulating_norm(ops):
        return context * (1 + scale) + shift, None
    shift, scale = (t.reshape(-1, 1, t.shape[-1]) for t in (shift, scale))  # (B|1, 1, D), views
    if not reader.takes_fp8_context():
        return ops.ada_norm(context, shift, scale, eps, "none"), None
    h, q8, s = ops.ada_norm_fp8(context, shift, scale, eps, "none")
    return h, (q8, s)


def quantizing_residual(ops: Ops) -> bool:
    """``quantizing_norm``'s rule for the plain gated residual (``ops.gated_residual_fp8``)."""
    return _writes_fp8(ops, "gated_residual")


def quantizing_gate(ops: Ops) -> bool:
    """``quantizing_norm``'s rule for LTX-2.3+'s head gate (``ops.head_gate_fp8``), with one more
    condition on the native composition: to_out's own quantizer must be the reference too. A backend
    with a quantizer kernel but no head gate (kernels="cuda") keeps the unfused pair: the native op
    would replace that one-launch quantizer by the reference's eager torch ops."""
    if ops.head_gate_fp8 is not TORCH_OPS.head_gate_fp8:
        return True
    return ops.head_gate is TORCH_OPS.head_gate and ops.quantize_fp8 is TORCH_OPS.quantize_fp8


def _writes_fp8(ops: Ops, name: str) -> bool:
    return getattr(ops, name + "_fp8") is not getattr(TORCH_OPS, name + "_fp8") or (
        getattr(ops, name) is getattr(TORCH_OPS, name))


def attend_residual_fp8(ops: Ops, attn: nn.Module, x: torch.Tensor, gate, reader: nn.Module, *args, **kwargs):
    """(x + gate * attn(*args, **kwargs), x8) for ``reader``, a cross-attention whose to_q reads the
    new stream raw (LTX-Video's attn2 after attn1): where to_q quantizes it per token and the residual
    is a plain gated residual (not in the output projection's epilogue), x8 = (q8, scale) written by
    the residual itself (``ops.gated_residual_fp8``), else the residual as ``Attention`` applies it
    (``linear_residual``) and x8 None."""
    if _in_epilogue(ops, attn.to_out[0]) or not reader.takes_fp8_input() or not quantizing_residual(ops):
        return attn(*args, residual=(x, gate), **kwargs), None
    x, q8, scale = ops.gated_residual_fp8(x, attn(*args, **kwargs), gate)
    return x, (q8, scale)


def settle(ops: Ops, x) -> torch.Tensor:
    """The stream x with a pending update applied (no norm reads it next)."""
    return ops.gated_residual(x.x, x.y, x.gate) if isinstance(x, Pending) else x
