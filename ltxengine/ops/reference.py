"""Pure-torch reference implementations of every fusable op.

These are the CPU path and the oracle the fused kernels are tested against. They compute in
fp32 and cast the result back to the input dtype; in fp32 they reproduce diffusers' module
arithmetic order, which is what makes the models match it to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .onednn import uses_onednn


def _into(out: torch.Tensor | None, result: torch.Tensor) -> torch.Tensor:
    """Destination passing for the references: write into ``out`` when given (same contract as
    the kernels: shape and dtype must match exactly, nothing is reallocated)."""
    if out is None:
        return result
    if out.shape != result.shape or out.dtype != result.dtype or out.device != result.device:
        raise ValueError(f"out must be {tuple(result.shape)} {result.dtype} on {result.device}, "
                         f"got {tuple(out.shape)} {out.dtype} on {out.device}")
    return out.copy_(result)


def rms_norm(x: torch.Tensor, weight: torch.Tensor | None, eps: float) -> torch.Tensor:
    """RMS over the last dim; optional learned weight. fp32 math, result in x.dtype."""
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    if weight is not None:
        y = y * weight.float()
    return y.to(x.dtype)


def rope_interleaved(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x[2j], x[2j+1]) of the full width by per-element cos/sin.

    x: (B, N, D); cos, sin: (B or 1, N, D) fp32, each angle repeated twice (LTX-Video layout).
    """
    xf = x.float()
    pairs = xf.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (xf * cos + rotated * sin).to(x.dtype)


