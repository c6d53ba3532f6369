"""Which Gemma an LTX-2 checkpoint needs, checked before anything loads.

ltx-core (encoder_configurator.py ``_check_gemma_version`` @400fd31; ours:
``text_encoders.check_gemma_version``) compares the checkpoint header's ``gemma_source_checkpoint``
(LTX-2.5: ``{"gemma_version": "gemma4-12b-ltx-v1"}``) with the Gemma config's ``gemma_version``, and
requires Gemma 3 of older checkpoints. The header is the single file's, or the transformer file's
of a split set; a diffusers folder has none (its own ``text_encoder/`` is the one it ships). The
text encoder is a Gemma folder, a text encoder file (``gemma_config`` header), or a loaded
GemmaTextEncoder: its config is read without reading a weight.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .ltx2_text import gemma_source_of
from .safetensors_io import CheckpointError, SafetensorsFile, read_json

__all__ = ["checkpoint_header", "gemma_config_of", "check_text_encoder"]

_KEYS = ("model_version", "gemma_source_checkpoint")


def checkpoint_header(path) -> dict[str, Any] | None:
    """``model_version`` / ``gemma_source_checkpoint`` of a single file or a split set's transformer
    file (None: a diffusers folder, which has no header)."""
    from .ltx2_split_files import find_split_files, is_split_folder
    p = Path(path)
    if p.is_dir():
        if not is_split_folder(p):
            return None
        p = find_split_files(p)["transformer"]
    with SafetensorsFile(p) as f:
        return {k: f.metadata[k] for k in _KEYS if k in f.metadata}


def gemma_config_of(text_encoder) -> tuple[dict[str, Any], str]:
    """(config dict, description) of a Gemma folder, a text encoder file or a GemmaTextEncoder."""
    from ..models.ltx2_text import GemmaTextEncoder
    if isinstance(text_encoder, GemmaTextEncoder):
        return text_encoder.model.config.to_dict(), "text_encoder (a loaded GemmaTextEncoder)"
    p = Path(text_encoder)
    if p.is_file():
        from .ltx2_split_files import GEMMA_CONFIG
        with SafetensorsFile(p) as f:
            raw = f.metadata.get(GEMMA_CONFIG)
        if raw is None:
            raise CheckpointError(f"text_encoder: {p} has no {GEMMA_CONFIG!r} header entry (not a text encoder file)")
        try:
            return json.loads(raw), f"text encoder file {str(p)!r}"
        except json.JSONDecodeError as e:
            raise CheckpointError(f"text_encoder: {p}: header {GEMMA_CONFIG!r} is not valid JSON ({e})") from e
    return read_json(p / "config.json", "Gemma config.json"), f"gemma_dir {str(p)!r}"


def check_text_encoder(path, text_encoder) -> None:
    """The Gemma check for ``Engine.from_pretrained(path, text_encoder=...)``, before any weight is
    read: the given text encoder, else a split set's own text encoder file, against the header."""
    from .ltx2_split_files import find_split_files
    from .text_encoders import check_gemma_version
    header = checkpoint_header(path)
    if header is None:
        return
    if text_encoder is None:
        if not Path(path).is_dir():
            return  # the engine asks for a text encoder by name
        text_encoder = find_split_files(path).get("text_encoder")
        if text_encoder is None:
            return
    config, where = gemma_config_of(text_encoder)
    check_gemma_version({**header, "gemma_source_checkpoint": gemma_source_of(header, str(path))}
                        if "gemma_source_checkpoint" in header else header, config, where)
