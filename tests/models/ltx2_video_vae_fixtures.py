"""The tiny LTX-2 video VAEs of the tests: diffusers' AutoencoderKLLTX2Video with random weights beside
ours loaded from it, and the same weights in the original single-file layout (the header's ``vae``
section and key names, written from ltx-core's module tree). Used by the VAE and loading tests."""

import dataclasses
import re

import pytest
import torch

from ltxengine.config import parse_config
from ltxengine.models.video_vae import VAE_LTX2, VAE_LTX23, LTX2VideoVAE, LTX2VideoVAEConfig
from ltxengine.presets import TINY_VAE_LTX2

from ..helpers import preset_kwargs, randomize_vae_
from ..oracles import ltx_core

pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTX2Video  # noqa: E402

# The 2.0 layout scaled down (presets.TINY_VAE_LTX2, bench's --smoke VAE): conv_in = latent width 8, four
# space-to-depth down blocks (spatial, temporal, spatiotemporal x2), three residual x2 spatiotemporal up blocks.
RELEASE = preset_kwargs(TINY_VAE_LTX2, VAE_LTX2)
CASES = {
    "2.0": dict(RELEASE, timestep_conditioning=True),  # what ltx-core builds when the header has no flag
    "2.0_no_tc": dict(RELEASE, timestep_conditioning=False),  # diffusers' converter default
    # every other switch diffusers' class has: a strided-conv down block, spatial / temporal up
    # blocks, a factor-1 non-residual upsampler, noise injection, causal decoder, swapped padding
    "variant": dict(latent_channels=8, block_out_channels=(16, 16, 32, 64), layers_per_block=(1, 0, 1, 1, 1),
                    downsample_type=("spatial", "conv", "spatiotemporal", "temporal"),
                    decoder_block_out_channels=(16, 32, 64), decoder_layers_per_block=(1, 1, 0, 1),
                    upsample_type=("spatial", "temporal", "spatiotemporal"), upsample_factor=(1, 2, 2),
                    upsample_residual=(False, True, True), decoder_inject_noise=(True, False, True, True),
                    timestep_conditioning=True, decoder_causal=True, encoder_spatial_padding_mode="reflect",
                    decoder_spatial_padding_mode="zeros"),
}
# The LTX-2.3 / 2.5 layout (VAE_LTX23) scaled down the way TINY_VAE_LTX2 scales 2.0: conv_in = latent width
# 8, the last down block keeps its width (64 -> 64), four non-residual up blocks 64 -> 32 (2x2x2), 32 -> 32
# (2x2x2, factor 1), 32 -> 16 (time), 16 -> 8 (space), zero padding in both halves.
TINY_V23 = dataclasses.replace(VAE_LTX23, latent_channels=8, block_out_channels=(16, 32, 64, 64),
                               layers_per_block=(1, 2, 1, 1, 1), decoder_block_out_channels=(16, 32, 32, 64),
                               decoder_layers_per_block=(1, 1, 2, 1, 1))
RELEASE_V23 = preset_kwargs(TINY_V23, VAE_LTX2)  # as diffusers arguments (its defaults are the 2.0 layout)
CASES_V23 = {
    "2.3": RELEASE_V23,  # the header's timestep_conditioning False (diffusers' converter default too)
    "2.3_tc": dict(RELEASE_V23, timestep_conditioning=True),  # the converter's --timestep_conditioning
}
# diffusers' class defaults differ from the release here (see LTX2VideoVAEConfig).
DIFFUSERS_EXTRA = dict(decoder_causal=False, spatial_compression_ratio=32, temporal_compression_ratio=8)


_PAIRS = {}


def make_pair(name):
    """(diffusers model, ours) with the same random weights; cached, the models are read-only."""
    if name not in _PAIRS:
        cfg = {**CASES, **CASES_V23}[name]
        torch.manual_seed(0)
        ref = AutoencoderKLLTX2Video(**{**DIFFUSERS_EXTRA, **cfg}).eval()
        randomize_vae_(ref, 1)
        ours = LTX2VideoVAE(parse_config(LTX2VideoVAEConfig, cfg, "test")).eval()
        ours.load_state_dict(ref.state_dict(), strict=True)
        _PAIRS[name] = ref, ours
    return _PAIRS[name]


# -- the original (Lightricks / ltx-core) layout --------------------------------------------------

