"""Memory plans kept on disk, so a new process's first generation per request shape reads its
plan's phases instead of tracing them again (0.3-2 s per shape on the tiny test engines).

Exact by construction of the key: a hit must only happen where a fresh plan gives the same phases,
so the key (sha256 of a canonical text, ``key_text``) holds everything a plan reads: the caller's
parts (the request's plan key and type, offload, streaming, executor mode), the device (and on CUDA
its name, capability and SDPA switches), ltxengine / torch / transformers / triton versions, a stamp
of ltxengine's own files (path, size, mtime: an edited checkout misses) and a fingerprint of every
component (``components_fingerprint``: module types and attributes, each parameter's and buffer's
name, shape, dtype, device type and tensor type, forward hooks such as fp8 LoRA branches). Only the
phases are stored: what a plan is compared with (free memory, weights held) is live.

Files are JSON, one per key (never pickle: nothing read from disk is executed), written atomically
(temp file + os.replace). The folder keeps the ``MAX_FILES`` most recently used plans (a hit touches
its file; a write removes the least recently used beyond that): every ltxengine or torch upgrade, and
every edit of a checkout, starts new keys, so the folder would otherwise only grow. A file that
does not parse or holds another key is a miss; an OSError is logged once and ignored, so a read-only
home never fails a generation. Folder: $LTXENGINE_CACHE_DIR/plans, else $XDG_CACHE_HOME/ltxengine/plans,
else ~/.cache/ltxengine/plans. LTXENGINE_PLAN_CACHE=0 or ``engine.plan_cache = False`` turns it off.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import functools
import gc
import hashlib
import json
import logging
import os
import re
import sys
import tempfile
import time
from fractions import Fraction
from importlib import metadata
from pathlib import Path

import torch

from .plan import MemoryPlan, Phase

__all__ = ["ADDRESS", "COMPONENTS", "MAX_FILES", "cache_dir", "canonical", "components_fingerprint", "enabled",
           "key_text", "load", "source_stamp", "store"]

log = logging.getLogger(__name__)
FORMAT = 1
# the engine attributes a plan traces or counts (planning.measure's list and LTX-2.5's diffusion decoder)
COMPONENTS = ("transformer", "vae", "text_encoder", "latent_upsampler", "connectors", "audio_vae", "vocoder",
              "diffusion_decoder")
# an object repr's address: a key holding one differs in every process, so it can never hit
ADDRESS = re.compile(r"0x[0-9a-fA-F]{6,}")
# nn.Module's own bookkeeping: hooks are read on their own, the rest does not change what forward runs
_MODULE_SKIP = frozenset({"_parameters", "_buffers", "_modules", "training", "_forward_hooks", "_forward_pre_hooks",
                          "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs",
                          "_forward_hooks_always_called", "_backward_hooks", "_backward_pre_hooks",
                          "_state_dict_hooks", "_state_dict_pre_hooks", "_load_state_dict_pre_hooks",
                          "_load_state_dict_post_hooks"})
_SCALARS = frozenset({type(None), bool, int, float, str})
# transformers installs these on a model's first forward that asks for hidden states (a plan's trace
# does, so it installs them itself when missing) and they record only when asked: a plan is the same
# with them or without, and a process that generated once would otherwise never hit a new one's plans
_LAZY = ("transformers.utils.output_capturing.", "_output_capturing_hooks_installed")
# where the weights were read from (transformers models and configs) says nothing of what a plan traces
_PATHS = frozenset({"_name_or_path", "name_or_path", "_commit_hash"})
_MAX_ITEMS = 256  # containers larger than this (a vocabulary) count by size: never a plan's input
MAX_FILES = 1024  # plans kept (~1 KB each): far more request shapes than one app's
_STALE_TMP_S = 3600  # a writer's temp file this old was left by a killed process
_warned: set[str] = set()


def enabled(engine) -> bool:
    switch = os.environ.get("LTXENGINE_PLAN_CACHE", "1").strip().lower()
    return switch not in ("0", "false", "off", "no") and getattr(engine, "plan_cache", True)


def cache_dir() -> Path:
    if os.environ.get("LTXENGINE_CACHE_DIR"):
        return Path(os.environ["LTXENGINE_CACHE_DIR"]) / "plans"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ltxengine" / "plans"


def key_text(engine, parts: tuple, fingerprint: str) -> str | None:
    """The canonical text the key hashes; None when it holds an object address (no stable key)."""
    ops = getattr(engine.transformer, "ops", None)
    parallel = getattr(engine, "parallel", None)
    text = json.dumps([FORMAT, canonical(parts), type(engine).__qualname__, str(engine.dtype),
                       device_stamp(engine.device), getattr(ops, "name", None), getattr(ops, "sources", None),
                       getattr(engine.transformer, "quantization", None), getattr(engine, "_weights_version", 0),
                       canonical([getattr(parallel, k, None) for k in ("config", "rank", "world_size")]),
                       versions(), source_stamp(), fingerprint],
                      separators=(",", ":"))
    if ADDRESS.search(text):
        _warn_once("address", "plan cache: the plan key holds an object address (%s); plans of this engine are not "
                   "kept on disk", ADDRESS.search(text).group())
        return None
    return text


def components_fingerprint(engine) -> str:
    """sha256 of every component's structure, tensors' metadata and hooks (weights' values are not read)."""
    # The walk builds thousands of short-lived lists, enough to set off a full collection of the whole
    # heap (measured ~0.2 s in a process holding torch, transformers and diffusers: a first call took
    # 0.36 s instead of 0.10 s); none is cyclic and all are freed by the time it returns: the cyclic
    # collector pauses meanwhile, and the allocation count it keys on is back where it was.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _fingerprint(engine)
    finally:
        if collecting:
            gc.enable()


def _fingerprint(engine) -> str:
    memo: dict[int, tuple] = {}
    h = hashlib.sha256()
    for name in COMPONENTS:
        h.update(json.dumps([name, _component(getattr(engine, name, None), memo)], separators=(",", ":")).encode())
    return h.hexdigest()


def _component(obj, memo: dict) -> object:
    if obj is None:
        return None
    if isinstance(obj, torch.nn.Module):
        return _module_tree(obj, memo)
    # a wrapper (the text encoders: model + tokenizer + sizes): its modules in full, its plain values; a
    # tokenizer by its type (a plan counts max_sequence_length tokens, and its vocabulary is large)
    return [_qualname(type(obj)), [[k, _component(v, memo) if isinstance(v, torch.nn.Module) else
                                    canonical(v, memo=memo) if _plain(v) else _qualname(type(v))]
                                   for k, v in sorted(vars(obj).items())]]


def _plain(v) -> bool:
    if isinstance(v, (list, tuple)):
        return all(map(_plain, v))
    return v is None or isinstance(v, (bool, int, float, str, torch.dtype, torch.device, torch.Tensor, enum.Enum))


def _module_tree(root: torch.nn.Module, memo: dict) -> list:
    out = []
    for name, m in root.named_modules(remove_duplicate=False):
        # scalars as they are (json writes a float's repr): most attributes, and this runs per module
        attrs = [[k, v if type(v) in _SCALARS else canonical(v, memo=memo)] for k, v in m.__dict__.items()
                 if k not in _MODULE_SKIP and k not in _PATHS and k != _LAZY[1]]
        hooks = [canonical([h for h in d.values() if not _qualname(h).startswith(_LAZY[0])], memo=memo) if d else []
                 for d in (m._forward_pre_hooks, m._forward_hooks)]
        tensors = [[n, _tensor(t)] for n, t in [*m._parameters.items(), *m._buffers.items()] if t is not None]
        out.append([name, _qualname(type(m)), attrs, hooks, tensors])
    return out


def _tensor(t: torch.Tensor) -> list:
    return [_qualname(type(t)), list(t.shape), str(t.dtype), t.device.type]


def _qualname(obj) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


def canonical(v, depth: int = 0, memo: dict | None = None):
    """``v`` as JSON-able data that is equal across processes exactly when ``v``'s content is:
    no ids or reprs of unknown objects (their type name stands for them)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return repr(v)
    if isinstance(v, (torch.dtype, torch.device, Fraction, torch.Size)):
        return str(v)
    if isinstance(v, enum.Enum):
        return f"{_qualname(type(v))}.{v.name}"
    if isinstance(v, torch.Tensor):
        return _tensor(v)
    if depth > 4:
        return _qualname(type(v))
    if isinstance(v, (list, tuple, set, frozenset, dict)):  # often made for the call: never memoized
        return _canonical_object(v, depth + 1, {} if memo is None else memo)
    memo = {} if memo is None else memo
    if id(v) in memo:  # shared configs and ops objects (one per module): written once per fingerprint,
        return memo[id(v)][1]  # then by their order of first appearance (the walk's order is fixed)
    out = _canonical_object(v, depth + 1, memo)
    memo[id(v)] = (v, ["=", len(memo)])  # v held: its id cannot be reused by another object meanwhile
    return out


def _canonical_object(v, depth: int, memo: dict):
    if isinstance(v, (list, tuple, set, frozenset, dict)) and len(v) > _MAX_ITEMS:
        return [_qualname(type(v)), len(v)]
    if isinstance(v, (list, tuple)):
        return [canonical(x, depth, memo) for x in v]
    if isinstance(v, (set, frozenset)):
        return sorted((canonical(x, depth, memo) for x in v), key=json.dumps)
    if isinstance(v, dict):
        return sorted(([str(k), canonical(x, depth, memo)] for k, x in v.items()), key=json.dumps)
    if isinstance(v, torch.nn.Module):  # a reference, not a child: its owner fingerprints it
        return ["module", _qualname(type(v))]
    if hasattr(v, "to_dict") and type(v).__module__.startswith("transformers"):  # a transformers config
        return [_qualname(type(v)), canonical({k: x for k, x in v.to_dict().items() if k not in _PATHS},
                                              depth, memo)]
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return [_qualname(type(v)), [[f.name, canonical(getattr(v, f.name), depth, memo)]
                                     for f in dataclasses.fields(v)]]
    if isinstance(v, functools.partial):
        return ["partial", canonical(v.func, depth, memo), canonical(v.args, depth, memo),
                canonical(v.keywords, depth, memo)]
    if callable(v) and hasattr(v, "__qualname__"):  # functions, methods, classes: by name (and closure)
        cells = getattr(v, "__closure__", None) or ()
        name = _qualname(getattr(v, "__func__", v))
        return [name, [canonical(_cell(c), depth, memo) for c in cells]] if cells else name
    if callable(v) and hasattr(v, "__dict__"):  # a hook object (an fp8 LoRA branch: its tensors' shapes)
        return [_qualname(type(v)), canonical(vars(v), depth, memo)]
    return _qualname(type(v))


def _cell(cell):
    try:
        return cell.cell_contents
    except ValueError:  # not yet bound
        return None


def device_stamp(device: torch.device) -> list:
    """What kernels and their workspaces depend on: CUDA's device name, capability and SDPA switches."""
    if device.type != "cuda":
        return [device.type]
    index = device.index if device.index is not None else torch.cuda.current_device()
    b = torch.backends.cuda
    return [device.type, torch.cuda.get_device_name(index), list(torch.cuda.get_device_capability(index)),
            torch.version.cuda, b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(),
            b.cudnn_sdp_enabled()]


@functools.lru_cache(maxsize=1)
def versions() -> tuple:
    """ltxengine, Python, torch, transformers and triton versions (read once per process)."""
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None
    return (version("ltxengine"), sys.version.split()[0], torch.__version__, version("transformers"),
            version("triton"))


def source_stamp(roots: tuple[str, ...] | None = None) -> str:
    """sha256 of (relative path, size, mtime_ns) of ltxengine's .py and compiled files (ltxengine.kernels
    included, installed from kernels/): an edited checkout misses. Stat only (~1 ms)."""
    if roots is None:
        roots = _package_roots()
    h = hashlib.sha256()
    for root in roots:
        for path, size, mtime in sorted(_files(root)):
            h.update(f"{os.path.relpath(path, root)}|{size}|{mtime}\n".encode())
    return h.hexdigest()


@functools.lru_cache(maxsize=1)
def _package_roots() -> tuple[str, ...]:
    from importlib.util import find_spec
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))  # ltxengine/
    spec = find_spec("ltxengine.kernels")  # imports ltxengine (imported already), not the kernels nor triton
    kernels = list(spec.submodule_search_locations) if spec is not None else []
    return tuple(dict.fromkeys(os.path.realpath(p) for p in [package, *kernels]))


