"""LTX-2.5's diffusion video decoder (diffusers: LTX2VideoDiffusionDecoderModel; Lightricks' ltx-core:
DiffusionVideoDecoder): a one-step neighbourhood-attention DiT that turns video latents into pixels.

Stages 1-4 upsample the latent deterministically (pre-norm neighbourhood-attention blocks, each
followed by a linear pixel shuffle) into a context volume; stage 5 denoises patchified Gaussian noise
in pixel space with AdaLN-modulated blocks that add the context through ``context_proj``. The
release predicts x0 in one step, so stage 5 runs once. The last latent frame is replicated
``(stage-1 kernel_t // 2) * 2`` times through stages 1-4 and cropped before stage 5, which moves the
window shift at the end of the clip past the kept frames (as both references do).

Neighbourhood attention (NATTEN's ``na3d``, no dilation, non-causal): each query attends to a
``kernel``-sized box centred on it and shifted inward at the grid borders, so it always holds exactly
``kernel`` positions per axis. ``neighborhood_attention`` computes it in plain torch on query tiles
against the box their windows span, so memory stays bounded by the tile rather than the grid.

Parameter and buffer names are diffusers' state-dict keys; ``decode`` takes denormalized latents as
diffusers' ``decode`` does (``denormalize`` applies the latent statistics the model carries).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import require
from ..ops import TORCH_OPS, Ops
from .common import OpsLinear, TimestepEmbedder
from .ltx2_diffusion_tiling import needs_tiling, tiled_decode

__all__ = ["LTX2DiffusionDecoder", "LTX2DiffusionDecoderConfig", "neighborhood_attention", "count_parameters"]

_ADALN_CHUNKS = 7  # the reference's shift/scale/gate x (attention, MLP) + a context gate; 4 are read
_SWIGLU_TILE = 16384  # tokens per MLP tile (diffusers' and the reference's): bounds the hidden-width temporaries


@dataclass(frozen=True)
class LTX2DiffusionDecoderConfig:
    """LTX2VideoDiffusionDecoderModel's config.json keys; the defaults are the LTX-2.5 release
    (diffusers' class defaults, which its converter writes for ``ltx-2.5-video-vae``)."""

    out_channels: int = 3  # RGB
    latent_channels: int = 128
    patch_size: int = 4  # stage-5 space-to-depth of the pixels (H and W only)
    scaling_factor: float = 1.0  # latents = normalized * std / scaling_factor + mean
    decoder_head_dim: int = 64  # every stage's attention heads
    decoder_stage_channels: tuple[int, ...] = (2048, 1024, 512, 512, 256)  # stages 1-4, then stage 5 (context)
    decoder_stage_depths: tuple[int, ...] = (4, 6, 4, 2, 8)  # blocks per stage, stage 5 last
    decoder_stage_kernels: tuple[tuple[int, int, int], ...] = ((3, 7, 7), (3, 7, 7), (3, 5, 5), (3, 5, 5))
    decoder_upsample_strides: tuple[tuple[int, int, int], ...] = ((1, 2, 2), (2, 1, 1), (2, 2, 2), (2, 2, 2))
    decoder_upsample_channel_reductions: tuple[int, ...] = (2, 2, 1, 2)  # width divisor of each upsample
    decoder_stage5_kernel: tuple[int, int, int] = (11, 11, 11)
    decoder_t_emb_dim: int = 384
    decoder_timestep_scale_multiplier: float = 1000.0  # sigma in [0, 1] -> the embedder's timestep
    decoder_model_output_type: str = "x0"  # "x0" or "v" (velocity)
    decoder_num_inference_steps: int = 1  # the release's one step
    spatial_compression_ratio: int = 32  # pixels per latent: the upsamples' H/W strides x patch_size
    temporal_compression_ratio: int = 8  # frames per latent frame: the upsamples' T strides

    def validate(self, source: str) -> None:
        n = len(self.decoder_upsample_strides)
        for key in ("decoder_stage_channels", "decoder_stage_depths"):
            require(len(getattr(self, key)) == n + 1, source, key, f"needs {n + 1} entries (one per upsample + "
                    "stage 5)", getattr(self, key))
        for key in ("decoder_stage_kernels", "decoder_upsample_channel_reductions"):
            require(len(getattr(self, key)) == n, source, key, f"needs {n} entries (one per upsample)",
                    getattr(self, key))
        require(n > 0, source, "decoder_upsample_strides", "needs at least one entry", self.decoder_upsample_strides)
        ch = self.decoder_stage_channels
        for i, red in enumerate(self.decoder_upsample_channel_reductions):
            require(ch[i] % red == 0 and ch[i + 1] == ch[i] // red, source, "decoder_stage_channels",
                    f"entry {i + 1} must be entry {i} / decoder_upsample_channel_reductions[{i}] = {ch[i]} / {red}",
                    ch)
        require(self.decoder_head_dim % 8 == 0, source, "decoder_head_dim", "must be a multiple of 8 (the 3D "
                "RoPE's split)", self.decoder_head_dim)
        require(all(c % self.decoder_head_dim == 0 for c in ch), source, "decoder_stage_channels",
                f"entries must be multiples of decoder_head_dim {self.decoder_head_dim}", ch)
        require(self.decoder_model_output_type in ("x0", "v"), source, "decoder_model_output_type",
                "must be 'x0' or 'v'", self.decoder_model_output_type)
        st, sh, sw = (math.prod(s[i] for s in self.decoder_upsample_strides) for i in range(3))
        require(sh == sw and sh * self.patch_size == self.spatial_compression_ratio, source,
                "spatial_compression_ratio", f"must be the upsamples' H and W stride ({sh}, {sw}) x patch_size "
                f"{self.patch_size}", self.spatial_compression_ratio)
        require(st == self.temporal_compression_ratio, source, "temporal_compression_ratio",
                f"must be the upsamples' T stride {st}", self.temporal_compression_ratio)


# -- neighbourhood attention -------------------------------------------------------------------

def _window_start(q: int, n: int, kernel: int) -> int:
    """First key index of query q's window along an axis of length n: centred, shifted inward."""
    return min(max(q - kernel // 2, 0), n - kernel)


def neighborhood_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kernel: tuple[int, int, int],
                           query_tile: tuple[int, int, int] | None = None) -> torch.Tensor:
    """3D neighbourhood attention with NATTEN's window (see the module docstring), scale 1 (q comes
    pre-scaled). q, k, v: (B, T, H, W, heads, D) -> (B, T, H, W, heads * D).

    Queries go in tiles of ``query_tile`` (default: the kernel) against the box of keys their windows
    span, masked to each query's window: the same scores, only the needed ones computed. Index
    arithmetic is in Python, so the memory planner's fake tensors run it too."""
    b, *grid, heads, d = q.shape
    for n, kk in zip(grid, kernel):
        if n < kk:
            raise ValueError(f"neighborhood attention needs every (T, H, W) dim at least its kernel size; got "
                             f"{tuple(grid)} with kernel {tuple(kernel)}")
    tile = query_tile or kernel
    out = q.new_empty(b, *grid, heads, d)
    for t0 in range(0, grid[0], tile[0]):
        for h0 in range(0, grid[1], tile[1]):
            for w0 in range(0, grid[2], tile[2]):
                _attend_tile(q, k, v, out, kernel, (t0, h0, w0), tile)
    return out.flatten(-2)


def _axis_mask(q0: int, q1: int, n: int, kernel: int, device) -> tuple[slice, slice, torch.Tensor]:
    """Queries [q0, q1) of an axis: their slice, the key slice their windows span, the window mask."""
    k0, k1 = _window_start(q0, n, kernel), _window_start(q1 - 1, n, kernel) + kernel
    starts = (torch.arange(q0, q1, device=device) - kernel // 2).clamp(0, n - kernel)[:, None]
    keys = torch.arange(k0, k1, device=device)[None]
    return slice(q0, q1), slice(k0, k1), (keys >= starts) & (keys < starts + kernel)


def _attend_tile(q, k, v, out, kernel, origin, tile) -> None:
    grid = q.shape[1:4]
    (qt, kt, mt), (qh, kh, mh), (qw, kw, mw) = (
        _axis_mask(o, min(o + size, n), n, kk, q.device) for o, size, n, kk in zip(origin, tile, grid, kernel))
    mask = (mt[:, None, None, :, None, None] & mh[None, :, None, None, :, None] & mw[None, None, :, None, None, :])
    shape_q = mask.shape[:3]
    mask = mask.reshape(shape_q.numel(), -1)
    query = q[:, qt, qh, qw].flatten(1, 3).transpose(1, 2)  # (B, heads, queries, D)
    key, value = (x[:, kt, kh, kw].flatten(1, 3).transpose(1, 2) for x in (k, v))  # (B, heads, box, D)
    o = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, scale=1.0)
    out[:, qt, qh, qw] = o.transpose(1, 2).unflatten(1, tuple(shape_q))


class Rope3D(nn.Module):
    """Absolute 3D RoPE on the tensor's own (T, H, W) indices, rotating interleaved pairs; head_dim is
    split a quarter to T (kept even), the rest halved between H and W (each even). fp32 angles."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        dim_t = (head_dim // 4) // 2 * 2
        dim_hw = (head_dim - dim_t) // 2
        if dim_hw % 2:
            dim_t -= 2
            dim_hw = (head_dim - dim_t) // 2
        self.split = (dim_t, dim_hw, dim_hw)
        self.base = base

    def _rotate(self, x: torch.Tensor, axis: int) -> torch.Tensor:
        dim, n = x.shape[-1], x.shape[axis]
        # frequencies in float64 then cast once, as the reference builds them
        inv = (1.0 / self.base ** (torch.arange(0, dim, 2, dtype=torch.float64, device=x.device) / dim)).float()
        shape = [1] * 5 + [inv.shape[0]]
        shape[axis] = n
        angles = (torch.arange(n, dtype=torch.float32, device=x.device)[:, None] * inv[None]).reshape(shape)
        cos, sin = angles.cos(), angles.sin()
        pairs = x.unflatten(-1, (-1, 2))
        even, odd = pairs[..., 0].float(), pairs[..., 1].float()
        return torch.stack([even * cos - odd * sin, even * sin + odd * cos], dim=-1).reshape(x.shape).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, T, H, W, heads, head_dim)."""
        parts = x.split(self.split, dim=-1)  # a head_dim of 8 leaves T no pairs
        return torch.cat([self._rotate(p, axis) if p.shape[-1] else p for axis, p in zip((1, 2, 3), parts)], dim=-1)


class NeighborhoodAttention(nn.Module):
    """Q/K/V with biases, per-head RMS norm of q and k, q scaled by head_dim^-0.5, then RoPE; keys
    to_q / to_k / to_v / to_out.0 / norm_q / norm_k."""

    def __init__(self, dim: int, kernel: tuple[int, int, int], head_dim: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.heads, self.head_dim, self.kernel = dim // head_dim, head_dim, tuple(kernel)
        self.to_q, self.to_k, self.to_v = (OpsLinear(dim, dim, ops=ops) for _ in range(3))
        self.to_out = nn.ModuleList([OpsLinear(dim, dim, ops=ops)])
        self.norm_q = nn.RMSNorm(head_dim, eps=1e-6)
        self.norm_k = nn.RMSNorm(head_dim, eps=1e-6)
        self.rope = Rope3D(head_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last (B, T, H, W, C) in and out."""
        shape = (*x.shape[:-1], self.heads, self.head_dim)
        q = self.norm_q(self.to_q(x).view(shape)) * self.head_dim ** -0.5
        k = self.norm_k(self.to_k(x).view(shape))
        v = self.to_v(x).view(shape)
        return self.to_out[0](neighborhood_attention(self.rope(q), self.rope(k), v, self.kernel))


class SwiGLU(nn.Module):
    """w_down(silu(w_gate(x)) * w_up(x)), no biases, over tiles of _SWIGLU_TILE tokens (pointwise per
    token, so tiling bounds memory without changing what is computed)."""

    def __init__(self, dim: int, mlp_ratio: float = 4.0, ops: Ops = TORCH_OPS):
        super().__init__()
        hidden = (int(dim * mlp_ratio) + 15) // 16 * 16
        self.w_up = OpsLinear(dim, hidden, bias=False, ops=ops)
        self.w_gate = OpsLinear(dim, hidden, bias=False, ops=ops)
        self.w_down = OpsLinear(hidden, dim, bias=False, ops=ops)

    def _mlp(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1, x.shape[-1])
        if flat.shape[1] <= _SWIGLU_TILE:
            return self._mlp(x)
        out = torch.empty_like(flat)
        for s in range(0, flat.shape[1], _SWIGLU_TILE):
            out[:, s:s + _SWIGLU_TILE] = self._mlp(flat[:, s:s + _SWIGLU_TILE])
        return out.reshape(x.shape)


class NABlock(nn.Module):
    """Deterministic stages' pre-norm block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, dim: int, kernel, head_dim: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.norm1 = nn.RMSNorm(dim, eps=1e-6)
        self.attn = NeighborhoodAttention(dim, kernel, head_dim, ops)
        self.norm2 = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, ops=ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DiffusionNABlock(nn.Module):
    """Stage-5 block: the context added through context_proj, then NABlock's two residuals with the
    norms' outputs modulated by the shared AdaLN chunks plus this block's scale_shift_table
    (ungated: the reference's static gates are folded into the weights at conversion)."""

    def __init__(self, dim: int, kernel, head_dim: int, context_channels: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.context_proj = OpsLinear(context_channels, dim, ops=ops)
        self.scale_shift_table = nn.Parameter(torch.zeros(_ADALN_CHUNKS, dim))
        self.norm1 = nn.RMSNorm(dim, eps=1e-6)
        self.attn = NeighborhoodAttention(dim, kernel, head_dim, ops)
        self.norm2 = nn.RMSNorm(dim, eps=1e-6)
        self.mlp = SwiGLU(dim, ops=ops)

    def forward(self, x: torch.Tensor, context: torch.Tensor, modulation: torch.Tensor) -> torch.Tensor:
        """modulation: (B, 7, C), the shared AdaLN's chunks."""
        mod = (modulation + self.scale_shift_table)[:, :, None, None, None, :]  # (B, 7, 1, 1, 1, C)
        scale_msa, shift_msa, scale_mlp, shift_mlp = mod[:, 0], mod[:, 1], mod[:, 3], mod[:, 4]
        x = x + self.context_proj(context)
        x = x + self.attn(self.norm1(x) * (1 + scale_msa) + shift_msa)
        return x + self.mlp(self.norm2(x) * (1 + scale_mlp) + shift_mlp)


class PixelShuffleUpsample(nn.Module):
    """Linear to prod(stride) x the output width, then depth-to-space (channels-last); a temporal
    stride 2 drops the duplicate leading frame (the causal 1 -> 1 + 2 (T - 1) frame mapping)."""

    def __init__(self, channels: int, stride: tuple[int, int, int], reduction: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.stride = tuple(stride)
        self.out_channels = channels // reduction
        self.proj = OpsLinear(channels, math.prod(self.stride) * self.out_channels, ops=ops)

    def forward(self, x: torch.Tensor, drop_leading_frame: bool = True) -> torch.Tensor:
        """``drop_leading_frame=False``: a temporal tile not at t = 0 (its first frame is interior)."""
        b, t, h, w, _ = x.shape
        st, sh, sw = self.stride
        x = self.proj(x).reshape(b, t, h, w, self.out_channels, st, sh, sw)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, t * st, h * sh, w * sw, self.out_channels)
        return x[:, 1:] if st == 2 and drop_leading_frame else x


class AdaLNZero(nn.Module):
    """proj(silu(t_emb)) -> (B, 7, C)."""

    def __init__(self, dim: int, t_emb_dim: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.proj = OpsLinear(t_emb_dim, _ADALN_CHUNKS * dim, ops=ops)

    def forward(self, t_emb: torch.Tensor) -> torch.Tensor:
        return self.proj(F.silu(t_emb)).unflatten(-1, (_ADALN_CHUNKS, -1))


def _patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, C p p, F, H/p, W/p), channels packed (c, w offset, h offset)."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, f, h // p, w // p)


def _unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    b, c, f, h, w = x.shape
    x = x.reshape(b, c // (p * p), p, p, f, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c // (p * p), f, h * p, w * p)


class _Decoder(nn.Module):
    """The module tree under diffusers' ``decoder.`` prefix."""

    def __init__(self, cfg: LTX2DiffusionDecoderConfig, ops: Ops):
        super().__init__()
        ch, hd = cfg.decoder_stage_channels, cfg.decoder_head_dim
        self.conv_in = OpsLinear(cfg.latent_channels, ch[0], ops=ops)
        self.det_stages = nn.ModuleList(
            nn.ModuleList(NABlock(ch[i], cfg.decoder_stage_kernels[i], hd, ops) for _ in range(depth))
            for i, depth in enumerate(cfg.decoder_stage_depths[:-1]))
        self.upsamples = nn.ModuleList(
            PixelShuffleUpsample(ch[i], stride, cfg.decoder_upsample_channel_reductions[i], ops)
            for i, stride in enumerate(cfg.decoder_upsample_strides))
        self.t_embedder = TimestepEmbedder(cfg.decoder_t_emb_dim, ops)
        pixel_channels = cfg.out_channels * cfg.patch_size ** 2
        self.conv_in_x_t = OpsLinear(pixel_channels, ch[-1], ops=ops)
        self.shared_adaln = AdaLNZero(ch[-1], cfg.decoder_t_emb_dim, ops)
        self.diff_blocks = nn.ModuleList(DiffusionNABlock(ch[-1], cfg.decoder_stage5_kernel, hd, ch[-1], ops)
                                         for _ in range(cfg.decoder_stage_depths[-1]))
        self.norm_out = nn.RMSNorm(ch[-1], eps=1e-6)
        self.conv_out = OpsLinear(ch[-1], pixel_channels, ops=ops)


class LTX2DiffusionDecoder(nn.Module):
    """The diffusion decoder; ``decode`` maps denormalized latents (B, C, T, H, W) to pixels
    (B, 3, 8 (T - 1) + 1, 32 H, 32 W) in [-1, 1] (released config)."""

    def __init__(self, config: LTX2DiffusionDecoderConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        config.validate(type(self).__name__)
        self.config = config
        self.decoder = _Decoder(config, ops)
        self.register_buffer("latents_mean", torch.zeros(config.latent_channels))
        self.register_buffer("latents_std", torch.ones(config.latent_channels))
        # ghost frames: the replicated last latent frame that carries the window shift past the clip's end
        self.trailing_pad = (config.decoder_stage_kernels[0][0] // 2) * 2

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """Normalized latents (what the DiT produces) -> the latents ``decode`` reads."""
        view = (1, -1, 1, 1, 1)
        mean, std = (s.view(view).to(latents.device, latents.dtype) for s in (self.latents_mean, self.latents_std))
        return latents * std / self.config.scaling_factor + mean

    def context(self, z: torch.Tensor) -> torch.Tensor:
        """Stages 1-4: latents (B, C, T, H, W) -> the stage-5 context (B, T5, H5, W5, C5), channels-last."""
        return self.last_stage(self.first_stages(z))

    def first_stages(self, z: torch.Tensor) -> torch.Tensor:
        """All deterministic stages but the last, ghost frames included: latents -> (B, T, H, W, C)."""
        d, pad = self.decoder, self.trailing_pad
        if pad:
            z = torch.cat([z, z[:, :, -1:].expand(-1, -1, pad, -1, -1)], dim=2)
        x = d.conv_in(z.permute(0, 2, 3, 4, 1))
        for blocks, upsample in zip(d.det_stages[:-1], d.upsamples[:-1]):
            for block in blocks:
                x = block(x)
            x = upsample(x)
        return x

    def last_stage(self, x: torch.Tensor, drop_leading_frame: bool = True, crop_ghosts: bool = True) -> torch.Tensor:
        """The last deterministic stage -> the context; a temporal tile keeps its leading frame unless
        it holds t = 0 and crops the ghost frames only if it holds the clip's end (tiling.py)."""
        d = self.decoder
        for block in d.det_stages[-1]:
            x = block(x)
        x = d.upsamples[-1](x, drop_leading_frame)
        ghosts = self.trailing_pad * self.config.temporal_compression_ratio if crop_ghosts else 0
        return x[:, :x.shape[1] - ghosts]

    def predict(self, context: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """One stage-5 evaluation at sigma (B,) on pixels x_t (B, 3, F, H, W): the model output."""
        d, p = self.decoder, self.config.patch_size
        t_emb = d.t_embedder(self.config.decoder_timestep_scale_multiplier * sigma, context.dtype)
        modulation = d.shared_adaln(t_emb)
        x = d.conv_in_x_t(_patchify(x_t, p).permute(0, 2, 3, 4, 1))
        for block in d.diff_blocks:
            x = block(x, context, modulation)
        x = d.conv_out(d.norm_out(x))
        return _unpatchify(x.permute(0, 4, 1, 2, 3).contiguous(), p)

    def denoise(self, context: torch.Tensor, x_t: torch.Tensor, num_inference_steps: int) -> torch.Tensor:
        """Sigmas 1 -> 1/n evenly, Euler in fp32 (x0 outputs turned into velocities); a one-step x0
        model returns its prediction."""
        b, n = x_t.shape[0], num_inference_steps
        sigmas = torch.linspace(1.0, 1.0 / n, n, device=x_t.device, dtype=torch.float32)
        x0 = self.config.decoder_model_output_type == "x0"
        if n == 1 and x0:
            return self.predict(context, x_t, sigmas[:1].expand(b))
        view = (-1, 1, 1, 1, 1)
        for i in range(n):
            now = sigmas[i].expand(b)
            nxt = sigmas[i + 1].expand(b) if i + 1 < n else torch.zeros_like(now)
            out, xf = self.predict(context, x_t, now).float(), x_t.float()
            if x0:
                out = (xf - out) / now.view(view)
            x_t = (xf - (now - nxt).view(view) * out).to(x_t.dtype)
        return x_t

    def decode(self, z: torch.Tensor, generator: torch.Generator | None = None,
               num_inference_steps: int | None = None, tiling=None) -> torch.Tensor:
        """Denormalized latents -> pixels. The noise is one draw of the pixel shape from ``generator``
        in z's dtype, on the generator's device (z's without one), as diffusers' randn_tensor draws it.
        ``tiling``: a video_vae.TilingConfig (e.g. ltx2_diffusion_tiling.DIFFUSION_TILING, the
        reference's), used when the latent exceeds one tile, as diffusers' enable_tiling."""
        n = num_inference_steps or self.config.decoder_num_inference_steps
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {n!r}")
        if tiling is not None and needs_tiling(self, z, tiling):
            return tiled_decode(self, z, generator, n, tiling)
        context = self.context(z)
        p = self.config.patch_size
        shape = (z.shape[0], self.config.out_channels, context.shape[1], context.shape[2] * p, context.shape[3] * p)
        where = generator.device if generator is not None else z.device
        x_t = torch.randn(shape, generator=generator, device=where, dtype=z.dtype).to(z.device)
        return self.denoise(context, x_t, n)


def count_parameters(cfg: LTX2DiffusionDecoderConfig) -> int:
    """Parameters of the decoder with config ``cfg`` (built on the meta device)."""
    with torch.device("meta"):
        model = LTX2DiffusionDecoder(cfg)
    return sum(p.numel() for p in model.parameters())
