"""Model configurations: frozen dataclasses whose field names follow diffusers' config.json.

Parsing is strict: an unknown key, a value of the wrong JSON type or out of range, or an
unsupported value is an error that names the file and the key, because a silently ignored or
coerced option changes outputs (``"attention_bias": "false"`` is truthy). Types come from the
dataclass annotations (see ``check_value``); keys starting with "_" (diffusers' bookkeeping such
as ``_class_name``) are checked where they matter and otherwise ignored.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """A checkpoint configuration that ltxengine cannot build exactly."""


# Numbers in a config are sizes, counts, rates, epsilons and scales: positive unless named here.
_NON_NEGATIVE = frozenset({"layers_per_block", "decoder_layers_per_block", "num_blocks_per_stage", "dropout",
                           "causal_offset", "leaky_relu_negative_slope"})
_ANY_SIGN = frozenset({"base_shift", "max_shift"})  # scheduler shift exponents
# Far above any size a released config holds (widths 4096, 48 kHz audio); stops a typo such as
# 10**12 from reaching a tensor allocation or an endless module-building loop.
MAX_CONFIG_INT = 2 ** 20


class _Mismatch(Exception):
    pass


def _convert(value, hint):
    """``value`` (parsed JSON) as ``hint`` says (lists become tuples, ints in float fields floats),
    or _Mismatch. bool is not an int here, and a float field takes ints."""
    if hint is Any:
        return value
    if hint in (bool, int, str, type(None)):
        if type(value) is hint:
            return value
        raise _Mismatch
    if hint is float:
        if type(value) in (int, float):
            return float(value)
        raise _Mismatch
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_convert(v, a) for v, a in zip(value, args))
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _convert(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    raise TypeError(f"config annotation {hint!r} is not supported by the config checker")


def _sign(field: str) -> str:
    return "any" if field in _ANY_SIGN else ">= 0" if field in _NON_NEGATIVE else "positive"


def _describe(hint, field: str) -> str:
    """The rule for a value of type ``hint`` in ``field``, as the error message states it."""
    sign = _sign(field)
    if hint is int:
        return {"any": "an int", ">= 0": "an int >= 0", "positive": "a positive int"}[sign]
    if hint is float or set(typing.get_args(hint)) == {int, float}:
        return {"any": "a finite number", ">= 0": "a finite number >= 0", "positive": "a finite positive number"}[sign]
    names = {bool: "true or false", str: "a string", type(None): "null"}
    if hint in names:
        return names[hint]
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of ({_describe(args[0], field)})"
        return f"a list of {len(args)} ({', '.join(_describe(a, field) for a in args)})"
    return " or ".join(_describe(a, field) for a in args)


def _numbers(value):
    if isinstance(value, tuple):
        for v in value:
            yield from _numbers(v)
    elif type(value) in (int, float):
        yield value


def _in_range(x, field: str) -> bool:
    if not math.isfinite(x):
        return False
    sign = _sign(field)
    if (sign == "positive" and x <= 0) or (sign == ">= 0" and x < 0):
        return False
    return not (isinstance(x, int) and x > MAX_CONFIG_INT)


def check_value(value, hint, source: str, key: str, field: str | None = None):
    """``value`` read from a checkpoint config, checked against the annotation ``hint`` -> the value
    converted (lists to tuples, ints in float fields to floats). JSON types are exact (bool is not
    an int, "false" is not false); numbers are finite, positive unless the field is named in
    _NON_NEGATIVE / _ANY_SIGN, and ints at most MAX_CONFIG_INT. ``key`` is the name the file uses
    (for the message), ``field`` ours (for the range rule; default ``key``)."""
    field = field or key
    try:
        converted = _convert(value, hint)
    except _Mismatch:
        raise ConfigError(f"{source}: config option {key!r} must be {_describe(hint, field)}, "
                          f"got {value!r} ({type(value).__name__})") from None
    bad = [x for x in _numbers(converted) if not _in_range(x, field)]
    if bad:
        cap = f" (ints at most {MAX_CONFIG_INT})" if any(isinstance(x, int) and x > 0 for x in bad) else ""
        entry = f" (entry {bad[0]!r})" if isinstance(converted, tuple) else ""
        raise ConfigError(f"{source}: config option {key!r} must be {_describe(hint, field)}{cap}{entry}, "
                          f"got {value!r}")
    return converted


@functools.cache
def _hints(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def check_fields(cls, data, source: str, ignore: tuple[str, ...] = (), names: dict[str, str] | None = None
                 ) -> dict[str, Any]:
    """``data`` (a config dict) -> constructor arguments for the dataclass ``cls``, every value
    checked by ``check_value`` against the field's annotation. Unknown keys are refused by name;
    keys starting with "_" and those in ``ignore`` are skipped. ``names`` maps our field names to
    the names the file uses, for messages."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: config must be a JSON object, got {type(data).__name__}: {data!r:.200}")
    fields, hints, names = {f.name for f in dataclasses.fields(cls)}, _hints(cls), names or {}
    kwargs = {}
    for key, value in data.items():
        if not isinstance(key, str):
            raise ConfigError(f"{source}: config keys must be strings, got {key!r}")
        if key.startswith("_") or key in ignore:
            continue
        if key not in fields:
            raise ConfigError(f"{source}: unknown config option {names.get(key, key)!r} = {value!r} "
                              f"for {cls.__name__}")
        kwargs[key] = check_value(value, hints[key], source, names.get(key, key), key)
    return kwargs


