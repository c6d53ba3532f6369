"""Where ``load_strict`` puts each tensor of a transformer whose blocks will be streamed.

A DiT that does not fit the device (bf16 LTX-2.3 22B: 44 GB on a 24 GB card) cannot be loaded
whole to the device and then packed to the host, as ``stream_blocks`` alone would: under
``blocks_on_host(...)`` the tensors of the transformer's ``transformer_blocks.*`` are read
straight into host memory and only its other tensors (embeddings, adaLN, projections: ~1% of
the DiT) to the device. The block offload then packs the host copies into its pinned group
buffers (so the staging copy here is ordinary pageable memory, not pinned twice). Device peak
during load: the non-block weights, then with ``stream_blocks`` the two group slots.

Which model: the one ``load_strict`` fills that has a ``transformer_blocks`` ModuleList at its top
level - the DiT of either family (the LTX-2 text connectors' blocks sit under ``video_connector.``
and ``audio_connector.``, not at the top level). fp8 quantization at load runs per layer on the
engine's device and the fp8 result comes to the host (fp8_formats._QuantizeAtLoad): the same
kernel as a resident load, so the same bits, and the device holds one layer at a time.

``above``: place on the host only when the DiT as loaded (stored fp8 layers at their size, the
rest in the load dtype) exceeds that many bytes - ``memory_budget``: with a DiT larger than the
budget every option the budget can pick streams its blocks (the others keep the whole DiT on the
device while denoising), so loading it whole could only fail.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable

import torch
import torch.nn as nn

__all__ = ["BLOCKS", "HostBlocks", "blocks_on_host", "placer"]

BLOCKS = "transformer_blocks."


class HostBlocks:
    """What ``blocks_on_host`` placed: ``placed`` (model key -> device) and bytes per side, so a
    caller (from_pretrained) and tests see where the DiT's tensors went."""

    def __init__(self, host, above: int | None = None):
        self.host, self.above = torch.device(host), above
        self.placed: dict[str, torch.device] = {}
        self.host_bytes = self.device_bytes = 0

    @property
    def used(self) -> bool:
        """Whether any block tensor was loaded to the host."""
        return self.host_bytes > 0


_ACTIVE: ContextVar[HostBlocks | None] = ContextVar("ltxengine_blocks_on_host", default=None)


@contextmanager
def blocks_on_host(host="cpu", above: int | None = None):
    """Within: the DiT's block tensors load to ``host`` (see the module docstring); yields the
    HostBlocks record."""
    record = HostBlocks(host, above)
    token = _ACTIVE.set(record)
    try:
        yield record
    finally:
        _ACTIVE.reset(token)


def placer(model: nn.Module, expected: dict, device, dtype: torch.dtype,
           keeps_dtype: Callable[[str], bool]) -> Callable[[str], torch.device]:
    """key -> the device ``load_strict`` reads that tensor to (``device`` unless a block of a DiT
    under ``blocks_on_host``); each decision recorded with its bytes."""
    record = _ACTIVE.get()
    device = torch.device(device)
    if record is None or not isinstance(getattr(model, "transformer_blocks", None), nn.ModuleList):
        return lambda key: device
    size = {k: t.numel() * (t.element_size() if keeps_dtype(k) or not t.is_floating_point() else dtype.itemsize)
            for k, t in expected.items()}
    on_host = record.above is None or sum(size.values()) > record.above

    def place(key: str) -> torch.device:
        to_host = on_host and key.startswith(BLOCKS)  # decided, not compared: on the CPU host == device
        record.placed[key] = record.host if to_host else device
        if to_host:
            record.host_bytes += size[key]
        else:
            record.device_bytes += size[key]
        return record.placed[key]
    return place
