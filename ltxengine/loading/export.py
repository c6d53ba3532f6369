"""Writing models as diffusers folders (config.json + diffusion_pytorch_model.safetensors)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch.nn as nn
from safetensors.torch import save_file

from ..config import LatentUpsamplerConfig, TransformerConfig, VideoVAEConfig

_CLASS_NAMES = {TransformerConfig: "LTXVideoTransformer3DModel", VideoVAEConfig: "AutoencoderKLLTXVideo",
                LatentUpsamplerConfig: "LTXLatentUpsamplerModel"}


def save_component(model: nn.Module, folder) -> Path:
    """``model`` must carry its config as ``model.config`` (every ltxengine model does)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cfg = model.config
    data = {"_class_name": _CLASS_NAMES[type(cfg)], **dataclasses.asdict(cfg)}
    (folder / "config.json").write_text(json.dumps(data, indent=2))
    tensors = {k: _owning(v) for k, v in model.state_dict().items()}
    save_file(tensors, str(folder / "diffusion_pytorch_model.safetensors"))
    return folder


def _owning(t):
    """``t`` on the host, a copy where it shares its storage: safetensors refuses to save tensors that
    share memory, as the attention projections packed at load do (models/packing.py)."""
    t = t.detach().contiguous().cpu()
    return t if t.untyped_storage().nbytes() == t.nbytes else t.clone()


def save_pipeline(folder, **components: nn.Module) -> Path:
    """A diffusers pipeline folder: model_index.json plus one subfolder per component."""
    folder = Path(folder)
    index = {"_class_name": "LTXPipeline"}
    for name, model in components.items():
        save_component(model, folder / name)
        index[name] = ["diffusers", _CLASS_NAMES[type(model.config)]]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return folder
