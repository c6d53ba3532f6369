"""What both families' memory plans share (``ltx_video/plan.py``, ``ltx2/plan.py``): what a plan is
compared with (``measure``), the weights on the device per phase, and the latent upsampler's
phase. See ltxengine/executor/plan.py for the plan itself and what is not counted."""

from __future__ import annotations

import logging
from contextlib import contextmanager

import torch

from .executor import plan_cache
from .executor.plan import MemoryPlan, available_bytes, fake_mode, module_bytes, transient_peak
from .components.latents import upsample_latents

__all__ = ["component_bytes", "disk_cached_plan", "fake_latents", "measure", "memo_peak", "on_device",
           "on_fake_weights", "repeated_modules", "reusing_traces", "scoped_peak", "upsample_peak"]

log = logging.getLogger(__name__)


def memo_peak(engine, key: tuple, compute) -> int:
    """``compute()`` once per engine and ``key``: for a phase whose trace depends on nothing but
    ``key`` (the text encoder's on its batch and token count, not on the video's size), so a new
    request shape does not trace it again. Kept like ``Engine._plans``, for the engine's life."""
    cache = engine.__dict__.setdefault("_phase_peaks", {})
    if key not in cache:
        cache[key] = compute()
    return cache[key]


@contextmanager
def reusing_traces(engine):
    """Within: ``scoped_peak`` traces each key once. budget.py plans one request under every
    offload / tiling option, and the traces differ only where an option changes the request (VAE
    tiling): the options' weights differ, their activations do not. Nothing changes the modules
    while it is open (the options are assumed, nothing moves), so a key need only tell the phases
    of one request apart."""
    outer = "_trace_memo" in engine.__dict__
    if not outer:
        engine._trace_memo = {}
    try:
        yield
    finally:
        if not outer:
            del engine._trace_memo


def scoped_peak(engine, key: tuple, compute) -> int:
    """``compute()``, or inside ``reusing_traces`` the value already computed for ``key``."""
    memo = engine.__dict__.get("_trace_memo")
    if memo is None:
        return compute()
    if key not in memo:
        memo[key] = compute()
    return memo[key]


def repeated_modules(*modules: torch.nn.Module | None) -> list[torch.nn.Module]:
    """What a plan's trace may replay (executor/replay.py): ``modules`` themselves (a VAE decoder
    runs once per chunk or tile) and every layer of every ModuleList inside them (blocks, layers,
    resnets), outermost first."""
    found = []
    for m in modules:
        if m is None:
            continue
        found.append(m)
        found += [c for sub in m.modules() if isinstance(sub, torch.nn.ModuleList) for c in sub]
    return list(dict.fromkeys(found))


def measure(plan: MemoryPlan, engine) -> MemoryPlan:
    """Set what ``plan`` is compared with: the memory free now and the engine's weights already
    on the device (counted in the phases, so not to be found free a second time)."""
    plan.available_bytes = available_bytes(engine.device)
    modules = [engine.transformer, engine.vae, getattr(engine.text_encoder, "model", engine.text_encoder),
               *(getattr(engine, n, None) for n in ("latent_upsampler", "connectors", "audio_vae", "vocoder"))]
    plan.held_bytes = module_bytes(*(m for m in modules if isinstance(m, torch.nn.Module)), device=engine.device)
    streaming = {id(s): s for s in [getattr(engine, "block_offload", None), *engine.residency.streamed.values()]
                 if s is not None}
    plan.held_bytes += sum(s.device_bytes for s in streaming.values())  # slots: allocated, counted in phases
    return plan


def disk_cached_plan(engine, parts: tuple, compute) -> MemoryPlan:
    """``compute()``'s plan, or the phases an earlier process stored under the same key
    (executor/plan_cache.py: ``parts``, the request's and the engine's state besides its components,
    with the components' fingerprint, device, versions and source stamp), measured now. A stored
    plan that does not fit is planned again: only planning makes its suggestion."""
    text = _cache_key(engine, parts) if plan_cache.enabled(engine) else None
    phases = plan_cache.load(text) if text is not None else None
    if phases is not None:
        plan = measure(MemoryPlan(device=engine.device, phases=phases), engine)
        if plan.fits is not False:
            return plan
    plan = compute()
    if text is not None and phases is None:
        plan_cache.store(text, plan)
    return plan


def store_plan(engine, parts: tuple, plan: MemoryPlan) -> None:
    """Keep ``plan`` on disk under ``parts`` (as ``disk_cached_plan`` would after planning), where the
    plan cache is on: ``Engine.plan`` warms a later process's check too."""
    text = _cache_key(engine, parts) if plan_cache.enabled(engine) else None
    if text is not None:
        plan_cache.store(text, plan)


