"""Machinery both checkpoint loaders share (LTX-Video's ``checkpoints`` and LTX-2's ``ltx2``):
argument checks, building a model on the meta device, finding a component folder's weight files,
turning files into a keyed tensor source, fp8 preparation and filling a pipeline folder."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ..ops import Ops
from .keymaps import KeyMap
from .safetensors_io import CheckpointError, SafetensorsFile, check_regular_file, read_json
from .strict import TensorSource

# a diffusers component folder's weights: this file, or its shards with an index beside them
WEIGHTS = "diffusion_pytorch_model.safetensors"


def device_and_dtype(device, dtype) -> tuple[torch.device, torch.dtype]:
    """The load target: ``device`` (None: the CPU) and ``dtype``, one of the three float types."""
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"dtype must be torch.float32, torch.bfloat16 or torch.float16, got {dtype!r}")
    return torch.device(device if device is not None else "cpu"), dtype


def resolve_path(path) -> Path:
    """A checkpoint path that is a folder or a regular file (a FIFO or device would block or never
    end; a symlink loop or dangling link is named as such)."""
    p = Path(path).expanduser()
    if not os.path.lexists(p):
        raise CheckpointError(f"{p}: no such file or folder")
    if not p.is_dir():
        check_regular_file(p, "checkpoint path")
    return p


def build_on_meta(cls, config, ops: Ops) -> nn.Module:
    """``cls(config, ops=ops)`` with no storage: load_strict assigns the checkpoint's tensors."""
    with torch.device("meta"):
        return cls(config, ops=ops)


def source_from_files(files: list[SafetensorsFile], keymap: KeyMap) -> TensorSource:
    """Model key -> (shape, reader, description, dtype) for every tensor ``keymap`` maps; two
    tensors mapping to one model key are refused."""
    source: TensorSource = {}
    for f in files:
        for key in f.keys():
            model_key = keymap.apply(key)
            if model_key is None:
                continue
            desc = f"{key!r} in {f.path}"
            if model_key in source:
                raise CheckpointError(f"{f.path}: tensor {key!r} maps to {model_key!r}, which "
                                      f"{source[model_key][2]} already provides")
            source[model_key] = (f.shape(key), (lambda d, t, f=f, k=key: f.read(k, d, t)), desc, f.dtype(key))
    return source


def component_files(folder: Path) -> list[SafetensorsFile]:
    """A diffusers component folder's weight file, or its shards checked against their index."""
    single = folder / WEIGHTS
    index = folder / (WEIGHTS + ".index.json")
    if os.path.lexists(single):  # a FIFO, device or symlink loop here is refused by name, not skipped
        return [SafetensorsFile(single)]
    if os.path.lexists(index):
        weight_map = read_json(index, "sharded-weights index").get("weight_map")
        if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
            raise CheckpointError(f"{index}: no 'weight_map' object mapping tensor names to shard file names")
        shards = [SafetensorsFile(folder / name) for name in sorted(set(weight_map.values()))]
        for f in shards:
            for key in f.keys():
                if weight_map.get(key) != f.path.name:
                    raise CheckpointError(f"{f.path}: tensor {key!r} is not listed for this shard in {index}")
        return shards
    found = sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []
    raise CheckpointError(f"{folder}: no {WEIGHTS} (or sharded index) found; folder holds {found}")


def load_fp8_source(model, source: TensorSource, files, keymaps, where: str, quantization, device, dtype):
    """The transformer's source adapted to its fp8 layers (see fp8_formats); ``model.quantization``
    records the policy in force (None: full precision)."""
    from .fp8_formats import header_layers, prepare_fp8
    return prepare_fp8(model, source, where, quantization=quantization, device=device, dtype=dtype,
                       header_tags=header_layers(files, keymaps))


def load_pipeline_folder(p: Path, ckpt, components, load_one):
    """Fill ``ckpt`` from a diffusers pipeline folder: each component from its subfolder
    (``load_one(folder, name)``), the scheduler config when there is one."""
    index = read_json(p / "model_index.json", "diffusers model_index.json")
    for comp in components:
        if comp not in index:
            raise CheckpointError(f"{p / 'model_index.json'}: no {comp!r} entry")
        setattr(ckpt, comp, load_one(p / comp, comp))
    sched = p / "scheduler" / "scheduler_config.json"
    ckpt.scheduler_config = read_json(sched, "scheduler config") if os.path.lexists(sched) else None
    return ckpt