def _files(root: str):
    for entry in os.scandir(root):
        if entry.is_dir(follow_symlinks=False):
            if entry.name != "__pycache__":
                yield from _files(entry.path)
        elif entry.name.endswith((".py", ".so", ".pyd")):
            st = entry.stat()
            yield entry.path, st.st_size, st.st_mtime_ns


def _path(text: str) -> Path:
    return cache_dir() / f"{hashlib.sha256(text.encode()).hexdigest()}.json"


def load(text: str) -> list[Phase] | None:
    """The phases stored for key ``text``; None on a miss (no file, unreadable, another key, not a plan)."""
    path = _path(text)
    try:
        raw = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as e:
        _warn_once("read", "plan cache: cannot read %s (%s); planning instead", path, e)
        return None
    try:
        data = json.loads(raw)
        if data["format"] != FORMAT or data["key"] != text:
            return None
        phases = [Phase(n, w, k, t) for n, w, k, t in data["phases"]]
    except (ValueError, KeyError, TypeError):  # corrupt or foreign: planned again and rewritten
        log.debug("plan cache: %s is not a plan of this key; planning again", path)
        return None
    ok = phases and all(isinstance(p.name, str) and all(type(x) is int and x >= 0 for x in
                        (p.weights_bytes, p.kept_bytes, p.transient_bytes)) for p in phases)
    if ok:
        with contextlib.suppress(OSError):  # recently used: the last to be evicted
            os.utime(path)
    return phases if ok else None


