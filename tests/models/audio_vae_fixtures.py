"""The tiny LTX-2 audio VAEs of the tests: diffusers' AutoencoderKLLTX2Audio with random weights beside
ours loaded from it, and the original single-file layout (header ``audio_vae`` section, key names).
Used by the audio VAE, loading and media tests."""

import pytest
import torch

from ltxengine.models.audio_vae import AudioVAE, AudioVAEConfig

from ..helpers import perturb_

pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTX2Audio  # noqa: E402

# fp32 CPU, same convs on all sides; the only difference is pixel norm computed as x * rsqrt(.)
# (ours, fp32) vs x / sqrt(.) (references): ~1 ulp per norm. Measured <= ~2e-6 relative to the
# output scale; a wiring error is >1e-2.
REL_TOL = 1e-5

# Statistics have base_channels entries and apply to packed (latent_channels * latent mel) features,
# so each case keeps base_channels = latent_channels * mel_bins / 2**(levels - 1). "release" differs from
# presets.demo_ltx2()'s audio VAE on purpose: 2 resnets per level, as the release has (the demo's has 1).
CASES = {
    # the 2.0 layout: 3 levels, 2 resnets per level, pixel norm, time-causal, no attention
    "release": dict(base_channels=16, ch_mult=(1, 2, 4), num_res_blocks=2, latent_channels=4, mel_bins=16),
    # attention at one level (nominal 64 -> 32) in encoder and decoder, plus the mid block
    "attention": dict(base_channels=16, ch_mult=(1, 2, 4), num_res_blocks=1, latent_channels=4, mel_bins=16,
                      resolution=64, attn_resolutions=(32,), mid_block_add_attention=True),
    # 2 levels: the decoder's 4T-3 frames rule no longer matches the network, so it crops and pads
    "two_level": dict(base_channels=32, ch_mult=(1, 2), num_res_blocks=1, latent_channels=4, mel_bins=16),
}


def ddconfig(cfg):
    """Original (ltx-core) ddconfig for a diffusers config."""
    return {"ch": cfg["base_channels"], "out_ch": 2, "in_channels": 2, "ch_mult": list(cfg["ch_mult"]),
            "num_res_blocks": cfg["num_res_blocks"], "attn_resolutions": list(cfg.get("attn_resolutions") or []),
            "resolution": cfg.get("resolution", 256), "z_channels": cfg["latent_channels"], "double_z": True,
            "dropout": 0.0, "mid_block_add_attention": cfg.get("mid_block_add_attention", False),
            "norm_type": "pixel", "causality_axis": "height", "mel_bins": cfg["mel_bins"], "downsample_time": False}


def original_header(cfg):
    """The single file's ``audio_vae`` header section for a diffusers config."""
    return {"audio_vae": {"model": {"params": {"ddconfig": ddconfig(cfg), "sampling_rate": 16000}},
                          "preprocessing": {"stft": {"filter_length": 1024, "hop_length": 160, "causal": True}}}}


def to_original(state_dict):
    """Our (= diffusers') keys -> the single file's, written from ltx-core's module names."""
    stats = {"latents_mean": "per_channel_statistics.mean-of-means",
             "latents_std": "per_channel_statistics.std-of-means"}
    return {"audio_vae." + stats.get(k, k): v for k, v in state_dict.items()}


def make_pair(name, seed=0):
    cfg = CASES[name]
    torch.manual_seed(seed)
    ref = AutoencoderKLLTX2Audio(**cfg).eval()
    perturb_(ref, seed=seed + 1)
    ours = AudioVAE(AudioVAEConfig(**cfg)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours
