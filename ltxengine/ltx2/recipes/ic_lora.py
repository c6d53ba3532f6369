"""pipeline="ic-lora" (ltx-pipelines 1.0.0's ic_lora; diffusers' LTX2InContextPipeline is its stage 1):
video-to-video with an In-Context LoRA. Stage 1 at half the size runs with the call's LoRAs (the
IC-LoRA among them) on the distilled sigmas without guidance (the request's distilled defaults):
each reference video is resized to 1/``reference_downscale_factor`` of the stage-1 size, VAE-encoded
and appended after the image keyframes as clean tokens (denoise mask 1 - strength) whose positions
are the stage's own with height and width scaled by the factor, so they land in target
coordinates. A file whose metadata has reference_temporal_scale_factor S > 1 (ltx-core / ltx-pipelines
@400fd31; none: 1) keeps each reference's frame 0 and every S-th frame after it (which must leave 8k+1;
the reference VAE crops instead, with a warning) and times its tokens at fps / S, shifted by (S - 1)/fps
(clamped at 0) so its last patch ends with the target's. An attention strength below 1 (or a mask
video) adds ltx-core's block mask to the video self-attention: generated <-> generated and image
keyframes 1, generated <-> reference the strength (times the mask pooled to the reference's
tokens), reference <-> reference 1 within one reference, 0 otherwise; as a log-space bias (0 -> the
dtype's minimum). Stage 2 is the two-stage recipe's refine without any of the call's LoRAs and
without references (ltx-pipelines' stage-2 ledger has no LoRAs): image conditions, the upsampled
latent, the distilled sigmas and the engine's distilled LoRA."""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Mapping

import numpy as np
import torch
import torch.nn.functional as F

from ...checks import check_float, check_int
from ...components.inputs import ReferenceCondition
from ...components.latents import pack
from ..denoise import KeyframeTokens
from ..stages import StageOutput, encode_conditions, fit_image, run_stage, stage1_sigmas, uint8_image
from . import two_stage

__all__ = ["ARGUMENTS", "attention_bias", "attention_mask", "attention_masked", "check", "encode_references",
           "pool_mask", "reference_positions", "reference_tokens", "run", "temporal_subsample"]

ARGUMENTS = ("reference_conditions", "reference_downscale_factor", "conditioning_attention_strength",
             "conditioning_attention_mask", "reference_temporal_scale_factor")
METADATA_KEY = "reference_downscale_factor"  # the IC-LoRA file's safetensors metadata
TEMPORAL_KEY = "reference_temporal_scale_factor"  # the same metadata; absent: 1


# -- the argument check (before any model work) ------------------------------------------------------

def check(engine, a: dict[str, Any]) -> None:
    """Normalizes the IC-LoRA arguments in ``a``: reference_conditions -> a tuple of
    ReferenceCondition(uint8 frames (F, H, W, 3) trimmed to num_frames, float strength);
    reference_downscale_factor -> the int in force; conditioning_attention_strength -> a float;
    conditioning_attention_mask -> None or a float32 (F, H, W) tensor in [0, 1];
    reference_temporal_scale_factor S -> the int in force (the metadata's, default 1): each
    reference keeps frame 0 and every S-th frame after it (ltx-pipelines @400fd31's temporal_subsample)."""
    if two_stage.spatial_scale(engine) != 2:  # references and stage 1 sized for half size (ltx-pipelines' ic_lora)
        raise ValueError(f"pipeline='ic-lora' runs stage 1 at half size, as ltx-pipelines' ic_lora, and needs the x2 "
                         f"spatial upscaler; this engine holds the x{two_stage.spatial_scale(engine):g} one")
    temporal = _temporal_factor(engine, a)
    refs = _check_references(a["reference_conditions"], a["num_frames"], temporal)
    factor = _downscale_factor(engine, a)
    h1, w1 = a["height"] // 2, a["width"] // 2
    for k, v in (("height", h1), ("width", w1)):
        if v % (32 * factor):
            raise ValueError(f"reference_downscale_factor: the references are encoded at 1/{factor} of stage 1's "
                             f"{h1}x{w1}, which must stay a multiple of 32 (the VAE's); {k}={a[k]} gives {v}/{factor}: "
                             f"use a {k} that is a multiple of {64 * factor}")
    strength = a["conditioning_attention_strength"]
    strength = 1.0 if strength is None else check_float("conditioning_attention_strength", strength, 0.0, 1.0)
    mask = _check_mask(a["conditioning_attention_mask"], refs, a["num_frames"])
    a.update(reference_conditions=refs, reference_downscale_factor=factor, conditioning_attention_strength=strength,
             conditioning_attention_mask=mask, reference_temporal_scale_factor=temporal)