def store(text: str, plan: MemoryPlan) -> None:
    """Write ``plan``'s phases under key ``text``: a temp file in the folder, then os.replace (a reader
    sees the old file or the new one, never half of one)."""
    path = _path(text)
    data = {"format": FORMAT, "key": text,
            "phases": [[p.name, p.weights_bytes, p.kept_bytes, p.transient_bytes] for p in plan.phases]}
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".tmp-", suffix=".json", delete=False) as f:
            tmp = f.name
            json.dump(data, f)
        os.replace(tmp, path)
        tmp = None
    except OSError as e:
        _warn_once("write", "plan cache: cannot write %s (%s); plans are kept in memory only", path.parent, e)
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    _evict(path.parent)


def _evict(folder: Path) -> None:
    """Remove the least recently used plans beyond ``MAX_FILES`` (and temp files a killed writer
    left). Another process may remove the same file meanwhile: every OSError is ignored."""
    plans, now = [], time.time()
    with contextlib.suppress(OSError), os.scandir(folder) as entries:
        for entry in entries:
            with contextlib.suppress(OSError):
                if entry.name.startswith(".tmp-"):
                    if now - entry.stat().st_mtime > _STALE_TMP_S:
                        os.unlink(entry.path)
                elif entry.name.endswith(".json"):
                    plans.append((entry.stat().st_mtime_ns, entry.path))
    for _, path in sorted(plans)[:max(0, len(plans) - MAX_FILES)]:
        with contextlib.suppress(OSError):
            os.unlink(path)


def _warn_once(what: str, message: str, *args) -> None:
    if what not in _warned:
        _warned.add(what)
        log.warning(message, *args)
