"""LTX-2 DiT in Lightricks' single-file bundle: key map and header-config conversion.

The header's ``transformer`` section is read the way ltx-core 1.0.0's LTXModelConfigurator reads
it: the fields it insists on must have its values, the fields it uses are converted to the
diffusers-named ``LTX2TransformerConfig`` (ltx-core's defaults where absent), keys other
components read from the same section (the text connectors') or that do not change the
computation are ignored, and anything else is refused by name.
"""

from __future__ import annotations

from typing import Any

from ..config import ConfigError, LTX2TransformerConfig, parse_config, same_value
from .keymaps import KeyMap

# diffusers' converter renames, in an order that makes plain substring replacement exact: the
# audio<->video and prompt (2.3+) adaLN names contain "adaln_single", so they go before the two
# global ones.
KEYMAP = KeyMap(
    prefix="model.diffusion_model.",
    renames=(
        ("audio_patchify_proj", "audio_proj_in"), ("patchify_proj", "proj_in"),
        ("av_ca_video_scale_shift_adaln_single", "av_cross_attn_video_scale_shift"),
        ("av_ca_a2v_gate_adaln_single", "av_cross_attn_video_a2v_gate"),
        ("av_ca_audio_scale_shift_adaln_single", "av_cross_attn_audio_scale_shift"),
        ("av_ca_v2a_gate_adaln_single", "av_cross_attn_audio_v2a_gate"),
        ("scale_shift_table_a2v_ca_video", "video_a2v_cross_attn_scale_shift_table"),
        ("scale_shift_table_a2v_ca_audio", "audio_a2v_cross_attn_scale_shift_table"),
        ("q_norm", "norm_q"), ("k_norm", "norm_k"),
        ("audio_prompt_adaln_single.", "audio_prompt_adaln."), ("prompt_adaln_single.", "prompt_adaln."),
        ("audio_adaln_single.", "audio_time_embed."), ("adaln_single.", "time_embed."),
    ),
    # The text connectors live under the DiT prefix but are their own component.
    drop=("video_embeddings_connector.", "audio_embeddings_connector."),
)

# Values ltx-core's configurator requires (check_config_value): real headers carry them.
_FIXED = {
    "dropout": 0.0, "attention_bias": True, "num_vector_embeds": None, "activation_fn": "gelu-approximate",
    "num_embeds_ada_norm": 1000, "use_linear_projection": False, "only_cross_attention": False,
    "cross_attention_norm": True, "double_self_attention": False, "upcast_attention": False,
    "standardization_norm": "rms_norm", "norm_elementwise_affine": False, "qk_norm": "rms_norm",
    "positional_embedding_type": "rope", "use_audio_video_cross_attention": True, "share_ff": False,
    "av_cross_ada_norm": True, "use_middle_indices_grid": True,
}
# LTX-2.3 / 2.5 switches (ltx-core @400fd31 model_configurator.py): original name -> (our fields, default).
_SWITCHES = {
    "apply_gated_attention": (("gated_attn", "audio_gated_attn"), False),
    "cross_attention_adaln": (("cross_attn_mod", "audio_cross_attn_mod"), False),
    "use_prompt_adaln_single": (("use_prompt_adaln_single",), True),
    "ff_bias": (("ff_bias",), True), "audio_ff_bias": (("audio_ff_bias",), True),
    "use_keyframes_abs_pos_embedding": (("use_keyframes_abs_pos_embedding",), False),
}
# original name -> (our field, ltx-core default when absent)
_COPIED = {
    "num_attention_heads": ("num_attention_heads", 32), "attention_head_dim": ("attention_head_dim", 128),
    "in_channels": ("in_channels", 128), "out_channels": ("out_channels", 128), "num_layers": ("num_layers", 48),
    "cross_attention_dim": ("cross_attention_dim", 4096), "norm_eps": ("norm_eps", 1e-6),
    "positional_embedding_theta": ("rope_theta", 10000.0),
    "timestep_scale_multiplier": ("timestep_scale_multiplier", 1000),
    "audio_num_attention_heads": ("audio_num_attention_heads", 32),
    "audio_attention_head_dim": ("audio_attention_head_dim", 64),
    "audio_in_channels": ("audio_in_channels", 128), "audio_out_channels": ("audio_out_channels", 128),
    "audio_cross_attention_dim": ("audio_cross_attention_dim", 2048),
    "av_ca_timestep_scale_multiplier": ("cross_attn_timestep_scale_multiplier", 1),
    "rope_type": ("rope_type", None),  # default_rope_type(raw)
}
# The 2.3+ layout's switches (any of them on marks a header of that era).
_V23_MARKERS = ("apply_gated_attention", "cross_attention_adaln", "caption_proj_before_connector")


