"""``memory_budget``: pick where weights live and whether the VAE tiles so a generation's planned
peak fits a given number of bytes (``Engine.from_pretrained(..., memory_budget="24GB")``).

The options are tried from the cheapest to the most intrusive, and the first whose plan fits is
taken (``MemoryChoice``, also ``engine.memory_choice`` and a log line):
  1. everything resident;
  2. the offloadable components (text encoder, latent upsampler, VAE encoder) in host memory
     between uses: one copy per generation each;
  3. and VAE tiling (decode memory stops growing with the frame size);
  4. and the text encoder's layers streamed one at a time while it encodes (Gemma 3 12B: 22 GiB
     whole; the same copies per prompt as moving it whole), when that saves anything;
  5. and the transformer in host memory while the text encoder and the upsampler run
     ("transformer_between_stages": two copies of the DiT per generation, steps eager);
  6. and the transformer's blocks streamed, in groups of n/2, n/4, ..., 2, 1 blocks (the larger the
     group, the fewer synchronisations; each halving takes half the streamed weights off the
     device).
Each option's plan is the engine's own ``_plan`` with the option assumed (nothing moves while
planning). The choice is applied before the generation's memory check: components re-parked,
blocks streamed or made resident, the request's ``vae_tiling`` set (a request that tiles keeps its
own tiles).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from contextlib import contextmanager
from dataclasses import dataclass, replace

from .executor.plan import InsufficientMemoryError, MemoryPlan, fmt_bytes
from .executor.residency import Residency
from .planning import disk_cached_plan, reusing_traces

__all__ = ["MemoryChoice", "candidates", "check_load_options", "choose", "fit_budget", "parse_budget",
           "plan_options"]

log = logging.getLogger(__name__)
_UNITS = {"": 1, "b": 1, "kb": 10 ** 3, "mb": 10 ** 6, "gb": 10 ** 9, "tb": 10 ** 12,
          "kib": 2 ** 10, "mib": 2 ** 20, "gib": 2 ** 30, "tib": 2 ** 40}


@dataclass(frozen=True)
class MemoryChoice:
    offload: tuple[str, ...]  # components in host memory between uses
    vae_tiling: bool  # the decode tiles (the request's own tiles when it has some)
    group_size: int | None  # transformer blocks streamed in groups of this size; None: resident
    text_layers: bool = False  # the text encoder's layers streamed one at a time while it encodes

    def __str__(self) -> str:
        parts = [f"offload={self.offload}" if self.offload else "everything resident"]
        if self.vae_tiling:
            parts.append("VAE tiling")
        if self.text_layers:
            parts.append("text encoder layers streamed")
        if self.group_size is not None:
            parts.append(f"transformer blocks streamed in groups of {self.group_size}")
        return ", ".join(parts)


def parse_budget(value) -> int:
    """"24GB" (10^9), "20GiB" (2^30), "512 MiB", or a number of bytes -> bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value > 0:
        return value
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b|b)?\s*", value, re.I) if isinstance(value, str) else None
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"memory_budget must be a positive size like '24GB', '20GiB' or a number of bytes, "
                         f"got {value!r}")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").lower()])


def check_load_options(offload, group_size, budget, executor) -> int | None:
    """from_pretrained's offload_group_size / memory_budget, checked before any weight is read;
    -> the budget in bytes (None: no budget)."""
    names = (offload,) if isinstance(offload, str) else tuple(offload)
    if group_size is not None:
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ValueError(f"offload_group_size must be a positive int (blocks per streamed group), "
                             f"got {group_size!r}")
        if "transformer" not in names:
            raise ValueError(f"offload_group_size: blocks are streamed only with offload=('transformer',), "
                             f"got offload={offload!r}")
    if budget is None:
        return None
    if names:
        raise ValueError(f"memory_budget picks what to offload itself; give memory_budget or offload, not both "
                         f"(got offload={offload!r})")
    if executor == "graphs":
        raise ValueError("memory_budget may stream the transformer's blocks, which a captured step cannot "
                         "contain; use executor='auto' or 'eager' with it, got executor='graphs'")
    return parse_budget(budget)


def candidates(engine) -> list[MemoryChoice]:
    """The options in the order they are tried (module docstring)."""
    from .executor.block_offload import slot_bytes
    from .executor.plan import module_bytes
    comps = tuple(n for n in engine.OFFLOADABLE if engine.offloadable(n) is not None)
    blocks = engine.transformer.transformer_blocks
    n, whole = len(blocks), module_bytes(*blocks)
    sizes = sorted({max(1, n >> k) for k in range(1, n.bit_length())} | {2, 1}, reverse=True)
    out = [MemoryChoice((), False, None), MemoryChoice(comps, False, None), MemoryChoice(comps, True, None)]
    # streaming the text encoder's layers costs a copy per prompt (as offloading it does), blocks one per
    # step: text first. A group size whose two slots hold as much as the whole stack saves nothing.
    # then the DiT in host memory while the text encoder and upsampler run: two DiT copies per generation
    text = _text_layers_help(engine)
    if text:
        out.append(MemoryChoice(comps, True, None, True))
    away = comps + ("transformer_between_stages",)
    out.append(MemoryChoice(away, True, None, text))
    return out + [MemoryChoice(away, True, g, text) for g in sizes if g < n and slot_bytes(blocks, g) < whole]


