"""BigVGAN-v2 building blocks of the LTX-2.3/2.5 vocoder (models/vocoder.py): SnakeBeta, the
alias-free kaiser-sinc resamplers around it, torchaudio's Hann-sinc interpolator, and convolutions
that compute in their input's dtype (weights cast per op), so the vocoder with bandwidth extension
runs in fp32 over bf16 weights as ltx-core does; with input and weights in one dtype nothing is cast.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Conv1d", "ConvTranspose1d", "SnakeBeta", "kaiser_sinc_filter", "hann_sinc_filter", "Upsample",
           "Downsample", "AntiAliased"]

_SNAKE_EPS = 1e-9  # both references add it to the amplitude before dividing


class Conv1d(nn.Conv1d):
    """nn.Conv1d computing in its input's dtype (same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return self._conv_forward(x, self.weight.to(x.dtype), bias)


class ConvTranspose1d(nn.ConvTranspose1d):
    """nn.ConvTranspose1d computing in its input's dtype (same state dict)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.conv_transpose1d(x, self.weight.to(x.dtype), bias, self.stride, self.padding, self.output_padding,
                                  self.groups, self.dilation)



class SnakeBeta(nn.Module):
    """x + sin(alpha x)^2 / amplitude per channel, alpha and beta stored as logs (BigVGAN-v2); the
    amplitude is beta, or alpha itself without beta (Snake)."""

    def __init__(self, channels: int, use_beta: bool = True):
        super().__init__()
        self.alpha = nn.Parameter(torch.zeros(channels))
        self.beta = nn.Parameter(torch.zeros(channels)) if use_beta else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, L)
        alpha = self.alpha.to(x.dtype).view(-1, 1).exp()
        amplitude = alpha if self.beta is None else self.beta.to(x.dtype).view(-1, 1).exp()
        # Same operation order as both references (1 / (a + eps) first), so fp32 results are bit-equal.
        return x + (1.0 / (amplitude + _SNAKE_EPS)) * torch.sin(x * alpha).pow(2)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> torch.Tensor:
    """Low-pass FIR (kernel_size,) summing to 1: sinc at ``cutoff`` (cycles per sample) under a
    Kaiser window whose beta follows Kaiser's formula for a transition band of 4 * half_width
    (BigVGAN's alias-free filter)."""
    half = kernel_size // 2
    attenuation = 2.285 * (half - 1) * math.pi * 4 * half_width + 7.95
    if attenuation > 50.0:
        beta = 0.1102 * (attenuation - 8.7)
    elif attenuation >= 21.0:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21.0)
    else:
        beta = 0.0
    window = torch.kaiser_window(kernel_size, beta=beta, periodic=False)
    # Taps sit at half-integers for even sizes (the filter's centre falls between two samples).
    t = torch.arange(-half, half) + 0.5 if kernel_size % 2 == 0 else torch.arange(kernel_size) - half
    t = 2 * cutoff * t
    sinc = torch.where(t == 0, torch.ones_like(t), torch.sin(math.pi * t) / math.pi / t)
    taps = 2 * cutoff * window * sinc
    return taps / taps.sum()


def hann_sinc_filter(ratio: int) -> torch.Tensor:
    """The interpolation filter torchaudio's resample uses for an integer ``ratio`` (sinc with
    rolloff 0.99, 6 zero crossings, Hann window), (2 * 7 * ratio + 1,) taps."""
    rolloff, zeros = 0.99, 6
    width = math.ceil(zeros / rolloff)
    t = (torch.arange(2 * width * ratio + 1) / ratio - width) * rolloff
    window = torch.cos(t.clamp(-zeros, zeros) * math.pi / zeros / 2) ** 2
    return torch.sinc(t) * window * rolloff / ratio


class Upsample(nn.Module):
    """Zero-stuffed x ratio upsampling through an FIR (transposed grouped conv), the edges padded by
    replication; ``filter`` is (1, 1, K). kaiser: BigVGAN's anti-aliasing filter (a checkpoint
    buffer); hann: the BWE's skip-path resampler (computed, not stored)."""

    def __init__(self, ratio: int, kernel_size: int = 12, window: str = "kaiser"):
        super().__init__()
        self.ratio = ratio
        if window == "kaiser":
            taps = kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size)
            self.pad = kernel_size // ratio - 1
            self.crop = (self.pad * ratio + (kernel_size - ratio) // 2,
                         self.pad * ratio + (kernel_size - ratio + 1) // 2)
            self.register_buffer("filter", taps.view(1, 1, -1))
        else:
            # Computed on the CPU even when the model is built on meta: no checkpoint holds it.
            with torch.device("cpu"):
                taps = hann_sinc_filter(ratio)
            width = (taps.numel() - 1) // (2 * ratio)
            self.pad = width
            self.crop = (2 * width * ratio, taps.numel() - ratio)
            self.register_buffer("filter", taps.view(1, 1, -1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, L) -> (B, C, L * ratio)
        channels = x.shape[1]
        if self.filter.device != x.device:
            # The Hann filter stays on the CPU when strict loading places the weights on another
            # device (it is not in the checkpoint): move it once, not on every call.
            self.filter = self.filter.to(x.device)
        x = F.pad(x, (self.pad, self.pad), mode="replicate")
        taps = self.filter.to(x.dtype).expand(channels, -1, -1)
        x = self.ratio * F.conv_transpose1d(x, taps, stride=self.ratio, groups=channels)
        return x[..., self.crop[0]:-self.crop[1]]


class Downsample(nn.Module):
    """Kaiser-sinc low-pass and keep every ratio-th sample, edges padded by replication."""

    def __init__(self, ratio: int, kernel_size: int = 12):
        super().__init__()
        self.ratio = ratio
        self.pads = (kernel_size // 2 + kernel_size % 2 - 1, kernel_size // 2)
        self.register_buffer("filter", kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size).view(1, 1, -1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, L * ratio) -> (B, C, L)
        channels = x.shape[1]
        taps = self.filter.to(x.dtype).expand(channels, -1, -1)
        return F.conv1d(F.pad(x, self.pads, mode="replicate"), taps, stride=self.ratio, groups=channels)


class AntiAliased(nn.Module):
    """An activation run at ``ratio`` times the rate, so the harmonics it creates are filtered out
    before the signal returns to its rate (BigVGAN's Activation1d)."""

    def __init__(self, act: nn.Module, ratio: int, kernel_size: int):
        super().__init__()
        self.upsample = Upsample(ratio, kernel_size)
        self.act = act
        self.downsample = Downsample(ratio, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(self.act(self.upsample(x)))
