"""The torch backend's fusable ops: fp32 inputs get the reference, bf16/fp16 diffusers' arithmetic.

``TORCH_OPS`` (and every backend's op without a kernel of its own) points here. On fp32 inputs
each function calls ``reference`` (the CPU path; fp32 parity with diffusers / ltx-core rests on
its exact arithmetic). On 16-bit inputs the fp32 reference upcasts every activation and casts it
back (~1,000 extra copy launches per 2B step, bench/results/roofline_2b.md), so instead each op
rounds where diffusers' LTX-Video / LTX-2 modules round, in the same order, with the casts folded
into the op that produces the value (``torch.mul(..., out=<16-bit>)`` computes in fp32 and
rounds once on store: the same bits as ``(a * b).to(dtype)``). Per op, in 16 bits:

- ``ada_norm`` rms: diffusers' ``RMSNorm`` without weight (fp32 variance of the fp32 copy,
  ``x * rsqrt`` rounded once), then ``n * (1 + scale) + shift`` in the activation dtype;
  layer: ``F.layer_norm`` on the 16-bit tensor (diffusers' ``nn.LayerNorm``), same modulation.
  Bit-equal to diffusers; one launch and a fp32 round trip fewer than its RMSNorm. none (LTX-2.3+'s
  text-context modulation): that modulation of x itself, the models' ``ctx * (1 + scale) + shift``.
- ``gated_residual``: ``x + y * gate`` with the product rounded first, as diffusers writes it
  (bit-equal). ``torch.addcmul`` would save a pass but round once, so it would not be.
- ``qk_norm_rope``: ``F.rms_norm`` with the weight (diffusers' ``torch.nn.RMSNorm``: one fused
  kernel on CUDA), then RoPE in fp32 as diffusers' ``apply_rotary_emb`` / ``apply_split_rotary_emb``
  (the rotated copy built in 16 bits, exact; products in fp32; rounded once on the final add or
  copy); the split layout's ``addcmul_`` with ``value=-1`` for diffusers' ``-sin`` (the same bits
  without the negated table). Bit-equal to diffusers.
- ``head_gate``: ``x * 2 sigmoid(logits)`` in the activation dtype (diffusers' LTX-2 processor).
- ``linear_gated_residual``: ``gated_residual(x, linear(h), gate)`` as above; ``residual_ada_norm``:
  ``gated_residual`` then ``ada_norm``, the models' unfused pair; ``dual_ada_norm``: that, with the
  norm computed once and modulated twice (LTX-2's a2v / v2a norms of one stream, as diffusers).

Everything else (linear, linear_gelu, attention, the VAE conv, the fp8 ops) already computes in
the activation dtype in ``reference`` and is used from there. ``tests/ops/test_native.py`` checks
fp32 == reference bit for bit, 16-bit == diffusers' sequence bit for bit, and the error bounds.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import reference

HALF = (torch.bfloat16, torch.float16)


def _dst(out: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor:
    """``out`` checked like ``reference._into`` (exact shape, dtype, device; nothing reallocated),
    or a new tensor like ``like``; checked before any work so a refused call writes nothing."""
    if out is None:
        return torch.empty_like(like)
    if out.shape != like.shape or out.dtype != like.dtype or out.device != like.device:
        raise ValueError(f"out must be {tuple(like.shape)} {like.dtype} on {like.device}, "
                         f"got {tuple(out.shape)} {out.dtype} on {out.device}")
    return out


def rms_norm(x: torch.Tensor, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """diffusers' ``RMSNorm`` without weight on a 16-bit x: the variance of the fp32 copy, then
    x * rsqrt(variance + eps) computed in fp32 and rounded once into ``out`` (x's dtype)."""
    variance = x.float().pow_(2).mean(-1, keepdim=True)  # pow_ on our own fp32 copy: no new buffer
    return torch.mul(x, variance.add_(eps).rsqrt_(), out=_dst(out, x))


def _modulate_(n: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None) -> torch.Tensor:
    # diffusers' ``n * (1 + scale) + shift``, each step rounded to n's dtype, in place on n (ours)
    if scale is not None:
        n.mul_(1 + scale)
    if shift is not None:
        n.add_(shift)
    return n


def ada_norm(
    x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None, eps: float, kind: str = "rms",
    *, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``reference.ada_norm``'s contract; 16-bit: diffusers' norm then modulation (module docstring)."""
    if x.dtype not in HALF:
        return reference.ada_norm(x, shift, scale, eps, kind, out=out)
    if kind not in ("rms", "layer", "none"):
        raise ValueError(f"ada_norm: kind must be 'rms', 'layer' or 'none', got {kind!r}")
    if kind == "none":  # the models' own ``x * (1 + scale) + shift``, x left as it is
        return _modulated(x, shift, scale, _dst(out, x))
    if kind == "rms":
        n = rms_norm(x, eps, out=_dst(out, x))
    else:
        if out is not None:
            _dst(out, x)
        n = F.layer_norm(x, (x.shape[-1],), eps=eps)  # 16-bit in, fp32 inside, rounded once
        n = n if out is None else out.copy_(n)
    return _modulate_(n, shift, scale)


def gated_residual(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x + gate * y; 16-bit: diffusers' ``x + y * gate`` (the product rounded, then the sum)."""
    if x.dtype not in HALF:
        return reference.gated_residual(x, y, gate, out=out)
    if out is not None:
        _dst(out, x)
    if gate is None:
        return torch.add(x, y, out=out)
    t = y * gate
    if out is None and t.dtype == x.dtype and t.shape == x.shape:
        out = t  # the sum overwrites our own product (exact alias: elementwise-safe)
    return torch.add(x, t, out=_dst(out, x))


def linear_gated_residual(
    x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gate: torch.Tensor | None,
    *, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """x + gate * (h @ weight^T + bias): ``gated_residual(x, linear(h, ...), gate)``, as the reference."""
    if x.dtype not in HALF:
        return reference.linear_gated_residual(x, h, weight, bias, gate, out=out)
    if out is not None:
        _dst(out, x)
    return gated_residual(x, reference.linear(h, weight, bias), gate, out=out)


def residual_ada_norm(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor | None,
    scale: torch.Tensor | None, eps: float, kind: str = "rms",
    *, x_out: torch.Tensor | None = None, norm_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + gate * y, ada_norm of it): ``gated_residual`` then ``ada_norm`` above, the models' pair."""
    if x.dtype not in HALF:
        return reference.residual_ada_norm(x, y, gate, shift, scale, eps, kind, x_out=x_out, norm_out=norm_out)
    if kind not in ("rms", "layer"):  # before x_out is written: a refused call changes nothing
        raise ValueError(f"residual_ada_norm: kind must be 'rms' or 'layer', got {kind!r}")
    if norm_out is not None:
        _dst(norm_out, x)
    x_new = gated_residual(x, y, gate, out=x_out)
    return x_new, ada_norm(x_new, shift, scale, eps, kind, out=norm_out)


def dual_ada_norm(
    x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, shift1: torch.Tensor | None,
    scale1: torch.Tensor | None, shift2: torch.Tensor | None, scale2: torch.Tensor | None, eps: float,
    kind: str = "rms", *, x_out: torch.Tensor | None = None, norm1_out: torch.Tensor | None = None,
    norm2_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``reference.dual_ada_norm``'s contract; 16-bit: ``gated_residual`` above when y is given, then
    diffusers' a2v / v2a arithmetic: the norm once, each modulation from it (the same bits as two
    ``ada_norm`` calls: the norm is deterministic, only its second evaluation is saved)."""
    if x.dtype not in HALF:
        return reference.dual_ada_norm(x, y, gate, shift1, scale1, shift2, scale2, eps, kind, x_out=x_out,
                                       norm1_out=norm1_out, norm2_out=norm2_out)
    reference.check_dual_args(kind, y, gate, x_out)
    n1, n2 = _dst(norm1_out, x), _dst(norm2_out, x)
    x_new = x if y is None else gated_residual(x, y, gate, out=x_out)
    n = ada_norm(x_new, None, None, eps, kind, out=n2)  # the plain norm, into the second output
    _modulated(n, shift1, scale1, n1)  # the first modulation reads it before the second overwrites it
    return x_new, n1, _modulate_(n, shift2, scale2)


def _modulated(n: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None,
               out: torch.Tensor) -> torch.Tensor:
    # ``_modulate_`` into ``out``, n kept: each step computed in fp32 and rounded once on store, as
    # the in-place n.mul_ / n.add_ round (the same bits)
    if scale is not None:
        torch.mul(n, 1 + scale, out=out)
    if shift is not None:
        torch.add(n if scale is None else out, shift, out=out)
    return out if scale is not None or shift is not None else out.copy_(n)


def head_gate(x: torch.Tensor, logits: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Head h of x times 2 sigmoid(logits[..., h]); 16-bit: diffusers' ``hidden * (2.0 * sigmoid)``."""
    if x.dtype not in HALF:
        return reference.head_gate(x, logits, out=out)
    dst = _dst(out, x)
    gate = torch.sigmoid(logits).mul_(2.0)  # 2.0 * sigmoid: the doubling is exact either way
    heads = logits.shape[-1]
    torch.mul(x.unflatten(-1, (heads, -1)), gate.unsqueeze(-1), out=dst.unflatten(-1, (heads, -1)))
    return dst


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None):
    """diffusers' ``apply_rotary_emb`` (LTX-Video, LTX-2 "interleaved"): the rotated pairs built in
    x's dtype (negation and copy are exact), x * cos + rotated * sin in fp32, rounded once."""
    pairs = x.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return torch.add(x * cos, rotated * sin, out=_dst(out, x))


def rope_split(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, out: torch.Tensor | None = None):
    """diffusers' ``apply_split_rotary_emb`` (LTX-2 "split"): per head, first half a, second half b,
    o = x * cos in fp32, then a' = o_a - sin b and b' = o_b + sin a by ``addcmul_`` (as diffusers;
    ``value=-1`` instead of its negated table gives the same bits), rounded once into x's dtype."""
    b, n, d = x.shape
    heads = cos.shape[1]
    dst = _dst(out, x)
    halves = x.view(b, n, heads, 2, d // heads // 2).transpose(1, 2)  # (B, H, N, 2, d/2), a view
    cos_u, sin_u = cos.unsqueeze(-2), sin.unsqueeze(-2)
    o = halves * cos_u  # fp32: the 16-bit values convert exactly
    o[..., :1, :].addcmul_(sin_u, halves[..., 1:, :], value=-1)
    o[..., 1:, :].addcmul_(sin_u, halves[..., :1, :])
    dst.view(b, n, heads, 2, d // heads // 2).transpose(1, 2).copy_(o)
    return dst


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], out: torch.Tensor | None = None):
    """The layout follows the tables, as ``reference.apply_rope``: split tables are 4-D."""
    cos, sin = rope
    return rope_split(x, cos, sin, out) if cos.ndim == 4 else rope_interleaved(x, cos, sin, out)


def qk_norm_rope(
    q: torch.Tensor, k: torch.Tensor, q_weight: torch.Tensor, k_weight: torch.Tensor, eps: float,
    rope: tuple[torch.Tensor, torch.Tensor] | None, k_rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    *, fp8_scales: tuple[torch.Tensor, torch.Tensor] | None = None,
    q_out: torch.Tensor | None = None, k_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``reference.qk_norm_rope``'s contract; 16-bit: diffusers' ``norm_q`` / ``norm_k``
    (``F.rms_norm`` with the weight) then its RoPE (module docstring)."""
    if q.dtype not in HALF:
        return reference.qk_norm_rope(q, k, q_weight, k_weight, eps, rope, k_rope, fp8_scales=fp8_scales,
                                      q_out=q_out, k_out=k_out)
    for name, out, like in (("q_out", q_out, q), ("k_out", k_out, k)):  # checked before any work
        dtype = torch.float8_e4m3fn if fp8_scales is not None else like.dtype
        if out is not None and (out.shape != like.shape or out.dtype != dtype):
            raise ValueError(f"qk_norm_rope: {name} must be {tuple(like.shape)}, got {tuple(out.shape)} {out.dtype}")
    q = F.rms_norm(q, (q.shape[-1],), q_weight, eps)
    k = F.rms_norm(k, (k.shape[-1],), k_weight, eps)
    if rope is not None and fp8_scales is None:  # RoPE's last op writes the destinations
        return apply_rope(q, rope, q_out), apply_rope(k, rope if k_rope is None else k_rope, k_out)
    if rope is not None:
        q, k = apply_rope(q, rope), apply_rope(k, rope if k_rope is None else k_rope)
    if fp8_scales is not None:
        q = reference.quantize_fp8(q, fp8_scales[0])[0].view(q.shape)
        k = reference.quantize_fp8(k, fp8_scales[1])[0].view(k.shape)
    return reference._into(q_out, q), reference._into(k_out, k)


def ada_norm_fp8(
    x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None, eps: float, kind: str = "rms",
    *, out: torch.Tensor | None = None, q_out: torch.Tensor | None = None, scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``reference.ada_norm_fp8``'s contract: ``ada_norm`` above, then the reference's per-row
    quantization of its output (the unfused norm and fp8_linear's quantization, bit for bit)."""
    h = ada_norm(x, shift, scale, eps, kind, out=out)
    return (h, *reference.quantize_fp8(h, per_row=True, out=q_out, scale_out=scale_out))


def gated_residual_fp8(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, *, out: torch.Tensor | None = None,
    q_out: torch.Tensor | None = None, scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``reference.gated_residual_fp8``'s contract on ``gated_residual`` above (the unfused residual
    and fp8_linear's per-token quantization of the stream, bit for bit)."""
    x_new = gated_residual(x, y, gate, out=out)
    return (x_new, *reference.quantize_fp8(x_new, per_row=True, out=q_out, scale_out=scale_out))


def head_gate_fp8(
    x: torch.Tensor, logits: torch.Tensor, *, q_out: torch.Tensor | None = None,
    scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``reference.head_gate_fp8``'s contract on ``head_gate`` above (the unfused gate and fp8_linear's
    per-token quantization of its output, bit for bit)."""
    return reference.quantize_fp8(head_gate(x, logits), per_row=True, out=q_out, scale_out=scale_out)


def residual_ada_norm_fp8(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor | None,
    scale: torch.Tensor | None, eps: float, kind: str = "rms", *, x_out: torch.Tensor | None = None,
    norm_out: torch.Tensor | None = None, q_out: torch.Tensor | None = None, scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``reference.residual_ada_norm_fp8``'s contract on ``residual_ada_norm`` above."""
    x_new, h = residual_ada_norm(x, y, gate, shift, scale, eps, kind, x_out=x_out, norm_out=norm_out)
    return (x_new, h, *reference.quantize_fp8(h, per_row=True, out=q_out, scale_out=scale_out))


def dual_ada_norm_fp8(
    x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, shift1: torch.Tensor | None,
    scale1: torch.Tensor | None, shift2: torch.Tensor | None, scale2: torch.Tensor | None, eps: float,
    kind: str = "rms", *, x_out: torch.Tensor | None = None, norm1_out: torch.Tensor | None = None,
    norm2_out: torch.Tensor | None = None, q1_out: torch.Tensor | None = None, scale1_out: torch.Tensor | None = None,
    q2_out: torch.Tensor | None = None, scale2_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """``reference.dual_ada_norm_fp8``'s contract on ``dual_ada_norm`` above."""
    x_new, n1, n2 = dual_ada_norm(x, y, gate, shift1, scale1, shift2, scale2, eps, kind, x_out=x_out,
                                  norm1_out=norm1_out, norm2_out=norm2_out)
    return (x_new, n1, n2, *reference.quantize_fp8(n1, per_row=True, out=q1_out, scale_out=scale1_out),
            *reference.quantize_fp8(n2, per_row=True, out=q2_out, scale_out=scale2_out))