def temporal_subsample(frames, factor: int):
    """Frame 0, then frames 1, 1 + S, 1 + 2S, ... (ltx-pipelines @400fd31's temporal_subsample, which
    keeps the VAE's causal first frame alone: 1 + 8kS frames -> 1 + 8k)."""
    return frames if factor == 1 else frames[[0, *range(1, len(frames), factor)]]


def _check_references(refs, num_frames: int, temporal: int = 1) -> tuple[ReferenceCondition, ...]:
    if isinstance(refs, ReferenceCondition):
        refs = [refs]
    if not isinstance(refs, (list, tuple)) or not refs:
        raise ValueError(f"reference_conditions: pipeline='ic-lora' needs at least one ReferenceCondition(video, "
                         f"strength) (ltx-pipelines' --video-conditioning), got {refs!r:.100}")
    out = []
    for i, r in enumerate(refs):
        arg = f"reference_conditions[{i}]"
        if not isinstance(r, ReferenceCondition):
            raise ValueError(f"{arg} must be a ltxengine ReferenceCondition(video=..., strength=...), got "
                             f"{type(r).__name__}")
        strength = check_float(f"{arg}.strength", r.strength, 0.0, 1.0)
        frames = _frames(r.video, f"{arg}.video")[:num_frames]  # ltx-pipelines' frame_cap, diffusers' trim
        kept = temporal_subsample(frames, temporal)
        if (len(kept) - 1) % 8 and temporal == 1:
            raise ValueError(f"{arg}.video must have 8k+1 frames (the VAE encodes 1 + 8k; longer clips are cut to "
                             f"num_frames={num_frames}), got {len(frames)}")
        if (len(kept) - 1) % 8:
            raise ValueError(f"{arg}.video must have 8kS+1 frames with reference_temporal_scale_factor S={temporal} "
                             f"(frame 0, then every {temporal}th frame is kept and the VAE encodes 1 + 8k; longer "
                             f"clips are cut to num_frames={num_frames}), got {len(frames)}, which keeps {len(kept)}; "
                             f"e.g. {8 * temporal + 1}")
        frames = kept
        out.append(ReferenceCondition(frames, strength))
    return tuple(out)


def _frames(video, arg: str) -> np.ndarray:
    """A path, an array (F, H, W, 3), a tensor (F, 3, H, W) or a list of images -> uint8 (F, H, W, 3)."""
    if isinstance(video, (str, os.PathLike)):
        from ...media import read_mp4
        if not os.path.isfile(video):
            raise ValueError(f"{arg}: no file at {str(video)!r}")
        try:
            frames, _ = read_mp4(video)
        except Exception as e:  # noqa: BLE001 - PyAV's errors: a file that is no video
            raise ValueError(f"{arg}: cannot read {str(video)!r} as a video ({e})") from None
        return frames
    if isinstance(video, np.ndarray) and (video.ndim != 4 or video.shape[3] != 3):
        raise ValueError(f"{arg}: numpy videos must be (F, H, W, 3), got shape {video.shape}")
    if isinstance(video, torch.Tensor) and (video.ndim != 4 or video.shape[1] != 3):
        raise ValueError(f"{arg}: tensor videos must be (F, 3, H, W), got shape {tuple(video.shape)}")
    if not isinstance(video, (np.ndarray, torch.Tensor, list, tuple)):
        raise ValueError(f"{arg}: expected an mp4 path, an array (F, H, W, 3), a tensor (F, 3, H, W) or a list of "
                         f"images, got {type(video).__name__}")
    if len(video) == 0:
        raise ValueError(f"{arg}: the video has no frames")
    frames = [uint8_image(f, f"{arg}[{i}]") for i, f in enumerate(video)]
    sizes = {f.shape for f in frames}
    if len(sizes) > 1:
        raise ValueError(f"{arg}: every frame must have the same size, got {sorted(s[:2] for s in sizes)}")
    return np.stack(frames)


