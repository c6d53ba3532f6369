"""``ltxengine info PATH``: what a checkpoint holds, read from headers and configs only (no
weights are loaded)."""

from __future__ import annotations

from collections import Counter, defaultdict
from math import prod
from pathlib import Path
from typing import Any

from .loading import ltx2, original_config
from .loading.gguf import describe_gguf, is_gguf
from .loading.ltx2 import is_ltx2
from .loading.ltx2_split_files import file_role, find_split_files, is_split_folder
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


# released transformers by (family, version prefix) and (layers, heads); anything else is "custom"
_RELEASED = {("LTX-Video", ""): {(28, 32): "2B", (48, 32): "13B"},
             ("LTX-2", "2.0"): {(48, 32): "19B"}, ("LTX-2", "2.3"): {(48, 32): "22B"},
             ("LTX-2", "2.5"): {(48, 32): "22B"}}

# Config options only later LTX-2 releases turn on: diffusers' names (folders), then ltx-core's
# (single-file headers).
_LTX2_LATER = {"gated_attn": "2.3", "audio_gated_attn": "2.3", "cross_attn_mod": "2.3", "audio_cross_attn_mod": "2.3",
               "use_keyframes_abs_pos_embedding": "2.5", "apply_gated_attention": "2.3",
               "cross_attention_adaln": "2.3", "caption_proj_before_connector": "2.3"}


def _transformer_entry(family: str, version: str, cfg: dict) -> dict[str, Any]:
    """Layers, heads and the release size (e.g. "2B", "19B") of a transformer config."""
    layers, heads = cfg.get("num_layers"), cfg.get("num_attention_heads")
    table = next((t for (fam, prefix), t in _RELEASED.items() if fam == family and version.startswith(prefix)), {})
    size = table.get((layers, heads), f"custom ({layers} layers, {heads} heads)")
    return {"layers": layers, "heads": heads, "size": size}


def _ltx2_version(transformer_cfg: dict, later_sections=()) -> str:
    """The LTX-2 release a config's layout belongs to: 2.0 unless a later release's option is on
    (or a later release's header section, e.g. the 2.3 vocoder's 'bwe', is present)."""
    later = [v for k, v in _LTX2_LATER.items() if transformer_cfg.get(k)]
    later += ["2.5" for k in ("ff_bias",) if transformer_cfg.get(k) is False]  # 2.5's video FFN has no bias
    later += ["2.3" for section in later_sections if section == "bwe"]
    return max(later, default="2.0")


def ltx2_release(path) -> str:
    """The LTX-2 release ("2.0", "2.3", "2.5") of a local checkpoint from its configs only, as the
    engine reads it (ltx2/releases.py): the header's model_version, else the transformer's layout;
    "2.0" when the configs cannot be read (the loader then gives the error)."""
    from .ltx2.releases import release_named
    p = _model_file(Path(path))
    try:
        if p.is_dir():
            cfg = _read_config(p / "transformer" if (p / "model_index.json").is_file() else p)
            return _ltx2_version(cfg)
        with SafetensorsFile(p) as f:
            version = str(f.metadata.get("model_version") or "")
            config = f.config_section() if f.metadata.get("config") else {}
    except (ValueError, OSError, AttributeError):
        return "2.0"
    named = release_named(version)
    if named is not None:
        return named.version
    t = config.get("transformer", {}) if isinstance(config.get("transformer"), dict) else {}
    v = config.get("vocoder", {}) if isinstance(config.get("vocoder"), dict) else {}
    return _ltx2_version(t, v)


def describe(path) -> dict[str, Any]:
    p = Path(path)
    if is_gguf(p):
        return _finish(describe_gguf(p))
    if is_split_folder(p):
        return _finish(_describe_split_folder(p))
    if p.is_dir():
        return _finish(_describe_folder(p))
    if p.is_file():
        return _finish(_describe_single_file(p))
    raise CheckpointError(f"{p}: no such file or folder")


def family(path) -> str:
    """"LTX-2" or "LTX-Video": the engine family ``Engine.from_pretrained`` picks for a local
    checkpoint (the same header test), without loading anything."""
    return "LTX-2" if is_ltx2(path) else "LTX-Video"


def _model_file(p: Path) -> Path:
    """A folder of LTX-2.5 per-component files reads as its transformer file (model_version, config)."""
    return find_split_files(p)["transformer"] if is_split_folder(p) else p


