"""LTX-2 audio VAE (diffusers: AutoencoderKLLTX2Audio; ltx-core: AudioEncoder / AudioDecoder) and
its mel front-end (ltx-core's AudioProcessor) without torchaudio.

The VAE works on log-mel spectrograms laid out (B, channels=2 (stereo), time, mel). Convolutions are
causal along time: a k-tap conv sees k-1 zero rows before the first frame and none after it. Time
and mel are each compressed 4x (two stride-2 levels for ch_mult (1, 2, 4)); the encoder's first 8
of 16 output channels are the latent mean.

The references compute the same network; they differ in where the latent statistics apply:

* ltx-core's encoder returns *normalized* latents and its decoder takes normalized latents;
  diffusers' VAE works on raw latents and the pipeline (de)normalizes outside. ``encode`` /
  ``decode`` here are the raw diffusers versions; ``normalize`` / ``denormalize`` are the statistics
  step, applied on the packed (B, T, C*mel) layout (feature index c * mel + f) in both references.
  So ltx-core's encoder == ``normalize(encode(mel))`` and its decoder == ``decode(denormalize(z))``.
* The statistics hold ``base_channels`` entries (the checkpoint's shape); they can only be used
  when that equals latent_channels * latent mel bins (128 = 8 * 16 in the release).

Pixel norm is computed in fp32 (``common.pixel_norm``) where both references use the input dtype;
in fp32 that is a 1-ulp difference, in bf16 ours is the more accurate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import require
from ..ops import TORCH_OPS, Ops
from .common import pixel_norm

__all__ = ["AudioVAEConfig", "AudioVAE", "pack_audio_latents", "unpack_audio_latents", "slaney_mel_filterbank",
           "log_mel_spectrogram", "resample", "N_FFT"]

_NORM_EPS = 1e-6
# Both references hard-code this factor when they size the decoder output, whatever ch_mult says.
_TIME_FACTOR = 4
N_FFT = 1024  # STFT size and window length of the mel front-end (ltx-core default, every release)


@dataclass(frozen=True)
class AudioVAEConfig:
    """AutoencoderKLLTX2Audio (LTX-2.0; 2.3 and 2.5 reuse it)."""

    base_channels: int = 128  # width of the first level; also the size of latents_mean / latents_std
    output_channels: int = 2  # decoded mel channels (stereo)
    ch_mult: tuple[int, ...] = (1, 2, 4)  # width multipliers per level; a stride-2 resampler between levels
    num_res_blocks: int = 2  # resnets per encoder level (decoder levels have one more)
    attn_resolutions: tuple[int, ...] | None = None  # nominal sizes whose levels get self-attention
    in_channels: int = 2  # encoded mel channels (stereo)
    resolution: int = 256  # nominal input size; only decides where attn_resolutions applies
    latent_channels: int = 8
    norm_type: str = "pixel"  # RMS over channels, no weights
    causality_axis: str = "height"  # causal along dim 2 = time of a (B, C, T, mel) spectrogram
    dropout: float = 0.0  # training only
    mid_block_add_attention: bool = False
    sample_rate: int = 16000  # of the waveform the mel front-end sees
    mel_hop_length: int = 160  # samples per mel frame (100 frames/s)
    is_causal: bool = True  # metadata for latent timing; no effect on the network
    mel_bins: int | None = 64
    double_z: bool = True  # encoder emits mean and log-variance

    def validate(self, source: str) -> None:
        require(self.norm_type == "pixel", source, "norm_type",
                "must be 'pixel' (group norm is only defined for non-causal layouts)", self.norm_type)
        require(self.causality_axis == "height", source, "causality_axis",
                "must be 'height' (time-causal, the only layout released)", self.causality_axis)
        require(self.double_z, source, "double_z", "must be true (both references take the first half of the "
                "encoder output as the mean)", self.double_z)
        require(isinstance(self.mel_bins, int) and self.mel_bins > 0, source, "mel_bins",
                "must be a positive integer", self.mel_bins)
        require(len(self.ch_mult) >= 1 and all(m > 0 for m in self.ch_mult), source, "ch_mult",
                "must be a non-empty list of positive integers", self.ch_mult)
        for key in ("base_channels", "output_channels", "in_channels", "latent_channels", "resolution",
                    "sample_rate", "mel_hop_length"):
            require(getattr(self, key) > 0, source, key, "must be positive", getattr(self, key))
        require(self.num_res_blocks >= 1, source, "num_res_blocks", "must be >= 1", self.num_res_blocks)

    @property
    def latent_mel_bins(self) -> int:
        return _downsampled(self.mel_bins, len(self.ch_mult) - 1)

    def latent_frames(self, mel_frames: int) -> int:
        """Encoder output length for ``mel_frames`` input frames (4k + 1 -> k + 1 for 3 levels)."""
        return _downsampled(mel_frames, len(self.ch_mult) - 1)

    @staticmethod
    def mel_frames(latent_frames: int) -> int:
        """Decoder output length: 4 * T_lat - 3 (the causal first latent frame yields one mel frame)."""
        return max(_TIME_FACTOR * latent_frames - (_TIME_FACTOR - 1), 1)


def _downsampled(n: int, times: int) -> int:
    """Size after ``times`` stride-2 3-tap convs padded with 2 zeros in total: ceil(n / 2) each."""
    for _ in range(times):
        n = (n - 1) // 2 + 1
    return n


class CausalConv2d(nn.Module):
    """Conv2d zero-padded k-1 rows before the first time step and symmetrically along mel; the
    weights live in ``.conv`` so keys read ``<name>.conv.weight``."""

    def __init__(self, cin: int, cout: int, k: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k)
        self.pad = ((k - 1) // 2, (k - 1) - (k - 1) // 2, k - 1, 0)  # (mel left, mel right, time before, after)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, self.pad))


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv -> norm -> SiLU -> conv, plus a 1x1 ``nin_shortcut`` when widths differ."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = CausalConv2d(cin, cout, 3)
        self.conv2 = CausalConv2d(cout, cout, 3)
        self.nin_shortcut = CausalConv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(pixel_norm(x, _NORM_EPS)))
        h = self.conv2(F.silu(pixel_norm(h, _NORM_EPS)))
        return (x if self.nin_shortcut is None else self.nin_shortcut(x)) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over all (time, mel) positions (not causal), 1x1-conv projections."""

    def __init__(self, c: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))
        self.ops = ops

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, f = x.shape
        h = pixel_norm(x, _NORM_EPS)
        q, k, v = (proj(h).flatten(2).transpose(1, 2) for proj in (self.q, self.k, self.v))  # (B, T*F, C)
        out = self.ops.attention(q, k, v, 1, None)
        return x + self.proj_out(out.transpose(1, 2).reshape(b, c, t, f))


