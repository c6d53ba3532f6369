"""Inputs of the row kernels' tests (kernels/ada_norm.py's ops): streams and modulation tables, and
the check their error tables share."""

import re

import pytest
import torch

DEV = "cuda" if torch.cuda.is_available() else "cpu"
EPS = 1e-6  # every LTX transformer's block norms


def stream(b=2, n=7, d=40, dtype=torch.bfloat16, seed=0):
    """A residual stream (B, N, D) with an offset mean, so the LayerNorm's centering matters."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, d, generator=g) * 2 + 0.5).to(DEV, dtype)


def table(b, n, d, dtype=torch.bfloat16, seed=1, rows=6):
    """A (B, N|1, rows, D) modulation table like the transformers' (6 rows per LTX-Video block, 5 for
    LTX-2's audio<->video rows); slices of it are strided."""
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, rows, d, generator=g) * 0.5).to(DEV, dtype)


def refuses_unchanged(call, message: str) -> None:
    """``call(x, m)`` on a stream x and a (B, 1, D) modulation row m raises ValueError with ``message``
    (literally) and leaves x as it was: a refused call writes nothing, in place or not."""
    x = stream()
    before = x.clone()
    with pytest.raises(ValueError, match=re.escape(message)):
        call(x, table(2, 1, 40)[:, :, 0])
    assert torch.equal(x, before)
