"""LTX-Video causal video VAE (diffusers: AutoencoderKLLTXVideo), every 0.9.x layout.

Parameter and buffer names equal diffusers' state-dict keys. Layouts:

* 0.9.0: strided-conv downsamplers, channel changes in ``conv_out`` / ``conv_in`` resnets.
* 0.9.1: decoder conditioned on the decode timestep (``time_embedder`` + ``scale_shift_table``)
  and per-resnet spatial noise injection (``per_channel_scale1/2``); residual upsamplers that
  halve channels (``upsample_factor`` 2).
* 0.9.5+: ``LTXVideo095DownBlock3D`` whose downsamplers are space-to-depth with a mean-pooled
  residual (spatial / temporal / spatiotemporal strides); the channel change happens there.

Tiling reproduces diffusers' ``tiled_encode`` / ``tiled_decode`` / ``_temporal_tiled_*``
including their quirks (see ``decode``), so outputs match diffusers' tiled paths.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import ConfigError, VideoVAEConfig
from ..ops import TORCH_OPS, Ops
from .common import CausalConv3d, TimestepEmbedder, pixel_norm

__all__ = ["VideoVAE", "TilingConfig"]

_DOWN_STRIDES = {"conv": (2, 2, 2), "spatial": (1, 2, 2), "temporal": (2, 1, 1), "spatiotemporal": (2, 2, 2)}


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


class ResnetBlock(nn.Module):
    """pixel-norm -> [adaLN] -> SiLU -> conv1 -> [noise] -> pixel-norm -> [adaLN] -> SiLU -> conv2 ->
    [noise], plus a (LayerNorm -> 1x1x1 conv) shortcut when the width changes."""

    def __init__(self, cin: int, cout: int, eps: float, causal: bool, inject_noise: bool = False,
                 timestep_conditioning: bool = False, ops: Ops = TORCH_OPS):
        super().__init__()
        self.conv1 = CausalConv3d(cin, cout, 3, causal=causal, ops=ops)
        self.conv2 = CausalConv3d(cout, cout, 3, causal=causal, ops=ops)
        self.norm3 = nn.LayerNorm(cin, eps=eps) if cin != cout else None
        self.conv_shortcut = CausalConv3d(cin, cout, 1, causal=causal, ops=ops) if cin != cout else None
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
        h = pixel_norm(x)
        if self.scale_shift_table is not None:
            mod = temb.unflatten(1, (4, -1)) + self.scale_shift_table[None, :, :, None, None, None]
            shift1, scale1, shift2, scale2 = mod.unbind(1)
            h = h * (1 + scale1) + shift1
        h = self.conv1(F.silu(h))
        if self.per_channel_scale1 is not None:
            h = h + self._noise(h, self.per_channel_scale1, generator)
        h = pixel_norm(h)
        if self.scale_shift_table is not None:
            h = h * (1 + scale2) + shift2
        h = self.conv2(F.silu(h))
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

    def __init__(self, cin: int, cout: int, stride: tuple[int, int, int], causal: bool, ops: Ops = TORCH_OPS):
        super().__init__()
        self.stride = stride
        self.group_size = cin * prod(stride) // cout
        self.conv = CausalConv3d(cin, cout // prod(stride), 3, causal=causal, ops=ops)

    def forward(self, x):
        # Repeating the first frame makes 8k+1 frames divisible by the temporal stride.
        x = torch.cat([x[:, :, : self.stride[0] - 1], x], dim=2)
        skip = _space_to_depth(x, *self.stride).unflatten(1, (-1, self.group_size)).mean(2)
        return _space_to_depth(self.conv(x), *self.stride) + skip


class Upsampler(nn.Module):
    """conv -> depth-to-space x2 in (F, H, W), dropping the first frame (causal first latent frame is a
    single pixel frame). ``residual`` adds the depth-to-space'd input, channel-tiled to match."""

    def __init__(self, cin: int, causal: bool, residual: bool, factor: int, ops: Ops = TORCH_OPS):
        super().__init__()
        self.stride = (2, 2, 2)
        self.residual = residual
        self.repeats = prod(self.stride) // factor
        self.conv = CausalConv3d(cin, cin * self.repeats, 3, causal=causal, ops=ops)

    def forward(self, x):
        drop = self.stride[0] - 1
        h = _depth_to_space(self.conv(x), *self.stride)[:, :, drop:]
        if self.residual:
            h = h + _depth_to_space(x, *self.stride).repeat(1, self.repeats, 1, 1, 1)[:, :, drop:]
        return h