class Downsample(nn.Module):
    """Stride-2 3x3 conv after zero padding 2 time rows in front and 1 mel column on the right."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 2, 0)))


class Upsample(nn.Module):
    """Nearest x2, causal conv, then the first time row dropped: n rows -> 2n - 1, the inverse of the
    encoder's n -> ceil(n / 2) (the first output rows see only the first input row)."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = CausalConv2d(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))[:, :, 1:]


class Stage(nn.Module):
    """One resolution level: ``block`` resnets, an ``attn`` after each when the level has attention,
    and an optional resampler (``downsample`` in the encoder, ``upsample`` in the decoder)."""

    def __init__(self, cin: int, cout: int, num_blocks: int, attention: bool, ops: Ops):
        super().__init__()
        self.block = nn.ModuleList(ResnetBlock(cin if i == 0 else cout, cout) for i in range(num_blocks))
        self.attn = nn.ModuleList(AttnBlock(cout, ops) for _ in range(num_blocks if attention else 0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.block):
            x = block(x)
            if len(self.attn):
                x = self.attn[i](x)
        return x


class MidBlock(nn.Module):
    def __init__(self, c: int, attention: bool, ops: Ops):
        super().__init__()
        self.block_1 = ResnetBlock(c, c)
        self.attn_1 = AttnBlock(c, ops) if attention else None
        self.block_2 = ResnetBlock(c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.block_1(x)
        if self.attn_1 is not None:
            x = self.attn_1(x)
        return self.block_2(x)


def _out(x: torch.Tensor, conv: CausalConv2d) -> torch.Tensor:
    return conv(F.silu(pixel_norm(x, _NORM_EPS)))


class Encoder(nn.Module):
    def __init__(self, cfg: AudioVAEConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        attn = set(cfg.attn_resolutions or ())
        self.conv_in = CausalConv2d(cfg.in_channels, cfg.base_channels, 3)
        self.down = nn.ModuleList()
        cin, res = cfg.base_channels, cfg.resolution
        for level, mult in enumerate(cfg.ch_mult):
            stage = Stage(cin, cfg.base_channels * mult, cfg.num_res_blocks, res in attn, ops)
            cin = cfg.base_channels * mult
            if level < len(cfg.ch_mult) - 1:
                stage.downsample = Downsample(cin)
                res //= 2
            self.down.append(stage)
        self.mid = MidBlock(cin, cfg.mid_block_add_attention, ops)
        self.conv_out = CausalConv2d(cin, 2 * cfg.latent_channels, 3)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(mel)
        for stage in self.down:
            x = stage(x)
            if hasattr(stage, "downsample"):
                x = stage.downsample(x)
        return _out(self.mid(x), self.conv_out)


class Decoder(nn.Module):
    def __init__(self, cfg: AudioVAEConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        attn = set(cfg.attn_resolutions or ())
        n = len(cfg.ch_mult)
        cin, res = cfg.base_channels * cfg.ch_mult[-1], cfg.resolution // 2 ** (n - 1)
        self.conv_in = CausalConv2d(cfg.latent_channels, cin, 3)
        self.mid = MidBlock(cin, cfg.mid_block_add_attention, ops)
        stages = []
        for level in reversed(range(n)):
            cout = cfg.base_channels * cfg.ch_mult[level]
            stage = Stage(cin, cout, cfg.num_res_blocks + 1, res in attn, ops)
            cin = cout
            if level > 0:
                stage.upsample = Upsample(cin)
                res *= 2
            stages.append(stage)
        self.up = nn.ModuleList(reversed(stages))  # up[0] is the finest level, run last
        self.conv_out = CausalConv2d(cin, cfg.output_channels, 3)
        self.out_shape = (cfg.output_channels, cfg.mel_bins)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.mid(self.conv_in(z))
        for stage in reversed(self.up):
            x = stage(x)
            if hasattr(stage, "upsample"):
                x = stage.upsample(x)
        x = _out(x, self.conv_out)
        # Crop, then zero-pad, to the nominal size (a no-op for the released 3-level layout).
        frames, bins = AudioVAEConfig.mel_frames(z.shape[2]), self.out_shape[1]
        x = x[:, : self.out_shape[0], :frames, :bins]
        return F.pad(x, (0, bins - x.shape[3], 0, frames - x.shape[2]))


def pack_audio_latents(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, T, F) -> (B, T, C*F), feature index c * F + f (the transformer's audio tokens)."""
    return latents.transpose(1, 2).flatten(2, 3)


def unpack_audio_latents(tokens: torch.Tensor, channels: int) -> torch.Tensor:
    """(B, T, C*F) -> (B, C, T, F)."""
    return tokens.unflatten(2, (channels, -1)).transpose(1, 2)


class AudioVAE(nn.Module):
    def __init__(self, config: AudioVAEConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        config.validate("AudioVAEConfig")
        self.config = config
        self.encoder = Encoder(config, ops)
        self.decoder = Decoder(config, ops)
        # Dataset statistics of the packed latent features; the checkpoint holds them.
        self.register_buffer("latents_mean", torch.zeros(config.base_channels))
        self.register_buffer("latents_std", torch.ones(config.base_channels))

    def encode(self, mel: torch.Tensor, sample_posterior: bool = False,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Log-mel (B, in_channels, T, mel_bins) -> raw latents (B, latent_channels, T', mel_bins/4).

        The posterior mean (ltx-core always uses it); with ``sample_posterior`` a draw
        mean + exp(logvar / 2) * noise as diffusers' DiagonalGaussianDistribution.sample makes it
        (log-variance clamped to [-30, 20], noise drawn on the generator's device)."""
        cfg = self.config
        _check_4d("AudioVAE.encode", "mel", mel, {1: ("in_channels", cfg.in_channels),
                                                  3: ("mel_bins", cfg.mel_bins)})
        h = self.encoder(mel)
        mean, logvar = h.chunk(2, dim=1)
        if not sample_posterior:
            return mean
        device = generator.device if generator is not None else mean.device
        noise = torch.randn(mean.shape, generator=generator, device=device, dtype=mean.dtype).to(mean.device)
        return mean + torch.exp(0.5 * logvar.clamp(-30.0, 20.0)) * noise

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Raw latents (B, latent_channels, T, mel_bins/4) -> log-mel (B, output_channels, 4T-3, mel_bins)."""
        cfg = self.config
        _check_4d("AudioVAE.decode", "latents", latents, {1: ("latent_channels", cfg.latent_channels),
                                                          3: ("latent mel bins", cfg.latent_mel_bins)})
        return self.decoder(latents)

    def normalize(self, latents: torch.Tensor) -> torch.Tensor:
        """(x - mean) / std on packed features; takes packed (B, T, D) or unpacked (B, C, T, F)."""
        return self._stats("normalize", latents, lambda x, m, s: (x - m) / s)

    def denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        """x * std + mean on packed features; takes packed (B, T, D) or unpacked (B, C, T, F)."""
        return self._stats("denormalize", latents, lambda x, m, s: x * s + m)

    def pack(self, latents: torch.Tensor) -> torch.Tensor:
        return pack_audio_latents(latents)

    def unpack(self, tokens: torch.Tensor) -> torch.Tensor:
        return unpack_audio_latents(tokens, self.config.latent_channels)

    def _stats(self, name: str, latents: torch.Tensor, fn) -> torch.Tensor:
        d = self.latents_mean.numel()
        unpacked = latents.dim() == 4
        x = pack_audio_latents(latents) if unpacked else latents
        if x.dim() != 3 or x.shape[2] != d:
            raise ValueError(f"AudioVAE.{name}: latents must be (B, T, {d}) packed or (B, C, T, F) with C*F = {d} "
                             f"(the size of latents_mean), got shape {tuple(latents.shape)}")
        # The references apply the statistics in the latents' dtype.
        x = fn(x, self.latents_mean.to(x), self.latents_std.to(x))
        return unpack_audio_latents(x, latents.shape[1]) if unpacked else x

    def waveform_to_mel(self, waveform: torch.Tensor, sample_rate: int) -> torch.Tensor:
        """(B, C, samples) at ``sample_rate`` -> log-mel (B, C, T, mel_bins) ready for ``encode``.

        Resampled to ``config.sample_rate`` first; computed in fp32 (fp64 input stays fp64) and
        returned in the input dtype."""
        cfg = self.config
        if not waveform.is_floating_point():
            raise ValueError(f"AudioVAE.waveform_to_mel: waveform must be floating point, got {waveform.dtype}")
        x = waveform if waveform.dtype == torch.float64 else waveform.float()
        x = resample(x, sample_rate, cfg.sample_rate)
        return log_mel_spectrogram(x, cfg.sample_rate, N_FFT, cfg.mel_hop_length, cfg.mel_bins).to(waveform.dtype)


def _check_4d(where: str, arg: str, x: torch.Tensor, dims: dict[int, tuple[str, int]]) -> None:
    if x.dim() != 4 or x.shape[2] < 1:
        raise ValueError(f"{where}: {arg} must be a (B, C, T, F) tensor with T >= 1, got shape {tuple(x.shape)}")
    for dim, (what, want) in dims.items():
        if x.shape[dim] != want:
            raise ValueError(f"{where}: {arg} dim {dim} must equal {what} = {want}, got shape {tuple(x.shape)}")


# ---------------------------------------------------------------- mel front-end (no torchaudio)


def _hz_to_mel_slaney(f: torch.Tensor) -> torch.Tensor:
    """Linear below 1 kHz (3 mels per 200 Hz), logarithmic above (27 mels per factor 6.4)."""
    lin = f * 3.0 / 200.0
    log = 15.0 + torch.log(f.clamp(min=1000.0) / 1000.0) * (27.0 / math.log(6.4))
    return torch.where(f >= 1000.0, log, lin)


def _mel_to_hz_slaney(m: torch.Tensor) -> torch.Tensor:
    lin = m * 200.0 / 3.0
    log = 1000.0 * torch.exp((m - 15.0) * (math.log(6.4) / 27.0))
    return torch.where(m >= 15.0, log, lin)


def slaney_mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int, f_min: float = 0.0,
                          f_max: float | None = None) -> torch.Tensor:
    """(n_freqs, n_mels) float64 triangles on the Slaney mel scale, each scaled to unit area
    (2 / band width), over STFT bins spaced evenly from 0 to sample_rate // 2."""
    f_max = sample_rate / 2.0 if f_max is None else f_max
    freqs = torch.linspace(0.0, sample_rate // 2, n_freqs, dtype=torch.float64)
    edges = torch.tensor([f_min, f_max], dtype=torch.float64)
    m_lo, m_hi = _hz_to_mel_slaney(edges).tolist()
    f_pts = _mel_to_hz_slaney(torch.linspace(m_lo, m_hi, n_mels + 2, dtype=torch.float64))
    width = f_pts[1:] - f_pts[:-1]
    rise = (freqs[:, None] - f_pts[None, :-2]) / width[:-1]
    fall = (f_pts[None, 2:] - freqs[:, None]) / width[1:]
    fb = torch.clamp(torch.minimum(rise, fall), min=0.0)
    return fb * (2.0 / (f_pts[2:] - f_pts[:-2]))


def log_mel_spectrogram(waveform: torch.Tensor, sample_rate: int = 16000, n_fft: int = N_FFT,
                        hop_length: int = 160, n_mels: int = 64) -> torch.Tensor:
    """(B, C, samples) -> log(clamp(mel, 1e-5)) laid out (B, C, frames, n_mels), frames = 1 + samples // hop.

    torchaudio's MelSpectrogram as ltx-core configures it: periodic Hann window of n_fft, centred
    frames with reflect padding, magnitude (power 1), Slaney mel scale and norm over 0..sr/2.
    Computed in fp32 (fp64 for fp64 input), returned in the input dtype."""
    if waveform.dim() != 3:
        raise ValueError(f"log_mel_spectrogram: waveform must be (B, C, samples), got shape {tuple(waveform.shape)}")
    if not waveform.is_floating_point():
        raise ValueError(f"log_mel_spectrogram: waveform must be floating point, got {waveform.dtype}")
    if waveform.shape[-1] <= n_fft // 2:
        raise ValueError(f"log_mel_spectrogram: waveform needs more than n_fft // 2 = {n_fft // 2} samples for "
                         f"reflect padding, got {waveform.shape[-1]}")
    dtype = torch.float64 if waveform.dtype == torch.float64 else torch.float32
    x = waveform.to(dtype).reshape(-1, waveform.shape[-1])
    window = torch.hann_window(n_fft, periodic=True, dtype=dtype, device=x.device)
    spec = torch.stft(x, n_fft, hop_length, n_fft, window, center=True, pad_mode="reflect", return_complex=True).abs()
    fb = slaney_mel_filterbank(n_fft // 2 + 1, n_mels, sample_rate).to(device=x.device, dtype=dtype)
    mel = torch.matmul(spec.transpose(1, 2), fb)  # (B*C, frames, n_mels)
    mel = torch.log(mel.clamp(min=1e-5))
    return mel.reshape(*waveform.shape[:2], *mel.shape[1:]).to(waveform.dtype)


def resample(waveform: torch.Tensor, orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
             rolloff: float = 0.99) -> torch.Tensor:
    """Band-limited resampling along the last dim (torchaudio's default "sinc_interp_hann").

    With the rates reduced by their gcd and b = rolloff * min(orig, new) (twice the cutoff),
    y[m] = sum_n x[n] K(n / orig - m / new), K(tau) = (b / orig) sinc(b tau) cos^2(pi b tau / (2 w))
    for |b tau| <= w = lowpass_filter_width, zero outside; sinc(u) = sin(pi u) / (pi u). The signal is
    zero beyond its ends and the output has ceil(len * new / orig) samples. The kernel is built in
    fp64 (torchaudio: in the input dtype) and applied in the input dtype."""
    for name, rate in (("orig_freq", orig_freq), ("new_freq", new_freq)):
        if not isinstance(rate, int) or rate <= 0:
            raise ValueError(f"resample: {name} must be a positive integer, got {rate!r}")
    if not waveform.is_floating_point():
        raise ValueError(f"resample: waveform must be floating point, got {waveform.dtype}")
    if lowpass_filter_width <= 0 or not 0.0 < rolloff <= 1.0:
        raise ValueError(f"resample: lowpass_filter_width must be > 0 and rolloff in (0, 1], got "
                         f"{lowpass_filter_width!r}, {rolloff!r}")
    if orig_freq == new_freq:
        return waveform
    g = math.gcd(orig_freq, new_freq)
    orig, new = orig_freq // g, new_freq // g
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    taps = torch.arange(-width, width + orig, dtype=torch.float64) / orig
    t = (taps[None, :] - torch.arange(new, dtype=torch.float64)[:, None] / new) * base  # (new, taps)
    t = t.clamp(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * (math.pi / (2 * lowpass_filter_width))) ** 2
    arg = t * math.pi
    sinc = torch.where(arg == 0, torch.ones_like(arg), torch.sin(arg) / torch.where(arg == 0, 1.0, arg))
    kernel = (sinc * window * (base / orig)).to(device=waveform.device, dtype=waveform.dtype)
    length = waveform.shape[-1]
    x = F.pad(waveform.reshape(-1, 1, length), (width, width + orig))
    y = F.conv1d(x, kernel[:, None], stride=orig)  # (N, new, blocks): phase j of block i is sample i*new + j
    y = y.transpose(1, 2).reshape(y.shape[0], -1)[:, : math.ceil(new * length / orig)]
    return y.reshape(*waveform.shape[:-1], y.shape[-1])