def _text_layers_help(engine) -> bool:
    from .executor.block_offload import layer_stack, slot_bytes
    from .executor.plan import module_bytes
    te = engine.offloadable("text_encoder")
    if te is None:
        return False
    layers, _ = layer_stack(te)
    return slot_bytes(layers, 1) < module_bytes(*layers)


@contextmanager
def assumed(engine, choice: MemoryChoice):
    """The engine's plan sees ``choice`` (nothing moves): its residency and streamed group size."""
    saved = engine.residency
    engine.residency = Residency(engine.device, (), engine.OFFLOADABLE)
    engine.residency.offload = frozenset(choice.offload)  # also on the CPU, where nothing is ever moved
    engine._assumed_group_size = choice.group_size
    engine._assumed_text_streamed = choice.text_layers
    try:
        yield
    finally:
        engine.residency = saved
        del engine._assumed_group_size, engine._assumed_text_streamed


def with_tiling(engine, request, choice: MemoryChoice):
    if not choice.vae_tiling or request.vae_tiling is not None:
        return request
    from .models.video_vae import TilingConfig
    return replace(request, vae_tiling=TilingConfig())


def plan_of(engine, request, choice: MemoryChoice) -> MemoryPlan:
    """``choice``'s plan of ``request``, cached per request shape, option and weights (a plan traces
    every phase: seconds at full size, and fit_budget asks on every generate)."""
    # the executor's mode is in both keys: its kept buffers are a term of every phase, and fit_budget
    # may change it (CUDA graphs cannot follow a DiT moved between stages)
    mode = getattr(engine.executor, "mode", None)
    key = (*request.plan_key(), choice, mode, engine.graph_state())
    cache = engine.__dict__.setdefault("_budget_plans", {})
    if key not in cache:
        shape = ("budget", type(request).__name__, *request.plan_key(), dataclasses.astuple(choice),
                 mode)  # on disk: the fingerprint stands for graph_state
        with assumed(engine, choice):
            plan = disk_cached_plan(engine, shape, lambda: engine._plan(with_tiling(engine, request, choice)))
        plan.choice = str(choice)
        cache[key] = plan
    return cache[key]


def plan_options(engine, request) -> list[tuple[MemoryChoice, MemoryPlan]]:
    with reusing_traces(engine):  # the options share their activation traces
        return [(c, plan_of(engine, request, c)) for c in candidates(engine)]


def choose(engine, request, budget: int) -> tuple[MemoryChoice, MemoryPlan]:
    """The first option whose planned peak fits ``budget``; else InsufficientMemoryError naming the
    smallest plan's peak."""
    tried = []
    with reusing_traces(engine):  # the options share their activation traces
        for choice in candidates(engine):
            plan = plan_of(engine, request, choice)
            if plan.peak_bytes <= budget:
                return choice, plan
            tried.append((choice, plan))
    choice, plan = min(tried, key=lambda t: t[1].peak_bytes)
    raise InsufficientMemoryError(
        f"memory_budget: no offload / tiling option fits {fmt_bytes(budget)} for this request; the smallest plan "
        f"({choice}) peaks at {fmt_bytes(plan.peak_bytes)} in {plan.peak_phase!r}. Lower the size or num_frames, "
        f"quantize (quantization='fp8-cast'), or raise the budget.\n{plan}")


def fit_budget(engine, request):
    """Apply the option ``choose`` picks for ``request`` to the engine; -> the request to run."""
    choice, plan = choose(engine, request, engine.memory_budget)
    if choice != engine.memory_choice:
        log.info("memory_budget %s: %s (planned peak %s in %r)", fmt_bytes(engine.memory_budget), choice,
                 fmt_bytes(plan.peak_bytes), plan.peak_phase)
    if engine.residency.offload != frozenset(choice.offload) and engine.device.type != "cpu":
        engine.residency = engine.residency.with_offload(choice.offload, engine.OFFLOADABLE)
        for name in engine.OFFLOADABLE:
            engine.residency.park(name, engine.offloadable(name))
    if "transformer_between_stages" in choice.offload and getattr(engine.executor, "mode", None) == "graphs":
        from .executor.graphs import GraphExecutor
        engine.executor = GraphExecutor(engine.device, "eager")  # captured steps cannot follow moved weights
    engine.stream_text_encoder(choice.text_layers)
    engine.stream_blocks(choice.group_size)
    engine.memory_choice = choice
    return with_tiling(engine, request, choice)
