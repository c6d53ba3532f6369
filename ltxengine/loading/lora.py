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

fp8 weights (quant.fp8.Fp8Linear: e4m3 bits W8 and a per-tensor scale s), ``LoraSet(fp8_lora=...)``:

* "branch" (the default): W8 and s stay bit-untouched; a forward hook adds (x A^T) (strength B)^T,
  the layer's LoRAs stacked along the rank, A and B kept on the layer's device in the activation
  dtype. Cost: rank (in + out) / (in out) more multiply-adds at the bf16 rate plus A and B in
  memory: 1.6% of the layer's for rank 32 at 4096 x 4096 (some 3% of an fp8 GEMM's time, from the
  FLOPs; bench/fp8_lora_quality.py times it on a GPU), 19% (some 37%) for LTX-2's distilled
  rank-384 LoRA, whose A and B then hold as many bytes as the LoRA file.
* "merge": dequant(W8, s) + sum(strength B A) in fp32, requantized per tensor with a new scale
  (quantize_weight) and written in place; the original bits and scale are kept on the host and
  restored exactly. No runtime cost.

Measured (bench/fp8_lora_quality.py's cases on the CPU: one 2048 x 2048 layer, W ~ N(0, 0.02) with 4
outlier columns x10, Gaussian bf16 LoRA scaled to ||B A|| = rel ||W||, 512 unit-RMS bf16 tokens,
fp8-cast forward): relative output error vs the bf16 layer with the LoRA merged, and the part of
the LoRA's own effect x (B A)^T that is lost (||(y - y without LoRA) - x (B A)^T|| / ||x (B A)^T||):

    rank   rel   |  fp8 floor   merge   branch  |  effect lost: bf16   merge   branch
      16   0.1%  |     0.0265  0.0266   0.0266  |               1.71    1.32     0.79
      16     1%  |     0.0265  0.0279   0.0266  |               0.28    0.89     0.17
      32     3%  |     0.0265  0.0326   0.0266  |               0.10    0.62     0.06
      64    10%  |     0.0265  0.0362   0.0265  |               0.03    0.25     0.02
     384    30%  |     0.0264  0.0361   0.0254  |               0.01    0.09     0.01
     384   100%  |     0.0264  0.0325   0.0189  |               0.004   0.04     0.003