def parse_config(cls, data: dict[str, Any], source: str, ignore: tuple[str, ...] = (),
                 names: dict[str, str] | None = None):
    """Build ``cls`` from a diffusers-style dict: unknown keys refused by name, every value checked
    for JSON type and range (``check_fields``), then the class's own ``validate``."""
    config = cls(**check_fields(cls, data, source, ignore, names))
    config.validate(source)
    return config


def same_value(got, want) -> bool:
    """``got == want`` for JSON values without Python's bool/int mixing (``1 == True``); an int
    equals the same float."""
    if isinstance(want, bool) or isinstance(got, bool) or want is None or got is None:
        return type(got) is type(want) and got == want
    if isinstance(want, (list, tuple)):
        return isinstance(got, (list, tuple)) and len(got) == len(want) and all(
            same_value(g, w) for g, w in zip(got, want))
    if isinstance(want, (int, float)):
        return type(got) in (int, float) and got == want
    return type(got) is type(want) and got == want


def require(cond: bool, source: str, key: str, rule: str, value) -> None:
    """Refuse a config option by name: ConfigError "<source>: config option 'key' <rule>, got <value>"
    unless ``cond`` (shared by every model config, here and beside the models)."""
    if not cond:
        raise ConfigError(f"{source}: config option {key!r} {rule}, got {value!r}")


def _check_block_options(cfg, source: str) -> None:
    """Options every LTX transformer release fixes (LTX-Video and LTX-2 alike)."""
    require(cfg.activation_fn == "gelu-approximate", source, "activation_fn", "must be 'gelu-approximate'",
            cfg.activation_fn)
    require(cfg.qk_norm == "rms_norm_across_heads", source, "qk_norm", "must be 'rms_norm_across_heads'",
            cfg.qk_norm)
    require(not cfg.norm_elementwise_affine, source, "norm_elementwise_affine", "must be false",
            cfg.norm_elementwise_affine)


@dataclass(frozen=True)
class TransformerConfig:
    """LTXVideoTransformer3DModel (LTX-Video 0.9.x)."""

    in_channels: int = 128  # latent channels per token (patch 1x1x1)
    out_channels: int = 128  # predicted velocity channels
    patch_size: int = 1  # spatial patch of the latent grid; every release uses 1
    patch_size_t: int = 1  # temporal patch; every release uses 1
    num_attention_heads: int = 32
    attention_head_dim: int = 64  # 64 for 2B (D = 2048), 128 for 13B (D = 4096)
    cross_attention_dim: int = 2048  # must equal the inner width: text is projected to D
    num_layers: int = 28
    activation_fn: str = "gelu-approximate"
    qk_norm: str = "rms_norm_across_heads"
    norm_elementwise_affine: bool = False  # block pre-norms carry no weight
    norm_eps: float = 1e-6
    caption_channels: int = 4096  # T5-XXL width
    attention_bias: bool = True
    attention_out_bias: bool = True

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    def validate(self, source: str) -> None:
        _check_block_options(self, source)
        require(self.patch_size == 1, source, "patch_size", "must be 1 (no released model patchifies)",
                self.patch_size)
        require(self.patch_size_t == 1, source, "patch_size_t", "must be 1", self.patch_size_t)
        require(self.cross_attention_dim == self.inner_dim, source, "cross_attention_dim",
                f"must equal num_attention_heads * attention_head_dim = {self.inner_dim}", self.cross_attention_dim)
        require(self.inner_dim % 2 == 0, source, "attention_head_dim", "must give an even inner width",
                self.attention_head_dim)
        for key in ("in_channels", "out_channels", "num_layers", "caption_channels", "num_attention_heads"):
            require(getattr(self, key) > 0, source, key, "must be positive", getattr(self, key))


