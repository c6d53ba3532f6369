"""generate(decoder="diffusion"): the video decoded by LTX-2.5's diffusion video decoder
(models/ltx2_diffusion_decoder.py) instead of the conv VAE decoder, the default.

It is diffusers' LTX2VideoDiffusionDecodePipeline on the generation's latents: the normalized latents
denormalized with the VAE's statistics (the pipeline's ``vae``; the decoder's own without one, as
its vae-less fallback), decoded with noise drawn from the generation's generator (after every draw
of the denoising, as the conv decoder's decode noise is), post-processed as the conv decoder's
output. The engine loads the decoder when its diffusers folder has a
``diffusion_decoder/`` component (loading.ltx2.OPTIONAL_SPECS).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..components.decode import check_finite, video_to_frames

DECODERS = ("conv", "diffusion")


def load_optional_decoder(path: Path, device, dtype, ops, vae=None):
    """The diffusion decoder of a diffusers folder whose model_index.json lists one, else None; its
    latent width and compression ratios must be the VAE's (one latent space, the same frames)."""
    index = path / "model_index.json"
    if not path.is_dir() or not index.is_file() or "diffusion_decoder" not in json.loads(index.read_text()):
        return None
    from ..loading import CheckpointError
    from ..loading.ltx2 import load_ltx2_component
    decoder = load_ltx2_component(path / "diffusion_decoder", "diffusion_decoder", device, dtype, ops)
    if vae is not None:
        cfg = decoder.config
        ours = (cfg.latent_channels, cfg.spatial_compression_ratio, cfg.temporal_compression_ratio)
        theirs = (vae.config.latent_channels, vae.spatial_compression_ratio, vae.temporal_compression_ratio)
        if ours != theirs:
            raise CheckpointError(f"{path / 'diffusion_decoder'}: (latent channels, spatial, temporal compression) "
                                  f"{ours} differ from the VAE's {theirs}")
    return decoder.eval().requires_grad_(False)


def check_decoder(engine, a: dict) -> None:
    """generate's ``decoder``: None / "conv" (the VAE's decoder) or "diffusion" (needs the loaded
    decoder, a clip its attention windows fit, and none of the conv decoder's noise options;
    vae_tiling tiles it as diffusers' enable_tiling, models/ltx2_diffusion_tiling.py). After
    latent_io.check_latent_io, which refuses any decoder with output_type='latent'."""
    decoder = a.get("decoder")
    if decoder is not None and decoder not in DECODERS:
        raise ValueError(f"decoder must be one of {DECODERS} or None (the conv decoder), got {decoder!r}")
    if decoder != "diffusion":
        return
    if getattr(engine, "diffusion_decoder", None) is None:
        raise ValueError("decoder='diffusion' needs LTX-2.5's diffusion video decoder, which this engine has not "
                         "loaded (a diffusers folder with a diffusion_decoder/ component loads it)")
    for k in ("decode_timestep", "decode_noise_scale"):
        if a.get(k) is not None:
            raise ValueError(f"{k} configures the conv decoder, which decoder='diffusion' does not run, got "
                             f"{k}={a[k]!r}")
    cfg = engine.diffusion_decoder.config
    latent = ((a["num_frames"] - 1) // cfg.temporal_compression_ratio + 1,
              a["height"] // cfg.spatial_compression_ratio, a["width"] // cfg.spatial_compression_ratio)
    for stage, grid, kernel in stage_grids(cfg, latent):
        if any(n < k for n, k in zip(grid, kernel)):
            raise ValueError(f"decoder='diffusion': num_frames={a['num_frames']}, height={a['height']}, "
                             f"width={a['width']} give stage {stage} of the decoder a (T, H, W) grid {grid}, smaller "
                             f"than its attention window {kernel}; generate a longer or larger clip")


def stage_grids(cfg, latent: tuple[int, int, int]):
    """(stage, token grid, attention kernel) of each decoder stage for a latent (T, H, W)."""
    t, h, w = latent
    t += (cfg.decoder_stage_kernels[0][0] // 2) * 2  # the ghost frames
    grid, out = (t, h, w), []
    for i, kernel in enumerate(cfg.decoder_stage_kernels):
        out.append((i + 1, grid, tuple(kernel)))
        stride = cfg.decoder_upsample_strides[i]
        grid = tuple(n * s for n, s in zip(grid, stride))
        if stride[0] == 2:
            grid = (grid[0] - 1, *grid[1:])
    pad = (cfg.decoder_stage_kernels[0][0] // 2) * 2 * cfg.temporal_compression_ratio
    out.append((len(out) + 1, (grid[0] - pad, *grid[1:]), tuple(cfg.decoder_stage5_kernel)))
    return out


def diffusion_frames(decoder, latents: torch.Tensor, generator, vae=None, tiling=None) -> torch.Tensor:
    """Normalized latents (1, C, F', H', W') -> frames (F, H, W, 3) float32 in [0, 1] on the device;
    denormalized with ``vae``'s statistics, or the decoder's without one; ``tiling`` a TilingConfig."""
    dtype = next(decoder.parameters()).dtype
    z = vae.denormalize_latents(latents) if vae is not None else decoder.denormalize(latents)
    return video_to_frames(decoder.decode(z.to(dtype), generator=generator, tiling=tiling))


def diffusion_host_chunks(decoder, latents: torch.Tensor, generator, vae=None, tiling=None):
    """``diffusion_frames`` as the one host chunk a streamed output writes (tiles are blended
    across frames, so the clip comes out whole)."""
    yield check_finite(diffusion_frames(decoder, latents, generator, vae, tiling).cpu().numpy(), "decode")
