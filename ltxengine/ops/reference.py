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


def qk_norm_rope(
    q: torch.Tensor,
    k: torch.Tensor,
    q_weight: torch.Tensor,
    k_weight: torch.Tensor,
    eps: float,
    rope: tuple[torch.Tensor, torch.Tensor] | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm across all heads (learned weight over the full width), then RoPE on q and k."""
    q = rms_norm(q, q_weight, eps)
    k = rms_norm(k, k_weight, eps)
    if rope is not None:
        cos, sin = rope
        q = rope_interleaved(q, cos, sin)
        k = rope_interleaved(k, cos, sin)
    return q, k


def ada_norm(
    x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor, eps: float, kind: str = "rms"
) -> torch.Tensor:
    """norm(x) * (1 + scale) + shift; norm is parameter-free RMSNorm or LayerNorm.

    shift/scale broadcast against x: (B, 1, D) per sample or (B, N, D) per token.
    """
    xf = x.float()
    if kind == "rms":
        n = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    elif kind == "layer":
        n = F.layer_norm(xf, (xf.shape[-1],), eps=eps)
    else:
        raise ValueError(f"ada_norm: kind must be 'rms' or 'layer', got {kind!r}")
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


def causal_conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: tuple[int, int, int],
    causal: bool,
) -> torch.Tensor:
    """3D conv whose temporal padding replicates edge frames (LTX convention).

    causal: kt-1 copies of frame 0 in front; otherwise (kt-1)/2 copies of the first frame in
    front and of the last frame behind. Spatial padding is k//2 zeros inside the conv.
    """
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
    return F.conv3d(x, weight, bias, stride=stride, padding=(0, kh // 2, kw // 2))