@dataclass(frozen=True)
class VideoVAEConfig:
    """AutoencoderKLLTXVideo (LTX-Video 0.9.0 / 0.9.1 / 0.9.5+ layouts)."""

    in_channels: int = 3
    out_channels: int = 3
    latent_channels: int = 128
    block_out_channels: tuple[int, ...] = (128, 256, 512, 512)  # encoder widths
    down_block_types: tuple[str, ...] = ("LTXVideoDownBlock3D",) * 4  # LTXVideo095DownBlock3D for 0.9.5+
    decoder_block_out_channels: tuple[int, ...] = (128, 256, 512, 512)
    layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)  # encoder resnets per block, last = mid block
    decoder_layers_per_block: tuple[int, ...] = (4, 3, 3, 3, 4)  # decoder, listed encoder-side first
    spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)
    decoder_spatio_temporal_scaling: tuple[bool, ...] = (True, True, True, False)
    decoder_inject_noise: tuple[bool, ...] = (False, False, False, False, False)  # 0.9.1 decoder noise
    downsample_type: tuple[str, ...] = ("conv", "conv", "conv", "conv")
    upsample_residual: tuple[bool, ...] = (False, False, False, False)
    upsample_factor: tuple[int, ...] = (1, 1, 1, 1)
    timestep_conditioning: bool = False  # 0.9.1+ decoder takes decode_timestep
    patch_size: int = 4
    patch_size_t: int = 1
    resnet_norm_eps: float = 1e-6
    scaling_factor: float = 1.0
    encoder_causal: bool = True
    decoder_causal: bool = False
    # When None the model derives them from the encoder's strides (VideoVAE checks given values
    # against that: diffusers' own fallback 2**sum(scaling) is wrong for the 0.9.5 layout).
    spatial_compression_ratio: int | None = None
    temporal_compression_ratio: int | None = None

    @property
    def is_095(self) -> bool:
        return self.down_block_types[-1] == "LTXVideo095DownBlock3D"

    def validate(self, source: str) -> None:
        n_enc = len(self.block_out_channels) - (1 if self.is_095 else 0)
        for key in ("down_block_types", "spatio_temporal_scaling", "downsample_type"):
            require(len(getattr(self, key)) >= n_enc, source, key, f"needs at least {n_enc} entries",
                    getattr(self, key))
        require(len(self.layers_per_block) == n_enc + 1, source, "layers_per_block",
                f"needs {n_enc + 1} entries (one per down block plus the mid block)", self.layers_per_block)
        for t in self.down_block_types:
            require(t in ("LTXVideoDownBlock3D", "LTXVideo095DownBlock3D"), source, "down_block_types",
                    "entries must be LTXVideoDownBlock3D or LTXVideo095DownBlock3D", t)
        for t in self.downsample_type[:n_enc]:
            require(t in ("conv", "spatial", "temporal", "spatiotemporal"), source, "downsample_type",
                    "entries must be conv, spatial, temporal or spatiotemporal", t)
        n_dec = len(self.decoder_block_out_channels)
        require(len(self.decoder_layers_per_block) == n_dec + 1, source, "decoder_layers_per_block",
                f"needs {n_dec + 1} entries", self.decoder_layers_per_block)
        require(len(self.decoder_inject_noise) == n_dec + 1, source, "decoder_inject_noise",
                f"needs {n_dec + 1} entries", self.decoder_inject_noise)
        for key in ("decoder_spatio_temporal_scaling", "upsample_residual", "upsample_factor"):
            require(len(getattr(self, key)) >= n_dec, source, key, f"needs at least {n_dec} entries",
                    getattr(self, key))
        require(self.patch_size > 0 and self.patch_size_t > 0, source, "patch_size", "must be positive",
                (self.patch_size, self.patch_size_t))


@dataclass(frozen=True)
class LatentUpsamplerConfig:
    """LTXLatentUpsamplerModel (0.9.7 / 0.9.8 spatial x2)."""

    in_channels: int = 128
    mid_channels: int = 512
    num_blocks_per_stage: int = 4
    dims: int = 3  # 3: Conv3d resblocks with a per-frame 2D upsampler; 2: per-frame throughout
    spatial_upsample: bool = True
    temporal_upsample: bool = False

    def validate(self, source: str) -> None:
        require(self.dims in (2, 3), source, "dims", "must be 2 or 3", self.dims)
        require(self.spatial_upsample or self.temporal_upsample, source, "spatial_upsample",
                "or temporal_upsample must be true", (self.spatial_upsample, self.temporal_upsample))
        require(not (self.dims == 2 and self.temporal_upsample), source, "temporal_upsample",
                "needs dims=3", self.temporal_upsample)
        require(self.mid_channels % 32 == 0, source, "mid_channels", "must be a multiple of 32 (GroupNorm(32))",
                self.mid_channels)


