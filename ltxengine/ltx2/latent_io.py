"""Latent in / latent out for the LTX-2 pipelines (out: every pipeline with video, through
``stages.finish``; in: those of ``LATENT_START``), in diffusers' LTX2Pipeline form so results chain
between our calls and diffusers' pipelines (LTX2LatentUpsamplePipeline included):

* ``output_type="latent"``: no decoding; the result carries the video latents (1, C, F', H', W')
  and the audio latents (1, C_a, T, M), both unpacked and denormalized (the VAEs' own space), as
  diffusers' ``output_type="latent"`` returns them.
* ``latents=`` / ``audio_latents=``: that form, normalized and packed here, then the noisy start of
  the first stage: ``noise_scale * noise + (1 - noise_scale) * latents`` (diffusers'
  ``_create_noised_state``; ``noise_scale`` 0, its default, takes them as the start itself). The
  noise is drawn in the packed shape, as diffusers draws it for given latents; a stream not given
  draws its usual noise, so the other stream's numbers are diffusers'.

Two-stage pipelines take stage 1's latents (half the size): one two-stage call is the three calls
of diffusers' documented recipe (stage 1, LTX2LatentUpsamplePipeline, stage 2 given the upsampled
latents), and the user's latents go where its first call takes them, the start of stage 1; stage 2
starts from the upsampled stage-1 output as always. Latent out returns stage 2's latents."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from ..checks import check_float, short
from ..components.latents import pack, randn
from ..models.audio_vae import pack_audio_latents, unpack_audio_latents

__all__ = ["OUTPUT_TYPES", "LatentStart", "check_latent_io", "latent_output", "latent_start", "start_noise"]

OUTPUT_TYPES = (None, "latent")  # None: decoded frames and waveform
# the pipelines whose first stage starts from noise in ``stages.first_stage``, which takes the given
# start; the others refuse latents= / audio_latents= (retake starts from its clip, IC-LoRA from its
# own packed draw with the references, text-to-audio has no video) rather than ignore them
LATENT_START = ("two-stage", "distilled", "one-stage", "keyframe-interpolation", "two-stage-hq")
# what a latent-only result cannot use: nothing is decoded or written
_DECODE_ARGUMENTS = ("output", "decode_timestep", "decode_noise_scale", "vae_tiling", "decoder")


@dataclass(frozen=True)
class LatentStart:
    """The first stage's given start: packed, normalized tokens (video (1, N, C), audio (1, T, D)),
    None for a stream that starts from noise, and the noise mixed into the given ones."""

    video: torch.Tensor | None
    audio: torch.Tensor | None
    noise_scale: float


def check_latent_io(engine, a: dict[str, Any], recipe) -> None:
    """latents, audio_latents, noise_scale, output_type (and what output_type='latent' rules out)
    in the argument dict ``a`` (after audio_frames is set) for the pipeline's ``recipes.Recipe``,
    before any model work."""
    kind, mode = a["output_type"], a["pipeline"]
    if kind not in OUTPUT_TYPES:
        raise ValueError(f"output_type must be None (decoded frames and audio) or 'latent' (diffusers' latents, "
                         f"nothing decoded), got {short(kind)}")
    for k in ("latents", "audio_latents"):
        if a[k] is not None and mode not in LATENT_START:
            raise ValueError(f"{k} start the first stage of pipelines {LATENT_START}, not of pipeline={mode!r}, "
                             f"got {k}={_shown(a[k])}")
    if kind == "latent" and getattr(recipe, "audio_only", False):
        raise ValueError(f"output_type='latent' returns video and audio latents; pipeline={mode!r} has no video")
    if kind == "latent":
        for k in _DECODE_ARGUMENTS:
            if a.get(k) is not None:
                shown = repr(str(a[k])) if isinstance(a[k], os.PathLike) else short(a[k])
                raise ValueError(f"{k} is for decoding, which output_type='latent' skips; got {k}={shown}")
    if a["latents"] is None and a["audio_latents"] is None:
        if a["noise_scale"] is not None:
            raise ValueError(f"noise_scale mixes noise into latents= / audio_latents=, got "
                             f"noise_scale={short(a['noise_scale'])} without either")
        return
    if a["noise_scale"] is not None:
        a["noise_scale"] = check_float("noise_scale", a["noise_scale"], 0.0, 1.0)
    cfg, acfg = engine.transformer.config, engine.audio_vae.config
    f = (a["num_frames"] - 1) // 8 + 1
    h, w = a["height"] // (32 * recipe.stages), a["width"] // (32 * recipe.stages)
    size = f"{a['num_frames']} frames at {a['height']}x{a['width']}"
    if recipe.stages == 2:
        size += f" (stage 1 of pipeline={a['pipeline']!r}, at half the size)"
    a["latents"] = _check_tensor(engine, "latents", a["latents"], (1, cfg.in_channels, f, h, w),
                                 "(1, C, F', H', W') video latents", size)
    if a["audio_latents"] is not None and a["audio"] is not None:
        raise ValueError("audio_latents start the generated audio, which audio= replaces (audio-to-video): "
                         "pass one of them")
    a["audio_latents"] = _check_tensor(engine, "audio_latents", a["audio_latents"],
                                       (1, acfg.latent_channels, a["audio_frames"], acfg.latent_mel_bins),
                                       "(1, C, T, M) audio latents", f"{size}, {a['audio_frames']} audio frames")


def _check_tensor(engine, name: str, z, shape: tuple, form: str, size: str) -> torch.Tensor | None:
    if z is None:
        return None
    rule = f"{name} must be unpacked, denormalized {form} (diffusers' form) of shape {shape} for {size}"
    if not isinstance(z, torch.Tensor):
        raise ValueError(f"{rule}, got {type(z).__name__}")
    if tuple(z.shape) != shape:
        raise ValueError(f"{rule}, got shape {tuple(z.shape)}")
    if not z.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {z.dtype}")
    if z.device.type != "cpu" and z.device != torch.device(engine.device):
        raise ValueError(f"{name} must be on the CPU or the engine's device {engine.device}, got {z.device}")
    if not torch.isfinite(z).all():
        raise ValueError(f"{name} must be finite, got {int((~torch.isfinite(z)).sum())} non-finite values")
    return z.detach()


def _shown(z) -> str:
    return f"a tensor of shape {tuple(z.shape)}" if isinstance(z, torch.Tensor) else short(z)


def latent_start(engine, a) -> LatentStart | None:
    """The request's given latents as the first stage's packed, normalized tokens (None without any)."""
    if a.latents is None and a.audio_latents is None:
        return None
    dev = engine.device
    video = audio = None
    if a.latents is not None:  # normalized per channel, then packed (diffusers' prepare_latents)
        video = pack(engine.vae.normalize_latents(a.latents.to(dev, torch.float32)))
    if a.audio_latents is not None:  # packed, then normalized per feature (prepare_audio_latents)
        audio = engine.audio_vae.normalize(pack_audio_latents(a.audio_latents.to(dev, torch.float32)))
    return LatentStart(video, audio, a.noise_scale or 0.0)


def start_noise(start: LatentStart | None, gen, dev, video_shape: tuple, audio_shape: tuple):
    """A fresh stage's start before its conditions, video then audio as diffusers draws them: a
    given stream is drawn packed and mixed, one not given is diffusers' unpacked noise, packed.
    -> (video tokens (1, N, C), audio tokens (1, T, D))."""
    if start is None or start.video is None:
        video = pack(randn(video_shape, gen, dev))
    else:
        video = _noised(start.video, start.noise_scale, gen, dev)
    if start is None or start.audio is None:
        audio = pack_audio_latents(randn(audio_shape, gen, dev))
    else:
        audio = _noised(start.audio, start.noise_scale, gen, dev)
    return video, audio


def _noised(tokens: torch.Tensor, noise_scale: float, gen, dev) -> torch.Tensor:
    noise = randn(tokens.shape, gen, dev)  # drawn even at noise_scale 0, as diffusers does
    return noise_scale * noise + (1 - noise_scale) * tokens


def latent_output(engine, video: torch.Tensor, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A stage's output (normalized video latents (1, C, F, H, W), packed normalized audio tokens)
    -> diffusers' output_type="latent" form on the host: both denormalized, audio unpacked."""
    v = engine.vae.denormalize_latents(video.float())
    au = unpack_audio_latents(engine.audio_vae.denormalize(audio.float()), engine.audio_vae.config.latent_channels)
    return v.cpu(), au.cpu()
