"""LTX-2 checkpoints: Lightricks' single-file bundle and diffusers folders.

A bundle (``ltx-2-19b-dev.safetensors`` ...) holds the DiT, the text connectors and the Gemma
feature projection, the video VAE, the audio VAE and the vocoder, with the configs in the
header's ``config`` JSON (sections ``transformer``, ``vae``, ``audio_vae``, ``vocoder``) and an
optional ``model_version``. A diffusers folder (``model_index.json``) holds each component in its
own subfolder. Both load strictly: every model tensor comes from the file, every file tensor
belongs to a component, unsupported options are refused by name. Gemma (the text encoder) and
the latent upsampler are separate downloads with their own loaders.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import parse_config
from ..ops import TORCH_OPS, Ops
from .components import (build_on_meta, component_files, device_and_dtype, load_fp8_source, load_pipeline_folder,
                         resolve_path, source_from_files)
from .keymaps import IDENTITY, KeyMap
from .ltx2_text import GEMMA_HIDDEN_SIZE, gemma_source_of
from .safetensors_io import CheckpointError, SafetensorsFile, read_json
from .strict import load_strict

COMPONENTS = ("transformer", "connectors", "vae", "audio_vae", "vocoder")
# modalities=("audio",): the audio stream alone (Lightricks' LTXAudioOnlyModelConfigurator): these
# components are built audio-only and read only the tensors their ``owns(key)`` names; there is no
# video VAE.
MODALITIES = (("video", "audio"), ("audio",))
AUDIO_ONLY_MODELS = {"transformer": "ltxengine.models.ltx2_audio_only:LTX2AudioTransformer",
                     "connectors": "ltxengine.models.ltx2_audio_only:AudioTextConnectors"}


@dataclass(frozen=True)
class ComponentSpec:
    """Where a component's pieces live: ``model``/``config`` as "module:attr"; the single-file
    key maps and header-config converter as "module:attr"; the header section it reads."""

    diffusers_class: str
    model: str
    config: str
    keymaps: tuple[str, ...]
    from_original: str
    section: str
    from_diffusers: str | None = None  # config parser for the folder's config.json, if not parse_config
    other_diffusers_classes: tuple[str, ...] = ()  # later releases' classes of the same component


COMPONENT_SPECS = {
    "transformer": ComponentSpec(
        "LTX2VideoTransformer3DModel", "ltxengine.models.ltx2_transformer:LTX2Transformer",
        "ltxengine.config:LTX2TransformerConfig", ("ltxengine.loading.ltx2_transformer:KEYMAP",),
        "ltxengine.loading.ltx2_transformer:transformer_config", "transformer"),
    "connectors": ComponentSpec(
        "LTX2TextConnectors", "ltxengine.models.ltx2_text:TextConnectors",
        "ltxengine.models.ltx2_text:TextConnectorsConfig", ("ltxengine.loading.ltx2_text:KEYMAP",),
        "ltxengine.loading.ltx2_text:config_from_original", "transformer"),
    "vae": ComponentSpec(
        "AutoencoderKLLTX2Video", "ltxengine.models.video_vae:LTX2VideoVAE",
        "ltxengine.models.video_vae:LTX2VideoVAEConfig", ("ltxengine.loading.ltx2_vae:KEYMAP",),
        "ltxengine.loading.ltx2_vae:vae_config_from_original", "vae"),
    "audio_vae": ComponentSpec(
        "AutoencoderKLLTX2Audio", "ltxengine.models.audio_vae:AudioVAE",
        "ltxengine.models.audio_vae:AudioVAEConfig", ("ltxengine.loading.ltx2_audio:AUDIO_VAE_KEYMAP",),
        "ltxengine.loading.ltx2_audio:audio_vae_config_from_original", "audio_vae"),
    "vocoder": ComponentSpec(
        "LTX2Vocoder", "ltxengine.models.vocoder:build_vocoder", "ltxengine.models.vocoder:VocoderConfig",
        ("ltxengine.loading.ltx2_audio:VOCODER_KEYMAP",),
        "ltxengine.loading.ltx2_audio:vocoder_config_from_original", "vocoder",
        from_diffusers="ltxengine.models.vocoder:vocoder_config_from_diffusers",
        other_diffusers_classes=("LTX2VocoderWithBWE",)),  # 2.3 / 2.5: BigVGAN-v2 + bandwidth extension
}

# Components loaded only when named in ``components`` (never by default), and only from a diffusers
# folder: the 2.5 diffusion video decoder (diffusers' folder name). Lightricks ships it as its own
# file (vae/ltx-2.5-video-vae-bf16) in ltx-core's key names, which have no key map here.
OPTIONAL_SPECS = {
    "diffusion_decoder": ComponentSpec(
        "LTX2VideoDiffusionDecoderModel", "ltxengine.models.ltx2_diffusion_decoder:LTX2DiffusionDecoder",
        "ltxengine.models.ltx2_diffusion_decoder:LTX2DiffusionDecoderConfig", (), "", ""),
}
OPTIONAL_COMPONENTS = tuple(OPTIONAL_SPECS)

# Any of these keys marks a single file as LTX-2 (diffusers' detection keys). The DiT's and the audio VAE's
# are in every release's bundle; the vocoder's is 2.0's HiFi-GAN, then 2.3+'s BWE vocoder (its stage-1
# generator, ltx-core's VocoderWithBWE.vocoder), for vocoder-only files.
_DETECT = ("model.diffusion_model.av_ca_a2v_gate_adaln_single.emb.timestep_embedder.linear_1.weight",
           "audio_vae.per_channel_statistics.mean-of-means", "vocoder.conv_pre.weight",
           "vocoder.vocoder.conv_pre.weight")


def _attr(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def component_keymaps(name: str) -> list[KeyMap]:
    """The single-file key maps of component ``name`` (one of COMPONENTS)."""
    spec = COMPONENT_SPECS[name]
    maps: list[KeyMap] = []
    for ref in spec.keymaps:
        value = _attr(ref)
        maps.extend(value if isinstance(value, (list, tuple)) else [value])
    return maps


@dataclass
class LTX2Checkpoint:
    """What ``load_ltx2`` returns: the requested components plus the header metadata."""

    source: str
    transformer: nn.Module | None = None
    connectors: nn.Module | None = None
    vae: nn.Module | None = None
    audio_vae: nn.Module | None = None
    vocoder: nn.Module | None = None
    diffusion_decoder: nn.Module | None = None  # optional (OPTIONAL_SPECS), folders only
    model_version: str | None = None  # single files: the header's model_version ("2.0" ...)
    # single files and split sets: the header's gemma_source_checkpoint (2.5: {"gemma_version": ...})
    gemma_source_checkpoint: dict[str, Any] | None = None
    scheduler_config: dict[str, Any] | None = None  # diffusers folders
    extras: dict[str, Any] = field(default_factory=dict)


def is_ltx2(path) -> bool:
    """True for an LTX-2 single file, diffusers folder or folder of per-component files (headers and JSON
    only are read)."""
    p = Path(path).expanduser()
    if p.is_file():
        with SafetensorsFile(p) as f:
            keys = set(f.keys())
        return any(k in keys for k in _DETECT)
    index = p / "model_index.json"
    if os.path.lexists(index):  # read_json refuses one that is not a regular file
        name = read_json(index, "diffusers model_index.json").get("_class_name", "")
        return isinstance(name, str) and name.startswith("LTX2")
    config = p / "config.json"
    if os.path.lexists(config):
        name = read_json(config, "config.json").get("_class_name", "")
        return name in {c for s in COMPONENT_SPECS.values() for c in (s.diffusers_class, *s.other_diffusers_classes)}
    from .ltx2_split_files import is_split_folder  # LTX-2.5's per-component files (ltx2_split.py loads them)
    return is_split_folder(p)


def _check_components(components) -> tuple[str, ...]:
    components = tuple(components)
    bad = [c for c in components if c not in COMPONENTS + OPTIONAL_COMPONENTS]
    if bad or not components:
        raise ValueError(f"components must be a non-empty subset of {COMPONENTS + OPTIONAL_COMPONENTS}, got "
                         f"{components!r}")
    return components


def load_ltx2(path, device=None, dtype=torch.bfloat16, ops: Ops = TORCH_OPS,
              components=COMPONENTS, quantization: str | None = None, modalities=MODALITIES[0]) -> LTX2Checkpoint:
    """The LTX-2 components ``components`` from a single-file bundle or a diffusers folder.
    ``quantization``: the transformer's fp8 policy (None, "fp8-cast", "fp8-scaled-mm"; see
    ``ltxengine.loading.load_transformer``); fp8 files keep their fp8 layers either way.
    ``modalities=("audio",)``: the audio stream alone (MODALITIES), without the video VAE (the
    default components less "vae")."""
    modalities = check_modalities(modalities)
    if modalities == ("audio",):
        components = _audio_components(components)
    components = _check_components(components)
    device, dtype = device_and_dtype(device, dtype)
    p = resolve_path(path)
    if p.is_file():
        return _load_bundle(p, components, device, dtype, ops, quantization, modalities)
    return load_pipeline_folder(p, LTX2Checkpoint(source=str(p)), components,
                                lambda folder, name: load_ltx2_component(folder, name, device, dtype, ops,
                                                                         quantization, modalities))


def check_modalities(modalities) -> tuple[str, ...]:
    """``modalities`` as one of MODALITIES, or ValueError naming it."""
    try:
        value = tuple(modalities) if not isinstance(modalities, str) else None
    except TypeError:
        value = None
    if value not in MODALITIES:
        raise ValueError(f"modalities must be one of {MODALITIES} (both streams, or audio alone without the video "
                         f"weights), got {modalities!r}")
    return value


def _audio_components(components) -> tuple[str, ...]:
    if tuple(components) == COMPONENTS:
        return tuple(c for c in COMPONENTS if c != "vae")
    if "vae" in tuple(components):
        raise ValueError(f"components: modalities=('audio',) loads no video VAE, got components={components!r}")
    return tuple(components)


def _build(name: str, spec: ComponentSpec, config, ops, modalities):
    """Component ``name`` on meta: its audio-only class when only audio is loaded."""
    ref = AUDIO_ONLY_MODELS.get(name) if modalities == ("audio",) else None
    return build_on_meta(_attr(ref or spec.model), config, ops)


def _owned(model, source):
    """An audio-only component reads its own tensors (``owns``); the file's others are never read."""
    owns = getattr(model, "owns", None)
    return source if owns is None else {k: v for k, v in source.items() if owns(k)}


