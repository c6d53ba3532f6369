"""Trace a repeated module once: later calls with the same signature replay its allocations.

A transformer runs the same block 28-48 times per guidance pass, and a fake-tensor trace pays
~0.1-0.4 ms of Python per op whatever the tensor sizes, so the memory plan of a step spends most
of its time re-tracing identical blocks. ``memoized(recorder, modules)`` makes the first call of
each distinct *signature* of a listed module run (and be recorded) as usual, and every later call
with an equal signature append that call's recorded allocations at the current tick instead of
running: same ops, same sizes, same lifetimes relative to the call. A call that changes its
module's state or its arguments' metadata (a cache filled, an in-place reshape) is never
replayed: the code after it would miss the change.

Invariant (why the peak is the full trace's or above it): under fake tensors nothing depends on
values, so the allocations of ``module(*args)`` are a function of (the module's code, its and its
submodules' parameter / buffer metadata and plain attributes, the arguments' metadata and
aliasing, the identity of any other object argument). That tuple is the signature; calls whose
signature cannot be built (hooks on the module, an output that is not a tensor or a plain value)
always run. In a replayed call, allocations that died inside the recorded call die at the same
relative tick; its outputs are recreated with their recorded storage sizes and birth ticks and
die when the caller drops them, as in a real call; anything else that outlived the recorded
call (held by an object the signature names by identity) is counted as never freed. Tensors
from outside the call that the call itself would have freed are freed only when the caller
frees them. So every replayed allocation is alive at least as long as in the full trace, and
nothing is dropped: the planned peak equals the full trace's, or exceeds it where such state is
freed later (tests/executor/test_replay.py compares both on LTX-Video and LTX-2 steps).

Offsets. A tensor's place in its storage enters the signature relative to the first tensor of the
signature in the same storage (exactly, in bytes), and that first one's by its alignment class
(byte offset mod ``ALIGN``), not by its absolute offset: a transformer hands block i slice i of
one tensor (models/tables.py hoists every block's table + temb add), and absolute offsets would
give every block its own signature. Allocations cannot depend on the rest of the absolute offset
under a fake trace: a fresh output's size and strides come from the inputs' shapes, strides and
dtypes (the fake / meta kernels never read an offset), a view allocates nothing, and what Python
code reads of offsets is the alignment of an address (backends route on 16-byte alignment:
ops/cuda.py ``_fits``; 64 covers it) or the adjacency of tensors sharing a storage (packed q/k/v:
models/packing.py; relative offsets, keyed exactly). Parameters are keyed the same way, over one
module's tensors. An output that aliases an argument (a Pending stream's gate: a slice of the
block's hoisted table) is recreated at its recorded offset relative to that argument's current
offset, as the real call would have placed it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import weakref

import torch
import torch.nn as nn
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._pytree import tree_flatten, tree_unflatten

_SIMPLE = (type(None), bool, int, float, complex, str, bytes, torch.dtype, torch.device, enum.Enum)
_MODULE_INTERNALS = frozenset(vars(nn.Module()))  # torch's bookkeeping: parameters, hooks, ...
ALIGN = 64  # bytes: the largest address alignment any code path checks (see the module docstring)


class _Unkeyable(Exception):
    pass


@dataclasses.dataclass
class _Seen:
    storages: list = dataclasses.field(default_factory=list)  # (storage, first byte offset): aliasing
    held: list = dataclasses.field(default_factory=list)  # objects keyed by identity


def _byte_offset(t: torch.Tensor) -> int:
    return t.storage_offset() * t.element_size()


def _tensor_key(t: torch.Tensor, storages: list) -> tuple:
    """Metadata; the offset as the alignment class of the first tensor seen in its storage, and
    exactly relative to that one for the others (module docstring: Offsets)."""
    ref = StorageWeakRef(t.untyped_storage())
    offset = _byte_offset(t)
    alias = next((i for i, (s, _) in enumerate(storages) if s == ref), None)
    if alias is None:
        storages.append((ref, offset))
        where = offset % ALIGN
    else:
        where = offset - storages[alias][1]
    return ("T", tuple(t.shape), t.stride(), where, t.dtype, t.device, t.layout, t.untyped_storage().nbytes(), alias)


def _key(obj, seen: _Seen, depth: int = 0):
    """Hashable metadata of an argument: tensors by metadata and aliasing, plain values by value,
    containers and dataclasses by their items, anything else by identity (checked on a hit through
    a weak reference: an id can be reused once its object is gone) and its attributes."""
    if isinstance(obj, torch.Tensor):
        if obj.layout != torch.strided:
            raise _Unkeyable
        return _tensor_key(obj, seen.storages)
    if isinstance(obj, _SIMPLE):
        return (type(obj), obj)
    if depth > 8:
        raise _Unkeyable
    if isinstance(obj, (list, tuple)):
        return (type(obj), tuple(_key(v, seen, depth + 1) for v in obj))
    if isinstance(obj, dict):
        return (type(obj), tuple((k, _key(v, seen, depth + 1)) for k, v in obj.items()))
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return (type(obj), tuple(_key(getattr(obj, f.name), seen, depth + 1) for f in dataclasses.fields(obj)))
    seen.held.append(obj)
    state = vars(obj) if hasattr(obj, "__dict__") and not isinstance(obj, (type, nn.Module)) else {}
    # its attributes too: a call that changes them is seen as changing its arguments (never replayed)
    return ("id", type(obj), id(obj), tuple((k, _key(v, seen, depth + 1)) for k, v in state.items()))


def _hooked(m: nn.Module) -> bool:
    return any(getattr(m, h, None) for h in ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks",
                                              "_backward_pre_hooks"))


def _module_key(module: nn.Module, seen: _Seen) -> tuple:
    from torch.nn.modules import module as mm
    if any(getattr(mm, h, None) for h in ("_global_forward_hooks", "_global_forward_pre_hooks")):
        raise _Unkeyable
    parts = []
    for name, m in module.named_modules():
        if _hooked(m):
            raise _Unkeyable
        state = tuple((k, _key(v, seen)) for k, v in vars(m).items()
                      if k not in _MODULE_INTERNALS and not isinstance(v, nn.Module)
                      and not getattr(v, "memo_wrapper", False))  # memoized()'s own forward
        tensors = tuple((k, None if v is None else _tensor_key(v, seen.storages))
                        for k, v in (*m._parameters.items(), *m._buffers.items()))
        parts.append((name, type(m), state, tensors))
    return tuple(parts)


def signature(module: nn.Module, args: tuple, kwargs: dict) -> tuple | None:
    """(the memo key of ``module(*args, **kwargs)``, the objects it names by identity); None: this
    call must run."""
    seen = _Seen()
    try:
        key = (_key((args, kwargs), seen), _module_key(module, _Seen(held=seen.held)))
        hash(key)  # the memo's dict lookup, here where a failure still means "run it"
        return key, [weakref.ref(o) for o in seen.held]
    except Exception:  # noqa: BLE001 - _Unkeyable, an object without weak references (TypeError), or any
        # error reading an attribute (Gemma 4's config raises on some reads): only the memo is lost
        return None


def _same(refs: list, now: list) -> bool:
    return all(r() is not None and r() is n() for r, n in zip(refs, now))


@dataclasses.dataclass(frozen=True)
class _Recorded:
    ops: tuple[str, ...]
    records: tuple[dict, ...]  # start / end relative to the call's first tick; end None: outlived it
    # per leaf: ("value", v) | ("record", i, meta) | ("arg", j, meta, same_object), an "arg"'s
    # meta offset in bytes relative to argument j's
    outputs: tuple
    spec: object


def _capture(recorder, t0: int, n0: int, flat_args: list, out) -> _Recorded | None:
    t1 = len(recorder.ops)
    recorder.poll(t1)
    new = range(n0, len(recorder.records))
    leaves, spec = tree_flatten(out)
    arg_refs = [StorageWeakRef(a.untyped_storage()) if isinstance(a, torch.Tensor) else None for a in flat_args]
    outputs = []
    for leaf in leaves:
        if not isinstance(leaf, torch.Tensor):
            if not isinstance(leaf, _SIMPLE):
                return None
            outputs.append(("value", leaf))
            continue
        ref = StorageWeakRef(leaf.untyped_storage())
        meta = (tuple(leaf.shape), leaf.stride(), leaf.storage_offset(), leaf.dtype)
        mine = [i for i in new if i in recorder.live and recorder.live[i] == ref]
        if mine:
            outputs.append(("record", mine[0] - n0, meta))
        elif any(a is not None and a == ref for a in arg_refs):
            j = next(j for j, a in enumerate(arg_refs) if a is not None and a == ref)
            if leaf.dtype != flat_args[j].dtype:  # a reinterpreting view: not worth modelling
                return None
            meta = (*meta[:2], _byte_offset(leaf) - _byte_offset(flat_args[j]), meta[3])
            outputs.append(("arg", j, meta, leaf is flat_args[j]))
        else:  # e.g. a weight returned as is: not worth modelling
            return None
    records = tuple(dict(r, start=r["start"] - t0, end=None if r["end"] is None else r["end"] - t0)
                    for r in recorder.records[n0:])
    return _Recorded(tuple(recorder.ops[t0:t1]), records, tuple(outputs), spec)


def _replay(recorder, rec: _Recorded, flat_args: list):
    t0 = len(recorder.ops)
    recorder.poll(t0)  # what died before the call dies at its first tick, as in the full trace
    n0 = len(recorder.records)
    recorder.ops.extend(rec.ops)
    recorder.records.extend(dict(r, start=r["start"] + t0, end=None if r["end"] is None else r["end"] + t0)
                            for r in rec.records)
    bases, leaves = {}, []
    with recorder.paused():  # the recreated outputs are the recorded allocations, not new ones
        for kind, *rest in rec.outputs:
            if kind == "value":
                leaves.append(rest[0])
                continue
            shape, stride, offset, dtype = rest[1]
            if kind == "arg":
                arg = flat_args[rest[0]]  # the recorded offset, relative to this call's argument
                offset = (_byte_offset(arg) + offset) // arg.element_size()
                leaves.append(arg if rest[2] else arg.as_strided(shape, stride, offset))
                continue
            i = n0 + rest[0]
            if i not in bases:
                r = recorder.records[i]
                bases[i] = torch.empty(r["nbytes"], dtype=torch.uint8, device=r["device"])
                recorder.live[i] = StorageWeakRef(bases[i].untyped_storage())
            leaves.append(bases[i].view(dtype).as_strided(shape, stride, offset))
    return tree_unflatten(leaves, rec.spec)


def _memo_forward(recorder, memo: dict, module: nn.Module, forward):
    def call(*args, **kwargs):
        sig = None if recorder.paused_depth else signature(module, args, kwargs)
        if sig is None:
            return forward(*args, **kwargs)
        key, refs = sig
        flat_args = tree_flatten((args, kwargs))[0]
        if key in memo and memo[key][0] is not None and _same(memo[key][1], refs):
            return _replay(recorder, memo[key][0], flat_args)
        t0, n0 = len(recorder.ops), len(recorder.records)
        out = forward(*args, **kwargs)
        if key not in memo or not _same(memo[key][1], refs):
            # a call that changed its module's state or its arguments' metadata is never replayed:
            # later code would miss the change
            after = signature(module, args, kwargs)
            changed = after is None or after[0] != key
            memo[key] = (None if changed else _capture(recorder, t0, n0, flat_args, out), refs)
        return out
    call.memo_wrapper = True
    return call


@contextlib.contextmanager
def memoized(recorder, modules):
    """While the trace runs, route ``modules``' calls through the memo (see the module docstring)."""
    memo: dict = {}
    patched = []
    try:
        for m in dict.fromkeys(modules):  # once each, in order
            if "forward" in vars(m):  # someone already patched it: leave it alone
                continue
            m.forward = _memo_forward(recorder, memo, m, m.forward)
            patched.append(m)
        yield memo
    finally:
        for m in patched:
            del m.forward
