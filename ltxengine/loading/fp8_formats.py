"""fp8 checkpoints: which layers a file stores in fp8, their scales, and the Fp8Linear layout.

Works on a TensorSource (model key -> reader) after the key map, before ``load_strict``: it
swaps the meta model's linears for Fp8Linear where needed and rewrites their entries so that
``weight`` arrives as float8_e4m3fn and ``weight_scale`` / ``input_scale`` as fp32 scalars.

Formats (all per-tensor e4m3; the layer's weight is ``weight * weight_scale``):

- Lightricks ``-fp8`` files (ltx-core 1.0.0 ``quantization/fp8_scaled_mm.py``): ``<layer>.weight``
  F8_E4M3 (out, in) + ``<layer>.weight_scale`` (+ static ``<layer>.input_scale``) F32 scalars;
  other layers bf16. Scale-less F8_E4M3 weights (a plain cast, as ltx-core's fp8-cast makes)
  mean scale 1 -- allowed only when no layer of the file has a scale.
- ComfyUI mixed precision (Comfy-Org/ComfyUI comfy/ops.py ``_load_quantized_module`` and
  comfy/quant_ops.py ``QUANT_ALGOS`` @ 0271a469fe29; comfy/utils.py ``convert_old_quants`` @
  09708eae709a): ``<layer>.comfy_quant`` = uint8 tensor holding UTF-8 JSON such as
  ``{"format": "float8_e4m3fn"}`` (optional ``"full_precision_matrix_mult": true``: ComfyUI then
  dequantizes instead of running the fp8 GEMM), ``<layer>.weight_scale``, optional
  ``<layer>.input_scale``. The same tags may come as the header entry ``_quantization_metadata``
  = JSON ``{"layers": {"<file layer name>": {...}}}`` (header tags win over tensor tags, as in
  ComfyUI). Only "float8_e4m3fn" is supported; nvfp4 / mxfp8 / float8_e5m2 / int8 are refused.
- ComfyUI's older scaled-fp8 files (same utils.py / model_detection.py): a ``scaled_fp8`` marker
  tensor (dtype F8_E4M3, or F32 meaning e4m3; 2 elements = full-precision matmul), per layer
  ``<layer>.scale_weight`` (= weight_scale) and ``<layer>.scale_input`` (= input_scale; a value
  of exactly 1.0 is a placeholder ComfyUI drops, so do we).
- bf16/fp32 files: the layers the policy converts are quantized at load, one at a time.

Rules: with ``quantization=None`` an fp8 file keeps fp8 storage for exactly the layers it stores
in fp8 and runs them with the device's best policy (fp8.default_policy); never is the whole
model silently dequantized, nor anything quantized that the file left in bf16. With a named
policy, layers the file stores in fp8 but the policy would leave in full precision stay fp8 and
run weight-only ("fp8-cast"), the precision-safe choice for layers the policy excludes, and
layers the policy converts that the file stores in full precision are quantized at load.
ComfyUI layers tagged full_precision_matrix_mult always run weight-only.

The gate projections of LTX-2.3 / 2.5 (quant.KEEP_FULL_PRECISION) follow Lightricks' current
policies (ltx-core @400fd31) instead: never quantized at load; stored in fp8 by the file (its
-fp8 files store them with a weight_scale), "fp8-cast" dequantizes them at load to the model dtype
(fp8_cast.py's prequant fold, ``(w.float() * scale).to(bf16)``) and "fp8-scaled-mm" runs them as
the file stores them (fp8_scaled_mm.py swaps every layer the file holds in F8_E4M3 with a scale).
"""

from __future__ import annotations

import json
import math
from typing import Any, Callable, Iterable

import torch
import torch.nn as nn

from ..quant.fp8 import (FP8_DTYPE, convert_to_fp8, default_policy, fp8_targets, keeps_full_precision,
                         quantize_weight, validate_policy)
from .safetensors_io import CheckpointError, SafetensorsFile
from .strict import TensorSource

FP8_STORED = "F8_E4M3"  # safetensors' name of float8_e4m3fn
SUPPORTED_FORMATS = ("float8_e4m3fn",)
_SCALES = ("weight_scale", "input_scale")


# -- reading tags ------------------------------------------------------------------------------