def load_ltx2_component(folder, name: str, device=None, dtype=torch.bfloat16, ops: Ops = TORCH_OPS,
                        quantization: str | None = None, modalities=MODALITIES[0]) -> nn.Module:
    """One component from its diffusers folder (``config.json`` + weights); ``quantization``
    applies to the transformer, ``modalities`` as in ``load_ltx2``."""
    modalities = check_modalities(modalities)
    _check_components(_audio_components([name]) if modalities == ("audio",) else [name])
    device, dtype = device_and_dtype(device, dtype)
    folder = resolve_path(folder)
    spec = COMPONENT_SPECS[name] if name in COMPONENT_SPECS else OPTIONAL_SPECS[name]
    raw = read_json(folder / "config.json", f"{name} config.json")
    got = raw.get("_class_name")
    if got is not None and got not in (spec.diffusers_class, *spec.other_diffusers_classes):
        wanted = " or ".join(repr(c) for c in (spec.diffusers_class, *spec.other_diffusers_classes))
        raise CheckpointError(f"{folder / 'config.json'}: _class_name must be {wanted} for the {name}, got {got!r}")
    source = str(folder / "config.json")
    if spec.from_diffusers:
        config = _attr(spec.from_diffusers)(raw, source)
    else:
        config = parse_config(_attr(spec.config), raw, source)
    model = _build(name, spec, config, ops, modalities)
    files = component_files(folder)
    source = _owned(model, source_from_files(files, IDENTITY))
    if name == "transformer":
        source = load_fp8_source(model, source, files, [IDENTITY], str(folder), quantization, device, dtype)
    return load_strict(model, source, str(folder), device, dtype)


