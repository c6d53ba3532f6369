"""LTX causal video VAEs: LTX-Video 0.9.x (diffusers: AutoencoderKLLTXVideo) and LTX-2
(AutoencoderKLLTX2Video; Lightricks' ltx-core VideoEncoder / VideoDecoder).

Parameter and buffer names equal diffusers' state-dict keys. Layouts:

* 0.9.0: strided-conv downsamplers, channel changes in ``conv_out`` / ``conv_in`` resnets.
* 0.9.1: decoder conditioned on the decode timestep (``time_embedder`` + ``scale_shift_table``)
  and per-resnet spatial noise injection (``per_channel_scale1/2``); residual upsamplers that
  halve channels (``upsample_factor`` 2).
* 0.9.5+: ``LTXVideo095DownBlock3D`` whose downsamplers are space-to-depth with a mean-pooled
  residual (spatial / temporal / spatiotemporal strides); the channel change happens there.
* LTX-2: the 0.9.5 blocks with two parameters changed, both held by ``ConvSpec``: the decoder
  pads space by reflection (encoder: zeros), and the encoder's conv_in width is latent_channels
  (diffusers' ``block_out_channels`` then lists only the down blocks' outputs). Up blocks may
  upsample in space, time or both (``upsample_type``). See ``LTX2VideoVAE`` for the ltx-core
  conventions (normalized latents, decode noise).
* LTX-2.3 / 2.5 (``VAE_LTX23``): the same blocks in another layout (a width-keeping last down block,
  four non-residual up blocks of which one upsamples time and one space, zero padding everywhere).

Tiling reproduces diffusers' ``tiled_encode`` / ``tiled_decode`` / ``_temporal_tiled_*``
including their quirks (see ``decode``), so outputs match diffusers' tiled paths.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from math import prod

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, VideoVAEConfig, require
from ..ops import TORCH_OPS, Ops
from .common import PIXEL_NORM_EPS, CausalConv3d, TimestepEmbedder, pixel_norm

__all__ = ["VideoVAE", "TilingConfig", "LTX2VideoVAE", "LTX2VideoVAEConfig", "VAE_LTX2", "VAE_LTX23", "ConvSpec"]

_DOWN_STRIDES = {"conv": (2, 2, 2), "spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}
_UP_STRIDES = {"spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}
# Down blocks whose downsampler is space-to-depth and changes the width (no conv_out resnet).
_S2D_BLOCKS = ("LTXVideo095DownBlock3D", "LTX2VideoDownBlock3D")
_PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
DECODE_TIMESTEP = 0.05  # ltx-core VideoDecoder.decode_timestep
DECODE_NOISE_SCALE = 0.025  # ltx-core VideoDecoder.decode_noise_scale


@dataclass(frozen=True)
class TilingConfig:
    """Tile sizes and strides in pixel space (diffusers' ``enable_tiling`` arguments and defaults).

    A dimension is tiled only when the input is larger than its tile. Neighbouring tiles overlap by
    ``tile - stride`` and are cross-faded linearly over the overlap.
    """

    tile_sample_min_height: int = 512
    tile_sample_min_width: int = 512
    tile_sample_min_num_frames: int = 16
    tile_sample_stride_height: int = 448
    tile_sample_stride_width: int = 448
    tile_sample_stride_num_frames: int = 8

    def __post_init__(self):
        for dim in ("height", "width", "num_frames"):
            tile, stride = f"tile_sample_min_{dim}", f"tile_sample_stride_{dim}"
            t, s = getattr(self, tile), getattr(self, stride)
            if not isinstance(s, int) or s <= 0:
                raise ValueError(f"TilingConfig.{stride} must be a positive integer, got {s!r}")
            if not isinstance(t, int) or t < s:
                raise ValueError(f"TilingConfig.{stride} must be <= {tile} ({t!r}), got {s!r}")

    def check(self, spatial_ratio: int, temporal_ratio: int) -> None:
        """Every size must map to whole latent pixels/frames, else tiles and blends misalign."""
        for dim, ratio in (("height", spatial_ratio), ("width", spatial_ratio), ("num_frames", temporal_ratio)):
            for field in (f"tile_sample_min_{dim}", f"tile_sample_stride_{dim}"):
                value = getattr(self, field)
                if value % ratio:
                    raise ValueError(f"TilingConfig.{field} must be a multiple of the compression ratio {ratio}, "
                                     f"got {value}")


def _expand_bools(value, n: int):
    """diffusers accepts one bool for a per-block tuple."""
    return (value,) * n if isinstance(value, bool) else value


@dataclass(frozen=True)
class LTX2VideoVAEConfig:
    """AutoencoderKLLTX2Video's config.json keys; defaults are the LTX-2.0 release as diffusers'
    conversion script writes it (scripts/convert_ltx2_to_diffusers.py, version "2.0").

    Two defaults differ from diffusers' class defaults on purpose: ``decoder_causal`` (the class
    says True, the release and ltx-core use False) and the compression ratios (the class's
    fallback 2**sum(scaling) gives 64 / 16; the release ratios 32 / 8 follow from the strides).
    ``timestep_conditioning`` is False as in diffusers' class and converter; the original
    single-file header decides it for ltx-core (absent there means True, see
    ``ltxengine.loading.ltx2_vae.vae_config_from_original``).
    """

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128  # also conv_in's width
    block_out_channels: tuple[int, ...] = (256, 512, 1024, 2048)  # down block outputs
    down_block_types: tuple[str, ...] = ("LTX2VideoDownBlock3D",) * 4
    decoder_block_out_channels: tuple[int, ...] = (256, 512, 1024)  # up block inputs, encoder-side first
    layers_per_block: tuple[int, ...] = (4, 6, 6, 2, 2)  # last: encoder mid block
    decoder_layers_per_block: tuple[int, ...] = (5, 5, 5, 5)  # encoder-side first, last: mid block
    # The four per-block bool tuples also take one bool for every block, as diffusers' class does
    # (expanded in __post_init__; the attribute is always a tuple).
    spatio_temporal_scaling: tuple[bool, ...] | bool = (True, True, True, True)
    decoder_spatio_temporal_scaling: tuple[bool, ...] | bool = (True, True, True)
    decoder_inject_noise: tuple[bool, ...] | bool = (False, False, False, False)
    downsample_type: tuple[str, ...] = ("spatial", "temporal", "spatiotemporal", "spatiotemporal")
    upsample_type: tuple[str, ...] = ("spatiotemporal",) * 3  # in decoding order, unlike the other tuples
    upsample_residual: tuple[bool, ...] | bool = (True, True, True)
    upsample_factor: tuple[int, ...] = (2, 2, 2)
    timestep_conditioning: bool = False
    patch_size: int = 4
    patch_size_t: int = 1
    resnet_norm_eps: float = 1e-6
    scaling_factor: float = 1.0
    encoder_causal: bool = True
    decoder_causal: bool = False
    encoder_spatial_padding_mode: str = "zeros"
    decoder_spatial_padding_mode: str = "reflect"
    spatial_compression_ratio: int | None = None  # None: derived from the strides (32 for 2.0)
    temporal_compression_ratio: int | None = None  # None: derived (8 for 2.0)

    def __post_init__(self):
        n_enc, n_dec = len(self.layers_per_block), len(self.decoder_layers_per_block)
        for key, n in (("spatio_temporal_scaling", n_enc - 1), ("decoder_spatio_temporal_scaling", n_dec - 1),
                       ("decoder_inject_noise", n_dec), ("upsample_residual", n_dec - 1)):
            object.__setattr__(self, key, _expand_bools(getattr(self, key), n))

    def validate(self, source: str) -> None:
        widths, n = (self.latent_channels,) + tuple(self.block_out_channels), len(self.block_out_channels)
        require(len(self.layers_per_block) == n + 1, source, "layers_per_block",
                f"needs {n + 1} entries (one per down block plus the mid block)", self.layers_per_block)
        for key in ("down_block_types", "spatio_temporal_scaling", "downsample_type"):
            require(len(getattr(self, key)) >= n, source, key, f"needs at least {n} entries", getattr(self, key))
        for i in range(n):
            kind, scale = self.downsample_type[i], self.spatio_temporal_scaling[i]
            require(self.down_block_types[i] == "LTX2VideoDownBlock3D", source, "down_block_types",
                    "entries must be LTX2VideoDownBlock3D", self.down_block_types[i])
            require(kind in _DOWN_STRIDES, source, "downsample_type", f"entries must be one of {list(_DOWN_STRIDES)}",
                    kind)
            if not scale or kind == "conv":  # these blocks keep their width
                require(widths[i + 1] == widths[i], source, "block_out_channels",
                        f"entry {i} must equal the block's input width {widths[i]} (block {i} has no "
                        "space-to-depth downsampler)", self.block_out_channels)
            else:
                k = prod(_DOWN_STRIDES[kind])
                require(widths[i + 1] % k == 0 and (widths[i] * k) % widths[i + 1] == 0, source, "block_out_channels",
                        f"entry {i} must divide {widths[i]}*{k} and be a multiple of {k}", self.block_out_channels)
        self._validate_decoder(source)
        for key in ("encoder_spatial_padding_mode", "decoder_spatial_padding_mode"):
            require(getattr(self, key) in _PADDING_MODES, source, key, f"must be one of {_PADDING_MODES}",
                    getattr(self, key))
        require(self.patch_size > 0 and self.patch_size_t == 1, source, "patch_size_t",
                "must be 1 (and patch_size positive)", (self.patch_size, self.patch_size_t))

    def _validate_decoder(self, source: str) -> None:
        n = len(self.decoder_block_out_channels)
        for key, size in (("decoder_layers_per_block", n + 1), ("decoder_inject_noise", n + 1)):
            require(len(getattr(self, key)) == size, source, key, f"needs {size} entries", getattr(self, key))
        for key in ("decoder_spatio_temporal_scaling", "upsample_type", "upsample_residual", "upsample_factor"):
            require(len(getattr(self, key)) >= n, source, key, f"needs at least {n} entries", getattr(self, key))
        chs, factor = self.decoder_block_out_channels[::-1], self.upsample_factor[::-1]
        for t in self.upsample_type[:n]:
            require(t in _UP_STRIDES, source, "upsample_type", f"entries must be one of {list(_UP_STRIDES)}", t)
        for i in range(1, n):
            # A width change inside an up block needs a conv_in resnet, whose shortcut norm differs
            # between diffusers (LayerNorm over channels) and ltx-core (GroupNorm(1)); no release has it.
            cin, cout = chs[i - 1] // factor[i - 1] // factor[i], chs[i] // factor[i]
            require(cin == cout, source, "decoder_block_out_channels",
                    f"must give every up block equal input and output widths (up block {i}: {cin} -> {cout})",
                    self.decoder_block_out_channels)


VAE_LTX2 = LTX2VideoVAEConfig()  # LTX-2.0 as diffusers converts it (timestep_conditioning False)
# LTX-2.3 (and 2.5's conv VAE: byte-identical block lists): the last encoder block keeps 1024 channels
# and the decoder has four up blocks (upsample_type in decoding order: 2x2x2 halving, 2x2x2 keeping the
# width, time, space), none residual, zero-padded. As the checkpoint header states it (no decoder
# timestep conditioning) and diffusers' converter writes it (scripts/convert_ltx2_to_diffusers.py "2.3").
VAE_LTX23 = LTX2VideoVAEConfig(
    block_out_channels=(256, 512, 1024, 1024), layers_per_block=(4, 6, 4, 2, 2),
    decoder_block_out_channels=(256, 512, 512, 1024), decoder_layers_per_block=(4, 6, 4, 2, 2),
    decoder_spatio_temporal_scaling=(True,) * 4, decoder_inject_noise=(False,) * 5,
    upsample_type=("spatiotemporal", "spatiotemporal", "temporal", "spatial"), upsample_residual=(False,) * 4,
    upsample_factor=(2, 2, 1, 2), decoder_spatial_padding_mode="zeros")


def _space_to_depth(x: torch.Tensor, st: int, sh: int, sw: int) -> torch.Tensor:
    """(B, C, F, H, W) -> (B, C*st*sh*sw, F/st, H/sh, W/sw), channel index (c, t, h, w)."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c, f // st, st, h // sh, sh, w // sw, sw).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * st * sh * sw, f // st, h // sh, w // sw)


