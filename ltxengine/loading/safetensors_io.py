"""Reading safetensors checkpoints: one tensor at a time, straight to the target device/dtype.

safetensors memory-maps the file, so a tensor is read from disk only when asked for and is cast
on its way to the device: the host never holds an fp32 copy of the model. Every failure names
the file (and the key where there is one).
"""

from __future__ import annotations

import errno
import functools
import json
import os
import stat
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded exactly: missing, corrupt or not matching the model."""


_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def file_problem(path: Path) -> str | None:
    """Why ``path`` is not a regular file one can read a checkpoint from (missing, a symlink loop, a
    dangling symlink, a folder, a FIFO or device, whose reads would block or never end), or None."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:
        if e.errno == errno.ELOOP:
            return "is a symlink loop"
        if e.errno == errno.ENOENT and os.path.islink(path):
            return f"is a dangling symlink (to {os.readlink(path)!r}, which does not exist)"
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return "does not exist"
        return f"cannot be read ({e.strerror})"
    if stat.S_ISREG(mode):
        return None
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return f"is {kind}, not a regular file"


def check_regular_file(path: Path, what: str) -> None:
    problem = file_problem(path)
    if problem is not None:
        raise CheckpointError(f"{path}: {what} {problem}")


class SafetensorsFile:
    """An open .safetensors file. Use as a context manager or call close()."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not os.path.lexists(self.path):
            raise CheckpointError(f"{self.path}: no such checkpoint file")
        check_regular_file(self.path, "checkpoint file")
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
        """The tensor, cast to ``dtype`` when given: a weight, which an integer or bool tensor
        cannot be (a cast would silently make quantized or corrupt data look valid)."""
        if dtype is not None and not is_float_dtype(self.dtype(key)):
            raise CheckpointError(f"{self.path}: tensor {key!r} is stored as {self.dtype(key)}; a weight must be "
                                  "a floating-point tensor")
        try:
            t = self._f.get_tensor(key)
        except (SafetensorError, OSError, ValueError, RuntimeError) as e:
            raise CheckpointError(f"{self.path}: cannot read tensor {key!r} ({e})") from e
        if dtype is not None:
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
            config = json.loads(raw)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{self.path}: header 'config' is not valid JSON ({e})") from e
        if not isinstance(config, dict):
            raise CheckpointError(f"{self.path}: header 'config' must be a JSON object, got "
                                  f"{type(config).__name__}: {raw:.200}")
        return config

    def config_section(self, section: str | None = None) -> dict:
        """The JSON ``config`` of the header (Lightricks single-file format), or one section of it.
        The JSON is parsed once per file."""
        config = self._config
        if section is None:
            return config
        if section not in config:
            raise CheckpointError(f"{self.path}: header config has no {section!r} section "
                                  f"(sections: {sorted(config)})")
        if not isinstance(config[section], dict):
            raise CheckpointError(f"{self.path}: header config section {section!r} must be a JSON object, got "
                                  f"{type(config[section]).__name__}: {config[section]!r:.200}")
        return config[section]

    def close(self) -> None:
        self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def is_float_dtype(name: str) -> bool:
    """Whether a safetensors dtype name ("BF16", "F8_E4M3", "I64", "BOOL", ...) is floating point."""
    return name.startswith(("F", "BF"))


def read_json(path: Path, what: str) -> dict:
    """A JSON object from ``path``; anything else (missing, not a regular file, bad JSON, a list)
    is a CheckpointError naming the file."""
    if not os.path.lexists(path):
        raise CheckpointError(f"{path}: missing {what}")
    check_regular_file(path, what)
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: {what} is not valid JSON ({e})") from e
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: {what} must be a JSON object, got {type(data).__name__}: {data!r:.200}")
    return data