def transformer_on_meta(path, ops: Ops = TORCH_OPS, modalities=MODALITIES[0], section: dict | None = None) -> nn.Module:
    """The transformer built on meta from the config of the diffusers folder or single-file bundle
    ``path`` (audio-only for ``modalities=("audio",)``); no weight is read (a GGUF supplies them).
    ``section``: a Lightricks header's ``transformer`` section to build from instead (a GGUF's own)."""
    spec = COMPONENT_SPECS["transformer"]
    p = Path(path) if section is not None else resolve_path(path)
    if section is not None:
        config = _attr(spec.from_original)(section, str(p))
    elif p.is_dir():
        config_path = (p / "transformer" if os.path.lexists(p / "model_index.json") else p) / "config.json"
        raw = read_json(config_path, "transformer config.json")
        if raw.get("_class_name", spec.diffusers_class) not in (spec.diffusers_class, *spec.other_diffusers_classes):
            raise CheckpointError(f"{config_path}: _class_name must be {spec.diffusers_class!r} for the transformer, "
                                  f"got {raw.get('_class_name')!r}")
        config = _attr(spec.from_diffusers)(raw, str(config_path)) if spec.from_diffusers else \
            parse_config(_attr(spec.config), raw, str(config_path))
    else:
        with SafetensorsFile(p) as f:
            section = f.config_section().get(spec.section)
            if not isinstance(section, dict):
                raise CheckpointError(f"{p}: header config has no {spec.section!r} section (needed for the "
                                      "transformer)")
            config = _original_config("transformer", spec, section, f)
    return _build("transformer", spec, config, ops, check_modalities(modalities))


def _load_bundle(p: Path, components, device, dtype, ops, quantization=None,
                 modalities=MODALITIES[0]) -> LTX2Checkpoint:
    folder_only = [name for name in components if name in OPTIONAL_SPECS]
    if folder_only:
        raise CheckpointError(f"{p}: the {folder_only[0]} loads from a diffusers folder only (a single file of it has "
                              "no key map)")
    with SafetensorsFile(p) as f:
        return _load_bundle_file(p, f, components, device, dtype, ops, quantization, modalities)


