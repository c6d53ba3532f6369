"""LTX-2 audio VAE against diffusers' AutoencoderKLLTX2Audio and ltx-core's AudioEncoder / AudioDecoder
(same weights, fp32, tiny configs), its single-file key map and header config, and the mel front-end
against numpy references of the same formulas."""

import math

import numpy as np
import pytest
import torch

from ltxengine.config import ConfigError, parse_config
from ltxengine.loading.ltx2_audio import AUDIO_VAE_KEYMAP, audio_vae_config_from_original
from ltxengine.models.audio_vae import (AudioVAE, AudioVAEConfig, log_mel_spectrogram, pack_audio_latents, resample,
                                        slaney_mel_filterbank, unpack_audio_latents)

from ..helpers import assert_close_scaled
from ..oracles import ltx_core
from .audio_vae_fixtures import CASES, REL_TOL, ddconfig, make_pair, original_header, to_original

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLLTX2Audio  # noqa: E402
from diffusers.pipelines.ltx2.pipeline_ltx2 import LTX2Pipeline  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration on top of oneDNN:UserWarning")


@pytest.fixture(autouse=True)
def _plain_cpu_convs():
    """oneDNN builds a kernel per new conv shape (~0.1-1 s each on these tiny shapes); the native
    CPU convs are the same math and keep the file fast."""
    with torch.backends.mkldnn.flags(enabled=False):
        yield


def _mel(cfg, frames=21, batch=2, seed=3):
    return torch.randn(batch, 2, frames, cfg["mel_bins"], generator=torch.Generator().manual_seed(seed))


def _latents(ours, frames=6, batch=2, seed=4):
    c, g = ours.config, torch.Generator().manual_seed(seed)
    return torch.randn(batch, c.latent_channels, frames, c.latent_mel_bins, generator=g)


@pytest.mark.parametrize("name", list(CASES))
def test_state_dict_equals_diffusers(name):
    ref, ours = make_pair(name)
    theirs = ref.state_dict()
    assert set(ours.state_dict()) == set(theirs)
    for key, value in ours.state_dict().items():
        assert value.shape == theirs[key].shape, key


@pytest.mark.parametrize("name", list(CASES))
def test_encode_decode_match_diffusers(name):
    ref, ours = make_pair(name)
    mel, z = _mel(CASES[name]), _latents(ours)
    with torch.no_grad():
        posterior = ref.encode(mel).latent_dist
        err_e = assert_close_scaled(ours.encode(mel), posterior.mode(), REL_TOL, f"{name} encode")
        drawn = ours.encode(mel, sample_posterior=True, generator=torch.Generator().manual_seed(5))
        err_s = assert_close_scaled(drawn, posterior.sample(torch.Generator().manual_seed(5)), REL_TOL, "sample")
        assert (drawn - posterior.mode()).abs().max() > 1e-3  # the draw really adds noise
        expected = ref.decode(z).sample
        err_d = assert_close_scaled(ours.decode(z), expected, REL_TOL, f"{name} decode")
    print(f"{name}: encode {err_e:.1e}, sample {err_s:.1e}, decode {err_d:.1e}")


def test_normalize_pack_match_diffusers_pipeline():
    _, ours = make_pair("release")
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        ours.latents_mean.copy_(torch.randn(16, generator=g))
        ours.latents_std.copy_(torch.rand(16, generator=g) + 0.5)
    z = _latents(ours)
    packed = LTX2Pipeline._pack_audio_latents(z)
    assert torch.equal(ours.pack(z), packed) and torch.equal(pack_audio_latents(z), packed)
    assert torch.equal(ours.unpack(packed), LTX2Pipeline._unpack_audio_latents(packed, 6, num_mel_bins=4))
    assert torch.equal(unpack_audio_latents(packed, 4), z)
    norm = LTX2Pipeline._normalize_audio_latents(packed, ours.latents_mean, ours.latents_std)
    assert torch.equal(ours.normalize(packed), norm)
    assert torch.equal(ours.normalize(z), ours.unpack(norm))  # unpacked input is packed internally
    denorm = LTX2Pipeline._denormalize_audio_latents(packed, ours.latents_mean, ours.latents_std)
    assert torch.equal(ours.denormalize(packed), denorm)
    assert_close_scaled(ours.denormalize(ours.normalize(z)), z, 1e-6, "round trip")
    # control: the statistics really are applied, per packed feature
    assert (ours.normalize(z) - z).abs().max() > 0.1


