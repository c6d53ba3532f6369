"""Which LTX-2 latent upscaler a checkpoint path names or a folder holds, read from configs and
headers only (no tensor is read), so the engine and the CLI know a file's kind before loading it.

Lightricks ships three kinds (``models.latent_upsampler.upsampler_kind``): spatial x2 (every
release; two-stage pipelines), spatial x1.5 (LTX-2.3, the rational resampler at 3/2) and
temporal x2 (2.0, 2.3, 2.5). ltx-pipelines @400fd31 feeds ``--spatial-upsampler-path`` to every
two-stage pipeline and uses the temporal one only in ``DFRPipeline``'s temporal refine rounds
(``--temporal-upsampler-path``), which need generated keyframe slots: after stage 2, each round maps
F latent frames to 2F - 1 (N pixel frames to 2(N - 1) + 1, still 8k+1) at twice the fps, so the
duration stays, and the audio is stage 1's, cut to the video's duration. ltxengine has no DFR
recipe, so a temporal upscaler is refused by name where a spatial one is expected.

LTX-2.5's per-component folder keeps its upscalers in ``latent_upscale_models/`` (spatial x2 and
temporal x2): ``pick_split_upscaler`` takes the one spatial file, or refuses listing several.
"""

from __future__ import annotations

from pathlib import Path

from ..models.latent_upsampler import RATIONAL_SCALES, LatentUpsamplerConfig, upsampler_kind, upsampler_scales
from .components import resolve_path
from .ltx2_split_files import file_role
from .safetensors_io import CheckpointError, SafetensorsFile, read_json

__all__ = ["find_split_upscalers", "pick_split_upscaler", "size_multiple", "spatial_upsampler_config",
           "two_stage_multiple", "upsampler_config"]

DFR_NOTE = ("Lightricks uses the temporal x2 upscaler only in ltx-pipelines' DFRPipeline temporal rounds "
            "(--temporal-upsampler-path), which ltxengine does not implement")


def upsampler_config(path) -> LatentUpsamplerConfig:
    """The config of the upsampler at ``path`` (a diffusers ``latent_upsampler/`` folder, a pipeline
    folder holding one, or an upscaler .safetensors file's header), as ``load_latent_upsampler``
    reads it."""
    from .ltx2_vae import upsampler_config_from_diffusers, upsampler_config_from_original
    p = resolve_path(path)
    if p.is_dir():
        folder = p / "latent_upsampler" if (p / "latent_upsampler").is_dir() else p
        return upsampler_config_from_diffusers(read_json(folder / "config.json", "latent_upsampler config.json"),
                                               str(folder / "config.json"))
    with SafetensorsFile(p) as f:
        return upsampler_config_from_original(f.config_section(), str(p))


def spatial_upsampler_config(path) -> LatentUpsamplerConfig:
    """``upsampler_config(path)`` of a spatial-only upsampler (x2 or x1.5: what the two-stage
    recipes run between their stages); a temporal one is refused by name."""
    config = upsampler_config(path)
    spatial, temporal = upsampler_scales(config)
    if temporal != 1:
        raise ValueError(f"latent_upsampler: {path} is the {upsampler_kind(config)} latent upscaler; the two-stage "
                         f"recipes take a spatial one (x2, or LTX-2.3's x1.5). {DFR_NOTE}")
    return config


def find_split_upscalers(folder) -> dict[Path, LatentUpsamplerConfig]:
    """Every upscaler file of an LTX-2.5 per-component folder (``*.safetensors`` and one level of
    subfolders, as ``find_split_files`` looks), recognised by its keys -> its header config."""
    folder = Path(folder)
    found = {}
    for path in sorted([*folder.glob("*.safetensors"), *folder.glob("*/*.safetensors")]):
        with SafetensorsFile(path) as f:
            if file_role(f) == "latent_upsampler":
                found[path] = upsampler_config(path)
    return found


def pick_split_upscaler(folder) -> Path | None:
    """The spatial upscaler of a per-component folder for the two-stage recipes: the only spatial
    file (temporal ones are left alone), None when there is none; several are refused with their
    kinds, to be chosen with ``latent_upsampler=PATH``."""
    spatial = {p: c for p, c in find_split_upscalers(folder).items() if upsampler_scales(c)[1] == 1}
    if len(spatial) > 1:
        names = ", ".join(f"{p.relative_to(folder)} ({upsampler_kind(c)})" for p, c in spatial.items())
        raise CheckpointError(f"{folder}: more than one spatial latent upscaler ({names}); pass the one to use as "
                              f"latent_upsampler=PATH (CLI --latent-upsampler PATH)")
    return next(iter(spatial), None)


def size_multiple(scale: float) -> int:
    """What a two-stage size must be a multiple of with a spatial upscaler of factor ``scale``:
    stage 1 runs at 1/scale of it, and its latent side n must upsample to exactly scale x n, so n
    is a multiple of the resampler's denominator and the final side of its numerator (x2: 64 px,
    x1.5 = 3/2: 96 px)."""
    num = next(n for n, d in RATIONAL_SCALES.values() if n / d == scale)
    return 32 * num


def two_stage_multiple(model_path, given) -> int | None:
    """For the CLI, before loading: the size multiple of the spatial upscaler the engine will load
    for ``model_path`` (``given``, a diffusers folder's own ``latent_upsampler/``, or a
    per-component folder's), None without one."""
    from .ltx2_split_files import is_split_folder
    p = Path(model_path)
    path = given if given is not None else (p / "latent_upsampler" if (p / "latent_upsampler").is_dir() else
                                            pick_split_upscaler(p) if is_split_folder(p) else None)
    return None if path is None else size_multiple(upsampler_scales(spatial_upsampler_config(path))[0])
