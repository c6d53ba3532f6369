"""``ltxengine generate``'s latent in / latent out for LTX-2 (``--latents``, ``--noise-scale``,
``--output-latents``): a .safetensors file with the keys ``latents`` and/or ``audio_latents`` in
the form ``LTX2Engine.generate(output_type="latent")`` returns and ``latents=`` / ``audio_latents=``
take (diffusers' unpacked, denormalized latents), so one command's output starts the next."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .cli_options import UsageError

__all__ = ["KEYS", "latent_arguments", "write_latents"]

KEYS = ("latents", "audio_latents")


def latent_arguments(args) -> dict[str, Any]:
    """generate()'s latent arguments from the flags; the files are checked (and --latents read)
    before the model loads."""
    kw: dict[str, Any] = {}
    if args.output_latents is not None:
        _check_target(args.output_latents)
        kw["output_type"] = "latent"
    if args.latents_path is not None:
        kw.update(_read(args.latents_path))
    if args.noise_scale is not None:
        if args.latents_path is None:
            raise UsageError(f"--noise-scale mixes noise into --latents, got --noise-scale {args.noise_scale} "
                             f"without --latents")
        kw["noise_scale"] = args.noise_scale
    return kw


def _check_target(text: str) -> Path:
    path = Path(text).expanduser()
    if path.suffix.lower() != ".safetensors":
        raise UsageError(f"--output-latents must name a .safetensors file, got {text!r}")
    if path.is_dir() or not path.parent.is_dir() or not os.access(path.parent, os.W_OK | os.X_OK):
        raise UsageError(f"--output-latents: cannot write {text!r} (a folder, or its folder is missing or "
                         f"not writable)")
    return path


def _read(text: str) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(text).expanduser()
    if not path.is_file():
        raise UsageError(f"--latents: {text!r} does not exist or is not a file")
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise UsageError(f"--latents: cannot read {text!r} as safetensors ({e})") from None
    keys = set(tensors)
    if not keys or not keys <= set(KEYS):
        raise UsageError(f"--latents: {text!r} must hold latents and/or audio_latents (as --output-latents "
                         f"writes), got keys {sorted(keys)}")
    return tensors


def write_latents(result, text: str) -> Path:
    """The result's latents (and audio latents) to ``text``, written to a temporary name and
    renamed, so a failure never leaves a broken file."""
    from safetensors.torch import save_file
    path = _check_target(text)
    tensors = {k: getattr(result, k).contiguous() for k in KEYS if getattr(result, k) is not None}
    tmp = path.with_name(f".{path.name}.partial")
    try:
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
