"""LTX-2.0 vocoder: HiFi-GAN-style generator from the audio VAE's log-mel to a 24 kHz stereo waveform
(diffusers: LTX2Vocoder with the 2.0 config; ltx-core: Vocoder with resblock "1").

The stereo mel (B, 2, T, 64) becomes 128 input channels, channel-major (index = stereo * 64 + mel).
Each stage is LeakyReLU(0.1) -> ConvTranspose1d (x factor, half the width) -> the mean of one
ResBlock1 per kernel size, all fed the same input. After the last stage a LeakyReLU with torch's
default slope 0.01 (both references; not the configured 0.1), conv_out, tanh. The 2.3/2.5 BigVGAN-v2
vocoder with anti-aliased SnakeBeta activations and the bandwidth-extension stage is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, parse_config, require
from ..ops import TORCH_OPS, Ops

__all__ = ["VocoderConfig", "Vocoder", "vocoder_config_from_diffusers"]

_FINAL_SLOPE = 0.01  # nn.LeakyReLU's default, used by both references before conv_out


@dataclass(frozen=True)
class VocoderConfig:
    """LTX2Vocoder (diffusers config.json keys; defaults = LTX-2.0)."""

    in_channels: int = 128  # stereo x mel bins
    hidden_channels: int = 1024  # conv_in width; halved by every upsampler
    out_channels: int = 2  # stereo waveform
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    upsample_factors: tuple[int, ...] = (6, 5, 2, 2, 2)  # product 240: 100 mel frames/s -> 24 kHz
    resnet_kernel_sizes: tuple[int, ...] = (3, 7, 11)  # one ResBlock1 per size in every stage
    resnet_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    act_fn: str = "leaky_relu"  # "snake" / "snakebeta": the 2.3 BigVGAN vocoder (refused)
    leaky_relu_negative_slope: float = 0.1
    antialias: bool = False  # 2.3 anti-aliased activations (refused)
    antialias_ratio: int = 2  # only used with antialias
    antialias_kernel_size: int = 12  # only used with antialias
    final_act_fn: str | None = "tanh"  # "tanh", "clamp" (to [-1, 1]) or None
    final_bias: bool = True
    output_sampling_rate: int = 24000

    def __post_init__(self):
        # JSON lists -> tuples so the frozen config stays hashable
        object.__setattr__(self, "resnet_dilations", tuple(tuple(d) for d in self.resnet_dilations))

    def validate(self, source: str) -> None:
        require(self.act_fn == "leaky_relu", source, "act_fn", "must be 'leaky_relu' (the LTX-2.3 BigVGAN-style "
                "vocoder with snake activations is not supported)", self.act_fn)
        require(not self.antialias, source, "antialias", "must be false (LTX-2.3 anti-aliased activations are "
                "not supported)", self.antialias)
        require(self.final_act_fn in ("tanh", "clamp", None), source, "final_act_fn",
                "must be 'tanh', 'clamp' or null", self.final_act_fn)
        n = len(self.upsample_factors)
        require(n >= 1 and len(self.upsample_kernel_sizes) == n, source, "upsample_kernel_sizes",
                f"needs one entry per upsample factor ({n})", self.upsample_kernel_sizes)
        require(len(self.resnet_kernel_sizes) >= 1 and len(self.resnet_dilations) == len(self.resnet_kernel_sizes),
                source, "resnet_dilations", f"needs one list per resnet kernel size ({len(self.resnet_kernel_sizes)})",
                self.resnet_dilations)
        require(self.hidden_channels % 2 ** n == 0 and self.hidden_channels > 0, source, "hidden_channels",
                f"must be a positive multiple of 2**{n} (each upsampler halves it)", self.hidden_channels)
        for key in ("in_channels", "out_channels", "output_sampling_rate"):
            require(getattr(self, key) > 0, source, key, "must be positive", getattr(self, key))

    @property
    def upsample_factor(self) -> int:
        """Waveform samples per mel frame."""
        return prod(self.upsample_factors)


def vocoder_config_from_diffusers(data: dict, source: str) -> VocoderConfig:
    """Parse a diffusers vocoder config.json, refusing the 2.3 LTX2VocoderWithBWE class by name."""
    if data.get("_class_name", "LTX2Vocoder") != "LTX2Vocoder":
        raise ConfigError(f"{source}: _class_name must be 'LTX2Vocoder' (the LTX-2.0 vocoder); "
                          f"{data.get('_class_name')!r} (LTX-2.3 vocoder with bandwidth extension) is not supported")
    return parse_config(VocoderConfig, data, source)


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation d, x += conv2(lrelu(conv1_d(lrelu(x)))), 'same' padding."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], slope: float):
        super().__init__()
        self.convs1 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding="same")
                                    for d in dilations)
        self.convs2 = nn.ModuleList(nn.Conv1d(channels, channels, kernel_size, padding="same") for _ in dilations)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            x = x + conv2(F.leaky_relu(conv1(F.leaky_relu(x, self.slope)), self.slope))
        return x


class Vocoder(nn.Module):
    def __init__(self, config: VocoderConfig, ops: Ops = TORCH_OPS):  # ops unused: convs only
        super().__init__()
        config.validate("VocoderConfig")
        self.config = config
        c = config.hidden_channels
        self.conv_in = nn.Conv1d(config.in_channels, c, 7, padding=3)
        self.upsamplers = nn.ModuleList()
        self.resnets = nn.ModuleList()
        for factor, k in zip(config.upsample_factors, config.upsample_kernel_sizes):
            self.upsamplers.append(nn.ConvTranspose1d(c, c // 2, k, stride=factor, padding=(k - factor) // 2))
            c //= 2
            for rk, dil in zip(config.resnet_kernel_sizes, config.resnet_dilations):
                self.resnets.append(ResBlock(c, rk, dil, config.leaky_relu_negative_slope))
        self.conv_out = nn.Conv1d(c, config.out_channels, 7, padding=3, bias=config.final_bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, C, T, F) with C * F = in_channels -> waveform (B, out_channels, T * upsample_factor)."""
        cfg = self.config
        if mel.dim() != 4 or mel.shape[1] * mel.shape[3] != cfg.in_channels or mel.shape[2] < 1:
            raise ValueError(f"Vocoder: mel must be (B, C, T, F) with T >= 1 and C * F = in_channels = "
                             f"{cfg.in_channels}, got shape {tuple(mel.shape)}")
        x = self.conv_in(mel.transpose(2, 3).flatten(1, 2))
        n = len(cfg.resnet_kernel_sizes)
        for i, up in enumerate(self.upsamplers):
            x = up(F.leaky_relu(x, cfg.leaky_relu_negative_slope))
            # Stacked mean (not a running sum) to round exactly like both references.
            x = torch.stack([block(x) for block in self.resnets[i * n:(i + 1) * n]]).mean(0)
        x = self.conv_out(F.leaky_relu(x, _FINAL_SLOPE))
        if cfg.final_act_fn == "tanh":
            return torch.tanh(x)
        if cfg.final_act_fn == "clamp":
            return x.clamp(-1.0, 1.0)
        return x
