"""Writers for the real checkpoint formats, used to make test checkpoints.

The Lightricks single-file layout is produced by inverting the key conventions independently
of ltxengine's loader (from the original LTX-Video code's names); tests confirm each inverse
with diffusers' own single-file converter before trusting it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors.torch import save_file


def original_transformer_keys(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        k = k.replace("proj_in", "patchify_proj").replace("time_embed", "adaln_single")
        k = k.replace("norm_q", "q_norm").replace("norm_k", "k_norm")
        out["model.diffusion_model." + k] = v
    return out


def original_transformer_config(cfg: dict, causal_temporal_positioning: bool = False) -> dict:
    """diffusers transformer config -> the original code's Transformer3DModel config."""
    return {
        "_class_name": "Transformer3DModel", "_diffusers_version": "0.25.1",
        "activation_fn": "gelu-approximate", "attention_bias": True,
        "attention_head_dim": cfg["attention_head_dim"], "attention_type": "default",
        "caption_channels": cfg["caption_channels"], "cross_attention_dim": cfg["cross_attention_dim"],
        "double_self_attention": False, "dropout": 0.0, "in_channels": cfg["in_channels"],
        "norm_elementwise_affine": False, "norm_eps": 1e-06, "norm_num_groups": 32,
        "num_attention_heads": cfg["num_attention_heads"], "num_embeds_ada_norm": 1000,
        "num_layers": cfg["num_layers"], "num_vector_embeds": None, "only_cross_attention": False,
        "out_channels": cfg["out_channels"], "project_to_2d_pos": True, "upcast_attention": False,
        "use_linear_projection": False, "qk_norm": "rms_norm", "standardization_norm": "rms_norm",
        "positional_embedding_type": "rope", "positional_embedding_theta": 10000.0,
        "positional_embedding_max_pos": [20, 2048, 2048], "timestep_scale_multiplier": 1000,
        "causal_temporal_positioning": causal_temporal_positioning,
    }


# diffusers -> original names of the 0.9.0 VAE, as listed in the original LTX-Video code
# (ltx_video/utils/diffusers_config_mapping.py), most specific first.
_VAE_090 = [
    ("decoder.up_blocks.3.conv_in", "decoder.up_blocks.7"), ("decoder.up_blocks.3.upsamplers.0", "decoder.up_blocks.8"),
    ("decoder.up_blocks.3", "decoder.up_blocks.9"), ("decoder.up_blocks.2.upsamplers.0", "decoder.up_blocks.5"),
    ("decoder.up_blocks.2.conv_in", "decoder.up_blocks.4"), ("decoder.up_blocks.2", "decoder.up_blocks.6"),
    ("decoder.up_blocks.1.upsamplers.0", "decoder.up_blocks.2"), ("decoder.up_blocks.1", "decoder.up_blocks.3"),
    ("decoder.up_blocks.0", "decoder.up_blocks.1"), ("decoder.mid_block", "decoder.up_blocks.0"),
    ("encoder.down_blocks.3", "encoder.down_blocks.8"), ("encoder.down_blocks.2.downsamplers.0", "encoder.down_blocks.7"),
    ("encoder.down_blocks.2", "encoder.down_blocks.6"), ("encoder.down_blocks.1.downsamplers.0", "encoder.down_blocks.4"),
    ("encoder.down_blocks.1.conv_out", "encoder.down_blocks.5"), ("encoder.down_blocks.1", "encoder.down_blocks.3"),
    ("encoder.down_blocks.0.conv_out", "encoder.down_blocks.2"),
    ("encoder.down_blocks.0.downsamplers.0", "encoder.down_blocks.1"), ("encoder.mid_block", "encoder.down_blocks.9"),
]


def _rename_first(key: str, rules) -> str:
    for old, new in rules:
        if key.startswith(old + "."):
            return new + key[len(old):]
    return key


def _decoder_091(key: str) -> str:
    if key.startswith("decoder.mid_block."):
        return "decoder.up_blocks.0." + key[len("decoder.mid_block."):]
    m = re.match(r"decoder\.up_blocks\.(\d+)\.upsamplers\.0\.(.*)", key)
    if m:
        return f"decoder.up_blocks.{2 * int(m[1]) + 1}.{m[2]}"
    m = re.match(r"decoder\.up_blocks\.(\d+)\.(.*)", key)
    if m:
        return f"decoder.up_blocks.{2 * int(m[1]) + 2}.{m[2]}"
    if key.startswith("decoder.time_embedder."):
        return "decoder.last_" + key[len("decoder."):]
    if key == "decoder.scale_shift_table":
        return "decoder.last_scale_shift_table"
    return key


def _encoder_095(key: str) -> str:
    if key.startswith("encoder.mid_block."):
        return "encoder.down_blocks.8." + key[len("encoder.mid_block."):]
    m = re.match(r"encoder\.down_blocks\.(\d+)\.downsamplers\.0\.(.*)", key)
    if m:
        return f"encoder.down_blocks.{2 * int(m[1]) + 1}.{m[2]}"
    m = re.match(r"encoder\.down_blocks\.(\d+)\.(.*)", key)
    if m:
        return f"encoder.down_blocks.{2 * int(m[1])}.{m[2]}"
    return key


