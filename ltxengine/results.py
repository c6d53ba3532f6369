"""What a generation returns or raises, for both engine families: ``GenerationResult``,
``GenerationCancelled``, ``STOP``, and ``step_hook``, which turns the user's callback into the
samplers' per-step hook."""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from .components.decode import quantize_frames
from .media import write_mp4, write_wav

__all__ = ["STOP", "GenerationCancelled", "GenerationResult", "step_hook"]

# A callback returning STOP cancels the generation (GenerationCancelled is raised to the caller).
STOP = "stop"


class GenerationCancelled(Exception):
    """Raised by ``generate`` when the callback returned ``STOP`` (or raised this itself)."""

    def __init__(self, stage: str = "", step: int = 0, total: int = 0):
        super().__init__(f"generation cancelled by the callback at {stage} step {step}/{total}")
        self.stage, self.step, self.total = stage, step, total


@dataclass
class GenerationResult:
    """frames: float32 (F, H, W, 3) in [0, 1], before quantization; video: the same as uint8;
    latents: the final normalized latents (1, C, F', H', W') float32; seed: the seed of the call
    (drawn at random when none was given; None when a generator was passed).
    A latent-only result (LTX-2's output_type="latent", ``from_latents``) has frames and video
    None and carries the latents in diffusers' form instead: latents denormalized (the VAE's
    space) and audio_latents (1, C, T, M) denormalized, what LTX-2's latents= / audio_latents=
    take."""

    frames: np.ndarray | None
    video: np.ndarray | None
    latents: torch.Tensor
    fps: Fraction
    audio: np.ndarray | None = None
    sample_rate: int | None = None
    seed: int | None = None
    timings: dict[str, float] = field(default_factory=dict)
    audio_latents: torch.Tensor | None = None

    @classmethod
    def from_frames(cls, frames, latents: torch.Tensor, fps: Fraction, *, seed: int | None,
                    timings: dict[str, float], audio: np.ndarray | None = None,
                    sample_rate: int | None = None) -> "GenerationResult":
        """The result of float frames (numpy or a tensor) in [0, 1]: quantized to uint8, latents
        moved to the host as float32 (both families end their generation here)."""
        frames = frames.cpu().numpy() if isinstance(frames, torch.Tensor) else frames
        video = quantize_frames(frames)
        return cls(frames=frames, video=video, latents=latents.float().cpu(), fps=fps, audio=audio,
                   sample_rate=sample_rate, seed=seed, timings=timings)

    @classmethod
    def from_latents(cls, latents: torch.Tensor, audio_latents: torch.Tensor | None, fps: Fraction, *,
                     seed: int | None, timings: dict[str, float]) -> "GenerationResult":
        """A latent-only result (nothing decoded): the latents float32 on the host."""
        return cls(frames=None, video=None, latents=latents.float().cpu(), fps=fps, seed=seed, timings=timings,
                   audio_latents=None if audio_latents is None else audio_latents.float().cpu())

    def save(self, path, crf: int = 18) -> Path:
        """H.264 (libx264, yuv420p) mp4 at the exact frame rate, with the AAC audio track when the
        result has audio (LTX-2); written to a temporary file and renamed, so a failure never
        leaves a broken file. An audio-only result (LTX-2's pipeline="text-to-audio": frames and
        video None, latents the audio latents (1, C, T, M)) is written as a 16-bit WAV, to a path
        ending in .wav."""
        if self.video is None and self.audio is not None:
            if Path(path).suffix.lower() != ".wav":
                raise ValueError(f"save: this result holds audio only (pipeline='text-to-audio'): it is written as "
                                 f"WAV, to a path ending in .wav, got {str(path)!r}")
            return write_wav(path, self.audio, self.sample_rate)
        if self.video is None:
            raise ValueError("save: this result holds latents only (output_type='latent'): nothing was decoded, "
                             "so there are no frames to write; keep result.latents / result.audio_latents "
                             "(e.g. safetensors.torch.save_file) instead")
        return write_mp4(path, self.video, self.fps, crf=crf, audio=self.audio, sample_rate=self.sample_rate)


def step_hook(callback: Callable | None, stage: str):
    """``callback(stage, step, total, timestep=, latents=)`` as a sampler hook ``hook(step, total,
    t, latents)`` (None without a callback); the callback returning STOP, or raising
    GenerationCancelled without a position, raises GenerationCancelled at this stage and step."""
    if callback is None:
        return None

    def hook(step, total, t, latents):
        try:
            stop = callback(stage, step, total, timestep=t, latents=latents) == STOP
        except GenerationCancelled as e:
            if e.stage:  # raised with its own position: pass it on unchanged
                raise
            raise GenerationCancelled(stage, step, total) from None
        if stop:
            raise GenerationCancelled(stage, step, total)
    return hook
