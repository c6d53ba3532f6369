"""Guidance parallel: a step's guidance passes (rows of one batch: cond, uncond, STG, isolated)
split over the ranks of a guidance group, computed, and all-gathered, so that every rank holds
every pass's prediction and computes the same guided result (the same ops on the same values).

Rows go round-robin: rank q of G computes rows q, q + G, ... A rank with fewer rows than
ceil(n / G) (or none: e.g. stage 2's single unguided pass) sends zeros for the missing ones;
all ranks wait for the slowest anyway, so only bytes are spent on them. The gather (one per step,
of float32 x0 / velocity rows) runs outside the step executor's captured graphs: LTX-2's captured
calls stay the per-batch model calls (on fewer rows); LTX-Video's captured step becomes the model
call on the rank's rows, its guidance and sampler update running eagerly after the gather.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

__all__ = ["rows_of", "gather_rows"]


def rows_of(group, n: int) -> list[int]:
    """The rows (of ``n``) this rank computes; every row when ``group`` is None."""
    if group is None:
        return list(range(n))
    dist = torch.distributed
    return list(range(dist.get_rank(group), n, dist.get_world_size(group)))


def gather_rows(local: Sequence[torch.Tensor | None], shapes: Sequence[tuple], n: int, group,
                device, dtype=torch.float32) -> list[torch.Tensor]:
    """local[i]: this rank's rows (k, *shapes[i]) of output i in ``rows_of`` order (None when
    k = 0) -> every output's n rows (n, *shapes[i]) in the original order, identical on every rank."""
    dist = torch.distributed
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    per_row = [math.prod(s) for s in shapes]
    width, k_max = sum(per_row), math.ceil(n / size)
    mine = torch.zeros(k_max, width, device=device, dtype=dtype)
    k = len(range(rank, n, size))
    if k:
        mine[:k] = torch.cat([t.reshape(k, -1).to(dtype) for t in local], dim=1)
    everyone = torch.empty(size * k_max, width, device=device, dtype=dtype)
    gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # the older name
    gather(everyone, mine, group=group)
    # rank q's j-th row is row q + j * size: (size, k_max) -> (k_max, size) puts them in order
    ordered = everyone.view(size, k_max, width).transpose(0, 1).reshape(size * k_max, width)[:n]
    outs, start = [], 0
    for shape, m in zip(shapes, per_row):
        outs.append(ordered[:, start:start + m].reshape(n, *shape))
        start += m
    return outs
