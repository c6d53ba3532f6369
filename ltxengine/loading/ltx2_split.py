"""LTX-2.5's per-component files: a folder holding one safetensors file per component.

Lightricks publishes LTX-2.5 as split files (the Lightricks/LTX-2.5 repository's layout), which
ltx-pipelines @400fd31 loads through ``ModelPaths.from_split`` (``--transformer-path``,
``--text-encoder-path``, ``--video-vae-path``, ``--audio-vae-path``). What each file holds, in the
bundle's own key names (ltx-core's key ops: transformer/model_configurator.py, the VAEs'
``*_COMFY_KEYS_FILTER``, encoder_configurator.py ``EMBEDDINGS_PROCESSOR_KEY_OPS``):

- transformer (``diffusion_models/``): the DiT and the text connectors, ``model.diffusion_model.*``;
  the header's ``config``, ``model_version`` and ``gemma_source_checkpoint``.
- text encoder (``text_encoders/gemma4-12b-with-proj-*``): the Gemma weights (ComfyUI's flat names,
  gemma_assets.py ``_flatten_gemma4_unified_keys_for_comfy``), the connectors' Gemma feature
  projection ``text_embedding_projection.*``, the tokenizer as a uint8 tensor ``tokenizer_json``,
  other Hugging Face files as ``hf_asset__<name>`` tensors, the Gemma config in the header's
  ``gemma_config``.
- video VAE (``vae/``): ``encoder.*`` / ``decoder.*`` / ``per_channel_statistics.*`` (ltx-core also takes
  them under ``vae.``), header section ``vae``. Its ``_class_name`` says the decoder's kind: the
  convolutional one (``CausalVideoAutoencoder``, ``ltx-2.5-video-vae-conv-bf16``) loads here; the
  diffusion decoder file (``ltx-2.5-video-vae-bf16``) is named as such and refused.
- audio VAE (``vae/``): ``audio_vae.*`` and the vocoder's ``vocoder.*``, sections ``audio_vae`` and ``vocoder``.

Other files in the folder (upscalers, LoRAs, the duration head) are not components of the set and
are left alone. Every file of the set loads strictly: each tensor belongs to a component of its
file's kind, each model tensor comes from the files.
"""

from __future__ import annotations

import importlib
import json
from typing import Any

import torch
import torch.nn as nn

from .components import build_on_meta, load_fp8_source, source_from_files
from .keymaps import KeyMap
from .ltx2_split_files import GEMMA_CONFIG, ROLES, TOKENIZER_JSON, find_split_files, is_split_folder
from .ltx2_text import gemma_source_of
from .ltx2_vae import KEYMAP_VAE_FILE
from .safetensors_io import CheckpointError, SafetensorsFile
from .strict import load_strict

# find_split_files / is_split_folder: ltx2_split_files.py (which ltx2.is_ltx2 reads too)
__all__ = ["ROLES", "find_split_files", "is_split_folder", "load_split_folder", "load_split", "load_gemma_file",
           "gemma_hf_key"]

# The components each file of the set holds (the connectors: the transformer file, plus the text
# encoder file's Gemma projection).
ROLE_COMPONENTS = {"transformer": ("transformer", "connectors"), "text_encoder": (), "video_vae": ("vae",),
                   "audio_vae": ("audio_vae", "vocoder")}
_COMPONENT_ROLE = {c: role for role, cs in ROLE_COMPONENTS.items() for c in cs}
HF_ASSET = "hf_asset__"  # HF_ASSET_TENSOR_PREFIX
PROJECTION = "text_embedding_projection."


def _ref(ref: str) -> Any:
    module, _, name = ref.partition(":")
    return getattr(importlib.import_module(module), name)


def load_split_folder(path, device=None, dtype=torch.bfloat16, ops=None, quantization=None, modalities=None,
                      components=None):
    """``ltx2.load_ltx2``'s call for a folder of per-component files (both streams only:
    ``modalities``, when given, must name both)."""
    from ..ops import TORCH_OPS
    from .components import device_and_dtype
    from .ltx2 import COMPONENTS, LTX2Checkpoint
    if modalities is not None and tuple(modalities) != ("video", "audio"):
        raise ValueError(f"modalities: {path} is a set of per-component files, which loads both streams, got "
                         f"modalities={modalities!r}")
    device, dtype = device_and_dtype(device, dtype)
    return load_split(path, LTX2Checkpoint(source=str(path)), tuple(components or COMPONENTS), device, dtype,
                      TORCH_OPS if ops is None else ops, quantization)