def original_vae_keys(sd: dict[str, torch.Tensor], variant: str) -> dict[str, torch.Tensor]:
    out = {}
    for k, v in sd.items():
        if k == "latents_mean":
            k = "per_channel_statistics.mean-of-means"
        elif k == "latents_std":
            k = "per_channel_statistics.std-of-means"
        else:
            if k.startswith("decoder."):
                k = _rename_first(k, _VAE_090) if variant == "0.9.0" else _decoder_091(k)
            else:
                k = _rename_first(k, _VAE_090) if variant != "0.9.5" else _encoder_095(k)
            k = k.replace(".resnets.", ".res_blocks.").replace("conv_shortcut.conv", "conv_shortcut")
            k = k.replace("norm3.", "norm3.norm.")
        out["vae." + k] = v
    c = sd["latents_mean"].shape[0]
    # statistics the original file carries and a loader must drop
    out["vae.per_channel_statistics.channel"] = torch.arange(c, dtype=torch.float32)
    out["vae.per_channel_statistics.mean-of-stds"] = torch.ones(c)
    return out


def save_single_file(path: Path, tensors: dict[str, torch.Tensor], config: dict | None,
                     metadata: dict[str, str] | None = None) -> Path:
    meta = dict(metadata or {})
    if config is not None:
        meta["config"] = json.dumps(config)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=meta or None)
    return path


# -- fp8 checkpoint layouts ------------------------------------------------------------------------
# Written from the producers' conventions, independently of ltxengine's loader and quantizer.

def fp8_quantize_lightricks(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ltx-core 1.0.0's per-tensor recipe (quantization/fp8_scaled_mm.py): s = 448 / max|W|,
    W8 = clamp(W * s, +-448) in e4m3, stored weight_scale = 1 / s. Kept in nn.Linear's (out, in)
    layout: that is how the -fp8 files store it (ltx-core transposes only at load)."""
    s = 448.0 / w.float().abs().amax()
    w8 = (w.float() * s).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)
    return w8, s.reciprocal()


def lightricks_fp8(sd: dict[str, torch.Tensor], layers, input_scales: dict[str, float] | None = None):
    """Lightricks ``-fp8`` layout: ``<layer>.weight`` F8_E4M3 + ``<layer>.weight_scale`` F32 0-d, and
    ``<layer>.input_scale`` F32 0-d for the layers in ``input_scales``; every other tensor as given."""
    out = dict(sd)
    for layer in layers:
        out[layer + ".weight"], out[layer + ".weight_scale"] = fp8_quantize_lightricks(sd[layer + ".weight"])
        if input_scales and layer in input_scales:
            out[layer + ".input_scale"] = torch.tensor(float(input_scales[layer]))
    return out


def plain_fp8(sd: dict[str, torch.Tensor], layers):
    """A plain cast of the layers' weights to e4m3, no scales (ltx-core's fp8-cast downcast)."""
    return {k: (v.to(torch.float8_e4m3fn) if k[: -len(".weight")] in set(layers) and k.endswith(".weight") else v)
            for k, v in sd.items()}


def comfy_tag(conf: dict) -> torch.Tensor:
    """ComfyUI's ``<layer>.comfy_quant`` tensor: the UTF-8 bytes of the JSON config as uint8."""
    return torch.tensor(list(json.dumps(conf).encode("utf-8")), dtype=torch.uint8)


def comfy_fp8(sd: dict[str, torch.Tensor], layers, *, header: bool = False, input_scales=None,
              conf: dict | None = None) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """ComfyUI mixed precision: fp8 weight + ``weight_scale`` (+ ``input_scale``) per layer, tagged
    by a ``<layer>.comfy_quant`` tensor or (``header=True``) by the ``_quantization_metadata`` header
    JSON ``{"layers": {layer: conf}}``. Returns (tensors, header metadata)."""
    conf = conf or {"format": "float8_e4m3fn"}
    out = lightricks_fp8(sd, layers, input_scales)
    if header:
        return out, {"_quantization_metadata": json.dumps({"layers": {layer: conf for layer in layers}})}
    for layer in layers:
        out[layer + ".comfy_quant"] = comfy_tag(conf)
    return out, {}


def comfy_scaled_fp8(sd: dict[str, torch.Tensor], layers, prefix: str, *, marker_dtype=torch.float8_e4m3fn,
                     full_precision: bool = False, scale_inputs: dict[str, float] | None = None):
    """ComfyUI's older scaled-fp8 layout: a ``<prefix>scaled_fp8`` marker tensor (empty, or 2 elements
    for full-precision matmul) whose dtype names the fp8 type, and ``<layer>.scale_weight`` /
    ``<layer>.scale_input`` scalars."""
    out = dict(sd)
    out[prefix + "scaled_fp8"] = torch.zeros(2 if full_precision else 0, dtype=marker_dtype)
    for layer in layers:
        out[layer + ".weight"], out[layer + ".scale_weight"] = fp8_quantize_lightricks(sd[layer + ".weight"])
        if scale_inputs and layer in scale_inputs:
            out[layer + ".scale_input"] = torch.tensor(float(scale_inputs[layer]))
    return out


def save_diffusers_pipeline(root: Path, components: dict) -> Path:
    """A diffusers pipeline folder: model_index.json plus each model's save_pretrained."""
    root.mkdir(parents=True, exist_ok=True)
    index = {"_class_name": "LTXPipeline", "_diffusers_version": "0.42.1"}
    for name, model in components.items():
        model.save_pretrained(root / name, safe_serialization=True)
        index[name] = ["diffusers", type(model).__name__]
    (root / "model_index.json").write_text(json.dumps(index))
    return root
