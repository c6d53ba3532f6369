"""Peak memory of a generation, known before it starts.

A generation runs in phases (text encoding, denoising per stage, latent upsampling, decoding).
Each phase's peak = the weights resident on the device then + what the executor keeps across
phases (CUDA graph pools, the activation arena, static buffers) + the phase's own transient
memory, which comes from tracing the phase's code on fake tensors (``memory.trace_allocations``:
nothing is allocated, so a 19B step at full size is planned in seconds on any machine). The
engines build the phases (``Engine.plan``); this module holds the accounting and the report.

What the trace cannot see (workspaces allocated inside a kernel, e.g. cuBLAS and cuDNN, and
the caching allocator's rounding and fragmentation) is not in the figure; the GPU tests compare
the prediction with ``torch.cuda.max_memory_allocated``.

A fake trace costs ~0.1-0.5 ms of Python per op whatever the sizes, so a plan's cost is its op
count: the plans trace each distinct call of a repeated module once (``repeated=``: a DiT's
blocks, T5's layers, a VAE decoder per chunk or tile; replay.py keeps the peak equal to the full
trace's or above it) and reuse what does not depend on the video's size (``planning.memo_peak``).
Tiny engines deepened to released depth plan 3-5x faster that way (bench/results/cpu_vs_diffusers.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import torch
import torch.nn as nn

GiB = 1024 ** 3


def module_bytes(*modules: nn.Module | None, device: torch.device | None = None) -> int:
    """Bytes of the parameters and buffers of ``modules`` (shared tensors counted once); with
    ``device``, only those stored there."""
    seen, total = set(), 0
    for m in modules:
        if m is None:
            continue
        for t in [*m.parameters(), *m.buffers()]:
            if device is not None and not _on(t.device, device):
                continue
            key = (t.untyped_storage().data_ptr(), t.device) if t.device.type != "meta" else id(t)
            if key not in seen:
                seen.add(key)
                total += t.untyped_storage().nbytes() if t.device.type != "meta" else t.nbytes
    return total


def _on(where: torch.device, device: torch.device) -> bool:
    """``where`` is ``device`` ("cuda" without an index meaning the current one)."""
    if where.type != device.type:
        return False
    current = torch.cuda.current_device() if device.type == "cuda" else None
    return (where.index if where.index is not None else current) == (
        device.index if device.index is not None else current)


def fake_mode():
    """Tensors made inside this mode have shapes, dtypes and devices but no storage. The plans
    build their trace inputs in one, so planning allocates nothing however large the request
    (``transient_peak`` traces in its inputs' own mode; weights are converted as they are read)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    return FakeTensorMode(allow_non_fake_inputs=True)


def transient_peak(fn: Callable, *args, repeated=(), **kwargs) -> int:
    """Peak bytes alive during ``fn(*args)`` beyond its inputs, from a fake-tensor trace;
    ``repeated``: modules traced once per distinct call and replayed after (executor/replay.py),
    which keeps the peak equal to the full trace's (or above it) at a fraction of the cost."""
    from .memory import trace_allocations
    return trace_allocations(fn, *args, repeated=repeated, **kwargs).live_peak_bytes


@dataclass(frozen=True)
class Phase:
    name: str
    weights_bytes: int  # weights on the device during the phase
    kept_bytes: int  # executor memory alive across phases (graph pools, arena, static buffers)
    transient_bytes: int  # the phase's own activations (traced)

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kept_bytes + self.transient_bytes


@dataclass
class MemoryPlan:
    """What ``engine.plan(...)`` returns. ``fits`` compares the peak with what the generation can
    use: the memory free to this process now (``available_bytes``: free device memory on CUDA,
    the host's MemAvailable on the CPU; None where it cannot be read) plus what the peak counts
    that is already allocated (``held_bytes``: the engine's weights on the device now)."""

    device: torch.device
    phases: list[Phase] = field(default_factory=list)
    available_bytes: int | None = None
    suggestion: str | None = None
    held_bytes: int = 0
    choice: str | None = None  # the offload / tiling option planned (memory_budget, budget.py)

    @property
    def budget_bytes(self) -> int | None:
        """The largest peak that fits (None: the free memory is unknown)."""
        return None if self.available_bytes is None else self.available_bytes + self.held_bytes

    @property
    def peak_bytes(self) -> int:
        return max((p.total_bytes for p in self.phases), default=0)

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=lambda p: p.total_bytes).name if self.phases else ""

    @property
    def fits(self) -> bool | None:
        return None if self.available_bytes is None else self.peak_bytes <= self.budget_bytes

    def __str__(self) -> str:
        lines = [f"memory plan on {self.device}: peak {fmt_bytes(self.peak_bytes)} in {self.peak_phase!r}"]
        if self.choice:
            lines.append(f"  with {self.choice}")
        for p in self.phases:
            lines.append(f"  {p.name:<9} weights {fmt_bytes(p.weights_bytes):>10}  kept {fmt_bytes(p.kept_bytes):>10}"
                         f"  activations {fmt_bytes(p.transient_bytes):>10}  = {fmt_bytes(p.total_bytes):>10}")
        if self.available_bytes is not None:
            lines.append(f"  available {fmt_bytes(self.available_bytes)} free + {fmt_bytes(self.held_bytes)} of "
                         f"weights already there: {'fits' if self.fits else 'does NOT fit'}")
        if self.suggestion:
            lines.append(f"  {self.suggestion}")
        return "\n".join(lines)


def fmt_bytes(n: int) -> str:
    for unit, size in (("GiB", GiB), ("MiB", 1024 ** 2), ("KiB", 1024)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} B"


def available_bytes(device: torch.device) -> int | None:
    """Memory this process can still get on ``device``. CUDA: the driver's free memory plus what
    torch's caching allocator holds but does not use. CPU: the host's MemAvailable (what Linux
    can hand out without swapping; a container's own memory limit is not read). None elsewhere."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    if device.type == "cpu":
        return host_available_bytes()
    return None


def host_available_bytes(meminfo: str = "/proc/meminfo") -> int | None:
    """MemAvailable of ``meminfo`` in bytes; None where there is no such file (not Linux)."""
    try:
        with open(meminfo) as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except OSError:
        pass
    return None


class InsufficientMemoryError(MemoryError):
    """A generation's planned peak exceeds the memory available; raised before any work."""


class MemoryPlanError(RuntimeError):
    """The memory plan of a generation failed, so whether it fits is unknown; raised before any
    work (``engine.check_memory = False`` generates without the check)."""


def largest_fitting(candidates: Iterable, peak_of: Callable[[object], int], budget: int):
    """The last candidate (in increasing size order) whose peak fits ``budget``, by bisection
    (peaks grow with size); None if even the first does not fit."""
    cands = list(candidates)
    lo, hi, best = 0, len(cands) - 1, None
    while lo <= hi:
        mid = (lo + hi) // 2
        if peak_of(cands[mid]) <= budget:
            best, lo = cands[mid], mid + 1
        else:
            hi = mid - 1
    return best
