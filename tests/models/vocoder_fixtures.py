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


# ---------------------------------------------------------------- LTX-2.3/2.5 vocoder with BWE

from diffusers.pipelines.ltx2.vocoder import LTX2VocoderWithBWE  # noqa: E402

from ltxengine.models.vocoder import VocoderWithBWE, VocoderWithBWEConfig  # noqa: E402

BWE_CASES = {
    # the release (BigVGAN-v2 x160 -> 16 kHz, STFT 512/80, 64 mels, BWE x240 -> 48 kHz, ratio 3)
    # at 1/24 and 1/16 of the widths
    "release": dict(hidden_channels=64, bwe_hidden_channels=32),
    # every other switch: snake (alpha only) anti-aliased at x3 with an odd 9-tap filter and tanh
    # on stage 1; SnakeBeta without anti-aliasing, a bias and a clamp on the BWE generator; 2 x 6
    # mels, STFT 32/8, 24 -> 48 kHz (ratio 2), a stage-1 length (30) that is not a multiple of hop
    "variant": dict(in_channels=16, hidden_channels=16, upsample_kernel_sizes=(7, 4), upsample_factors=(3, 2),
                    resnet_kernel_sizes=(3, 5), resnet_dilations=((1, 2), (1, 3, 5)), act_fn="snake",
                    antialias_ratio=3, antialias_kernel_size=9, final_act_fn="tanh", final_bias=True,
                    bwe_in_channels=12, bwe_hidden_channels=16, bwe_upsample_kernel_sizes=(8, 4, 4),
                    bwe_upsample_factors=(4, 2, 2), bwe_resnet_kernel_sizes=(3,), bwe_resnet_dilations=((1, 3),),
                    bwe_antialias=False, bwe_final_act_fn="clamp", bwe_final_bias=True, filter_length=32,
                    hop_length=8, window_length=32, num_mel_channels=6, input_sampling_rate=24000,
                    output_sampling_rate=48000),
}


def stft_buffers_(mel_stft, seed: int) -> None:
    """A real causal STFT basis (periodic Hann x DFT, real rows then imaginary rows) and a random
    non-negative mel filterbank: what the checkpoint stores, so the log-mel is not a constant."""
    basis, mel_basis = mel_stft.stft_fn.forward_basis, mel_stft.mel_basis
    n_fft = basis.shape[-1]
    freqs = n_fft // 2 + 1
    t = torch.arange(n_fft, dtype=torch.float64)
    angle = 2 * torch.pi * torch.arange(freqs, dtype=torch.float64)[:, None] * t / n_fft
    window = torch.hann_window(n_fft, periodic=True, dtype=torch.float64)
    rows = torch.cat([torch.cos(angle), -torch.sin(angle)]) * window
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        basis.copy_(rows[:, None, :].float())
        mel_basis.copy_(torch.rand(mel_basis.shape, generator=g) * 2 / freqs)


def make_bwe_pair(name, seed=0, **changes):
    """diffusers' LTX2VocoderWithBWE (the stage-1 final act as ours: clamp unless the case says)
    with perturbed weights and real STFT buffers, and ours loaded from its state dict."""
    cfg = dict(final_act_fn="clamp") | BWE_CASES[name] | changes
    torch.manual_seed(seed)
    ref = LTX2VocoderWithBWE(**cfg).eval()
    resampler = ref.resampler.filter.clone()  # not a weight: computed, never stored
    # Small noise on the convs (at 0.1 the 2 x 3 convs per block grow the signal ~10x per stage,
    # and every sample saturates the clamps); log alpha / beta spread wide, so exp, 1 / beta and
    # a swapped alpha and beta all show.
    perturb_(ref, seed=seed + 1, std=0.02)
    g = torch.Generator().manual_seed(seed + 3)
    with torch.no_grad():
        ref.resampler.filter.copy_(resampler)
        for name, p in ref.named_parameters():
            if name.endswith((".alpha", ".beta")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    stft_buffers_(ref.mel_stft, seed + 2)
    ours = VocoderWithBWE(VocoderWithBWEConfig(**cfg)).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    return ref, ours


# ours (= diffusers') -> Lightricks' single-file names inside a generator (BigVGAN / HiFi-GAN modules)
_BWE_ORIGINAL_NAMES = (("conv_in", "conv_pre"), ("upsamplers.", "ups."), ("resnets.", "resblocks."),
                       ("conv_out", "conv_post"), ("act_out", "act_post"), ("downsample.filter", "downsample.lowpass.filter"))


def bwe_to_original(state_dict):
    """Our (= diffusers') LTX2VocoderWithBWE keys -> the LTX-2.3 single file's (ltx-core's
    VocoderWithBWE modules under ``vocoder.``)."""
    out = {}
    for key, value in state_dict.items():
        for ours, theirs in _BWE_ORIGINAL_NAMES:
            key = key.replace(ours, theirs)
        out["vocoder." + key] = value
    return out


def release_bwe_section(**widths):
    """The LTX-2.3 checkpoint header's ``vocoder`` section (as published ports quote it), with
    ``widths`` (stage 1, BWE) replacing upsample_initial_channel 1536 / 512."""
    stage = {"resblock": "AMP1", "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3,
             "stereo": True, "use_tanh_at_final": False, "activation": "snakebeta", "use_bias_at_final": False}
    return {
        "vocoder": dict(stage, upsample_initial_channel=widths.get("vocoder", 1536), upsample_rates=[5, 2, 2, 2, 2, 2],
                        upsample_kernel_sizes=[11, 4, 4, 4, 4, 4]),
        "bwe": dict(stage, upsample_initial_channel=widths.get("bwe", 512), upsample_rates=[6, 5, 2, 2, 2],
                    upsample_kernel_sizes=[12, 11, 4, 4, 4], apply_final_activation=False, input_sampling_rate=16000,
                    output_sampling_rate=48000, hop_length=80, n_fft=512, win_size=512, num_mels=64),
    }
