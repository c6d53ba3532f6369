"""torch.library custom ops around the fused kernels, and the Ops objects built from them.

Each kernel backend ("triton", "cuda") supplies launchers with the reference signatures plus
destination passing (``out=``). Here every launcher becomes a custom op
``ltxengine::<backend>_<op>`` whose outputs are mutated arguments: the schema says exactly what
is written, the fake implementation has nothing to compute, and torch.compile / CUDA graph
capture see one opaque node per kernel. The Python functions put on the Ops object allocate the
outputs when the caller passes none (the executor passes pool pages instead).
"""

from __future__ import annotations

from typing import Callable

import torch

_LIB = torch.library.Library("ltxengine", "FRAGMENT")

SCHEMAS = {
    "qk_norm_rope": "(Tensor q, Tensor k, Tensor q_weight, Tensor k_weight, float eps, Tensor? cos, Tensor? sin, "
                    "Tensor? k_cos, Tensor? k_sin, Tensor? q_scale, Tensor? k_scale, Tensor(a!) q_out, "
                    "Tensor(b!) k_out) -> ()",
    "ada_norm": "(Tensor x, Tensor? shift, Tensor? scale, float eps, str kind, Tensor(a!) out) -> ()",
    "gated_residual": "(Tensor x, Tensor y, Tensor? gate, Tensor(a!) out) -> ()",
    "causal_conv3d": "(Tensor x, Tensor weight, Tensor? bias, int[] stride, bool causal, str padding, "
                     "float? norm_eps, Tensor? scale, Tensor? shift, bool silu, Tensor(a!) out) -> ()",
    "quantize_fp8": "(Tensor x, Tensor? scale, bool per_row, Tensor(a!) out, Tensor(b!) scale_out) -> ()",
    "scaled_mm": "(Tensor a, Tensor b, Tensor scale_a, Tensor scale_b, Tensor? bias, Tensor(a!) out) -> ()",
    "attention_fp8": "(Tensor q, Tensor k, Tensor v, int heads, Tensor? mask, Tensor(a!) out) -> ()",
}

# How each schema's flat arguments map back onto the launcher's reference-style signature.
_ADAPTERS = {
    "qk_norm_rope": lambda f: lambda q, k, qw, kw, eps, cos, sin, kcos, ksin, qs, ks, q_out, k_out: f(
        q, k, qw, kw, eps, None if cos is None else (cos, sin), None if kcos is None else (kcos, ksin),
        fp8_scales=None if qs is None else (qs, ks), q_out=q_out, k_out=k_out),
    "ada_norm": lambda f: lambda x, shift, scale, eps, kind, out: f(x, shift, scale, eps, kind, out=out),
    "gated_residual": lambda f: lambda x, y, gate, out: f(x, y, gate, out=out),
    "causal_conv3d": lambda f: lambda x, w, b, stride, causal, padding, norm_eps, scale, shift, silu, out: f(
        x, w, b, tuple(stride), causal, padding, norm_eps=norm_eps, scale=scale, shift=shift, silu=silu, out=out),
    "quantize_fp8": lambda f: lambda x, scale, per_row, out, scale_out: f(
        x, scale, per_row, out=out, scale_out=scale_out),
    "scaled_mm": lambda f: lambda a, b, sa, sb, bias, out: f(a, b, sa, sb, bias, out.dtype, out=out),
    "attention_fp8": lambda f: lambda q, k, v, heads, mask, out: f(q, k, v, heads, mask, out=out),
}


def register(backend: str, launchers: dict[str, Callable]) -> dict[str, Callable]:
    """Define ``ltxengine::<backend>_<op>`` for each launcher (once per process); returns the op
    handles by op name."""
    handles = {}
    for op, launcher in launchers.items():
        name = f"{backend}_{op}"
        if not hasattr(torch.ops.ltxengine, name):
            _LIB.define(name + SCHEMAS[op])
            _LIB.impl(name, _returning_none(_ADAPTERS[op](launcher)), "CompositeExplicitAutograd")
            torch.library.register_fake(f"ltxengine::{name}", lambda *args: None, lib=_LIB)
        handles[op] = getattr(torch.ops.ltxengine, name).default
    return handles


def _returning_none(impl: Callable) -> Callable:
    # The schemas return () (outputs are the mutated arguments); the launchers return them too.
    def run(*args):
        impl(*args)

    return run