def transformer_layers(path) -> int | None:
    """The transformer's block count from the checkpoint's configs only (None when they do not
    say or cannot be read: the loader then gives the error)."""
    p = _model_file(Path(path))
    try:
        if p.is_dir():
            cfg = _read_config(p / "transformer" if (p / "model_index.json").is_file() else p)
            layers = cfg.get("num_layers")
        else:
            with SafetensorsFile(p) as f:
                t = f.config_section().get("transformer", {}) if f.metadata.get("config") else {}
            layers = t.get("num_layers", 48 if is_ltx2(p) else None)  # ltx-core's default
    except (ValueError, OSError, AttributeError):
        return None
    return layers if isinstance(layers, int) and not isinstance(layers, bool) else None


def _finish(out: dict[str, Any]) -> dict[str, Any]:
    counts = [c["parameters"] for c in out["components"].values() if "parameters" in c]
    if counts:
        out["parameters"] = sum(counts)
    return out


def _component(folder: Path, class_name: str | None) -> dict[str, Any]:
    comp: dict[str, Any] = {"class": class_name}
    files = sorted(folder.glob("*.safetensors"))
    if files:
        comp.update(_tensor_summary([SafetensorsFile(f) for f in files]))
    return comp


def _read_config(folder: Path) -> dict:
    cfg_file = folder / "config.json"
    if not cfg_file.is_file():
        return {}
    cfg = read_json(cfg_file, "config.json")
    return cfg if isinstance(cfg, dict) else {}


def _describe_folder(p: Path) -> dict[str, Any]:
    index = read_json(p / "model_index.json", "diffusers model_index.json")
    cls = index.get("_class_name", "?")
    fam = "LTX-2" if str(cls).startswith("LTX2") else "LTX-Video"
    out: dict[str, Any] = {"path": str(p), "format": "diffusers folder", "pipeline": cls, "family": fam,
                           "components": {}}
    entries = {k: v[1] if len(v) > 1 else None for k, v in index.items()
               if not k.startswith("_") and isinstance(v, list)}
    if "latent_upsampler" not in entries and (p / "latent_upsampler").is_dir():
        # the engine picks up a folder's own latent_upsampler/ (not a diffusers pipeline component)
        entries["latent_upsampler"] = _read_config(p / "latent_upsampler").get("_class_name")
    configs = {name: _read_config(p / name) for name in entries}
    if fam == "LTX-2":
        out["version"] = _ltx2_version(configs.get("transformer", {}), configs.get("vocoder", {}))
        out["version_source"] = "the transformer layout"
    elif configs.get("vae"):
        out["version"] = _vae_version(configs["vae"])
        out["version_source"] = "the VAE layout"
    for name, class_name in entries.items():
        comp = _component(p / name, class_name)
        if name == "vae" and fam == "LTX-Video" and configs[name]:
            comp["version"] = out["version"]
        if name == "transformer" and configs[name]:
            comp.update(_transformer_entry(fam, out.get("version", ""), configs[name]))
        out["components"][name] = comp
    return out


def _describe_single_file(p: Path) -> dict[str, Any]:
    f = SafetensorsFile(p)
    try:
        config = f.config_section()
    except CheckpointError:
        config = {}
    if file_role(f) == "latent_upsampler":
        return _describe_upscaler_file(p, f, config)
    if is_ltx2(p):
        return _describe_ltx2_file(p, f, config)
    groups: dict[str, list[str]] = defaultdict(list)
    for k in f.keys():
        comp = next((c for pre, c in _PREFIXES if k.startswith(pre)), "other")
        groups[comp].append(k)
    out: dict[str, Any] = {"path": str(p), "format": "Lightricks single file" if config else "safetensors file",
                           "family": "LTX-Video", "components": {}}
    if "vae" in groups and "vae" in config:
        vcfg = original_config.vae_config(config["vae"], str(p))
        out["version"] = _vae_version({"down_block_types": vcfg.down_block_types,
                                       "timestep_conditioning": vcfg.timestep_conditioning})
        out["version_source"] = "the VAE layout"
    for comp, keys in groups.items():
        entry = _tensor_summary([f], lambda _f, keys=keys: keys)
        if comp == "vae" and "version" in out:
            entry["version"] = out["version"]
        if comp == "transformer" and "transformer" in config:
            entry.update(_transformer_entry("LTX-Video", "", config["transformer"]))
        out["components"][comp] = entry
    return out


def _describe_upscaler_file(p: Path, f: SafetensorsFile, config: dict) -> dict[str, Any]:
    """A latent upscaler file with its kind; LTX-2 when its header has an option only LTX-2's have
    (load_latent_upsampler's family rule), else either family's."""
    from .loading.ltx2_upsamplers import upsampler_config
    from .models.latent_upsampler import upsampler_kind
    fam = "LTX-2" if any(k in config for k in ("rational_resampler", "spatial_scale")) else "LTX-Video or LTX-2"
    entry = {**_tensor_summary([f]), "kind": upsampler_kind(upsampler_config(p))}
    return {"path": str(p), "format": "latent upscaler file", "family": fam, "components": {"latent_upsampler": entry}}


