"""LoRA fusion into LTX-Video and LTX-2 weights, with an exact way back.

Two file layouts are read; which one is detected from the key prefixes, and a file mixing them is
refused:

* Lightricks / ComfyUI: ``diffusion_model.<original module path>.lora_A.weight`` (rank x in) and
  ``.lora_B.weight`` (out x rank), also spelled ``lora_down`` / ``lora_up``, with an optional
  ``<module>.alpha`` scalar. LTX-2's text projection appears as
  ``text_embedding_projection.aggregate_embed.*`` and its connector blocks under
  ``diffusion_model.{video,audio}_embeddings_connector.*``. Module paths are renamed with the
  checkpoint key maps (``ltx2_transformer.KEYMAP``, ``ltx2_text.KEYMAP``).
* diffusers / PEFT: ``transformer.<our module path>.lora_A.weight`` / ``.lora_B.weight`` and, for
  LTX-2, ``connectors.<path>``; optional ``.alpha`` keys, or diffusers' ``lora_adapter_metadata``
  header (PEFT's ``lora_alpha``).

Scaling: W' = W + strength * scale * (B @ A), scale = alpha / rank when the file states an alpha
(kohya / ComfyUI's ``.alpha`` convention, PEFT's lora_alpha / r), else 1. Lightricks' own files carry
no alpha and ltx-core applies none; note that ltx-core 1.0.0 silently skips ``.alpha``,
``lora_down``/``lora_up`` and every non-transformer key, and diffusers' LTX loaders refuse files with
``.alpha`` keys, so for such files ComfyUI is the reference followed here.

Precision: the sum over LoRAs is formed in float32 and added to the float32 value of the original
weight, then rounded once into the weight's dtype. A host copy of every weight is taken before its
first change, so switching LoRAs always starts from the originals and ``clear`` is bit-exact.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn

from .ltx2_text import KEYMAP as _CONNECTORS_KEYMAP
from .ltx2_transformer import KEYMAP as _DIT_KEYMAP
from .safetensors_io import SafetensorsFile

__all__ = ["LoraError", "LoraPair", "LoraSet", "LoraWeights"]


class LoraError(ValueError):
    """A LoRA file, or a LoRA for this model, that cannot be fused as written."""


_LIGHTRICKS = ("diffusion_model.", "text_embedding_projection.")
_DIFFUSERS = ("transformer.", "connectors.")
_ROLES = ((".lora_A.weight", "A"), (".lora_down.weight", "A"), (".lora_B.weight", "B"),
          (".lora_up.weight", "B"), (".alpha", "alpha"))
_COMPONENTS = ("transformer", "connectors")
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)
_PEFT_METADATA = "lora_adapter_metadata"
_SHOWN = 10


def _listing(keys) -> str:
    keys = sorted(keys)
    more = f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else ""
    return f"{len(keys)} keys {keys[:_SHOWN]}{more}"


@dataclass(frozen=True, eq=False)
class LoraPair:
    """One low-rank update of one weight."""

    component: str  # "transformer" or "connectors"
    a: torch.Tensor  # (rank, in)
    b: torch.Tensor  # (out, rank)
    scale: float  # alpha / rank; 1.0 when the file states no alpha
    key_a: str  # the file's keys, for messages
    key_b: str

    @property
    def rank(self) -> int:
        return self.a.shape[0]


@dataclass(frozen=True, eq=False)
class LoraWeights:
    """A LoRA file resolved to our parameter names ("transformer_blocks.3.attn1.to_q.weight")."""

    name: str
    pairs: Mapping[str, LoraPair]  # parameter name inside its component (pair.component) -> update
    format: str  # "lightricks" or "diffusers": the layout the file was read in

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.pairs)

    @classmethod
    def load(cls, path_or_dict: str | os.PathLike | Mapping[str, torch.Tensor], name: str | None = None
             ) -> LoraWeights:
        tensors, metadata, default_name = _read(path_or_dict)
        name = default_name if name is None else name
        fmt = _detect_format(tensors, name)
        groups, unknown = _group(tensors, name)
        resolved = {module: _resolve(module, fmt) for module in groups}
        unknown += [key for module, target in resolved.items() if target is None
                    for key, _ in groups[module].values()]
        if unknown:
            raise LoraError(f"lora {name!r}: {_listing(unknown)} are not LoRA tensors of a known module "
                            "(expected <module>.lora_A.weight / .lora_B.weight / .lora_down.weight / "
                            ".lora_up.weight / .alpha)")
        _check_complete(groups, name)
        alphas = {c: _peft_alpha(metadata, c, name) for c in _COMPONENTS} if fmt == "diffusers" else {}
        pairs: dict[str, LoraPair] = {}
        for module in sorted(groups):
            component, target = resolved[module]
            if target in pairs:
                raise LoraError(f"lora {name!r}: {pairs[target].key_a!r} and {groups[module]['A'][0]!r} both "
                                f"target {target!r}")
            pairs[target] = _make_pair(groups[module], component, alphas.get(component), name)
        return cls(name=name, pairs=pairs, format=fmt)


# -- reading a file ----------------------------------------------------------------------------

def _read(source) -> tuple[dict[str, torch.Tensor], dict[str, str], str]:
    if isinstance(source, Mapping):
        bad = [repr(k) for k, v in source.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
        if bad:
            raise LoraError(f"LoraWeights.load: path_or_dict must map str keys to tensors; not so for {bad[:_SHOWN]}")
        return {k: v.detach() for k, v in source.items()}, {}, "lora"
    if isinstance(source, (str, os.PathLike)):
        with SafetensorsFile(source) as f:  # CheckpointError (a ValueError) names a missing / bad file
            return {k: f.read(k) for k in f.keys()}, dict(f.metadata), Path(source).stem
    raise LoraError(f"LoraWeights.load: path_or_dict must be a .safetensors path or a dict of tensors, "
                    f"got {type(source).__name__}")


def _detect_format(tensors: Mapping[str, torch.Tensor], name: str) -> str:
    if not tensors:
        raise LoraError(f"lora {name!r}: holds no tensors")
    lightricks = [k for k in tensors if k.startswith(_LIGHTRICKS)]
    diffusers = [k for k in tensors if k.startswith(_DIFFUSERS)]
    if lightricks and diffusers:
        raise LoraError(f"lora {name!r}: mixes the Lightricks/ComfyUI layout ({_listing(lightricks)}) with the "
                        f"diffusers layout ({_listing(diffusers)})")
    other = [k for k in tensors if not k.startswith(_LIGHTRICKS + _DIFFUSERS)]
    if other:
        raise LoraError(f"lora {name!r}: {_listing(other)} start with none of {list(_LIGHTRICKS + _DIFFUSERS)} "
                        "(not an LTX-Video / LTX-2 LoRA in the Lightricks/ComfyUI or diffusers layout)")
    return "lightricks" if lightricks else "diffusers"


def _group(tensors, name) -> tuple[dict[str, dict[str, tuple[str, torch.Tensor]]], list[str]]:
    """file module path -> {"A" | "B" | "alpha": (key, tensor)}, and the keys with no LoRA suffix."""
    groups: dict[str, dict[str, tuple[str, torch.Tensor]]] = {}
    unknown = []
    for key, tensor in tensors.items():
        for suffix, role in _ROLES:
            if key.endswith(suffix):
                slot = groups.setdefault(key[: -len(suffix)], {})
                if role in slot:
                    raise LoraError(f"lora {name!r}: {slot[role][0]!r} and {key!r} are both the {role} tensor of "
                                    f"{key[: -len(suffix)]!r}")
                slot[role] = (key, tensor)
                break
        else:
            unknown.append(key)
    return groups, unknown


def _resolve(module: str, fmt: str) -> tuple[str, str] | None:
    """File module path -> (component, our parameter name), or None when no key map claims it."""
    weight = module + ".weight"
    if fmt == "diffusers":
        component, _, rest = weight.partition(".")
        return component, rest
    # The checkpoint maps see DiT keys with the file's "model." in front. The LTX-2 DiT map also
    # serves LTX-Video: its extra renames touch only LTX-2 names, and on LTX-Video names it does what
    # keymaps.TRANSFORMER_SINGLE_FILE does (tests check this on every LTX-Video linear layer).
    full = "model." + weight if weight.startswith("diffusion_model.") else weight
    for component, keymap in (("connectors", _CONNECTORS_KEYMAP), ("transformer", _DIT_KEYMAP)):
        mapped = keymap.apply(full)
        if mapped is not None:
            return component, mapped
    return None


def _check_complete(groups, name) -> None:
    for have, lack in (("A", "B"), ("B", "A")):
        bad = [keys[have][0] for keys in groups.values() if have in keys and lack not in keys]
        if bad:
            raise LoraError(f"lora {name!r}: {_listing(bad)} have no matching lora_{lack} (or "
                            f"lora_{'down' if lack == 'A' else 'up'}) tensor")
    lone = [keys["alpha"][0] for keys in groups.values() if "A" not in keys]
    if lone:
        raise LoraError(f"lora {name!r}: {_listing(lone)} are alphas of modules without lora_A / lora_B tensors")


def _peft_alpha(metadata: Mapping[str, str], component: str, name: str) -> float | None:
    """lora_alpha from diffusers' ``lora_adapter_metadata`` header (PEFT's LoraConfig, flattened
    with a "<component>." prefix), or None when the file has none."""
    raw = metadata.get(_PEFT_METADATA)
    if not raw:
        return None
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise LoraError(f"lora {name!r}: header {_PEFT_METADATA!r} is not valid JSON ({e})") from e
    if not isinstance(config, dict):
        raise LoraError(f"lora {name!r}: header {_PEFT_METADATA!r} must be a JSON object, got {raw!r:.100}")
    config = {k[len(component) + 1:]: v for k, v in config.items() if k.startswith(component + ".")}
    for option in ("use_dora", "use_rslora", "alpha_pattern"):
        if config.get(option):
            raise LoraError(f"lora {name!r}: header {_PEFT_METADATA!r} sets {component}.{option} = "
                            f"{config[option]!r}, which is not supported (must be false / empty)")
    alpha = config.get("lora_alpha")
    return None if alpha is None else float(alpha)


def _make_pair(slot, component: str, peft_alpha: float | None, name: str) -> LoraPair:
    (key_a, a), (key_b, b) = slot["A"], slot["B"]
    for key, t in ((key_a, a), (key_b, b)):
        if t.ndim != 2 or not t.is_floating_point() or 0 in t.shape:
            raise LoraError(f"lora {name!r}: tensor {key!r} must be a non-empty 2-D floating tensor, got shape "
                            f"{tuple(t.shape)} {t.dtype}")
    rank = a.shape[0]
    if b.shape[1] != rank:
        raise LoraError(f"lora {name!r}: tensor {key_b!r} has shape {tuple(b.shape)}, expected ({b.shape[0]}, "
                        f"{rank}) (rank {rank} from {key_a!r})")
    scale = 1.0
    if "alpha" in slot:
        key_alpha, alpha = slot["alpha"]
        if alpha.numel() != 1:
            raise LoraError(f"lora {name!r}: tensor {key_alpha!r} must be a scalar, got shape {tuple(alpha.shape)}")
        if peft_alpha is not None:
            raise LoraError(f"lora {name!r}: {key_alpha!r} and the header's {component}.lora_alpha both give an "
                            "alpha; keep one")
        scale = float(alpha) / rank
    elif peft_alpha is not None:
        scale = peft_alpha / rank
    return LoraPair(component=component, a=a, b=b, scale=scale, key_a=key_a, key_b=key_b)


# -- fusing into a model -----------------------------------------------------------------------

class LoraSet:
    """Fuses LoRAs into one model's weights in place and can take them out again exactly.

    ``model`` is the transformer, or {"transformer": ..., "connectors": ...} when LoRAs may
    touch LTX-2's text connectors. Use one LoraSet per model: it owns the host copies of the
    original weights. ``version`` grows on every apply / clear so caches keyed on the weights
    (CUDA graphs, compiled code) can tell the weights changed.
    """

    def __init__(self, model: nn.Module | Mapping[str, nn.Module]):
        modules = {"transformer": model} if isinstance(model, nn.Module) else model
        if not isinstance(modules, Mapping) or not modules or set(modules) - set(_COMPONENTS) or not all(
                isinstance(m, nn.Module) for m in modules.values()):
            raise LoraError(f"LoraSet: model must be an nn.Module or a dict of them with keys from {_COMPONENTS}, "
                            f"got {model!r:.200}")
        self._modules = dict(modules)
        self._originals: dict[tuple[str, str], torch.Tensor] = {}  # host copies of changed weights
        self._active: tuple[tuple[LoraWeights, float], ...] = ()
        self.version = 0

    @property
    def active(self) -> tuple[tuple[LoraWeights, float], ...]:
        """The (LoRA, strength) pairs fused now, in the order given to ``apply``."""
        return self._active

    def apply(self, loras: Sequence[tuple[LoraWeights, float]]) -> None:
        """Fuse exactly ``loras`` (replacing whatever was fused). Everything is checked before any
        weight changes; a failure while writing (e.g. out of memory) leaves the base weights."""
        plan = self._plan(loras)
        try:
            self._restore(keep=plan)
            for target, terms in plan.items():
                self._fuse(target, terms)
        except BaseException:
            self.clear()
            raise
        self._active = tuple((w, float(s)) for w, s in loras)
        self.version += 1

    def check(self, weights: "LoraWeights") -> None:
        """Validate ``weights`` against the model (every target exists with the right shape)
        without changing anything, so a LoRA for another model fails when it is loaded."""
        self._check(weights)

    def clear(self) -> None:
        """Bring every weight back to its original bits."""
        self._restore(keep={})
        self._active = ()
        self.version += 1

    def _plan(self, loras) -> dict[tuple[str, str], list[tuple[LoraPair, float]]]:
        if not isinstance(loras, Sequence) or isinstance(loras, (str, bytes)):
            raise LoraError(f"LoraSet.apply: loras must be a list of (LoraWeights, strength), got "
                            f"{type(loras).__name__}")
        plan: dict[tuple[str, str], list[tuple[LoraPair, float]]] = {}
        for i, item in enumerate(loras):
            weights, strength = _check_item(i, item)
            self._check(weights)
            if strength == 0:
                continue  # an exact no-op: skipping it also keeps -0.0 weights bit-exact
            for target, pair in weights.pairs.items():
                plan.setdefault((pair.component, target), []).append((pair, strength * pair.scale))
        return plan

    def _check(self, weights: LoraWeights) -> None:
        absent = [p for p in weights.pairs.values() if p.component not in self._modules]
        if absent:
            missing = " and ".join(sorted({p.component for p in absent}))
            raise LoraError(f"lora {weights.name!r}: {_listing([p.key_a for p in absent])} target the {missing} "
                            "module, which LoraSet was not given (pass {'transformer': ..., 'connectors': ...})")
        found = {t: self._weight(p.component, t) for t, p in weights.pairs.items()}
        unknown = [k for t, p in weights.pairs.items() if found[t] is None for k in (p.key_a, p.key_b)]
        if unknown:
            raise LoraError(f"lora {weights.name!r}: {_listing(unknown)} match no linear layer of the model (a LoRA "
                            "for another model?)")
        for target, pair in weights.pairs.items():
            _check_against(weights.name, target, pair, found[target])

    def _weight(self, component: str, target: str) -> torch.Tensor | None:
        module_path, _, leaf = target.rpartition(".")
        try:
            module = self._modules[component].get_submodule(module_path)
        except AttributeError:
            return None
        return module.weight if leaf == "weight" and isinstance(module, nn.Linear) else None

    def _fuse(self, target: tuple[str, str], terms: list[tuple[LoraPair, float]]) -> None:
        weight = self._weight(*target)
        original = self._originals.get(target)
        if original is None:
            self._originals[target] = weight.detach().to("cpu", copy=True)
            original = weight  # still the original: no need to bring the host copy back
        delta = None
        for pair, coef in terms:
            term = coef * (pair.b.to(weight.device, torch.float32) @ pair.a.to(weight.device, torch.float32))
            delta = term if delta is None else delta + term
        with torch.no_grad():
            weight.copy_((original.to(weight.device, torch.float32) + delta).to(weight.dtype))

    def _restore(self, keep) -> None:
        for target in [t for t in self._originals if t not in keep]:
            with torch.no_grad():
                self._weight(*target).copy_(self._originals.pop(target))


def _check_item(i: int, item) -> tuple[LoraWeights, float]:
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], LoraWeights)):
        raise LoraError(f"LoraSet.apply: loras[{i}] must be a (LoraWeights, strength) pair, got {item!r:.200}")
    strength = item[1]
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not math.isfinite(strength):
        raise LoraError(f"LoraSet.apply: strength of lora {item[0].name!r} must be a finite number, got {strength!r}")
    return item[0], float(strength)


def _check_against(name: str, target: str, pair: LoraPair, weight: torch.Tensor) -> None:
    out_f, in_f = weight.shape
    where = f"({pair.component} {target} is {tuple(weight.shape)}; a LoRA for another model?)"
    if pair.a.shape[1] != in_f:
        raise LoraError(f"lora {name!r}: tensor {pair.key_a!r} has shape {tuple(pair.a.shape)}, expected "
                        f"({pair.rank}, {in_f}) {where}")
    if pair.b.shape[0] != out_f:
        raise LoraError(f"lora {name!r}: tensor {pair.key_b!r} has shape {tuple(pair.b.shape)}, expected "
                        f"({out_f}, {pair.rank}) {where}")
    if weight.dtype in _FP8:
        raise LoraError(f"lora {name!r}: {pair.component} {target} is stored as {weight.dtype}; LoRA fusion into "
                        "fp8 weights is not implemented yet (it arrives with the fp8 work)")
    if not weight.is_floating_point():
        raise LoraError(f"lora {name!r}: {pair.component} {target} has dtype {weight.dtype}, expected a float dtype")
