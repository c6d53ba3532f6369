"""LTX-2 single-file format for the audio VAE and the vocoder: key maps and header-config conversion.

Tensors live under ``audio_vae.`` and ``vocoder.``. The audio VAE's module names already equal
ours (diffusers kept ltx-core's ``encoder.down.{l}.block.{j}.conv1.conv`` ...); only the latent
statistics are renamed. The vocoder uses HiFi-GAN / BigVGAN names (``conv_pre``, ``ups``, ``resblocks``,
``act_post``, ``downsample.lowpass``, ``conv_post``), renamed as diffusers' conversion script does;
the LTX-2.3 vocoder with bandwidth extension nests them under ``vocoder.vocoder.`` and
``vocoder.bwe_generator.`` beside ``vocoder.mel_stft.*``, which keep their names.

The header's ``audio_vae`` and ``vocoder`` sections are read the way ltx-core 1.0.0's
configurators read them (``ltx_core/model/audio_vae/model_configurator.py``), with their defaults
for absent keys; architecture options we do not build are refused by name.
"""

from __future__ import annotations

from typing import Any

from ..config import ConfigError, check_value, parse_config, same_value
from ..models.audio_vae import N_FFT, AudioVAEConfig
from ..models.vocoder import VocoderConfig, VocoderWithBWEConfig
from .keymaps import KeyMap

__all__ = ["AUDIO_VAE_KEYMAP", "VOCODER_KEYMAP", "audio_vae_config_from_original", "vocoder_config_from_original"]

AUDIO_VAE_KEYMAP = KeyMap(
    prefix="audio_vae.",
    renames=(("per_channel_statistics.mean-of-means", "latents_mean"),
             ("per_channel_statistics.std-of-means", "latents_std")),
    # Statistics no model reads; ltx-core's PerChannelStatistics has no slot for them (the released
    # file is not known to carry them; the video VAE's does, so they are dropped defensively).
    drop=("per_channel_statistics.channel", "per_channel_statistics.mean-of-stds"),
)

VOCODER_KEYMAP = KeyMap(
    prefix="vocoder.",
    # "ups." cannot hit "upsample." (BigVGAN's filter modules): the dot follows "ups" only in "ups.{i}".
    renames=(("conv_pre", "conv_in"), ("ups.", "upsamplers."), ("resblocks.", "resnets."),
             ("conv_post", "conv_out"), ("act_post", "act_out"), ("downsample.lowpass", "downsample")),
)

# ddconfig keys ltx-core reads (-> its default when absent), and keys it ignores.
_DDCONFIG_DEFAULTS: dict[str, Any] = {
    "ch": 128, "out_ch": 2, "ch_mult": [1, 2, 4], "num_res_blocks": 2, "attn_resolutions": [8, 16, 32],
    "resolution": 256, "z_channels": 8, "double_z": True, "dropout": 0.0, "resamp_with_conv": True,
    "in_channels": 2, "attn_type": "vanilla", "mid_block_add_attention": True, "norm_type": "pixel",
    "causality_axis": "height", "mel_bins": None,
}
_DDCONFIG_IGNORED = ("downsample_time",)  # AudioLDM-era flag, read by neither reference


def _section(parent: dict, key: str, src: str) -> dict:
    value = parent.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{src}: {key!r} must be an object, got {value!r}")
    return value


