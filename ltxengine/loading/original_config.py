"""Lightricks single-file configs (the JSON in the safetensors header) -> ltxengine configs.

The original LTX-Video code describes the transformer with PixArt-era field names and the VAE
as a list of blocks. Only the combinations the released checkpoints use can be built exactly;
anything else is refused by name rather than approximated.
"""

from __future__ import annotations

from typing import Any

from ..config import ConfigError, TransformerConfig, VideoVAEConfig, check_value, parse_config, same_value

# original transformer field -> required value (fields that only describe what the model is)
_TRANSFORMER_FIXED = {
    "adaptive_norm": "single_scale_shift",
    "standardization_norm": "rms_norm",
    "qk_norm": "rms_norm",
    "positional_embedding_type": "rope",
    "positional_embedding_theta": 10000.0,
    "positional_embedding_max_pos": [20, 2048, 2048],
    "timestep_scale_multiplier": 1000,
    "attention_type": "default",
    "dropout": 0.0,
    "double_self_attention": False,
    "only_cross_attention": False,
    "upcast_attention": False,
    "use_linear_projection": False,
    "num_vector_embeds": None,
    "patch_size": 1,
}
_TRANSFORMER_COPIED = ("num_attention_heads", "attention_head_dim", "in_channels", "out_channels", "num_layers",
                       "cross_attention_dim", "caption_channels", "activation_fn", "attention_bias",
                       "norm_elementwise_affine", "norm_eps")
# Fields that do not change the computation (training/TPU/PixArt leftovers).
_TRANSFORMER_IGNORED = ("use_tpu_flash_attention", "norm_num_groups", "num_embeds_ada_norm", "project_to_2d_pos",
                        "sample_size")


def transformer_config(raw: dict[str, Any], source: str) -> tuple[TransformerConfig, dict[str, Any]]:
    """-> (config, pipeline options). The only pipeline option is ``causal_temporal_positioning``
    (whether RoPE time coordinates get the causal first-frame fix)."""
    src = f"{source} [transformer]"
    if raw.get("_class_name", "Transformer3DModel") != "Transformer3DModel":
        raise ConfigError(f"{src}: _class_name must be 'Transformer3DModel', got {raw.get('_class_name')!r}")
    known = set(_TRANSFORMER_FIXED) | set(_TRANSFORMER_COPIED) | set(_TRANSFORMER_IGNORED)
    known.add("causal_temporal_positioning")
    for key, value in raw.items():
        if not key.startswith("_") and key not in known:
            raise ConfigError(f"{src}: unknown config option {key!r} = {value!r}")
    _check_fixed(raw, _TRANSFORMER_FIXED, src)
    fields = {k: raw[k] for k in _TRANSFORMER_COPIED if k in raw}
    fields["qk_norm"] = "rms_norm_across_heads"
    cfg = parse_config(TransformerConfig, fields, src)
    causal = check_value(raw.get("causal_temporal_positioning", False), bool, src, "causal_temporal_positioning")
    return cfg, {"causal_temporal_positioning": causal}


def _check_fixed(raw: dict[str, Any], fixed: dict[str, Any], src: str) -> None:
    """Options with the one value that can be built; compared as JSON values (1 is not true)."""
    for key, want in fixed.items():
        if key in raw and not same_value(raw[key], want):
            raise ConfigError(f"{src}: config option {key!r} must be {want!r}, got {raw[key]!r}")


_VAE_FIXED = {"dims": 3, "norm_layer": "pixel_norm", "latent_log_var": "uniform", "use_quant_conv": False,
              "spatial_padding_mode": "zeros", "normalize_latent_channels": False, "double_z": True}
_VAE_KNOWN = set(_VAE_FIXED) | {"_class_name", "in_channels", "out_channels", "latent_channels", "blocks",
                                "encoder_blocks", "decoder_blocks", "scaling_factor", "patch_size",
                                "causal_decoder", "timestep_conditioning",
                                "encoder_base_channels", "decoder_base_channels"}
_DOWNSAMPLE_RES = {"compress_space_res": "spatial", "compress_time_res": "temporal",
                   "compress_all_res": "spatiotemporal"}


# Block parameters read from the block lists -> (type, the field whose range rule applies).
BLOCK_PARAMS = {"num_layers": (int, "layers_per_block"), "multiplier": (int, "multiplier"),
                "inject_noise": (bool, "inject_noise"), "residual": (bool, "residual")}


