"""The paged arena pool and served runs: a call whose planned activations live in pool pages.

``PagePool`` reserves one uint8 arena and accounts its pages in runs (first fit). ``run_served``
runs a call under a TorchDispatchMode that follows the call's trace op by op: each allocation
the plan placed is issued into its pages (the op's out= overload, or a fill / copy / bare view
for factories and copies), everything else runs normally. Nothing is trusted: every op is
compared with the trace before it runs, a placed output's shape / stride / dtype / device are
computed (by the op's meta kernel, the one the fake trace ran) before anything is written, the
allocator-served outputs are compared after, and every served tensor is watched so that one
still referenced when the plan reuses its pages, or one escaping the call, raises
``PlanMismatch`` instead of being silently overwritten.

Served tensors get their own non-owning storage over their pages (so their lifetime can be
watched exactly like the trace watched it); they do not keep the arena alive: keep the pool (or
lease) alive as long as anything served, or a graph replaying into it, is in use.
"""

from __future__ import annotations

import bisect

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map_only

from .memory import FILL_VALUES, PagePlan, bound_arguments, fresh_outputs, out_overload, ticks

# Pages start at multiples of the caching allocator's 512 B rounding: a served tensor is aligned
# as an allocator-served one, so kernels that pick a code path by pointer alignment pick the same.
PAGE_ALIGN = 512


class PoolExhausted(MemoryError):
    pass


class PlanMismatch(ValueError):
    """The served call diverged from the trace its plan was made from."""


def _extent_bytes(shape, stride, itemsize: int) -> int:
    if any(s == 0 for s in shape):
        return 0
    return (1 + sum((s - 1) * st for s, st in zip(shape, stride))) * itemsize