@dataclass(frozen=True)
class LTX2TransformerConfig:
    """LTX2VideoTransformer3DModel (LTX-2.x audio+video DiT); defaults are the 2.0 release, the
    2.3 / 2.5 switches are off (LTX2_TRANSFORMER_22B_V23 / _V25 turn them on)."""

    in_channels: int = 128
    out_channels: int = 128
    patch_size: int = 1
    patch_size_t: int = 1
    num_attention_heads: int = 32
    attention_head_dim: int = 128
    cross_attention_dim: int = 4096  # must equal the video inner width (text is projected to it)
    vae_scale_factors: tuple[int, int, int] = (8, 32, 32)  # pixel frames/rows/cols per latent
    pos_embed_max_pos: int = 20  # RoPE base for time (seconds)
    base_height: int = 2048  # RoPE base for rows (pixels)
    base_width: int = 2048
    gated_attn: bool = False  # LTX-2.3+: per-head output gate in the video-query attentions (attn1/2, a2v)
    cross_attn_mod: bool = False  # LTX-2.3+: 9-row adaLN tables, modulated text query/K/V, gated attn2
    audio_in_channels: int = 128  # 8 latent channels x 16 mel bins
    audio_out_channels: int = 128
    audio_patch_size: int = 1
    audio_patch_size_t: int = 1
    audio_num_attention_heads: int = 32
    audio_attention_head_dim: int = 64
    audio_cross_attention_dim: int = 2048  # audio inner width; also a2v/v2a attention width
    audio_scale_factor: int = 4  # mel frames per audio latent frame
    audio_pos_embed_max_pos: int = 20
    audio_sampling_rate: int = 16000
    audio_hop_length: int = 160
    audio_gated_attn: bool = False  # the same for the audio-query attentions (audio attn1/2, v2a)
    audio_cross_attn_mod: bool = False
    num_layers: int = 48
    activation_fn: str = "gelu-approximate"
    qk_norm: str = "rms_norm_across_heads"
    norm_elementwise_affine: bool = False
    norm_eps: float = 1e-6
    caption_channels: int = 3840  # Gemma-3 width (after the text connectors)
    attention_bias: bool = True
    attention_out_bias: bool = True
    rope_theta: float = 10000.0
    rope_double_precision: bool = True  # frequency grid computed in float64
    causal_offset: int = 1
    timestep_scale_multiplier: int = 1000
    # ltx-core's av_ca_timestep_scale_multiplier: the a2v/v2a gate MLP sees
    # sigma * timestep_scale_multiplier * (this / timestep_scale_multiplier).
    cross_attn_timestep_scale_multiplier: int = 1000
    rope_type: str = "split"
    use_prompt_embeddings: bool = True  # caption projections live in the DiT (2.0); 2.3+ in the connectors
    perturbed_attn: bool = False  # diffusers installs its STG processor only when true; ours always has STG
    ff_bias: bool = True  # False in LTX-2.5's video FFN
    audio_ff_bias: bool = True
    # With cross_attn_mod: text K/V shift/scale from prompt_adaln(sigma) + the per-block table;
    # false keeps only the static table (K/V cacheable per prompt; no released checkpoint)
    use_prompt_adaln_single: bool = True
    # LTX-2.5: a learned (1, D) vector added after proj_in to single-pixel-frame video tokens
    use_keyframes_abs_pos_embedding: bool = False

    @property
    def inner_dim(self) -> int:
        return self.num_attention_heads * self.attention_head_dim

    @property
    def audio_inner_dim(self) -> int:
        return self.audio_num_attention_heads * self.audio_attention_head_dim

    @property
    def text_widths(self) -> tuple[int, int]:
        """The widths of the (video, audio) text the DiT reads: the caption features for both (2.0,
        projected in the DiT), or the connectors' per-modality outputs at the stream widths (2.3+)."""
        if self.use_prompt_embeddings:
            return self.caption_channels, self.caption_channels
        return self.inner_dim, self.audio_inner_dim

    @property
    def video_mod_rows(self) -> int:
        return 9 if self.cross_attn_mod else 6

    @property
    def audio_mod_rows(self) -> int:
        return 9 if self.audio_cross_attn_mod else 6

    @property
    def kv_mod(self) -> bool:
        """Text K/V modulated in both streams (diffusers: as soon as either stream has cross_attn_mod)."""
        return self.cross_attn_mod or self.audio_cross_attn_mod

    def validate(self, source: str) -> None:
        for key in ("attention_bias", "attention_out_bias"):
            require(getattr(self, key) is True, source, key, "must be true (every LTX-2.x release)", getattr(self, key))
        _check_block_options(self, source)
        require(self.rope_type in ("split", "interleaved"), source, "rope_type", "must be 'split' or 'interleaved'",
                self.rope_type)
        for key in ("patch_size", "patch_size_t", "audio_patch_size", "audio_patch_size_t"):
            require(getattr(self, key) == 1, source, key, "must be 1 (no released model patchifies)",
                    getattr(self, key))
        require(self.cross_attention_dim == self.inner_dim, source, "cross_attention_dim",
                f"must equal num_attention_heads * attention_head_dim = {self.inner_dim}", self.cross_attention_dim)
        require(self.audio_cross_attention_dim == self.audio_inner_dim, source, "audio_cross_attention_dim",
                f"must equal audio_num_attention_heads * audio_attention_head_dim = {self.audio_inner_dim}",
                self.audio_cross_attention_dim)
        require(len(self.vae_scale_factors) == 3, source, "vae_scale_factors", "needs 3 entries (t, h, w)",
                self.vae_scale_factors)
        heads_v, heads_a = self.num_attention_heads, self.audio_num_attention_heads
        if self.rope_type == "split":
            # The width is partitioned into per-head halves; 3 axes (video) pad at the front.
            require(self.inner_dim % (2 * heads_v) == 0, source, "attention_head_dim",
                    "must be even (split RoPE rotates half a head against the other half)", self.attention_head_dim)
            require(self.audio_inner_dim % (2 * heads_a) == 0 and self.audio_inner_dim % (2 * heads_v) == 0,
                    source, "audio_attention_head_dim",
                    "must give a width divisible by 2 x the video and the audio head counts (cross-modal RoPE "
                    "tables are sliced per video head)", self.audio_attention_head_dim)
        for key in ("in_channels", "out_channels", "audio_in_channels", "audio_out_channels", "num_layers",
                    "caption_channels", "num_attention_heads", "audio_num_attention_heads", "audio_scale_factor",
                    "audio_sampling_rate", "audio_hop_length", "timestep_scale_multiplier"):
            require(getattr(self, key) > 0, source, key, "must be positive", getattr(self, key))