def _cache_key(engine, parts: tuple) -> str | None:
    """The plan cache's key text, None where it cannot be made: a cache never fails a generation."""
    try:  # the options budget.py plans share one fingerprint (nothing changes the modules meanwhile)
        fingerprint = scoped_peak(engine, ("plan-cache",), lambda: plan_cache.components_fingerprint(engine))
        return plan_cache.key_text(engine, parts, fingerprint)
    except Exception as e:  # noqa: BLE001 - an object the key cannot read: plan without the disk
        log.warning("plan cache: no key for this engine (%s: %s); planning without it", type(e).__name__, e)
        return None


def component_bytes(engine, *others) -> dict[str, int]:
    """Bytes per offloadable component; the transformer's blocks on the device under
    "transformer_blocks" (all of them, or the two slots of streamed groups) and the rest of it under
    "transformer" (both away while the text encoder or upsampler runs, see ``on_device``); the rest
    (always resident) under "resident"."""
    parts = {name: module_bytes(engine.offloadable(name)) for name in engine.OFFLOADABLE}
    parts["text_encoder"] = text_encoder_on_device(engine)
    blocks = engine.transformer.transformer_blocks
    parts["transformer"] = module_bytes(engine.transformer) - module_bytes(*blocks)
    # resident blocks move with the DiT; streamed ones leave their two slots on the device
    streamed = _streamed_group(engine) is not None
    parts["transformer_blocks"] = 0 if streamed else blocks_on_device(engine)
    parts["transformer_slots"] = blocks_on_device(engine) if streamed else 0
    parts["resident"] = module_bytes(engine.vae, *others) - parts["vae_encoder"]
    return parts


def text_encoder_on_device(engine) -> int:
    """Bytes of the text encoder on the device while it encodes: all of it, or with its layers
    streamed (the engine's, or what budget.py assumes) the rest plus two one-layer slots."""
    from .executor.block_offload import layer_stack, slot_bytes
    te = engine.offloadable("text_encoder")
    if te is None:
        return 0
    streamed = getattr(engine, "_assumed_text_streamed", "text_encoder" in engine.residency.streamed)
    if not streamed:
        return module_bytes(te)
    layers, _ = layer_stack(te)
    return module_bytes(te) - module_bytes(*layers) + slot_bytes(layers, 1)


def blocks_on_device(engine) -> int:
    """Bytes of transformer blocks on the device: all, or two streamed groups' slots (the group
    size in force, or the one budget.py assumes while comparing options)."""
    from .executor.block_offload import slot_bytes
    group = _streamed_group(engine)
    blocks = engine.transformer.transformer_blocks
    return module_bytes(*blocks) if group is None else slot_bytes(blocks, group)


def _streamed_group(engine) -> int | None:
    """The group size the DiT's blocks stream in (in force, or assumed by budget.py); None: resident."""
    offload = getattr(engine, "block_offload", None)
    return getattr(engine, "_assumed_group_size", offload.group_size if offload is not None else None)


def on_device(w: dict[str, int], offload, *using: str) -> int:
    """Weights on the device while components ``using`` are in use; with "transformer_between_stages"
    offloaded the transformer is away while the text encoder or the upsampler is (Residency.use)."""
    away = "transformer_between_stages" in offload and bool({"text_encoder", "latent_upsampler"} & set(using))
    return sum(v for k, v in w.items() if (k == "resident" or k not in offload or k in using)
               and not (away and k in ("transformer", "transformer_blocks")))


def on_fake_weights(module: torch.nn.Module, like: torch.Tensor):
    """``module`` as a function of its inputs whose parameters and buffers are fake tensors on the
    device of ``like`` (a trace input) and in its fake mode (a trace takes one). An offloaded text
    encoder is parked in host memory while a CUDA engine plans: a trace of its weights where they
    are mixes devices and fails. What it allocates does not depend on where the weights are."""
    with like.fake_mode:
        weights = {n: torch.empty(t.shape, dtype=t.dtype, device=like.device)
                   for n, t in [*module.named_parameters(), *module.named_buffers()]}
    return lambda *args, **kwargs: torch.func.functional_call(module, weights, args, kwargs)


def fake_latents(engine, f: int, h: int, w: int) -> torch.Tensor:
    """Fake (1, C, F', H', W') float32 latents."""
    with fake_mode():
        return torch.zeros((1, engine.transformer.config.in_channels, f, h, w), dtype=torch.float32,
                           device=engine.device)


def upsample_peak(engine, f: int, h: int, w: int) -> int:
    def peak() -> int:
        z = fake_latents(engine, f, h, w)
        return transient_peak(lambda z: upsample_latents(engine.latent_upsampler, engine.vae, z), z,
                              repeated=repeated_modules(engine.latent_upsampler))
    return scoped_peak(engine, ("upsample", f, h, w), peak)