def _empty(shape, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty(shape, dtype=dtype or like.dtype, device=like.device)


def _check_tensor(fn: str, name: str, x, ndim: int) -> None:
    # Enough to size the outputs; the launcher checks everything else.
    if not isinstance(x, torch.Tensor) or x.ndim != ndim:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{fn}: {name} must be a {ndim}-D tensor, got {got}")


def conv_out_shape(x: torch.Tensor, weight: torch.Tensor, stride, causal: bool) -> tuple[int, ...]:
    """(B, Cout, To, Ho, Wo) of reference.causal_conv3d (replicate time padding, k//2 in space)."""
    _check_tensor("causal_conv3d", "x", x, 5)
    _check_tensor("causal_conv3d", "weight", weight, 5)
    if len(tuple(stride)) != 3:
        raise ValueError(f"causal_conv3d: stride must have 3 entries, got {stride!r}")
    kt, kh, kw = weight.shape[2:]
    t_pad = kt - 1 if causal else 2 * ((kt - 1) // 2)
    sizes = (x.shape[2] + t_pad, x.shape[3] + 2 * (kh // 2), x.shape[4] + 2 * (kw // 2))
    out = tuple((n - k) // s + 1 for n, k, s in zip(sizes, (kt, kh, kw), stride))
    return (x.shape[0], weight.shape[0], *out)


def _rope_args(rope):
    return (None, None) if rope is None else tuple(rope)


def bind(handles: dict[str, Callable], name: str, extra: dict[str, Callable] | None = None,
         extra_sources: dict[str, str] | None = None):
    """An Ops instance whose fused fields call the custom ops in ``handles`` (plus plain
    functions in ``extra``); fields without either keep the reference. ``sources`` records which
    backend serves each op (``extra_sources`` overrides, e.g. cuBLASLt inside the cuda backend)."""
    from . import Ops

    fields = {}
    if "qk_norm_rope" in handles:
        op = handles["qk_norm_rope"]

        def qk_norm_rope(q, k, q_weight, k_weight, eps, rope, k_rope=None, *, fp8_scales=None, q_out=None,
                         k_out=None):
            _check_tensor("qk_norm_rope", "q", q, 3)
            _check_tensor("qk_norm_rope", "k", k, 3)
            dtype = q.dtype if fp8_scales is None else torch.float8_e4m3fn
            q_out = _empty(q.shape, q, dtype) if q_out is None else q_out
            k_out = _empty(k.shape, k, dtype) if k_out is None else k_out
            scales = (None, None) if fp8_scales is None else tuple(fp8_scales)
            op(q, k, q_weight, k_weight, float(eps), *_rope_args(rope), *_rope_args(k_rope), *scales, q_out, k_out)
            return q_out, k_out

        fields["qk_norm_rope"] = qk_norm_rope
    if "ada_norm" in handles:
        ada_op = handles["ada_norm"]

        def ada_norm(x, shift, scale, eps, kind="rms", *, out=None):
            out = torch.empty_like(x) if out is None else out
            ada_op(x, shift, scale, float(eps), kind, out)
            return out

        fields["ada_norm"] = ada_norm
    if "gated_residual" in handles:
        gr_op = handles["gated_residual"]

        def gated_residual(x, y, gate, *, out=None):
            out = torch.empty_like(x) if out is None else out
            gr_op(x, y, gate, out)
            return out

        fields["gated_residual"] = gated_residual
    if "causal_conv3d" in handles:
        conv_op = handles["causal_conv3d"]

        def causal_conv3d(x, weight, bias, stride, causal, spatial_padding_mode="zeros", *, norm_eps=None,
                          scale=None, shift=None, silu=False, out=None):
            out = _empty(conv_out_shape(x, weight, stride, causal), x) if out is None else out
            conv_op(x, weight, bias, list(stride), causal, spatial_padding_mode, norm_eps, scale, shift, silu, out)
            return out

        fields["causal_conv3d"] = causal_conv3d
    if "quantize_fp8" in handles:
        fields["quantize_fp8"] = _quantize_fn(handles["quantize_fp8"])
    if "scaled_mm" in handles:
        fields["scaled_mm"] = _scaled_mm_fn(handles["scaled_mm"])
    if "attention_fp8" in handles:
        attn_op = handles["attention_fp8"]

        def attention_fp8(q, k, v, heads, mask=None, *, out=None):
            _check_tensor("attention_fp8", "q", q, 3)
            # q may be a strided slice of a fused projection: a fresh contiguous output
            out = torch.empty(q.shape, dtype=q.dtype, device=q.device) if out is None else out
            attn_op(q, k, v, int(heads), mask, out)
            return out

        fields["attention_fp8"] = attention_fp8
    fields.update(extra or {})
    if "quantize_fp8" in fields and "scaled_mm" in fields:
        fields["fp8_linear"] = _fp8_linear_fn(fields["quantize_fp8"], fields["scaled_mm"])
    sources = {op: name for op in fields}
    sources.update(extra_sources or {})
    return Ops(name=name, sources=tuple(sources.items()), **fields)


def _quantize_fn(op):
    def quantize_fp8(x, scale=None, per_row=False, *, out=None, scale_out=None):
        if not isinstance(x, torch.Tensor) or x.ndim < 1:
            raise ValueError(f"quantize_fp8: x must be a tensor with at least 1 dim, got {type(x).__name__}")
        rows = x.numel() // max(x.shape[-1], 1)
        out = _empty((rows, x.shape[-1]), x, torch.float8_e4m3fn) if out is None else out
        if scale_out is None:
            shape = (rows, 1) if per_row and scale is None else (() if scale is None else scale.shape)
            scale_out = _empty(shape, x, torch.float32)
        op(x, scale, per_row, out, scale_out)
        return out, scale_out

    return quantize_fp8


def _scaled_mm_fn(op):
    def scaled_mm(a, b, scale_a, scale_b, bias=None, out_dtype=torch.bfloat16, *, out=None):
        _check_tensor("scaled_mm", "a", a, 2)
        _check_tensor("scaled_mm", "b", b, 2)
        out = _empty((a.shape[0], b.shape[0]), a, out_dtype) if out is None else out
        op(a, b, scale_a, scale_b, bias, out)
        return out

    return scaled_mm


def _fp8_linear_fn(quantize, mm):
    def fp8_linear(x, weight, weight_scale, bias=None, input_scale=None, per_token=True, *, out=None):
        q, sx = quantize(x, input_scale, per_token and input_scale is None)
        flat = None if out is None else out.view(-1, weight.shape[0])
        y = mm(q, weight, sx, weight_scale, bias, x.dtype, out=flat)
        return y.view(*x.shape[:-1], weight.shape[0]) if out is None else out

    return fp8_linear


__all__ = ["SCHEMAS", "register", "bind", "conv_out_shape"]
