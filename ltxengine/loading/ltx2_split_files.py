"""Which safetensors file of a folder is which component of LTX-2.5's per-component files (see
ltx2_split.py, which loads them): read from keys and headers only, so ``ltx2.is_ltx2`` can recognise
such a folder without importing the loader."""

from __future__ import annotations

import json
from pathlib import Path

from .safetensors_io import CheckpointError, SafetensorsFile

__all__ = ["ROLES", "GEMMA_CONFIG", "TOKENIZER_JSON", "file_role", "find_split_files", "is_split_folder"]

ROLES = ("transformer", "text_encoder", "video_vae", "audio_vae")
_CONV_VAE = "CausalVideoAutoencoder"  # ltx-core's _CONV_VAE_CLASS_NAME; anything else is a diffusion decoder
GEMMA_CONFIG = "gemma_config"  # gemma_assets.py GEMMA_CONFIG_METADATA_KEY
TOKENIZER_JSON = "tokenizer_json"  # TOKENIZER_JSON_TENSOR_KEY
_UPSCALER_KEYS = {"initial_conv.weight", "final_conv.weight"}  # ltx-core's LatentUpsampler


def file_role(f: SafetensorsFile) -> str | None:
    """The split-set role of a file from its keys and header, "diffusion_video_vae" for the 2.5
    diffusion-decoder VAE, "latent_upsampler" for an upscaler (ltx2_upsamplers reads its kind),
    "bundle" for a single-file checkpoint, None for anything else."""
    keys = f.keys()
    if _UPSCALER_KEYS <= set(keys):  # its own unprefixed names, which no other file of a set has
        return "latent_upsampler"
    roles = set()
    if GEMMA_CONFIG in f.metadata or TOKENIZER_JSON in keys:
        roles.add("text_encoder")
    if any(k.startswith("model.diffusion_model.") for k in keys):
        roles.add("transformer")
    if any(k.startswith("audio_vae.") for k in keys):
        roles.add("audio_vae")
    if any(k.startswith(("encoder.", "decoder.", "per_channel_statistics.", "vae.")) for k in keys):
        roles.add("video_vae")
    if len(roles) > 1:
        return "bundle" if {"transformer", "audio_vae"} <= roles else None
    role = roles.pop() if roles else None
    if role == "video_vae" and _vae_class(f) != _CONV_VAE:
        return "diffusion_video_vae"
    return role


def _vae_class(f: SafetensorsFile) -> str:
    raw = f.metadata.get("config")
    try:
        section = json.loads(raw).get("vae", {}) if raw else {}
    except (json.JSONDecodeError, AttributeError):
        return _CONV_VAE  # config_section() names the bad header when the VAE loads
    return section.get("_class_name", _CONV_VAE) if isinstance(section, dict) else _CONV_VAE


def find_split_files(folder) -> dict[str, Path]:
    """role -> file for the split set in ``folder`` (its ``*.safetensors`` files, one level of
    subfolders deep as the published layout has them). The transformer is required; a role with two
    candidate files, a bundle among them, or only the diffusion-decoder VAE is refused by name."""
    folder = Path(folder)
    found: dict[str, list[Path]] = {}
    for path in sorted([*folder.glob("*.safetensors"), *folder.glob("*/*.safetensors")]):
        with SafetensorsFile(path) as f:
            found.setdefault(file_role(f), []).append(path)
    if "bundle" in found:
        raise CheckpointError(f"{folder}: {found['bundle'][0]} is a single-file LTX-2 checkpoint, not a component "
                              "file; load it by its path")
    for role in ROLES:
        if len(found.get(role, ())) > 1:
            names = ", ".join(str(p.relative_to(folder)) for p in found[role])
            raise CheckpointError(f"{folder}: more than one {role.replace('_', ' ')} file ({names}); keep one per "
                                  "component in the folder (e.g. the dev or the distilled transformer)")
    if "transformer" not in found:
        raise CheckpointError(f"{folder}: no transformer file (model.diffusion_model.* tensors) among its "
                              "safetensors files")
    if "video_vae" not in found and "diffusion_video_vae" in found:
        name = found["diffusion_video_vae"][0].relative_to(folder)
        raise CheckpointError(f"{folder}: {name} is the diffusion-decoder video VAE (config.vae._class_name != "
                              f"{_CONV_VAE!r}), which ltxengine does not load from a file; use the convolutional one "
                              "(ltx-2.5-video-vae-conv-bf16.safetensors)")
    return {role: found[role][0] for role in ROLES if role in found}


def is_split_folder(path) -> bool:
    """A folder (no ``model_index.json``) whose safetensors files include a split transformer file."""
    p = Path(path)
    if not p.is_dir() or (p / "model_index.json").exists():
        return False
    for file in [*p.glob("*.safetensors"), *p.glob("*/*.safetensors")]:
        try:
            with SafetensorsFile(file) as f:
                if file_role(f) == "transformer":
                    return True
        except CheckpointError:
            continue
    return False
