"""Component loaders for LTX-Video checkpoints (diffusers folders and single files)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..config import TransformerConfig, VideoVAEConfig, parse_config
from ..ops import TORCH_OPS, Ops
from . import original_config
from .keymaps import IDENTITY, TRANSFORMER_SINGLE_FILE, VAE_SINGLE_FILE, KeyMap
from .components import (build_on_meta, component_files, device_and_dtype, load_fp8_source, load_pipeline_folder,
                         resolve_path, source_from_files)
from .safetensors_io import CheckpointError, SafetensorsFile, read_json
from .strict import load_strict

# diffusers class name expected in each component folder's config.json
_CLASS = {"transformer": "LTXVideoTransformer3DModel", "vae": "AutoencoderKLLTXVideo"}
_CONFIG = {"transformer": TransformerConfig, "vae": VideoVAEConfig}


@dataclass
class LTXVideoCheckpoint:
    """What ``load_ltx_video`` returns: the models plus options the pipelines need."""

    source: str
    transformer: nn.Module | None = None
    vae: nn.Module | None = None
    # RoPE time coordinates get the causal first-frame fix (original-code transformer flag).
    causal_temporal_positioning: bool = False
    scheduler_config: dict[str, Any] | None = None
    extras: dict[str, Any] = field(default_factory=dict)


# -- building blocks ---------------------------------------------------------------------------

def _folder_config(folder: Path, component: str) -> Any:
    raw = read_json(folder / "config.json", f"{component} config.json")
    name = raw.get("_class_name")
    if name is not None and name != _CLASS[component]:
        raise CheckpointError(f"{folder / 'config.json'}: _class_name must be {_CLASS[component]!r} for the "
                              f"{component}, got {name!r}")
    return parse_config(_CONFIG[component], raw, str(folder / "config.json"))


def _model_class(component: str):
    if component == "transformer":
        from ..models.transformer import LTXVideoTransformer
        return LTXVideoTransformer
    if component == "vae":
        from ..models.video_vae import VideoVAE
        return VideoVAE
    from ..models.latent_upsampler import LatentUpsampler
    return LatentUpsampler


def _load_folder(folder: Path, component: str, device, dtype, ops, quantization=None) -> nn.Module:
    config = _folder_config(folder, component)
    files = component_files(folder)
    model = build_on_meta(_model_class(component), config, ops)
    source = source_from_files(files, IDENTITY)
    if component == "transformer":
        source = load_fp8_source(model, source, files, [IDENTITY], str(folder), quantization, device, dtype)
    return load_strict(model, source, str(folder), device, dtype)


def _vae_keymap(config: VideoVAEConfig) -> KeyMap:
    """The original block numbering follows the release layout, which the header config names
    (diffusers guesses it from real-size tensor shapes instead, which fails on scaled models)."""
    if config.is_095:
        return VAE_SINGLE_FILE["0.9.5"]
    return VAE_SINGLE_FILE["0.9.1" if config.timestep_conditioning else "0.9.0"]


def _check_all_claimed(f: SafetensorsFile, keymaps: list[KeyMap]) -> None:
    foreign = [k for k in f.keys() if not any(k.startswith(m.prefix) for m in keymaps)]
    if foreign:
        shown = ", ".join(repr(k) for k in foreign[:8])
        raise CheckpointError(f"{f.path}: {len(foreign)} tensors belong to no known component "
                              f"(transformer 'model.diffusion_model.*', VAE 'vae.*'): {shown}")


# -- public loaders ----------------------------------------------------------------------------

def load_transformer(path, device=None, dtype=torch.bfloat16, ops: Ops = TORCH_OPS,
                     quantization: str | None = None) -> nn.Module:
    """From a diffusers ``transformer/`` folder or a Lightricks single-file checkpoint.

    quantization: None, "fp8-cast" or "fp8-scaled-mm" (see ltxengine.quant.fp8). fp8 files
    (Lightricks ``-fp8``, ComfyUI fp8) keep their fp8 layers whatever the value; None on such a
    file picks the device's best policy. The policy in force is ``model.quantization``."""
    return _component(path, "transformer", device, dtype, ops, quantization)