# -- the components --------------------------------------------------------------------------

def _keymaps(name: str, f: SafetensorsFile) -> list:
    from .ltx2 import component_keymaps
    if name == "vae" and not any(k.startswith("vae.") for k in f.keys()):
        return [KEYMAP_VAE_FILE]  # bare keys: the split file's own spelling
    return component_keymaps(name)


def _check_claimed(role: str, f: SafetensorsFile, maps: dict[str, list]) -> None:
    """Every tensor of a split file belongs to a component of its kind (the text encoder file: its
    Gemma weights, tokenizer and assets are the Gemma loader's)."""
    from .ltx2 import keymap_claims
    if role == "text_encoder":
        maps = {"connectors": maps["connectors"]}
    claimed = [m for name in ROLE_COMPONENTS[role] or ("connectors",) for m in maps[name]]
    foreign = [k for k in f.keys() if not any(keymap_claims(m, k) for m in claimed)]
    if role == "text_encoder":
        foreign = [k for k in foreign if k.startswith(PROJECTION)]
    if foreign:
        shown = ", ".join(repr(k) for k in foreign[:8])
        raise CheckpointError(f"{f.path}: {len(foreign)} tensors belong to no component of this "
                              f"{role.replace('_', ' ')} file: {shown}")


def _source(name: str, files: list[SafetensorsFile], maps: list[KeyMap]) -> dict:
    source: dict = {}
    for m in maps:
        for key, value in source_from_files(files, m).items():
            if key in source:
                raise CheckpointError(f"two tensors map to {key!r}: {source[key][2]} and {value[2]}")
            source[key] = value
    return source


def load_split(folder, ckpt, components, device, dtype, ops, quantization=None):
    """Fill ``ckpt`` (an LTX2Checkpoint) with ``components`` from the split set in ``folder``;
    ``ckpt.extras["split_files"]`` records role -> file; model_version and gemma_source_checkpoint
    come from the transformer file's header."""
    from .ltx2 import COMPONENT_SPECS, component_keymaps
    paths = find_split_files(folder)
    needed = {_COMPONENT_ROLE[c] for c in components} | ({"text_encoder"} if "connectors" in components else set())
    missing = sorted(needed - set(paths))
    if missing:
        wanted = [c for c in components if _COMPONENT_ROLE[c] == missing[0]] or ["connectors"]
        raise CheckpointError(f"{folder}: no {missing[0].replace('_', ' ')} file among its safetensors files (needed "
                              f"for the {', '.join(wanted)})")
    files = {role: SafetensorsFile(p) for role, p in paths.items()}
    try:
        maps = {name: component_keymaps(name) for name in COMPONENT_SPECS}
        for role, f in files.items():
            if role == "video_vae":
                maps["vae"] = _keymaps("vae", f)
            _check_claimed(role, f, maps)
        tf = files["transformer"]
        ckpt.model_version = tf.metadata.get("model_version")
        ckpt.extras["split_files"] = dict(paths)
        ckpt.gemma_source_checkpoint = gemma_source_of(tf.metadata, str(tf.path))
        for name in components:
            f = files[_COMPONENT_ROLE[name]]
            readers = [f, files["text_encoder"]] if name == "connectors" else [f]
            model = _component(name, f, readers, maps[name], device, dtype, ops, quantization)
            setattr(ckpt, name, model)
    finally:
        for f in files.values():
            f.close()
    return ckpt


def _component(name, f, readers, maps, device, dtype, ops, quantization) -> nn.Module:
    from .ltx2 import COMPONENT_SPECS
    spec = COMPONENT_SPECS[name]
    section = f.config_section(spec.section)
    convert = _ref(spec.from_original)
    if name == "connectors":
        config = convert(section, str(f.path), **_gemma_input(section, readers[-1]))
    else:
        config = convert(section, str(f.path))
    model = build_on_meta(_ref(spec.model), config, ops)
    where, source = f"{f.path} [{name}]", _source(name, readers, maps)
    if name == "transformer":
        source = load_fp8_source(model, source, [f], maps, where, quantization, device, dtype)
    return load_strict(model, source, where, device, dtype)


