"""The static-graph executor: one denoising step captured once per shape bucket, then replayed.

A step is a pure function of tensors: ``fn(*tensors) -> tensor or tuple of tensors``. Whatever it
reads besides its arguments (weights, buffers) is baked into a captured graph by address, so
everything that changes between generations (latents, timestep embeddings, text context, RoPE
tables, guidance scales) must be an argument. Non-tensor arguments are allowed and become part of
the bucket key (they specialise the graph, like a flag).

``GraphExecutor.run(fn, *args)``:
  - bucket key = the step's name, each tensor argument's (shape, dtype, device, stride), the
    non-tensor arguments and the executor's ``state`` (the weights' identity: LoRA version,
    quantization, kernels). A state change drops every graph: their baked addresses may point at
    freed weights.
  - tensor arguments are copied into the bucket's static input buffers; an argument that is the
    same object as in the previous call of that bucket is not copied again (per-generation
    constants such as the text context or the RoPE tables are copied once, not once per step).
    Callers must not modify such a tensor in place between calls.
  - mode "graphs" (CUDA): the first call of a bucket warms the step up on a side stream (so
    compilation and autotuning stay out of the capture), then captures it into a graph whose
    memory comes from one pool shared by every bucket of the executor (``prepare`` captures the
    largest bucket first so the smaller ones reuse its blocks); later calls only copy and replay.
  - mode "eager" (CPU, or on request): the same buffers and keys; the step runs and its results
    are copied into the static outputs (so the data flow is exactly the one replay gives).
The returned tensors are the bucket's static outputs: valid until the next call of the same
bucket (copy what must outlive it). Passing an output back as the next call's input is fine.
"""

from __future__ import annotations

import time
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Sequence

import torch
import torch.utils._pytree as pytree

MODES = ("auto", "graphs", "eager")
MEMORY = ("auto", "paged", "allocator")


def resolve_mode(mode: str, device: torch.device | str) -> str:
    """"auto" -> "graphs" on CUDA devices, "eager" elsewhere; "graphs" needs CUDA."""
    device = torch.device(device)
    if mode not in MODES:
        raise ValueError(f"executor: mode must be one of {MODES}, got {mode!r}")
    if mode == "auto":
        return "graphs" if device.type == "cuda" else "eager"
    if mode == "graphs" and device.type != "cuda":
        raise ValueError(f"executor: mode 'graphs' needs a CUDA device, got {device} (use 'eager' or 'auto')")
    return mode


def _tensor_key(t: torch.Tensor) -> tuple:
    return ("T", tuple(t.shape), t.dtype, t.device, t.stride())


def bucket_key(name: str, args: Sequence[Any], state: Hashable = (), spec: Any = None) -> tuple:
    """The key a call is cached under: tensors by (shape, dtype, device, stride), anything else by
    value (it must be hashable: floats, ints, bools, strings, None, frozen dataclasses...), plus the
    structure ``spec`` the leaves came from."""
    parts = []
    for i, a in enumerate(args):
        if isinstance(a, torch.Tensor):
            parts.append(_tensor_key(a))
        else:
            try:
                hash(a)
            except TypeError:
                raise ValueError(f"executor {name!r}: argument {i} must be a tensor or a hashable value, got "
                                 f"{type(a).__name__}") from None
            parts.append(("V", a))
    return (name, tuple(parts), state, spec)


def _static_like(t: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """An uninitialised buffer with t's shape, dtype and strides (strides matter: the captured
    kernels were chosen for them), on ``device`` (default: t's)."""
    device = t.device if device is None else device
    if any(st == 0 and n > 1 for st, n in zip(t.stride(), t.shape)):  # expanded: cannot be written to
        return torch.empty(t.shape, dtype=t.dtype, device=device)
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=device)


def _on_leaves(fn: Callable, spec) -> Callable:
    """fn taking the flattened leaves of its original arguments."""
    return lambda *leaves: fn(*pytree.tree_unflatten(list(leaves), spec))


def _flatten(out) -> tuple[list[torch.Tensor], Callable]:
    leaves, spec = pytree.tree_flatten(out)
    if not leaves or not all(isinstance(o, torch.Tensor) for o in leaves):
        raise ValueError(f"executor: a step must return tensors (a tensor or a tuple/list/dict of them), got "
                         f"{type(out).__name__}")
    return leaves, lambda ts: pytree.tree_unflatten(list(ts), spec)


@dataclass
class BucketStats:
    key: tuple
    mode: str
    memory: str = "allocator"  # "paged", or "allocator" (with the reason when paging was asked for)
    calls: int = 0
    copies_skipped: int = 0
    capture_seconds: float = 0.0
    capture_bytes: int = 0  # device memory the capture took from the graph pool (allocated delta)
    planned_peak_bytes: int = 0  # the step's activations: arena + what the allocator still serves
    arena_bytes: int = 0


