"""GGUF transformers (city96's LTX-Video GGUFs, LTX-2 GGUFs): loaded strictly, kept quantized.

A GGUF holds the DiT alone, under the Lightricks / ComfyUI single-file names without the
``model.diffusion_model.`` prefix (ComfyUI-GGUF's converter strips it; a file that keeps it is
read too); the family's single-file key map renames them. The transformer's config is the GGUF's
own when it carries a Lightricks header config as its ``config`` string metadata (ComfyUI-GGUF
hands a GGUF's string metadata to ComfyUI, which reads LTX-2's config from it), else that of
``components``; every other component (VAE, text encoder, LTX-2's connectors and audio models,
scheduler) comes from ``components``: a diffusers folder (its ``transformer/config.json`` is read
when needed, its transformer weights never) or a Lightricks single file (its header config; its
transformer tensors are not read).

Every linear layer the file stores in a quant type becomes a ``GGUFLinear`` (the blocks stay on
the device and are dequantized per call); everything else (F32/F16/BF16 tensors, and any
quantized non-linear tensor) is dequantized at load into the model dtype. Strict as every other
format: each model tensor must come from the file with its shape, each file tensor must be used.
"""

from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..quant.gguf_linear import GGUFLinear
from .components import resolve_path
from .gguf import GGUFFile, is_gguf, transformer_section
from .keymaps import TRANSFORMER_SINGLE_FILE, KeyMap
from .safetensors_io import CheckpointError
from .strict import TensorSource, load_strict

_ORIG_SHAPE = "comfy.gguf.orig_shape."  # ComfyUI-GGUF: a tensor reshaped to fit ggml's rows


def gguf_base(gguf_path: Path, components, quantization) -> Path:
    """The checkpoint that supplies the config and the other components of ``gguf_path``'s
    transformer; named errors before any weight is read."""
    if quantization is not None:
        raise ValueError(f"quantization: {gguf_path} is a GGUF checkpoint, whose linear weights keep the file's "
                         f"quant types; quantization must be None, got {quantization!r}")
    if components is None:
        raise ValueError(f"components: {gguf_path} is a GGUF file holding the transformer alone; pass "
                         f"components=PATH, a diffusers folder or Lightricks single file with its config and the "
                         f"VAE, text-encoder and other components")
    base = resolve_path(components)
    if base.is_file() and is_gguf(base):
        raise ValueError(f"components: must be a diffusers folder or a .safetensors single file, got the GGUF {base}")
    return base


def gguf_keymap(f: GGUFFile, keymap: KeyMap) -> KeyMap:
    """``keymap`` (a single-file map) as it applies to the file's names: with its prefix when every
    name carries it, else without."""
    names = list(f.tensors)
    if names and all(n.startswith(keymap.prefix) for n in names):
        return keymap
    return KeyMap(prefix="", renames=keymap.renames, drop=keymap.drop)


def gguf_source(f: GGUFFile, keymap: KeyMap) -> TensorSource:
    """Model key -> (shape, reader, description, stored type): values, dequantized when read."""
    source: TensorSource = {}
    for name, t in f.tensors.items():
        key = keymap.apply(name)
        if key is None:
            continue
        if key in source:
            raise CheckpointError(f"{f.path}: tensor {name!r} maps to {key!r}, which {source[key][2]} already "
                                  "provides")
        shape = tuple(f.metadata.get(_ORIG_SHAPE + name, t.shape))

        def read(device, dtype, name=name, shape=shape):
            return f.read(name, device, dtype).reshape(shape)
        source[key] = (shape, read, f"{name!r} ({t.type.name}) in {f.path}", "F32")
    return source