def _load_bundle_file(p: Path, f: SafetensorsFile, components, device, dtype, ops,
                      quantization=None, modalities=MODALITIES[0]) -> LTX2Checkpoint:
    maps = {name: component_keymaps(name) for name in COMPONENTS}
    # Every tensor must belong to some component (a dropped key counts: the map claims it).
    claimed = [m for ms in maps.values() for m in ms]
    foreign = [k for k in f.keys() if not any(keymap_claims(m, k) for m in claimed)]
    if foreign:
        shown = ", ".join(repr(k) for k in foreign[:8])
        raise CheckpointError(f"{p}: {len(foreign)} tensors belong to no LTX-2 component: {shown}")
    header = f.config_section()
    ckpt = LTX2Checkpoint(source=str(p), model_version=f.metadata.get("model_version"))
    ckpt.gemma_source_checkpoint = gemma_source_of(f.metadata, str(p))
    for name in components:
        spec = COMPONENT_SPECS[name]
        section = header.get(spec.section)
        if not isinstance(section, dict):
            raise CheckpointError(f"{p}: header config has no {spec.section!r} section (needed for the {name})")
        config = _original_config(name, spec, section, f)
        model = _build(name, spec, config, ops, modalities)
        where, source = f"{p} [{name}]", _owned(model, _bundle_source(f, maps[name]))
        if name == "transformer":
            source = load_fp8_source(model, source, [f], maps[name], where, quantization, device, dtype)
        setattr(ckpt, name, load_strict(model, source, where, device, dtype))
    return ckpt


def _original_config(name: str, spec: ComponentSpec, section: dict, f: SafetensorsFile):
    convert = _attr(spec.from_original)
    if name != "connectors":
        return convert(section, str(f.path))
    return convert(section, str(f.path), **_gemma_input(section, f))


_V1_PROJECTION = "text_embedding_projection.aggregate_embed.weight"  # 2.0: feature extractor V1
_V2_PROJECTION = "text_embedding_projection.video_aggregate_embed.weight"  # 2.3+: V2, per modality


def _gemma_input(section: dict, f: SafetensorsFile) -> dict[str, int]:
    """What feeds the connectors' Gemma projection, which the header does not say: the number of
    Gemma hidden states (49 for Gemma-3-12B) and, for V2, their width. V1 maps (states x width) ->
    width, so its shape gives both (the width stays the header's caption_channels, as before). V2
    maps (states x width) -> the DiT's width: ltx-core takes the width from its Gemma config (3840);
    we take the header's caption_channels (the Gemma width, as 2.0 headers name it), else 3840.
    ltx-core's V1 / V2 choice is the header's (ltx2_text.config_from_original); a projection of the
    other kind then fails strict loading by name."""
    keys = f.keys()
    if _V1_PROJECTION in keys:
        key, (width, in_features) = _V1_PROJECTION, f.shape(_V1_PROJECTION)
    elif _V2_PROJECTION in keys:
        key, in_features = _V2_PROJECTION, f.shape(_V2_PROJECTION)[1]
        width = section.get("caption_channels", GEMMA_HIDDEN_SIZE)
        if not isinstance(width, int) or isinstance(width, bool) or width <= 0:
            raise CheckpointError(f"{f.path}: header config transformer.caption_channels (the Gemma width) must be "
                                  f"a positive integer, got {width!r}")
    else:
        raise CheckpointError(f"{f.path}: no {_V1_PROJECTION!r} or {_V2_PROJECTION!r} (the Gemma feature projection "
                              "of the text connectors)")
    if in_features % width:
        raise CheckpointError(f"{f.path}: {key!r} has {in_features} input features; that must be a multiple of the "
                              f"Gemma width {width} (hidden-state count x Gemma width)")
    if key == _V1_PROJECTION:
        return {"text_proj_in_factor": in_features // width}
    return {"text_proj_in_factor": in_features // width, "caption_channels": width}


def keymap_claims(m, key: str) -> bool:
    """``m`` maps ``key`` to a model key or deliberately drops it (statistics nobody reads)."""
    if m.apply(key) is not None:
        return True
    return isinstance(m, KeyMap) and key.startswith(m.prefix) and any(d in key for d in m.drop)


def _bundle_source(f: SafetensorsFile, maps: list[KeyMap]):
    source = {}
    for m in maps:
        for key, value in source_from_files([f], m).items():
            if key in source:
                raise CheckpointError(f"{f.path}: two tensors map to {key!r}: {source[key][2]} and {value[2]}")
            source[key] = value
    return source