@pytest.mark.parametrize("name", ["release", "attention"])
def test_matches_ltx_core_from_original_keys(name):
    """ltx-core built by its configurators from the header, loaded through its own key filters,
    against ours built from the same header through our config conversion and key map."""
    mc = ltx_core("model.audio_vae.model_configurator")
    ref, _ = make_pair(name)
    original = to_original(ref.state_dict())
    header = original_header(CASES[name])
    config = audio_vae_config_from_original(header["audio_vae"], "test.safetensors")
    assert config == AudioVAEConfig(**CASES[name])
    ours = AudioVAE(config).eval()
    ours.load_state_dict({AUDIO_VAE_KEYMAP.apply(k): v for k, v in original.items()}, strict=True)

    def build(configurator, key_filter):
        model = configurator.from_config(header).eval()
        sd = {key_filter.apply_to_key(k): v for k, v in original.items()}
        model.load_state_dict({k: v for k, v in sd.items() if k is not None}, strict=True)
        return model

    encoder = build(mc.AudioEncoderConfigurator, mc.AUDIO_VAE_ENCODER_COMFY_KEYS_FILTER)
    decoder = build(mc.AudioDecoderConfigurator, mc.AUDIO_VAE_DECODER_COMFY_KEYS_FILTER)
    mel, z = _mel(CASES[name]), _latents(ours)
    with torch.no_grad():
        # ltx-core's encoder normalizes its mean and its decoder denormalizes its input
        err_e = assert_close_scaled(ours.normalize(ours.encode(mel)), encoder(mel), REL_TOL, "ltx-core encoder")
        err_d = assert_close_scaled(ours.decode(ours.denormalize(z)), decoder(z), REL_TOL, "ltx-core decoder")
    print(f"{name} vs ltx-core: encoder {err_e:.1e}, decoder {err_d:.1e}")


def test_causal_in_time_and_output_lengths():
    _, ours = make_pair("release")
    mel, z = _mel(CASES["release"]), _latents(ours)
    later_mel, later_z = mel.clone(), z.clone()
    later_mel[:, :, 9:] += 1.0  # mel frames >= 4k + 1 reach latents >= k + 1 only (k = 2)
    later_z[:, :, 3:] += 1.0  # latent frame k first reaches mel frame 4k - 3 (k = 3)
    with torch.no_grad():
        h, h2 = ours.encode(mel), ours.encode(later_mel)
        d, d2 = ours.decode(z), ours.decode(later_z)
    assert torch.equal(h[:, :, :3], h2[:, :, :3]) and (h[:, :, 3] - h2[:, :, 3]).abs().max() > 1e-3
    assert torch.equal(d[:, :, :9], d2[:, :, :9]) and (d[:, :, 9] - d2[:, :, 9]).abs().max() > 1e-3
    assert h.shape == (2, 4, 6, 4) and d.shape == (2, 2, 21, 16)
    cfg = ours.config
    for t_lat in (1, 2, 7):
        with torch.no_grad():
            out = ours.decode(_latents(ours, frames=t_lat, batch=1))
        assert out.shape[2] == cfg.mel_frames(t_lat) == max(4 * t_lat - 3, 1)
        assert cfg.latent_frames(cfg.mel_frames(t_lat)) == t_lat
    assert [AudioVAEConfig().latent_frames(t) for t in (1, 4, 5, 6, 501)] == [1, 1, 2, 2, 126]
    assert AudioVAEConfig().latent_mel_bins == 16


def test_changed_weight_changes_output():
    ref, ours = make_pair("release")
    z = _latents(ours)
    with torch.no_grad():
        before = ours.decode(z)
        ours.decoder.up[0].block[0].conv2.conv.weight.add_(0.05)
        assert (ours.decode(z) - before).abs().max() > 1e-3


def test_dtype_preserved():
    _, ours = make_pair("release")
    ours = ours.to(torch.bfloat16)
    with torch.no_grad():
        h = ours.encode(_mel(CASES["release"]).bfloat16())
        assert h.dtype == torch.bfloat16 and ours.decode(h).dtype == torch.bfloat16
        assert ours.normalize(h).dtype == torch.bfloat16


