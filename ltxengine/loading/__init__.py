"""Checkpoint loading: diffusers folders and Lightricks single-file safetensors.

Models are built on the meta device from the checkpoint's own config and filled strictly from
the file(s): tensors stream to ``device`` in ``dtype`` one at a time.
"""

from .checkpoints import (
    LTXVideoCheckpoint,
    load_latent_upsampler,
    load_ltx_video,
    load_transformer,
    load_vae,
)
from .lora import LoraError, LoraSet, LoraWeights
from .ltx2 import LTX2Checkpoint, is_ltx2, load_ltx2, load_ltx2_component
from .safetensors_io import CheckpointError, SafetensorsFile

__all__ = [
    "CheckpointError",
    "LTX2Checkpoint",
    "LTXVideoCheckpoint",
    "LoraError",
    "LoraSet",
    "LoraWeights",
    "SafetensorsFile",
    "is_ltx2",
    "load_latent_upsampler",
    "load_ltx2",
    "load_ltx2_component",
    "load_ltx_video",
    "load_transformer",
    "load_vae",
]