def _metadata_factors(engine, a: dict[str, Any], key: str) -> tuple[list[str], dict[str, int]]:
    """-> (the call's adapter names, {name: int value of ``key``} for those whose metadata has it)."""
    loras = a["loras"]
    names = ([n for n in loras if n in engine.adapters.loaded] if isinstance(loras, Mapping)
             else list(engine.adapters.active))
    found = {}
    for n in names:
        raw = engine.adapters.loaded[n].metadata.get(key)
        if raw is not None:
            try:
                found[n] = int(raw)
            except (TypeError, ValueError):
                found[n] = None
            if found[n] is None or found[n] < 1:
                raise ValueError(f"{key}: adapter {n!r}'s metadata says {key}={raw!r}, not an int >= 1")
    return names, found


def _temporal_factor(engine, a: dict[str, Any]) -> int:
    """The given S, else the one in the metadata of the call's LoRAs (all that carry it must agree;
    none: 1, ltx-pipelines' default)."""
    _, found = _metadata_factors(engine, a, TEMPORAL_KEY)
    factor = _agreed_factor("reference_temporal_scale_factor", a["reference_temporal_scale_factor"], found)
    return 1 if factor is None else factor


def _downscale_factor(engine, a: dict[str, Any]) -> int:
    """The given factor, else the one in the metadata of the call's LoRAs (all that carry it must agree)."""
    names, found = _metadata_factors(engine, a, METADATA_KEY)
    factor = _agreed_factor("reference_downscale_factor", a["reference_downscale_factor"], found)
    if factor is None:
        raise ValueError(f"reference_downscale_factor: none of the call's LoRAs (adapters {names}) has "
                         f"{METADATA_KEY} in its safetensors metadata, as IC-LoRA files do; load the IC-LoRA with "
                         f"engine.load_lora_weights(path), or pass reference_downscale_factor= (1: references at "
                         f"the generation's size)")
    return factor


def _agreed_factor(arg: str, given, found: dict[str, int]) -> int | None:
    """An IC-LoRA factor: ``given`` (checked, and agreeing with every adapter's metadata that names
    one), else the one value the adapters' metadata ``found`` agrees on, else None."""
    if given is not None:
        given = check_int(arg, given, 1, 8)
        other = {n: f for n, f in found.items() if f != given}
        if other:
            raise ValueError(f"{arg}={given} contradicts the IC-LoRA metadata of the call's adapters {other}; leave "
                             f"it None to use theirs")
        return given
    if len(set(found.values())) > 1:
        raise ValueError(f"{arg}: the call's IC-LoRAs disagree ({found}); use one at a time")
    return next(iter(found.values()), None)


def _check_mask(mask, refs, num_frames: int) -> torch.Tensor | None:
    """A mask video (path: grayscale = channel mean, cut to num_frames) or a (F, H, W) /
    (1, 1, F, H, W) array or tensor in [0, 1] -> float32 (F, H, W), its frames poolable to every
    reference's latent frames as the VAE encodes time (first frame alone, then groups)."""
    arg = "conditioning_attention_mask"
    if mask is None:
        return None
    if isinstance(mask, (str, os.PathLike)):
        t = torch.from_numpy(_frames(mask, arg)[:num_frames]).float().mean(-1) / 255.0
    elif isinstance(mask, (np.ndarray, torch.Tensor)):
        t = torch.as_tensor(mask).detach().cpu()
        if t.ndim == 5 and t.shape[:2] == (1, 1):
            t = t[0, 0]
        if t.ndim != 3 or not t.is_floating_point():
            raise ValueError(f"{arg} must be a float (F, H, W) or (1, 1, F, H, W) mask in [0, 1], got "
                             f"{t.dtype} of shape {tuple(t.shape)}")
        t = t.float()
        if not torch.isfinite(t).all() or t.min() < 0 or t.max() > 1:
            raise ValueError(f"{arg} values must lie in [0, 1], got range [{t.min().item():.4g}, "
                             f"{t.max().item():.4g}]")
    else:
        raise ValueError(f"{arg} must be a mask video path or a (F, H, W) array / tensor, got {type(mask).__name__}")
    if t.shape[0] == 0 or t.shape[1] == 0 or t.shape[2] == 0:
        raise ValueError(f"{arg} is empty: shape {tuple(t.shape)}")
    for i, r in enumerate(refs):
        f = (len(r.video) - 1) // 8 + 1
        if f > 1 and (t.shape[0] < 2 or (t.shape[0] - 1) % (f - 1)):
            raise ValueError(f"{arg} has {t.shape[0]} frames; reference_conditions[{i}] has {len(r.video)} frames "
                             f"({f} latent frames), so the mask needs 1 + k x {f - 1} frames (e.g. {len(r.video)})")
    return t.contiguous()