class PagePool:
    """``num_pages`` pages of ``page_size`` bytes in one reserved arena on ``device``."""

    def __init__(self, device, num_pages: int, page_size: int):
        if not isinstance(num_pages, int) or num_pages <= 0:
            raise ValueError(f"PagePool: num_pages must be a positive int, got {num_pages!r}")
        if not isinstance(page_size, int) or page_size <= 0 or page_size % PAGE_ALIGN:
            raise ValueError(f"PagePool: page_size must be a positive multiple of {PAGE_ALIGN} bytes, "
                             f"got {page_size!r}")
        self.arena = torch.empty(num_pages * page_size, dtype=torch.uint8, device=device)
        self.device = self.arena.device
        self.num_pages, self.page_size = num_pages, page_size
        self._free = [(0, num_pages)]  # sorted, coalesced (first, count) runs
        self._used: dict[int, int] = {}  # first page -> count of each allocated run
        self.used_pages = self.peak_pages = 0
        self.served_bytes = 0  # bytes of allocations run_served placed here, over all runs

    @classmethod
    def reserve(cls, plan: PagePlan) -> "PagePool":
        """A pool on the plan's device with exactly the pages the plan needs (at least one)."""
        return cls(plan.device, max(plan.arena_pages, 1), plan.page_size)

    @property
    def free_pages(self) -> int:
        return self.num_pages - self.used_pages

    @property
    def largest_free_run(self) -> int:
        return max((count for _, count in self._free), default=0)

    def alloc(self, npages: int) -> int:
        """First page of a run of ``npages`` free pages (the lowest that fits)."""
        if not isinstance(npages, int) or npages <= 0:
            raise ValueError(f"PagePool.alloc: npages must be a positive int, got {npages!r}")
        for k, (first, count) in enumerate(self._free):
            if count >= npages:
                self._free[k:k + 1] = [(first + npages, count - npages)] if count > npages else []
                self._used[first] = npages
                self.used_pages += npages
                self.peak_pages = max(self.peak_pages, self.used_pages)
                return first
        raise PoolExhausted(f"PagePool.alloc: cannot allocate {npages} pages ({npages * self.page_size} bytes): "
                            f"{self.free_pages} of {self.num_pages} pages free, largest free run "
                            f"{self.largest_free_run} pages ({self.largest_free_run * self.page_size} bytes)")

    def free(self, first: int) -> None:
        """Return the run that ``alloc`` started at page ``first``."""
        if first not in self._used:
            raise ValueError(f"PagePool.free: page {first!r} is not the first page of an allocated run "
                             f"({self._describe(first)})")
        count = self._used.pop(first)
        self.used_pages -= count
        k = bisect.bisect(self._free, (first, 0))
        self._free.insert(k, (first, count))
        # coalesce with the neighbours so largest_free_run sees whole gaps
        if k + 1 < len(self._free) and first + count == self._free[k + 1][0]:
            self._free[k:k + 2] = [(first, count + self._free[k + 1][1])]
        if k > 0 and self._free[k - 1][0] + self._free[k - 1][1] == first:
            self._free[k - 1:k + 1] = [(self._free[k - 1][0], self._free[k - 1][1] + self._free[k][1])]

    def _describe(self, page) -> str:
        if not isinstance(page, int) or not 0 <= page < self.num_pages:
            return f"outside the pool's pages [0, {self.num_pages})"
        run = self._run_of(page)
        if run is not None:
            return f"inside the run starting at page {run}"
        return "already free: double free?"

    def _run_of(self, page: int) -> int | None:
        starts = sorted(self._used)
        k = bisect.bisect_right(starts, page) - 1
        if k >= 0 and page < starts[k] + self._used[starts[k]]:
            return starts[k]
        return None

    def _check_span(self, fn: str, first_page: int, shape, stride, dtype) -> int:
        """Validate a tensor of this layout at ``first_page``; returns the bytes it spans."""
        if len(shape) != len(stride) or any(s < 0 for s in shape) or any(st < 0 for st in stride):
            raise ValueError(f"{fn}: shape {tuple(shape)} and stride {tuple(stride)} must have equal lengths and "
                             f"no negative entries")
        nbytes = _extent_bytes(shape, stride, dtype.itemsize)
        if not isinstance(first_page, int) or not 0 <= first_page < self.num_pages:
            raise ValueError(f"{fn}: first_page must be in [0, {self.num_pages}), got {first_page!r}")
        run = self._run_of(first_page)
        end = first_page + -(-nbytes // self.page_size)
        if run is None or end > run + self._used[run]:
            raise ValueError(f"{fn}: a {tuple(shape)} {dtype} tensor with stride {tuple(stride)} at page {first_page} "
                             f"spans pages [{first_page}, {end}), which are not inside one allocated run")
        return nbytes

    def view(self, first_page: int, shape, stride, dtype: torch.dtype) -> torch.Tensor:
        """A strided view of the arena starting at ``first_page`` (within one allocated run)."""
        self._check_span("PagePool.view", first_page, shape, stride, dtype)
        flat = self.arena.view(dtype)
        return flat.as_strided(tuple(shape), tuple(stride), first_page * self.page_size // flat.element_size())

    def detached(self, first_page: int, shape, stride, dtype: torch.dtype) -> torch.Tensor:
        """Like ``view``, but the tensor gets a storage of its own over its pages (not owning
        them, not keeping the arena alive) so that its death can be observed."""
        nbytes = self._check_span("PagePool.detached", first_page, shape, stride, dtype)
        ptr = self.arena.data_ptr() + first_page * self.page_size
        storage = torch._C._construct_storage_from_data_pointer(ptr, self.device, nbytes)
        # an empty slice, not torch.empty(0): no allocator call at all (CUDA graph capture)
        return self.arena[:0].view(dtype).set_(storage, 0, tuple(shape), tuple(stride))

    def lease(self, npages: int) -> "PageLease":
        return PageLease(self, self.alloc(npages), npages)


class PageLease:
    """A run of pool pages held until ``release()`` (or the end of a ``with`` block)."""

    def __init__(self, pool: PagePool, first: int, pages: int):
        self.pool, self.first, self.pages = pool, first, pages

    def release(self) -> None:
        self.pool.free(self.first)

    def __enter__(self) -> "PageLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _layout(t) -> str:
    return f"{tuple(t.shape)} stride {tuple(t.stride())} {t.dtype} on {t.device}"


def _planned(a) -> str:
    return f"{a.shape} stride {a.stride} {a.dtype} on {a.device}"


def _same_layout(shape, stride, dtype, device, a) -> bool:
    """The same memory layout as planned allocation ``a``: strides of size-1 dims place nothing
    (kernels choose them freely, and fake and real kernels differ there), so they are ignored."""
    if (tuple(shape), dtype, device) != (tuple(a.shape), a.dtype, a.device):
        return False
    return all(n <= 1 or s == t for n, s, t in zip(shape, stride, a.stride))


def _to_meta(t: torch.Tensor) -> torch.Tensor:
    # CPU scalars stay: they mix with any device and keep their type-promotion rank
    if t.dim() == 0 and t.device.type == "cpu":
        return t
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device="meta")


def expected_layout(func, args, kwargs) -> tuple:
    """(shape, stride, dtype, device) of the tensor ``func`` would return, from its meta kernel
    (the one FakeTensorMode runs for the trace): nothing real is computed or allocated."""
    names = {a.name for a in func._schema.arguments}
    bound = bound_arguments(func, args, kwargs)
    device = bound.get("device")
    if device is None:
        tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        device = next((t.device for t in tensors if not (t.dim() == 0 and t.device.type == "cpu")),
                      tensors[0].device if tensors else torch.get_default_device())
    meta_args, meta_kwargs = tree_map_only(torch.Tensor, _to_meta, (args, kwargs))
    if "device" in names:
        meta_kwargs = dict(meta_kwargs, device=torch.device("meta"))
    out = func(*meta_args, **meta_kwargs)
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # as tensors report it
        device = torch.device("cuda", torch.cuda.current_device())
    return tuple(out.shape), tuple(out.stride()), out.dtype, device


def _metadata(args, kwargs) -> tuple:
    flat, spec = tree_flatten((args, kwargs))
    return spec, [(t.shape, t.stride(), t.dtype, t.device) if isinstance(t, torch.Tensor) else t for t in flat]


class _Server(TorchDispatchMode):
    def __init__(self, plan: PagePlan, pool: PagePool, base: int):
        super().__init__()
        self.plan, self.pool, self.base = plan, pool, base
        self.trace = plan.trace
        self.tick = 0
        self.live: dict[int, StorageWeakRef] = {}  # served allocation index -> its storage

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not ticks(func):
            return func(*args, **kwargs)
        tick, self.tick = self.tick, self.tick + 1
        if tick >= self.trace.num_ticks or self.trace.ops[tick] != str(func):
            traced = self.trace.ops[tick] if tick < self.trace.num_ticks else "nothing (the trace ended)"
            raise PlanMismatch(f"run_served: op #{tick} is {func}, the plan traced {traced}")
        self.retire(tick)
        born = self.trace.births.get(tick, ())
        if born and born[0] in self.plan.offsets:  # a placed allocation is its op's only output
            return self.serve(func, args, kwargs, born[0], tick)
        out = func(*args, **kwargs)
        self.match(func, tree_flatten((args, kwargs))[0], out, born, tick)
        return out

    def retire(self, tick: int) -> None:
        """Forget served tensors that died; one the plan freed by now must not be alive."""
        for i, ref in list(self.live.items()):
            if ref.expired():
                del self.live[i]
            elif self.trace.allocations[i].end <= tick:
                a = self.trace.allocations[i]
                where = "at the end of the call" if tick == self.trace.num_ticks else f"at op #{tick}"
                raise PlanMismatch(f"run_served: the output of op #{a.start} ({a.op}, {a.shape}) is still referenced "
                                   f"{where}, but the plan frees its pages at op #{a.end}; serving on would "
                                   f"overwrite it (is something holding on to it, or returning it?)")

    def serve(self, func, args, kwargs, i: int, tick: int):
        a = self.trace.allocations[i]
        # the layout follows from the op and its arguments' metadata: the meta kernel (a Python
        # reference for most ops, ~0.5 ms) runs again only when those change
        key = _metadata(args, kwargs)
        memo = self.trace.layout_cache.get(tick)
        if memo is None or memo[0] != key:
            memo = self.trace.layout_cache[tick] = key, expected_layout(func, args, kwargs)
        shape, stride, dtype, device = memo[1]
        if not _same_layout(shape, stride, dtype, device, a):
            raise PlanMismatch(f"run_served: op #{tick} ({func}) would return {shape} stride {stride} {dtype} on "
                               f"{device}, the plan placed {_planned(a)} (allocation #{i}); was the plan traced for "
                               f"other inputs?")
        t = self.pool.detached(self.base + self.plan.offsets[i], a.shape, a.stride, a.dtype)
        if a.serve == "out":
            op, drop = out_overload(func)
            op(*args, **{k: v for k, v in kwargs.items() if k not in drop}, out=t)
        elif a.serve == "fill":
            value = FILL_VALUES[func]
            t.fill_(bound_arguments(func, args, kwargs)[value] if isinstance(value, str) else value)
        elif a.serve == "copy":
            bound = bound_arguments(func, args, kwargs)
            t.copy_(bound["self"], non_blocking=bool(bound.get("non_blocking")))
        self.live[i] = StorageWeakRef(t.untyped_storage())
        self.pool.served_bytes += a.nbytes
        return t

    def match(self, func, inputs, out, born, tick: int) -> None:
        """The allocator served this op: its fresh outputs must still be the traced ones."""
        fresh, _ = fresh_outputs(func, inputs, out)
        if len(fresh) != len(born):
            raise PlanMismatch(f"run_served: op #{tick} ({func}) allocated {len(fresh)} tensors, the plan traced "
                               f"{len(born)}")
        for k, (t, i) in enumerate(zip(fresh, born)):
            a = self.trace.allocations[i]
            if not _same_layout(t.shape, t.stride(), t.dtype, t.device, a):
                raise PlanMismatch(f"run_served: op #{tick} ({func}) output {k} is {_layout(t)}, the plan traced "
                                   f"{_planned(a)} (allocation #{i})")


def _lease_for(plan: PagePlan, pool) -> tuple[PageLease | None, bool]:
    """(pages to serve from, whether run_served took them itself and must give them back)."""
    if isinstance(pool, PageLease):
        lease, own = pool, False
    elif isinstance(pool, PagePool):
        lease, own = None, True
    else:
        raise ValueError(f"run_served: pool must be a PagePool or a PageLease, got {type(pool).__name__}")
    target = pool.pool if lease is not None else pool
    if target.page_size != plan.page_size or target.device != plan.device:
        raise ValueError(f"run_served: the pool has {target.page_size}-byte pages on {target.device}, the plan "
                         f"{plan.page_size}-byte pages on {plan.device}")
    if lease is not None and lease.pages < plan.arena_pages:
        raise ValueError(f"run_served: the lease holds {lease.pages} pages, the plan needs {plan.arena_pages}")
    if own and plan.arena_pages:
        lease = target.lease(plan.arena_pages)
    return lease, own


def run_served(fn, plan: PagePlan, pool, *args, **kwargs):
    """Run ``fn(*args, **kwargs)`` (under no_grad) with the allocations ``plan`` placed served
    from ``pool`` and return its result.

    ``pool``: a PagePool (the plan's pages are leased for the call and returned after) or a
    PageLease the caller holds (pages stay held: what a captured CUDA graph replaying into them
    needs). Raises PlanMismatch when the call diverges from the plan's trace (see the module
    docstring) and PoolExhausted when a PagePool lacks a free run of ``plan.arena_pages``.
    """
    lease, own = _lease_for(plan, pool)
    target = lease.pool if lease is not None else pool
    server = _Server(plan, target, lease.first if lease is not None else 0)
    try:
        with torch.no_grad():
            with server:
                result = fn(*args, **kwargs)
            if server.tick != plan.trace.num_ticks:
                raise PlanMismatch(f"run_served: the call ran {server.tick} ops, the plan traced "
                                   f"{plan.trace.num_ticks}")
            server.retire(server.tick)  # with the result held: a served tensor alive now escapes
        return result
    finally:
        if own and lease is not None:
            lease.release()
