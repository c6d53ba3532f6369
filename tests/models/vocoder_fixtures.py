"""The tiny LTX-2 vocoders of the tests: diffusers' LTX2Vocoder with random weights beside ours loaded
from it, and the single file's key names. Used by the vocoder and loading tests."""

import pytest
import torch

from ltxengine.models.vocoder import Vocoder, VocoderConfig

from ..helpers import perturb_

pytest.importorskip("diffusers")
from diffusers.pipelines.ltx2.vocoder import LTX2Vocoder  # noqa: E402

CASES = {
    # the 2.0 structure (128 mel channels in, 5 stages x240, kernels 3/7/11) at 1/32 of the width; differs
    # from presets.demo_ltx2()'s vocoder (32 mel channels, one resnet kernel) to keep the release's structure
    "release": dict(hidden_channels=32),
    # every other switch: 2 x 16 mel, two stages, uneven resnet lists, other slope, clamp, no final bias
    "variant": dict(in_channels=32, hidden_channels=16, upsample_kernel_sizes=(4, 7), upsample_factors=(2, 3),
                    resnet_kernel_sizes=(3, 5), resnet_dilations=((1, 2), (1, 3, 5)), leaky_relu_negative_slope=0.2,
                    final_act_fn="clamp", final_bias=False, output_sampling_rate=16000),
    "no_final_act": dict(in_channels=32, hidden_channels=8, upsample_kernel_sizes=(4,), upsample_factors=(2,),
                         resnet_kernel_sizes=(3,), resnet_dilations=((1, 3, 5),), final_act_fn=None),
}


def make_pair(name, seed=0):
    cfg = CASES[name]
    torch.manual_seed(seed)
    ref = LTX2Vocoder(**cfg).eval()
    perturb_(ref, seed=seed + 1)
    ours = Vocoder(VocoderConfig(**cfg)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


def to_original(state_dict):
    """Our (= diffusers') keys -> the single file's HiFi-GAN names (ltx-core's Vocoder modules)."""
    names = (("conv_in", "conv_pre"), ("upsamplers.", "ups."), ("resnets.", "resblocks."), ("conv_out", "conv_post"))
    out = {}
    for key, value in state_dict.items():
        for ours, theirs in names:
            if key.startswith(ours):
                key = theirs + key[len(ours):]
        out["vocoder." + key] = value
    return out
