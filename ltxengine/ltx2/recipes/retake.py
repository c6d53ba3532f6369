"""pipeline="retake" (ltx-pipelines' retake, ltx-core's TemporalRegionMask): regenerate the
[start_time, end_time) seconds of an existing clip, keeping the rest. One stage at the clip's own
size: the source video and audio, encoded, are the clean latents every token starts from; the
denoise mask is 1 on the tokens whose [t_start, t_end) overlaps [start_time, end_time) (video
time from the causal pixel bounds / fps, audio bounds in seconds) and 0 elsewhere, so the kept
tokens stay the source's latents exactly. regenerate_video / regenerate_audio = False freezes that
modality (mask all 0). A clip without audio gets its audio generated whole (mask all 1).

Distilled by default, as the reference: the 8 distilled sigmas, no guidance. The full model runs
when ``num_inference_steps`` is given (the LTX-2 schedule of that many steps, shifted for
``shift_tokens``) or ``sigmas=``; its guidance is ``video_guidance`` / ``audio_guidance`` (or
diffusers' keywords): none unless given, as for every distilled recipe."""

from __future__ import annotations

import math
import os
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ...checks import MAX_STEPS, check_float, check_int, short
from ..samplers import check_schedule
from ..stages import Given, StageOutput, encode_text, finish, run_stage, stage1_sigmas

ARGUMENTS = ("video", "start_time", "end_time", "regenerate_video", "regenerate_audio")


# -- the run -------------------------------------------------------------------------------------------

def run(engine, a, gen, seed: int) -> StageOutput:
    timings = {}
    t0 = time.perf_counter()
    texts = encode_text(engine, a, a.video_guidance.uncond or a.audio_guidance.uncond)
    timings["text"] = time.perf_counter() - t0
    t1 = time.perf_counter()
    video, audio = source_latents(engine, a)
    timings["encode"] = time.perf_counter() - t1
    t2 = time.perf_counter()
    video, audio = denoise(engine, a, texts, video, audio, gen, seed)
    timings["denoise"] = time.perf_counter() - t2
    return finish(engine, a, Given(images=[]), video, audio, gen, timings)


def denoise(engine, a, texts, video: torch.Tensor, audio: torch.Tensor | None, gen, seed: int):
    """The one stage from the source latents (video (1, C, F, H, W), audio tokens (1, T, D) or None:
    generated whole) with the region's masks -> (video latents, audio tokens)."""
    shape = tuple(video.shape)
    video_mask, audio_mask = region_masks(engine, a, *shape[2:], audio is not None)
    sigmas = stage1_sigmas(a.recipe.distilled, a.sigmas, a.num_inference_steps, a.shift_tokens, shape)
    return run_stage(engine, a, gen, seed, stage="denoise", latent_shape=shape, sigmas=sigmas,
                     video_params=a.video_guidance, audio_params=a.audio_guidance, texts=texts, first=None,
                     keyframes=[], video_init=video, audio_init=audio, video_mask=video_mask, audio_mask=audio_mask)


def region_masks(engine, a, frames: int, height: int, width: int, has_audio: bool = True):
    """Per-token denoise masks (1, F*H*W, 1) and (1, T, 1) (None: all 1, no source audio):
    ltx-core's TemporalRegionMask on the tokens' time bounds in seconds, in its float32 arithmetic."""
    tr, dev = engine.transformer, engine.device
    video_t = tr.video_positions(1, frames, height, width, float(a.fps), device=dev)[0, 0]  # (N, 2) causal bounds
    video_mask = _in_region(video_t, a.start_time, a.end_time, a.regenerate_video)
    if not has_audio:
        return video_mask, None
    audio_t = tr.audio_positions(1, a.audio_frames, device=dev)[0, 0]  # (T, 2) seconds
    return video_mask, _in_region(audio_t, a.start_time, a.end_time, a.regenerate_audio)


def _in_region(bounds: torch.Tensor, start: float, end: float, regenerate: bool) -> torch.Tensor:
    inside = (bounds[:, 1] > start) & (bounds[:, 0] < end) if regenerate else torch.zeros_like(bounds[:, 0], dtype=bool)
    return inside.to(torch.float32)[None, :, None]


