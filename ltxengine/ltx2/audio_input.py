"""A user's audio -> the normalized, packed audio latents an LTX-2 generation is conditioned on
(audio-to-video: the audio latents stay fixed while the video is denoised).

The steps follow ltx-pipelines' A2VidPipelineTwoStage: decode the file, resample to the VAE's rate,
log-mel, encode (posterior mean), keep the first T latent frames, normalize with the VAE's
statistics, pack to tokens. T = round(num_frames / frame_rate * latents per second), where one latent
frame spans ``time compression`` mel frames of ``mel_hop_length`` samples at the VAE's rate
(16000 / 160 / 4 = 25 per second for LTX-2).
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch

from ..media import read_audio
from ..models.audio_vae import AudioVAE, AudioVAEConfig

__all__ = ["as_waveform", "audio_latent_frames", "load_audio_condition"]

# Audio read past the video's end. The released VAE is causal in time, so latent frame k sees mel
# frames <= 4k only, and mel frame i sees samples up to i * hop + n_fft / 2 (0.032 s at 16 kHz)
# plus the resampling filter's reach (a few ms): 1 s more covers that with room, so the kept
# latents equal those of the whole file without encoding all of a long song.
_CONTEXT_S = 1.0


def _time_compression(cfg: AudioVAEConfig) -> int:
    """Mel frames per latent frame: each level after the first halves time (4 for LTX-2)."""
    return 2 ** (len(cfg.ch_mult) - 1)


def audio_latent_frames(config: AudioVAEConfig, num_frames: int, frame_rate: float) -> int:
    """Audio latent frames T for a video of ``num_frames`` at ``frame_rate``: its duration times
    sample_rate / mel_hop_length / time compression, rounded (Python's round, as ltx-core's
    AudioLatentShape.from_duration). 121 frames at 24 fps -> 126 for LTX-2."""
    _check_video(num_frames, frame_rate)
    per_second = config.sample_rate / config.mel_hop_length / _time_compression(config)
    return round(num_frames / float(frame_rate) * per_second)


def _check_video(num_frames, frame_rate) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise ValueError(f"load_audio_condition: num_frames must be a positive integer, got {num_frames!r}")
    if isinstance(frame_rate, bool) or not isinstance(frame_rate, (int, float, np.integer, np.floating)) \
            or not math.isfinite(frame_rate) or frame_rate <= 0:
        raise ValueError(f"load_audio_condition: frame_rate must be a positive finite number, got {frame_rate!r}")


def load_audio_condition(audio_vae: AudioVAE, audio, *, num_frames: int, frame_rate: float, start: float = 0.0,
                         sample_rate: int | None = None) -> torch.Tensor:
    """Normalized packed audio latents (1, T, latent_channels * latent mel bins) for a generation
    of ``num_frames`` at ``frame_rate`` (T from ``audio_latent_frames``), in the VAE's dtype and
    on its device.

    ``audio``: a file path (any container with an audio stream, read from ``start`` seconds), or a
    float waveform (channels, samples), numpy or torch, at ``sample_rate`` Hz (``start`` skips that
    much of it). Any rate is resampled to the VAE's (16 kHz for LTX-2); mono is duplicated for a
    stereo VAE and stereo averaged for a mono one. The audio from ``start`` must last at least as
    long as the video: shorter audio is refused, not padded."""
    cfg = audio_vae.config
    t_lat = audio_latent_frames(cfg, num_frames, frame_rate)
    video_s = num_frames / float(frame_rate)
    if t_lat < 1:
        raise ValueError(f"load_audio_condition: the video ({num_frames} frames at {frame_rate} fps = "
                         f"{video_s:.4f} s) is shorter than one audio latent frame")
    if cfg.in_channels not in (1, 2):
        raise ValueError(f"load_audio_condition: audio_vae.config.in_channels must be 1 or 2, got {cfg.in_channels}")
    # Attention layers see the whole clip, so with them only the whole remainder gives ltx's latents.
    causal = not cfg.attn_resolutions and not cfg.mid_block_add_attention
    wave, rate = _waveform(audio, start, sample_rate, video_s + _CONTEXT_S if causal else None)
    _check_audio(wave, rate, start, video_s, f"{num_frames} frames at {frame_rate} fps")
    wave = _match_channels(wave, cfg.in_channels)
    param = next(audio_vae.parameters())
    with torch.no_grad():
        mel = audio_vae.waveform_to_mel(wave[None].to(param.device), rate).to(param.dtype)
        latents = audio_vae.encode(mel)
    if latents.shape[2] < t_lat:  # cannot happen for audio as long as the video; guards the arithmetic
        raise RuntimeError(f"load_audio_condition: encoder gave {latents.shape[2]} latent frames, need {t_lat}")
    return audio_vae.pack(audio_vae.normalize(latents[:, :, :t_lat]))


def _waveform(audio, start, sample_rate, duration) -> tuple[torch.Tensor, int]:
    """-> float32 (channels, samples) from ``start`` (at most ``duration`` s when given), and its rate."""
    if isinstance(audio, (str, os.PathLike)):
        if sample_rate is not None:
            raise ValueError(f"load_audio_condition: sample_rate is for waveforms (a file carries its own rate), "
                             f"got sample_rate={sample_rate!r} with a path")
        wave, rate = read_audio(audio, start, duration)
        return torch.from_numpy(wave), rate
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ValueError(f"load_audio_condition: sample_rate must be a positive integer (Hz) with a waveform, "
                         f"got {sample_rate!r}")
    if isinstance(start, bool) or not isinstance(start, (int, float)) or not math.isfinite(start) or start < 0:
        raise ValueError(f"load_audio_condition: start must be a finite number of seconds >= 0, got {start!r}")
    wave = as_waveform(audio, "load_audio_condition: audio")
    first = round(start * int(sample_rate))
    end = None if duration is None else first + round(duration * int(sample_rate))  # as read_audio
    return wave[:, first:end].float(), int(sample_rate)


def as_waveform(audio, name: str = "audio") -> torch.Tensor:
    """A floating-point waveform (channels, samples), numpy or torch -> a tensor of it (shared
    memory where possible); ValueError naming ``name`` for anything else (the dtype, the shape,
    NaN or inf). Any sample count passes, 0 included (the caller knows how much it needs)."""
    if isinstance(audio, torch.Tensor):
        wave = audio.detach()
    else:
        array = np.asarray(audio) if not isinstance(audio, (str, bytes)) else np.asarray(None)
        if array.dtype.kind != "f":
            got = array.dtype if array.dtype != object else type(audio).__name__
            raise ValueError(f"{name} waveform must be floating point in [-1, 1], got {got}")
        wave = torch.from_numpy(array)
    if not wave.is_floating_point():
        raise ValueError(f"{name} waveform must be floating point in [-1, 1], got {wave.dtype}")
    if wave.dim() != 2:
        raise ValueError(f"{name} waveform must be (channels, samples), got shape {tuple(wave.shape)}")
    if not torch.isfinite(wave).all():
        raise ValueError(f"{name} waveform must be finite (found NaN or inf)")
    return wave


def _check_audio(wave: torch.Tensor, rate: int, start: float, video_s: float, video: str) -> None:
    if wave.shape[0] not in (1, 2):
        raise ValueError(f"load_audio_condition: audio must have 1 or 2 channels, got {wave.shape[0]} "
                         f"(shape {tuple(wave.shape)})")
    if wave.shape[1] == 0:
        raise ValueError(f"load_audio_condition: audio is empty from start={start} s (0 samples)")
    if wave.shape[1] < video_s * rate:
        raise ValueError(f"load_audio_condition: audio is {wave.shape[1] / rate:.3f} s long from start={start} s, "
                         f"shorter than the video's {video_s:.3f} s ({video}); trim the video or give longer audio")


def _match_channels(wave: torch.Tensor, channels: int) -> torch.Tensor:
    if wave.shape[0] == channels:
        return wave
    return wave.expand(2, -1) if channels == 2 else wave.mean(0, keepdim=True)
