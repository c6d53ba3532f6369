"""Transformer block offload: the blocks live in (pinned) host memory and stream to the device in
groups of ``group_size`` blocks, the next group copied on a side stream while the current one
computes (diffusers' group offload with ``use_stream=True``, ltx-pipelines' ``--offload cpu``).

Layout. Each group's parameters and buffers are packed once into one flat host buffer (pinned on
CUDA, so the copy is a single DMA at full PCIe bandwidth); the device holds two slots of the
largest group's size. A tensor is moved by pointing its ``.data`` at its view in the host buffer
(at rest) or in a slot (in use), so the Parameter objects, their dtypes and storages stay what the
model built: fp8 weights and their scales move as stored (half the bytes of bf16), and so would
any other storage (GGUF's uint8 blocks) - nothing here looks at what a tensor holds.

Ordering (CUDA). A group is loaded into the slot the current group does not hold: the copy stream
first waits for an event recorded on the compute stream (the slot's previous group has finished
computing), copies, and records a copy event the compute stream waits on before the group's first
kernel. So at most two groups are on the device at any time, and a slot is overwritten only after
the kernels that read it. On the CPU (tests) the same path runs with synchronous copies between
host buffers, so what reaches each block is checked without a GPU.

Triggers. A forward pre-hook on every module of a block that owns tensors makes the block's group
resident (``ensure``), so a block's weights are also there when code calls a submodule directly
(LTX-Video's cross-attention K/V, computed once per generation). Entering a group prefetches the
next; the transformer's forward starts group 0's copy before its own pre-block work (embeddings,
RoPE). At the end of the transformer's forward every group goes back to host (pointer swaps; the
last copy is waited for): between forwards every weight is its host view, so LoRA fusion (dense
layers, fp8 "merge") writes the host copy - the fused weights are what is streamed - and fp8
"branch" LoRA factors, made next to their layer's weight, stay on the host too. Those factors are
forward-hook tensors, not module tensors: hooks that name their tensors in ``offload_tensors``
(loading.lora's ``_Branch``) get them copied with their block. The cost of evicting per forward:
the first group of each forward is not prefetched behind the previous forward (up to 1 / number of
groups of the copy time is exposed, ~2% of a 22B step with 24 groups, less the pre-block work).

CUDA graphs cannot capture a step whose weights change underneath it, so an engine with
offloaded blocks runs its steps eagerly (``Engine``: executor "auto" -> "eager"; "graphs" is
refused). Per-group graphs with the copies between them would be possible (slots are fixed
addresses) and are left for when a GPU measures what eager costs at these sizes.
"""

from __future__ import annotations

from functools import partial
from typing import Sequence

import torch
import torch.nn as nn

DEFAULT_GROUP_SIZE = 2  # blocks per group: two groups (4 blocks) on the device, 1/12 of a 48-block DiT
ALIGN = 256  # bytes: every tensor view starts on a boundary any dtype's kernels accept


def check_group_size(group_size, num_blocks: int) -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or not 1 <= group_size <= num_blocks:
        raise ValueError(f"offload_group_size must be an int in [1, {num_blocks}] (the transformer's block count), "
                         f"got {group_size!r}")
    return group_size