# Presets of the released checkpoints (the values diffusers' conversion script writes).
TRANSFORMER_2B = TransformerConfig()
TRANSFORMER_13B = TransformerConfig(attention_head_dim=128, cross_attention_dim=4096, num_layers=48)

VAE_090 = VideoVAEConfig()
VAE_091 = VideoVAEConfig(
    decoder_block_out_channels=(256, 512, 1024),
    decoder_layers_per_block=(5, 6, 7, 8),
    decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(True, True, True, False),
    upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2),
    timestep_conditioning=True,
)
VAE_095 = VideoVAEConfig(
    block_out_channels=(128, 256, 512, 1024, 2048),
    down_block_types=("LTXVideo095DownBlock3D",) * 4,
    decoder_block_out_channels=(256, 512, 1024),
    layers_per_block=(4, 6, 6, 2, 2),
    decoder_layers_per_block=(5, 5, 5, 5),
    spatio_temporal_scaling=(True, True, True, True),
    decoder_spatio_temporal_scaling=(True, True, True),
    decoder_inject_noise=(False, False, False, False),
    downsample_type=("spatial", "temporal", "spatiotemporal", "spatiotemporal"),
    upsample_residual=(True, True, True),
    upsample_factor=(2, 2, 2),
    timestep_conditioning=True,
    spatial_compression_ratio=32,
    temporal_compression_ratio=8,
)
UPSAMPLER_097 = LatentUpsamplerConfig()
LTX2_TRANSFORMER_19B = LTX2TransformerConfig()
# diffusers' converter (scripts/convert_ltx2_to_diffusers.py, version "2.3"); 2.5 = 2.3 without the
# video FFN bias, with the keyframe embedding (ltx-core model_configurator.py @400fd31).
LTX2_TRANSFORMER_22B_V23 = LTX2TransformerConfig(
    gated_attn=True, cross_attn_mod=True, audio_gated_attn=True, audio_cross_attn_mod=True,
    use_prompt_embeddings=False, perturbed_attn=True)
LTX2_TRANSFORMER_22B_V25 = dataclasses.replace(LTX2_TRANSFORMER_22B_V23, ff_bias=False,
                                               use_keyframes_abs_pos_embedding=True)