def test_bad_inputs():
    _, ours = make_pair("release")
    with pytest.raises(ValueError, match="mel must be a"):
        ours.encode(torch.randn(2, 21, 16))
    with pytest.raises(ValueError, match="in_channels = 2"):
        ours.encode(torch.randn(1, 1, 21, 16))
    with pytest.raises(ValueError, match="mel_bins = 16"):
        ours.encode(torch.randn(1, 2, 21, 64))
    with pytest.raises(ValueError, match="latent_channels = 4"):
        ours.decode(torch.randn(1, 8, 5, 4))
    with pytest.raises(ValueError, match="latent mel bins = 4"):
        ours.decode(torch.randn(1, 4, 5, 16))
    with pytest.raises(ValueError, match=r"\(B, T, 16\) packed"):
        ours.normalize(torch.randn(1, 5, 32))
    # statistics sized by base_channels (16) cannot serve 4 x 8 packed features
    two = AudioVAE(AudioVAEConfig(**{**CASES["two_level"], "base_channels": 16}))
    with pytest.raises(ValueError, match="size of latents_mean"):
        two.denormalize(torch.randn(1, 4, 5, 8))


@pytest.mark.parametrize("change, match", [
    (dict(norm_type="group"), "norm_type"), (dict(causality_axis="width"), "causality_axis"),
    (dict(causality_axis="none"), "causality_axis"), (dict(double_z=False), "double_z"),
    (dict(mel_bins=None), "mel_bins"), (dict(num_res_blocks=0), "num_res_blocks"), (dict(ch_mult=()), "ch_mult"),
])
def test_refused_config(change, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(AudioVAEConfig, {**CASES["release"], **change}, "config.json")


def test_unknown_config_key_refused():
    with pytest.raises(ConfigError, match="unknown config option 'temb_channels'"):
        parse_config(AudioVAEConfig, {"temb_channels": 512}, "config.json")


def test_full_size_parameter_count():
    with torch.device("meta"):
        model = AudioVAE(AudioVAEConfig())
        ref = AutoencoderKLLTX2Audio()
    assert sum(p.numel() for p in model.parameters()) == 53_248_146  # encoder 21,333,008 + decoder 31,915,138
    assert sum(b.numel() for b in model.buffers()) == 256
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}


# ---------------------------------------------------------------- header config and key map

RELEASE_SECTION = {"model": {"params": {"ddconfig": ddconfig(dict(base_channels=128, ch_mult=(1, 2, 4),
                                                                  num_res_blocks=2, latent_channels=8, mel_bins=64)),
                                        "sampling_rate": 16000}},
                   "preprocessing": {"audio": {"sampling_rate": 16000, "stereo": True},
                                     "stft": {"filter_length": 1024, "hop_length": 160, "win_length": 1024,
                                              "causal": True},
                                     "mel": {"n_mel_channels": 64, "mel_fmin": 0, "mel_fmax": 8000}}}


def test_release_header_gives_release_config():
    assert audio_vae_config_from_original(RELEASE_SECTION, "ltx-2.safetensors") == AudioVAEConfig()


def test_header_defaults_follow_ltx_core():
    """Absent keys take ltx-core's defaults (mid-block attention on, attention at 8/16/32), and
    mel_bins falls back to preprocessing.mel then variables, as in ltx-core."""
    mc = ltx_core("model.audio_vae.model_configurator")
    for section in ({"model": {"params": {"ddconfig": {"mel_bins": 64}}}},
                    {"preprocessing": {"mel": {"n_mel_channels": 64}}}, {"variables": {"mel_bins": 64}}):
        config = audio_vae_config_from_original(section, "x")
        assert config.mel_bins == 64 and config.mid_block_add_attention and config.attn_resolutions == (8, 16, 32)
        with torch.device("meta"):
            ours = AudioVAE(config)
            enc = mc.AudioEncoderConfigurator.from_config({"audio_vae": section})
            dec = mc.AudioDecoderConfigurator.from_config({"audio_vae": section})
        theirs = {f"audio_vae.encoder.{k}": v.shape for k, v in enc.state_dict().items() if "statistics" not in k}
        theirs.update({f"audio_vae.decoder.{k}": v.shape for k, v in dec.state_dict().items()
                       if "statistics" not in k})
        theirs.update({f"audio_vae.{k}": v.shape for k, v in dec.state_dict().items() if "statistics" in k})
        mapped = {AUDIO_VAE_KEYMAP.apply(k): v for k, v in theirs.items()}
        assert mapped == {k: v.shape for k, v in ours.state_dict().items()}
        assert any("mid.attn_1" in k for k in mapped)


