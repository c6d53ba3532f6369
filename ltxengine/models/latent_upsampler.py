"""LTX-Video latent upsampler (diffusers' ``LTXLatentUpsamplerModel``) and the two latent filters
of the two-stage pipeline (AdaIN statistics matching and sigmoid tone mapping).

Layout (parameter names equal diffusers' state-dict keys, so a diffusers folder loads with an
identity key map)::

    initial_conv  -> initial_norm -> SiLU
    res_blocks.{i}                 (conv1 -> norm1 -> SiLU -> conv2 -> norm2 -> +x -> SiLU)
    upsampler.0                    (conv to r * mid_channels) then a pixel shuffle by r
    post_upsample_res_blocks.{i}
    final_conv

``dims=3`` runs the res blocks and the initial/final convs as Conv3d over (F, H, W). The spatial
upsampler is always a per-frame Conv2d (frames folded into the batch); the temporal and the
spatio-temporal upsamplers are Conv3d and drop the first output frame, so F latent frames become
2F - 1 (the first latent frame of the causal VAE stands for a single pixel frame). ``dims=2``
runs everything per frame with Conv2d.

LTX-2 (diffusers' ``LTX2LatentUpsamplerModel``, ltx-core's ``LatentUpsampler``) adds the rational
spatial resampler (``use_rational_resampler``): ``upsampler.conv`` to num^2 * mid_channels, a pixel
shuffle by num, then a binomial blur with stride den (``upsampler.blur_down.kernel``, a buffer the
checkpoints contain) for a scale num/den in {3/4, 3/2, 2, 4}; at the released scale 2 the stride
is 1 and the blur is skipped. LTX-2.3's x2 upscaler drops the resampler again (``upsampler.0``, the
pixel shuffle), its x1.5 is the resampler at 3/2, and its temporal x2 is the Conv3d one above.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import LatentUpsamplerConfig, require
from ..ops import TORCH_OPS, Ops

__all__ = ["LatentUpsampler", "LTX2LatentUpsamplerConfig", "UPSAMPLER_LTX2", "UPSAMPLER_LTX23_X2",
           "UPSAMPLER_LTX23_X1_5", "UPSAMPLER_LTX23_TEMPORAL_X2", "UpsamplerResBlock", "PixelShuffleND",
           "RationalResampler", "adain_filter_latent", "tone_map_latents", "upsampler_kind", "upsampler_scales"]

# spatial scale -> (upsampling pixel-shuffle factor, blur-downsampling stride)
RATIONAL_SCALES = {0.75: (3, 4), 1.5: (3, 2), 2.0: (2, 1), 4.0: (4, 1)}


@dataclass(frozen=True)
class LTX2LatentUpsamplerConfig(LatentUpsamplerConfig):
    """LTX2LatentUpsamplerModel's config.json keys; defaults are the LTX-2.0 spatial x2 upscaler.

    ``rational_spatial_scale`` / ``use_rational_resampler`` only matter for a spatial-only
    upsampler (diffusers and ltx-core ignore them when temporal_upsample is set).
    """

    mid_channels: int = 1024
    rational_spatial_scale: float = 2.0
    use_rational_resampler: bool = True

    def validate(self, source: str) -> None:
        super().validate(source)
        require(self.rational_spatial_scale in RATIONAL_SCALES, source, "rational_spatial_scale",
                f"must be one of {sorted(RATIONAL_SCALES)}", self.rational_spatial_scale)


UPSAMPLER_LTX2 = LTX2LatentUpsamplerConfig()  # ltx-2-spatial-upscaler-x2-1.0
# LTX-2.3's three upscaler files. x2 (1.0 and 1.1): diffusers' converter config "2.3", the plain pixel
# shuffle (keys upsampler.0.*, no blur kernel). x1.5 and temporal x2 have no diffusers converter entry:
# the only x1.5 path in ltx-core is the rational resampler, and the released files' sizes fit these
# configs exactly (bf16 bytes = 2 x parameters + a 7.6-7.9 kB header; see test_ltx2_latent_upsampler.py).
UPSAMPLER_LTX23_X2 = LTX2LatentUpsamplerConfig(use_rational_resampler=False)  # ltx-2.3-spatial-upscaler-x2-1.1
UPSAMPLER_LTX23_X1_5 = LTX2LatentUpsamplerConfig(rational_spatial_scale=1.5)  # ltx-2.3-spatial-upscaler-x1.5-1.0
UPSAMPLER_LTX23_TEMPORAL_X2 = LTX2LatentUpsamplerConfig(  # ltx-2.3-temporal-upscaler-x2-1.0
    mid_channels=512, spatial_upsample=False, temporal_upsample=True, use_rational_resampler=False)


def upsampler_scales(config: LatentUpsamplerConfig) -> tuple[float, int]:
    """(factor on H and W, factor on time) of the upsampler ``LatentUpsampler(config)`` builds: the
    spatial one 2 or the rational resampler's num/den (1 for a temporal-only upsampler); the
    temporal one 2 (F latent frames -> 2F - 1) or 1. Read from the config alone, so a file's
    kind is known from its header before any weight is read."""
    temporal = 2 if config.temporal_upsample else 1
    if not config.spatial_upsample:
        return 1.0, temporal
    if temporal == 1 and getattr(config, "use_rational_resampler", False):
        num, den = RATIONAL_SCALES[config.rational_spatial_scale]
        return num / den, temporal
    return 2.0, temporal


def upsampler_kind(config: LatentUpsamplerConfig) -> str:
    """"spatial x2", "spatial x1.5", "temporal x2" or "spatial x2 + temporal x2"."""
    spatial, temporal = upsampler_scales(config)
    parts = ([f"spatial x{spatial:g}"] if spatial != 1 else []) + (["temporal x2"] if temporal == 2 else [])
    return " + ".join(parts)


def _conv(dims: int, in_channels: int, out_channels: int) -> nn.Module:
    conv_cls = nn.Conv2d if dims == 2 else nn.Conv3d
    return conv_cls(in_channels, out_channels, kernel_size=3, padding=1)


class UpsamplerResBlock(nn.Module):
    """conv1 -> GroupNorm(32) -> SiLU -> conv2 -> GroupNorm(32) -> SiLU(x + residual)."""

    def __init__(self, channels: int, dims: int = 3, ops: Ops = TORCH_OPS):
        super().__init__()
        self.conv1 = _conv(dims, channels, channels)
        self.norm1 = nn.GroupNorm(32, channels)
        self.conv2 = _conv(dims, channels, channels)
        self.norm2 = nn.GroupNorm(32, channels)
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + x)


class PixelShuffleND(nn.Module):
    """Depth-to-space over the trailing axes.

    mode "spatial"  : (N, C*2*2, H, W)      -> (N, C, 2H, 2W)
    mode "temporal" : (B, C*2, F, H, W)     -> (B, C, 2F, H, W)
    mode "both"     : (B, C*2*2*2, F, H, W) -> (B, C, 2F, 2H, 2W)

    The channel index decomposes as (c, p_1, ..., p_k) with c slowest, as in diffusers'
    ``PixelShuffleND`` (and einops ``b (c p1 p2) h w -> b c (h p1) (w p2)``).
    """

    def __init__(self, mode: str, factor: int = 2):
        super().__init__()
        if mode not in ("spatial", "temporal", "both"):
            raise ValueError(f"PixelShuffleND: mode must be 'spatial', 'temporal' or 'both', got {mode!r}")
        self.mode = mode
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.factor
        if self.mode == "spatial":
            n, c, h, w = x.shape
            x = x.reshape(n, c // (r * r), r, r, h, w)
            x = x.permute(0, 1, 4, 2, 5, 3)  # n c h p1 w p2
            return x.reshape(n, c // (r * r), h * r, w * r)
        if self.mode == "temporal":
            b, c, f, h, w = x.shape
            x = x.reshape(b, c // r, r, f, h, w)
            x = x.permute(0, 1, 3, 2, 4, 5)  # b c f p1 h w
            return x.reshape(b, c // r, f * r, h, w)
        b, c, f, h, w = x.shape
        x = x.reshape(b, c // (r ** 3), r, r, r, f, h, w)
        x = x.permute(0, 1, 5, 2, 6, 3, 7, 4)  # b c f p1 h p2 w p3
        return x.reshape(b, c // (r ** 3), f * r, h * r, w * r)


class BlurDownsample(nn.Module):
    """Depthwise 2D blur with stride ``stride`` (padding 2) using the stored 5x5 kernel; identity
    at stride 1. The kernel is a persistent buffer because checkpoints carry it."""

    def __init__(self, stride: int, kernel_size: int = 5):
        super().__init__()
        self.stride = stride
        taps = torch.tensor([math.comb(kernel_size - 1, i) for i in range(kernel_size)], dtype=torch.float32)
        kernel = taps[:, None] * taps[None, :]
        self.register_buffer("kernel", (kernel / kernel.sum())[None, None], persistent=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            return x
        c, k = x.shape[1], self.kernel.shape[-1]
        weight = self.kernel.to(x.dtype).expand(c, 1, k, k)
        return F.conv2d(x, weight, stride=self.stride, padding=k // 2, groups=c)


class RationalResampler(nn.Module):
    """Per-frame spatial scaling by num/den: conv to num^2 * C, pixel shuffle by num, blur-downsample
    by den. Input and output (N, C, H, W)."""

    def __init__(self, channels: int, scale: float):
        super().__init__()
        self.num, self.den = RATIONAL_SCALES[scale]
        self.conv = nn.Conv2d(channels, self.num ** 2 * channels, kernel_size=3, padding=1)
        self.pixel_shuffle = PixelShuffleND("spatial", factor=self.num)
        self.blur_down = BlurDownsample(self.den)

    def output_size(self, n: int) -> int:
        return n * self.num if self.den == 1 else (n * self.num - 1) // self.den + 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blur_down(self.pixel_shuffle(self.conv(x)))


class LatentUpsampler(nn.Module):
    """Upsamples LTX video latents (B, C, F, H, W), denormalized as the pipelines feed them, by 2 in
    time and/or by 2 (or the rational scale) in space."""

    def __init__(self, config: LatentUpsamplerConfig | LTX2LatentUpsamplerConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        config.validate("LatentUpsampler")
        self.config = config
        self.ops = ops
        dims, mid = config.dims, config.mid_channels
        self.dims = dims
        self.in_channels = config.in_channels
        self.spatial_upsample = config.spatial_upsample
        self.temporal_upsample = config.temporal_upsample

        self.initial_conv = _conv(dims, config.in_channels, mid)
        self.initial_norm = nn.GroupNorm(32, mid)
        self.res_blocks = nn.ModuleList(
            [UpsamplerResBlock(mid, dims=dims, ops=ops) for _ in range(config.num_blocks_per_stage)]
        )
        if config.spatial_upsample and config.temporal_upsample:
            self.upsampler = nn.Sequential(nn.Conv3d(mid, 8 * mid, kernel_size=3, padding=1), PixelShuffleND("both"))
        elif config.spatial_upsample and getattr(config, "use_rational_resampler", False):
            self.upsampler = RationalResampler(mid, config.rational_spatial_scale)
        elif config.spatial_upsample:
            self.upsampler = nn.Sequential(nn.Conv2d(mid, 4 * mid, kernel_size=3, padding=1), PixelShuffleND("spatial"))
        else:
            self.upsampler = nn.Sequential(nn.Conv3d(mid, 2 * mid, kernel_size=3, padding=1),
                                           PixelShuffleND("temporal"))
        self.post_upsample_res_blocks = nn.ModuleList(
            [UpsamplerResBlock(mid, dims=dims, ops=ops) for _ in range(config.num_blocks_per_stage)]
        )
        self.final_conv = _conv(dims, mid, config.in_channels)

    def output_shape(self, shape: tuple[int, int, int, int, int]) -> tuple[int, int, int, int, int]:
        """Shape of forward()'s result for an input of ``shape`` (B, C, F, H, W)."""
        b, c, f, h, w = shape
        if self.temporal_upsample:
            f = 2 * f - 1
        if isinstance(self.upsampler, RationalResampler):
            h, w = self.upsampler.output_size(h), self.upsampler.output_size(w)
        elif self.spatial_upsample:
            h, w = 2 * h, 2 * w
        return (b, c, f, h, w)

    @staticmethod
    def _fold_frames(x: torch.Tensor) -> torch.Tensor:
        # (B, C, F, H, W) -> (B*F, C, H, W)
        return x.permute(0, 2, 1, 3, 4).flatten(0, 1)

    @staticmethod
    def _unfold_frames(x: torch.Tensor, batch: int) -> torch.Tensor:
        # (B*F, C, H, W) -> (B, C, F, H, W)
        return x.unflatten(0, (batch, -1)).permute(0, 2, 1, 3, 4)

    def _stage(self, blocks: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for block in blocks:
            x = block(x)
        return x

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        if not isinstance(latents, torch.Tensor) or latents.dim() != 5:
            got = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"LatentUpsampler.forward: latents must be a 5-D tensor (B, C, F, H, W), got {got}")
        if latents.shape[1] != self.in_channels:
            raise ValueError(
                f"LatentUpsampler.forward: latents must have C == in_channels = {self.in_channels} channels "
                f"(dim 1 of (B, C, F, H, W)), got C = {latents.shape[1]} for shape {tuple(latents.shape)}"
            )
        batch = latents.shape[0]
        x = latents
        if self.dims == 2:
            x = self._fold_frames(x)
        x = F.silu(self.initial_norm(self.initial_conv(x)))
        x = self._stage(self.res_blocks, x)
        if self.dims == 2:
            x = self.upsampler(x)  # spatial only (config forbids dims=2 with temporal upsampling)
        elif self.temporal_upsample:
            x = self.upsampler(x)[:, :, 1:]
        else:
            x = self._unfold_frames(self.upsampler(self._fold_frames(x)), batch)
        x = self._stage(self.post_upsample_res_blocks, x)
        x = self.final_conv(x)
        if self.dims == 2:
            x = self._unfold_frames(x, batch)
        return x


