"""Loading the transformers text encoders (T5 for LTX-Video, Gemma 3 / Gemma 4 for LTX-2) safely and strictly.

transformers is the reference implementation of these models, so it builds and fills them; this
module wraps it so that its loading meets the rules of the diffusion models' loader:

* **No code from a checkpoint.** A ``config.json`` or ``tokenizer_config.json`` with an
  ``auto_map`` makes transformers' Auto classes import the folder's own Python (after a question on
  stdin, or at once with ``trust_remote_code=True``). Such folders are refused by file and key before
  transformers sees them, and every call passes ``trust_remote_code=False`` as well.
* **Strict.** transformers fills a missing tensor with random values and skips an unknown one with
  a log line; here both are errors naming the file and keys. The only differences allowed are those
  transformers declares for the class: tied weights (T5's ``encoder.embed_tokens`` is ``shared``;
  Gemma's ``lm_head`` is the embedding) and ``_keys_to_ignore_on_load_unexpected`` (T5EncoderModel:
  the decoder half of a full T5 checkpoint), which its loading report already leaves out.
* **Files named.** Every safetensors file is opened (header and size) before transformers reads it,
  so a truncated or corrupt file, or an integer / bool weight (which transformers would cast into a
  valid-looking float), is a CheckpointError naming the file; a FIFO, device or symlink loop in the
  folder is refused by name instead of blocking a read.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

from safetensors import SafetensorError

from .safetensors_io import CheckpointError, SafetensorsFile, file_problem, is_float_dtype, read_json

__all__ = ["check_folder", "check_gemma_version", "check_weights", "checked_folder", "dtype_kwarg", "load_model",
           "load_tokenizer", "model_version_tuple"]

_SAFETENSORS_INDEX = "model.safetensors.index.json"


def check_folder(folder: Path, arg: str) -> None:
    """Refuse ``folder`` (the ``arg`` argument) when an entry is not a regular file or folder (a FIFO
    or device would block transformers' read; a symlink loop or dangling link), or when a config
    asks for the folder's own code (``auto_map``)."""
    for entry in sorted(folder.iterdir()):
        if entry.is_dir():
            continue
        problem = file_problem(entry)
        if problem is not None:
            raise CheckpointError(f"{arg}: {entry} {problem}")
        if entry.name.endswith("config.json"):
            _refuse_remote_code(entry, arg)


def checked_folder(path, what: str, arg: str, required: Sequence[str], any_of: Sequence[str]) -> Path:
    """The folder given as argument ``arg`` (a ``what`` folder), refused by name unless it holds every
    file in ``required`` and one of ``any_of`` and passes check_folder."""
    p = Path(os.fspath(path))
    expected = (f"{', '.join(required)} and " if required else "") + f"one of {', '.join(any_of)}"
    if not p.is_dir():
        raise FileNotFoundError(f"{arg}: {what} folder {str(p)!r} does not exist or is not a folder "
                                f"(expected a folder holding {expected})")
    # lexists: a FIFO, device or symlink loop under an expected name is refused by check_folder, by name
    for name in required:
        if not os.path.lexists(p / name):
            raise FileNotFoundError(f"{arg}: {what} folder {str(p)!r} has no {name} (expected {expected})")
    if not any(os.path.lexists(p / name) for name in any_of):
        raise FileNotFoundError(f"{arg}: {what} folder {str(p)!r} has none of {', '.join(any_of)} "
                                f"(expected {expected})")
    check_folder(p, arg)
    return p


def _refuse_remote_code(path: Path, arg: str) -> None:
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{arg}: {path} is not valid JSON ({e})") from e
    found = _find_key(data, "auto_map")
    if found is not None:
        where, value = found
        raise CheckpointError(
            f"{arg}: {path} sets {where!r} = {json.dumps(value)[:200]}, which asks transformers to import Python "
            "code shipped with the checkpoint; ltxengine never runs code from a checkpoint. Use a folder with the "
            "stock transformers classes (remove 'auto_map' if the stock class is what the model is).")


def _find_key(data: Any, key: str, path: str = "") -> tuple[str, Any] | None:
    """The first ``key`` anywhere in parsed JSON -> (dotted path, value)."""
    if isinstance(data, dict):
        if key in data:
            return path + key, data[key]
        items = ((f"{path}{k}.", v) for k, v in data.items())
    elif isinstance(data, list):
        items = ((f"{path}{i}.", v) for i, v in enumerate(data))
    else:
        return None
    for sub, value in items:
        found = _find_key(value, key, sub)
        if found is not None:
            return found
    return None


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files transformers will read from ``folder`` (its own preference: the single
    file, else the index's shards); [] for a folder holding only ``pytorch_model.bin`` weights."""
    if os.path.lexists(folder / "model.safetensors"):
        return [folder / "model.safetensors"]
    index = folder / _SAFETENSORS_INDEX
    if not os.path.lexists(index):
        return []
    weight_map = read_json(index, "sharded-weights index").get("weight_map")
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise CheckpointError(f"{index}: no 'weight_map' object mapping tensor names to shard file names")
    return [folder / name for name in sorted(set(weight_map.values()))]


def check_weights(folder: Path) -> list[Path]:
    """Open every weight file (a truncated or corrupt one is named) and refuse integer or bool
    tensors; returns the files."""
    files = weight_files(folder)
    for path in files:
        with SafetensorsFile(path) as f:
            bad = [(k, f.dtype(k)) for k in f.keys() if not is_float_dtype(f.dtype(k))]
        if bad:
            shown = ", ".join(f"{k!r} ({d})" for k, d in bad[:8])
            raise CheckpointError(f"{path}: {len(bad)} tensors are not floating point ({shown}); a text encoder's "
                                  "weights must be (quantized checkpoints are not supported)")
    return files


def dtype_kwarg() -> str:
    """transformers >= 4.56 takes ``dtype=``; older releases only ``torch_dtype=``."""
    import transformers
    from packaging.version import Version

    return "dtype" if Version(transformers.__version__).release >= (4, 56) else "torch_dtype"


def load_model(model_cls, folder: Path, what: str, **kwargs):
    """``model_cls.from_pretrained(folder)`` (local files, no remote code), refusing missing, unused
    and mis-shaped tensors by name."""
    files = check_weights(folder)
    try:
        model, info = model_cls.from_pretrained(folder, local_files_only=True, trust_remote_code=False,
                                                output_loading_info=True, ignore_mismatched_sizes=True, **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # one named error, the cause chained
        raise CheckpointError(f"{folder}: transformers cannot load the {what} ({type(e).__name__}: {e})") from e
    problems = _report(info)
    if problems:
        where = ", ".join(str(p) for p in files) or str(folder)
        raise CheckpointError(f"{where}: the {what} does not match its checkpoint exactly: " + "; ".join(problems))
    return model


def load_model_from_tensors(model_cls, config, state: dict, where: str, what: str, **kwargs):
    """``model_cls.from_pretrained(None, config=, state_dict=)``: a transformers model of a known
    config class built from tensors already read (nothing is read from disk, no remote code), so
    every transformers load stays in this module. Missing, unused and mis-shaped tensors are
    refused by name (``where``: the file they came from)."""
    try:
        model, info = model_cls.from_pretrained(None, config=config, state_dict=state, output_loading_info=True,
                                                **kwargs)
    except (OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{where}: transformers cannot load the {what} ({type(e).__name__}: {e})") from e
    problems = [f"{len(v)} {text}: {sorted(v)[:8]}" for text, v in
                (("model tensors missing from the file", info.get("missing_keys")),
                 ("file tensors not used by the model", info.get("unexpected_keys")),
                 ("tensors with the wrong shape", info.get("mismatched_keys"))) if v]
    if problems or info.get("error_msgs"):
        raise CheckpointError(f"{where}: the {what} does not match the file exactly: "
                              + "; ".join(problems + [str(m) for m in info.get("error_msgs") or ()]))
    return model


def _report(info: dict) -> list[str]:
    parts = []
    for key, text in (("missing_keys", "model tensors missing from the checkpoint (transformers would fill them "
                                       "with random values)"),
                      ("unexpected_keys", "checkpoint tensors not used by the model")):
        keys = sorted(info.get(key) or ())
        if keys:
            parts.append(f"{len(keys)} {text}: {_some(keys)}")
    mismatched = sorted(info.get("mismatched_keys") or (), key=str)
    if mismatched:
        shown = [f"{m[0]!r} {tuple(m[1])} vs model {tuple(m[2])}" if len(m) == 3 else repr(m) for m in mismatched[:8]]
        parts.append(f"{len(mismatched)} tensors with the wrong shape: {', '.join(shown)}")
    parts += [str(m) for m in info.get("error_msgs") or ()]
    return parts


def _some(names: list[str], n: int = 8) -> str:
    shown = ", ".join(repr(x) for x in names[:n])
    return shown + (f", ... ({len(names) - n} more)" if len(names) > n else "")


def load_tokenizer(folder: Path, what: str):
    """``AutoTokenizer.from_pretrained(folder)`` with local files only and no remote code."""
    from transformers import AutoTokenizer
    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{folder}: transformers cannot load the {what} ({type(e).__name__}: {e})") from e


# LTX checkpoints from this model_version on must name the Gemma they were trained with (ltx-core's
# _GEMMA_SOURCE_CHECKPOINT_REQUIRED_SINCE: below the 2.5 stamp, so pre-release 2.4 builds count).
GEMMA_VERSION_REQUIRED_SINCE = (2, 4, 0)


def check_gemma_version(metadata: dict, gemma_config: dict, where: str) -> None:
    """ltx-core's ``_check_gemma_version`` (encoder_configurator.py @400fd31): the LTX checkpoint's
    header ``metadata`` (raw safetensors strings or parsed) against the Gemma folder's config.json.

    * ``gemma_source_checkpoint`` present (LTX-2.5): its ``gemma_version`` must equal the Gemma
      config's top-level ``gemma_version``.
    * absent, ``model_version`` >= 2.4.0: an error, unless the Gemma config has no ``gemma_version``
      either (then a warning, as the reference).
    * absent, older or no ``model_version`` (2.0, 2.3): the Gemma must be Gemma 3 (ours also takes the
      text-only ``gemma3_text`` folder GemmaTextEncoder loads; the reference only loads the full model).
    """
    import logging

    source = metadata.get("gemma_source_checkpoint")
    if isinstance(source, str):
        try:
            source = json.loads(source)
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{where}: header metadata 'gemma_source_checkpoint' is not JSON ({e})") from e
    actual = gemma_config.get("gemma_version")
    model_version = metadata.get("model_version")
    if source is not None:
        if not isinstance(source, dict):
            raise CheckpointError(f"{where}: header metadata 'gemma_source_checkpoint' must be a JSON object, got "
                                  f"{source!r}")
        expected = source.get("gemma_version")
        if expected != actual:
            raise CheckpointError(f"{where}: Gemma version mismatch: the checkpoint's gemma_source_checkpoint expects "
                                  f"gemma_version={expected!r}, the Gemma config has gemma_version={actual!r}")
        return
    if model_version_tuple(model_version) >= GEMMA_VERSION_REQUIRED_SINCE:
        if actual is None:
            logging.getLogger(__name__).warning(
                "%s: model_version=%r should declare gemma_source_checkpoint.gemma_version and does not, and the "
                "Gemma config has no gemma_version either; version check skipped, verify compatibility manually",
                where, model_version)
            return
        raise CheckpointError(f"{where}: model_version={model_version!r} must declare "
                              "gemma_source_checkpoint.gemma_version in its header, and none was found")
    model_type = gemma_config.get("model_type")
    if model_type not in ("gemma3", "gemma3_text"):
        raise CheckpointError(f"{where}: the checkpoint has no gemma_source_checkpoint (model_version="
                              f"{model_version!r}), so it needs a Gemma 3 text encoder (model_type 'gemma3'), got "
                              f"model_type={model_type!r}")


def model_version_tuple(version) -> tuple[int, ...]:
    """ltx-core's ``parse_model_version``: the leading dot-separated integers ("2.3.rc1" -> (2, 3));
    () for None or a non-numeric version (compares below every release)."""
    if not isinstance(version, str) or not version:
        return ()
    parts = []
    for part in version.split("."):
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)