@pytest.mark.parametrize("change, match", [
    ({"ddconfig": {"mel_bins": 64, "use_linear_attn": True}}, "ddconfig.use_linear_attn"),
    ({"ddconfig": {"mel_bins": 64, "attn_type": "linear"}}, "attn_type"),
    ({"ddconfig": {"mel_bins": 64, "attn_type": "none"}}, "attn_type"),
    ({"ddconfig": {"mel_bins": 64, "resamp_with_conv": False}}, "resamp_with_conv"),
    ({"ddconfig": {"mel_bins": 64, "norm_type": "group"}}, "norm_type"),
    ({"ddconfig": {"mel_bins": 64, "causality_axis": "width"}}, "causality_axis"),
    ({"ddconfig": {"ch": 128}}, "mel_bins"),
    ({"stft": {"filter_length": 512}}, "filter_length"),
])
def test_header_refusals(change, match):
    section = {"model": {"params": {"ddconfig": change.get("ddconfig", {"mel_bins": 64})}}}
    if "stft" in change:
        section["preprocessing"] = {"stft": change["stft"]}
    with pytest.raises(ConfigError, match=match):
        audio_vae_config_from_original(section, "x.safetensors")


def test_keymap_round_trip():
    _, ours = make_pair("attention")
    original = to_original(ours.state_dict())
    assert {AUDIO_VAE_KEYMAP.apply(k) for k in original} == set(ours.state_dict())
    assert AUDIO_VAE_KEYMAP.apply("audio_vae.encoder.down.1.attn.0.q.weight") == "encoder.down.1.attn.0.q.weight"
    for key in ("audio_vae.per_channel_statistics.channel", "audio_vae.per_channel_statistics.mean-of-stds",
                "vocoder.conv_pre.weight", "vae.per_channel_statistics.mean-of-means"):
        assert AUDIO_VAE_KEYMAP.apply(key) is None


# ---------------------------------------------------------------- mel front-end (numpy references)


def _np_hz_to_mel(f):
    f = np.asarray(f, dtype=np.float64)
    return np.where(f < 1000.0, f / (200.0 / 3.0), 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) / (np.log(6.4) / 27.0))


def _np_mel_to_hz(m):
    return np.where(m < 15.0, m * (200.0 / 3.0), 1000.0 * np.exp((m - 15.0) * (np.log(6.4) / 27.0)))


def _np_filterbank(n_freqs, n_mels, sr):
    freqs = np.linspace(0.0, sr // 2, n_freqs)
    pts = _np_mel_to_hz(np.linspace(_np_hz_to_mel(0.0), _np_hz_to_mel(sr / 2.0), n_mels + 2))
    fb = np.zeros((n_freqs, n_mels))
    for i in range(n_mels):
        lo, mid, hi = pts[i], pts[i + 1], pts[i + 2]
        tri = np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid))
        fb[:, i] = np.maximum(tri, 0.0) * 2.0 / (hi - lo)
    return fb


