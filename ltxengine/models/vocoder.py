"""LTX-2 vocoders: log-mel from the audio VAE -> stereo waveform.

``Vocoder`` is the generator both releases use (diffusers: LTX2Vocoder; ltx-core: Vocoder). The
stereo mel (B, 2, T, 64) becomes 128 input channels, channel-major (index = stereo * 64 + mel);
each stage upsamples (ConvTranspose1d, x factor, half the width) and averages one residual block
per kernel size, all fed the same input; then a last activation, conv_out and the final act.

- LTX-2.0 (``act_fn="leaky_relu"``, HiFi-GAN, resblock "1"): LeakyReLU(0.1) before every
  upsampler and inside the blocks; the last activation is LeakyReLU with torch's default slope
  0.01 (both references; not the configured 0.1); tanh. 24 kHz.
- LTX-2.3/2.5 (``act_fn="snakebeta"``, BigVGAN-v2, resblock "AMP1"): no activation before the
  upsamplers; every block activation and the last one are SnakeBeta (log-scale alpha, beta),
  anti-aliased: x2 kaiser-sinc upsampling, the activation, low-pass and x2 downsampling. The
  filters are checkpoint buffers (the blocks are in models/bigvgan.py).

``VocoderWithBWE`` (2.3/2.5; diffusers: LTX2VocoderWithBWE; ltx-core: VocoderWithBWE) runs that
BigVGAN to 16 kHz, then a second generator that adds the band above 8 kHz at 48 kHz:

1. ``vocoder``: mel (B, 2, T, 64) -> x (B, 2, N) at input_sampling_rate, clamped to [-1, 1]
   (ltx-core; see ``VocoderWithBWEConfig.final_act_fn``).
2. x is zero-padded at the end to a multiple of hop_length; its causal log-mel: an STFT as a
   strided conv with the checkpoint's windowed DFT basis (left padding window - hop), magnitude,
   the checkpoint's mel filterbank, log(max(., 1e-5)).
3. ``bwe_generator`` (another Vocoder) turns that mel into a residual at output_sampling_rate.
4. skip = x upsampled by ratio = output / input rate with torchaudio's Hann-sinc filter;
   out = clamp(residual + skip, -1, 1), cut to N * ratio samples.

It runs in fp32 whatever the weights' dtype and returns the input's dtype (ltx-core at 400fd31:
bf16 "degrades spectral metrics by 40-90%"; diffusers runs in the weights' dtype).
``build_vocoder`` builds either from its parsed config.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from math import prod

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, parse_config, require
from ..ops import TORCH_OPS, Ops
from .bigvgan import AntiAliased, Conv1d, ConvTranspose1d, SnakeBeta, Upsample

__all__ = ["VocoderConfig", "Vocoder", "VocoderWithBWEConfig", "VocoderWithBWE", "vocoder_config_from_diffusers",
           "build_vocoder"]

_FINAL_SLOPE = 0.01  # nn.LeakyReLU's default, used by both references before conv_out
_LOG_FLOOR = 1e-5  # BWE mel energies are clamped to it before the log (both references)


@dataclass(frozen=True)
class VocoderConfig:
    """LTX2Vocoder (diffusers config.json keys; defaults = LTX-2.0)."""

    in_channels: int = 128  # stereo x mel bins
    hidden_channels: int = 1024  # conv_in width; halved by every upsampler
    out_channels: int = 2  # stereo waveform
    upsample_kernel_sizes: tuple[int, ...] = (16, 15, 8, 4, 4)
    upsample_factors: tuple[int, ...] = (6, 5, 2, 2, 2)  # product 240: 100 mel frames/s -> 24 kHz
    resnet_kernel_sizes: tuple[int, ...] = (3, 7, 11)  # one residual block per size in every stage
    resnet_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    act_fn: str = "leaky_relu"  # "snakebeta" (2.3/2.5 BigVGAN-v2) or "snake" (alpha only in the blocks)
    leaky_relu_negative_slope: float = 0.1  # leaky_relu only
    antialias: bool = False  # snake activations in the blocks up/down-sampled around (the last one always is)
    antialias_ratio: int = 2  # snake only: up/down-sampling factor around each activation
    antialias_kernel_size: int = 12  # snake only: kaiser-sinc filter taps
    final_act_fn: str | None = "tanh"  # "tanh", "clamp" (to [-1, 1]) or None
    final_bias: bool = True
    output_sampling_rate: int = 24000

    def __post_init__(self):
        # JSON lists -> tuples so the frozen config stays hashable
        object.__setattr__(self, "resnet_dilations", tuple(tuple(d) for d in self.resnet_dilations))

    def validate(self, source: str, prefix: str = "") -> None:
        """``prefix``: how the keys are spelled in the file (``bwe_`` for the BWE generator)."""
        def check(cond, key, rule, value):
            require(cond, source, prefix + key, rule, value)
        check(self.act_fn in ("leaky_relu", "snake", "snakebeta"), "act_fn",
              "must be 'leaky_relu', 'snake' or 'snakebeta'", self.act_fn)
        # diffusers would anti-alias a LeakyReLU (sharing one module across a block's second
        # activations); ltx-core has no such block and no release uses it.
        check(not (self.antialias and self.act_fn == "leaky_relu"), "antialias",
              "must be false with act_fn 'leaky_relu'", self.antialias)
        check(self.final_act_fn in ("tanh", "clamp", None), "final_act_fn", "must be 'tanh', 'clamp' or null",
              self.final_act_fn)
        n = len(self.upsample_factors)
        check(n >= 1 and len(self.upsample_kernel_sizes) == n, "upsample_kernel_sizes",
              f"needs one entry per upsample factor ({n})", self.upsample_kernel_sizes)
        check(len(self.resnet_kernel_sizes) >= 1 and len(self.resnet_dilations) == len(self.resnet_kernel_sizes),
              "resnet_dilations", f"needs one list per resnet kernel size ({len(self.resnet_kernel_sizes)})",
              self.resnet_dilations)
        check(self.hidden_channels % 2 ** n == 0 and self.hidden_channels > 0, "hidden_channels",
              f"must be a positive multiple of 2**{n} (each upsampler halves it)", self.hidden_channels)
        for key in ("in_channels", "out_channels", "output_sampling_rate", "antialias_ratio",
                    "antialias_kernel_size"):
            check(getattr(self, key) > 0, key, "must be positive", getattr(self, key))

    @property
    def upsample_factor(self) -> int:
        """Waveform samples per mel frame."""
        return prod(self.upsample_factors)

    @property
    def snake(self) -> bool:
        return self.act_fn != "leaky_relu"


class ResBlock(nn.Module):
    """HiFi-GAN ResBlock1: per dilation d, x += conv2(lrelu(conv1_d(lrelu(x)))), 'same' padding."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], slope: float):
        super().__init__()
        self.convs1 = nn.ModuleList(Conv1d(channels, channels, kernel_size, dilation=d, padding="same")
                                    for d in dilations)
        self.convs2 = nn.ModuleList(Conv1d(channels, channels, kernel_size, padding="same") for _ in dilations)
        self.slope = slope

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            x = x + conv2(F.leaky_relu(conv1(F.leaky_relu(x, self.slope)), self.slope))
        return x


