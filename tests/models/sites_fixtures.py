"""Helpers the ops-site tests share (test_fused_linears, test_residual_norm_sites, test_dual_norm_sites,
test_ltx2_audio_only): an ops object that counts the calls of the functions it swaps in, and one forward of
a tiny LTX-Video transformer on fixed random inputs."""

from __future__ import annotations

import collections
import dataclasses

import torch

from ltxengine.models.transformer import grid_positions
from ltxengine.ops import TORCH_OPS


def spied(**fns):
    """TORCH_OPS with ``fns`` put in place, each counting its calls."""
    calls = collections.Counter()

    def spy(name, fn):
        def counted(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)

        return counted

    return dataclasses.replace(TORCH_OPS, **{n: spy(n, f) for n, f in fns.items()}), calls


def ltx_video_forward(model, dtype=torch.float32, batch=2):
    """``model`` (a tiny LTX-Video transformer, e.g. transformer_fixtures.make_pair's) on seeded inputs."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3 * 4 * 5, 8, generator=g).to(dtype)
    text = torch.randn(batch, 7, 12, generator=g).to(dtype)
    mask = torch.ones(batch, 7)
    t = torch.tensor([937.5, 120.0])[:batch]
    with torch.no_grad():
        rope = model.rope(grid_positions(batch, 3, 4, 5, (8 / 25, 32, 32)))
        return model(x, t, context=model.prepare_context(text, mask), rope=rope)
