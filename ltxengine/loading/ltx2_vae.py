"""LTX-2 single files -> the video VAE and the latent upsampler: key map and header configs.

The VAE lives under ``vae.`` in the main checkpoint. Its header section ``vae`` is read the way
ltx-core's ``VideoEncoderConfigurator`` / ``VideoDecoderConfigurator`` read it (their defaults
where a key is absent); the original block lists are translated to diffusers'
``AutoencoderKLLTX2Video`` config. The spatial upscaler file holds the upsampler's keys without
renaming and a top-level header config read like ltx-core's ``LatentUpsamplerConfigurator``.
"""

from __future__ import annotations

from typing import Any

from ..config import ConfigError, check_value, parse_config, same_value
from ..models.latent_upsampler import LatentUpsamplerConfig, LTX2LatentUpsamplerConfig
from ..models.video_vae import LTX2VideoVAEConfig
from .keymaps import KeyMap
from .original_config import check_block_params

__all__ = ["KEYMAP", "KEYMAP_VAE_FILE", "vae_keymap", "vae_config_from_original", "config_from_original",
           "upsampler_config_from_original", "upsampler_config_from_diffusers"]

_STATS = (("per_channel_statistics.mean-of-means", "latents_mean"),
          ("per_channel_statistics.std-of-means", "latents_std"))
# Statistics the model does not use (channel index, mean of stds).
_DROP = ("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds")


def vae_keymap(num_down_blocks: int = 4, num_up_blocks: int = 3, prefix: str = "vae.") -> KeyMap:
    """Original keys -> ours for encoder/decoder block lists that alternate resnet groups and
    resamplers (what ``vae_config_from_original`` accepts). ``prefix``: "vae." in the bundles.

    Original encoder ``down_blocks`` are flat: 2i -> down_blocks.i, 2i+1 -> its downsampler,
    2n -> mid_block. The decoder list is flat in decoding order: 0 -> mid_block, 2i+1 -> up block
    i's upsampler, 2i+2 -> up block i. Patterns end with "." so index 1 never matches 10; a rule's
    output index is never larger than its input, so applying them in increasing order never
    re-renames a key.
    """
    enc = [(f"encoder.down_blocks.{2 * i + 1}.", f"encoder.down_blocks.{i}.downsamplers.0.")
           for i in range(num_down_blocks)]
    enc += [(f"encoder.down_blocks.{2 * i}.", f"encoder.down_blocks.{i}.") for i in range(1, num_down_blocks)]
    enc.append((f"encoder.down_blocks.{2 * num_down_blocks}.", "encoder.mid_block."))
    dec = [("decoder.up_blocks.0.", "decoder.mid_block.")]
    for i in range(num_up_blocks):
        dec += [(f"decoder.up_blocks.{2 * i + 1}.", f"decoder.up_blocks.{i}.upsamplers.0."),
                (f"decoder.up_blocks.{2 * i + 2}.", f"decoder.up_blocks.{i}.")]
    renames = sorted(enc, key=lambda r: _index(r[0])) + dec + [
        ("res_blocks", "resnets"), ("last_time_embedder", "time_embedder"),
        ("last_scale_shift_table", "scale_shift_table"), *_STATS]
    return KeyMap(prefix=prefix, renames=tuple(renames), drop=_DROP)


def _index(pattern: str) -> int:
    return int(pattern.rstrip(".").rsplit(".", 1)[1])


# 4 down and 4 up blocks: the LTX-2.3 / 2.5 layout, and the 2.0 one (3 up blocks), whose keys the
# rules for original up_blocks.7 / .8 never match. One map for both: a bundle's keys need no version.
KEYMAP = vae_keymap(num_up_blocks=4)
# A VAE-only file with bare keys (encoder.*, decoder.*, per_channel_statistics.*): LTX-2.5's per-component
# vae/ files and ComfyUI's split VAEs. ltx-core accepts both spellings (model_configurator.py,
# VAE_ENCODER/DECODER_COMFY_KEYS_FILTER); diffusers' converter loads such a file as is. It claims every
# key, so it is for a file that holds nothing but the VAE, never for a bundle.
KEYMAP_VAE_FILE = vae_keymap(num_up_blocks=4, prefix="")

# Header keys ltx-core reads, and keys of the original (LTX-Video era) config format that must keep
# the value ltx-core assumes because it does not read them.
_READ = {"dims", "in_channels", "out_channels", "latent_channels", "spatial_padding_mode", "encoder_blocks",
         "decoder_blocks", "patch_size", "norm_layer", "latent_log_var", "causal_decoder", "timestep_conditioning",
         "decoder_base_channels"}