def audio_vae_config_from_original(section: dict, source: str) -> AudioVAEConfig:
    """The header's ``audio_vae`` section -> AudioVAEConfig.

    Only ``model.params.ddconfig`` (the network) is checked key by key; the other sub-sections
    also hold training settings, of which ltx-core reads ``model.params.sampling_rate``,
    ``preprocessing.stft.{hop_length, filter_length, causal}`` and the mel-bin fallbacks
    ``preprocessing.mel.n_mel_channels`` / ``variables.mel_bins``. Like ltx-core, the mel front-end
    always spans 0 .. sample_rate / 2 with a window of filter_length, whatever ``mel_fmin``,
    ``mel_fmax`` or ``win_length`` say."""
    src = f"{source} [audio_vae]"
    params = _section(_section(section, "model", src), "params", src)
    dd = _section(params, "ddconfig", src)
    preprocessing = _section(section, "preprocessing", src)
    stft = _section(preprocessing, "stft", src)
    for key, value in dd.items():
        if key not in _DDCONFIG_DEFAULTS and key not in _DDCONFIG_IGNORED:
            raise ConfigError(f"{src}: unknown config option 'model.params.ddconfig.{key}' = {value!r}")
    get = {k: dd.get(k, v) for k, v in _DDCONFIG_DEFAULTS.items()}
    if get["attn_type"] != "vanilla":
        # ltx-core's encoder honours it but its decoder always builds vanilla attention.
        raise ConfigError(f"{src}: config option 'attn_type' must be 'vanilla', got {get['attn_type']!r}")
    if get["resamp_with_conv"] is not True:
        raise ConfigError(f"{src}: config option 'resamp_with_conv' must be true (strided-conv downsampling; "
                          f"average pooling is not causal), got {get['resamp_with_conv']!r}")
    n_fft = stft.get("filter_length", N_FFT)
    if n_fft != N_FFT:
        raise ConfigError(f"{src}: config option 'preprocessing.stft.filter_length' must be {N_FFT}, got {n_fft!r}")
    mel_key, mel_bins = _mel_bins(get["mel_bins"], preprocessing, section, src)
    attn_res = check_value(get["attn_resolutions"], tuple[int, ...] | None, src, _DD + "attn_resolutions")
    fields = dict(
        base_channels=get["ch"], output_channels=get["out_ch"], ch_mult=get["ch_mult"],
        num_res_blocks=get["num_res_blocks"], attn_resolutions=tuple(sorted(attn_res)) if attn_res else None,
        in_channels=get["in_channels"], resolution=get["resolution"], latent_channels=get["z_channels"],
        norm_type=get["norm_type"], causality_axis=get["causality_axis"], dropout=get["dropout"],
        mid_block_add_attention=get["mid_block_add_attention"],
        sample_rate=params.get("sampling_rate", 16000), mel_hop_length=stft.get("hop_length", 160),
        is_causal=stft.get("causal", True), mel_bins=mel_bins, double_z=get["double_z"],
    )
    names = {ours: _DD + theirs for ours, theirs in _AUDIO_VAE_NAMES.items()}
    names.update(sample_rate="model.params.sampling_rate", mel_hop_length="preprocessing.stft.hop_length",
                 is_causal="preprocessing.stft.causal", mel_bins=mel_key)
    return parse_config(AudioVAEConfig, fields, src, names=names)


_DD = "model.params.ddconfig."
# AudioVAEConfig field -> ddconfig key it comes from (for messages)
_AUDIO_VAE_NAMES = {"base_channels": "ch", "output_channels": "out_ch", "ch_mult": "ch_mult",
                    "num_res_blocks": "num_res_blocks", "attn_resolutions": "attn_resolutions",
                    "in_channels": "in_channels", "resolution": "resolution", "latent_channels": "z_channels",
                    "norm_type": "norm_type", "causality_axis": "causality_axis", "dropout": "dropout",
                    "mid_block_add_attention": "mid_block_add_attention", "double_z": "double_z"}


def _mel_bins(dd_value, preprocessing: dict, section: dict, src: str) -> tuple[str, Any]:
    """ltx-core's fallback chain for the mel-bin count -> (the key it came from, its value)."""
    for key, value in ((_DD + "mel_bins", dd_value),
                       ("preprocessing.mel.n_mel_channels", _section(preprocessing, "mel", src).get("n_mel_channels")),
                       ("variables.mel_bins", _section(section, "variables", src).get("mel_bins"))):
        if value is not None and value != 0:  # ltx-core takes the first truthy one
            return key, value
    return _DD + "mel_bins", None


# Generator keys ltx-core reads (the 2.0 section, each nested 2.3 section) -> its defaults.
_VOCODER_DEFAULTS: dict[str, Any] = {
    "resblock_kernel_sizes": [3, 7, 11], "upsample_rates": [6, 5, 2, 2, 2], "upsample_kernel_sizes": [16, 15, 8, 4, 4],
    "resblock_dilation_sizes": [[1, 3, 5], [1, 3, 5], [1, 3, 5]], "upsample_initial_channel": 1024,
    "resblock": None, "stereo": None, "output_sampling_rate": 24000, "use_tanh_at_final": True,
    "use_bias_at_final": True,
    "activation": "snake",  # only used by the AMP1 (BigVGAN) blocks, so ignored for resblock "1"
}