def _blocks(raw_blocks, src: str, key: str) -> list[tuple[str, dict]]:
    """[[name, num_layers or {params}], ...] -> [(name, params)], every parameter this module reads
    type-checked (a string multiplier would otherwise repeat a string, not scale a width)."""
    if not isinstance(raw_blocks, (list, tuple)):
        raise ConfigError(f"{src}: config option {key!r} must be a list of [name, params], got {raw_blocks!r}")
    out = []
    for i, item in enumerate(raw_blocks):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and (isinstance(item[1], dict) or type(item[1]) is int)):
            raise ConfigError(f"{src}: {key} entries must be [name, num_layers or params], got {item!r}")
        name, params = item
        out.append((name, check_block_params({"num_layers": params} if type(params) is int else params,
                                             src, f"{key}[{i}]", name)))
    return out


def check_block_params(params: dict, src: str, where: str, name: str) -> dict:
    """A block's params with the known ones type- and range-checked; a 'res_x' block needs num_layers."""
    if name == "res_x" and "num_layers" not in params:
        raise ConfigError(f"{src}: {where} ('res_x') needs 'num_layers', got {params!r}")
    out = dict(params)
    for param, (hint, field) in BLOCK_PARAMS.items():
        if param in out:
            out[param] = check_value(out[param], hint, src, f"{where}.{param}", field)
    return out


def _encoder(blocks, src, base: int):
    """Encoder block list -> diffusers encoder fields.

    Stages start at each 'res_x'; the last 'res_x' is the mid block. 0.9.0/0.9.1 stages are
    res_x [compress_all] [res_x_y] (LTXVideoDownBlock3D); 0.9.5+ stages are res_x compress_*_res
    (LTXVideo095DownBlock3D).
    """
    stages: list[list[tuple[str, dict]]] = []
    for i, (name, p) in enumerate(blocks):
        if name == "res_x":
            stages.append([(name, p)])
        elif not stages:
            raise ConfigError(f"{src}: encoder_blocks[0] must be 'res_x', got {name!r}")
        else:
            stages[-1].append((name, p))
    if len(stages) < 2 or len(stages[-1]) != 1:
        raise ConfigError(f"{src}: encoder_blocks must end with a lone 'res_x' (the mid block), got {blocks!r}")
    *stages, mid = stages
    tails = [tuple(n for n, _ in s[1:]) for s in stages]
    layers = tuple(s[0][1]["num_layers"] for s in stages) + (mid[0][1]["num_layers"],)
    ch, widths = base, [base]
    if all(t in ((), ("compress_all",), ("res_x_y",), ("compress_all", "res_x_y")) for t in tails):
        for i, s in enumerate(stages):
            for name, p in s[1:]:
                if name == "res_x_y":
                    if i == len(stages) - 1:
                        raise ConfigError(f"{src}: a channel change in the last encoder stage is not supported")
                    ch *= p.get("multiplier", 2)
            if i < len(stages) - 1:
                widths.append(ch)
        return (tuple(widths), layers, tuple("compress_all" in t for t in tails),
                ("LTXVideoDownBlock3D",) * len(stages), ("conv",) * len(stages))
    for t, s in zip(tails, stages):
        if len(t) != 1 or t[0] not in _DOWNSAMPLE_RES:
            raise ConfigError(f"{src}: encoder stage {[n for n, _ in s]} is not supported (0.9.5+ stages are "
                              f"'res_x' followed by one of {sorted(_DOWNSAMPLE_RES)})")
        ch *= s[1][1].get("multiplier", 2)
        widths.append(ch)
    return (tuple(widths), layers, (True,) * len(stages), ("LTXVideo095DownBlock3D",) * len(stages),
            tuple(_DOWNSAMPLE_RES[t[0]] for t in tails))


