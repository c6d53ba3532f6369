"""LTX-2.3/2.5 vocoder with bandwidth extension against diffusers' LTX2VocoderWithBWE and ltx-core's
VocoderWithBWE (same weights, fp32): each piece (SnakeBeta, the kaiser and Hann-sinc resamplers, the
causal mel front end), the whole class, a diffusers folder and the single file's keys and header
config loaded strictly, the released config on meta."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxengine.config import ConfigError, parse_config
from ltxengine.loading import ltx2 as ltx2_loading
from ltxengine.loading.ltx2_audio import VOCODER_KEYMAP, vocoder_config_from_original
from ltxengine.loading.safetensors_io import CheckpointError
from ltxengine.models.bigvgan import Downsample, SnakeBeta, Upsample, kaiser_sinc_filter
from ltxengine.models.vocoder import (MelSTFT, VocoderWithBWE, VocoderWithBWEConfig, build_vocoder,
                                      vocoder_config_from_diffusers)

from ..helpers import assert_close_scaled
from ..oracles import ltx_core
from .vocoder_fixtures import BWE_CASES, bwe_to_original, make_bwe_pair, release_bwe_section, stft_buffers_

diffusers = pytest.importorskip("diffusers")
from diffusers.pipelines.ltx2 import vocoder as dv  # noqa: E402

pytestmark = [pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN:UserWarning"),
              # diffusers' BWE forward reads self.hop_length through its deprecated config fallback
              pytest.mark.filterwarnings("ignore:Accessing config attribute `hop_length`:FutureWarning")]

# The same torch ops in the same order on every side (SnakeBeta's 1 / (b + eps) first, the stacked
# block mean, the filters as grouped convs); measured bit-equal (0) everywhere. A wiring error
# (alpha / beta swapped, a filter off by one tap, a missed clamp) shows at > 1e-3.
REL_TOL = 1e-6


@pytest.fixture(autouse=True)
def _plain_cpu_convs():
    """oneDNN builds a kernel per new conv shape (~0.1-1 s each here); native convs, same math."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def _mel(config, frames=3, seed=2):
    bins = config.in_channels // config.out_channels
    return torch.randn(2, config.out_channels, frames, bins, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- pieces


@pytest.mark.parametrize("ratio, kernel", [(2, 12), (3, 9), (2, 13), (4, 8)])
def test_resamplers_match_diffusers(ratio, kernel):
    x = torch.randn(2, 3, 17, generator=torch.Generator().manual_seed(0))
    assert torch.equal(kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel),
                       dv.kaiser_sinc_filter1d(0.5 / ratio, 0.6 / ratio, kernel))
    for ours, ref in ((Upsample(ratio, kernel), dv.UpSample1d(ratio, kernel)),
                      (Downsample(ratio, kernel), dv.DownSample1d(ratio, kernel)),
                      (Upsample(ratio, window="hann"), dv.UpSample1d(ratio, window_type="hann"))):
        assert torch.equal(ours.filter, ref.filter)
        got, expected = ours(x), ref(x)
        assert got.shape[-1] in (17 * ratio, 17 // ratio + (17 % ratio > 0))
        assert torch.equal(got, expected), type(ours).__name__


def test_hann_filter_moves_once_to_the_input_device():
    """Not in the checkpoint, so strict loading leaves it on the CPU; the first call moves it (meta
    stands in for a GPU here)."""
    up = Upsample(3, window="hann")
    assert "filter" not in up.state_dict() and up.filter.device.type == "cpu"
    assert up(torch.empty(1, 2, 9, device="meta")).shape == (1, 2, 27)
    assert up.filter.device.type == "meta"


@pytest.mark.parametrize("use_beta", [True, False])
def test_snake_matches_diffusers(use_beta):
    g = torch.Generator().manual_seed(0)
    ref = dv.SnakeBeta(5, use_beta=use_beta)
    with torch.no_grad():
        for p in ref.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)  # log alpha, log beta
    ours = SnakeBeta(5, use_beta=use_beta)
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.randn(2, 5, 11, generator=g) * 3
    assert torch.equal(ours(x), ref(x))


def test_mel_front_end_matches_diffusers():
    ref = dv.MelSTFT(filter_length=32, hop_length=8, window_length=32, num_mel_channels=6)
    stft_buffers_(ref, seed=0)
    ours = MelSTFT(32, 8, 32, 6)
    ours.load_state_dict(ref.state_dict(), strict=True)
    wave = torch.randn(3, 40, generator=torch.Generator().manual_seed(1)) * 0.3
    expected = ref(wave)[0]
    got = ours(wave)
    assert got.shape == (3, 6, 5) and torch.equal(got, expected)
    assert (expected > -11).float().mean() > 0.9  # mostly above the log floor log(1e-5)