# -- tokens, positions and the attention bias ---------------------------------------------------------

def reference_tokens(a, height: int, width: int) -> int:
    """How many tokens the references add to a stage at (height, width) (the memory plan's count)."""
    if a.pipeline != "ic-lora":
        return 0
    s = a.reference_downscale_factor
    return sum(((len(r.video) - 1) // 8 + 1) * (height // s // 32) * (width // s // 32)
               for r in a.reference_conditions)


def attention_masked(a) -> bool:
    """Whether the request's stage 1 needs the dense attention bias (else attention is unmasked)."""
    return a.pipeline == "ic-lora" and (a.conditioning_attention_strength < 1
                                        or a.conditioning_attention_mask is not None)


def pool_mask(mask: torch.Tensor, frames: int, height: int, width: int) -> torch.Tensor:
    """A pixel mask (F, H, W) -> one value per latent token (frames * height * width,): area
    pooling in space; in time the first frame alone, then means over groups (ltx-pipelines'
    _downsample_mask_to_latent)."""
    spatial = F.interpolate(mask[:, None], size=(height, width), mode="area")[:, 0]
    if mask.shape[0] > 1 and frames > 1:
        rest = spatial[1:].reshape(frames - 1, (mask.shape[0] - 1) // (frames - 1), height, width).mean(1)
        spatial = torch.cat([spatial[:1], rest])
    else:
        spatial = spatial[:1]
    return spatial.reshape(-1)


def attention_mask(noisy: int, prefix: int, groups: list[torch.Tensor]) -> torch.Tensor:
    """(T, T) in [0, 1] over [generated (noisy) | keyframes | reference groups]: ltx-core's
    build_attention_mask applied once per reference (groups: each one's (M,) strengths)."""
    total = prefix + sum(g.shape[0] for g in groups)
    m = torch.zeros(total, total, device=groups[0].device)
    m[:prefix, :prefix] = 1.0
    start = prefix
    for g in groups:
        end = start + g.shape[0]
        m[:noisy, start:end] = g[None]
        m[start:end, :noisy] = g[:, None]
        m[start:end, start:end] = 1.0
        start = end
    return m


def attention_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """ltx-core's log-space bias (1, 1, T, T): log(m), with 0 -> the dtype's minimum."""
    finfo = torch.finfo(dtype)
    bias = torch.full_like(mask, finfo.min, dtype=torch.float32)
    positive = mask > 0
    bias[positive] = torch.log(mask[positive].float().clamp(min=finfo.tiny))
    return bias.to(dtype)[None, None]


def reference_positions(video_positions, frames: int, height: int, width: int, fps: float, downscale: int,
                        temporal: int, device=None) -> torch.Tensor:
    """A reference's patch bounds (1, 3, N, 2) in the target's coordinates (ltx-core @400fd31's
    VideoConditionByReferenceLatent.apply_to): time on the reference's own spacing fps / S and, for
    S > 1, shifted back by (S - 1) x the target's first token end (1/fps) so its last patch ends with
    the target's, clamped at 0; height and width times the downscale factor. S = 1: the stage's own
    positions scaled, bit for bit as before."""
    pos = video_positions(1, frames, height, width, fps / temporal, device=device).clone()
    if temporal != 1:
        end = video_positions(1, 1, 1, 1, fps, device=device)[:, 0, 0:1, 1:2]  # the target's first token's end
        pos[:, 0] = torch.clamp(pos[:, 0] - (temporal - 1) * end, min=0)
    pos[:, 1:] *= downscale  # height and width in target coordinates
    return pos


def encode_references(engine, a, height: int, width: int, fps: float):
    """-> ([KeyframeTokens] of each reference, [(M,) strengths] or None when attention is unmasked)."""
    s, t = a.reference_downscale_factor, a.reference_temporal_scale_factor
    tr, vae, dev = engine.transformer, engine.vae, engine.device
    dtype = next(vae.parameters()).dtype
    masked = attention_masked(a)
    tokens, groups = [], []
    with engine.residency.use("vae_encoder", vae.encoder):
        for r in a.reference_conditions:
            pixels = torch.stack([fit_image(f, height // s, width // s) for f in r.video], dim=1)
            z = vae.encode_normalized(pixels[None].to(dev, dtype)).float()  # (1, C, f, h, w)
            _, _, f, h, w = z.shape
            pos = reference_positions(tr.video_positions, f, h, w, fps, s, t, device=dev)
            tokens.append(KeyframeTokens(pack(z), pos, r.strength))
            if masked:
                m = a.conditioning_attention_mask
                g = torch.ones(f * h * w) if m is None else pool_mask(m, f, h, w)
                groups.append((g * a.conditioning_attention_strength).to(dev))
    return tokens, (groups if masked else None)


# -- the recipe ---------------------------------------------------------------------------------------

def run(engine, a, gen, seed: int) -> StageOutput:
    """The two-stage recipe with stage 1 given the references (``_first_stage``) and stage 2 run
    without the call's LoRAs (``_stage2_weights``)."""
    return two_stage.run(engine, a, gen, seed, stage1=_first_stage, stage2_weights=_stage2_weights)


def _first_stage(engine, a, given, texts, gen, seed: int):
    """Stage 1 at half the size with the references appended after the image keyframes. Its noise
    is drawn packed over every token, video then audio, as both references draw it (a zero initial
    latent at noise scale 1 is that draw in ``build_states``)."""
    h, w = a.height // 2, a.width // 2
    shape = (1, engine.transformer.config.in_channels, (a.num_frames - 1) // 8 + 1, h // 32, w // 32)
    sigmas = stage1_sigmas(a.recipe.distilled, a.sigmas, a.num_inference_steps, a.shift_tokens, shape)
    vp, ap = given.guidance(a.video_guidance, a.audio_guidance)
    first, keys = encode_conditions(engine, given.images, h, w, float(a.fps))
    refs, groups = encode_references(engine, a, h, w, float(a.fps))
    noisy = shape[2] * shape[3] * shape[4]
    bias = None
    if groups is not None:
        prefix = noisy + sum(k.tokens.shape[1] for k in keys)
        bias = attention_bias(attention_mask(noisy, prefix, groups), next(engine.transformer.parameters()).dtype)
    return run_stage(engine, a, gen, seed, stage="denoise", latent_shape=shape, sigmas=sigmas, video_params=vp,
                     audio_params=ap, texts=texts, first=first, keyframes=keys + refs,
                     video_init=torch.zeros(shape, device=engine.device), audio_frozen=given.audio_latents,
                     attention_bias=bias)


@contextmanager
def _stage2_weights(engine, two):
    """Stage 2 runs without the call's LoRAs (the IC-LoRA among them), with the distilled LoRA when
    loaded; afterwards, also when stage 2 fails, the set fused before is fused again."""
    distilled = engine.distilled_lora is not None and two.lora_strength != 0
    lora_set = engine.lora_manager() if distilled or engine.adapters.loaded else None
    before = list(lora_set.active) if lora_set is not None else []
    if lora_set is None or (not before and not distilled):
        yield
        return
    lora_set.apply([(engine.distilled_lora, two.lora_strength)] if distilled else [])
    try:
        yield
    finally:
        lora_set.apply(before)