def vocoder_config_from_original(section: dict, source: str) -> VocoderConfig | VocoderWithBWEConfig:
    """The header's ``vocoder`` section -> VocoderConfig (LTX-2.0), or VocoderWithBWEConfig when it
    nests ``vocoder`` + ``bwe`` sections (LTX-2.3/2.5, see ``_bwe_config_from_original``).

    For 2.0 ltx-core requires ``resblock == "1"`` and ``stereo == true`` to be present. The
    network is fixed at 128 input channels (2 x 64 mel bins) and 2 outputs, LeakyReLU 0.1."""
    src = f"{source} [vocoder]"
    if "bwe" in section:
        return _bwe_config_from_original(section, src)
    for key, value in section.items():
        if key not in _VOCODER_DEFAULTS:
            raise ConfigError(f"{src}: unknown config option {key!r} = {value!r}")
    get = {k: section.get(k, v) for k, v in _VOCODER_DEFAULTS.items()}
    if get["resblock"] != "1":
        raise ConfigError(f"{src}: config option 'resblock' must be '1' (HiFi-GAN ResBlock1; the LTX-2.3 BigVGAN "
                          f"block 'AMP1' belongs in nested 'vocoder' + 'bwe' sections), got {get['resblock']!r}")
    if get["stereo"] is not True:
        raise ConfigError(f"{src}: config option 'stereo' must be true, got {get['stereo']!r}")
    tanh = check_value(get["use_tanh_at_final"], bool, src, "use_tanh_at_final")
    fields = dict(
        in_channels=128, hidden_channels=get["upsample_initial_channel"], out_channels=2,
        upsample_kernel_sizes=get["upsample_kernel_sizes"], upsample_factors=get["upsample_rates"],
        resnet_kernel_sizes=get["resblock_kernel_sizes"], resnet_dilations=get["resblock_dilation_sizes"],
        act_fn="leaky_relu", leaky_relu_negative_slope=0.1, antialias=False,
        final_act_fn="tanh" if tanh else "clamp", final_bias=get["use_bias_at_final"],
        output_sampling_rate=get["output_sampling_rate"],
    )
    return parse_config(VocoderConfig, fields, src, names=dict(
        hidden_channels="upsample_initial_channel", upsample_kernel_sizes="upsample_kernel_sizes",
        upsample_factors="upsample_rates", resnet_kernel_sizes="resblock_kernel_sizes",
        resnet_dilations="resblock_dilation_sizes", final_bias="use_bias_at_final"))


# The BWE section's keys beyond a generator's: ltx-core indexes these (no defaults) ...
_BWE_REQUIRED = ("input_sampling_rate", "output_sampling_rate", "hop_length", "n_fft", "num_mels")
# ... and ignores these (the STFT window is always n_fft long, the generator never gets a final
# activation), so only the values it behaves as are accepted.
_BWE_FIXED = ("win_size", "apply_final_activation")