def _np_log_mel(x, sr=16000, n_fft=1024, hop=160, n_mels=64):
    padded = np.pad(x, n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)  # periodic Hann
    frames = np.stack([padded[i * hop:i * hop + n_fft] * window for i in range(1 + len(x) // hop)])
    mel = np.abs(np.fft.rfft(frames, axis=1)) @ _np_filterbank(n_fft // 2 + 1, n_mels, sr)
    return mel, np.log(np.maximum(mel, 1e-5))


def _np_resample(x, orig, new, width=6, rolloff=0.99):
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    b = min(o, n) * rolloff
    m = np.arange(math.ceil(len(x) * n / o))[:, None]
    u = b * (np.arange(len(x))[None, :] / o - m / n)
    kernel = np.where(np.abs(u) <= width, (b / o) * np.sinc(u) * np.cos(np.pi * u / (2 * width)) ** 2, 0.0)
    return kernel @ x


def test_mel_filterbank_matches_numpy():
    for n_mels, sr in ((64, 16000), (80, 22050)):
        fb = slaney_mel_filterbank(513, n_mels, sr)
        assert fb.dtype == torch.float64 and fb.shape == (513, n_mels)
        err = np.abs(fb.numpy() - _np_filterbank(513, n_mels, sr)).max()
        assert err < 1e-12, err
    assert float(_np_hz_to_mel(1000.0)) == 15.0  # the Slaney scale's linear/log break


def test_log_mel_matches_numpy():
    g = torch.Generator().manual_seed(7)
    t = torch.arange(4000) / 16000
    wave = torch.stack([torch.sin(2 * math.pi * 440 * t), 0.3 * torch.randn(4000, generator=g)])[None].float()
    got = log_mel_spectrogram(wave)
    assert got.shape == (1, 2, 1 + 4000 // 160, 64) and got.dtype == torch.float32
    for c in range(2):
        mel, log_mel = _np_log_mel(wave[0, c].double().numpy())
        ours_mel = torch.exp(got[0, c]).double()  # exact where mel > 1e-5
        keep = torch.from_numpy(mel > 1e-3)
        err = (torch.from_numpy(log_mel) - got[0, c].double())[keep].abs().max().item()
        assert err < 1e-4, err  # fp32 STFT vs fp64 numpy on log values of order 1
        assert_close_scaled(ours_mel[keep], torch.from_numpy(mel)[keep], 1e-5, "mel magnitude")
    # control: a 440 Hz tone peaks in the mel band whose centre is nearest 440 Hz
    centres = _np_mel_to_hz(np.linspace(0, _np_hz_to_mel(8000.0), 66))[1:-1]
    assert got[0, 0, 10].argmax().item() == int(np.abs(centres - 440).argmin())
    assert log_mel_spectrogram(wave.double()).dtype == torch.float64


def test_resample_matches_direct_formula_and_lengths():
    x = torch.randn(2, 1, 1000, generator=torch.Generator().manual_seed(8))
    for orig, new in ((44100, 16000), (48000, 16000), (22050, 16000), (8000, 16000), (16000, 24000)):
        y = resample(x, orig, new)
        assert y.shape == (2, 1, math.ceil(1000 * new / orig))
        ref = _np_resample(x[1, 0].double().numpy(), orig, new)
        err = assert_close_scaled(y[1, 0], torch.from_numpy(ref), 1e-5, f"{orig}->{new}")
        print(f"resample {orig}->{new}: {err:.1e}")
    assert resample(x, 16000, 16000) is x


def test_resample_band_limits():
    """1 kHz at 44.1 kHz -> 16 kHz keeps the sine within 1e-3 (5 kHz within 1e-2: the Hann-windowed
    sinc of width 6 has a wide transition band, as torchaudio's); 12 kHz, above the new Nyquist,
    is suppressed below 5e-3. Edges (filter half-width) are excluded."""
    t = torch.arange(22050, dtype=torch.float64) / 44100
    m = torch.arange(8000, dtype=torch.float64) / 16000
    for freq, tol in ((1000.0, 1e-3), (5000.0, 1e-2)):
        y = resample(torch.sin(2 * math.pi * freq * t).float(), 44100, 16000).double()
        err = (y - torch.sin(2 * math.pi * freq * m))[100:-100].abs().max().item()
        assert err < tol, (freq, err)
    alias = resample(torch.sin(2 * math.pi * 12000.0 * t).float(), 44100, 16000)
    assert alias[100:-100].abs().max() < 5e-3


def test_waveform_to_mel_resamples_then_transforms():
    _, ours = make_pair("release")  # mel_bins 16: the front-end follows the config
    wave = torch.randn(1, 2, 22050, generator=torch.Generator().manual_seed(9))
    mel = ours.waveform_to_mel(wave, 44100)
    assert mel.shape == (1, 2, 1 + 8000 // 160, 16)
    assert torch.equal(mel, log_mel_spectrogram(resample(wave, 44100, 16000), 16000, 1024, 160, 16))
    with torch.no_grad():
        assert ours.encode(mel).shape == (1, 4, 13, 4)


def test_front_end_bad_inputs():
    with pytest.raises(ValueError, match="orig_freq must be a positive integer"):
        resample(torch.randn(100), 44100.0, 16000)
    with pytest.raises(ValueError, match="new_freq must be a positive integer"):
        resample(torch.randn(100), 44100, 0)
    with pytest.raises(ValueError, match="floating point"):
        resample(torch.ones(100, dtype=torch.int16), 44100, 16000)
    with pytest.raises(ValueError, match=r"\(B, C, samples\)"):
        log_mel_spectrogram(torch.randn(2, 4000))
    with pytest.raises(ValueError, match="more than n_fft // 2 = 512"):
        log_mel_spectrogram(torch.randn(1, 2, 512))
    _, ours = make_pair("release")
    with pytest.raises(ValueError, match="floating point"):
        ours.waveform_to_mel(torch.ones(1, 2, 4000, dtype=torch.int16), 16000)