def keep_quantized(model: nn.Module, f: GGUFFile, source: TensorSource, names: dict[str, str], where: str) -> None:
    """Swap each linear whose weight the file stores quantized for a GGUFLinear of that type (the
    meta model), and point its weight entry at the raw blocks. ``names``: model key -> file name."""
    for layer, module in list(model.named_modules()):
        key = f"{layer}.weight"
        if not isinstance(module, nn.Linear) or key not in source or not f.tensors[names[key]].quantized:
            continue
        t = f.tensors[names[key]]
        if tuple(source[key][0]) != tuple(module.weight.shape):
            raise CheckpointError(f"{where}: tensor {source[key][2]} has shape {tuple(source[key][0])}, the model "
                                  f"expects {tuple(module.weight.shape)} for {key!r}")
        parent, _, attr = layer.rpartition(".")
        replacement = GGUFLinear.from_linear(module, t.type.id)
        setattr(model.get_submodule(parent) if parent else model, attr, replacement)
        source[key] = (tuple(replacement.weight.shape), lambda device, _dtype, n=t.name: f.raw(n, device),
                       source[key][2], "U8")


def load_transformer_gguf(model: nn.Module, path: Path, keymap: KeyMap, device, dtype,
                          owns=None) -> nn.Module:
    """Fill the meta ``model`` from the GGUF at ``path`` (``keymap``: the family's single-file map;
    ``owns``: an audio-only model's filter of the keys it reads). Sets ``model.quantization = "gguf"``."""
    f = GGUFFile(path)
    keymap = gguf_keymap(f, keymap)
    names = {keymap.apply(n): n for n in f.tensors if keymap.apply(n) is not None}
    source = gguf_source(f, keymap)
    if owns is not None:
        source = {k: v for k, v in source.items() if owns(k)}
    where = f"{path} [transformer]"
    keep_quantized(model, f, source, names, where)
    model = load_strict(model, source, where, device, dtype)
    model.quantization = "gguf"
    return model


# -- the families: config from the GGUF or ``components``, the rest of the checkpoint from there --

def _own_section(gguf: Path) -> dict | None:
    with GGUFFile(gguf) as f:
        return transformer_section(f)


def load_ltx_video_gguf(gguf: Path, base: Path, device, dtype, ops):
    """An LTXVideoCheckpoint: the VAE (and scheduler config) from ``base``, the transformer from ``gguf``."""
    from .checkpoints import load_ltx_video, transformer_on_meta
    ckpt = load_ltx_video(base, device=device, dtype=dtype, ops=ops, components=("vae",))
    section = _own_section(gguf)
    model, options = transformer_on_meta(base if section is None else gguf, ops, section=section)
    ckpt.causal_temporal_positioning = options.get("causal_temporal_positioning", False)
    ckpt.transformer = load_transformer_gguf(model, gguf, TRANSFORMER_SINGLE_FILE, device, dtype)
    ckpt.source = f"{gguf} + {base}"
    return ckpt


def load_ltx2_gguf(gguf: Path, base: Path, device, dtype, ops, modalities):
    """An LTX2Checkpoint: every component but the transformer from ``base``, the transformer from ``gguf``."""
    from .ltx2 import COMPONENTS, load_ltx2, transformer_on_meta
    from .ltx2_split_files import is_split_folder
    from .ltx2_transformer import KEYMAP
    if is_split_folder(base):
        raise ValueError(f"components: {base} is a folder of LTX-2.5 per-component files; a GGUF transformer takes "
                         "its other components from a diffusers folder or a Lightricks single file")
    others = tuple(c for c in COMPONENTS if c != "transformer" and not (modalities == ("audio",) and c == "vae"))
    ckpt = load_ltx2(base, device=device, dtype=dtype, ops=ops, components=others, modalities=modalities)
    section = _own_section(gguf)
    model = transformer_on_meta(base if section is None else gguf, ops, modalities, section=section)
    ckpt.transformer = load_transformer_gguf(model, gguf, KEYMAP, device, dtype, getattr(model, "owns", None))
    ckpt.source = f"{gguf} + {base}"
    return ckpt


__all__ = ["gguf_base", "gguf_keymap", "gguf_source", "keep_quantized", "load_transformer_gguf",
           "load_ltx_video_gguf", "load_ltx2_gguf"]