def rope_split(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first half of each head against its second half (LTX-2 layout).

    x: (B, N, D); cos, sin: (B or 1, H, N, D / H / 2) fp32. The head count H is the table's: the
    frequency list is partitioned into H slices over the full width D, whatever head geometry
    the attention itself uses. Per head, with a = first half and b = second half:
    a' = a cos - b sin, b' = b cos + a sin.
    """
    b, n, d = x.shape
    heads = cos.shape[1]
    xf = x.float().view(b, n, heads, 2, d // heads // 2).transpose(1, 2)  # (B, H, N, 2, d/2)
    first, second = xf[..., 0, :], xf[..., 1, :]
    out = torch.stack((first * cos - second * sin, second * cos + first * sin), dim=-2)
    return out.transpose(1, 2).reshape(b, n, d).to(x.dtype)


def apply_rope(x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Interleaved tables are (B, N, D); split tables are 4-D (B, H, N, D/H/2)."""
    cos, sin = rope
    return rope_split(x, cos, sin) if cos.ndim == 4 else rope_interleaved(x, cos, sin)


def qk_norm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    rope: tuple[torch.Tensor, torch.Tensor] | None,
    k_rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    *,
    fp8_scales: tuple[torch.Tensor, torch.Tensor] | None = None,
    q_out: torch.Tensor | None = None,
    k_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm across all heads (learned weight over the full width), then RoPE on q and k.

    ``rope`` rotates q (and k unless ``k_rope`` is given: LTX-2's audio<->video attention has
    separate query and key positions). The layout follows the table shape (see apply_rope).
    ``fp8_scales=(q_scale, k_scale)``: outputs quantized to e4m3 with those static scales (for
    an fp8 attention).
    """
    q = rms_norm(q, q_weight, eps)
    k = rms_norm(k, k_weight, eps)
    if rope is not None:
        q = apply_rope(q, rope)
        k = apply_rope(k, rope if k_rope is None else k_rope)
    if fp8_scales is not None:
        q = quantize_fp8(q, fp8_scales[0])[0].view(q.shape)
        k = quantize_fp8(k, fp8_scales[1])[0].view(k.shape)
    return _into(q_out, q), _into(k_out, k)


def ada_norm(
    x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None, eps: float, kind: str = "rms",
    *, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """norm(x) * (1 + scale) + shift; norm is parameter-free RMSNorm ("rms"), LayerNorm ("layer")
    or none ("none": x * (1 + scale) + shift, eps unused: LTX-2.3+'s per-step text-context modulation).

    shift/scale broadcast against x: (B, 1, D) per sample or (B, N, D) per token; both None
    gives the plain norm (LTX-2's text cross-attention reads rms(x) without modulation).
    """
    xf = x.float()
    if kind == "rms":
        n = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    elif kind == "layer":
        n = F.layer_norm(xf, (xf.shape[-1],), eps=eps)
    elif kind == "none":
        n = xf if shift is not None or scale is not None else xf.clone()  # never x itself (fp32)
    else:
        raise ValueError(f"ada_norm: kind must be 'rms', 'layer' or 'none', got {kind!r}")
    if scale is not None:
        n = n * (1 + scale.float())
    if shift is not None:
        n = n + shift.float()
    return _into(out, n.to(x.dtype))


def gated_residual(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """x + gate * y (gate None means 1)."""
    if gate is None:
        return _into(out, (x.float() + y.float()).to(x.dtype))
    return _into(out, (x.float() + y.float() * gate.float()).to(x.dtype))


def head_gate(x: torch.Tensor, logits: torch.Tensor, *, out: torch.Tensor | None = None) -> torch.Tensor:
    """Gated attention's output gate (LTX-2.3+): head h of x (..., H*Dh) times 2 sigmoid(logits[..., h]),
    logits (..., H) from the query input; 1 at zero logits. fp32 math, result in x.dtype."""
    gate = 2.0 * torch.sigmoid(logits.float())
    y = x.float().unflatten(-1, (logits.shape[-1], -1)) * gate.unsqueeze(-1)
    return _into(out, y.flatten(-2).to(x.dtype))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def linear_gelu(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, out: torch.Tensor | None = None
) -> torch.Tensor:
    """gelu_tanh(x @ weight^T + bias): the FFN up-projection with its activation (weight (N, K)).

    The GEMM is ``linear``'s (the activation dtype, fp32 accumulation), the GELU is computed in
    fp32 and rounded once, so this is bit-equal to the models' unfused ``F.gelu(linear(...))``
    in every dtype; on fp32 inputs it is the fp32 oracle of the fused kernels, which skip the
    rounding of the pre-activation.
    """
    return _into(out, F.gelu(linear(x, weight, bias), approximate="tanh"))


def linear_gated_residual(
    x: torch.Tensor, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, gate: torch.Tensor | None,
    *, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """x + gate * (h @ weight^T + bias): an output projection (attention out, FFN down) with the
    gated residual update (gate None means 1). ``gated_residual(x, linear(h, ...), gate)``:
    bit-equal to the models' unfused path, the fp32 oracle on fp32 inputs."""
    return gated_residual(x, linear(h, weight, bias), gate, out=out)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None
) -> torch.Tensor:
    """Multi-head SDPA on (B, N, H*Dh) inputs; mask is an additive bias broadcastable to (B, H, N, M)."""
    b = q.shape[0]
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[-1])


_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def conv_prologue(
    x: torch.Tensor, norm_eps: float | None, scale: torch.Tensor | None, shift: torch.Tensor | None, silu: bool
) -> torch.Tensor:
    """What the VAE decoder applies right before a conv: pixel norm (RMS over channels, dim 1),
    per-sample channel modulation ``h * (1 + scale) + shift`` (scale/shift (B, C)), SiLU.

    Each step rounds to x.dtype like the model's unfused modules, so in fp32 this is bit-equal
    to them; a fused kernel keeps fp32 throughout (inside the bf16 error budget).
    """
    if norm_eps is not None:
        xf = x.float()
        x = (xf * torch.rsqrt(xf.pow(2).mean(1, keepdim=True) + norm_eps)).to(x.dtype)
    if scale is not None or shift is not None:
        view = (x.shape[0], x.shape[1]) + (1,) * (x.ndim - 2)
        if scale is not None:
            x = x * (1 + scale.view(view).to(x.dtype))
        if shift is not None:
            x = x + shift.view(view).to(x.dtype)
    return F.silu(x) if silu else x


def causal_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int, int],
    causal: bool,
    spatial_padding_mode: str = "zeros",
    *,
    norm_eps: float | None = None,
    scale: torch.Tensor | None = None,
    shift: torch.Tensor | None = None,
    silu: bool = False,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """3D conv whose temporal padding replicates edge frames (LTX convention).

    causal: kt-1 copies of frame 0 in front; otherwise (kt-1)/2 copies of the first frame in
    front and of the last frame behind. Spatial padding is k//2 per side, ``spatial_padding_mode``
    as nn.Conv3d's ``padding_mode``: zeros (LTX-Video, LTX-2 encoder) or reflect (LTX-2 decoder).
    The optional prologue (``conv_prologue``: pixel norm, modulation, SiLU) is applied to the
    unpadded input, so padding copies activated values and zero padding stays zero.
    """
    if spatial_padding_mode not in _PADDING_MODES:
        raise ValueError(f"causal_conv3d: spatial_padding_mode must be one of {_PADDING_MODES}, "
                         f"got {spatial_padding_mode!r}")
    if norm_eps is not None or scale is not None or shift is not None or silu:
        x = conv_prologue(x, norm_eps, scale, shift, silu)
    kt, kh, kw = weight.shape[2:]
    if kt > 1:
        if causal:
            front, back = kt - 1, 0
        else:
            front = back = (kt - 1) // 2
        parts = [x[:, :, :1].expand(-1, -1, front, -1, -1)] if front else []
        parts.append(x)
        if back:
            parts.append(x[:, :, -1:].expand(-1, -1, back, -1, -1))
        x = torch.cat(parts, dim=2)
    if spatial_padding_mode == "zeros":
        return _into(out, conv3d(x, weight, bias, stride, (0, kh // 2, kw // 2)))
    # Same pad call as nn.Conv3d(padding_mode=...) (on CUDA, bit-equal to it).
    x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, 0, 0), mode=spatial_padding_mode)
    return _into(out, conv3d(x, weight, bias, stride, (0, 0, 0)))


def conv3d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, stride, padding) -> torch.Tensor:
    """``F.conv3d`` (groups 1, no dilation), through oneDNN directly on the CPU where torch's own
    heuristic would take its slow im2col path (``onednn.uses_onednn``): the same fp32 accuracy
    (against float64 both ~5e-7 relative), but the sums' order differs, so not bit-equal."""
    if uses_onednn(x, weight):
        return torch.ops.ltxengine.onednn_conv3d(x, weight, bias, list(stride), list(padding))
    return F.conv3d(x, weight, bias, stride=stride, padding=padding)