# ---------------------------------------------------------------- the whole class


@pytest.mark.parametrize("name", list(BWE_CASES))
def test_matches_diffusers(name):
    ref, ours = make_bwe_pair(name)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    cfg = ours.config
    mel = _mel(cfg)
    with torch.no_grad():
        stage1 = ref.vocoder(mel)
        err1 = assert_close_scaled(ours.vocoder(mel), stage1, REL_TOL, f"{name} stage 1")
        expected = ref(mel)
        err = assert_close_scaled(ours(mel), expected, REL_TOL, name)
        residual = expected - ref.resampler(stage1)[..., :expected.shape[-1]]
    assert expected.shape == (2, cfg.out_channels, 3 * cfg.upsample_factor)
    # both paths carry signal, and the clamps leave most samples alone (they would hide errors)
    assert stage1.abs().max() > 0.02 and residual.abs().max() > 0.05
    assert (expected.abs() < 0.99).float().mean() > 0.9
    print(f"vocoder BWE {name}: max error stage 1 {err1:.1e}, output {err:.1e}")


def test_stage1_clamp_is_the_reference():
    """ltx-core clamps the stage-1 waveform (use_tanh_at_final false); diffusers' converter writes
    final_act_fn null. Loud stage 1: ours equals diffusers with "clamp", not with null."""
    ref, ours = make_bwe_pair("variant", final_act_fn="clamp")
    with torch.no_grad():
        for model in (ref, ours):
            model.vocoder.conv_out.weight.mul_(100.0)
        mel = _mel(ours.config)
        assert ours.vocoder(mel).abs().max() == 1.0
        expected = ref(mel)
        assert torch.equal(ours(mel), expected)
        unclamped = dv.LTX2VocoderWithBWE(**dict(BWE_CASES["variant"], final_act_fn=None)).eval()
        unclamped.load_state_dict(ref.state_dict(), strict=True)
        assert (unclamped(mel) - expected).abs().max() > 0.1
    assert vocoder_config_from_diffusers({"_class_name": "LTX2VocoderWithBWE", "final_act_fn": None},
                                         "vocoder").final_act_fn == "clamp"


@pytest.mark.parametrize("loud", [False, True])
def test_matches_ltx_core_from_header(loud):
    """ltx-core's VocoderWithBWE built by its configurator from the release's nested header section
    (narrower) and loaded through its key filter, against ours from the same section and single-file
    state dict through our config and key map; loud: stage 1 beyond [-1, 1], so its clamp acts."""
    mc = ltx_core("model.audio_vae.model_configurator")
    section = release_bwe_section(vocoder=64, bwe=32)
    config = vocoder_config_from_original(section, "ltx-2.3.safetensors")
    assert config == VocoderWithBWEConfig(hidden_channels=64, bwe_hidden_channels=32)
    source, _ = make_bwe_pair("release")
    if loud:
        with torch.no_grad():
            source.vocoder.conv_out.weight.mul_(100.0)
    original = bwe_to_original(source.state_dict())
    assert "vocoder.vocoder.resblocks.17.acts2.2.downsample.lowpass.filter" in original

    ours = build_vocoder(config).eval()
    ours.load_state_dict({VOCODER_KEYMAP.apply(k): v for k, v in original.items()}, strict=True)
    ref = mc.VocoderConfigurator.from_config({"vocoder": section}).eval()
    kf = mc.VOCODER_COMFY_KEYS_FILTER
    sd = {}
    for key, value in original.items():
        new = kf.apply_to_key(key)
        sd.update(dict(kf.apply_to_key_value(new, value)) if new is not None else {})
    ref.load_state_dict(sd, strict=True)
    mel = _mel(config)
    with torch.no_grad():
        expected = ref(mel)
        err = assert_close_scaled(ours(mel), expected, REL_TOL, "ltx-core vocoder with BWE")
        assert (ref.vocoder(mel).abs().max() == 1.0) == loud
    print(f"vocoder BWE vs ltx-core (loud={loud}): max error {err:.1e}")


def test_bf16_weights_compute_in_fp32():
    """ltx-core (400fd31) runs the whole pass in fp32 and returns the input's dtype: bf16 weights
    give exactly the fp32 result of the bf16-rounded weights, rounded to bf16."""
    _, ours = make_bwe_pair("variant")
    low = ours.to(torch.bfloat16)
    rounded = VocoderWithBWE(ours.config).eval()
    rounded.load_state_dict({k: v.float() for k, v in low.state_dict().items()}, strict=True)
    rounded.resampler.filter.copy_(low.resampler.filter.float())  # .to() rounds the buffer too
    mel = _mel(ours.config).bfloat16()
    with torch.no_grad():
        got = low(mel)
        assert got.dtype == torch.bfloat16
        assert torch.equal(got, rounded(mel.float()).bfloat16())