def _depth_to_space(x: torch.Tensor, st: int, sh: int, sw: int) -> torch.Tensor:
    """Inverse of _space_to_depth."""
    b, c, f, h, w = x.shape
    x = x.reshape(b, c // (st * sh * sw), st, sh, sw, f, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // (st * sh * sw), f * st, h * sh, w * sw)


def _embed(embedder: TimestepEmbedder, temb: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return embedder(temb.flatten(), like.dtype).view(like.shape[0], -1, 1, 1, 1)


class PaddedCausalConv3d(CausalConv3d):
    """CausalConv3d whose spatial padding is not zeros (LTX-2 decoder: reflect)."""

    def __init__(self, *args, padding_mode: str, **kwargs):
        super().__init__(*args, **kwargs)
        self.padding_mode = padding_mode

    def forward(self, x: torch.Tensor, **prologue) -> torch.Tensor:
        return self.ops.causal_conv3d(x, self.conv.weight, self.conv.bias, self.stride, self.causal,
                                      spatial_padding_mode=self.padding_mode, **prologue)


@dataclass(frozen=True)
class ConvSpec:
    """What every 3D conv of an encoder or decoder shares: temporal causality, spatial padding mode
    and the ops object. The only place the LTX-Video and LTX-2 conv stacks differ."""

    causal: bool
    padding: str = "zeros"
    ops: Ops = TORCH_OPS

    def __call__(self, cin: int, cout: int, kernel: int = 3, stride=1) -> CausalConv3d:
        if self.padding == "zeros":  # keeps the ops call signature of the LTX-Video path
            return CausalConv3d(cin, cout, kernel, stride=stride, causal=self.causal, ops=self.ops)
        return PaddedCausalConv3d(cin, cout, kernel, stride=stride, causal=self.causal, ops=self.ops,
                                  padding_mode=self.padding)


class ResnetBlock(nn.Module):
    """pixel-norm -> [adaLN] -> SiLU -> conv1 -> [noise] -> pixel-norm -> [adaLN] -> SiLU -> conv2 ->
    [noise], plus a (LayerNorm -> 1x1x1 conv) shortcut when the width changes."""

    def __init__(self, cin: int, cout: int, eps: float, conv: ConvSpec, inject_noise: bool = False,
                 timestep_conditioning: bool = False):
        super().__init__()
        self.conv1 = conv(cin, cout)
        self.conv2 = conv(cout, cout)
        self.norm3 = nn.LayerNorm(cin, eps=eps) if cin != cout else None
        self.conv_shortcut = conv(cin, cout, 1) if cin != cout else None
        self.per_channel_scale1 = nn.Parameter(torch.zeros(cin, 1, 1)) if inject_noise else None
        self.per_channel_scale2 = nn.Parameter(torch.zeros(cin, 1, 1)) if inject_noise else None
        self.scale_shift_table = (nn.Parameter(torch.randn(4, cin) / cin ** 0.5) if timestep_conditioning
                                  else None)

    @staticmethod
    def _noise(h: torch.Tensor, scale: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        # One (H, W) field shared by the batch and all frames, drawn like diffusers so a seeded
        # global RNG reproduces its noise.
        device = generator.device if generator is not None else h.device
        field = torch.randn(h.shape[-2:], generator=generator, device=device, dtype=h.dtype).to(h.device)
        return (field * scale)[None, :, None]

    def forward(self, x, temb=None, generator=None):
        # pixel norm -> [adaLN] -> SiLU is the conv's prologue: one fused pass with fused kernels.
        mod1 = mod2 = {}
        if self.scale_shift_table is not None:
            mod = temb.unflatten(1, (4, -1)) + self.scale_shift_table[None, :, :, None, None, None]
            shift1, scale1, shift2, scale2 = mod.flatten(2).unbind(1)  # each (B, C)
            mod1, mod2 = dict(scale=scale1, shift=shift1), dict(scale=scale2, shift=shift2)
        h = self.conv1(x, norm_eps=PIXEL_NORM_EPS, silu=True, **mod1)
        if self.per_channel_scale1 is not None:
            h = h + self._noise(h, self.per_channel_scale1, generator)
        h = self.conv2(h, norm_eps=PIXEL_NORM_EPS, silu=True, **mod2)
        if self.per_channel_scale2 is not None:
            h = h + self._noise(h, self.per_channel_scale2, generator)
        if self.norm3 is not None:
            # Contiguous like diffusers' (empty) padding concat, so the 1x1x1 conv runs the same
            # kernel and fp32 results stay bit-equal.
            x = self.norm3(x.movedim(1, -1)).movedim(-1, 1).contiguous()
        if self.conv_shortcut is not None:
            x = self.conv_shortcut(x)
        return h + x


class SpaceToDepthDownsampler(nn.Module):
    """0.9.5 downsampler: conv to cout/prod(stride) channels, space-to-depth, plus the input
    space-to-depth'd and mean-pooled over channel groups (a parameter-free residual)."""

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int], conv: ConvSpec):
        super().__init__()
        self.stride = stride
        self.group_size = cin * prod(stride) // cout
        self.conv = conv(cin, cout // prod(stride))

    def forward(self, x):
        # Repeating the first frame makes 8k+1 frames divisible by the temporal stride.
        x = torch.cat([x[:, :, : self.stride[0] - 1], x], dim=2)
        skip = _space_to_depth(x, *self.stride).unflatten(1, (-1, self.group_size)).mean(2)
        return _space_to_depth(self.conv(x), *self.stride) + skip


class Upsampler(nn.Module):
    """conv -> depth-to-space by ``stride``, dropping the first frame when time is upsampled (the
    causal first latent frame is a single pixel frame). ``residual`` adds the depth-to-space'd
    input, channel-tiled to match."""

    def __init__(self, cin: int, conv: ConvSpec, residual: bool, factor: int,
                 stride: tuple[int, int, int] = (2, 2, 2)):
        super().__init__()
        self.stride = stride
        self.residual = residual
        self.repeats = prod(stride) // factor
        self.conv = conv(cin, cin * self.repeats)

    def forward(self, x):
        drop = self.stride[0] - 1
        h = _depth_to_space(self.conv(x), *self.stride)[:, :, drop:]
        if self.residual:
            h = h + _depth_to_space(x, *self.stride).repeat(1, self.repeats, 1, 1, 1)[:, :, drop:]
        return h


class DownBlock(nn.Module):
    """LTXVideoDownBlock3D (resnets, strided conv, channel-changing ``conv_out`` resnet) and
    LTXVideo095DownBlock3D / LTX2VideoDownBlock3D (resnets, downsampler that also changes channels)."""

    def __init__(self, cin, cout, num_layers, eps, scale, conv: ConvSpec, block_type, downsample_type):
        super().__init__()
        s2d = block_type in _S2D_BLOCKS
        self.resnets = nn.ModuleList(ResnetBlock(cin, cin, eps, conv) for _ in range(num_layers))
        self.downsamplers = None
        if scale:
            if s2d and downsample_type != "conv":
                down = SpaceToDepthDownsampler(cin, cout, _DOWN_STRIDES[downsample_type], conv)
            else:
                down = conv(cin, cin, 3, stride=(2, 2, 2))
            self.downsamplers = nn.ModuleList([down])
        self.conv_out = ResnetBlock(cin, cout, eps, conv) if not s2d and cin != cout else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return self.conv_out(x) if self.conv_out is not None else x


class MidBlock(nn.Module):
    def __init__(self, c, num_layers, eps, conv: ConvSpec, inject_noise=False, timestep_conditioning=False):
        super().__init__()
        self.time_embedder = TimestepEmbedder(4 * c, ops=conv.ops) if timestep_conditioning else None
        self.resnets = nn.ModuleList(ResnetBlock(c, c, eps, conv, inject_noise, timestep_conditioning)
                                     for _ in range(num_layers))

    def forward(self, x, temb=None, generator=None):
        if self.time_embedder is not None:
            temb = _embed(self.time_embedder, temb, x)
        for resnet in self.resnets:
            x = resnet(x, temb, generator)
        return x


class UpBlock(nn.Module):
    """[channel-changing conv_in resnet] -> [upsampler] -> resnets (timestep embedded per block)."""

    def __init__(self, cin, cout, num_layers, eps, scale, conv: ConvSpec, inject_noise, timestep_conditioning,
                 residual, factor, stride=(2, 2, 2)):
        super().__init__()
        if cin != cout and (timestep_conditioning or inject_noise):
            # diffusers feeds the raw timestep / an in-width noise scale to this resnet and fails at
            # run time; no released checkpoint has this layout.
            raise ConfigError(f"decoder up block {cin}->{cout} channels: a channel-changing up block cannot "
                              "use timestep_conditioning or decoder_inject_noise")
        self.time_embedder = TimestepEmbedder(4 * cin, ops=conv.ops) if timestep_conditioning else None
        self.conv_in = ResnetBlock(cin, cout, eps, conv) if cin != cout else None
        self.upsamplers = nn.ModuleList([Upsampler(cout * factor, conv, residual, factor, stride)]) if scale else None
        self.resnets = nn.ModuleList(ResnetBlock(cout, cout, eps, conv, inject_noise, timestep_conditioning)
                                     for _ in range(num_layers))

    def forward(self, x, temb=None, generator=None):
        if self.conv_in is not None:
            x = self.conv_in(x)
        if self.time_embedder is not None:
            temb = _embed(self.time_embedder, temb, x)
        if self.upsamplers is not None:
            x = self.upsamplers[0](x)
        for resnet in self.resnets:
            x = resnet(x, temb, generator)
        return x


def _encoder_layout(cfg) -> tuple[tuple[int, ...], int]:
    """(widths, number of down blocks): widths[0] is conv_in's output, widths[i + 1] block i's
    (the 0.9.0 layout keeps the last width; 0.9.5 lists one more width than blocks; LTX-2's
    conv_in width is latent_channels and block_out_channels lists the blocks' outputs)."""
    if isinstance(cfg, LTX2VideoVAEConfig):
        return (cfg.latent_channels,) + tuple(cfg.block_out_channels), len(cfg.block_out_channels)
    chs = tuple(cfg.block_out_channels)
    if cfg.is_095:
        return chs, len(chs) - 1
    return chs + chs[-1:], len(chs)


class Encoder(nn.Module):
    def __init__(self, cfg, ops: Ops = TORCH_OPS):
        super().__init__()
        self.patch_size, self.patch_size_t = cfg.patch_size, cfg.patch_size_t
        conv = ConvSpec(cfg.encoder_causal, getattr(cfg, "encoder_spatial_padding_mode", "zeros"), ops)
        eps = cfg.resnet_norm_eps
        widths, n = _encoder_layout(cfg)
        self.conv_in = conv(cfg.in_channels * cfg.patch_size ** 2, widths[0])
        self.down_blocks = nn.ModuleList(
            DownBlock(widths[i], widths[i + 1], cfg.layers_per_block[i], eps, cfg.spatio_temporal_scaling[i], conv,
                      cfg.down_block_types[i], cfg.downsample_type[i]) for i in range(n))
        self.mid_block = MidBlock(widths[n], cfg.layers_per_block[-1], eps, conv)
        self.conv_out = conv(widths[n], cfg.latent_channels + 1)

    def forward(self, x):
        b, c, f, h, w = x.shape
        p, pt = self.patch_size, self.patch_size_t
        # Patch channel order is (c, t, w, h): diffusers' (and the original checkpoint's) layout.
        x = x.reshape(b, c, f // pt, pt, h // p, p, w // p, p).permute(0, 1, 3, 7, 5, 2, 4, 6)
        x = self.conv_in(x.reshape(b, c * pt * p * p, f // pt, h // p, w // p))
        for block in self.down_blocks:
            x = block(x)
        x = self.conv_out(F.silu(pixel_norm(self.mid_block(x))))
        # One shared log-variance channel, broadcast to all latent channels.
        return torch.cat([x, x[:, -1:].expand(-1, x.shape[1] - 2, -1, -1, -1)], dim=1)


class Decoder(nn.Module):
    def __init__(self, cfg, ops: Ops = TORCH_OPS):
        super().__init__()
        self.patch_size, self.patch_size_t = cfg.patch_size, cfg.patch_size_t
        eps, tc = cfg.resnet_norm_eps, cfg.timestep_conditioning
        conv = ConvSpec(cfg.decoder_causal, getattr(cfg, "decoder_spatial_padding_mode", "zeros"), ops)
        # Per-block options are listed encoder-side first; diffusers reverses the whole tuples.
        chs, layers = cfg.decoder_block_out_channels[::-1], cfg.decoder_layers_per_block[::-1]
        scaling, noise = cfg.decoder_spatio_temporal_scaling[::-1], cfg.decoder_inject_noise[::-1]
        residual, factor = cfg.upsample_residual[::-1], cfg.upsample_factor[::-1]
        # diffusers does not reverse upsample_type: it is listed in decoding order.
        kinds = getattr(cfg, "upsample_type", ("spatiotemporal",) * len(chs))
        self.conv_in = conv(cfg.latent_channels, chs[0])
        self.mid_block = MidBlock(chs[0], layers[0], eps, conv, noise[0], tc)
        self.up_blocks = nn.ModuleList()
        cout = chs[0]
        for i in range(len(chs)):
            cin, cout = cout // factor[i], chs[i] // factor[i]
            self.up_blocks.append(UpBlock(cin, cout, layers[i + 1], eps, scaling[i], conv, noise[i + 1], tc,
                                          residual[i], factor[i], _UP_STRIDES[kinds[i]]))
        self.conv_out = conv(cout, cfg.out_channels * cfg.patch_size ** 2)
        self.timestep_scale_multiplier = nn.Parameter(torch.tensor(1000.0)) if tc else None
        self.time_embedder = TimestepEmbedder(2 * cout, ops=ops) if tc else None
        self.scale_shift_table = nn.Parameter(torch.randn(2, cout) / cout ** 0.5) if tc else None

    def forward(self, z, temb=None, generator=None):
        x = self.conv_in(z)
        if self.timestep_scale_multiplier is not None:
            temb = temb * self.timestep_scale_multiplier
        x = self.mid_block(x, temb, generator)
        for block in self.up_blocks:
            x = block(x, temb, generator)
        mod = {}
        if self.time_embedder is not None:
            table = _embed(self.time_embedder, temb, x).unflatten(1, (2, -1))
            shift, scale = (table + self.scale_shift_table[None, :, :, None, None, None]).flatten(2).unbind(1)
            mod = dict(scale=scale, shift=shift)
        x = self.conv_out(x, norm_eps=PIXEL_NORM_EPS, silu=True, **mod)
        b, c, f, h, w = x.shape
        p, pt = self.patch_size, self.patch_size_t
        x = x.reshape(b, -1, pt, p, p, f, h, w).permute(0, 1, 5, 2, 6, 4, 7, 3)  # inverse of the encoder's
        return x.reshape(b, -1, f * pt, h * p, w * p)


def _compression_ratios(cfg) -> tuple[int, int]:
    """Ratios implied by the encoder layout (diffusers derives 2**sum(scaling), which is wrong for
    0.9.5 / LTX-2 strides when the config omits the explicit values)."""
    spatial, temporal = cfg.patch_size, cfg.patch_size_t
    for i in range(_encoder_layout(cfg)[1]):
        if cfg.spatio_temporal_scaling[i]:
            kind = cfg.downsample_type[i] if cfg.down_block_types[i] in _S2D_BLOCKS else "conv"
            st, sh, _ = _DOWN_STRIDES[kind]
            spatial, temporal = spatial * sh, temporal * st
    for name, derived in (("spatial_compression_ratio", spatial), ("temporal_compression_ratio", temporal)):
        given = getattr(cfg, name)
        if given is not None and given != derived:
            raise ConfigError(f"config option {name!r} must equal the encoder's layout ({derived}), got {given!r}")
    return spatial, temporal


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """Cross-fade the last ``extent`` slices of a into the first of b: weight of b is y/extent.

    Weights are rounded from float64 exactly as diffusers' Python-float scalars are, so fp32
    results are bit-equal to its per-row loop.
    """
    e = min(a.shape[dim], b.shape[dim], extent)
    if e <= 0:
        return b
    shape = [1] * b.ndim
    shape[dim] = e
    ramp = torch.arange(e, dtype=torch.float64) / e
    w_b = ramp.view(shape).to(b.device, torch.float32)
    w_a = (1 - ramp).view(shape).to(b.device, torch.float32)
    head = (a.narrow(dim, a.shape[dim] - e, e) * w_a + b.narrow(dim, 0, e) * w_b).to(b.dtype)
    return torch.cat([head, b.narrow(dim, e, b.shape[dim] - e)], dim=dim)


def _stitch_2d(rows: list[list[torch.Tensor]], blend: tuple[int, int], keep: tuple[int, int]) -> torch.Tensor:
    # Tiles are blended with neighbours that were already blended (diffusers edits them in place).
    out = []
    for i, row in enumerate(rows):
        for j in range(len(row)):
            if i > 0:
                row[j] = _blend(rows[i - 1][j], row[j], blend[0], 3)
            if j > 0:
                row[j] = _blend(row[j - 1], row[j], blend[1], 4)
        out.append(torch.cat([t[:, :, :, : keep[0], : keep[1]] for t in row], dim=4))
    return torch.cat(out, dim=3)


def _stitched_frames(tiles: Iterable[torch.Tensor], blend: int, keep: int) -> Iterator[torch.Tensor]:
    """Each temporal tile's own frames, cross-faded with its predecessor, as soon as it arrives.

    A tile's first ``keep`` frames are final once its head is blended with the previous tile's tail
    (the next tile only rewrites its own head), so only the previous tile is held.
    """
    prev = None
    for tile in tiles:
        if prev is None:
            n = keep + 1  # the first tile also owns the causal first frame
        else:
            tile, n = _blend(prev, tile, blend, 2), keep
        prev = tile
        yield tile[:, :, :n]


def _stitch_frames(tiles: Iterable[torch.Tensor], blend: int, keep: int) -> torch.Tensor:
    return torch.cat(list(_stitched_frames(tiles, blend, keep)), dim=2)


def _in_call_grad_mode(chunks: Iterator[torch.Tensor]) -> Iterator[torch.Tensor]:
    """A generator's body runs when it is iterated, not when it is created: run every step in the
    grad / inference mode of the creating call, so a ``torch.no_grad()`` around the call covers the
    decode even when the chunks are consumed outside it."""
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()  # now, not at the first next()

    def resumed():
        while True:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                chunk = next(chunks, None)
            if chunk is None:
                return
            yield chunk
    return resumed()


class VideoVAE(nn.Module):
    """Video <-> latent autoencoder. Video in [-1, 1], (B, 3, 8k+1, 32m, 32n) for the released
    ratios; latents (B, latent_channels, k+1, m, n)."""

    def __init__(self, config: VideoVAEConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.config = config
        self.spatial_compression_ratio, self.temporal_compression_ratio = _compression_ratios(config)
        self.encoder = Encoder(config, ops)
        self.decoder = Decoder(config, ops)
        self.register_buffer("latents_mean", torch.zeros(config.latent_channels), persistent=True)
        self.register_buffer("latents_std", torch.ones(config.latent_channels), persistent=True)

    # ---- encoding -------------------------------------------------------------------------
    def encode(self, x: torch.Tensor, tiling: TilingConfig | None = None) -> torch.Tensor:
        """Posterior moments (B, 2*latent_channels, F', H', W'): means, then log-variances."""
        r, rt = self.spatial_compression_ratio, self.temporal_compression_ratio
        if x.ndim != 5:
            raise ValueError(f"x must be a 5-D (B, C, F, H, W) video, got shape {tuple(x.shape)}")
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"x must have {self.config.in_channels} channels (dim 1), got {x.shape[1]}")
        if x.shape[3] % r or x.shape[4] % r:
            raise ValueError(f"x height and width must be multiples of the spatial compression ratio {r}, "
                             f"got {x.shape[3]}x{x.shape[4]}")
        if (x.shape[2] - 1) % rt:
            raise ValueError(f"x frames must be of the form {rt}k+1 (temporal compression {rt}), got {x.shape[2]}")
        if tiling is not None:
            tiling.check(r, rt)
        self.check_reflect_grid("encoder", "x", x.shape[3] // r, x.shape[4] // r, tiling)
        if tiling is None:
            return self.encoder(x)
        if x.shape[2] > tiling.tile_sample_min_num_frames:
            return self._encode_frame_tiles(x, tiling)
        return self._encode_spatial(x, tiling)

    def _encode_spatial(self, x, t: TilingConfig):
        h, w = x.shape[-2:]
        if h <= t.tile_sample_min_height and w <= t.tile_sample_min_width:
            return self.encoder(x)
        r = self.spatial_compression_ratio
        th, tw = t.tile_sample_min_height, t.tile_sample_min_width
        sh, sw = t.tile_sample_stride_height, t.tile_sample_stride_width
        rows = [[self.encoder(x[:, :, :, i: i + th, j: j + tw]) for j in range(0, w, sw)] for i in range(0, h, sh)]
        out = _stitch_2d(rows, ((th - sh) // r, (tw - sw) // r), (sh // r, sw // r))
        return out[:, :, :, : h // r, : w // r]

    def _encode_frame_tiles(self, x, t: TilingConfig):
        f, rt = x.shape[2], self.temporal_compression_ratio
        # A later tile's first latent encodes one lone frame (causal start), not real history.
        tiles = (self._encode_spatial(x[:, :, i: i + t.tile_sample_min_num_frames + 1], t)[:, :, (i > 0):]
                 for i in range(0, f, t.tile_sample_stride_num_frames))
        blend = (t.tile_sample_min_num_frames - t.tile_sample_stride_num_frames) // rt
        return _stitch_frames(tiles, blend, t.tile_sample_stride_num_frames // rt)[:, :, : (f - 1) // rt + 1]

    # ---- posterior ------------------------------------------------------------------------
    @staticmethod
    def latent_dist_mode(h: torch.Tensor) -> torch.Tensor:
        return h.chunk(2, dim=1)[0]

    @staticmethod
    def sample(h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """mean + exp(0.5 * clamp(logvar, -30, 20)) * eps, eps drawn like diffusers' randn_tensor."""
        mean, logvar = h.chunk(2, dim=1)
        std = torch.exp(0.5 * torch.clamp(logvar, -30.0, 20.0))
        rand_device = generator.device if generator is not None else h.device
        eps = torch.randn(mean.shape, generator=generator, device=rand_device, dtype=h.dtype).to(h.device)
        return mean + std * eps

    def _stats(self, z: torch.Tensor):
        return (t.view(1, -1, 1, 1, 1).to(z.device, z.dtype) for t in (self.latents_mean, self.latents_std))

    def normalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """VAE latents -> the transformer's latent space: (z - mean) * scaling_factor / std."""
        mean, std = self._stats(z)
        return (z - mean) * self.config.scaling_factor / std

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        mean, std = self._stats(z)
        return z * std / self.config.scaling_factor + mean

    # ---- decoding -------------------------------------------------------------------------
    def decode(self, z: torch.Tensor, temb=None, generator: torch.Generator | None = None,
               tiling: TilingConfig | None = None) -> torch.Tensor:
        """Latents -> video (B, out_channels, 8(F-1)+1, 32H, 32W).

        temb: decode timestep, (B,) or scalar; required iff the config is timestep-conditioned.
        generator: for the 0.9.1 noise injection; None draws from torch's global RNG in diffusers'
        order (one (H, W) field per injection site, tiles in row-major order).
        With tiling, spatial tiles equal diffusers' tiled decode. Temporal tiles deliberately do
        not: diffusers drops the last frame of every tile after the first, so from the first seam
        on its output is one frame late (and the last frame is lost); ours keeps frames aligned
        with the untiled decode.
        """
        chunks = list(self.decode_frames(z, temb, generator, tiling))
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)

    def decode_frames(self, z: torch.Tensor, temb=None, generator: torch.Generator | None = None,
                      tiling: TilingConfig | None = None) -> Iterator[torch.Tensor]:
        """``decode`` as consecutive chunks (B, out_channels, n_i, H, W) whose concatenation along
        frames equals ``decode``'s output exactly, same random draws in the same order.

        With temporal tiling, a tile's frames are yielded right after that tile is decoded and
        cross-faded with the previous one (before the next tile is decoded), so at most two tiles'
        outputs live on the device. Otherwise the whole video is one chunk. Arguments are checked
        here, at the call; the decoding runs as the chunks are consumed, in the call's grad mode.
        With ``generator=None`` the 0.9.1 noise comes from the global RNG at iteration time: other
        global draws between chunks change it (pass a generator to be independent of that).
        """
        temb = self._check_decode(z, temb, tiling)
        return _in_call_grad_mode(self._decode_chunks(z, temb, generator, tiling))

    def _check_decode(self, z: torch.Tensor, temb, tiling: TilingConfig | None) -> torch.Tensor | None:
        self._check_z(z)
        temb = self._check_temb(temb, z)
        if tiling is not None:
            tiling.check(self.spatial_compression_ratio, self.temporal_compression_ratio)
        self.check_reflect_grid("decoder", "z", z.shape[3], z.shape[4], tiling)
        return temb

    def _decode_chunks(self, z, temb, generator, tiling: TilingConfig | None) -> Iterator[torch.Tensor]:
        if tiling is None:
            yield self.decoder(z, temb, generator)
        elif z.shape[2] > tiling.tile_sample_min_num_frames // self.temporal_compression_ratio:
            yield from self._decode_frame_tiles(z, temb, generator, tiling)
        else:
            yield self._decode_spatial(z, temb, generator, tiling)

    def _check_z(self, z: torch.Tensor) -> None:
        if z.ndim != 5:
            raise ValueError(f"z must be a 5-D (B, C, F, H, W) latent, got shape {tuple(z.shape)}")
        if z.shape[1] != self.config.latent_channels:
            raise ValueError(f"z must have {self.config.latent_channels} channels (dim 1), got {z.shape[1]}")

    def check_reflect_grid(self, half: str, name: str, h: int, w: int, tiling: TilingConfig | None) -> None:
        """Reflect padding needs every conv input at least 2 wide; the smallest are the (tiles')
        latent grids. Without this check torch fails deep inside the model (so does diffusers)."""
        if getattr(self.config, f"{half}_spatial_padding_mode", "zeros") != "reflect":
            return
        sizes_h, sizes_w, r = [h], [w], self.spatial_compression_ratio
        if tiling is not None:
            th, tw = tiling.tile_sample_min_height // r, tiling.tile_sample_min_width // r
            if h > th or w > tw:
                sh, sw = tiling.tile_sample_stride_height // r, tiling.tile_sample_stride_width // r
                sizes_h = [min(h - i, th) for i in range(0, h, sh)]
                sizes_w = [min(w - j, tw) for j in range(0, w, sw)]
        if min(sizes_h) < 2 or min(sizes_w) < 2:
            raise ValueError(f"{name}: the {half}'s reflect padding needs (tiles of) at least 2x2 latents, got a "
                             f"{min(sizes_h)}x{min(sizes_w)} {'tile' if len(sizes_h + sizes_w) > 2 else 'grid'} "
                             f"(latent grid {h}x{w})")

    def _check_temb(self, temb, z: torch.Tensor) -> torch.Tensor | None:
        if not self.config.timestep_conditioning:
            if temb is not None:
                raise ValueError(f"temb must be None for a decoder without timestep_conditioning, got {temb!r}")
            return None
        if temb is None:
            raise ValueError("temb is required: this VAE's decoder is timestep-conditioned (decode_timestep)")
        if not isinstance(temb, torch.Tensor):
            temb = torch.tensor(float(temb), dtype=z.dtype)
        if not temb.is_floating_point():
            temb = temb.to(z.dtype)
        temb = temb.to(z.device)
        if temb.ndim == 0:
            return temb.expand(z.shape[0])
        if temb.shape != (z.shape[0],):
            raise ValueError(f"temb must be a scalar or have shape (B,) = ({z.shape[0]},), got {tuple(temb.shape)}")
        return temb

    def _decode_spatial(self, z, temb, generator, t: TilingConfig):
        r = self.spatial_compression_ratio
        h, w = z.shape[-2:]
        th, tw = t.tile_sample_min_height // r, t.tile_sample_min_width // r
        if h <= th and w <= tw:
            return self.decoder(z, temb, generator)
        sh, sw = t.tile_sample_stride_height // r, t.tile_sample_stride_width // r
        rows = [[self.decoder(z[:, :, :, i: i + th, j: j + tw], temb, generator) for j in range(0, w, sw)]
                for i in range(0, h, sh)]
        blend = (t.tile_sample_min_height - t.tile_sample_stride_height,
                 t.tile_sample_min_width - t.tile_sample_stride_width)
        out = _stitch_2d(rows, blend, (t.tile_sample_stride_height, t.tile_sample_stride_width))
        return out[:, :, :, : h * r, : w * r]

    def _decode_frame_tiles(self, z, temb, generator, t: TilingConfig) -> Iterator[torch.Tensor]:
        f, rt = z.shape[2], self.temporal_compression_ratio
        tile_f, stride_f = t.tile_sample_min_num_frames // rt, t.tile_sample_stride_num_frames // rt
        # A later tile decodes its first latent as a lone causal first frame, which stands for the
        # last pixel frame of that latent's group: drop it so tile frame u+1 is global frame
        # 8i + u + 1 and neighbours line up. (diffusers drops the last frame instead, which
        # makes its output one frame late after the first seam; see decode().) Lazy, so each tile
        # is decoded only when the previous one's frames have been handed out.
        tiles = (self._decode_spatial(z[:, :, i: i + tile_f + 1], temb, generator, t)[:, :, (i > 0):]
                 for i in range(0, f, stride_f))
        blend = t.tile_sample_min_num_frames - t.tile_sample_stride_num_frames
        left = (f - 1) * rt + 1
        for chunk in _stitched_frames(tiles, blend, t.tile_sample_stride_num_frames):
            chunk = chunk[:, :, :left]
            left -= chunk.shape[2]
            if chunk.shape[2]:  # a last tile of one latent holds only its dropped lone frame
                yield chunk


class LTX2VideoVAE(VideoVAE):
    """LTX-2 video VAE (diffusers' AutoencoderKLLTX2Video, ltx-core's VideoEncoder + VideoDecoder).

    ``encode`` / ``decode`` / tiling work as in ``VideoVAE``, on raw (denormalized) latents, like
    diffusers. ltx-core instead keeps latents normalized at the VAE boundary; ``encode_normalized``
    and ``decode_normalized`` follow that convention, including its decode noise: with a
    timestep-conditioned decoder, ``x <- s * eps + (1 - s) * x`` is mixed in normalized space
    before denormalizing (s = decode noise scale, default 0.025; decode timestep default 0.05).
    diffusers' LTX2Pipeline mixes in the same (normalized) space with its ``decode_noise_scale``
    (default: equal to ``decode_timestep``, whose default is 0).
    """

    def __init__(self, config: LTX2VideoVAEConfig, ops: Ops = TORCH_OPS):
        config.validate(type(self).__name__)
        super().__init__(config, ops)

    def encode_normalized(self, x: torch.Tensor, tiling: TilingConfig | None = None) -> torch.Tensor:
        """Video -> normalized latent means (ltx-core's VideoEncoder output)."""
        return self.normalize_latents(self.latent_dist_mode(self.encode(x, tiling)))

    def decode_normalized(self, latents: torch.Tensor, timestep=None, noise_scale=None,
                          generator: torch.Generator | None = None, tiling: TilingConfig | None = None) -> torch.Tensor:
        """Normalized latents -> video (ltx-core's VideoDecoder.forward).

        timestep, noise_scale: scalars or (B,) tensors, only for a timestep-conditioned decoder;
        None means ltx-core's defaults 0.05 and 0.025. The noise is drawn once for the whole
        latent from ``generator`` (ltx-core's tiled decode draws it per tile).
        """
        z, temb = self._denormalized_inputs(latents, timestep, noise_scale, generator)
        return self.decode(z, temb, generator=generator, tiling=tiling)

    def decode_normalized_frames(self, latents: torch.Tensor, timestep=None, noise_scale=None,
                                 generator: torch.Generator | None = None,
                                 tiling: TilingConfig | None = None) -> Iterator[torch.Tensor]:
        """``decode_normalized`` as chunks (see ``decode_frames``); the decode noise is drawn at the
        call, before any decoding, as ``decode_normalized`` draws it."""
        z, temb = self._denormalized_inputs(latents, timestep, noise_scale, generator)
        return self.decode_frames(z, temb, generator=generator, tiling=tiling)

    def _denormalized_inputs(self, latents, timestep, noise_scale, generator):
        """-> (raw latents with the decode noise mixed in, decode timestep or None)."""
        self._check_z(latents)
        if not self.config.timestep_conditioning:
            for name, value in (("timestep", timestep), ("noise_scale", noise_scale)):
                if value is not None:
                    raise ValueError(f"{name} must be None for a decoder without timestep_conditioning, got {value!r}")
            return self.denormalize_latents(latents), None
        timestep = DECODE_TIMESTEP if timestep is None else timestep
        scale = _noise_scale(DECODE_NOISE_SCALE if noise_scale is None else noise_scale, latents)
        device = generator.device if generator is not None else latents.device
        eps = torch.randn(latents.shape, generator=generator, device=device, dtype=latents.dtype).to(latents.device)
        latents = eps * scale + (1.0 - scale) * latents
        return self.denormalize_latents(latents), timestep


def _noise_scale(value, latents: torch.Tensor):
    """A Python float stays one (its arithmetic matches ltx-core's bit for bit); a tensor is a
    per-sample scale (diffusers' list form)."""
    b = latents.shape[0]
    if isinstance(value, torch.Tensor):
        if value.shape not in ((), (b,)):
            raise ValueError(f"noise_scale must be a scalar or have shape (B,) = ({b},), got {tuple(value.shape)}")
        return value.to(latents.device, latents.dtype).reshape(-1, 1, 1, 1, 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"noise_scale must be a number in [0, 1] or a (B,) tensor, got {value!r}")
    return float(value)