FP8_MAX = 448.0  # largest finite float8_e4m3fn
FP8_MIN_AMAX = 1e-12  # keeps the scale of an all-zero tensor (or row) finite


def fp8_scale(x: torch.Tensor, per_row: bool) -> torch.Tensor:
    """Dynamic e4m3 scale amax / 448: a 0-d fp32 tensor, or (M, 1) over the rows of x viewed as
    (M, K) when ``per_row`` (per token)."""
    xf = x.reshape(-1, x.shape[-1]).float()
    amax = xf.abs().amax(dim=-1, keepdim=True) if per_row else xf.abs().amax()
    return amax.clamp(min=FP8_MIN_AMAX) / FP8_MAX


def quantize_fp8(
    x: torch.Tensor, scale: torch.Tensor | None = None, per_row: bool = False,
    *, out: torch.Tensor | None = None, scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (..., K) -> (q (M, K) float8_e4m3fn, scale) with x ~ q * scale.

    ``scale`` given: a static per-tensor scale (0-d or (1,), fp32; Lightricks' input_scale).
    Otherwise dynamic: per-tensor, or per row (M, 1) when ``per_row``. Values saturate at +-448.
    """
    xf = x.reshape(-1, x.shape[-1]).float()
    if scale is None:
        scale = fp8_scale(x, per_row)
    q = (xf / scale.float().reshape(-1, 1) if scale.numel() > 1 else xf / scale.float().reshape(()))
    q = q.clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return _into(out, q), _into(scale_out, scale.float())


def scaled_mm(
    a: torch.Tensor,
    b: torch.Tensor,
    scale_a: torch.Tensor,
    scale_b: torch.Tensor,
    bias: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """(a @ b.T) * scale_a * scale_b.T + bias, fp32 accumulation, rounded once to ``out_dtype``.

    a (M, K) and b (N, K) (nn.Linear weight layout) are float8_e4m3fn; scale_a is 0-d/(1,) or
    (M, 1) per row; scale_b is 0-d/(1,) or (N, 1) per output channel; bias (N,).
    """
    acc = a.float() @ b.float().T
    acc = acc * scale_a.float().reshape(-1, 1) if scale_a.numel() > 1 else acc * scale_a.float().reshape(())
    acc = acc * scale_b.float().reshape(1, -1) if scale_b.numel() > 1 else acc * scale_b.float().reshape(())
    if bias is not None:
        acc = acc + bias.float()
    return _into(out, acc.to(out_dtype))


def fp8_linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    input_scale: torch.Tensor | None = None,
    per_token: bool = True,
    *,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Linear layer with an e4m3 weight (N, K): quantize x (static ``input_scale``, else dynamic
    per token or per tensor), scaled matmul, output in x.dtype with x's leading dims."""
    q, sx = quantize_fp8(x, input_scale, per_row=per_token and input_scale is None)
    y = scaled_mm(q, weight, sx, weight_scale, bias, out_dtype=x.dtype)
    return _into(out, y.view(*x.shape[:-1], weight.shape[0]))


def attention_fp8(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None = None,
    *, out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``attention`` on e4m3-quantized q, k, v: the numerics of the fp8 attention kernels.

    Every (batch, head) slice (N, D) of q, k and v gets its own dynamic scale amax / 448 (fp32,
    ``fp8_scale``'s rule) and is quantized as ``quantize_fp8`` does (true division, saturating,
    round to nearest even). Attention then runs in fp32 on the dequantized values, e.g. q8 * s_q:
    softmax(q k^T / sqrt(D) + mask) v, with ``mask`` an additive bias broadcastable to
    (B, H, Nq, Nk); the result (B, Nq, H*D) is cast to q.dtype. Softmax's P stays in fp32 here:
    a kernel's own rounding of P before the PV product is part of its error budget.
    """
    b, nq = q.shape[:2]

    def dequantized(x: torch.Tensor) -> torch.Tensor:
        x = x.float().unflatten(-1, (heads, -1)).transpose(1, 2)  # (B, H, N, D)
        scale = x.abs().amax(dim=(2, 3), keepdim=True).clamp(min=FP8_MIN_AMAX) / FP8_MAX
        return (x / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn).float() * scale

    bias = mask.float() if mask is not None and mask.is_floating_point() else mask
    o = F.scaled_dot_product_attention(dequantized(q), dequantized(k), dequantized(v), attn_mask=bias)
    return _into(out, o.transpose(1, 2).reshape(b, nq, -1).to(q.dtype))


def residual_ada_norm(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor | None,
    scale: torch.Tensor | None, eps: float, kind: str = "rms",
    *, x_out: torch.Tensor | None = None, norm_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(x + gate * y, ada_norm of it): a residual update and the adaLN that reads it next.

    ``gated_residual`` then ``ada_norm``, so bit-equal to the models' unfused pair (the norm reads
    x_new rounded to x.dtype); on fp32 inputs the oracle of the fused kernel."""
    if kind not in ("rms", "layer"):  # before x_out is written: a refused call changes nothing
        raise ValueError(f"residual_ada_norm: kind must be 'rms' or 'layer', got {kind!r}")
    if norm_out is not None and (norm_out.shape != x.shape or norm_out.dtype != x.dtype
                                 or norm_out.device != x.device):  # likewise: x_out is written first
        raise ValueError(f"residual_ada_norm: norm_out must be {tuple(x.shape)} {x.dtype} on {x.device}, "
                         f"got {tuple(norm_out.shape)} {norm_out.dtype} on {norm_out.device}")
    x_new = gated_residual(x, y, gate, out=x_out)
    return x_new, ada_norm(x_new, shift, scale, eps, kind, out=norm_out)


def check_dual_args(kind: str, y, gate, x_out) -> None:
    """dual_ada_norm's argument rules that hold for every implementation, checked before x_out is
    written (a refused call changes nothing)."""
    if kind not in ("rms", "layer"):
        raise ValueError(f"dual_ada_norm: kind must be 'rms' or 'layer', got {kind!r}")
    if y is None and (gate is not None or x_out is not None):
        raise ValueError("dual_ada_norm: gate and x_out need a residual y, got y None with "
                         f"{'gate' if gate is not None else 'x_out'} set")


def dual_ada_norm(
    x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, shift1: torch.Tensor | None,
    scale1: torch.Tensor | None, shift2: torch.Tensor | None, scale2: torch.Tensor | None, eps: float,
    kind: str = "rms", *, x_out: torch.Tensor | None = None, norm1_out: torch.Tensor | None = None,
    norm2_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_new, ada_norm(x_new, shift1, scale1), ada_norm(x_new, shift2, scale2)): one stream read by
    two adaLNs (LTX-2's a2v and v2a), x_new = x + gate * y (a pending residual) or x when y is None.

    ``residual_ada_norm`` (or ``ada_norm``) then ``ada_norm``: the models' unfused calls bit for bit;
    on fp32 inputs the oracle of the fused kernel."""
    check_dual_args(kind, y, gate, x_out)
    for name, out in (("norm1_out", norm1_out), ("norm2_out", norm2_out)):
        if out is not None and (out.shape != x.shape or out.dtype != x.dtype or out.device != x.device):
            raise ValueError(f"dual_ada_norm: {name} must be {tuple(x.shape)} {x.dtype} on {x.device}, "
                             f"got {tuple(out.shape)} {out.dtype} on {out.device}")
    if y is None:
        x_new, n1 = x, ada_norm(x, shift1, scale1, eps, kind, out=norm1_out)
    else:
        x_new, n1 = residual_ada_norm(x, y, gate, shift1, scale1, eps, kind, x_out=x_out, norm_out=norm1_out)
    return x_new, n1, ada_norm(x_new, shift2, scale2, eps, kind, out=norm2_out)


def gelu_quantize_fp8(
    h: torch.Tensor, *, out: torch.Tensor | None = None, scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """h (..., K) -> (q (M, K) e4m3, per-row scale (M, 1)) of gelu_tanh(h): the fp8 FFN's GELU
    and its down-projection's per-token activation quantization. The GELU is rounded to h.dtype
    before the amax, as the unfused pair (F.gelu, then quantize_fp8 of its output) does, bit for bit."""
    return quantize_fp8(F.gelu(h, approximate="tanh"), per_row=True, out=out, scale_out=scale_out)


def ada_norm_fp8(
    x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None, eps: float, kind: str = "rms",
    *, out: torch.Tensor | None = None, q_out: torch.Tensor | None = None, scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(h = ada_norm(x, ...), q, row scales) with (q (M, D) e4m3, scale (M, 1)) = quantize_fp8(h,
    per_row=True): an adaLN feeding fp8 GEMMs that quantize their input per token (the packed
    q/k/v of models/transformer.py ``Attention._in_proj``), quantized from h as rounded to x.dtype."""
    h = ada_norm(x, shift, scale, eps, kind, out=out)
    return (h, *quantize_fp8(h, per_row=True, out=q_out, scale_out=scale_out))


def gated_residual_fp8(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, *, out: torch.Tensor | None = None,
    q_out: torch.Tensor | None = None, scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_new = x + gate * y, q, row scales) with (q (M, D) e4m3, scale (M, 1)) = quantize_fp8(x_new,
    per_row=True): a residual update whose stream an fp8 GEMM reads raw, quantizing it per token
    (LTX-Video's cross-attention to_q after attn1's residual), quantized from x_new as rounded to x.dtype."""
    x_new = gated_residual(x, y, gate, out=out)
    return (x_new, *quantize_fp8(x_new, per_row=True, out=q_out, scale_out=scale_out))


def head_gate_fp8(
    x: torch.Tensor, logits: torch.Tensor, *, q_out: torch.Tensor | None = None,
    scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(q (M, H*Dh) e4m3, row scales (M, 1)) = quantize_fp8(head_gate(x, logits), per_row=True): gated
    attention's output as its fp8 to_out quantizes it per token, from the gate's output as rounded to
    x.dtype (the unfused pair's bits)."""
    return quantize_fp8(head_gate(x, logits), per_row=True, out=q_out, scale_out=scale_out)


def residual_ada_norm_fp8(
    x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, shift: torch.Tensor | None,
    scale: torch.Tensor | None, eps: float, kind: str = "rms", *, x_out: torch.Tensor | None = None,
    norm_out: torch.Tensor | None = None, q_out: torch.Tensor | None = None, scale_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_new, h, q, row scales): ``residual_ada_norm`` then quantize_fp8(h, per_row=True), as
    ``ada_norm_fp8``."""
    x_new, h = residual_ada_norm(x, y, gate, shift, scale, eps, kind, x_out=x_out, norm_out=norm_out)
    return (x_new, h, *quantize_fp8(h, per_row=True, out=q_out, scale_out=scale_out))


def dual_ada_norm_fp8(
    x: torch.Tensor, y: torch.Tensor | None, gate: torch.Tensor | None, shift1: torch.Tensor | None,
    scale1: torch.Tensor | None, shift2: torch.Tensor | None, scale2: torch.Tensor | None, eps: float,
    kind: str = "rms", *, x_out: torch.Tensor | None = None, norm1_out: torch.Tensor | None = None,
    norm2_out: torch.Tensor | None = None, q1_out: torch.Tensor | None = None, scale1_out: torch.Tensor | None = None,
    q2_out: torch.Tensor | None = None, scale2_out: torch.Tensor | None = None,
) -> tuple[torch.Tensor, ...]:
    """(x_new, n1, n2, q1, s1, q2, s2): ``dual_ada_norm``, then quantize_fp8(ni, per_row=True) of
    each norm (LTX-2's a2v / v2a norms feeding fp8 queries and packed fp8 keys / values)."""
    x_new, n1, n2 = dual_ada_norm(x, y, gate, shift1, scale1, shift2, scale2, eps, kind, x_out=x_out,
                                  norm1_out=norm1_out, norm2_out=norm2_out)
    return (x_new, n1, n2, *quantize_fp8(n1, per_row=True, out=q1_out, scale_out=scale1_out),
            *quantize_fp8(n2, per_row=True, out=q2_out, scale_out=scale2_out))
