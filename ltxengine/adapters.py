"""An engine's LoRA adapters, with diffusers' names (both families).

    engine.load_lora_weights("cakeify.safetensors", adapter_name="cakeify")   # loaded and active at 1.0
    engine.load_lora_weights("style.safetensors", adapter_name="style")
    engine.set_adapters(["cakeify", "style"], adapter_weights=[1.0, 0.6])      # both, fused once
    engine.generate(prompt, ...)                                               # runs with both
    engine.generate(prompt, loras={"style": 0.8}, ...)                         # this call only
    engine.get_active_adapters()       # ["cakeify", "style"]
    engine.delete_adapters("style"); engine.unload_lora_weights()             # weights bit-exact again

What is active is fused into the weights (``loading.lora.LoraSet``: dense layers in place, fp8
layers by the engine's ``fp8_lora`` mode), so an active LoRA costs nothing per step and switching
never reloads the model. Which adapters are active, and with which weights, is the engine's
resting state; a call's ``loras=`` replaces it for that call, and the resting set is fused again
after the call whatever its end (result, error, cancel). LTX-2's stage 2 adds the distilled LoRA to
whatever set is active (as ltx-pipelines adds it to its ``loras`` list) and removes only it after.

Captured CUDA graphs read the weights by address, and fusing writes them in place: they stay valid
across switches. fp8 "branch" LoRAs are forward hooks instead; graphs are keyed on the active set
(LTX-2, per stage) or re-captured when it changes (LTX-Video).
"""

from __future__ import annotations

import math
import numbers
from contextlib import contextmanager
from typing import Callable, Mapping, Sequence

from .loading.lora import LoraSet, LoraWeights

__all__ = ["Adapters"]


class Adapters:
    """Loaded adapters (name -> LoraWeights) and the active ones (name -> weight), fused through
    ``lora_set()`` (the engine's LoraSet, made on first use). Not thread-safe by itself: the
    engine calls it under its lock."""

    def __init__(self, lora_set: Callable[[], LoraSet]):
        self._lora_set = lora_set
        self.loaded: dict[str, LoraWeights] = {}
        self.active: dict[str, float] = {}

    # ---- diffusers' calls ---------------------------------------------------------------------
    def load(self, source, adapter_name: str | None) -> str:
        """Read and check a LoRA (a .safetensors path or a state dict) against the model, register
        it and make it active at weight 1.0 alongside the active ones; -> its name. Nothing
        changes when the file is bad or is for another model."""
        if adapter_name is None:
            adapter_name = next(f"default_{i}" for i in range(len(self.loaded) + 1)
                                if f"default_{i}" not in self.loaded)
        if not isinstance(adapter_name, str) or not adapter_name:
            raise ValueError(f"adapter_name must be a non-empty str or None, got {adapter_name!r}")
        if adapter_name in self.loaded:
            raise ValueError(f"adapter_name: an adapter named {adapter_name!r} is already loaded (loaded: "
                             f"{sorted(self.loaded)}); delete_adapters({adapter_name!r}) first or pick another name")
        weights = LoraWeights.load(source, name=adapter_name)
        self._lora_set().check(weights)
        self._fuse({**self.active, adapter_name: 1.0}, extra={adapter_name: weights})
        self.loaded[adapter_name] = weights
        return adapter_name

    def set(self, adapter_names, adapter_weights=None) -> None:
        """Make exactly ``adapter_names`` active, with ``adapter_weights`` (one number for all, or
        one per name; default 1.0), and fuse them."""
        names = self._names("adapter_names", adapter_names)
        if adapter_weights is None or isinstance(adapter_weights, numbers.Real):
            weights = [1.0 if adapter_weights is None else adapter_weights] * len(names)
        else:
            weights = list(adapter_weights)
            if len(weights) != len(names):
                raise ValueError(f"adapter_weights must have one weight per adapter name ({len(names)}), got "
                                 f"{len(weights)}")
        self._fuse({n: _strength(f"adapter_weights[{i}]", w) for i, (n, w) in enumerate(zip(names, weights))})

    def get_active(self) -> list[str]:
        return list(self.active)

    def delete(self, adapter_names) -> None:
        """Forget ``adapter_names`` (active ones are taken out of the weights first)."""
        names = self._names("adapter_names", adapter_names)
        self._fuse({n: w for n, w in self.active.items() if n not in names})
        for n in names:
            del self.loaded[n]

    def unload(self) -> None:
        """Forget every adapter; the weights are the loaded checkpoint's again, bit for bit."""
        self._fuse({})
        self.loaded.clear()

    # ---- one generation -------------------------------------------------------------------------
    def check_call(self, loras) -> tuple[tuple[str, float], ...] | None:
        """``generate(loras=...)``: None (the active set) or a mapping adapter name -> strength of
        loaded adapters ({} runs without any); -> (name, strength) pairs."""
        if loras is None:
            return None
        if not isinstance(loras, Mapping):
            raise ValueError(f"loras must be a dict of adapter name -> strength (or None: the active adapters), got "
                             f"{type(loras).__name__}")
        unknown = [n for n in loras if n not in self.loaded]
        if unknown:
            raise ValueError(f"loras: {unknown} are not loaded adapters (loaded: {sorted(self.loaded)}); load them "
                             f"with engine.load_lora_weights(path, adapter_name=...)")
        return tuple((n, _strength(f"loras[{n!r}]", s)) for n, s in loras.items())

    @contextmanager
    def for_call(self, loras: tuple[tuple[str, float], ...] | None):
        """Fuse a call's own set (None: keep the active one) for the call; the active set is fused
        again afterwards, however the call ends."""
        if loras is None:
            yield
            return
        try:
            self._lora_set().apply([(self.loaded[n], s) for n, s in loras])
            yield
        finally:
            self._lora_set().apply(self.fused())

    def fused(self) -> list[tuple[LoraWeights, float]]:
        """The active set as LoraSet.apply takes it."""
        return [(self.loaded[n], w) for n, w in self.active.items()]

    # ---- internals -----------------------------------------------------------------------------
    def _fuse(self, active: dict[str, float], extra: Mapping[str, LoraWeights] | None = None) -> None:
        """Fuse ``active`` (from the loaded adapters and ``extra``, one being loaded) and make it the
        active set; on failure the previous set is fused again."""
        loaded = {**self.loaded, **(extra or {})}
        try:
            self._lora_set().apply([(loaded[n], w) for n, w in active.items()])
        except BaseException:
            self._lora_set().apply(self.fused())  # LoraSet.apply left the base weights
            raise
        self.active = dict(active)

    def _names(self, arg: str, names) -> list[str]:
        names = [names] if isinstance(names, str) else names
        if not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"{arg} must be an adapter name or a list of them, got {names!r:.200}")
        unknown = [n for n in names if n not in self.loaded]
        if unknown:
            raise ValueError(f"{arg}: {unknown} are not loaded adapters (loaded: {sorted(self.loaded)})")
        if len(set(names)) != len(names):
            raise ValueError(f"{arg} names an adapter twice: {list(names)}")
        return list(names)


def _strength(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    return float(value)