_FIXED = {"dims": 3, "norm_layer": "pixel_norm", "latent_log_var": "uniform", "use_quant_conv": False,
          "normalize_latent_channels": False, "double_z": True, "scaling_factor": 1.0}
_DOWNSAMPLERS = {"compress_space_res": "spatial", "compress_time_res": "temporal", "compress_all_res": "spatiotemporal",
                 "compress_all": "conv"}
_UPSAMPLERS = {"compress_all": "spatiotemporal", "compress_space": "spatial", "compress_time": "temporal"}


def vae_config_from_original(section: dict[str, Any], source: str) -> LTX2VideoVAEConfig:
    """The header's ``vae`` section -> LTX2VideoVAEConfig, with ltx-core's defaults.

    ltx-core reads one ``spatial_padding_mode`` for both halves, defaulting to zeros for the
    encoder and reflect for the decoder, and defaults ``timestep_conditioning`` to True (diffusers'
    converter: False). ``scaling_factor`` is not read by ltx-core, so only 1.0 is accepted.
    """
    src = f"{source} [vae]"
    for key, value in section.items():
        if not key.startswith("_") and key not in _READ and key not in _FIXED and key != "encoder_base_channels":
            raise ConfigError(f"{src}: unknown config option {key!r} = {value!r}")
    for key, want in _FIXED.items():
        if key in section and not same_value(section[key], want):
            raise ConfigError(f"{src}: config option {key!r} must be {want!r}, got {section[key]!r}")
    latent = check_value(section.get("latent_channels", 128), int, src, "latent_channels")
    decoder_base = check_value(section.get("decoder_base_channels", 128), int, src, "decoder_base_channels")
    if not same_value(section.get("encoder_base_channels", latent), latent):
        raise ConfigError(f"{src}: config option 'encoder_base_channels' must equal latent_channels ({latent}): "
                          f"ltx-core's encoder starts at latent_channels, got {section['encoder_base_channels']!r}")
    padding = section.get("spatial_padding_mode")
    fields = dict(
        in_channels=section.get("in_channels", 3), out_channels=section.get("out_channels", 3),
        latent_channels=latent, patch_size=section.get("patch_size", 4),
        decoder_causal=section.get("causal_decoder", False),
        timestep_conditioning=section.get("timestep_conditioning", True),
        encoder_spatial_padding_mode=padding or "zeros", decoder_spatial_padding_mode=padding or "reflect",
        **_encoder_fields(_block_list(section.get("encoder_blocks", []), src, "encoder_blocks"), latent, src),
        **_decoder_fields(_block_list(section.get("decoder_blocks", []), src, "decoder_blocks"),
                          decoder_base * 8, src),
    )
    return parse_config(LTX2VideoVAEConfig, fields, src, names={
        "decoder_causal": "causal_decoder", "encoder_spatial_padding_mode": "spatial_padding_mode",
        "decoder_spatial_padding_mode": "spatial_padding_mode"})


config_from_original = vae_config_from_original


def _block_list(raw, src: str, key: str) -> list[tuple[str, dict]]:
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"{src}: config option {key!r} must be a list of [name, params], got {raw!r}")
    out = []
    for i, item in enumerate(raw):
        if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], str)
                and (isinstance(item[1], dict) or type(item[1]) is int)):
            raise ConfigError(f"{src}: {key} entries must be [name, num_layers or params], got {item!r}")
        name, params = item
        out.append((name, check_block_params({"num_layers": params} if type(params) is int else params,
                                             src, f"{key}[{i}]", name)))
    return out


def _encoder_fields(blocks, width: int, src: str) -> dict[str, Any]:
    """res_x, downsampler, res_x, downsampler, ..., res_x (mid) -> diffusers encoder fields."""
    if len(blocks) < 3 or len(blocks) % 2 == 0:
        raise ConfigError(f"{src}: encoder_blocks must alternate 'res_x' and a downsampler and end with 'res_x' "
                          f"(the mid block), got {[n for n, _ in blocks]}")
    widths, layers, kinds = [], [], []
    for i, (name, params) in enumerate(blocks):
        if i % 2 == 0:
            if name != "res_x":
                raise ConfigError(f"{src}: encoder_blocks[{i}] must be 'res_x' for LTX-2, got {name!r}")
            layers.append(params["num_layers"])
            continue
        if name not in _DOWNSAMPLERS:
            raise ConfigError(f"{src}: encoder_blocks[{i}] {name!r} is not supported (LTX-2 downsamplers are "
                              f"{sorted(_DOWNSAMPLERS)})")
        if name != "compress_all":
            width *= params.get("multiplier", 2)
        widths.append(width)
        kinds.append(_DOWNSAMPLERS[name])
    n = len(kinds)
    return dict(block_out_channels=tuple(widths), layers_per_block=tuple(layers), downsample_type=tuple(kinds),
                down_block_types=("LTX2VideoDownBlock3D",) * n, spatio_temporal_scaling=(True,) * n)