def original_section(cfg: LTX2VideoVAEConfig) -> dict:
    """Our config written as the original header's ``vae`` section (ltx-core block lists)."""
    names = {"spatial": "compress_space_res", "temporal": "compress_time_res", "spatiotemporal": "compress_all_res"}
    enc, width = [], cfg.latent_channels
    for i, out in enumerate(cfg.block_out_channels):
        enc += [["res_x", {"num_layers": cfg.layers_per_block[i]}],
                [names[cfg.downsample_type[i]], {"multiplier": out // width}]]
        width = out
    enc.append(["res_x", {"num_layers": cfg.layers_per_block[-1]}])
    dec, n = [], len(cfg.decoder_block_out_channels)
    for i in range(n):
        dec.append(["res_x", {"num_layers": cfg.decoder_layers_per_block[i], "inject_noise": False}])
        kind = cfg.upsample_type[n - 1 - i]  # upsample_type is in decoding order, this list encoder-side first
        if kind == "spatiotemporal":
            dec.append(["compress_all", {"residual": cfg.upsample_residual[i], "multiplier": cfg.upsample_factor[i]}])
        else:  # ltx-core builds these without the residual path, so 2.3's headers do not write it
            dec.append([{"spatial": "compress_space", "temporal": "compress_time"}[kind],
                        {"multiplier": cfg.upsample_factor[i]}])
    dec.append(["res_x", {"num_layers": cfg.decoder_layers_per_block[-1], "inject_noise": False}])
    section = {"_class_name": "CausalVideoAutoencoder", "dims": 3, "in_channels": 3, "out_channels": 3,
               "latent_channels": cfg.latent_channels, "encoder_blocks": enc, "decoder_blocks": dec,
               "patch_size": 4, "norm_layer": "pixel_norm", "latent_log_var": "uniform", "causal_decoder": False,
               "decoder_base_channels": cfg.decoder_block_out_channels[-1] // 8}
    if not cfg.timestep_conditioning:
        section["timestep_conditioning"] = False  # absent means True in ltx-core
    pads = (cfg.encoder_spatial_padding_mode, cfg.decoder_spatial_padding_mode)
    if pads != ("zeros", "reflect"):  # ltx-core's defaults when the key is absent (the 2.0 headers)
        assert pads[0] == pads[1], f"ltx-core reads one spatial_padding_mode for both halves, got {pads}"
        section["spatial_padding_mode"] = pads[0]  # 2.3: "zeros"
    return section


def _original_key(key: str, n_down: int) -> str:
    """Our (diffusers) key -> the original checkpoint key, from ltx-core's module tree: flat
    encoder down_blocks (resnets, downsampler alternating, mid block last), flat decoder up_blocks
    (mid block first), res_blocks, last_time_embedder / last_scale_shift_table, statistics."""
    stats = {"latents_mean": "per_channel_statistics.mean-of-means",
             "latents_std": "per_channel_statistics.std-of-means"}
    if key in stats:
        return "vae." + stats[key]
    subs = [(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", lambda m: f"encoder.down_blocks.{2 * int(m[1]) + 1}."),
            (r"^encoder\.down_blocks\.(\d+)\.", lambda m: f"encoder.down_blocks.{2 * int(m[1])}."),
            (r"^encoder\.mid_block\.", lambda m: f"encoder.down_blocks.{2 * n_down}."),
            (r"^decoder\.mid_block\.", lambda m: "decoder.up_blocks.0."),
            (r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.", lambda m: f"decoder.up_blocks.{2 * int(m[1]) + 1}."),
            (r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up_blocks.{2 * int(m[1]) + 2}."),
            (r"^decoder\.(time_embedder|scale_shift_table)", lambda m: f"decoder.last_{m[1]}")]
    for pattern, repl in subs:
        new = re.sub(pattern, repl, key)
        if new != key:
            key = new
            break
    return "vae." + key.replace("resnets", "res_blocks")


def original_state_dict(ours) -> dict:
    sd = {_original_key(k, len(ours.config.block_out_channels)): v for k, v in ours.state_dict().items()}
    sd["vae.per_channel_statistics.channel"] = torch.arange(ours.config.latent_channels)
    sd["vae.per_channel_statistics.mean-of-stds"] = torch.ones(ours.config.latent_channels)
    return sd


def ltx_core_halves(ours):
    """ltx-core's VideoEncoder and VideoDecoder built from ``original_section(ours.config)`` and loaded
    strictly with ours' weights under their original names (the statistics go to both halves)."""
    vae_mod = ltx_core("model.video_vae")
    original = original_state_dict(ours)
    stats = {k[len("vae."):]: v for k, v in original.items()
             if k.startswith("vae.per_channel_statistics.") and k.endswith("-of-means")}
    halves = []
    for half, configurator in (("encoder", vae_mod.VideoEncoderConfigurator),
                               ("decoder", vae_mod.VideoDecoderConfigurator)):
        model = configurator.from_config({"vae": original_section(ours.config)}).eval()
        prefix = f"vae.{half}."
        model.load_state_dict({**{k[len(prefix):]: v for k, v in original.items() if k.startswith(prefix)},
                               **stats}, strict=True)
        halves.append(model)
    return tuple(halves)