class BlockOffload:
    """Streams ``blocks`` (a transformer's ``transformer_blocks``) to ``device`` in groups.
    ``owner``: the module whose forward runs all blocks (evicted after it); ``stats`` counts loads
    and the most groups ever resident at once."""

    def __init__(self, blocks: Sequence[nn.Module], device, group_size: int, owner: nn.Module | None = None):
        self.device = torch.device(device)
        blocks = list(blocks)
        check_group_size(group_size, len(blocks))
        self.group_size = group_size
        self.groups = [blocks[i:i + group_size] for i in range(0, len(blocks), group_size)]
        self._tensors, self._host, layouts = [], [], []
        seen: set[int] = set()
        for g, group in enumerate(self.groups):
            tensors = _group_tensors(group, seen)
            layout, nbytes = _layout(tensors)
            self._tensors.append(tensors)
            layouts.append(layout)
            self._host.append(self._pack(tensors, layout, nbytes))
        self.group_bytes = max(h.numel() for h in self._host)
        n_slots = min(2, len(self.groups))
        self._slots = [torch.empty(self.group_bytes, dtype=torch.uint8, device=self.device) for _ in range(n_slots)]
        # views made once, outside inference mode (Parameter.data must not become an inference tensor)
        # (shaped, so a swap runs no op: inside a fake-tensor trace any op would make a fake tensor)
        self._host_views = [self._shaped(self._host[g], layouts[g], g) for g in range(len(self.groups))]
        self._slot_views = [[self._shaped(s, layouts[g], g) for g in range(len(self.groups))] for s in self._slots]
        self._slot_of: dict[int, int] = {}  # resident group -> slot
        self._extras: dict[int, list] = {}  # group -> [(hook, attribute, host tensor)]
        self._current: int | None = None
        self._copy_done: dict[int, object] = {}
        cuda = self.device.type == "cuda"
        self._copy_stream = torch.cuda.Stream(self.device) if cuda else None
        self.stats = {"loads": 0, "max_resident": 0}
        self._handles = [m.register_forward_pre_hook(partial(self._pre_hook, g))
                         for g, group in enumerate(self.groups) for b in group for m in b.modules()
                         if m is b or m._parameters or m._buffers]
        if owner is not None:  # group 0's copy starts with the forward, behind the work before the blocks
            self._handles.append(owner.register_forward_pre_hook(lambda *_: self.prefetch(0)))
            self._handles.append(owner.register_forward_hook(lambda *_: self.evict_all()))

    # ---- setup ----------------------------------------------------------------------------------
    def _shaped(self, buffer: torch.Tensor, layout, g: int) -> list[torch.Tensor]:
        return [v.view(t.shape) for v, t in zip(_views(buffer, layout), self._tensors[g])]

    def _pack(self, tensors: list[torch.Tensor], layout: list[int], nbytes: int) -> torch.Tensor:
        """One host buffer holding the group's tensors; each tensor's .data becomes its view there."""
        pin = self.device.type == "cuda"
        host = torch.empty(max(nbytes, 1), dtype=torch.uint8, pin_memory=pin)
        for t, view in zip(tensors, _views(host, layout)):
            view.view(t.shape).copy_(t.data)
            t.data = view.view(t.shape)  # the device copy (if any) is freed here
        return host

    @property
    def resident(self) -> list[int]:
        """The groups on the device now (at most two)."""
        return sorted(self._slot_of)

    @property
    def device_bytes(self) -> int:
        """What the offload keeps on the device: the two slots."""
        return sum(s.numel() for s in self._slots)

    def close(self, to_device: bool = True) -> None:
        """Stop streaming: remove the hooks; every block's tensors go back to the device for good, or
        with ``to_device=False`` stay in host memory (their host views, which keep the group buffers
        alive) for a new offload to pack: regrouping a DiT larger than the device must not land it there."""
        self.evict_all()
        for h in self._handles:
            h.remove()
        if to_device:
            for tensors in self._tensors:
                for t in tensors:
                    t.data = t.data.to(self.device, copy=True)
        self._slots.clear()

    # ---- streaming ------------------------------------------------------------------------------
    def _pre_hook(self, g: int, module, args) -> None:
        if g != self._current:
            self.ensure(g)

    def ensure(self, g: int) -> None:
        """Make group ``g`` the one computing (loaded now unless prefetched), and prefetch the next."""
        if g == self._current:
            return
        if g not in self._slot_of:
            self._load(g)
        if self._copy_stream is not None and g in self._copy_done and not _tracing():
            torch.cuda.current_stream(self.device).wait_event(self._copy_done[g])
        self._current = g
        nxt = g + 1  # not wrapping to group 0: every group goes home at the end of the forward
        if nxt < len(self.groups) and nxt not in self._slot_of:
            self._load(nxt)

    def prefetch(self, g: int) -> None:
        """Start copying group ``g`` (if it is not on the device) without waiting for it."""
        if g not in self._slot_of:
            self._load(g)

    def _load(self, g: int) -> None:
        """Copy group ``g`` into the slot the current group does not hold."""
        busy = self._slot_of.get(self._current)
        slot = next(s for s in range(len(self._slots)) if s != busy)
        old = next((k for k, s in self._slot_of.items() if s == slot), None)
        if old is not None:
            self._evict(old)
        if _tracing():  # a memory plan's fake trace: the weights need only be device tensors, not data
            self._point(g, slot)
            return
        stream = self._copy_stream
        compute = torch.cuda.current_stream(self.device) if stream is not None else None
        if stream is not None:
            stream.wait_event(compute.record_event())  # the slot's previous group's kernels are done
        with torch.cuda.stream(stream) if stream is not None else _nothing():
            self._slots[slot][: self._host[g].numel()].copy_(self._host[g], non_blocking=True)
            self._extras[g] = self._load_extras(g, compute)
        if stream is not None:
            self._copy_done[g] = stream.record_event()
        self._point(g, slot)
        self.stats["loads"] += 1
        self.stats["max_resident"] = max(self.stats["max_resident"], len(self._slot_of))

    def _point(self, g: int, slot: int) -> None:
        for t, view in zip(self._tensors[g], self._slot_views[slot][g]):
            t.data = view
        self._slot_of[g] = slot

    def _load_extras(self, g: int, compute) -> list:
        """Forward-hook tensors of the group's modules (fp8 LoRA branch factors) to the device, made
        on the copy stream and kept from reuse until ``compute`` (the compute stream) is past them."""
        moved = []
        for block in self.groups[g]:
            for m in block.modules():
                for hook in m._forward_hooks.values():
                    for name in getattr(hook, "offload_tensors", ()):
                        host = getattr(hook, name)
                        dev = host.to(self.device, non_blocking=True, copy=True)
                        if compute is not None:
                            dev.record_stream(compute)
                        setattr(hook, name, dev)
                        moved.append((hook, name, host))
        return moved

    def _evict(self, g: int) -> None:
        for t, view in zip(self._tensors[g], self._host_views[g]):
            t.data = view
        for hook, name, host in self._extras.pop(g, ()):
            setattr(hook, name, host)
        del self._slot_of[g]
        if self._current == g:
            self._current = None

    def evict_all(self) -> None:
        """Every group back to its host view (at the end of each forward, and before weights
        change). The last copy in flight is waited for, so host writes after this are safe."""
        if self._copy_stream is not None:
            self._copy_stream.synchronize()
        for g in list(self._slot_of):
            self._evict(g)
        self._current = None


