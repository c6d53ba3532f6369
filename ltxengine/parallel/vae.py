"""Parallel tiled video-VAE decode (issue 22): the tiles of one tiled decode spread over the ranks
of a process group, decoded, gathered to every rank, and blended by the VAE's own tiled-decode code.

The result equals ``vae.decode(z, temb, generator, tiling)`` on one process bit for bit: every tile is
the same ``vae.decoder`` call on the same latent slice (only on another rank), the gather moves bits
unchanged, and the blending is not reimplemented here but run by ``VideoVAE.decode`` itself on a
shallow twin of the VAE whose ``decoder`` hands back the gathered tiles in the order it asks for them.
Bit equality needs the same kernels on every rank as on the one process (same device type and ops, the
same conv algorithms: with cuDNN's benchmark mode each process may pick its own, and the tiles then
agree only to rounding; the gloo tests on the CPU are bit-equal). A rank that fails while decoding
makes the others fail at the gather when the group's collective timeout expires.

Tiles go to ranks by longest-processing-time first (their latent volume as the cost), so uneven tile
counts and the smaller edge tiles balance. Decoders that inject noise (the LTX-Video 0.9.1 layout)
draw it from ``generator`` per tile in row-major order: for each tile it does not decode, a rank draws
the same fields (sizes recorded once on a tiny probe decode) from the same generator without decoding,
so every rank's noise and generator state are the one-process decode's. Decode-time noise on the
latents (LTX-2's, LTX-Video's) is drawn once before the tiles, by every rank alike.

Both families' conv video VAEs (``VideoVAE``, ``LTX2VideoVAE``); LTX-2's audio decode is cheap and
stays on every rank unchanged; the LTX-2.5 diffusion decoder is not covered here.
"""

from __future__ import annotations

import copy
import heapq
from collections.abc import Callable
from math import prod

import torch
import torch.distributed as dist
from torch.overrides import TorchFunctionMode

from ..components.decode import ltx_video_decode_inputs, resize_frames, video_to_frames
from ..models.video_vae import LTX2VideoVAE, TilingConfig, VideoVAE

__all__ = ["decode_parallel", "decode_normalized_parallel", "ltx2_frames_parallel", "ltx_video_frames_parallel",
           "assign_tiles", "tile_windows"]


def decode_parallel(vae: VideoVAE, z: torch.Tensor, temb=None, generator: torch.Generator | None = None,
                    tiling: TilingConfig | None = None, group=None) -> torch.Tensor:
    """``vae.decode(z, temb, generator, tiling)`` with its tiles decoded across ``group`` (None: the
    default group; without an initialized process group, this process alone). Every rank must call
    it with the same arguments and gets the whole video. Arguments are checked, by ``vae.decode``'s
    own checks, before any tile is decoded."""
    temb = vae._check_decode(z, temb, tiling)  # decode's checks and its (B,) timestep, before any work
    windows = tile_windows(vae, z.shape, tiling)
    rank, world = _rank_world(group)
    if world == 1 or len(windows) == 1:  # nothing to split: every rank decodes alone, no traffic
        return vae.decode(z, temb, generator, tiling)
    slices = [z[:, :, t0:t1, h0:h1, w0:w1] for t0, t1, h0, h1, w0, w1 in windows]
    owners = assign_tiles([zs.shape[2] * zs.shape[3] * zs.shape[4] for zs in slices], world)
    draws = None
    if _injects_noise(vae.decoder):
        generator = _default_generator(z.device) if generator is None else generator  # None's stream, explicit
        draws = _noise_draws(vae.decoder, temb, z, generator.device)
    mine = {}
    for k, zs in enumerate(slices):
        if owners[k] == rank:
            mine[k] = _checked(vae.decoder(zs, temb, generator), _tile_shape(vae, zs), z.dtype, k)
        elif draws:
            _skip_draws(draws, zs, generator)  # the generator moves on as that tile's own draws move it
    tiles = _all_gather_tiles(mine, owners, [_tile_shape(vae, zs) for zs in slices], z, group)
    return _with_decoder(vae, _replay(slices, tiles)).decode(z, temb, generator, tiling)


def decode_normalized_parallel(vae: LTX2VideoVAE, latents: torch.Tensor, timestep=None, noise_scale=None,
                               generator: torch.Generator | None = None, tiling: TilingConfig | None = None,
                               group=None) -> torch.Tensor:
    """``vae.decode_normalized(...)`` (ltx-core's convention, decode noise included) across ``group``."""
    z, temb = _decode_arguments(vae, lambda twin: twin.decode_normalized(latents, timestep, noise_scale,
                                                                         generator, tiling))
    return decode_parallel(vae, z, temb, generator, tiling, group)