class DownBlock(nn.Module):
    """LTXVideoDownBlock3D (resnets, strided conv, channel-changing ``conv_out`` resnet) and
    LTXVideo095DownBlock3D (resnets, downsampler that also changes channels)."""

    def __init__(self, cin, cout, num_layers, eps, scale, causal, block_type, downsample_type, ops=TORCH_OPS):
        super().__init__()
        is_095 = block_type == "LTXVideo095DownBlock3D"
        self.resnets = nn.ModuleList(ResnetBlock(cin, cin, eps, causal, ops=ops) for _ in range(num_layers))
        self.downsamplers = None
        if scale:
            if is_095 and downsample_type != "conv":
                down = SpaceToDepthDownsampler(cin, cout, _DOWN_STRIDES[downsample_type], causal, ops)
            else:
                down = CausalConv3d(cin, cin, 3, stride=(2, 2, 2), causal=causal, ops=ops)
            self.downsamplers = nn.ModuleList([down])
        self.conv_out = ResnetBlock(cin, cout, eps, causal, ops=ops) if not is_095 and cin != cout else None

    def forward(self, x):
        for resnet in self.resnets:
            x = resnet(x)
        if self.downsamplers is not None:
            x = self.downsamplers[0](x)
        return self.conv_out(x) if self.conv_out is not None else x


class MidBlock(nn.Module):
    def __init__(self, c, num_layers, eps, causal, inject_noise=False, timestep_conditioning=False, ops=TORCH_OPS):
        super().__init__()
        self.time_embedder = TimestepEmbedder(4 * c, ops=ops) if timestep_conditioning else None
        self.resnets = nn.ModuleList(ResnetBlock(c, c, eps, causal, inject_noise, timestep_conditioning, ops)
                                     for _ in range(num_layers))

    def forward(self, x, temb=None, generator=None):
        if self.time_embedder is not None:
            temb = _embed(self.time_embedder, temb, x)
        for resnet in self.resnets:
            x = resnet(x, temb, generator)
        return x