def _decoder(blocks, src, base: int):
    """Decoder block list (encoder order) -> diffusers decoder fields."""
    rev = list(reversed(blocks))
    if not rev or rev[0][0] != "res_x":
        raise ConfigError(f"{src}: decoder_blocks must end with 'res_x' (the mid block), got {blocks!r}")
    mid = rev[0][1]
    groups, cur = [], None
    for name, p in rev[1:]:
        if cur is None:
            cur = {"conv_in": None, "up": None}
        if name == "res_x_y":
            if cur["conv_in"] or cur["up"]:
                raise ConfigError(f"{src}: decoder block order {name!r} not supported")
            cur["conv_in"] = p
        elif name == "compress_all":
            if cur["up"]:
                raise ConfigError(f"{src}: two upsamplers in one decoder stage are not supported")
            cur["up"] = p
        elif name == "res_x":
            cur["res"] = p
            groups.append(cur)
            cur = None
        else:
            raise ConfigError(f"{src}: decoder block {name!r} is not supported")
    if cur is not None:
        raise ConfigError(f"{src}: decoder_blocks must have 'res_x' at the start of every stage")
    factors = {g["up"].get("multiplier", 1) for g in groups if g["up"]} or {1}
    if len(factors) != 1:
        raise ConfigError(f"{src}: decoder upsampler multipliers must all be equal, got {sorted(factors)}")
    factor = factors.pop()
    if groups and groups[0]["conv_in"]:
        raise ConfigError(f"{src}: a channel-changing resnet in the first decoder stage is not supported")
    ch = base
    for g in groups:
        if g["conv_in"]:
            ch *= g["conv_in"].get("multiplier", 2)
        if g["up"]:
            ch *= g["up"].get("multiplier", 1)
    outs, layers, scaling, noise, residual = [], [mid["num_layers"]], [], [mid.get("inject_noise", False)], []
    for g in groups:
        if g["conv_in"]:
            ch //= g["conv_in"].get("multiplier", 2)
        if g["up"]:
            ch //= g["up"].get("multiplier", 1)
        outs.append(ch * factor)
        layers.append(g["res"]["num_layers"])
        noise.append(g["res"].get("inject_noise", False))
        scaling.append(g["up"] is not None)
        residual.append(bool(g["up"] and g["up"].get("residual", False)))
    return dict(
        decoder_block_out_channels=tuple(reversed(outs)),
        decoder_layers_per_block=tuple(reversed(layers)),
        decoder_spatio_temporal_scaling=tuple(reversed(scaling)),
        decoder_inject_noise=tuple(reversed(noise)),
        upsample_residual=tuple(reversed(residual)),
        upsample_factor=(factor,) * len(groups),
    )


def vae_config(raw: dict[str, Any], source: str) -> VideoVAEConfig:
    src = f"{source} [vae]"
    if raw.get("_class_name") != "CausalVideoAutoencoder":
        raise ConfigError(f"{src}: _class_name must be 'CausalVideoAutoencoder', got {raw.get('_class_name')!r}")
    for key, value in raw.items():
        if key not in _VAE_KNOWN:
            raise ConfigError(f"{src}: unknown config option {key!r} = {value!r}")
    _check_fixed(raw, _VAE_FIXED, src)
    enc_raw = raw.get("encoder_blocks", raw.get("blocks"))
    dec_raw = raw.get("decoder_blocks", raw.get("blocks"))
    if enc_raw is None or dec_raw is None:
        raise ConfigError(f"{src}: config needs 'blocks' or 'encoder_blocks' and 'decoder_blocks'")
    if "latent_channels" not in raw:
        raise ConfigError(f"{src}: config option 'latent_channels' is missing")
    base = {k: check_value(raw.get(k, 128), int, src, k) for k in ("encoder_base_channels", "decoder_base_channels")}
    widths, layers, scaling, types, down = _encoder(_blocks(enc_raw, src, "encoder_blocks"), src,
                                                 base["encoder_base_channels"])
    fields = dict(
        in_channels=raw.get("in_channels", 3), out_channels=raw.get("out_channels", 3),
        latent_channels=raw["latent_channels"], block_out_channels=widths, layers_per_block=layers,
        spatio_temporal_scaling=scaling, down_block_types=types, downsample_type=down,
        patch_size=raw.get("patch_size", 1), scaling_factor=raw.get("scaling_factor", 1.0),
        decoder_causal=raw.get("causal_decoder", False), timestep_conditioning=raw.get("timestep_conditioning", False),
        **_decoder(_blocks(dec_raw, src, "decoder_blocks"), src, base["decoder_base_channels"]),
    )
    return parse_config(VideoVAEConfig, fields, src, names={"decoder_causal": "causal_decoder"})