def ltx2_frames_parallel(vae: LTX2VideoVAE, latents: torch.Tensor, *, decode_timestep=None, decode_noise_scale=None,
                         generator=None, tiling=None, group=None) -> torch.Tensor:
    """``components.decode.ltx2_frame_chunks`` joined (``ltx2.stages.decode_video``'s frames,
    (F, H, W, 3) float32 on the device) with the VAE tiles decoded across ``group``."""
    kw = {}
    if vae.config.timestep_conditioning:
        kw = dict(timestep=decode_timestep, noise_scale=decode_noise_scale)
    dtype = next(vae.parameters()).dtype
    return video_to_frames(decode_normalized_parallel(vae, latents.to(dtype), generator=generator, tiling=tiling,
                                                      group=group, **kw))


def ltx_video_frames_parallel(vae: VideoVAE, latents: torch.Tensor, *, decode_timestep: float,
                              decode_noise_scale: float | None, generator, device, model_dtype: torch.dtype,
                              tiling=None, height: int | None = None, width: int | None = None,
                              group=None) -> torch.Tensor:
    """``components.decode.decode_latents`` (resized to (height, width) when given, as
    ``ltx_video_frame_chunks`` does) with the VAE tiles decoded across ``group``."""
    if (height is None) != (width is None):
        raise ValueError(f"height and width must be given together, got height={height!r}, width={width!r}")
    z, temb = ltx_video_decode_inputs(vae, latents, decode_timestep=decode_timestep,
                                      decode_noise_scale=decode_noise_scale, generator=generator, device=device,
                                      model_dtype=model_dtype)
    frames = video_to_frames(decode_parallel(vae, z, temb, generator, tiling, group))
    return frames if height is None else resize_frames(frames, height, width)


def assign_tiles(costs: list[int], world: int) -> list[int]:
    """Owner rank of each tile: longest processing time first (the costliest unassigned tile goes to
    the least-loaded rank, ties to the lower tile index and the lower rank). Deterministic, so every
    rank computes the same assignment without exchanging it."""
    if not isinstance(world, int) or world < 1:
        raise ValueError(f"assign_tiles: world must be a positive integer, got {world!r}")
    owners = [0] * len(costs)
    loads = [(0, r) for r in range(world)]
    for k in sorted(range(len(costs)), key=lambda k: (-costs[k], k)):
        load, r = heapq.heappop(loads)
        owners[k] = r
        heapq.heappush(loads, (load + costs[k], r))
    return owners


# -- the tiles of one decode --------------------------------------------------------------------------

def _with_decoder(vae: VideoVAE, decoder: Callable) -> VideoVAE:
    """A shallow twin of ``vae`` (same parameters, submodules and methods) whose ``decoder`` is
    ``decoder``; ``vae`` itself is untouched. An instance attribute is found before nn.Module's
    submodule lookup, and the twin's own __dict__ is a copy, so the swap stays on the twin."""
    twin = copy.copy(vae)
    twin.__dict__["decoder"] = decoder
    return twin


def tile_windows(vae: VideoVAE, shape, tiling: TilingConfig | None) -> list[tuple[int, ...]]:
    """(t0, t1, h0, h1, w0, w1) latent windows of the ``vae.decoder`` calls of ``vae.decode`` (its
    ``_decode_frame_tiles`` / ``_decode_spatial``), in call order: temporal tiles, each in row-major
    spatial tiles. Ends may pass the latent's size, as the VAE's slices do. The replay checks every
    window against the call the VAE really makes, so a change of the VAE's tiling fails loudly."""
    f, h, w = shape[2:]
    if tiling is None:
        return [(0, f, 0, h, 0, w)]
    r, rt = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    tile_f, stride_f = tiling.tile_sample_min_num_frames // rt, tiling.tile_sample_stride_num_frames // rt
    frames = [(i, i + tile_f + 1) for i in range(0, f, stride_f)] if f > tile_f else [(0, f)]
    th, tw = tiling.tile_sample_min_height // r, tiling.tile_sample_min_width // r
    if h <= th and w <= tw:
        cells = [(0, h, 0, w)]
    else:
        sh, sw = tiling.tile_sample_stride_height // r, tiling.tile_sample_stride_width // r
        cells = [(i, i + th, j, j + tw) for i in range(0, h, sh) for j in range(0, w, sw)]
    return [(t0, min(t1, f), h0, min(h1, h), w0, min(w1, w)) for t0, t1 in frames for h0, h1, w0, w1 in cells]


def _tile_shape(vae: VideoVAE, zs: torch.Tensor) -> tuple[int, ...]:
    """A decoder call's output shape (``VideoVAE.decode``: 8(F-1)+1 frames, 32x the latent grid)."""
    r, rt = vae.spatial_compression_ratio, vae.temporal_compression_ratio
    b, _, f, h, w = zs.shape
    return (b, vae.config.out_channels, (f - 1) * rt + 1, h * r, w * r)