def header_layers(files: Iterable[SafetensorsFile], keymaps) -> dict[str, dict]:
    """``_quantization_metadata`` header tags, keyed by model layer name (file names mapped by the
    first key map that claims ``<name>.weight``; tags of other components are skipped)."""
    out: dict[str, dict] = {}
    for f in files:
        raw = f.metadata.get("_quantization_metadata")
        if raw is None:
            continue
        try:
            meta = json.loads(raw)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{f.path}: header '_quantization_metadata' is not valid JSON ({e})") from e
        layers = meta.get("layers") if isinstance(meta, dict) else None
        if not isinstance(layers, dict):
            raise CheckpointError(f"{f.path}: header '_quantization_metadata' must be an object with a 'layers' "
                                  f"object, got {raw[:200]!r}")
        for name, conf in layers.items():
            mapped = next((m.apply(name + ".weight") for m in keymaps if m.apply(name + ".weight")), None)
            if mapped is not None:
                out[mapped[: -len(".weight")]] = _check_conf(conf, f"_quantization_metadata layer {name!r}",
                                                              str(f.path))
    return out


def _check_conf(conf: Any, what: str, where: str) -> dict:
    if not isinstance(conf, dict) or "format" not in conf:
        raise CheckpointError(f"{where}: {what} must be a JSON object with a 'format', got {conf!r}")
    if conf["format"] not in SUPPORTED_FORMATS:
        raise CheckpointError(f"{where}: {what} has format {conf['format']!r}; ltxengine loads only "
                              f"{SUPPORTED_FORMATS} (per-tensor e4m3 + weight_scale)")
    return conf


