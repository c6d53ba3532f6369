"""Building blocks shared by the LTX models. Parameter names follow diffusers' state-dict keys
so a diffusers folder loads with an identity key map."""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..ops import TORCH_OPS, Ops


class OpsLinear(nn.Linear):
    """nn.Linear whose matmul goes through the ops object (fp8 and fused-bias kernels plug in here)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, ops: Ops = TORCH_OPS):
        super().__init__(in_features, out_features, bias=bias)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ops.linear(x, self.weight, self.bias)


def fusable(layer: nn.Module) -> bool:
    """A plain OpsLinear without forward hooks, whose matmul may run fused with the op after it.
    fp8 (quant.fp8.Fp8Linear), GGUF layers and LoRA branches (forward hooks) keep their forward."""
    return type(layer) is OpsLinear and not (layer._forward_hooks or layer._forward_pre_hooks)


class CausalConv3d(nn.Module):
    """3D conv with LTX temporal replicate padding (see ops.reference.causal_conv3d).

    Holds an nn.Conv3d only as parameter storage so keys read ``<name>.conv.weight``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int | tuple[int, int, int] = 1, causal: bool = True, ops: Ops = TORCH_OPS):
        super().__init__()
        self.stride = stride if isinstance(stride, tuple) else (stride,) * 3
        self.causal = causal
        k = kernel_size
        self.conv = nn.Conv3d(in_channels, out_channels, (k, k, k), stride=self.stride, padding=(0, k // 2, k // 2))
        self.ops = ops

    def forward(self, x: torch.Tensor, **prologue) -> torch.Tensor:
        """``prologue``: norm_eps / scale / shift / silu applied to x first (see
        ops.reference.conv_prologue); fused into the conv by the Triton backend."""
        return self.ops.causal_conv3d(x, self.conv.weight, self.conv.bias, self.stride, self.causal, **prologue)


def sinusoidal_timestep_features(t: torch.Tensor, dim: int = 256, max_period: float = 10000.0) -> torch.Tensor:
    """PixArt-style features of 1-D timesteps: [cos(t*w), sin(t*w)], w_i = max_period^(-i/(dim/2)). fp32."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class TimestepMLP(nn.Module):
    """Linear(256 -> D) -> SiLU -> Linear(D -> D); keys linear_1, linear_2."""

    def __init__(self, dim: int, in_features: int = 256, ops: Ops = TORCH_OPS):
        super().__init__()
        self.linear_1 = OpsLinear(in_features, dim, ops=ops)
        self.act = nn.SiLU()
        self.linear_2 = OpsLinear(dim, dim, ops=ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class TimestepEmbedder(nn.Module):
    """Sinusoidal features -> MLP (diffusers' PixArtAlphaCombinedTimestepSizeEmbeddings without
    size conditioning). Key prefix ``timestep_embedder``."""

    def __init__(self, dim: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.timestep_embedder = TimestepMLP(dim, ops=ops)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """t: (T,) timesteps already scaled to [0, 1000] -> (T, dim) in ``dtype``."""
        return self.timestep_embedder(sinusoidal_timestep_features(t).to(dtype))


def rope_storage(ops: Ops, activations: torch.dtype, *tables):
    """RoPE cos/sin tables (computed in fp32) in the dtype the attention reads them in: fp16 where
    the backend's qk_norm_rope reads fp16 (``ops.half_rope_tables``) and the activations are 16-bit,
    else fp32 (the references', and every fp32 model's: its parity stays exact). cos/sin lie in
    [-1, 1], so fp16 keeps 11 significant bits, below a 16-bit output's own rounding; it halves the
    tables' traffic. Returns the tables in order (None passes through)."""
    dtype = torch.float16 if ops.half_rope_tables and activations in (torch.bfloat16, torch.float16) \
        else torch.float32
    return tuple(None if t is None else t.to(dtype) for t in tables)


PIXEL_NORM_EPS = 1e-8


def pixel_norm(x: torch.Tensor, eps: float = PIXEL_NORM_EPS) -> torch.Tensor:
    """Parameter-free RMS over the channel dim (dim 1) of a (B, C, ...) tensor."""
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(1, keepdim=True) + eps)).to(x.dtype)
