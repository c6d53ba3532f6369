"""Tiled decoding of the LTX-2.5 diffusion decoder, as diffusers' LTX2VideoDiffusionDecoderModel
tiled_decode does it (0.42.1): the deterministic stages but the last run on the whole latent (they are
small); the last stage and stage 5, which dominate memory, run per overlapping tile of the grid that
enters the last stage, and the decoded tiles are cross-faded linearly over their overlaps.

Sizes are a ``TilingConfig`` in pixels / frames (the reference's: 768 x 768 x 80 tiles, strides 704 /
704 / 56, ``DIFFUSION_TILING``), converted to that grid, whose cells are the last upsample's stride
times the patch (8 px, 2 frames released). Only the tile holding t = 0 drops the upsample's duplicate
leading frame, only the one holding the clip's end crops the ghost frames. A one-step x0 decode draws
each tile's noise in tile order; a multi-step decode slices one canvas drawn first.
"""

from __future__ import annotations

import math

import torch

from .video_vae import TilingConfig

DIFFUSION_TILING = TilingConfig(768, 768, 80, 704, 704, 56)


def needs_tiling(model, z: torch.Tensor, tiling: TilingConfig) -> bool:
    """diffusers' rule: the latent exceeds one tile in some dimension."""
    cfg = model.config
    return (z.shape[2] > tiling.tile_sample_min_num_frames // cfg.temporal_compression_ratio
            or z.shape[3] > tiling.tile_sample_min_height // cfg.spatial_compression_ratio
            or z.shape[4] > tiling.tile_sample_min_width // cfg.spatial_compression_ratio)


def _intervals(length: int, tile: int, stride: int, min_size: int) -> list[tuple[int, int]]:
    """[start, end) tiles covering [0, length) every ``stride``; a last remnant under ``min_size``
    (smaller than an attention window) joins the tile before it."""
    if length <= tile:
        return [(0, length)]
    starts = list(range(0, length, stride))
    while len(starts) > 1 and length - starts[-1] < min_size:
        starts.pop()
    return [(s, min(s + tile, length)) for s in starts[:-1]] + [(starts[-1], length)]


def _blend(a: torch.Tensor, b: torch.Tensor, extent: int, dim: int) -> torch.Tensor:
    """b's first ``extent`` slices along ``dim`` faded in from a's last ones, in place (diffusers')."""
    extent = min(a.shape[dim], b.shape[dim], extent)
    for i in range(extent):
        b.select(dim, i).copy_(a.select(dim, a.shape[dim] - extent + i) * (1 - i / extent)
                               + b.select(dim, i) * (i / extent))
    return b


def tiled_decode(model, z: torch.Tensor, generator, num_inference_steps: int, tiling: TilingConfig) -> torch.Tensor:
    cfg, p = model.config, model.config.patch_size
    stride = model.decoder.upsamples[-1].stride
    scale = (stride[0], stride[1] * p, stride[2] * p)  # pixels per cell of the tiling grid
    sizes = [(tiling.tile_sample_min_num_frames, tiling.tile_sample_stride_num_frames),
             (tiling.tile_sample_min_height, tiling.tile_sample_stride_height),
             (tiling.tile_sample_min_width, tiling.tile_sample_stride_width)]
    cells = [(tile // s, step // s) for (tile, step), s in zip(sizes, scale)]
    # a tile must fit the last stage's window and, upsampled, stage 5's
    mins = [max(k4, -(-k5 // s)) for k4, k5, s in zip(cfg.decoder_stage_kernels[-1], cfg.decoder_stage5_kernel, stride)]
    features = model.first_stages(z)
    ghosts = model.trailing_pad * math.prod(up.stride[0] for up in model.decoder.upsamples[:-1])
    grid = (features.shape[1] - ghosts, features.shape[2], features.shape[3])
    tiles = [_intervals(n, tile, step, m) for n, (tile, step), m in zip(grid, cells, mins)]
    blends = [(tile - step) * s for (tile, step), s in zip(cells, scale)]
    b, drop = z.shape[0], 1 if scale[0] == 2 else 0
    one_shot = num_inference_steps == 1 and cfg.decoder_model_output_type == "x0"
    canvas = None
    if not one_shot:  # the steps integrate the noise: overlapping tiles start from the same canvas
        shape = (b, cfg.out_channels, grid[0] * scale[0] - drop, grid[1] * scale[1], grid[2] * scale[2])
        canvas = _randn(shape, generator, z)
    groups = []
    for t0, t1 in tiles[0]:
        rows = [[_tile(model, features, z, generator, canvas, num_inference_steps, (t0, t1), hs, ws, grid, scale,
                       drop) for ws in tiles[2]] for hs in tiles[1]]
        groups.append(_join_spatial(rows, cells, scale, blends))
    out = []
    for k, group in enumerate(groups):
        if k > 0:
            group = _blend(groups[k - 1], group, blends[0], 2)
        if k < len(groups) - 1:  # the origin group is one frame short: its first cell is one pixel frame
            group = group[:, :, :cells[0][1] * scale[0] - (drop if k == 0 else 0)]
        out.append(group)
    return torch.cat(out, dim=2)


def _randn(shape, generator, z):
    where = generator.device if generator is not None else z.device
    return torch.randn(shape, generator=generator, device=where, dtype=z.dtype).to(z.device)


def _tile(model, features, z, generator, canvas, steps, ts, hs, ws, grid, scale, drop):
    (t0, t1), (h0, h1), (w0, w1) = ts, hs, ws
    origin, trailing = t0 == 0, t1 == grid[0]
    feature_t1 = features.shape[1] if trailing else t1  # the end tile takes the ghosts into the last stage
    context = model.last_stage(features[:, t0:feature_t1, h0:h1, w0:w1], origin, trailing)
    p = model.config.patch_size
    shape = (z.shape[0], model.config.out_channels, context.shape[1], context.shape[2] * p, context.shape[3] * p)
    if canvas is None:
        x_t = _randn(shape, generator, z)
    else:  # a tile past t = 0 keeps the duplicate leading frame: it starts one pixel frame earlier
        pt0, ph0, pw0 = t0 * scale[0] - (0 if origin else drop), h0 * scale[1], w0 * scale[2]
        x_t = canvas[:, :, pt0:pt0 + shape[2], ph0:ph0 + shape[3], pw0:pw0 + shape[4]]
    return model.denoise(context, x_t, steps)


def _join_spatial(rows, cells, scale, blends):
    joined = []
    for i, row in enumerate(rows):
        kept = []
        for j, tile in enumerate(row):
            if i > 0:
                tile = _blend(rows[i - 1][j], tile, blends[1], 3)
            if j > 0:
                tile = _blend(row[j - 1], tile, blends[2], 4)
            # the last tile keeps its whole extent (a short remnant may have joined it)
            keep_h = cells[1][1] * scale[1] if i < len(rows) - 1 else tile.shape[3]
            keep_w = cells[2][1] * scale[2] if j < len(row) - 1 else tile.shape[4]
            kept.append(tile[:, :, :, :keep_h, :keep_w])
        joined.append(torch.cat(kept, dim=4))
    return torch.cat(joined, dim=3)
