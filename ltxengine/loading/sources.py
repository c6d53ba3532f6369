"""Where a checkpoint comes from: a local path as is, or a Hugging Face repo id downloaded with
huggingface_hub (diffusers-format repos), with a bounded wait for a Hub that does not answer."""

from __future__ import annotations

import re
from pathlib import Path

__all__ = ["HUB_PATTERNS", "resolve_source"]

# the files of a diffusers LTX-Video or LTX-2 folder that a download fetches
HUB_PATTERNS = ["model_index.json", "transformer/*", "vae/*", "text_encoder/*", "tokenizer/*", "scheduler/*",
                "latent_upsampler/*", "connectors/*", "audio_vae/*", "vocoder/*"]
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def resolve_source(path_or_repo_id, revision, local_files_only) -> Path:
    p = Path(path_or_repo_id).expanduser()
    if p.exists():
        return p
    name = str(path_or_repo_id)
    if not _REPO_ID.match(name):
        raise FileNotFoundError(f"path_or_repo_id: {name!r} is neither an existing file or folder nor a "
                                f"Hugging Face repo id ('owner/name')")
    try:
        from huggingface_hub import constants
    except ImportError:
        raise ImportError(f"path_or_repo_id: {name!r} looks like a Hugging Face repo id, but huggingface_hub is "
                          f"not installed; pip install huggingface_hub or pass a local path") from None
    timeout = constants.HF_HUB_ETAG_TIMEOUT
    try:
        folder = _hub_snapshot(name, revision, local_files_only, timeout)
    except Exception as e:  # offline, unknown repo, auth, no answer: one clear message, the cause chained
        # httpx's TimeoutException and requests' Timeout are not TimeoutErrors
        if isinstance(e, TimeoutError) or any("Timeout" in c.__name__ for c in type(e).__mro__):
            raise TimeoutError(f"path_or_repo_id: the Hugging Face Hub ({constants.ENDPOINT}) did not answer for "
                               f"{name!r} within {timeout} s (HF_HUB_ETAG_TIMEOUT). Check the network or "
                               f"HF_ENDPOINT, raise HF_HUB_ETAG_TIMEOUT, or download the folder elsewhere and pass "
                               f"its local path.") from e
        raise OSError(f"path_or_repo_id: could not get {name!r} from the Hugging Face Hub "
                      f"({type(e).__name__}: {e}). If this machine is offline, download the folder elsewhere "
                      f"and pass its local path.") from e
    return Path(folder)


def _hub_snapshot(name: str, revision, local_files_only: bool, timeout: float) -> str:
    """snapshot_download, after a first request that waits at most ``timeout``. snapshot_download's
    own listing requests have no timeout (huggingface_hub 0.2x to 2.x), so an endpoint that
    accepts and never answers hung it forever; such an endpoint now fails the probe. Its file
    requests wait ``timeout`` (metadata) and HF_HUB_DOWNLOAD_TIMEOUT per read. Not covered: a
    server that answers the probe, then stalls on a listing request."""
    from huggingface_hub import HfApi, constants, snapshot_download

    def download(local_only: bool) -> str:
        return snapshot_download(name, revision=revision, allow_patterns=HUB_PATTERNS,
                                 local_files_only=local_only, etag_timeout=timeout)
    if local_files_only or constants.HF_HUB_OFFLINE:
        return download(local_files_only)
    try:
        HfApi().model_info(name, revision=revision, timeout=timeout)
    except Exception as probe:  # noqa: BLE001 - as snapshot_download does offline, a cached copy still serves
        try:
            return download(True)
        except Exception:  # noqa: BLE001 - not cached: the probe's error says why
            raise probe from None
    return download(False)
