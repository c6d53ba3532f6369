"""Latent tools both families use: diffusers' noise draw, packing (1, C, F, H, W) latents into
(1, F*H*W, C) tokens in (f, h, w) raster order and back, and the x2 latent upsampling."""

from __future__ import annotations

import torch

from ..models.latent_upsampler import adain_filter_latent, tone_map_latents

__all__ = ["pack", "randn", "unpack", "upsample_latents"]


def randn(shape, generator: torch.Generator | None, device, dtype=torch.float32) -> torch.Tensor:
    """diffusers' ``randn_tensor``: drawn on the generator's device, then moved."""
    gen_device = generator.device if generator is not None else torch.device(device)
    return torch.randn(shape, generator=generator, device=gen_device, dtype=dtype).to(device)


def pack(latents: torch.Tensor) -> torch.Tensor:
    b, c = latents.shape[:2]
    return latents.reshape(b, c, -1).transpose(1, 2)


def unpack(tokens: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    b = tokens.shape[0]
    return tokens.reshape(b, frames, height, width, -1).permute(0, 4, 1, 2, 3)


def upsample_latents(upsampler, vae, latents: torch.Tensor, adain_factor: float = 0.0,
                     tone_map_compression_ratio: float = 0.0) -> torch.Tensor:
    """LTXLatentUpsamplePipeline(latents=..., output_type="latent"): denormalize, x2, optional AdaIN
    towards the input statistics and tone map, renormalize."""
    dtype = next(upsampler.parameters()).dtype
    z = vae.denormalize_latents(latents.to(torch.float32)).to(dtype)
    up = upsampler(z)
    if adain_factor > 0.0:
        up = adain_filter_latent(up, z, adain_factor)
    if tone_map_compression_ratio > 0.0:
        up = tone_map_latents(up, tone_map_compression_ratio)
    return vae.normalize_latents(up)
