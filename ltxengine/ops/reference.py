"""Pure-torch reference implementations of every fusable op.

These are the CPU path and the oracle the fused kernels are tested against. They compute in
fp32 and cast the result back to the input dtype; in fp32 they reproduce diffusers' module
arithmetic order, which is what makes the models match it to rounding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm across all heads (learned weight over the full width), then RoPE on q and k.

    ``rope`` rotates q (and k unless ``k_rope`` is given: LTX-2's audio<->video attention has
    separate query and key positions). The layout follows the table shape (see apply_rope).
    """
    q = rms_norm(q, q_weight, eps)
    k = rms_norm(k, k_weight, eps)
    if rope is not None:
        q = apply_rope(q, rope)
        k = apply_rope(k, rope if k_rope is None else k_rope)
    return q, k


def ada_norm(
    x: torch.Tensor, shift: torch.Tensor | None, scale: torch.Tensor | None, eps: float, kind: str = "rms"
) -> torch.Tensor:
    """norm(x) * (1 + scale) + shift; norm is parameter-free RMSNorm or LayerNorm.

    shift/scale broadcast against x: (B, 1, D) per sample or (B, N, D) per token; both None
    gives the plain norm (LTX-2's text cross-attention reads rms(x) without modulation).
    """
    xf = x.float()
    if kind == "rms":
        n = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    elif kind == "layer":
        n = F.layer_norm(xf, (xf.shape[-1],), eps=eps)
    else:
        raise ValueError(f"ada_norm: kind must be 'rms' or 'layer', got {kind!r}")
    if shift is None and scale is None:
        return n.to(x.dtype)
    return (n * (1 + scale.float()) + shift.float()).to(x.dtype)


def gated_residual(x: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None) -> torch.Tensor:
    """x + gate * y (gate None means 1)."""
    if gate is None:
        return (x.float() + y.float()).to(x.dtype)
    return (x.float() + y.float() * gate.float()).to(x.dtype)


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, mask: torch.Tensor | None
) -> torch.Tensor:
    """Multi-head SDPA on (B, N, H*Dh) inputs; mask is an additive bias broadcastable to (B, H, N, M)."""
    b = q.shape[0]
    q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, -1, out.shape[1] * out.shape[-1])


_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def causal_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int, int],
    causal: bool,
    spatial_padding_mode: str = "zeros",
) -> torch.Tensor:
    """3D conv whose temporal padding replicates edge frames (LTX convention).

    causal: kt-1 copies of frame 0 in front; otherwise (kt-1)/2 copies of the first frame in
    front and of the last frame behind. Spatial padding is k//2 per side, ``spatial_padding_mode``
    as nn.Conv3d's ``padding_mode``: zeros (LTX-Video, LTX-2 encoder) or reflect (LTX-2 decoder).
    """
    if spatial_padding_mode not in _PADDING_MODES:
        raise ValueError(f"causal_conv3d: spatial_padding_mode must be one of {_PADDING_MODES}, "
                         f"got {spatial_padding_mode!r}")
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
        return F.conv3d(x, weight, bias, stride=stride, padding=(0, kh // 2, kw // 2))
    # Same pad call as nn.Conv3d(padding_mode=...), so results are bit-equal to it.
    x = F.pad(x, (kw // 2, kw // 2, kh // 2, kh // 2, 0, 0), mode=spatial_padding_mode)
    return F.conv3d(x, weight, bias, stride=stride)