(fp8-scaled-mm also rounds the activations: floor 0.0375, merge 0.0375-0.0448, branch 0.0266-0.0376,
same ordering. A 0.1% delta is below bf16's own resolution: every mode loses it.) Merging rounds
W8 s + delta back onto an e4m3 grid 16x coarser than bf16's: a delta under half a step, most of a
1-3% LoRA, rounds away (the LoRA mostly stops working), and larger ones pay a second rounding of
the whole weight (+20-40% error). The branch never rounds the delta into the weight: its error
stays at the fp8 floor, or below it when the delta is large. Hence "branch" by default: closer to
bf16 in every case, at a cost that is small for style LoRAs (rank <= 64: at most about 3% more
FLOPs, 4096 wide). For the distilled rank-384 LoRA, "merge" trades 1.2-1.4x the fp8 floor for no
runtime cost.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..quant.fp8 import Fp8Linear, quantize_weight
from .ltx2_text import KEYMAP as _CONNECTORS_KEYMAP
from .ltx2_transformer import KEYMAP as _DIT_KEYMAP
from .safetensors_io import SafetensorsFile

__all__ = ["DEFAULT_FP8_LORA", "FP8_LORA_MODES", "LoraError", "LoraPair", "LoraSet", "LoraWeights"]


class LoraError(ValueError):
    """A LoRA file, or a LoRA for this model, that cannot be fused as written."""


_LIGHTRICKS = ("diffusion_model.", "text_embedding_projection.")
_DIFFUSERS = ("transformer.", "connectors.")
_ROLES = ((".lora_A.weight", "A"), (".lora_down.weight", "A"), (".lora_B.weight", "B"),
          (".lora_up.weight", "B"), (".alpha", "alpha"))
_COMPONENTS = ("transformer", "connectors")
_FP8 = (torch.float8_e4m3fn, torch.float8_e5m2, torch.float8_e4m3fnuz, torch.float8_e5m2fnuz)
_PEFT_METADATA = "lora_adapter_metadata"
FP8_LORA_MODES = ("branch", "merge")
DEFAULT_FP8_LORA = "branch"  # why: the module docstring's measurements
_SHOWN = 10


def _gguf_layer(model: nn.Module, target: str) -> bool:
    from ..quant.gguf_linear import GGUFLinear
    try:
        return isinstance(model.get_submodule(target.rpartition(".")[0]), GGUFLinear)
    except AttributeError:
        return False


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
    # the file's safetensors header metadata (str -> str; {} for a state dict), e.g. an IC-LoRA's
    # reference_downscale_factor, read by the recipes that need it
    metadata: Mapping[str, str] = field(default_factory=dict)

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
        return cls(name=name, pairs=pairs, format=fmt, metadata=dict(metadata))


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
        if not torch.isfinite(t).all():  # nan / inf would spread through every weight it touches
            raise LoraError(f"lora {name!r}: tensor {key!r} holds non-finite values (nan or inf)")
    rank = a.shape[0]
    if b.shape[1] != rank:
        raise LoraError(f"lora {name!r}: tensor {key_b!r} has shape {tuple(b.shape)}, expected ({b.shape[0]}, "
                        f"{rank}) (rank {rank} from {key_a!r})")
    scale = 1.0
    if "alpha" in slot:
        key_alpha, alpha = slot["alpha"]
        if alpha.numel() != 1:
            raise LoraError(f"lora {name!r}: tensor {key_alpha!r} must be a scalar, got shape {tuple(alpha.shape)}")
        if not math.isfinite(float(alpha)) or float(alpha) == 0:
            raise LoraError(f"lora {name!r}: tensor {key_alpha!r} must be a finite, non-zero alpha, got {float(alpha)}")
        if peft_alpha is not None:
            raise LoraError(f"lora {name!r}: {key_alpha!r} and the header's {component}.lora_alpha both give an "
                            "alpha; keep one")
        scale = float(alpha) / rank
    elif peft_alpha is not None:
        scale = peft_alpha / rank
    return LoraPair(component=component, a=a, b=b, scale=scale, key_a=key_a, key_b=key_b)


# -- fusing into a model -----------------------------------------------------------------------

Target = tuple[str, str]  # (component, parameter name)
Terms = list[tuple[LoraPair, float]]  # (pair, strength * scale) for one target


class LoraSet:
    """Fuses LoRAs into one model's weights in place and can take them out again exactly.

    ``model`` is the transformer, or {"transformer": ..., "connectors": ...} when LoRAs may
    touch LTX-2's text connectors. Use one LoraSet per model: it owns the host copies of the
    original weights. ``version`` grows on every apply / clear so caches keyed on the weights
    (CUDA graphs, compiled code) can tell the weights changed.

    ``fp8_lora`` says what happens at Fp8Linear layers (see "fp8 weights" in the module
    docstring): "branch" keeps the LoRA unmerged in a forward hook, "merge" requantizes the
    merged weight. Other linear layers are always fused as described above.
    """

    def __init__(self, model: nn.Module | Mapping[str, nn.Module], fp8_lora: str = DEFAULT_FP8_LORA):
        modules = {"transformer": model} if isinstance(model, nn.Module) else model
        if not isinstance(modules, Mapping) or not modules or set(modules) - set(_COMPONENTS) or not all(
                isinstance(m, nn.Module) for m in modules.values()):
            raise LoraError(f"LoraSet: model must be an nn.Module or a dict of them with keys from {_COMPONENTS}, "
                            f"got {model!r:.200}")
        if fp8_lora not in FP8_LORA_MODES:
            raise LoraError(f"LoraSet: fp8_lora must be one of {FP8_LORA_MODES}, got {fp8_lora!r}")
        self._modules = dict(modules)
        self.fp8_lora = fp8_lora
        # host copies of changed weights: a tensor, or (fp8 bits, scale) of an Fp8Linear
        self._originals: dict[Target, torch.Tensor | tuple[torch.Tensor, torch.Tensor]] = {}
        self._hooks: dict[Target, torch.utils.hooks.RemovableHandle] = {}  # "branch" layers
        self._branch_cache: dict[tuple, tuple] = {}  # (target, terms ids) -> (pairs, _Branch)
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
        """Bring every weight back to its original bits and remove every LoRA branch."""
        self._restore(keep={})
        self._active = ()
        self.version += 1

    def _plan(self, loras) -> dict[Target, Terms]:
        if not isinstance(loras, Sequence) or isinstance(loras, (str, bytes)):
            raise LoraError(f"LoraSet.apply: loras must be a list of (LoraWeights, strength), got "
                            f"{type(loras).__name__}")
        plan: dict[Target, Terms] = {}
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
        found = {t: self._layer(p.component, t) for t, p in weights.pairs.items()}
        unknown = [k for t, p in weights.pairs.items() if found[t] is None for k in (p.key_a, p.key_b)]
        kept = [p.key_a for t, p in weights.pairs.items()
                if found[t] is None and _gguf_layer(self._modules[p.component], t)]
        if kept:  # a GGUF transformer's quantized linears (quant/gguf_linear.py) take no LoRA yet
            raise LoraError(f"lora {weights.name!r}: {_listing(kept)} target layers kept in GGUF blocks; LoRAs on "
                            "a GGUF transformer are not supported yet (load its weights in safetensors to use them)")
        if unknown:
            raise LoraError(f"lora {weights.name!r}: {_listing(unknown)} match no linear layer of the model (a LoRA "
                            "for another model?)")
        for target, pair in weights.pairs.items():
            _check_against(weights.name, target, pair, found[target])

    def _layer(self, component: str, target: str) -> nn.Linear | Fp8Linear | None:
        module_path, _, leaf = target.rpartition(".")
        try:
            module = self._modules[component].get_submodule(module_path)
        except AttributeError:
            return None
        return module if leaf == "weight" and isinstance(module, (nn.Linear, Fp8Linear)) else None

    def _fuse(self, target: Target, terms: Terms) -> None:
        layer = self._layer(*target)
        if not isinstance(layer, Fp8Linear):
            self._fuse_dense(target, layer.weight, terms)
        elif self.fp8_lora == "branch":
            self._hooks[target] = layer.register_forward_hook(self._cached_branch(target, layer, terms),
                                                              with_kwargs=True)
        else:
            self._merge_fp8(target, layer, terms)

    def _fuse_dense(self, target: Target, weight: torch.Tensor, terms: Terms) -> None:
        original = self._originals.get(target)
        if original is None:
            self._originals[target] = weight.detach().to("cpu", copy=True)
            original = weight  # still the original: no need to bring the host copy back
        delta = _delta(terms, weight.device)
        with torch.no_grad():
            weight.copy_((original.to(weight.device, torch.float32) + delta).to(weight.dtype))

    def _merge_fp8(self, target: Target, layer: Fp8Linear, terms: Terms) -> None:
        """dequant(original) + delta in fp32, requantized with a new per-tensor scale. Written in
        place, so the layer keeps its Parameter objects (and their addresses)."""
        original = self._originals.get(target)
        if original is None:
            self._originals[target] = (layer.weight.detach().to("cpu", copy=True),
                                       layer.weight_scale.detach().to("cpu", copy=True))
            original = (layer.weight, layer.weight_scale)
        device = layer.weight.device
        w8, scale = (t.to(device) for t in original)
        merged = w8.float() * scale.float() + _delta(terms, device)
        q, new_scale = quantize_weight(merged)
        with torch.no_grad():
            layer.weight.copy_(q)
            layer.weight_scale.copy_(new_scale)
        layer.refresh_scales()  # its per-channel copy, in place (the scaled_mm reads that one)

    def _cached_branch(self, target: Target, layer: Fp8Linear, terms: Terms) -> "_Branch":
        """The same LoRA set gets the same branch tensors (same addresses) every time it is
        applied, so a CUDA graph captured with it stays valid across stage switches. The cache
        holds the pairs, so their ids cannot be reused while a branch is keyed on them."""
        key = (target, tuple((id(pair), coef) for pair, coef in terms))
        hit = self._branch_cache.get(key)
        if hit is None:
            hit = self._branch_cache[key] = (tuple(pair for pair, _ in terms), self._branch(target, layer, terms))
        return hit[1]

    @property
    def graph_variant(self) -> tuple:
        """A hashable token of what the model computes beyond its weights: the active LoRA set
        when branches (forward hooks) are installed, () otherwise (merged LoRAs change weights
        in place, at the same addresses). Captured graphs are keyed on it."""
        return tuple((id(w), s) for w, s in self._active) if self._hooks else ()

    def _branch(self, target: Target, layer: Fp8Linear, terms: Terms) -> "_Branch":
        """The LoRAs of one layer stacked along the rank, strengths folded into B (in fp32, then
        rounded once), stored on the layer's device in the model's activation dtype."""
        device, dtype = layer.weight.device, self._activation_dtype(target[0], layer)
        a = torch.cat([pair.a.to(device, torch.float32) for pair, _ in terms])
        b = torch.cat([coef * pair.b.to(device, torch.float32) for pair, coef in terms], dim=1)
        return _Branch(a.to(dtype), b.to(dtype))

    def _activation_dtype(self, component: str, layer: Fp8Linear) -> torch.dtype:
        """The dtype the layer's input will have: its bias's (kept in the model dtype), else
        that of the first full-precision parameter outside the fp8 layers, else bf16."""
        if layer.bias is not None:
            return layer.bias.dtype
        for module in self._modules[component].modules():
            if isinstance(module, Fp8Linear):
                continue
            for p in module.parameters(recurse=False):
                if p.is_floating_point() and p.dtype not in _FP8:
                    return p.dtype
        return torch.bfloat16

    def _restore(self, keep) -> None:
        for handle in self._hooks.values():  # cheap to rebuild: every branch goes
            handle.remove()
        self._hooks.clear()
        for target in [t for t in self._originals if t not in keep]:
            layer, saved = self._layer(*target), self._originals.pop(target)
            with torch.no_grad():
                if isinstance(saved, tuple):
                    layer.weight.copy_(saved[0])
                    layer.weight_scale.copy_(saved[1])
                    layer.refresh_scales()
                else:
                    layer.weight.copy_(saved)


class _Branch:
    """Forward hook adding a LoRA to an fp8 layer's output: y + (x @ A^T) @ B^T.

    Only device tensor ops, the same ones with the same shapes on every call (no host sync, no
    data-dependent allocation): it is captured into a CUDA graph along with the layer. The add
    is fused into the second GEMM (addmm: one rounding of y + h B^T). Out of place, because the
    layer's output may be a buffer someone else owns.
    """

    offload_tensors = ("a", "b")  # streamed with their layer's block (executor/block_offload.py)

    def __init__(self, a: torch.Tensor, b: torch.Tensor):
        self.a, self.b = a, b  # (rank, in), (out, rank) stacked over the LoRAs; strengths inside b

    def __call__(self, module, args, kwargs, output: torch.Tensor) -> torch.Tensor:
        x = args[0] if args else kwargs["x"]
        a, b = self.a, self.b
        if a.dtype != output.dtype:  # activations in another dtype than expected: a cast per call
            a, b = a.to(output.dtype), b.to(output.dtype)
        h = F.linear(x.to(output.dtype), a).reshape(-1, a.shape[0])
        y = torch.addmm(output.reshape(-1, output.shape[-1]), h, b.t())
        return y.view(output.shape)


def _delta(terms: Terms, device: torch.device) -> torch.Tensor:
    """sum(coef * B @ A) in fp32 on ``device``."""
    delta = None
    for pair, coef in terms:
        term = coef * (pair.b.to(device, torch.float32) @ pair.a.to(device, torch.float32))
        delta = term if delta is None else delta + term
    return delta


def _check_item(i: int, item) -> tuple[LoraWeights, float]:
    if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], LoraWeights)):
        raise LoraError(f"LoraSet.apply: loras[{i}] must be a (LoraWeights, strength) pair, got {item!r:.200}")
    strength = item[1]
    if isinstance(strength, bool) or not isinstance(strength, numbers.Real) or not math.isfinite(strength):
        raise LoraError(f"LoraSet.apply: strength of lora {item[0].name!r} must be a finite number, got {strength!r}")
    return item[0], float(strength)