def _tag_from_tensor(t: torch.Tensor, desc: str, where: str) -> dict:
    if t.dtype != torch.uint8 or t.ndim != 1:
        raise CheckpointError(f"{where}: comfy_quant tensor {desc} must be 1-D uint8 (UTF-8 JSON), got "
                              f"{tuple(t.shape)} {t.dtype}")
    try:
        conf = json.loads(bytes(t.tolist()).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{where}: comfy_quant tensor {desc} is not UTF-8 JSON ({e})") from e
    return _check_conf(conf, f"comfy_quant tensor {desc}", where)


def _stored(entry) -> str | None:
    """The safetensors dtype name recorded with a source entry (None: not known, e.g. in-memory)."""
    return entry[3] if len(entry) > 3 else None


def _read_small(entry) -> torch.Tensor:
    return entry[1]("cpu", None)


# -- ComfyUI's older scaled_fp8 layout ----------------------------------------------------------

def _convert_scaled_fp8(source: dict, where: str) -> dict[str, dict]:
    """Rename scale_weight/scale_input to the current names in place; tags for the scaled layers."""
    entry = source.pop("scaled_fp8")
    marker = _read_small(entry)
    if marker.dtype not in (FP8_DTYPE, torch.float32):
        raise CheckpointError(f"{where}: scaled_fp8 marker {entry[2]} has dtype {marker.dtype}; only float8_e4m3fn "
                              "(or float32, meaning e4m3) scaled-fp8 files are supported")
    full_precision = marker.numel() == 2
    tags: dict[str, dict] = {}
    for key in [k for k in source if k.endswith((".scale_weight", ".scale_input"))]:
        layer, _, kind = key.rpartition(".")
        value = source.pop(key)
        if kind == "scale_weight":
            source[f"{layer}.weight_scale"] = value
            tags[layer] = {"format": "float8_e4m3fn", "full_precision_matrix_mult": full_precision}
        elif not _is_one(value):
            source[f"{layer}.input_scale"] = value
    return tags


def _is_one(entry) -> bool:
    t = _read_small(entry)
    return t.numel() == 1 and t.is_floating_point() and float(t.float().reshape(())) == 1.0


# -- validation --------------------------------------------------------------------------------

def _scale_value(source: dict, key: str, where: str) -> torch.Tensor:
    entry = source[key]
    t = _read_small(entry)
    if not t.is_floating_point() or t.dtype == FP8_DTYPE or t.numel() != 1 or t.ndim > 1:
        raise CheckpointError(f"{where}: {key.rpartition('.')[2]} {entry[2]} must be a per-tensor float scalar "
                              f"(shape () or (1,)), got {tuple(t.shape)} {t.dtype}")
    value = float(t.float().reshape(()))
    if not (math.isfinite(value) and value > 0):
        raise CheckpointError(f"{where}: {key.rpartition('.')[2]} {entry[2]} must be a finite positive scale, "
                              f"got {value!r}")
    return t.float().reshape(())


def _layer_states(model: nn.Module, source: dict, tags: dict[str, dict], where: str) -> dict[str, dict]:
    """Per linear layer: is its weight stored fp8, its tag, its validated scales."""
    linears = {n for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    for key in source:
        layer, _, kind = key.rpartition(".")
        if kind in _SCALES and layer not in linears:
            raise CheckpointError(f"{where}: {kind} {source[key][2]} belongs to no linear layer of the model "
                                  f"(fp8 scales exist only for linear weights)")
    for layer in tags:
        if layer not in linears:
            raise CheckpointError(f"{where}: comfy_quant tag for {layer!r}, which is not a linear layer of the model")
    states: dict[str, dict] = {}
    for layer in sorted(linears):
        wkey = f"{layer}.weight"
        if wkey not in source:
            continue  # load_strict reports the missing weight
        stored = _stored(source[wkey])
        if stored is not None and stored.startswith("F8") and stored != FP8_STORED:
            raise CheckpointError(f"{where}: weight {source[wkey][2]} is stored as {stored}; only {FP8_STORED} "
                                  "(float8_e4m3fn) fp8 weights are supported")
        fp8 = stored == FP8_STORED
        present = {kind: f"{layer}.{kind}" in source for kind in _SCALES}
        if not fp8:
            extra = [kind for kind in _SCALES if present[kind]]
            if extra or layer in tags:
                what = f"{extra[0]} {source[f'{layer}.{extra[0]}'][2]}" if extra else f"comfy_quant tag of {layer!r}"
                raise CheckpointError(f"{where}: {what} is for an fp8 weight, but {source[wkey][2]} is stored as "
                                      f"{stored}")
            continue
        states[layer] = {"tag": tags.get(layer), **{kind: present[kind] for kind in _SCALES}}
    scaled = [n for n, s in states.items() if s["weight_scale"]]
    for layer, s in states.items():
        wdesc = source[f"{layer}.weight"][2]
        if not s["weight_scale"] and (s["tag"] is not None or scaled):
            why = "its comfy_quant tag requires one" if s["tag"] is not None else \
                f"other fp8 layers of the file have one (e.g. {scaled[0]!r}), so a missing scale is not 1"
            raise CheckpointError(f"{where}: fp8 weight {wdesc} has no weight_scale; {why}")
        if s["input_scale"] and not s["weight_scale"]:
            raise CheckpointError(f"{where}: input_scale {source[f'{layer}.input_scale'][2]} without a weight_scale")
        for kind in _SCALES:
            if s[kind]:
                s[kind] = _scale_value(source, f"{layer}.{kind}", where)
    return states


# -- rewriting the source ----------------------------------------------------------------------

class _QuantizeAtLoad:
    """Reads a full-precision weight once, quantizes it on the engine's device ``on`` and hands
    out the two halves where they are asked for (a streamed block's go to the host: the device
    quantizes as fast as it can and with the kernel a resident load uses, so the bits match);
    the bf16 copy is gone as soon as the fp8 one exists (peak: one layer)."""

    def __init__(self, read: Callable[..., torch.Tensor], desc: str, on=None):
        self.read, self.desc, self.on, self.result = read, desc, on, None

    def _get(self, device):
        if self.result is None:
            w = self.read(self.on if self.on is not None else device, None)
            try:
                self.result = quantize_weight(w)
            except ValueError as e:
                raise CheckpointError(f"weight {self.desc}: {e}") from e
        return self.result

    def weight(self, device, _dtype=None) -> torch.Tensor:
        w8, scale = self._get(device)
        self.result = (w8.to(device), scale)  # no device copy kept alive (the source outlives the read)
        return self.result[0]

    def scale(self, device, _dtype=None) -> torch.Tensor:
        return self._get(device)[1].to(device)


def _constant(value: torch.Tensor) -> Callable[..., torch.Tensor]:
    return lambda device, _dtype=None: value.to(device)


def _raw(read: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    return lambda device, _dtype=None: read(device, None)  # keep the stored fp8 bits


def prepare_fp8(model: nn.Module, source: TensorSource, where: str, *, quantization: str | None, device,
                dtype: torch.dtype, header_tags: dict[str, dict] | None = None) -> TensorSource:
    """Convert the meta ``model``'s linears for the file's fp8 layers and the policy's targets,
    and return the source rewritten for them. Sets ``model.quantization`` (policy or None)."""
    source = dict(source)
    tags = _convert_scaled_fp8(source, where) if "scaled_fp8" in source else {}
    for key in [k for k in source if k.endswith(".comfy_quant")]:
        entry = source.pop(key)
        tags[key[: -len(".comfy_quant")]] = _tag_from_tensor(_read_small(entry), entry[2], where)
    tags.update(header_tags or {})
    states = _layer_states(model, source, tags, where)
    policy = _policy(quantization, bool(states), device, dtype)
    model.quantization = policy
    if policy is None:
        return source
    kept = {n for n, s in states.items() if keeps_full_precision(n, policy)}
    if policy == "fp8-cast":
        for layer in sorted(kept):
            _dequantize_at_load(source, layer, states.pop(layer))
    # None: the file decides which layers are fp8 (nothing more is quantized); a named policy
    # adds its own targets, quantizing at load those the file holds in full precision.
    targets = set(states) if quantization is None else set(fp8_targets(model, policy))
    targets |= {n for n in kept & set(states) if isinstance(states[n]["weight_scale"], torch.Tensor)}
    weight_only = {n for n, s in states.items()
                   if n not in targets or (s["tag"] or {}).get("full_precision_matrix_mult")}
    static = {n for n, s in states.items() if isinstance(s["input_scale"], torch.Tensor)}
    convert_to_fp8(model, policy, names=sorted((targets | set(states)) - weight_only), static_input=static)
    convert_to_fp8(model, "fp8-cast", names=sorted(weight_only), static_input=static)
    for layer in sorted(targets | set(states)):
        _rewrite(source, layer, states.get(layer), device)
    return source


def _policy(quantization: str | None, has_fp8: bool, device, dtype: torch.dtype) -> str | None:
    if quantization is not None:
        return validate_policy(quantization, device, dtype)
    if not has_fp8:
        return None
    # fp8 storage is kept; the GEMM policy needs half-precision activations.
    return "fp8-cast" if dtype == torch.float32 else default_policy(device)


def _dequantize_at_load(source: dict, layer: str, state: dict) -> None:
    """A layer the file stores in fp8 that stays a full-precision linear: weight * weight_scale in
    fp32, rounded once to the model dtype; its scales are consumed."""
    wkey = f"{layer}.weight"
    shape, read, desc = source[wkey][:3]
    scale = state["weight_scale"] if isinstance(state["weight_scale"], torch.Tensor) else torch.ones(())
    source.pop(f"{layer}.weight_scale", None)
    source.pop(f"{layer}.input_scale", None)

    def weight(device, dtype=None):
        w = read(device, None).float() * scale.to(device)
        return w if dtype is None else w.to(dtype)
    source[wkey] = (shape, weight, f"{desc} (dequantized at load)", "F32")


def _rewrite(source: dict, layer: str, state: dict | None, device=None) -> None:
    wkey, skey, ikey = f"{layer}.weight", f"{layer}.weight_scale", f"{layer}.input_scale"
    shape, read, desc = source[wkey][:3]
    if state is None:  # stored in full precision: quantized at load (on ``device``, the engine's)
        q = _QuantizeAtLoad(read, desc, device)
        source[wkey] = (shape, q.weight, f"{desc} (quantized to fp8 at load)", FP8_STORED)
        source[skey] = ((), q.scale, f"scale computed for {desc}", "F32")
        return
    source[wkey] = (shape, _raw(read), desc, FP8_STORED)
    scale = state["weight_scale"]
    if isinstance(scale, torch.Tensor):
        source[skey] = ((), _constant(scale), source[skey][2], "F32")
    else:  # plain fp8 cast, no scale in the file
        source[skey] = ((), _constant(torch.ones((), dtype=torch.float32)), f"scale 1 implied for {desc}", "F32")
    if isinstance(state["input_scale"], torch.Tensor):
        source[ikey] = ((), _constant(state["input_scale"]), source[ikey][2], "F32")


def describe_fp8(keys: list[str], dtype_of: Callable[[str], str], metadata: dict) -> str | None:
    """Which fp8 layout a file's tensors use (for ``ltxengine info``), from names and dtypes only."""
    fp8 = sum(1 for k in keys if k.endswith(".weight") and dtype_of(k).startswith("F8"))
    if "_quantization_metadata" in metadata or any(k.endswith(".comfy_quant") for k in keys):
        kind = "ComfyUI mixed precision (comfy_quant)"
    elif any(k.endswith("scaled_fp8") for k in keys):
        kind = "ComfyUI scaled_fp8"
    elif any(k.endswith(".weight_scale") for k in keys):
        kind = "Lightricks fp8 (weight_scale" + (" + input_scale)" if any(k.endswith(".input_scale") for k in keys)
                                                else ")")
    elif fp8:
        kind = "plain fp8 cast (no scales)"
    else:
        return None
    return f"{kind}, {fp8} fp8 weights"


__all__ = ["prepare_fp8", "header_layers", "describe_fp8", "SUPPORTED_FORMATS"]