@dataclass
class _Bucket:
    inputs: list[Any]  # static tensors, or the non-tensor value itself
    outputs: list[torch.Tensor] | None = None
    rebuild: Callable | None = None
    fn: Callable | None = None  # the step on the flattened leaves
    graph: Any = None
    plan: Any = None  # PagePlan of the step when its activations are served from the arena
    last: list[Any] = field(default_factory=list)  # weakrefs to the last call's tensor arguments
    stats: BucketStats | None = None


class GraphExecutor:
    """Runs step functions through per-bucket static buffers, replaying CUDA graphs in "graphs"
    mode. One executor per model (engine); ``state`` names the weights' identity."""

    def __init__(self, device: torch.device | str, mode: str = "auto", *, warmup: int = 2, memory: str = "auto"):
        self.device = torch.device(device)
        self.mode = resolve_mode(mode, self.device)
        if memory not in MEMORY:
            raise ValueError(f"executor: memory must be one of {MEMORY}, got {memory!r}")
        # paged by default where it pays: a captured graph serves its activations from the arena
        # for free; an eager step would pay a dispatch hook on every op
        self.memory = ("paged" if self.mode == "graphs" else "allocator") if memory == "auto" else memory
        self._page_pools: list = []  # PagePools; older ones stay alive while graphs replay into them
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 1:
            raise ValueError(f"executor: warmup must be an int >= 1 (runs before a capture), got {warmup!r}")
        self.warmup = warmup
        self._buckets: dict[tuple, _Bucket] = {}
        self._state: Hashable = None
        self._graph_pool = None
        self._output_ptrs: set[int] = set()
        self.invalidations: list[str] = []

    # -- cache management ---------------------------------------------------------------------------
    @property
    def buckets(self) -> list[BucketStats]:
        return [b.stats for b in self._buckets.values()]

    def set_state(self, state: Hashable) -> None:
        """Declare the weights' identity; a different value than before drops every bucket."""
        if state != self._state:
            if self._buckets:
                self.invalidate(f"state changed from {self._state!r} to {state!r}")
            self._state = state

    def invalidate(self, reason: str = "requested") -> None:
        """Drop every captured graph and static buffer (their memory returns to the allocator)."""
        self._buckets.clear()
        self._output_ptrs.clear()
        self._page_pools.clear()
        self._graph_pool = None
        self.invalidations.append(reason)

    # -- running ------------------------------------------------------------------------------------
    def run(self, name: str, fn: Callable, *args):
        """``fn(*args)`` through the bucket of (name, args, state). Arguments may be nested
        tuples / lists / dicts / NamedTuples (torch pytrees) of tensors and hashable values."""
        leaves, spec = pytree.tree_flatten(args)
        key = bucket_key(name, leaves, self._state, spec)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._new_bucket(key, _on_leaves(fn, spec), leaves)
        self._copy_inputs(bucket, leaves)
        if bucket.graph is not None:
            bucket.graph.replay()
        else:
            bucket.outputs = self._run_eager(bucket)
        bucket.stats.calls += 1
        return bucket.rebuild(bucket.outputs)

    def prepare(self, calls: Sequence[tuple[str, Callable, tuple]]) -> None:
        """Create the buckets of ``calls`` (name, fn, example args) now, largest first by the bytes
        of their tensor arguments, so later (smaller) captures reuse the first one's pool blocks.
        Example values only matter for shapes (warm-up runs compute on them)."""
        def size(call):
            return sum(a.numel() * a.element_size() for a in call[2] if isinstance(a, torch.Tensor))
        flat = [(name, fn, *pytree.tree_flatten(args)) for name, fn, args in calls]
        for name, fn, leaves, spec in sorted(flat, key=lambda c: size((None, None, c[2])), reverse=True):
            key = bucket_key(name, leaves, self._state, spec)
            if key not in self._buckets:
                self._new_bucket(key, _on_leaves(fn, spec), leaves)

    # -- internals ----------------------------------------------------------------------------------
    def _new_bucket(self, key: tuple, fn: Callable, args) -> _Bucket:
        for i, a in enumerate(args):
            if isinstance(a, torch.Tensor) and a.device != self.device and a.device.type != "cpu":
                raise ValueError(f"executor {key[0]!r}: argument {i} is on {a.device}, the executor on {self.device}")
        # a captured graph would bake a host tensor's value into the kernel launch: its static
        # buffer lives on the device and the value is copied in every call
        inputs = [_static_like(a, self.device if self.mode == "graphs" else None) if isinstance(a, torch.Tensor)
                  else a for a in args]
        bucket = _Bucket(inputs=inputs, fn=fn, last=[None] * len(args), stats=BucketStats(key=key, mode=self.mode))
        if self.memory == "paged":
            self._plan(bucket)
        if self.mode == "graphs":
            self._copy_inputs(bucket, args)  # warm-up and capture compute on real values
            try:
                self._capture(bucket, fn)
            except Exception as e:  # noqa: BLE001 - a step that cannot be captured still runs, eagerly
                warnings.warn(f"executor {key[0]!r}: CUDA graph capture failed ({type(e).__name__}: {str(e)[:300]}); "
                              f"this bucket runs eagerly", stacklevel=3)
                if self.device.type == "cuda":
                    torch.cuda.synchronize(self.device)
                bucket.graph, bucket.plan, bucket.outputs = None, None, None
                bucket.stats.mode = f"eager (capture failed: {type(e).__name__})"
        self._buckets[key] = bucket
        return bucket

    def _run_eager(self, bucket: _Bucket) -> list[torch.Tensor]:
        """Run and copy the results into the bucket's static outputs, so callers see exactly what
        graph replay gives them (the same buffers every call)."""
        if bucket.plan is not None:
            from .serve import run_served
            pool = self._page_pool_for(bucket.plan)
            outs, rebuild = _flatten(run_served(bucket.fn, bucket.plan, pool, *bucket.inputs))
        else:
            outs, rebuild = _flatten(bucket.fn(*bucket.inputs))
        if bucket.outputs is None:
            bucket.outputs = [_static_like(o) for o in outs]
            bucket.rebuild = rebuild
            self._output_ptrs.update(o.data_ptr() for o in bucket.outputs)
        for static, o in zip(bucket.outputs, outs):
            static.copy_(o)
        return bucket.outputs

    def _copy_inputs(self, bucket: _Bucket, args) -> None:
        for i, (s, a) in enumerate(zip(bucket.inputs, args)):
            if not isinstance(a, torch.Tensor):
                continue
            last = bucket.last[i]
            # The same object as last time holds the same values, unless it is one of our static
            # outputs (rewritten by every replay) -- then it is a step's result fed back.
            if last is not None and last() is a and a.data_ptr() not in self._output_ptrs:
                bucket.stats.copies_skipped += 1
                continue
            if s.data_ptr() != a.data_ptr():
                s.copy_(a, non_blocking=True)
            bucket.last[i] = weakref.ref(a)

    def _capture(self, bucket: _Bucket, fn: Callable) -> None:
        t0 = time.perf_counter()
        if self._graph_pool is None:
            self._graph_pool = torch.cuda.graph_pool_handle()
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):  # compilation, autotuning and lazy init happen here, not in the graph
                fn(*bucket.inputs)
        torch.cuda.current_stream(self.device).wait_stream(side)
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        graph = torch.cuda.CUDAGraph()
        captured = None
        if bucket.plan is not None:
            from .serve import run_served
            pool = self._page_pool_for(bucket.plan)
            try:
                # the lease ends with the capture: buckets never replay at the same time, so every
                # bucket's graph serves its activations from the same first pages of the arena
                with pool.lease(bucket.plan.arena_pages) as lease, torch.cuda.graph(graph, pool=self._graph_pool):
                    captured = _flatten(run_served(fn, bucket.plan, lease, *bucket.inputs))
            except Exception as e:  # noqa: BLE001 - the step diverged from its plan: capture it on the allocator
                bucket.plan = None
                bucket.stats.memory = f"allocator (serving failed: {type(e).__name__}: {str(e)[:200]})"
                torch.cuda.synchronize(self.device)
                graph = torch.cuda.CUDAGraph()
        if captured is None:
            with torch.cuda.graph(graph, pool=self._graph_pool):
                captured = _flatten(fn(*bucket.inputs))
        outs, rebuild = captured
        torch.cuda.synchronize(self.device)
        bucket.graph, bucket.outputs, bucket.rebuild = graph, outs, rebuild
        self._output_ptrs.update(o.data_ptr() for o in outs)
        bucket.stats.capture_bytes = torch.cuda.memory_allocated(self.device) - before
        bucket.stats.capture_seconds = time.perf_counter() - t0

    def _plan(self, bucket: _Bucket) -> None:
        """Trace the step on fake tensors and plan its activations into arena pages. A step the
        planner cannot follow (a data-dependent op, say) runs on the allocator instead: slower to
        plan memory for, never wrong."""
        from .memory import plan_pages, trace_allocations
        try:
            plan = plan_pages(trace_allocations(bucket.fn, *bucket.inputs), device=self.device)
        except Exception as e:  # noqa: BLE001 - any failure to trace means "not plannable", reported
            bucket.stats.memory = f"allocator ({type(e).__name__}: {str(e)[:200]})"
            return
        bucket.plan = plan
        bucket.stats.memory = "paged"
        bucket.stats.planned_peak_bytes = plan.predicted_peak_bytes
        bucket.stats.arena_bytes = plan.arena_bytes

    def _page_pool_for(self, plan):
        """The executor's arena, grown (a new one; old ones stay alive for their graphs) when a
        plan needs more pages than it has."""
        from .serve import PagePool
        pool = self._page_pools[-1] if self._page_pools else None
        if pool is None or pool.num_pages < plan.arena_pages or pool.page_size != plan.page_size:
            pool = PagePool.reserve(plan)
            self._page_pools.append(pool)
        return pool