class AMPBlock(nn.Module):
    """BigVGAN's AMPBlock1: per dilation d, x += conv2(act2(conv1_d(act1(x)))), snake activations."""

    def __init__(self, channels: int, kernel_size: int, dilations: tuple[int, ...], cfg: VocoderConfig):
        super().__init__()
        self.convs1 = nn.ModuleList(Conv1d(channels, channels, kernel_size, dilation=d, padding="same")
                                    for d in dilations)
        self.convs2 = nn.ModuleList(Conv1d(channels, channels, kernel_size, padding="same") for _ in dilations)
        self.acts1 = nn.ModuleList(_snake(channels, cfg, cfg.antialias) for _ in dilations)
        self.acts2 = nn.ModuleList(_snake(channels, cfg, cfg.antialias) for _ in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for act1, conv1, act2, conv2 in zip(self.acts1, self.convs1, self.acts2, self.convs2):
            x = x + conv2(act2(conv1(act1(x))))
        return x


def _snake(channels: int, cfg: VocoderConfig, antialias: bool, use_beta: bool | None = None) -> nn.Module:
    act = SnakeBeta(channels, cfg.act_fn == "snakebeta" if use_beta is None else use_beta)
    return AntiAliased(act, cfg.antialias_ratio, cfg.antialias_kernel_size) if antialias else act


class Vocoder(nn.Module):
    def __init__(self, config: VocoderConfig, ops: Ops = TORCH_OPS):  # ops unused: convs only
        super().__init__()
        if not isinstance(config, VocoderConfig):
            raise TypeError(f"Vocoder needs a VocoderConfig, got {type(config).__name__} (build_vocoder builds "
                            "the vocoder with bandwidth extension)")
        config.validate("VocoderConfig")
        self.config = config
        c = config.hidden_channels
        self.conv_in = Conv1d(config.in_channels, c, 7, padding=3)
        self.upsamplers = nn.ModuleList()
        self.resnets = nn.ModuleList()
        for factor, k in zip(config.upsample_factors, config.upsample_kernel_sizes):
            self.upsamplers.append(ConvTranspose1d(c, c // 2, k, stride=factor, padding=(k - factor) // 2))
            c //= 2
            for rk, dil in zip(config.resnet_kernel_sizes, config.resnet_dilations):
                self.resnets.append(AMPBlock(c, rk, dil, config) if config.snake
                                    else ResBlock(c, rk, dil, config.leaky_relu_negative_slope))
        if config.snake:
            # Both references: the last activation is an anti-aliased SnakeBeta, whatever act_fn says.
            self.act_out = _snake(c, config, antialias=True, use_beta=True)
        self.conv_out = Conv1d(c, config.out_channels, 7, padding=3, bias=config.final_bias)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, C, T, F) with C * F = in_channels -> waveform (B, out_channels, T * upsample_factor)."""
        cfg = self.config
        if mel.dim() != 4 or mel.shape[1] * mel.shape[3] != cfg.in_channels or mel.shape[2] < 1:
            raise ValueError(f"Vocoder: mel must be (B, C, T, F) with T >= 1 and C * F = in_channels = "
                             f"{cfg.in_channels}, got shape {tuple(mel.shape)}")
        x = self.conv_in(mel.transpose(2, 3).flatten(1, 2))
        n = len(cfg.resnet_kernel_sizes)
        for i, up in enumerate(self.upsamplers):
            x = up(x if cfg.snake else F.leaky_relu(x, cfg.leaky_relu_negative_slope))
            # Stacked mean (not a running sum) to round exactly like both references.
            x = torch.stack([block(x) for block in self.resnets[i * n:(i + 1) * n]]).mean(0)
        x = self.conv_out(self.act_out(x) if cfg.snake else F.leaky_relu(x, _FINAL_SLOPE))
        if cfg.final_act_fn == "tanh":
            return torch.tanh(x)
        if cfg.final_act_fn == "clamp":
            return x.clamp(-1.0, 1.0)
        return x


@dataclass(frozen=True)
class VocoderWithBWEConfig:
    """LTX2VocoderWithBWE (diffusers config.json keys; defaults = the LTX-2.3 release, which 2.5 reuses).
    The first group is the 16 kHz BigVGAN stage, ``bwe_*`` the bandwidth-extension generator."""

    in_channels: int = 128  # stereo x 64 mel bins of the audio VAE
    hidden_channels: int = 1536
    out_channels: int = 2
    upsample_kernel_sizes: tuple[int, ...] = (11, 4, 4, 4, 4, 4)
    upsample_factors: tuple[int, ...] = (5, 2, 2, 2, 2, 2)  # product 160: 100 mel frames/s -> 16 kHz
    resnet_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resnet_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    act_fn: str = "snakebeta"
    leaky_relu_negative_slope: float = 0.1
    antialias: bool = True
    antialias_ratio: int = 2
    antialias_kernel_size: int = 12
    # ltx-core applies the final activation to stage 1 (apply_final_activation defaults to true;
    # the release says use_tanh_at_final false, so a clamp); diffusers' converter writes null.
    final_act_fn: str | None = "clamp"
    final_bias: bool = False
    bwe_in_channels: int = 128  # out_channels x num_mel_channels
    bwe_hidden_channels: int = 512
    bwe_out_channels: int = 2  # = out_channels (residual + skip)
    bwe_upsample_kernel_sizes: tuple[int, ...] = (12, 11, 4, 4, 4)
    bwe_upsample_factors: tuple[int, ...] = (6, 5, 2, 2, 2)  # product 240 = hop_length x rate ratio
    bwe_resnet_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    bwe_resnet_dilations: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    bwe_act_fn: str = "snakebeta"
    bwe_leaky_relu_negative_slope: float = 0.1
    bwe_antialias: bool = True
    bwe_antialias_ratio: int = 2
    bwe_antialias_kernel_size: int = 12
    bwe_final_act_fn: str | None = None  # ltx-core never applies one to the BWE generator
    bwe_final_bias: bool = False
    filter_length: int = 512  # STFT size of the BWE's mel front end
    hop_length: int = 80  # 200 mel frames/s at 16 kHz
    window_length: int = 512  # must equal filter_length (the causal padding is window - hop)
    num_mel_channels: int = 64
    input_sampling_rate: int = 16000  # stage 1's rate
    output_sampling_rate: int = 48000  # the waveform's rate (what the engine muxes)

    def __post_init__(self):
        for key in ("resnet_dilations", "bwe_resnet_dilations"):
            object.__setattr__(self, key, tuple(tuple(d) for d in getattr(self, key)))

    def stage1(self) -> VocoderConfig:
        return VocoderConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(VocoderConfig)
                                if f.name != "output_sampling_rate"}, output_sampling_rate=self.input_sampling_rate)

    def bwe(self) -> VocoderConfig:
        return VocoderConfig(**{f.name: getattr(self, "bwe_" + f.name) for f in dataclasses.fields(VocoderConfig)
                                if f.name != "output_sampling_rate"}, output_sampling_rate=self.output_sampling_rate)

    @property
    def ratio(self) -> int:
        """Output samples per stage-1 sample."""
        return self.output_sampling_rate // self.input_sampling_rate

    @property
    def upsample_factor(self) -> int:
        """Waveform samples per mel frame (480 for the release: 100 frames/s -> 48 kHz)."""
        return prod(self.upsample_factors) * self.ratio

    def validate(self, source: str) -> None:
        self.stage1().validate(source)
        self.bwe().validate(source, prefix="bwe_")
        require(self.output_sampling_rate % self.input_sampling_rate == 0, source, "output_sampling_rate",
                f"must be a multiple of input_sampling_rate ({self.input_sampling_rate})", self.output_sampling_rate)
        require(self.window_length == self.filter_length, source, "window_length",
                f"must equal filter_length ({self.filter_length}) so the mel has one frame per hop",
                self.window_length)
        require(self.filter_length >= self.hop_length, source, "hop_length",
                f"must be at most filter_length ({self.filter_length})", self.hop_length)
        require(self.bwe_in_channels == self.out_channels * self.num_mel_channels, source, "bwe_in_channels",
                f"must be out_channels x num_mel_channels ({self.out_channels * self.num_mel_channels})",
                self.bwe_in_channels)
        require(self.bwe_out_channels == self.out_channels, source, "bwe_out_channels",
                f"must equal out_channels ({self.out_channels})", self.bwe_out_channels)
        need = self.hop_length * self.output_sampling_rate // self.input_sampling_rate
        require(self.bwe().upsample_factor == need, source, "bwe_upsample_factors",
                f"must multiply to hop_length x output/input rate ({need}), the skip path's samples per mel frame",
                self.bwe_upsample_factors)


class CausalSTFT(nn.Module):
    """|STFT| as a strided conv with the checkpoint's windowed DFT basis: rows 0..F-1 the real
    parts, F..2F-1 the imaginary ones; padded on the left only, so frame i ends at sample i*hop.
    ``inverse_basis`` is stored in the checkpoint but not used here."""

    def __init__(self, filter_length: int, hop_length: int, window_length: int):
        super().__init__()
        self.hop_length, self.window_length = hop_length, window_length
        freqs = filter_length // 2 + 1
        self.register_buffer("forward_basis", torch.zeros(2 * freqs, 1, filter_length))
        self.register_buffer("inverse_basis", torch.zeros(2 * freqs, 1, filter_length))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, F, L / hop)
        wave = F.pad(wave.unsqueeze(1), (max(0, self.window_length - self.hop_length), 0))
        spec = F.conv1d(wave, self.forward_basis.to(wave.dtype), stride=self.hop_length)
        real, imag = spec.chunk(2, dim=1)
        return torch.sqrt(real ** 2 + imag ** 2)


class MelSTFT(nn.Module):
    """Causal log-mel of the BWE's input with the checkpoint's filterbank ``mel_basis`` (M, F)."""

    def __init__(self, filter_length: int, hop_length: int, window_length: int, num_mel_channels: int):
        super().__init__()
        self.stft_fn = CausalSTFT(filter_length, hop_length, window_length)
        self.register_buffer("mel_basis", torch.zeros(num_mel_channels, filter_length // 2 + 1))

    def forward(self, wave: torch.Tensor) -> torch.Tensor:  # (N, L) -> (N, M, L / hop)
        magnitude = self.stft_fn(wave)
        return torch.log(torch.clamp(torch.matmul(self.mel_basis.to(magnitude.dtype), magnitude), min=_LOG_FLOOR))


class VocoderWithBWE(nn.Module):
    def __init__(self, config: VocoderWithBWEConfig, ops: Ops = TORCH_OPS):  # ops unused: convs only
        super().__init__()
        config.validate("VocoderWithBWEConfig")
        self.config = config
        self.vocoder = Vocoder(config.stage1())
        self.bwe_generator = Vocoder(config.bwe())
        self.mel_stft = MelSTFT(config.filter_length, config.hop_length, config.window_length,
                                config.num_mel_channels)
        self.resampler = Upsample(config.ratio, window="hann")

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """Log-mel (B, C, T, F) with C * F = in_channels -> waveform (B, out_channels, T * upsample_factor),
        upsample_factor = prod(upsample_factors) x output / input rate."""
        cfg = self.config
        x = self.vocoder(mel.float())
        batch, channels, samples = x.shape
        x = F.pad(x, (0, -samples % cfg.hop_length))
        low_mel = self.mel_stft(x.flatten(0, 1)).unflatten(0, (batch, channels))  # (B, C, M, frames)
        residual = self.bwe_generator(low_mel.transpose(2, 3))
        out = torch.clamp(residual + self.resampler(x), -1, 1)
        return out[..., :samples * cfg.ratio].to(mel.dtype)


def vocoder_config_from_diffusers(data: dict, source: str) -> VocoderConfig | VocoderWithBWEConfig:
    """Parse a diffusers vocoder config.json by its _class_name: LTX2Vocoder or LTX2VocoderWithBWE.
    diffusers' converter writes ``final_act_fn: null`` for the stage-1 vocoder of 2.3/2.5 where
    ltx-core clamps; there null is read as the reference's clamp (a deliberate difference)."""
    name = data.get("_class_name", "LTX2Vocoder")
    if name == "LTX2Vocoder":
        return parse_config(VocoderConfig, data, source)
    if name != "LTX2VocoderWithBWE":
        raise ConfigError(f"{source}: _class_name must be 'LTX2Vocoder' or 'LTX2VocoderWithBWE', got {name!r}")
    if "final_act_fn" in data and data["final_act_fn"] is None:
        data = dict(data, final_act_fn="clamp")
    return parse_config(VocoderWithBWEConfig, data, source)


def build_vocoder(config: VocoderConfig | VocoderWithBWEConfig, ops: Ops = TORCH_OPS) -> nn.Module:
    """The vocoder a parsed config describes (what loading builds on meta)."""
    return (VocoderWithBWE if isinstance(config, VocoderWithBWEConfig) else Vocoder)(config, ops)
