"""Where each component's weights live between uses.

"resident" components stay on the engine's device. "offload" components live in host memory and
are moved to the device only while a stage uses them (the text encoder for the prompt, the latent
upsampler between the two stages, ...), then moved back, so the denoiser's peak does not carry
them: T5-XXL is ~9.5 GB and Gemma 3 12B ~24 GB in bf16. The move costs one host-to-device copy per
use (pageable memory: roughly 10-25 GB/s, to be measured on the GPU). A component whose layers are
streamed (``streamed``: the text encoder's, executor/block_offload.py) moves without them: Gemma 3
12B's 48 decoder layers are 20 of its 22 GiB.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterable

import torch
import torch.nn as nn

from ..models.packing import pack_projections


class Residency:
    def __init__(self, device: torch.device | str, offload: Iterable[str] = (), known: Iterable[str] = ()):
        self.device = torch.device(device)
        if isinstance(offload, str):
            offload = (offload,)
        offload = tuple(offload)
        known = tuple(known)
        for name in offload:
            if name not in known:
                raise ValueError(f"offload: components that can be offloaded are {known}, got {name!r}")
        self.offload = frozenset(offload) if self.device.type != "cpu" else frozenset()
        # name -> BlockOffload of the component's layers: streamed, so left out of its whole moves
        self.streamed: dict = {}
        # the transformer, which leaves the device while the text encoder or the upsampler is in use
        # when "transformer_between_stages" is offloaded (the engine sets it)
        self.transformer: nn.Module | None = None

    def with_offload(self, offload: Iterable[str], known: Iterable[str]) -> "Residency":
        """The same device, streamed layers and transformer, another offload set."""
        other = Residency(self.device, offload, known)
        other.streamed, other.transformer = self.streamed, self.transformer
        return other

    def home(self, name: str) -> torch.device:
        """Where ``name`` lives between uses."""
        return torch.device("cpu") if name in self.offload else self.device

    def park(self, name: str, module: nn.Module | None) -> None:
        """Put ``module`` where it lives between uses."""
        if module is not None:
            self._move(name, module, self.home(name))

    def _move(self, name: str, module: nn.Module, device: torch.device) -> None:
        """``module.to(device)``, except the layers ``streamed[name]`` streams (they stay in its
        pinned host buffers and visit the device a group at a time)."""
        streaming = self.streamed.get(name)
        if streaming is None:
            module.to(device)
            return
        skip = {id(m) for group in streaming.groups for block in group for m in block.modules()}
        for m in module.modules():
            if id(m) in skip:
                continue
            for t in [*m._parameters.values(), *m._buffers.values()]:
                if t is not None:
                    t.data = t.data.to(device)

    @contextmanager
    def use(self, name: str, module: nn.Module | None):
        """On the device for the block; back home after it (also when the block raises). With
        "transformer_between_stages" offloaded, the transformer (less its streamed blocks) is in
        host memory while the text encoder or the latent upsampler is in use."""
        away = (self.transformer is not None and "transformer_between_stages" in self.offload
                and name in ("text_encoder", "latent_upsampler"))
        if away:
            self._move("transformer", self.transformer, torch.device("cpu"))
        try:
            with self._use(name, module):
                yield module
        finally:
            if away:
                self._move("transformer", self.transformer, self.device)
                if "transformer" not in self.streamed:  # the move gave each weight its own storage again
                    pack_projections(self.transformer)

    @contextmanager
    def _use(self, name: str, module: nn.Module | None):
        if module is None or name not in self.offload:
            yield module
            return
        self._move(name, module, self.device)
        try:
            yield module
        finally:
            self._move(name, module, torch.device("cpu"))
            if self.device.type == "cuda":
                torch.cuda.empty_cache()  # hand the freed blocks back so the peak really drops
