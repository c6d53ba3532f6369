"""Reading safetensors checkpoints: one tensor at a time, straight to the target device/dtype.

safetensors memory-maps the file, so a tensor is read from disk only when asked for and is cast
on its way to the device: the host never holds an fp32 copy of the model. Every failure names
the file (and the key where there is one).
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded exactly: missing, corrupt or not matching the model."""


class SafetensorsFile:
    """An open .safetensors file. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.is_file():
            raise CheckpointError(f"{self.path}: no such checkpoint file")
        try:
            self._f = safe_open(str(self.path), framework="pt", device="cpu")
            self._keys = list(self._f.keys())
            self.metadata = self._f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise CheckpointError(f"{self.path}: not a readable safetensors file ({e})") from e

    def keys(self) -> list[str]:
        return self._keys

    def shape(self, key: str) -> tuple[int, ...]:
        return tuple(self._f.get_slice(key).get_shape())

    def dtype(self, key: str) -> str:
        """The stored dtype as safetensors names it ("BF16", "F32", "F8_E4M3", ...)."""
        return self._f.get_slice(key).get_dtype()

    def read(self, key: str, device=None, dtype: torch.dtype | None = None) -> torch.Tensor:
        try:
            t = self._f.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{self.path}: cannot read tensor {key!r} ({e})") from e
        if dtype is not None and t.is_floating_point():
            t = t.to(device=device, dtype=dtype)
        elif device is not None:
            t = t.to(device=device)
        return t

    @functools.cached_property
    def _config(self) -> dict:
        raw = self.metadata.get("config")
        if raw is None:
            raise CheckpointError(f"{self.path}: no 'config' entry in the safetensors header; "
                                  "not a Lightricks single-file checkpoint")
        try:
            return json.loads(raw)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{self.path}: header 'config' is not valid JSON ({e})") from e

    def config_section(self, section: str | None = None) -> dict:
        """The JSON ``config`` of the header (Lightricks single-file format), or one section of it.
        The JSON is parsed once per file."""
        config = self._config
        if section is None:
            return config
        if section not in config:
            raise CheckpointError(f"{self.path}: header config has no {section!r} section "
                                  f"(sections: {sorted(config)})")
        return config[section]

    def close(self) -> None:
        self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing {what}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({e})") from e
