"""LTX-2.0 vocoder against diffusers' LTX2Vocoder and ltx-core's Vocoder (same weights, fp32, tiny
widths with the release's structure), its single-file key map and header config."""

import pytest
import torch

from ltxengine.config import ConfigError, parse_config
from ltxengine.loading.ltx2_audio import VOCODER_KEYMAP, vocoder_config_from_original
from ltxengine.models.vocoder import Vocoder, VocoderConfig, vocoder_config_from_diffusers
from ltxengine.models.vocoder import VocoderWithBWEConfig

from ..helpers import assert_close_scaled, perturb_
from ..oracles import ltx_core
from .vocoder_fixtures import CASES, make_pair, to_original

diffusers = pytest.importorskip("diffusers")

pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN:UserWarning")

# Same torch convs in the same order on every side; measured bit-equal (0) against both references.
REL_TOL = 1e-6


@pytest.fixture(autouse=True)
def _plain_cpu_convs():
    """oneDNN builds a kernel per new conv shape (~0.1-1 s each here); native convs, same math."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def _mel(mel_bins=64, frames=5, seed=2):
    return torch.randn(2, 2, frames, mel_bins, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", list(CASES))
def test_matches_diffusers(name):
    ref, ours = make_pair(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    mel = _mel(ours.config.in_channels // 2)
    with torch.no_grad():
        expected = ref(mel)
        got = ours(mel)
    assert got.shape == (2, 2, 5 * ours.config.upsample_factor)
    err = assert_close_scaled(got, expected, REL_TOL, name)
    # neither vanishing nor saturated by tanh / clamp (which would hide errors)
    assert expected.abs().max() > 0.1 and (expected.abs() < 0.99).float().mean() > 0.9
    print(f"vocoder {name}: max error {err:.1e}")


@pytest.mark.parametrize("tanh, bias", [(True, True), (False, False)])
def test_matches_ltx_core_from_original_keys(tanh, bias):
    """ltx-core's Vocoder built by its configurator from a header section and loaded through its own
    key filter, against ours from the same section and state dict through our config and key map."""
    mc = ltx_core("model.audio_vae.model_configurator")
    section = {"upsample_initial_channel": 32, "resblock": "1", "stereo": True, "use_tanh_at_final": tanh,
               "use_bias_at_final": bias, "output_sampling_rate": 24000, "activation": "snake",
               "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [16, 15, 8, 4, 4],
               "resblock_kernel_sizes": [3, 7, 11], "resblock_dilation_sizes": [[1, 3, 5]] * 3}
    config = vocoder_config_from_original(section, "ltx-2.safetensors")
    assert config == VocoderConfig(hidden_channels=32, final_act_fn="tanh" if tanh else "clamp", final_bias=bias)
    torch.manual_seed(1)
    source = Vocoder(config)
    perturb_(source, seed=3)
    original = to_original(source.state_dict())

    ours = Vocoder(config).eval()
    ours.load_state_dict({VOCODER_KEYMAP.apply(k): v for k, v in original.items()}, strict=True)
    ref = mc.VocoderConfigurator.from_config({"vocoder": section}).eval()
    kf = mc.VOCODER_COMFY_KEYS_FILTER
    sd = {}
    for key, value in original.items():
        new = kf.apply_to_key(key)
        sd.update(dict(kf.apply_to_key_value(new, value)) if new is not None else {})
    ref.load_state_dict(sd, strict=True)
    mel = _mel()
    with torch.no_grad():
        expected = ref(mel)
        err = assert_close_scaled(ours(mel), expected, REL_TOL, "ltx-core vocoder")
    assert (expected.abs() < 0.99).float().mean() > 0.9
    print(f"vocoder vs ltx-core (tanh={tanh}): max error {err:.1e}")


def test_changed_weight_changes_output():
    _, ours = make_pair("variant")
    mel = _mel(16)
    with torch.no_grad():
        before = ours(mel)
        ours.resnets[3].convs1[2].weight.add_(0.05)  # last stage, last kernel, last dilation
        assert (ours(mel) - before).abs().max() > 1e-4


def test_dtype_preserved():
    _, ours = make_pair("no_final_act")
    with torch.no_grad():
        assert ours.to(torch.bfloat16)(_mel(16).bfloat16()).dtype == torch.bfloat16


def test_bwe_config_needs_build_vocoder():
    with pytest.raises(TypeError, match="build_vocoder"):
        Vocoder(VocoderWithBWEConfig())


def test_bad_inputs():
    _, ours = make_pair("release")
    with pytest.raises(ValueError, match="in_channels = 128"):
        ours(torch.randn(2, 5, 64))
    with pytest.raises(ValueError, match="in_channels = 128"):
        ours(torch.randn(1, 1, 5, 64))
    with pytest.raises(ValueError, match="T >= 1"):
        ours(torch.randn(1, 2, 0, 64))


@pytest.mark.parametrize("change, match", [
    (dict(act_fn="gelu"), "'act_fn' must be 'leaky_relu', 'snake' or 'snakebeta'"),
    (dict(antialias=True), "'antialias' must be false with act_fn 'leaky_relu'"),
    (dict(act_fn="snakebeta", antialias_kernel_size=0), "antialias_kernel_size"),
    (dict(final_act_fn="relu"), "final_act_fn"), (dict(upsample_kernel_sizes=(16, 15)), "upsample_kernel_sizes"),
    (dict(resnet_dilations=((1, 3, 5),)), "resnet_dilations"), (dict(hidden_channels=48), "hidden_channels"),
])
def test_refused_config(change, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(VocoderConfig, change, "config.json")


def test_diffusers_class_names():
    """LTX2Vocoder -> VocoderConfig; LTX2VocoderWithBWE -> VocoderWithBWEConfig (see test_vocoder_bwe.py);
    another class, or a BWE key in an LTX2Vocoder config, is refused."""
    assert isinstance(vocoder_config_from_diffusers({"_class_name": "LTX2VocoderWithBWE"}, "vocoder"),
                      VocoderWithBWEConfig)
    with pytest.raises(ConfigError, match="_class_name must be 'LTX2Vocoder' or 'LTX2VocoderWithBWE'"):
        vocoder_config_from_diffusers({"_class_name": "HifiGANVocoder"}, "vocoder")
    with pytest.raises(ConfigError, match="unknown config option 'bwe_hidden_channels'"):
        vocoder_config_from_diffusers({"bwe_hidden_channels": 512}, "vocoder")
    config = vocoder_config_from_diffusers({"_class_name": "LTX2Vocoder", "resnet_dilations": [[1, 3, 5]] * 3},
                                           "vocoder")
    assert config == VocoderConfig() and hash(config)


def test_full_size_parameter_count():
    mc = ltx_core("model.audio_vae.model_configurator")
    with torch.device("meta"):
        ours = Vocoder(VocoderConfig())
        ref = mc.VocoderConfigurator.from_config({"vocoder": {"resblock": "1", "stereo": True}})
    assert sum(p.numel() for p in ours.parameters()) == 55_592_802
    mapped = {VOCODER_KEYMAP.apply("vocoder." + k): v.shape for k, v in ref.state_dict().items()}
    assert mapped == {k: v.shape for k, v in ours.state_dict().items()}


# ---------------------------------------------------------------- header config and key map


def test_header_defaults_follow_ltx_core():
    assert vocoder_config_from_original({"resblock": "1", "stereo": True}, "x") == VocoderConfig()


@pytest.mark.parametrize("section, match", [
    ({"vocoder": {"resblock": "AMP1", "stereo": True}, "bwe": {"input_sampling_rate": 16000}}, "'activation'"),
    ({"resblock": "AMP1", "stereo": True, "activation": "snakebeta"}, "'AMP1' belongs in nested"),
    ({"stereo": True}, "'resblock' must be '1'"),
    ({"resblock": "1"}, "stereo"),
    ({"resblock": "1", "stereo": False}, "stereo"),
    ({"resblock": "1", "stereo": True, "num_mels": 80}, "unknown config option 'num_mels'"),
    ({"resblock": "1", "stereo": True, "upsample_initial_channel": 48}, "hidden_channels"),
])
def test_header_refusals(section, match):
    with pytest.raises(ConfigError, match=match):
        vocoder_config_from_original(section, "x.safetensors")


def test_keymap_round_trip():
    _, ours = make_pair("release")
    original = to_original(ours.state_dict())
    assert "vocoder.ups.4.weight" in original and "vocoder.resblocks.14.convs2.2.bias" in original
    assert {VOCODER_KEYMAP.apply(k) for k in original} == set(ours.state_dict())
    for key in ("audio_vae.encoder.conv_in.conv.weight", "vae.decoder.conv_out.conv.weight"):
        assert VOCODER_KEYMAP.apply(key) is None