class UpBlock(nn.Module):
    """[channel-changing conv_in resnet] -> [upsampler] -> resnets (timestep embedded per block)."""

    def __init__(self, cin, cout, num_layers, eps, scale, causal, inject_noise, timestep_conditioning, residual,
                 factor, ops=TORCH_OPS):
        super().__init__()
        if cin != cout and (timestep_conditioning or inject_noise):
            # diffusers feeds the raw timestep / an in-width noise scale to this resnet and fails at
            # run time; no released checkpoint has this layout.
            raise ConfigError(f"decoder up block {cin}->{cout} channels: a channel-changing up block cannot "
                              "use timestep_conditioning or decoder_inject_noise")
        self.time_embedder = TimestepEmbedder(4 * cin, ops=ops) if timestep_conditioning else None
        self.conv_in = ResnetBlock(cin, cout, eps, causal, ops=ops) if cin != cout else None
        self.upsamplers = (nn.ModuleList([Upsampler(cout * factor, causal, residual, factor, ops)]) if scale
                           else None)
        self.resnets = nn.ModuleList(ResnetBlock(cout, cout, eps, causal, inject_noise, timestep_conditioning, ops)
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


class Encoder(nn.Module):
    def __init__(self, cfg: VideoVAEConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.patch_size, self.patch_size_t = cfg.patch_size, cfg.patch_size_t
        chs, causal, eps = cfg.block_out_channels, cfg.encoder_causal, cfg.resnet_norm_eps
        n = len(chs) - (1 if cfg.is_095 else 0)
        self.conv_in = CausalConv3d(cfg.in_channels * cfg.patch_size ** 2, chs[0], 3, causal=causal, ops=ops)
        self.down_blocks = nn.ModuleList()
        cout = chs[0]
        for i in range(n):
            # The 0.9.0 layout keeps the last width; 0.9.5 has one more entry than blocks.
            cin, cout = cout, (chs[i + 1] if cfg.is_095 or i + 1 < n else chs[i])
            self.down_blocks.append(DownBlock(cin, cout, cfg.layers_per_block[i], eps, cfg.spatio_temporal_scaling[i],
                                              causal, cfg.down_block_types[i], cfg.downsample_type[i], ops))
        self.mid_block = MidBlock(cout, cfg.layers_per_block[-1], eps, causal, ops=ops)
        self.conv_out = CausalConv3d(cout, cfg.latent_channels + 1, 3, causal=causal, ops=ops)

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
    def __init__(self, cfg: VideoVAEConfig, ops: Ops = TORCH_OPS):
        super().__init__()
        self.patch_size, self.patch_size_t = cfg.patch_size, cfg.patch_size_t
        causal, eps, tc = cfg.decoder_causal, cfg.resnet_norm_eps, cfg.timestep_conditioning
        # Per-block options are listed encoder-side first; diffusers reverses the whole tuples.
        chs, layers = cfg.decoder_block_out_channels[::-1], cfg.decoder_layers_per_block[::-1]
        scaling, noise = cfg.decoder_spatio_temporal_scaling[::-1], cfg.decoder_inject_noise[::-1]
        residual, factor = cfg.upsample_residual[::-1], cfg.upsample_factor[::-1]
        self.conv_in = CausalConv3d(cfg.latent_channels, chs[0], 3, causal=causal, ops=ops)
        self.mid_block = MidBlock(chs[0], layers[0], eps, causal, noise[0], tc, ops)
        self.up_blocks = nn.ModuleList()
        cout = chs[0]
        for i in range(len(chs)):
            cin, cout = cout // factor[i], chs[i] // factor[i]
            self.up_blocks.append(UpBlock(cin, cout, layers[i + 1], eps, scaling[i], causal, noise[i + 1], tc,
                                          residual[i], factor[i], ops))
        self.conv_out = CausalConv3d(cout, cfg.out_channels * cfg.patch_size ** 2, 3, causal=causal, ops=ops)
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
        x = pixel_norm(x)
        if self.time_embedder is not None:
            mod = _embed(self.time_embedder, temb, x).unflatten(1, (2, -1))
            shift, scale = (mod + self.scale_shift_table[None, :, :, None, None, None]).unbind(1)
            x = x * (1 + scale) + shift
        x = self.conv_out(F.silu(x))
        b, c, f, h, w = x.shape
        p, pt = self.patch_size, self.patch_size_t
        x = x.reshape(b, -1, pt, p, p, f, h, w).permute(0, 1, 5, 2, 6, 4, 7, 3)  # inverse of the encoder's
        return x.reshape(b, -1, f * pt, h * p, w * p)


def _compression_ratios(cfg: VideoVAEConfig) -> tuple[int, int]:
    """Ratios implied by the encoder layout (diffusers derives 2**sum(scaling), which is wrong for
    0.9.5 strides when the config omits the explicit values)."""
    n = len(cfg.block_out_channels) - (1 if cfg.is_095 else 0)
    spatial, temporal = cfg.patch_size, cfg.patch_size_t
    for i in range(n):
        if cfg.spatio_temporal_scaling[i]:
            kind = cfg.downsample_type[i] if cfg.down_block_types[i] == "LTXVideo095DownBlock3D" else "conv"
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


def _stitch_frames(tiles: list[torch.Tensor], blend: int, keep: int) -> torch.Tensor:
    out = [tiles[0][:, :, : keep + 1]]  # the first tile also owns the causal first frame
    for k in range(1, len(tiles)):
        tiles[k] = _blend(tiles[k - 1], tiles[k], blend, 2)
        out.append(tiles[k][:, :, :keep])
    return torch.cat(out, dim=2)


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
        if tiling is None:
            return self.encoder(x)
        tiling.check(r, rt)
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
        tiles = []
        for i in range(0, f, t.tile_sample_stride_num_frames):
            tile = self._encode_spatial(x[:, :, i: i + t.tile_sample_min_num_frames + 1], t)
            # A later tile's first latent encodes one lone frame (causal start), not real history.
            tiles.append(tile if i == 0 else tile[:, :, 1:])
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
        if z.ndim != 5:
            raise ValueError(f"z must be a 5-D (B, C, F, H, W) latent, got shape {tuple(z.shape)}")
        if z.shape[1] != self.config.latent_channels:
            raise ValueError(f"z must have {self.config.latent_channels} channels (dim 1), got {z.shape[1]}")
        temb = self._check_temb(temb, z)
        if tiling is None:
            return self.decoder(z, temb, generator)
        tiling.check(self.spatial_compression_ratio, self.temporal_compression_ratio)
        if z.shape[2] > tiling.tile_sample_min_num_frames // self.temporal_compression_ratio:
            return self._decode_frame_tiles(z, temb, generator, tiling)
        return self._decode_spatial(z, temb, generator, tiling)

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

    def _decode_frame_tiles(self, z, temb, generator, t: TilingConfig):
        f, rt = z.shape[2], self.temporal_compression_ratio
        tile_f, stride_f = t.tile_sample_min_num_frames // rt, t.tile_sample_stride_num_frames // rt
        tiles = []
        for i in range(0, f, stride_f):
            tile = self._decode_spatial(z[:, :, i: i + tile_f + 1], temb, generator, t)
            # A later tile decodes its first latent as a lone causal first frame, which stands for the
            # last pixel frame of that latent's group: drop it so tile frame u+1 is global frame
            # 8i + u + 1 and neighbours line up. (diffusers drops the last frame instead, which
            # makes its output one frame late after the first seam; see decode().)
            tiles.append(tile if i == 0 else tile[:, :, 1:])
        blend = t.tile_sample_min_num_frames - t.tile_sample_stride_num_frames
        return _stitch_frames(tiles, blend, t.tile_sample_stride_num_frames)[:, :, : (f - 1) * rt + 1]