def _bwe_config_from_original(section: dict, src: str) -> VocoderWithBWEConfig:
    """Nested ``vocoder`` (BigVGAN-v2 stage 1) + ``bwe`` sections -> VocoderWithBWEConfig, read as
    ltx-core's VocoderConfigurator does: both generators are "AMP1" + "snakebeta" + stereo; stage 1
    gets the final activation (tanh, or a clamp with use_tanh_at_final false) and the rate
    bwe.input_sampling_rate (its own output_sampling_rate is ignored); the BWE generator gets
    none; the mel front end is STFT n_fft / hop_length with num_mels bands, 128 = 2 x 64 inputs."""
    for key, value in section.items():
        if key not in ("vocoder", "bwe"):
            raise ConfigError(f"{src}: unknown config option {key!r} = {value!r} (beside 'vocoder' and 'bwe')")
    stage1 = _amp_generator(_section(section, "vocoder", src), f"{src} [vocoder]", ())
    bwe_section = _section(section, "bwe", src)
    bwe = _amp_generator(bwe_section, f"{src} [bwe]", _BWE_REQUIRED + _BWE_FIXED)
    missing = [k for k in _BWE_REQUIRED if k not in bwe_section]
    if missing:
        raise ConfigError(f"{src} [bwe]: config options {missing} are required (ltx-core has no defaults)")
    n_fft, num_mels = bwe_section["n_fft"], bwe_section["num_mels"]
    if not same_value(bwe_section.get("win_size", n_fft), n_fft):
        raise ConfigError(f"{src} [bwe]: config option 'win_size' must equal n_fft ({n_fft!r}; ltx-core's STFT "
                          f"window is n_fft long), got {bwe_section['win_size']!r}")
    if not same_value(bwe_section.get("apply_final_activation", False), False):
        raise ConfigError(f"{src} [bwe]: config option 'apply_final_activation' must be false (ltx-core never "
                          f"applies one to the BWE generator), got {bwe_section['apply_final_activation']!r}")
    if not same_value(num_mels, 64):
        raise ConfigError(f"{src} [bwe]: config option 'num_mels' must be 64 (ltx-core's generators take "
                          f"2 x 64 = 128 input channels), got {num_mels!r}")
    fields = {**stage1, **{"bwe_" + k: v for k, v in bwe.items()}}
    fields.update(final_act_fn="tanh" if fields.pop("tanh") else "clamp", bwe_final_act_fn=None,
                  filter_length=n_fft, hop_length=bwe_section["hop_length"], window_length=n_fft,
                  num_mel_channels=num_mels, input_sampling_rate=bwe_section["input_sampling_rate"],
                  output_sampling_rate=bwe_section["output_sampling_rate"])
    del fields["bwe_tanh"]
    names = {ours: "vocoder." + theirs for ours, theirs in _GENERATOR_NAMES.items()}
    names.update({"bwe_" + ours: "bwe." + theirs for ours, theirs in _GENERATOR_NAMES.items()})
    names.update(filter_length="bwe.n_fft", hop_length="bwe.hop_length", window_length="bwe.n_fft",
                 num_mel_channels="bwe.num_mels", input_sampling_rate="bwe.input_sampling_rate",
                 output_sampling_rate="bwe.output_sampling_rate")
    return parse_config(VocoderWithBWEConfig, fields, src, names=names)


# VocoderConfig field -> the generator section's key it comes from (for messages)
_GENERATOR_NAMES = {"hidden_channels": "upsample_initial_channel", "upsample_kernel_sizes": "upsample_kernel_sizes",
                    "upsample_factors": "upsample_rates", "resnet_kernel_sizes": "resblock_kernel_sizes",
                    "resnet_dilations": "resblock_dilation_sizes", "final_bias": "use_bias_at_final"}


def _amp_generator(sub: dict, src: str, extra: tuple[str, ...]) -> dict:
    """One nested BigVGAN-v2 generator section -> VocoderConfig fields (+ ``tanh``), with ltx-core's
    defaults for absent keys and its required values."""
    for key, value in sub.items():
        if key not in _VOCODER_DEFAULTS and key not in extra:
            raise ConfigError(f"{src}: unknown config option {key!r} = {value!r}")
    get = {k: sub.get(k, v) for k, v in _VOCODER_DEFAULTS.items()}
    for key, want in (("resblock", "AMP1"), ("stereo", True), ("activation", "snakebeta")):
        if not same_value(get[key], want) or key not in sub:
            raise ConfigError(f"{src}: config option {key!r} must be {want!r} (ltx-core's vocoder with bandwidth "
                              f"extension), got {sub.get(key)!r}")
    return dict(in_channels=128, hidden_channels=get["upsample_initial_channel"], out_channels=2,
                upsample_kernel_sizes=get["upsample_kernel_sizes"], upsample_factors=get["upsample_rates"],
                resnet_kernel_sizes=get["resblock_kernel_sizes"], resnet_dilations=get["resblock_dilation_sizes"],
                act_fn="snakebeta", antialias=True, antialias_ratio=2, antialias_kernel_size=12,
                final_bias=get["use_bias_at_final"],
                tanh=check_value(get["use_tanh_at_final"], bool, src, "use_tanh_at_final"))