def test_bad_inputs():
    _, ours = make_bwe_pair("variant")
    with pytest.raises(ValueError, match="in_channels = 16"):
        ours(torch.randn(1, 2, 5, 6))
    with pytest.raises(ValueError, match="T >= 1"):
        ours(torch.randn(1, 2, 0, 8))


# ---------------------------------------------------------------- loading


def test_diffusers_folder_loads_strictly(tmp_path):
    """A diffusers-format folder as its converter writes it (final_act_fn null), saved by
    LTX2VocoderWithBWE.save_pretrained, through load_ltx2_component: identical outputs (stage 1
    stays inside [-1, 1], where the clamp is the identity); a missing or extra tensor is refused."""
    ref, _ = make_bwe_pair("variant")
    folder_model = dv.LTX2VocoderWithBWE(**dict(BWE_CASES["variant"], final_act_fn=None)).eval()
    folder_model.load_state_dict(ref.state_dict(), strict=True)
    folder_model.save_pretrained(tmp_path / "vocoder")
    ours = ltx2_loading.load_ltx2_component(tmp_path / "vocoder", "vocoder", device="cpu", dtype=torch.float32)
    assert isinstance(ours, VocoderWithBWE) and ours.config.final_act_fn == "clamp"
    assert ours.config.output_sampling_rate == 48000
    mel = _mel(ours.config)
    with torch.no_grad():
        assert folder_model.vocoder(mel).abs().max() < 1
        assert torch.equal(ours(mel), folder_model(mel))

    weights = tmp_path / "vocoder" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(weights)
    save_file({k: v for k, v in tensors.items() if k != "mel_stft.mel_basis"}, weights)
    with pytest.raises(CheckpointError, match="mel_stft.mel_basis"):
        ltx2_loading.load_ltx2_component(tmp_path / "vocoder", "vocoder", device="cpu", dtype=torch.float32)
    save_file(dict(tensors, **{"resampler.filter": torch.zeros(29)}), weights)
    with pytest.raises(CheckpointError, match="resampler.filter"):
        ltx2_loading.load_ltx2_component(tmp_path / "vocoder", "vocoder", device="cpu", dtype=torch.float32)


def test_single_file_and_folder_load_identical_weights(tmp_path):
    """The same weights as an LTX-2.3-style single file (nested header section, ltx-core key names,
    ``vocoder.`` prefix) through load_ltx2 and as a diffusers folder through load_ltx2_component:
    identical state dicts, configs and outputs."""
    ref, _ = make_bwe_pair("release")
    ref.save_pretrained(tmp_path / "vocoder")
    path = tmp_path / "ltx-2.3-vocoder.safetensors"
    tensors = {k: v.contiguous() for k, v in bwe_to_original(ref.state_dict()).items()}
    header = {"vocoder": release_bwe_section(vocoder=64, bwe=32)}
    save_file(tensors, str(path), metadata={"config": json.dumps(header), "model_version": "2.3.0"})
    single = ltx2_loading.load_ltx2(path, device="cpu", dtype=torch.float32, components=("vocoder",)).vocoder
    folder = ltx2_loading.load_ltx2_component(tmp_path / "vocoder", "vocoder", device="cpu", dtype=torch.float32)
    assert isinstance(single, VocoderWithBWE) and single.config == folder.config
    a, b = single.state_dict(), folder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    mel = _mel(single.config)
    with torch.no_grad():
        assert torch.equal(single(mel), folder(mel))