def _checked(tile: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, k: int) -> torch.Tensor:
    if tuple(tile.shape) != shape or tile.dtype != dtype:
        raise RuntimeError(f"decode_parallel: tile {k} decoded to {tuple(tile.shape)} {tile.dtype}, the plan "
                           f"expects {shape} {dtype} (z's dtype: cast z to the VAE's dtype)")
    return tile


def _replay(slices: list[torch.Tensor], tiles: list[torch.Tensor]) -> Callable:
    """A stand-in decoder handing out ``tiles`` in order, checking that the VAE asks for the very
    latent window (shape and offset into z) the tile was decoded from."""
    calls = iter(zip(slices, tiles))

    def decoder(zs, temb, generator):
        planned, tile = next(calls, (None, None))
        if planned is None or zs.shape != planned.shape or zs.storage_offset() != planned.storage_offset():
            raise RuntimeError("decode_parallel: the VAE's tiled decode asked for a latent window the plan "
                               "(tile_windows) does not have; the two have diverged")
        return tile

    return decoder


def _decode_arguments(vae: VideoVAE, call: Callable) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The (z, temb) with which ``call(twin)`` reaches ``decode``: the input preparation (checks,
    denormalization, decode-noise draws) runs exactly once, as on one process; no tile is decoded."""
    seen = []

    def capture(z, temb=None, generator=None, tiling=None):
        seen.append((z, temb))

    twin = copy.copy(vae)
    twin.__dict__["decode"] = capture
    call(twin)
    return seen[0]


class _RandomDraws(TorchFunctionMode):
    """Records the torch.randn calls that draw from a generator: (size, dtype)."""

    def __init__(self):
        super().__init__()
        self.draws = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.randn and kwargs.get("generator") is not None:
            self.draws.append((tuple(args[0]), kwargs.get("dtype")))
        return func(*args, **kwargs)


def _noise_draws(decoder: torch.nn.Module, temb, z: torch.Tensor, device) -> list[tuple]:
    """The noise fields a decoder call draws, as (size per latent pixel, dtype), recorded on
    a one-frame 2x2 latent probe with a scratch generator: the injected fields are (H, W) images of
    the resnets' grids, which are fixed multiples of the latent grid (2x2: reflect padding's minimum)."""
    probe = torch.zeros(1, z.shape[1], 1, 2, 2, dtype=z.dtype, device=z.device)
    scratch = torch.Generator(device)
    with torch.no_grad(), _RandomDraws() as seen:
        decoder(probe, None if temb is None else temb[:1], scratch)
    return [((size[0] // 2, size[1] // 2), dtype) for size, dtype in seen.draws]


def _skip_draws(draws: list[tuple], zs: torch.Tensor, generator: torch.Generator) -> None:
    for (sh, sw), dtype in draws:  # ResnetBlock._noise's call: on the generator's device
        torch.randn((sh * zs.shape[3], sw * zs.shape[4]), generator=generator, device=generator.device, dtype=dtype)


def _injects_noise(decoder: torch.nn.Module) -> bool:
    return any(getattr(m, "per_channel_scale1", None) is not None for m in decoder.modules())


def _default_generator(device: torch.device) -> torch.Generator:
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


# -- communication ------------------------------------------------------------------------------------

def _rank_world(group) -> tuple[int, int]:
    if not dist.is_available() or not dist.is_initialized():
        if group is not None:
            raise ValueError(f"decode_parallel: group given ({group!r}) but torch.distributed is not initialized")
        return 0, 1
    return dist.get_rank(group), dist.get_world_size(group)


def _all_gather_tiles(mine: dict[int, torch.Tensor], owners: list[int], shapes: list[tuple[int, ...]],
                      like: torch.Tensor, group) -> list:
    """Every tile on every rank, in tile order. Every rank knows every tile's shape (the plan) and
    dtype and device (z's), so one flat buffer per rank, padded to the longest, is all that moves:
    a single all_gather, which both NCCL and gloo implement."""
    n, world = len(owners), dist.get_world_size(group)
    sizes = [prod(s) for s in shapes]
    lengths = [sum(sizes[k] for k in range(n) if owners[k] == r) for r in range(world)]
    flat = torch.zeros(max(lengths), dtype=like.dtype, device=like.device)
    if mine:
        own = torch.cat([mine[k].reshape(-1) for k in sorted(mine)])
        flat[: own.numel()] = own
    buffers = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(buffers, flat, group=group)
    tiles, offsets = [], [0] * world
    for k in range(n):
        r = owners[k]
        tiles.append(buffers[r][offsets[r]: offsets[r] + sizes[k]].view(shapes[k]))
        offsets[r] += sizes[k]
    return tiles