def _check_against(name: str, target: str, pair: LoraPair, layer: nn.Linear | Fp8Linear) -> None:
    weight = layer.weight
    out_f, in_f = weight.shape
    kind = "fp8 " if isinstance(layer, Fp8Linear) else ""
    where = f"({pair.component} {target} is {kind}{tuple(weight.shape)}; a LoRA for another model?)"
    if pair.a.shape[1] != in_f:
        raise LoraError(f"lora {name!r}: tensor {pair.key_a!r} has shape {tuple(pair.a.shape)}, expected "
                        f"({pair.rank}, {in_f}) {where}")
    if pair.b.shape[0] != out_f:
        raise LoraError(f"lora {name!r}: tensor {pair.key_b!r} has shape {tuple(pair.b.shape)}, expected "
                        f"({out_f}, {pair.rank}) {where}")
    if isinstance(layer, Fp8Linear):
        return
    if weight.dtype in _FP8:
        raise LoraError(f"lora {name!r}: {pair.component} {target} is stored as {weight.dtype}; LoRA fusion into "
                        "fp8 weights needs an Fp8Linear layer, which carries the weight's scale "
                        "(ltxengine.quant.convert_to_fp8 / quantization=...), not an nn.Linear holding fp8 data")
    if not weight.is_floating_point():
        raise LoraError(f"lora {name!r}: {pair.component} {target} has dtype {weight.dtype}, expected a float dtype")