def layer_stack(module: nn.Module) -> tuple[nn.ModuleList, nn.Module]:
    """(the ModuleList holding most of ``module``'s bytes, the module it belongs to, whose forward
    runs it): Gemma 3's decoder layers and their Gemma3TextModel, T5's blocks and their T5Stack."""
    from .plan import module_bytes
    lists = [(name, m) for name, m in module.named_modules() if isinstance(m, nn.ModuleList) and len(m)]
    if not lists:
        raise ValueError(f"block offload: {type(module).__name__} has no layer stack (nn.ModuleList) to stream")
    name, layers = max(lists, key=lambda nm: module_bytes(*nm[1]))
    return layers, module.get_submodule(name.rpartition(".")[0])


def _tracing() -> bool:
    """Inside a fake-tensor trace (memory planning): no copy may run, no stream be touched."""
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None


def slot_bytes(blocks: Sequence[nn.Module], group_size: int) -> int:
    """Device bytes ``BlockOffload(blocks, ..., group_size)`` keeps: two slots of the largest
    group (one when a single group holds every block); computed without moving anything."""
    blocks = list(blocks)
    groups = [blocks[i:i + group_size] for i in range(0, len(blocks), group_size)]
    largest = max(_layout(_group_tensors(g, set()))[1] for g in groups)
    return min(2, len(groups)) * largest


def _group_tensors(blocks: list[nn.Module], seen: set[int]) -> list[torch.Tensor]:
    """Every parameter and buffer of ``blocks`` once (tied tensors once; one tied across groups is
    refused: it could not be in two slots)."""
    out, mine = [], set()
    for b in blocks:
        for m in b.modules():
            for t in [*m._parameters.values(), *m._buffers.values()]:
                if t is None or id(t) in mine:
                    continue
                if id(t) in seen:
                    raise ValueError("block offload: a tensor is shared by blocks of different groups; use an "
                                     "offload_group_size that keeps them in one group")
                mine.add(id(t))
                out.append(t)
    seen |= mine
    return out


def _layout(tensors: list[torch.Tensor]) -> tuple[list, int]:
    """[(byte offset, (numel, dtype))] per tensor, each aligned; the total bytes."""
    offsets, pos = [], 0
    for t in tensors:
        offsets.append(pos)
        pos += -(-t.numel() * t.element_size() // ALIGN) * ALIGN
    return list(zip(offsets, [(t.numel(), t.dtype) for t in tensors])), pos


def _views(buffer: torch.Tensor, layout) -> list[torch.Tensor]:
    """Flat typed views of ``buffer`` at the layout's offsets."""
    return [buffer[off: off + n * torch.empty((), dtype=dt).element_size()].view(dt) for off, (n, dt) in layout]


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
