"""``ltxengine info PATH``: what a checkpoint holds, read from headers and configs only (no
weights are loaded)."""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from math import prod
from pathlib import Path
from typing import Any

from .loading import ltx2, original_config
from .loading.ltx2 import is_ltx2
from .loading.safetensors_io import CheckpointError, SafetensorsFile, read_json

# single-file key prefixes -> component
_PREFIXES = (("model.diffusion_model.", "transformer"), ("vae.", "vae"))


def _tensor_summary(files: list[SafetensorsFile], keys_of=None) -> dict[str, Any]:
    from .loading.fp8_formats import describe_fp8
    params, dtypes, fp8 = 0, Counter(), []
    for f in files:
        keys = keys_of(f) if keys_of else f.keys()
        for k in keys:
            n = prod(f.shape(k))
            params += n
            dtypes[f.dtype(k)] += n
        fp8.append(describe_fp8(list(keys), f.dtype, f.metadata))
    out = {"parameters": params, "dtypes": dict(dtypes.most_common())}
    if any(fp8):
        out["fp8"] = next(d for d in fp8 if d)
    return out


def _vae_version(cfg: dict) -> str:
    blocks = cfg.get("down_block_types") or ()
    if any("095" in b for b in blocks):
        return "0.9.5+"
    return "0.9.1" if cfg.get("timestep_conditioning") else "0.9.0"


def _transformer_size(cfg: dict) -> str:
    layers, heads = cfg.get("num_layers"), cfg.get("num_attention_heads")
    return {(28, 32): "2B", (48, 32): "13B"}.get((layers, heads), f"custom ({layers} layers, {heads} heads)")


def describe(path) -> dict[str, Any]:
    p = Path(path)
    if p.is_dir():
        return _describe_folder(p)
    if p.is_file():
        return _describe_single_file(p)
    raise CheckpointError(f"{p}: no such file or folder")


def _describe_folder(p: Path) -> dict[str, Any]:
    index = read_json(p / "model_index.json", "diffusers model_index.json")
    cls = index.get("_class_name", "?")
    out: dict[str, Any] = {"path": str(p), "format": "diffusers folder", "pipeline": cls,
                           "family": "LTX-2" if cls.startswith("LTX2") else "LTX-Video", "components": {}}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list):
            continue
        comp: dict[str, Any] = {"class": entry[1] if len(entry) > 1 else None}
        folder = p / name
        files = sorted(folder.glob("*.safetensors"))
        if files:
            opened = [SafetensorsFile(f) for f in files]
            comp.update(_tensor_summary(opened))
        cfg_file = folder / "config.json"
        if cfg_file.is_file():
            cfg = json.loads(cfg_file.read_text())
            if name == "vae":
                comp["version"] = _vae_version(cfg)
            if name == "transformer":
                comp["size"] = _transformer_size(cfg)
        out["components"][name] = comp
    if "vae" in out["components"] and "version" in out["components"]["vae"]:
        out["version"] = out["components"]["vae"]["version"]
    return out


def _describe_single_file(p: Path) -> dict[str, Any]:
    f = SafetensorsFile(p)
    try:
        config = f.config_section()
    except CheckpointError:
        config = {}
    if is_ltx2(p):
        return _describe_ltx2_file(p, f, config)
    groups: dict[str, list[str]] = defaultdict(list)
    for k in f.keys():
        comp = next((c for pre, c in _PREFIXES if k.startswith(pre)), "other")
        groups[comp].append(k)
    out: dict[str, Any] = {"path": str(p), "format": "Lightricks single file" if config else "safetensors file",
                           "family": "LTX-Video", "components": {}}
    if "transformer" in groups and "audio_vae" in config:
        out["family"] = "LTX-2"
    for comp, keys in groups.items():
        entry = _tensor_summary([f], lambda _f, keys=keys: keys)
        if comp == "vae" and "vae" in config:
            vcfg = original_config.vae_config(config["vae"], str(p))
            entry["version"] = _vae_version({"down_block_types": vcfg.down_block_types,
                                             "timestep_conditioning": vcfg.timestep_conditioning})
        if comp == "transformer" and "transformer" in config:
            t = config["transformer"]
            entry["size"] = _transformer_size({"num_layers": t.get("num_layers"),
                                               "num_attention_heads": t.get("num_attention_heads")})
        out["components"][comp] = entry
    if "vae" in out["components"] and "version" in out["components"]["vae"]:
        out["version"] = out["components"]["vae"]["version"]
    return out


def _describe_ltx2_file(p: Path, f: SafetensorsFile, config: dict) -> dict[str, Any]:
    """Group the bundle's tensors by the LTX-2 component key maps (connectors live under the
    DiT's prefix but are their own component)."""
    maps = {name: ltx2._keymaps(ltx2._SPECS[name]) for name in ltx2.COMPONENTS}
    groups: dict[str, list[str]] = defaultdict(list)
    for k in f.keys():
        comp = next((name for name, ms in maps.items() if any(m.apply(k) is not None for m in ms)), None)
        comp = comp or next((name for name, ms in maps.items() if any(ltx2._claims(m, k) for m in ms)), "other")
        groups[comp].append(k)
    out: dict[str, Any] = {"path": str(p), "format": "Lightricks single file", "family": "LTX-2", "components": {}}
    if f.metadata.get("model_version"):
        out["model_version"] = f.metadata["model_version"]
    for comp, keys in groups.items():
        entry = _tensor_summary([f], lambda _f, keys=keys: keys)
        if comp == "transformer":
            t = config.get("transformer", {})
            layers, heads = t.get("num_layers", 48), t.get("num_attention_heads", 32)
            entry["size"] = "19B" if (layers, heads) == (48, 32) else f"custom ({layers} layers, {heads} heads)"
        out["components"][comp] = entry
    return out


def format_description(d: dict[str, Any]) -> str:
    lines = [f"{d['path']}", f"  format:  {d['format']}", f"  family:  {d['family']}"]
    if "pipeline" in d:
        lines.append(f"  pipeline: {d['pipeline']}")
    if "version" in d:
        lines.append(f"  version: {d['version']} (from the VAE layout)")
    if "model_version" in d:
        lines.append(f"  model_version: {d['model_version']} (header)")
    lines.append("  components:")
    for name, c in d["components"].items():
        bits = [c["class"]] if c.get("class") else []
        if "size" in c:
            bits.append(c["size"])
        if "parameters" in c:
            bits.append(f"{c['parameters']:,} parameters")
            bits.append(", ".join(f"{k} {v / c['parameters']:.0%}" for k, v in c["dtypes"].items()))
        if "fp8" in c:
            bits.append(c["fp8"])
        lines.append(f"    {name}: " + "; ".join(bits))
    return "\n".join(lines)