def _decoder_fields(blocks, width: int, src: str) -> dict[str, Any]:
    """Encoder-ordered list ending in the mid 'res_x'; decoding order is mid, then (upsampler,
    res_x) pairs. ltx-core's decoder always starts at decoder_base_channels * 8 channels."""
    rev = blocks[::-1]
    if len(rev) < 3 or len(rev) % 2 == 0 or any(rev[i][0] != "res_x" for i in range(0, len(rev), 2)):
        raise ConfigError(f"{src}: decoder_blocks must alternate 'res_x' and an upsampler, starting and ending with "
                          f"'res_x', got {[n for n, _ in blocks]}")
    widths, layers, noise, kinds, residual, factors = [], [], [], [], [], []
    for i, (name, params) in enumerate(rev):
        if i % 2 == 0:
            layers.append(params["num_layers"])
            noise.append(bool(params.get("inject_noise", False)))
            continue
        if name not in _UPSAMPLERS:
            raise ConfigError(f"{src}: decoder_blocks entry {name!r} is not supported (LTX-2 upsamplers are "
                              f"{sorted(_UPSAMPLERS)})")
        factor = params.get("multiplier", 1)
        widths.append(width)
        width //= factor
        kinds.append(_UPSAMPLERS[name])
        # ltx-core builds only compress_all upsamplers with the residual path.
        residual.append(name == "compress_all" and bool(params.get("residual", False)))
        factors.append(factor)
    n = len(kinds)
    return dict(decoder_block_out_channels=tuple(widths[::-1]), decoder_layers_per_block=tuple(layers[::-1]),
                decoder_inject_noise=tuple(noise[::-1]), upsample_type=tuple(kinds),  # decoding order
                upsample_residual=tuple(residual[::-1]), upsample_factor=tuple(factors[::-1]),
                decoder_spatio_temporal_scaling=(True,) * n)


# ltx-core LatentUpsamplerConfigurator: header key -> (our key, default)
_UPSAMPLER_KEYS = {"in_channels": ("in_channels", 128), "mid_channels": ("mid_channels", 512),
                   "num_blocks_per_stage": ("num_blocks_per_stage", 4), "dims": ("dims", 3),
                   "spatial_upsample": ("spatial_upsample", True), "temporal_upsample": ("temporal_upsample", False),
                   "spatial_scale": ("rational_spatial_scale", 2.0),
                   "rational_resampler": ("use_rational_resampler", False)}


def upsampler_config_from_original(raw: dict[str, Any], source: str) -> LTX2LatentUpsamplerConfig:
    """An LTX-2 upscaler file's header config (top level, no section) -> LTX2LatentUpsamplerConfig.

    Also reads LTX-Video's upscaler headers, whose keys are a subset of these: absent keys take
    ltx-core's defaults (mid_channels 512, no rational resampler = LTX-Video's pixel shuffle).
    """
    src = f"{source} [latent upsampler]"
    for key, value in raw.items():
        if not key.startswith("_") and key not in _UPSAMPLER_KEYS:
            raise ConfigError(f"{src}: unknown config option {key!r} = {value!r}")
    fields = {ours: raw.get(theirs, default) for theirs, (ours, default) in _UPSAMPLER_KEYS.items()}
    return parse_config(LTX2LatentUpsamplerConfig, fields, src,
                        names={ours: theirs for theirs, (ours, _) in _UPSAMPLER_KEYS.items()})


def upsampler_config_from_diffusers(data: dict[str, Any], source: str) -> LatentUpsamplerConfig:
    """A diffusers ``latent_upsampler/config.json``: LTX2LatentUpsamplerModel or (LTX-Video's)
    LTXLatentUpsamplerModel, chosen by ``_class_name``."""
    cls = data.get("_class_name", "LTXLatentUpsamplerModel")
    if cls == "LTX2LatentUpsamplerModel":
        return parse_config(LTX2LatentUpsamplerConfig, data, source)
    if cls == "LTXLatentUpsamplerModel":
        return parse_config(LatentUpsamplerConfig, data, source)
    raise ConfigError(f"{source}: _class_name must be LTXLatentUpsamplerModel or LTX2LatentUpsamplerModel, got {cls!r}")
