"""The text encoder runs once per generation, on rank 0, and its output is broadcast.

Why not on every rank: the same weights on the same prompt would give the same numbers on
identical GPUs, but only a broadcast guarantees every rank denoises the very same context (one
differing bit would make ranks disagree); rank 0 alone also moves an offloaded encoder to its
device. Ranks that wait hold the encoder's weights all the same (one replica per rank).

A failure on rank 0 (a bad prompt, a non-finite output) is broadcast as such: every rank raises
instead of waiting for tensors that never come.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["on_main_rank"]


def on_main_rank(parallel, encode: Callable[[], tuple]) -> tuple:
    """``encode()`` -> a tuple of tensors (or None entries), run on rank 0 of ``parallel`` (a
    ParallelState, or None: run here) and broadcast to every rank on its device."""
    if parallel is None:
        return encode()
    dist = torch.distributed
    meta: list = [None]
    out = None
    if parallel.is_main:
        try:
            out = tuple(None if t is None else t.to(parallel.device).contiguous() for t in encode())
            meta[0] = [None if t is None else (tuple(t.shape), t.dtype) for t in out]
        except BaseException as e:
            meta[0] = f"{type(e).__name__}: {e}"
            dist.broadcast_object_list(meta, src=0)
            raise
    dist.broadcast_object_list(meta, src=0)
    if isinstance(meta[0], str):
        raise RuntimeError(f"parallel: the text encoder failed on rank 0 ({meta[0]}); nothing was generated")
    if out is None:
        out = tuple(None if m is None else torch.empty(m[0], dtype=m[1], device=parallel.device) for m in meta[0])
    for t in out:
        if t is not None:
            dist.broadcast(t, src=0)
    return out
