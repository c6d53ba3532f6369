"""LTX-Video 0.9.x sampling: text-to-video, image-to-video, multi-condition, latent upsampling and
decoding, reproducing diffusers' LTXPipeline, LTXImageToVideoPipeline, LTXConditionPipeline and
LTXLatentUpsamplePipeline step for step, random draw for random draw.

Latents here are the transformer's normalized latents, (1, C, F, H, W) float32, unless packed
(1, F*H*W, C) in (f, h, w) raster order. Every random draw takes the caller's generator in the
order diffusers makes it, on the generator's device, so a CPU generator gives the same video on
any device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from ..models.latent_upsampler import adain_filter_latent, tone_map_latents
from ..models.transformer import coords_positions, grid_positions
from .schedule import Schedule

__all__ = [
    "Guidance",
    "StepHook",
    "decode_latents",
    "encode_condition",
    "pack",
    "sample_condition",
    "sample_image_to_video",
    "sample_text_to_video",
    "unpack",
    "upsample_latents",
]

# hook(step, total, timestep, latents (1, C, F, H, W)): called after every step; raises to stop the loop
StepHook = Callable[[int, int, float, torch.Tensor], None]


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


# -- guidance ------------------------------------------------------------------------------------

class Guidance:
    """The transformer call of one step with classifier-free guidance and rescale.

    The text context ([negative, positive] when guiding) is projected once; RoPE tables are set
    per sampling call. Velocities come back as float32.
    """

    def __init__(self, transformer, embeds: torch.Tensor, mask: torch.Tensor,
                 negative_embeds: torch.Tensor | None, negative_mask: torch.Tensor | None,
                 guidance_scale: float, guidance_rescale: float):
        self.transformer = transformer
        self.scale = float(guidance_scale)
        self.rescale = float(guidance_rescale)
        self.do_cfg = self.scale > 1.0
        self.dtype = next(transformer.parameters()).dtype
        if self.do_cfg:
            embeds = torch.cat([negative_embeds, embeds], dim=0)
            mask = torch.cat([negative_mask, mask], dim=0)
        self.context = transformer.prepare_context(embeds.to(self.dtype), mask)
        self.rope = None

    @property
    def batch(self) -> int:
        return 2 if self.do_cfg else 1

    def set_positions(self, positions: torch.Tensor) -> None:
        self.rope = self.transformer.rope(positions)

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """x (1, N, C) float32; timestep (B,) or (B, N) for the batched branches -> velocity (1, N, C)."""
        inp = torch.cat([x, x]) if self.do_cfg else x
        v = self.transformer(inp.to(self.dtype), timestep, context=self.context, rope=self.rope).float()
        if not self.do_cfg:
            return v
        v_uncond, v_text = v.chunk(2)
        v = v_uncond + self.scale * (v_text - v_uncond)
        if self.rescale > 0:
            dims = list(range(1, v.ndim))
            std_text = v_text.std(dim=dims, keepdim=True)
            std_cfg = v.std(dim=dims, keepdim=True)
            v = self.rescale * (v * (std_text / std_cfg)) + (1 - self.rescale) * v
        return v


def _check_finite(x: torch.Tensor, stage: str, step: int, total: int) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{stage}: latents became non-finite (nan/inf) at step {step}/{total}; "
                                 f"the model or its inputs produced overflow (try dtype=torch.float32 or check "
                                 f"the weights)")


# -- text-to-video (LTXPipeline) --------------------------------------------------------------------

def sample_text_to_video(guide: Guidance, schedule: Schedule, shape, *, frame_rate: float,
                         ratios: tuple[int, int], generator, device, latents: torch.Tensor | None = None,
                         hook: StepHook | None = None, stage: str = "denoise") -> torch.Tensor:
    """shape (1, C, F, H, W) of the latents -> denoised normalized latents."""
    _, _, f, h, w = shape
    spatial, temporal = ratios
    x = latents.to(device, torch.float32) if latents is not None else randn(shape, generator, device)
    x = pack(x)
    guide.set_positions(grid_positions(1, f, h, w, (temporal / frame_rate, spatial, spatial), device=device))
    total = len(schedule)
    sig = schedule.sigmas.to(device)
    for i, t in enumerate(schedule.timesteps.to(device)):
        v = guide(x, t.expand(guide.batch))
        x = x + (sig[i + 1] - sig[i]) * v
        _check_finite(x, stage, i + 1, total)
        if hook is not None:
            hook(i + 1, total, float(t), unpack(x, f, h, w))
    return unpack(x, f, h, w)


# -- image-to-video (LTXImageToVideoPipeline) ----------------------------------------------------

def sample_image_to_video(guide: Guidance, schedule: Schedule, vae, image: torch.Tensor, shape, *,
                          frame_rate: float, ratios: tuple[int, int], generator, device,
                          latents: torch.Tensor | None = None, hook: StepHook | None = None,
                          stage: str = "denoise") -> torch.Tensor:
    """image (3, H, W) in [-1, 1]. Latent frame 0 is the encoded image and is never stepped; the
    per-token timestep is t on the other frames and 0 on it."""
    _, c, f, h, w = shape
    spatial, temporal = ratios
    mask = torch.zeros((1, 1, f, h, w), device=device)
    mask[:, :, 0] = 1.0
    if latents is not None:  # as diffusers: given latents already hold the conditioning frame
        x = latents.to(device, torch.float32)
    else:
        init = encode_condition(vae, image[None, :, None], generator).to(torch.float32)
        init = init.repeat(1, 1, f, 1, 1)
        noise = randn(shape, generator, device)
        x = init * mask + noise * (1 - mask)
    x = pack(x)
    mask = pack(mask).squeeze(-1)
    mask_in = torch.cat([mask] * guide.batch)
    guide.set_positions(grid_positions(1, f, h, w, (temporal / frame_rate, spatial, spatial), device=device))
    total = len(schedule)
    sig = schedule.sigmas.to(device)
    for i, t in enumerate(schedule.timesteps.to(device)):
        timestep = t.expand(guide.batch).unsqueeze(-1) * (1 - mask_in)
        v = unpack(guide(x, timestep), f, h, w)
        lat = unpack(x, f, h, w)
        stepped = lat[:, :, 1:] + (sig[i + 1] - sig[i]) * v[:, :, 1:]
        x = pack(torch.cat([lat[:, :, :1], stepped], dim=2))
        _check_finite(x, stage, i + 1, total)
        if hook is not None:
            hook(i + 1, total, float(t), unpack(x, f, h, w))
    return unpack(x, f, h, w)


# -- multi-condition (LTXConditionPipeline) ------------------------------------------------------

@dataclass
class EncodedCondition:
    """A preprocessed condition: pixels (1, 3, F, H, W) in [-1, 1], where and how strongly."""

    pixels: torch.Tensor
    frame_index: int
    strength: float


def encode_condition(vae, pixels: torch.Tensor, generator) -> torch.Tensor:
    """VAE posterior sample of pixels (1, 3, F, H, W) -> normalized latents."""
    weight = next(vae.parameters())
    moments = vae.encode(pixels.to(weight.device, weight.dtype))
    return vae.normalize_latents(vae.sample(moments, generator))


def _video_ids(frames: int, height: int, width: int, ratios: tuple[int, int], frame_index: int, device):
    """Pixel coordinates (1, 3, N) of latent cells: (t*rt + 1 - rt).clamp(0) + frame_index, y*r, x*r."""
    spatial, temporal = ratios
    grid = torch.meshgrid(torch.arange(frames, device=device), torch.arange(height, device=device),
                          torch.arange(width, device=device), indexing="ij")
    ids = torch.stack(grid, dim=0).reshape(1, 3, -1)
    ids = ids * torch.tensor([temporal, spatial, spatial], device=device)[None, :, None]
    ids[:, 0] = (ids[:, 0] + 1 - temporal).clamp(min=0)
    ids[:, 0] += frame_index
    return ids


def _prepare_condition_latents(vae, conditions: list[EncodedCondition], shape, ratios, generator, device,
                               latents: torch.Tensor | None, sigma: torch.Tensor | None,
                               num_prefix_latent_frames: int = 2):
    """-> packed latents (1, N_extra + N, C), conditioning mask (1, N_extra + N), coords (1, 3, ...),
    number of extra (prepended) tokens."""
    _, c, f, h, w = shape
    spatial, temporal = ratios
    noise = randn(shape, generator, device)
    if latents is not None and sigma is not None:
        x = sigma * noise + (1 - sigma) * latents.to(device, torch.float32)
    else:
        x = noise
    frame_mask = torch.zeros((1, f), device=device)
    extra_x, extra_ids, extra_mask = [], [], []
    for cond in conditions:
        cl = encode_condition(vae, cond.pixels, generator).to(device, torch.float32)
        n_data, n_cond = cond.pixels.shape[2], cl.shape[2]
        s = cond.strength
        if cond.frame_index == 0:
            x[:, :, :n_cond] = torch.lerp(x[:, :, :n_cond], cl, s)
            frame_mask[:, :n_cond] = s
            continue
        if n_data > 1:
            if n_cond < num_prefix_latent_frames:
                raise ValueError(f"conditions: a video condition needs at least {num_prefix_latent_frames} latent "
                                 f"frames ({(num_prefix_latent_frames - 1) * temporal + 1} pixel frames), got "
                                 f"{n_data} frames")
            if n_cond > num_prefix_latent_frames:
                start = cond.frame_index // temporal + num_prefix_latent_frames
                end = start + n_cond - num_prefix_latent_frames
                if end > f:
                    raise ValueError(f"conditions: video at frame_index {cond.frame_index} with {n_data} frames "
                                     f"reaches latent frame {end - 1}, past the last latent frame {f - 1}")
                x[:, :, start:end] = torch.lerp(x[:, :, start:end], cl[:, :, num_prefix_latent_frames:], s)
                frame_mask[:, start:end] = s
                cl = cl[:, :, :num_prefix_latent_frames]
        cl = torch.lerp(randn(cl.shape, generator, device), cl, s)
        extra_ids.append(_video_ids(cl.shape[2], h, w, ratios, cond.frame_index, device))
        packed = pack(cl)
        extra_x.append(packed)
        extra_mask.append(torch.full(packed.shape[:2], s, device=device))
    ids = _video_ids(f, h, w, ratios, 0, device)
    grid_t = torch.arange(f, device=device).repeat_interleave(h * w)[None]
    mask = frame_mask.gather(1, grid_t)
    x = pack(x)
    n_extra = sum(e.shape[1] for e in extra_x)
    if extra_x:
        x = torch.cat([*extra_x, x], dim=1)
        ids = torch.cat([*extra_ids, ids], dim=2)
        mask = torch.cat([*extra_mask, mask], dim=1)
    return x, mask, ids, n_extra


def per_token_step(x: torch.Tensor, velocity: torch.Tensor, token_sigmas: torch.Tensor,
                   all_sigmas: torch.Tensor) -> torch.Tensor:
    """Euler step of every token from its own sigma to the next lower sigma of the schedule
    (FlowMatchEulerDiscreteScheduler.step with per_token_timesteps)."""
    sig = all_sigmas[:, None, None]
    lower = ((sig < token_sigmas[None] - 1e-6) * sig).max(dim=0)[0]
    dt = token_sigmas[..., None] - lower[..., None]
    return x + dt * velocity


def sample_condition(guide: Guidance, schedule: Schedule, all_sigmas: torch.Tensor, vae,
                     conditions: list[EncodedCondition], shape, *, frame_rate: float, ratios: tuple[int, int],
                     generator, device, image_cond_noise_scale: float = 0.15, latents: torch.Tensor | None = None,
                     denoise_sigma: torch.Tensor | None = None, hook: StepHook | None = None,
                     stage: str = "denoise") -> torch.Tensor:
    """The LTXConditionPipeline loop. ``schedule`` may be truncated by denoise strength, in which
    case ``latents`` are mixed with noise at ``denoise_sigma`` (its first sigma); ``all_sigmas`` is
    the untruncated schedule the per-token update searches."""
    _, _, f, h, w = shape
    x, mask, ids, n_extra = _prepare_condition_latents(vae, conditions, shape, ratios, generator, device,
                                                       latents, denoise_sigma)
    coords = ids.float()
    coords[:, 0] = coords[:, 0] * (1.0 / frame_rate)
    guide.set_positions(coords_positions(coords))
    conditioned = bool(conditions)
    init = x.clone() if conditioned else None
    mask_in = torch.cat([mask] * guide.batch)
    all_sigmas = all_sigmas.to(device)
    total = len(schedule)
    for i, t in enumerate(schedule.timesteps.to(device)):
        if image_cond_noise_scale > 0 and conditioned:
            tt = t / 1000.0
            noise = randn(x.shape, generator, device)
            hard = (mask > 1.0 - 1e-6).unsqueeze(-1)
            x = torch.where(hard, init + image_cond_noise_scale * noise * (tt**2), x)
        timestep = t.expand(guide.batch).unsqueeze(-1).float()
        if conditioned:
            timestep = torch.min(timestep, (1 - mask_in) * 1000.0)
        v = guide(x, timestep if conditioned else timestep[:, 0])
        timestep = timestep[:1]
        # diffusers steps -v by sigma_token - sigma_next (a positive dt)
        stepped = per_token_step(x, -v, timestep / 1000, all_sigmas)
        if conditioned:
            update = (t / 1000 - 1e-6 < (1.0 - mask)).unsqueeze(-1)
            x = torch.where(update, stepped, x)
        else:
            x = stepped
        _check_finite(x, stage, i + 1, total)
        if hook is not None:
            hook(i + 1, total, float(t), unpack(x[:, n_extra:], f, h, w))
    return unpack(x[:, n_extra:], f, h, w)


# -- latent upsampling and decoding ----------------------------------------------------------------

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


def decode_latents(vae, latents: torch.Tensor, *, decode_timestep: float, decode_noise_scale: float | None,
                   generator, device, model_dtype: torch.dtype, tiling=None) -> torch.Tensor:
    """Normalized latents -> frames (F, H, W, 3) float32 in [0, 1].

    With a timestep-conditioned decoder, noise is mixed in *after* denormalization (diffusers'
    LTX-Video order; Lightricks' original mixes before) with scale decode_noise_scale (default:
    decode_timestep) and the decoder is conditioned on decode_timestep.
    """
    z = vae.denormalize_latents(latents).to(model_dtype)
    temb = None
    if vae.config.timestep_conditioning:
        noise = randn(z.shape, generator, device, dtype=z.dtype)
        scale = decode_timestep if decode_noise_scale is None else decode_noise_scale
        temb = torch.tensor([decode_timestep], device=device, dtype=z.dtype)
        s = torch.tensor([scale], device=device, dtype=z.dtype)[:, None, None, None, None]
        z = (1 - s) * z + s * noise
    vae_dtype = next(vae.parameters()).dtype
    # 0.9.1 decoders inject noise; draw it from the generation's generator (diffusers uses torch's
    # global RNG there, so its 0.9.1 videos are not determined by the seed alone)
    video = vae.decode(z.to(vae_dtype), temb, generator=generator, tiling=tiling)
    frames = (video[0].permute(1, 0, 2, 3).float() * 0.5 + 0.5).clamp(0, 1)
    return frames.permute(0, 2, 3, 1).contiguous()


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """(F, h, w, 3) -> (F, height, width, 3), bilinear (Lightricks' multi-scale pipeline)."""
    if frames.shape[1:3] == (height, width):
        return frames
    x = F.interpolate(frames.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False)
    return x.permute(0, 2, 3, 1).clamp(0, 1).contiguous()
