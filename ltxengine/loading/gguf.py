"""Reading GGUF files (ggml's single-file format), written from the format's specification
(ggml docs/gguf.md; versions 2 and 3, little-endian), without the ``gguf`` package.

Layout: magic ``GGUF``, uint32 version, uint64 tensor count, uint64 metadata count; the metadata
key/value pairs (string key, uint32 value type, value); per tensor its name, uint32 dim count, the
uint64 dims (fastest-varying first: a torch shape is their reverse), uint32 ggml type and uint64
offset into the data section; the data section starts at the next multiple of
``general.alignment`` (default 32). The file is memory-mapped: a tensor's bytes are read only when
asked for. Every failure is a CheckpointError naming the file (and the tensor).
"""

from __future__ import annotations

import json
import mmap
import struct
from pathlib import Path

import numpy as np
import torch

from ..quant.gguf import SUPPORTED, GGMLType, byte_shape, dequantize, type_name
from .safetensors_io import CheckpointError, check_regular_file

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 used 32-bit counts and lengths; ggml reads it no longer either
DEFAULT_ALIGNMENT = 32
# metadata value type -> struct format of a scalar (8: string, 9: array are read specially)
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_MAX_DIMS = 4  # GGML_MAX_DIMS


class _Cursor:
    """Sequential little-endian reads from the header; running past the end is a truncated file."""

    def __init__(self, buf, path: Path):
        self.buf, self.pos, self.path = buf, 0, path

    def take(self, n: int, what: str) -> bytes:
        if n < 0 or self.pos + n > len(self.buf):
            raise CheckpointError(f"{self.path}: truncated GGUF file: {what} at byte {self.pos} needs {n} bytes, "
                                  f"the file has {len(self.buf)}")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def unpack(self, fmt: str, what: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt), what))[0]

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        raw = self.take(n, what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as e:
            raise CheckpointError(f"{self.path}: {what} is not UTF-8 ({e})") from e

    def value(self, vtype: int, what: str):
        if vtype in _SCALARS:
            return self.unpack(_SCALARS[vtype], what)
        if vtype == 8:
            return self.string(what)
        if vtype == 9:
            item, count = self.unpack("<I", what), self.unpack("<Q", what)
            if item == 9:
                raise CheckpointError(f"{self.path}: {what} is an array of arrays, which GGUF does not define")
            return [self.value(item, what) for _ in range(count)]
        raise CheckpointError(f"{self.path}: {what} has unknown metadata value type {vtype} (GGUF defines 0-12)")


class GGUFTensor:
    """One tensor's header entry: ``shape`` (torch order), ggml ``type``, byte range in the file."""

    def __init__(self, name: str, shape: tuple[int, ...], gtype: GGMLType, start: int, nbytes: int):
        self.name, self.shape, self.type, self.start, self.nbytes = name, shape, gtype, start, nbytes

    @property
    def quantized(self) -> bool:
        return self.type.block_size > 1


class GGUFFile:
    """An open GGUF file: ``metadata`` (key -> value), ``tensors`` (name -> GGUFTensor, file order)."""

    def __init__(self, path):
        self.path = Path(path)
        check_regular_file(self.path, "GGUF file")
        with open(self.path, "rb") as fh:
            size = self.path.stat().st_size
            self._map = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        cur = _Cursor(self._map, self.path)
        magic = cur.take(4, "the magic number") if len(self._map) >= 4 else bytes(self._map)
        if magic != MAGIC:
            raise CheckpointError(f"{self.path}: not a GGUF file: it starts with {magic!r}, a GGUF file with {MAGIC!r}")
        self.version = cur.unpack("<I", "the version")
        if self.version not in VERSIONS:
            swapped = " (a big-endian file?)" if struct.unpack(">I", struct.pack("<I", self.version))[0] in VERSIONS \
                else ""
            raise CheckpointError(f"{self.path}: unsupported GGUF version {self.version}{swapped}; ltxengine reads "
                                  f"little-endian versions {VERSIONS}")
        n_tensors, n_kv = cur.unpack("<Q", "the tensor count"), cur.unpack("<Q", "the metadata count")
        self.metadata = {}
        for i in range(n_kv):
            key = cur.string(f"metadata key {i}")
            self.metadata[key] = cur.value(cur.unpack("<I", f"metadata {key!r}"), f"metadata {key!r}")
        infos = [self._tensor_info(cur) for _ in range(n_tensors)]
        seen: set[str] = set()
        for name, *_ in infos:
            if name in seen:
                raise CheckpointError(f"{self.path}: tensor {name!r} appears twice in the tensor table")
            seen.add(name)
        alignment = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(alignment, int) or alignment <= 0 or alignment % 8:
            raise CheckpointError(f"{self.path}: general.alignment must be a positive multiple of 8, got "
                                  f"{alignment!r}")
        self.data_start = -(-cur.pos // alignment) * alignment
        self.tensors: dict[str, GGUFTensor] = {}
        for name, shape, gtype, offset in infos:
            self.tensors[name] = self._place(name, shape, gtype, offset, alignment)

    def _tensor_info(self, cur: _Cursor):
        name = cur.string("a tensor name")
        n_dims = cur.unpack("<I", f"tensor {name!r}'s dim count")
        if not 1 <= n_dims <= _MAX_DIMS:
            raise CheckpointError(f"{self.path}: tensor {name!r} has {n_dims} dims; GGUF allows 1 to {_MAX_DIMS}")
        dims = [cur.unpack("<Q", f"tensor {name!r}'s dims") for _ in range(n_dims)]
        type_id = cur.unpack("<I", f"tensor {name!r}'s type")
        offset = cur.unpack("<Q", f"tensor {name!r}'s offset")
        if type_id not in SUPPORTED:
            raise CheckpointError(f"{self.path}: tensor {name!r} has quant type {type_name(type_id)}, which ltxengine "
                                  f"does not dequantize (supported: {sorted(t.name for t in SUPPORTED.values())})")
        return name, tuple(reversed(dims)), SUPPORTED[type_id], offset

    def _place(self, name, shape, gtype: GGMLType, offset: int, alignment: int) -> GGUFTensor:
        try:
            row_bytes = byte_shape(shape, gtype)[-1]
        except ValueError as e:
            raise CheckpointError(f"{self.path}: tensor {name!r}: {e}") from e
        nbytes = row_bytes * int(np.prod(shape[:-1], dtype=np.int64))
        if offset % alignment:
            raise CheckpointError(f"{self.path}: tensor {name!r} starts at data offset {offset}, not a multiple of "
                                  f"the alignment {alignment}")
        start = self.data_start + offset
        if start + nbytes > len(self._map):
            raise CheckpointError(f"{self.path}: truncated GGUF file: tensor {name!r} ({gtype.name} "
                                  f"{list(shape)}) needs bytes {start}..{start + nbytes}, the file ends at "
                                  f"{len(self._map)}")
        return GGUFTensor(name, shape, gtype, start, nbytes)

    def raw(self, name: str, device=None) -> torch.Tensor:
        """The tensor's bytes, uint8 (rows, bytes per row) (1-D tensors: one row), on ``device``."""
        t = self.tensors[name]
        data = np.frombuffer(self._map, dtype=np.uint8, count=t.nbytes, offset=t.start).copy()
        rows = byte_shape(t.shape, t.type)
        return torch.from_numpy(data).reshape(rows).to(device)

    def read(self, name: str, device=None, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The tensor's values (dequantized in fp32 when it is quantized), cast to ``dtype`` when given."""
        t = self.tensors[name]
        values = dequantize(self.raw(name), t.type.id, t.shape)
        return values.to(device=device, dtype=dtype or values.dtype)

    def close(self) -> None:
        if isinstance(self._map, mmap.mmap):
            self._map.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def transformer_section(f: GGUFFile) -> dict | None:
    """The ``transformer`` section of the Lightricks header config a GGUF may carry as its ``config``
    string metadata (ComfyUI-GGUF hands it to ComfyUI, which reads LTX-2's config from it), or None
    when it carries none."""
    raw = f.metadata.get("config")
    if raw is None:
        return None
    try:
        config = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{f.path}: metadata 'config' is not valid JSON ({e})") from e
    section = config.get("transformer") if isinstance(config, dict) else None
    if not isinstance(section, dict):
        raise CheckpointError(f"{f.path}: metadata 'config' must be a JSON object with a 'transformer' object (a "
                              f"Lightricks header config), got {str(raw)[:200]!r}")
    return section


def describe_gguf(path) -> dict:
    """What ``ltxengine info`` shows of a GGUF transformer: its family (LTX-2 names have an audio
    stream), the tensors' parameters and quant types; the header alone is read."""
    with GGUFFile(path) as f:
        names = list(f.tensors)
        by_type: dict[str, int] = {}
        for t in f.tensors.values():
            by_type[t.type.name] = by_type.get(t.type.name, 0) + int(np.prod(t.shape, dtype=np.int64))
        size = sum(t.nbytes for t in f.tensors.values())
        arch = f.metadata.get("general.architecture")
        version = f.version
    family = "LTX-2" if any("audio_" in n for n in names) else "LTX-Video"  # LTX-2's audio stream
    entry = {"file": Path(path).name, "kind": f"architecture {arch!r}" if arch else None,
             "size": f"{size / 2**20:.1f} MiB",
             "parameters": sum(by_type.values()), "dtypes": dict(sorted(by_type.items(), key=lambda kv: -kv[1]))}
    return {"path": str(path), "format": f"GGUF v{version} (the transformer alone: load it with components=)",
            "family": family, "components": {"transformer": {k: v for k, v in entry.items() if v is not None}}}


def is_gguf(path) -> bool:
    """A ``.gguf`` path (the suffix decides, as in ComfyUI and diffusers; the reader checks the magic)."""
    return Path(path).suffix.lower() == ".gguf"


__all__ = ["GGUFFile", "GGUFTensor", "describe_gguf", "is_gguf", "transformer_section", "MAGIC", "VERSIONS"]