def default_rope_type(section: dict[str, Any]) -> str:
    """The RoPE layout of a ``transformer`` section without ``rope_type``. ltx-core defaulted to
    "interleaved" up to 2026-03-30 (1.0.0, the reference for 2.0) and to "split" since 2026-05-11
    (@7df34df, still @400fd31, where interleaved is "a legacy mode"), for every config. Every released
    LTX-2 header (2.0, 2.3, 2.5) names "split" (the reference notes' section 1.2: "same" in all three),
    so the default decides only for headers without the key: one with a 2.3+ switch on is read as the
    current reference reads it, any other as ltx-core 1.0.0 (so 2.0 loading is unchanged)."""
    return "split" if any(section.get(k) is True for k in _V23_MARKERS) else "interleaved"
# Read from this section by other components (text connectors) or without effect on the math
# (attention backend choice, diffusers bookkeeping).
_IGNORED_PREFIXES = ("connector_", "audio_connector_", "_")
_IGNORED = {"attention_type", "caption_channels_audio", "caption_projection_first_linear", "caption_proj_input_norm",
            "caption_projection_second_linear", "use_embeddings_connector", "text_encoder_norm_type",
            "causal_temporal_positioning"}


def transformer_config(raw: dict[str, Any], source: str) -> LTX2TransformerConfig:
    src = f"{source} [transformer]"
    # 2.3+ project the caption in the text connectors (caption_proj_before_connector), not here.
    projected_outside = raw.get("caption_proj_before_connector", False)
    if not isinstance(projected_outside, bool):
        raise ConfigError(f"{src}: config option 'caption_proj_before_connector' must be true or false, "
                          f"got {projected_outside!r}")
    if "caption_channels" not in raw and not projected_outside:
        raise ConfigError(f"{src}: config option 'caption_channels' is missing (ltx-core needs it to build the "
                          "caption projections)")
    known = set(_FIXED) | set(_SWITCHES) | set(_COPIED) | _IGNORED | {
        "caption_channels", "caption_proj_before_connector", "positional_embedding_max_pos",
        "audio_positional_embedding_max_pos", "frequencies_precision"}
    for key, value in raw.items():
        if key not in known and not key.startswith(_IGNORED_PREFIXES):
            raise ConfigError(f"{src}: unknown config option {key!r} = {value!r}")
    for key, want in _FIXED.items():
        if key in raw and not same_value(raw[key], want):
            raise ConfigError(f"{src}: config option {key!r} must be {want!r} (the only value ltx-core builds), "
                              f"got {raw[key]!r}")
    missing = [k for k, want in _FIXED.items() if k not in raw and want is not None]
    if missing:
        # ltx-core refuses a header without them; so do we (it is not an LTX-2 transformer config).
        raise ConfigError(f"{src}: config options missing that ltx-core requires: {missing}")
    fields = {ours: raw.get(orig, default) for orig, (ours, default) in _COPIED.items()}
    fields["rope_type"] = raw.get("rope_type", default_rope_type(raw))
    names = {ours: orig for orig, (ours, _) in _COPIED.items()}
    gate_multiplier = fields["cross_attn_timestep_scale_multiplier"]
    if type(gate_multiplier) is float and gate_multiplier.is_integer():
        # 2.3 headers write 1000.0; ltx-core only divides by it
        fields["cross_attn_timestep_scale_multiplier"] = int(gate_multiplier)
    for orig, (ours, default) in _SWITCHES.items():
        for field in ours:
            fields[field], names[field] = raw.get(orig, default), orig
    fields["use_prompt_embeddings"] = not projected_outside
    # No effect here (our blocks always have STG); set as diffusers' converter does for 2.3+.
    fields["perturbed_attn"] = projected_outside
    if "caption_channels" in raw:
        fields["caption_channels"] = raw["caption_channels"]
    pos = raw.get("positional_embedding_max_pos", [20, 2048, 2048])
    if not (isinstance(pos, (list, tuple)) and len(pos) == 3):
        raise ConfigError(f"{src}: config option 'positional_embedding_max_pos' must be [t, h, w], got {pos!r}")
    fields["pos_embed_max_pos"], fields["base_height"], fields["base_width"] = pos
    apos = raw.get("audio_positional_embedding_max_pos", [20])
    if not (isinstance(apos, (list, tuple)) and len(apos) == 1):
        raise ConfigError(f"{src}: config option 'audio_positional_embedding_max_pos' must be [t], got {apos!r}")
    fields["audio_pos_embed_max_pos"] = apos[0]
    precision = raw.get("frequencies_precision", "float32")
    if precision not in ("float32", "float64"):
        raise ConfigError(f"{src}: config option 'frequencies_precision' must be 'float32' or 'float64', "
                          f"got {precision!r}")
    fields["rope_double_precision"] = precision == "float64"
    names.update(pos_embed_max_pos="positional_embedding_max_pos[0]", base_height="positional_embedding_max_pos[1]",
                 base_width="positional_embedding_max_pos[2]",
                 audio_pos_embed_max_pos="audio_positional_embedding_max_pos[0]")
    return parse_config(LTX2TransformerConfig, fields, src, names=names)