_V1_PROJECTION = PROJECTION + "aggregate_embed.weight"  # 2.0's feature extractor V1
_V2_PROJECTION = PROJECTION + "video_aggregate_embed.weight"  # 2.3+: V2, per modality


def _gemma_input(section: dict, f: SafetensorsFile) -> dict[str, int]:
    """The connectors' Gemma input from the projection in the text encoder file ``f``, as the bundle
    loader reads it from the bundle: V1's shape gives the hidden-state count (width: the header's
    caption_channels); V2's input width over the header's caption_channels (else Gemma-3-12B's 3840,
    ltx-core's default; the 2.5 header names Gemma 4's width there) gives the count."""
    from .ltx2_text import GEMMA_HIDDEN_SIZE
    keys = f.keys()
    if _V1_PROJECTION in keys:
        width, in_features = f.shape(_V1_PROJECTION)
        if in_features % width:
            raise CheckpointError(f"{f.path}: {_V1_PROJECTION!r} has {in_features} input features, which must be a "
                                  f"multiple of its width {width}")
        return {"text_proj_in_factor": in_features // width}
    if _V2_PROJECTION not in keys:
        raise CheckpointError(f"{f.path}: no {_V1_PROJECTION!r} or {_V2_PROJECTION!r} (the Gemma feature projection "
                              "a text encoder file carries for the connectors)")
    width, in_features = section.get("caption_channels", GEMMA_HIDDEN_SIZE), f.shape(_V2_PROJECTION)[1]
    if not isinstance(width, int) or isinstance(width, bool) or width <= 0 or in_features % width:
        raise CheckpointError(f"{f.path}: {_V2_PROJECTION!r} has {in_features} input features, which must be a "
                              f"multiple of the Gemma width (header transformer.caption_channels) {width!r}")
    return {"text_proj_in_factor": in_features // width, "caption_channels": width}


# -- the Gemma of the text encoder file ------------------------------------------------------

# ComfyUI's flat names of a Gemma 4 unified checkpoint -> the Hugging Face checkpoint's (the inverse
# of gemma_assets.py _flatten_gemma4_unified_keys_for_comfy @400fd31); other keys are HF names already.
_FLAT_TO_HF = (("model.layers.", "model.language_model.layers."),
               ("model.embed_tokens.", "model.language_model.embed_tokens."),
               ("model.norm.", "model.language_model.norm."),
               ("vision_model.", "model.vision_embedder."), ("multi_modal_projector.", "model.embed_vision."),
               ("audio_projector.", "model.embed_audio."))
# What the text encoder files hold: Gemma 4 unified (2.5); ltx-core packs Gemma 3 roots as they are.
_TE_CLASSES = {"gemma4_unified": "Gemma4UnifiedForConditionalGeneration", "gemma3": "Gemma3ForConditionalGeneration"}
# tokenizer_config.json entries that are not PreTrainedTokenizerFast arguments (gemma_assets.py
# _TOKENIZER_CONFIG_SKIP).
_TOKENIZER_SKIP = {"tokenizer_class", "auto_map", "model_max_length", "backend", "is_local", "local_files_only",
                   "processor_class", "added_tokens_decoder"}


def gemma_hf_key(key: str, model_type: str) -> str:
    """A text encoder file's Gemma key -> the Hugging Face checkpoint key transformers loads."""
    if model_type == "gemma4_unified":
        for flat, hf in _FLAT_TO_HF:
            if key.startswith(flat):
                return hf + key[len(flat):]
    return key


def _gemma_config(f: SafetensorsFile) -> dict:
    raw = f.metadata.get(GEMMA_CONFIG)
    if raw is None:
        raise CheckpointError(f"{f.path}: no {GEMMA_CONFIG!r} entry in the header (the Gemma config of a text "
                              "encoder file)")
    try:
        config = json.loads(raw)
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f.path}: header {GEMMA_CONFIG!r} is not valid JSON ({e})") from e
    if not isinstance(config, dict) or config.get("model_type") not in _TE_CLASSES:
        got = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise CheckpointError(f"{f.path}: header {GEMMA_CONFIG!r} must be a Gemma config with model_type one of "
                              f"{sorted(_TE_CLASSES)}, got {got!r}")
    if "auto_map" in json.dumps(config):
        raise CheckpointError(f"{f.path}: header {GEMMA_CONFIG!r} sets 'auto_map' (code shipped with the "
                              "checkpoint); ltxengine never runs code from a checkpoint")
    return config


def _bytes(f: SafetensorsFile, key: str) -> bytes:
    t = f.read(key)
    if t.dtype not in (torch.uint8, torch.int8) or t.ndim != 1:
        raise CheckpointError(f"{f.path}: {key!r} must be a 1-D uint8 tensor of file bytes, got {tuple(t.shape)} "
                              f"{t.dtype}")
    return t.view(torch.uint8).numpy().tobytes()


def _tokenizer(f: SafetensorsFile):
    """The tokenizer the file embeds, built as ltx-core's build_gemma_hf_tokenizer builds it."""
    import tokenizers
    import transformers
    if TOKENIZER_JSON not in f.keys():
        raise CheckpointError(f"{f.path}: no {TOKENIZER_JSON!r} tensor (the tokenizer of a text encoder file)")
    key = HF_ASSET + "tokenizer_config.json"
    if key in f.keys():
        raw = _bytes(f, key).decode("utf-8")
    elif "tokenizer_config.json" in f.metadata:
        raw = f.metadata["tokenizer_config.json"]
    else:
        raise CheckpointError(f"{f.path}: no {key!r} tensor (or header entry 'tokenizer_config.json')")
    try:
        config = json.loads(raw)
        tok = tokenizers.Tokenizer.from_str(_bytes(f, TOKENIZER_JSON).decode("utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError, Exception) as e:  # tokenizers raises plain Exception
        raise CheckpointError(f"{f.path}: cannot build the embedded tokenizer ({type(e).__name__}: {e})") from e
    kwargs = {k: v for k, v in config.items() if k not in _TOKENIZER_SKIP}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=1024, **kwargs)


def load_gemma_file(path, device="cpu", dtype=torch.bfloat16, connectors=None, checkpoint_metadata=None):
    """The GemmaTextEncoder of a text encoder file (Gemma + tokenizer), strictly: every Gemma
    tensor of the file used, none missing (``text_embedding_projection.*`` is the connectors', the
    tokenizer and ``hf_asset__*`` tensors are files). ``checkpoint_metadata``: the transformer
    file's header; the Gemma must be the one it names (checked before any weight is read)."""
    import transformers

    from ..models.ltx2_text import GemmaTextEncoder
    from .text_encoders import check_gemma_version, dtype_kwarg, load_model_from_tensors
    with SafetensorsFile(path) as f:
        config = _gemma_config(f)
        if checkpoint_metadata is not None:
            check_gemma_version(checkpoint_metadata, config, f"text encoder file {str(f.path)!r}")
        tokenizer = _tokenizer(f)
        model_type = config["model_type"]
        skip = (PROJECTION, HF_ASSET)
        keys = [k for k in f.keys() if not k.startswith(skip) and k != TOKENIZER_JSON]
        bad = [k for k in keys if not f.dtype(k).startswith(("F", "BF"))]
        if bad:
            raise CheckpointError(f"{f.path}: Gemma tensors must be floating point, got {bad[0]!r} ({f.dtype(bad[0])})")
        state = {gemma_hf_key(k, model_type): f.read(k) for k in keys}
    hf_config = transformers.CONFIG_MAPPING[model_type].from_dict(config)
    model_cls = getattr(transformers, _TE_CLASSES[model_type])
    model = load_model_from_tensors(model_cls, hf_config, state, str(path), "Gemma", **{dtype_kwarg(): dtype})
    return GemmaTextEncoder(model.to(device).eval().requires_grad_(False), tokenizer, connectors)