def _describe_ltx2_file(p: Path, f: SafetensorsFile, config: dict) -> dict[str, Any]:
    """Group the bundle's tensors by the LTX-2 component key maps (connectors live under the
    DiT's prefix but are their own component)."""
    maps = {name: ltx2.component_keymaps(name) for name in ltx2.COMPONENTS}
    groups: dict[str, list[str]] = defaultdict(list)
    for k in f.keys():
        comp = next((name for name, ms in maps.items() if any(m.apply(k) is not None for m in ms)), None)
        comp = comp or next((name for name, ms in maps.items() if any(ltx2.keymap_claims(m, k) for m in ms)),
                            "other")
        groups[comp].append(k)
    t = config.get("transformer", {}) if isinstance(config.get("transformer"), dict) else {}
    vocoder = config.get("vocoder", {}) if isinstance(config.get("vocoder"), dict) else {}
    version = _ltx2_version(t, vocoder)
    out: dict[str, Any] = {"path": str(p), "format": "Lightricks single file", "family": "LTX-2",
                           "version": version, "version_source": "the transformer layout", "components": {}}
    if f.metadata.get("model_version"):
        out["model_version"] = f.metadata["model_version"]
    # ltx-core's defaults for a header that leaves the size out
    shape = {"num_layers": t.get("num_layers", 48), "num_attention_heads": t.get("num_attention_heads", 32)}
    for comp, keys in groups.items():
        entry = _tensor_summary([f], lambda _f, keys=keys: keys)
        if comp == "transformer":
            entry.update(_transformer_entry("LTX-2", version, shape))
        out["components"][comp] = entry
    return out


def _describe_split_folder(p: Path) -> dict[str, Any]:
    """Every safetensors file of an LTX-2.5 per-component folder (one level of subfolders deep, as
    the loader looks) under its role: the set's four, the upscalers with their kind, the rest
    (LoRAs, the duration head, ...) as "other"."""
    from .loading.ltx2_upsamplers import upsampler_config
    from .models.latent_upsampler import upsampler_kind
    version = ltx2_release(p)
    out: dict[str, Any] = {"path": str(p), "format": "LTX-2.5 per-component files", "family": "LTX-2",
                           "version": version, "version_source": "the transformer file", "components": {}}
    for file in sorted([*p.glob("*.safetensors"), *p.glob("*/*.safetensors")]):
        with SafetensorsFile(file) as f:
            role = file_role(f) or "other"
            entry: dict[str, Any] = {"file": str(file.relative_to(p)), **_tensor_summary([f])}
            config = f.config_section() if f.metadata.get("config") else {}
            if role == "transformer":
                out.setdefault("model_version", f.metadata.get("model_version"))
                t = config.get("transformer", {}) if isinstance(config.get("transformer"), dict) else {}
                entry.update(_transformer_entry("LTX-2", version, {"num_layers": t.get("num_layers", 48),
                                                                  "num_attention_heads": t.get("num_attention_heads",
                                                                                               32)}))
        if role == "latent_upsampler":
            entry["kind"] = upsampler_kind(upsampler_config(file))
        name, i = role, 2
        while name in out["components"]:  # two upscalers, several LoRAs: one entry each
            name, i = f"{role} {i}", i + 1
        out["components"][name] = entry
    if not out.get("model_version"):
        out.pop("model_version", None)
    return out


def format_description(d: dict[str, Any]) -> str:
    lines = [f"{d['path']}", f"  format:  {d['format']}", f"  family:  {d['family']}"]
    if "pipeline" in d:
        lines.append(f"  pipeline: {d['pipeline']}")
    if "version" in d:
        lines.append(f"  version: {d['version']} (from {d.get('version_source', 'the configs')})")
    if "model_version" in d:
        lines.append(f"  model_version: {d['model_version']} (header)")
    if "parameters" in d:
        lines.append(f"  parameters: {d['parameters']:,} in all (counted from the headers)")
    lines.append("  components:")
    for name, c in d["components"].items():
        bits = [c[k] for k in ("file", "class", "kind") if c.get(k)]
        if "size" in c:
            bits.append(c["size"])
        if "parameters" in c:
            bits.append(f"{c['parameters']:,} parameters")
            bits.append(", ".join(f"{k} {v / c['parameters']:.0%}" for k, v in c["dtypes"].items()))
        if "fp8" in c:
            bits.append(c["fp8"])
        lines.append(f"    {name}: " + "; ".join(bits))
    return "\n".join(lines)