def test_release_config_on_meta():
    """The released 2.3 (= 2.5) vocoder: diffusers' converter config parses to our defaults, and
    on meta it has diffusers' parameters and ltx-core's single-file keys (mapped)."""
    mc = ltx_core("model.audio_vae.model_configurator")
    converter = {"_class_name": "LTX2VocoderWithBWE", "in_channels": 128, "hidden_channels": 1536,
                 "out_channels": 2, "upsample_kernel_sizes": [11, 4, 4, 4, 4, 4],
                 "upsample_factors": [5, 2, 2, 2, 2, 2], "act_fn": "snakebeta", "antialias": True,
                 "final_act_fn": None, "final_bias": False, "bwe_hidden_channels": 512,
                 "bwe_upsample_kernel_sizes": [12, 11, 4, 4, 4], "bwe_upsample_factors": [6, 5, 2, 2, 2],
                 "bwe_final_act_fn": None, "bwe_final_bias": False, "filter_length": 512, "hop_length": 80,
                 "window_length": 512, "num_mel_channels": 64, "input_sampling_rate": 16000,
                 "output_sampling_rate": 48000}
    config = vocoder_config_from_diffusers(converter, "vocoder/config.json")
    assert config == VocoderWithBWEConfig() == vocoder_config_from_original(release_bwe_section(), "x")
    assert config.output_sampling_rate == 48000 and config.stage1().output_sampling_rate == 16000
    assert config.upsample_factor == config.stage1().upsample_factor * 3 == 480  # 100 mel frames/s -> 48 kHz
    with torch.device("meta"):
        ours = build_vocoder(config)
        ref = dv.LTX2VocoderWithBWE()
        core = mc.VocoderConfigurator.from_config({"vocoder": release_bwe_section()})
    assert sum(p.numel() for p in ours.parameters()) == 128_537_448
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    mapped = {VOCODER_KEYMAP.apply("vocoder." + k): v.shape for k, v in core.state_dict().items()}
    assert mapped == {k: v.shape for k, v in ours.state_dict().items()}


def test_keymap_round_trip():
    _, ours = make_bwe_pair("variant")
    original = bwe_to_original(ours.state_dict())
    assert {"vocoder.vocoder.ups.1.weight", "vocoder.bwe_generator.act_post.downsample.lowpass.filter",
            "vocoder.mel_stft.stft_fn.inverse_basis"} <= set(original)
    assert {VOCODER_KEYMAP.apply(k) for k in original} == set(ours.state_dict())


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("change, match", [
    (dict(window_length=400), "window_length"),
    (dict(hop_length=100), "bwe_upsample_factors"),
    (dict(output_sampling_rate=44100), "output_sampling_rate"),
    (dict(num_mel_channels=80), "bwe_in_channels"),
    (dict(bwe_out_channels=1), "bwe_out_channels"),
    (dict(bwe_act_fn="gelu"), "'bwe_act_fn'"),
    (dict(bwe_upsample_kernel_sizes=(12, 11)), "'bwe_upsample_kernel_sizes'"),
    (dict(act_fn="leaky_relu"), "'antialias' must be false"),
    (dict(final_act_fn="relu"), "'final_act_fn'"),
    (dict(bwe_hidden_channels=48), "'bwe_hidden_channels'"),
])
def test_refused_config(change, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(VocoderWithBWEConfig, change, "config.json")


def test_diffusers_unknown_option_refused():
    with pytest.raises(ConfigError, match="unknown config option 'resblock'"):
        vocoder_config_from_diffusers({"_class_name": "LTX2VocoderWithBWE", "resblock": "AMP1"}, "vocoder")


@pytest.mark.parametrize("edit, match", [
    (lambda s: s["vocoder"].update(activation="snake"), r"\[vocoder\] \[vocoder\].*'activation' must be 'snakebeta'"),
    (lambda s: s["bwe"].update(resblock="1"), r"\[bwe\].*'resblock' must be 'AMP1'"),
    (lambda s: s["bwe"].pop("stereo"), "'stereo' must be True"),
    (lambda s: s["bwe"].pop("hop_length"), r"\['hop_length'\] are required"),
    (lambda s: s["bwe"].update(win_size=400), "'win_size' must equal n_fft"),
    (lambda s: s["bwe"].update(apply_final_activation=True), "'apply_final_activation' must be false"),
    (lambda s: s["bwe"].update(num_mels=80), "'num_mels' must be 64"),
    (lambda s: s["bwe"].update(sampling_rate=48000), "unknown config option 'sampling_rate'"),
    (lambda s: s.update(stereo=True), "unknown config option 'stereo'"),
    (lambda s: s["vocoder"].update(use_tanh_at_final="false"), "'use_tanh_at_final' must be true or false"),
    (lambda s: s["bwe"].update(upsample_rates=[6, 5, 2, 2]), "'bwe.upsample_kernel_sizes'"),
])
def test_header_refusals(edit, match):
    section = release_bwe_section()
    edit(section)
    with pytest.raises(ConfigError, match=match):
        vocoder_config_from_original(section, "x.safetensors")


def test_header_tanh_and_ignored_rate():
    section = release_bwe_section()
    section["vocoder"].update(use_tanh_at_final=True, output_sampling_rate=24000)  # ltx-core overrides the rate
    config = vocoder_config_from_original(section, "x")
    assert config.final_act_fn == "tanh" and config.stage1().output_sampling_rate == 16000