def load_vae(path, device=None, dtype=torch.bfloat16, ops: Ops = TORCH_OPS) -> nn.Module:
    """From a diffusers ``vae/`` folder or a Lightricks single-file checkpoint."""
    return _component(path, "vae", device, dtype, ops)


UPSAMPLER_FAMILIES = ("ltx-video", "ltx-2")


def load_latent_upsampler(path, device=None, dtype=torch.bfloat16, ops: Ops = TORCH_OPS,
                          family: str | None = None) -> nn.Module:
    """From a diffusers ``latent_upsampler/`` folder (or a pipeline folder holding one) or a
    Lightricks upscaler file (config in the header, diffusers keys): LTX-Video's
    ``ltxv-spatial-upscaler-*`` and LTX-2's ``ltx-2-spatial/temporal-upscaler-*`` (rational
    resampler), which share one model class.

    family: "ltx-video" or "ltx-2" refuses an upsampler known to belong to the other family (the
    latents of the two VAEs have the same shape but different meanings, so a mismatch runs and
    gives garbage). Known from a diffusers folder's ``_class_name``, or for a single file from
    LTX-2-only header options (``rational_resampler``, ``spatial_scale``); a plain header is
    accepted for both."""
    from .ltx2_vae import upsampler_config_from_diffusers, upsampler_config_from_original
    if family not in (None,) + UPSAMPLER_FAMILIES:
        raise ValueError(f"family must be None or one of {UPSAMPLER_FAMILIES}, got {family!r}")
    device, dtype = device_and_dtype(device, dtype)
    p = resolve_path(path)
    if p.is_dir():
        folder = p / "latent_upsampler" if (p / "latent_upsampler").is_dir() else p
        config_path = folder / "config.json"
        raw = read_json(config_path, "latent_upsampler config.json")
        config = upsampler_config_from_diffusers(raw, str(config_path))
        _check_upsampler_family(config_path, family, *_folder_upsampler_family(raw))
        model = build_on_meta(_model_class("latent_upsampler"), config, ops)
        return load_strict(model, source_from_files(component_files(folder), IDENTITY), str(folder), device, dtype)
    f = SafetensorsFile(p)
    # LTX-Video's header keys are a subset of LTX-2's (whose absent rational-resampler keys
    # default to LTX-Video's plain pixel-shuffle upsampler).
    header = f.config_section()
    config = upsampler_config_from_original(header, str(p))
    ltx2_keys = [k for k in ("rational_resampler", "spatial_scale") if k in header]
    if ltx2_keys:
        _check_upsampler_family(p, family, "ltx-2", f"its header config has the LTX-2 option(s) {ltx2_keys}")
    model = build_on_meta(_model_class("latent_upsampler"), config, ops)
    return load_strict(model, source_from_files([f], IDENTITY), str(p), device, dtype)


def _folder_upsampler_family(raw: dict) -> tuple[str, str]:
    name = raw.get("_class_name", "LTXLatentUpsamplerModel")
    return ("ltx-2" if name == "LTX2LatentUpsamplerModel" else "ltx-video"), f"_class_name {name!r}"


def _check_upsampler_family(where, wanted: str | None, found: str, why: str) -> None:
    if wanted is None or wanted == found:
        return
    names = {"ltx-2": "LTX-2", "ltx-video": "LTX-Video"}
    files = {"ltx-2": "ltx-2-spatial-upscaler-*", "ltx-video": "ltxv-spatial-upscaler-*"}
    raise CheckpointError(f"{where}: this is an {names[found]} latent upsampler ({why}); an {names[wanted]} engine "
                          f"needs an {names[wanted]} one ({files[wanted]}): the two families' latents differ")