def _check_real(name: str, value, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a real number in [{low}, {high}], got {value!r}")
    value = float(value)
    if not math.isfinite(value) or not (low <= value <= high):
        raise ValueError(f"{name} must be in the range [{low}, {high}], got {value!r}")
    return value


def adain_filter_latent(latents: torch.Tensor, reference: torch.Tensor, factor: float = 1.0) -> torch.Tensor:
    """AdaIN: give each (batch, channel) slice of ``latents`` the mean and (unbiased) std of the same
    slice of ``reference``, then blend: ``lerp(latents, matched, factor)``.

    Same as diffusers' ``LTXLatentUpsamplePipeline.adain_filter_latent`` (which loops over the
    slices; this computes the same per-slice statistics in one reduction). ``reference`` may have
    a different (F, H, W) size, e.g. the latents before upsampling. ``factor`` must lie in
    [-10, 10] (the range diffusers documents); the pipeline applies the filter only when
    factor > 0.
    """
    factor = _check_real("adain_filter_latent: factor", factor, -10.0, 10.0)
    for name, t in (("latents", latents), ("reference", reference)):
        if not isinstance(t, torch.Tensor) or t.dim() < 3:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"adain_filter_latent: {name} must be a tensor (B, C, ...) with at least 3 dims, got {got}")
    if latents.shape[:2] != reference.shape[:2]:
        raise ValueError(
            "adain_filter_latent: reference must have the same (B, C) as latents, "
            f"got reference {tuple(reference.shape)} for latents {tuple(latents.shape)}"
        )
    if reference[0, 0].numel() < 2 or latents[0, 0].numel() < 2:
        raise ValueError(
            "adain_filter_latent: every (B, C) slice of latents and reference needs at least 2 elements for an "
            f"unbiased std, got latents {tuple(latents.shape)} and reference {tuple(reference.shape)}"
        )
    stat_shape = latents.shape[:2] + (1,) * (latents.dim() - 2)
    r_sd, r_mean = torch.std_mean(reference.flatten(2), dim=-1)
    i_sd, i_mean = torch.std_mean(latents.flatten(2), dim=-1)
    r_sd, r_mean = r_sd.view(stat_shape), r_mean.view(stat_shape)
    i_sd, i_mean = i_sd.view(stat_shape), i_mean.view(stat_shape)
    matched = ((latents - i_mean) / i_sd) * r_sd + r_mean
    return torch.lerp(latents, matched, factor)


def tone_map_latents(latents: torch.Tensor, compression: float) -> torch.Tensor:
    """Sigmoid tone map: ``latents * (1 - 0.8 * s * sigmoid(4 * s * (|latents| - 1)))`` with
    ``s = 0.75 * compression``; ``compression`` in [0, 1] (0 is the identity), as diffusers'
    ``LTXLatentUpsamplePipeline.tone_map_latents`` / ``check_inputs``."""
    compression = _check_real("tone_map_latents: compression", compression, 0.0, 1.0)
    if not isinstance(latents, torch.Tensor):
        raise ValueError(f"tone_map_latents: latents must be a tensor, got {type(latents).__name__}")
    scale_factor = compression * 0.75
    sigmoid_term = torch.sigmoid(4.0 * scale_factor * (torch.abs(latents) - 1.0))
    scales = 1.0 - 0.8 * scale_factor * sigmoid_term
    return latents * scales