def source_latents(engine, a) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The source clip encoded: normalized video latents (1, C, F', H', W') float32 and the audio
    track's normalized packed tokens (1, T, D) float32 (None without audio)."""
    vae = engine.vae
    dtype = next(vae.parameters()).dtype
    with engine.residency.use("vae_encoder", vae.encoder), torch.no_grad():
        video = vae.encode_normalized(_pixels(a.video, engine.device, dtype), a.vae_tiling).float()
    audio = None
    if a.audio is not None:
        audio = encode_audio(engine.audio_vae, a.audio, a.audio_sample_rate, a.audio_frames).to(engine.device)
    return video, audio


def _pixels(frames, device, dtype) -> torch.Tensor:
    """(F, H, W, 3) uint8, or float in [0, 1] -> (1, 3, F, H, W) in [-1, 1], ``dtype`` on ``device``
    (uint8 moved as uint8, then normalized in float32 as the reference does: x / 127.5 - 1)."""
    x = torch.as_tensor(frames).to(device)
    x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else 2.0 * x.float() - 1.0
    return x.permute(3, 0, 1, 2)[None].to(dtype)


def encode_audio(audio_vae, wave, rate: int, frames: int) -> torch.Tensor:
    """A waveform (channels, samples) -> normalized packed tokens (1, frames, D) float32: the
    posterior mean of the whole track, cut to ``frames`` latent frames or padded with zeros (the
    normalized mean) past the track's end, as ltx-pipelines' retake."""
    param = next(audio_vae.parameters())
    wave = torch.as_tensor(wave, dtype=torch.float32)
    channels = audio_vae.config.in_channels
    if wave.shape[0] != channels:  # mono duplicated for a stereo VAE, stereo averaged for a mono one
        wave = wave.expand(2, -1) if channels == 2 else wave.mean(0, keepdim=True)
    with torch.no_grad():
        mel = audio_vae.waveform_to_mel(wave[None].to(param.device), rate).to(param.dtype)
        z = audio_vae.normalize(audio_vae.encode(mel))[:, :, :frames]
    z = F.pad(z, (0, 0, 0, frames - z.shape[2]))
    return audio_vae.pack(z).float()


# -- the argument check (Recipe.check) -----------------------------------------------------------------

def check(engine, a: dict) -> None:
    """video, start_time, end_time, regenerate_video, regenerate_audio, and what retake changes of
    the shared arguments (sampler, the full model's schedule). The clip is read now (a file with
    PyAV, its audio track included) and must match height / width / num_frames / frame_rate."""
    if a["conditions"]:
        raise ValueError(f"image / conditions: pipeline='retake' regenerates a region of video= and takes no "
                         f"condition images, got {len(a['conditions'])}")
    for k in ("regenerate_video", "regenerate_audio"):
        if a[k] is None:
            a[k] = True
        elif not isinstance(a[k], bool):
            raise ValueError(f"{k} must be a bool or None (None: True), got {short(a[k])}")
    if not (a["regenerate_video"] or a["regenerate_audio"]):
        raise ValueError("regenerate_video and regenerate_audio are both False: pipeline='retake' would keep "
                         "the whole clip; regenerate at least one")
    _check_region_numbers(a)
    frames, fps, wave, rate = _read_clip(a)
    _check_clip(a, frames.shape[0], frames.shape[1], frames.shape[2], fps)
    if wave is None and a["regenerate_audio"] is False and "regenerate_audio" not in a["unset"]:
        raise ValueError("regenerate_audio=False keeps the clip's audio, but video= has none (a file without an "
                         "audio track, or frames without audio=); leave regenerate_audio unset to generate it")
    a["video"], a["audio"], a["audio_sample_rate"] = frames, wave, rate
    if "sampler" in a["unset"]:  # the reference's retake samples with Euler on every release
        a["sampler"] = "euler"
    _check_full_model(engine, a)


def _check_region_numbers(a: dict) -> None:
    if a["video"] is None:
        raise ValueError("video is required by pipeline='retake' (the source clip: a file path or (F, H, W, 3) "
                         "frames), got None")
    for k in ("start_time", "end_time"):
        if a[k] is None:
            raise ValueError(f"{k} is required by pipeline='retake' (seconds; [start_time, end_time) is "
                             f"regenerated), got None")
        a[k] = check_float(k, a[k], 0.0)
    if a["start_time"] >= a["end_time"]:
        raise ValueError(f"start_time must be < end_time (the region [start_time, end_time) in seconds), got "
                         f"start_time={a['start_time']}, end_time={a['end_time']}")


def _read_clip(a: dict):
    """-> (frames (F, H, W, 3) uint8 or float, fps, waveform (C, S) or None, its rate or None)."""
    video = a["video"]
    if isinstance(video, (str, os.PathLike)):
        if a["audio"] is not None:
            raise ValueError("audio= is the audio of (F, H, W, 3) frames video=; a file's own audio track is "
                             "used (got audio= with a path video=)")
        return _read_file(Path(video).expanduser())
    return _check_frames(video), a["fps"], a["audio"], a["audio_sample_rate"]


def _read_file(path: Path):
    import av

    from ...media import read_media
    if not path.is_file():
        raise ValueError(f"video: no file at {str(path)!r}")
    try:
        frames, fps, wave, rate = read_media(path)
    except (av.error.FFmpegError, IndexError, ValueError) as e:  # IndexError: no video stream
        raise ValueError(f"video: cannot read {str(path)!r} as a video ({type(e).__name__}: {e})") from None
    return frames, Fraction(fps), (None if wave is None else torch.from_numpy(wave)), rate


def _check_frames(video):
    if not isinstance(video, (np.ndarray, torch.Tensor)):
        raise ValueError(f"video must be a file path or (F, H, W, 3) frames (numpy or torch), got "
                         f"{type(video).__name__}")
    if video.ndim != 4 or video.shape[-1] != 3:
        raise ValueError(f"video frames must be (F, H, W, 3) RGB, got shape {tuple(video.shape)}")
    x = torch.as_tensor(video)
    if x.dtype == torch.uint8:
        return video.detach().cpu() if isinstance(video, torch.Tensor) else video
    if not x.is_floating_point():
        raise ValueError(f"video frames must be uint8 or floating point in [0, 1], got {x.dtype}")
    if not torch.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ValueError(f"video frames must be finite and in [0, 1] (floating point), got values in "
                         f"[{x.min().item():g}, {x.max().item():g}]")
    return x.detach().cpu()


def _check_clip(a: dict, n: int, h: int, w: int, fps) -> None:
    """The reference's own checks (8k+1 frames, sides multiples of 32), then the request's size."""
    if (n - 1) % 8:
        raise ValueError(f"video: the clip has {n} frames; retake needs 8k+1 (e.g. 97, 121): trim it to "
                         f"{8 * ((n - 1) // 8) + 1} frames")
    if h % 32 or w % 32:
        raise ValueError(f"video: the clip is {w}x{h} (width x height); retake needs both multiples of 32")
    fps_given = a["fps"]
    if (n, h, w) != (a["num_frames"], a["height"], a["width"]) or not math.isclose(fps, fps_given, rel_tol=1e-6):
        raise ValueError(f"video: the clip is {n} frames of {w}x{h} at {float(fps):g} fps, and retake regenerates "
                         f"it at that size: pass num_frames={n}, height={h}, width={w}, frame_rate={fps}; got "
                         f"num_frames={a['num_frames']}, height={a['height']}, width={a['width']}, "
                         f"frame_rate={a['frame_rate']}")
    duration = n / float(fps)
    if a["end_time"] > duration:
        raise ValueError(f"end_time must be <= the clip's duration {duration:.4g} s ({n} frames at {float(fps):g} "
                         f"fps), got end_time={a['end_time']}")


def _check_full_model(engine, a: dict) -> None:
    """num_inference_steps given (and no sigmas=): the full model's LTX-2 schedule, built now into
    ``sigmas`` and checked as its sampler will check it."""
    if "num_inference_steps" in a["unset"] or a["sigmas"] is not None:
        return
    steps = check_int("num_inference_steps", a["num_inference_steps"], 2, MAX_STEPS,
                      "MAX_STEPS: the scheduler's 1000 training timesteps")
    shape = (1, 0, (a["num_frames"] - 1) // 8 + 1, a["height"] // 32, a["width"] // 32)
    sigmas = stage1_sigmas(False, None, steps, a["shift_tokens"], shape)
    check_schedule(sigmas, a["sampler"], "num_inference_steps")
    a["sigmas"] = tuple(sigmas.tolist())