def _component(path, component: str, device, dtype, ops, quantization=None) -> nn.Module:
    device, dtype = device_and_dtype(device, dtype)
    p = resolve_path(path)
    if p.is_dir():
        folder = p / component if os.path.lexists(p / "model_index.json") else p
        if not folder.is_dir():
            raise CheckpointError(f"{p}: pipeline folder has no {component}/ subfolder")
        return _load_folder(folder, component, device, dtype, ops, quantization)
    ckpt = _load_single_file(p, (component,), device, dtype, ops, quantization)
    return getattr(ckpt, component)


def _load_single_file(p: Path, components, device, dtype, ops, quantization=None) -> LTXVideoCheckpoint:
    f = SafetensorsFile(p)
    _check_all_claimed(f, [TRANSFORMER_SINGLE_FILE, VAE_SINGLE_FILE["0.9.0"]])
    ckpt = LTXVideoCheckpoint(source=str(p))
    config = f.config_section()
    ckpt.scheduler_config = config.get("scheduler")
    if ckpt.scheduler_config is not None and not isinstance(ckpt.scheduler_config, dict):
        raise CheckpointError(f"{p}: header config section 'scheduler' must be a JSON object, got "
                              f"{type(ckpt.scheduler_config).__name__}: {ckpt.scheduler_config!r:.200}")
    if "transformer" in components:
        cfg, options = original_config.transformer_config(f.config_section("transformer"), str(p))
        ckpt.causal_temporal_positioning = options["causal_temporal_positioning"]
        model = build_on_meta(_model_class("transformer"), cfg, ops)
        where = f"{p} [transformer]"
        source = load_fp8_source(model, source_from_files([f], TRANSFORMER_SINGLE_FILE), [f],
                                 [TRANSFORMER_SINGLE_FILE], where, quantization, device, dtype)
        ckpt.transformer = load_strict(model, source, where, device, dtype)
    if "vae" in components:
        cfg = original_config.vae_config(f.config_section("vae"), str(p))
        model = build_on_meta(_model_class("vae"), cfg, ops)
        ckpt.vae = load_strict(model, source_from_files([f], _vae_keymap(cfg)), f"{p} [vae]", device, dtype)
    return ckpt


def transformer_on_meta(path, ops: Ops = TORCH_OPS, section: dict | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """(the transformer built on meta from the config of the diffusers folder or Lightricks single
    file ``path``, the single file's options); no weight is read (a GGUF supplies them).
    ``section``: a Lightricks header's ``transformer`` section to build from instead (a GGUF's own)."""
    p = Path(path) if section is not None else resolve_path(path)
    if section is not None:
        config, options = original_config.transformer_config(section, str(p))
    elif p.is_dir():
        folder = p / "transformer" if os.path.lexists(p / "model_index.json") else p
        config, options = _folder_config(folder, "transformer"), {}
    else:
        with SafetensorsFile(p) as f:
            config, options = original_config.transformer_config(f.config_section("transformer"), str(p))
    return build_on_meta(_model_class("transformer"), config, ops), options


def load_ltx_video(path, device=None, dtype=torch.bfloat16, ops: Ops = TORCH_OPS,
                   components=("transformer", "vae"), quantization: str | None = None) -> LTXVideoCheckpoint:
    """Transformer and VAE from a diffusers pipeline folder (``model_index.json``) or a
    Lightricks single-file checkpoint. ``quantization``: the transformer's fp8 policy (see
    ``load_transformer``)."""
    bad = [c for c in components if c not in ("transformer", "vae")]
    if bad:
        raise ValueError(f"components must be a subset of ('transformer', 'vae'), got {components!r}")
    device, dtype = device_and_dtype(device, dtype)
    p = resolve_path(path)
    if p.is_file():
        return _load_single_file(p, components, device, dtype, ops, quantization)
    return load_pipeline_folder(p, LTXVideoCheckpoint(source=str(p)), components,
                                lambda folder, comp: _load_folder(folder, comp, device, dtype, ops, quantization))
