"""LTX-2 text connectors in Lightricks' single file: key map and header config.

The connectors are split across two prefixes of the main checkpoint::

    text_embedding_projection.aggregate_embed.<w|b>             -> text_proj_in.<w|b>        (2.0, V1)
    text_embedding_projection.video_aggregate_embed.<w|b>       -> video_text_proj_in.<w|b>  (2.3+, V2)
    text_embedding_projection.audio_aggregate_embed.<w|b>       -> audio_text_proj_in.<w|b>  (2.3+, V2)
    model.diffusion_model.video_embeddings_connector.<rest>     -> video_connector.<rest'>
    model.diffusion_model.audio_embeddings_connector.<rest>     -> audio_connector.<rest'>

with ``transformer_1d_blocks`` -> ``transformer_blocks`` and ``q_norm``/``k_norm`` -> ``norm_q``/``norm_k``
in <rest> (diffusers' ``LTX_2_0_CONNECTORS_KEYS_RENAME_DICT`` / ``LTX_2_3_...``; the gate keeps its name,
``attn1.to_gate_logits``). Every other ``model.diffusion_model.`` key belongs to the DiT, whose key map
must in turn skip the two connector prefixes.

The configuration lives in the ``transformer`` section of the header, next to the DiT's options;
``config_from_original`` reads the keys Lightricks' connector configurators read
(``Embeddings1DConnectorConfigurator``, ``AudioEmbeddings1DConnectorConfigurator``,
``_create_feature_extractor``; ltx-core 1.0.0, plus ``connector_ff_bias`` from LTX-2 @400fd31) with
ltx-core 1.0.0's defaults where a key is absent.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, check_value, parse_config
from ..models.ltx2_text import TextConnectorsConfig
from .keymaps import KeyMap
from .ltx2_transformer import default_rope_type
from .safetensors_io import CheckpointError

__all__ = ["KEYMAP", "KeyMapUnion", "config_from_original", "gemma_source_of", "GEMMA_HIDDEN_SIZE", "V2_EXPECTED",
           "V2_KEYS"]

_CONNECTOR_RENAMES = (("transformer_1d_blocks", "transformer_blocks"), ("q_norm", "norm_q"), ("k_norm", "norm_k"))


@dataclass(frozen=True)
class KeyMapUnion:
    """Several key maps, each with the prefix its keys get on our side; the first that claims a
    key wins. Same ``apply`` contract as ``KeyMap``."""

    parts: tuple[tuple[KeyMap, str], ...]

    def apply(self, key: str) -> str | None:
        for keymap, destination in self.parts:
            mapped = keymap.apply(key)
            if mapped is not None:
                return destination + mapped
        return None


KEYMAP = KeyMapUnion((
    (KeyMap("text_embedding_projection.aggregate_embed."), "text_proj_in."),
    (KeyMap("text_embedding_projection.video_aggregate_embed."), "video_text_proj_in."),
    (KeyMap("text_embedding_projection.audio_aggregate_embed."), "audio_text_proj_in."),
    (KeyMap("model.diffusion_model.video_embeddings_connector.", _CONNECTOR_RENAMES), "video_connector."),
    (KeyMap("model.diffusion_model.audio_embeddings_connector.", _CONNECTOR_RENAMES), "audio_connector."),
))

# Presence of any of these selects ltx-core's feature extractor V2 (LTX-2.3+), and then all four must
# have exactly these values (ltx-core's _V2_EXPECTED_CONFIG: the projection sits before the connectors).
V2_EXPECTED = {"caption_proj_before_connector": True, "caption_projection_first_linear": False,
               "caption_proj_input_norm": False, "caption_projection_second_linear": False}
V2_KEYS = tuple(V2_EXPECTED)

# ltx-core 1.0.0 defaults for an absent key.
_DEFAULT_HEADS, _DEFAULT_HEAD_DIM, _DEFAULT_LAYERS, _DEFAULT_REGISTERS = 30, 128, 2, 128
# V2 projection widths: the DiT's video and audio widths (ltx-core's LTXModelConfigurator defaults).
_DIT_DEFAULTS = {"num_attention_heads": 32, "attention_head_dim": 128, "audio_num_attention_heads": 32,
                 "audio_attention_head_dim": 64}
GEMMA_HIDDEN_SIZE = 3840  # Gemma-3-12B and Gemma-4-12B: the V2 input width when the caller does not say


def config_from_original(section: dict[str, Any], source: str, *, text_proj_in_factor: int = 49,
                         caption_channels: int | None = None) -> TextConnectorsConfig:
    """``transformer`` header section -> TextConnectorsConfig.

    Only the connector keys are read (the section also describes the DiT). ltx-core defaults:
    ``rope_type`` "interleaved" ("split" for a 2.3+ section: ltx2_transformer.default_rope_type),
    ``frequencies_precision`` float32, ``connector_positional_embedding_max_pos``
    [1], 30 heads x 128, 2 layers; the audio connector falls back to the video connector's sizes.
    ``text_proj_in_factor`` (Gemma hidden states: layers + 1) is not in the header: ltx-core takes it
    from the Gemma config (49 for Gemma-3-12B and Gemma-4-12B). ltx-core hard-codes 128 registers; a
    ``connector_num_learnable_registers`` key, when present, is honoured (the weights' shape decides in
    any case). V1: the Gemma width is the header's ``caption_channels`` (else the connector width);
    V2: ``caption_channels`` (ltx-core reads it from the Gemma config; default 3840), and the
    projections' widths are the DiT's (``num_attention_heads`` x ``attention_head_dim``, audio likewise).
    """
    src = f"{source} [transformer: text connectors]"
    v2 = _is_v2(section, src)
    gated = check_value(section.get("connector_apply_gated_attention", False), bool, src,
                        "connector_apply_gated_attention")
    if section.get("connector_norm_output", True) is not True:
        raise ConfigError(f"{src}: config option 'connector_norm_output' must be true (the connectors end with an "
                          f"RMSNorm), got {section['connector_norm_output']!r}")
    precision = section.get("frequencies_precision", "float32")
    if precision not in ("float32", "float64"):
        raise ConfigError(f"{src}: config option 'frequencies_precision' must be 'float32' or 'float64', "
                          f"got {precision!r}")
    max_pos = section.get("connector_positional_embedding_max_pos", [1])
    if not (isinstance(max_pos, (list, tuple)) and len(max_pos) == 1):
        raise ConfigError(f"{src}: config option 'connector_positional_embedding_max_pos' must be a one-element "
                          f"list (1-D positions), got {max_pos!r}")

    heads = section.get("connector_num_attention_heads", _DEFAULT_HEADS)
    head_dim = section.get("connector_attention_head_dim", _DEFAULT_HEAD_DIM)
    layers = section.get("connector_num_layers", _DEFAULT_LAYERS)
    registers = section.get("connector_num_learnable_registers", _DEFAULT_REGISTERS)
    width = heads * head_dim if _is_int(heads, head_dim) else None  # a bad value is refused by validate
    if caption_channels is None:
        caption_channels = GEMMA_HIDDEN_SIZE if v2 else section.get("caption_channels", width)
    fields = dict(
        caption_channels=caption_channels,
        text_proj_in_factor=text_proj_in_factor,
        video_connector_num_attention_heads=heads,
        video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=layers,
        video_connector_num_learnable_registers=registers,
        video_gated_attn=gated,
        audio_connector_num_attention_heads=section.get("audio_connector_num_attention_heads", heads),
        audio_connector_attention_head_dim=section.get("audio_connector_attention_head_dim", head_dim),
        audio_connector_num_layers=section.get("audio_connector_num_layers", layers),
        audio_connector_num_learnable_registers=registers,
        audio_gated_attn=gated,
        connector_rope_base_seq_len=max_pos[0],
        rope_theta=10000.0,  # ltx-core's connectors never read a theta from the header
        rope_double_precision=precision == "float64",
        rope_type=section.get("rope_type", default_rope_type(section)),  # the DiT's, ltx-core reads one key
        connector_ff_bias=section.get("connector_ff_bias", True),
    )
    if v2:
        dit = {k: section.get(k, v) for k, v in _DIT_DEFAULTS.items()}
        video = (dit["num_attention_heads"], dit["attention_head_dim"])
        audio = (dit["audio_num_attention_heads"], dit["audio_attention_head_dim"])
        fields.update(per_modality_projections=True, proj_bias=True,
                      video_hidden_dim=video[0] * video[1] if _is_int(*video) else video,
                      audio_hidden_dim=audio[0] * audio[1] if _is_int(*audio) else audio)
    return parse_config(TextConnectorsConfig, fields, src, names=_original_names(section))


def _is_v2(section: dict[str, Any], src: str) -> bool:
    """ltx-core's feature-extractor choice: none of V2_KEYS -> V1; all four with V2_EXPECTED's values -> V2;
    anything between is refused (ltx-core: NotImplementedError, "config drift")."""
    present = [k for k in V2_KEYS if k in section]
    if not present:
        return False
    missing = [k for k in V2_KEYS if k not in section]
    if missing:
        raise ConfigError(f"{src}: config options {present} select the feature extractor V2 (LTX-2.3+), which also "
                          f"needs {missing}")
    wrong = {k: section[k] for k in V2_KEYS if section[k] is not V2_EXPECTED[k]}
    if wrong:
        raise ConfigError(f"{src}: feature extractor V2 options must be {V2_EXPECTED}, got {wrong} (no other "
                          "caption-projection layout is implemented)")
    return True


def _original_names(section: dict[str, Any]) -> dict[str, str]:
    """Our field -> the header key an error should name."""
    names = dict(video_connector_num_attention_heads="connector_num_attention_heads",
                 video_connector_attention_head_dim="connector_attention_head_dim",
                 video_connector_num_layers="connector_num_layers",
                 video_connector_num_learnable_registers="connector_num_learnable_registers",
                 audio_connector_num_learnable_registers="connector_num_learnable_registers",
                 video_gated_attn="connector_apply_gated_attention", audio_gated_attn="connector_apply_gated_attention",
                 connector_rope_base_seq_len="connector_positional_embedding_max_pos[0]",
                 video_hidden_dim="num_attention_heads x attention_head_dim",
                 audio_hidden_dim="audio_num_attention_heads x audio_attention_head_dim")
    for key in ("num_attention_heads", "attention_head_dim", "num_layers"):
        names[f"audio_connector_{key}"] = f"audio_connector_{key}" if f"audio_connector_{key}" in section \
            else f"connector_{key}"
    return names


def _is_int(*values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def gemma_source_of(metadata: dict[str, Any] | None, where: str) -> dict | None:
    """A header's ``gemma_source_checkpoint`` (LTX-2.5: ``{"gemma_version": ...}``, the Gemma the text
    path was trained with; ltx-core's encoder_configurator.py reads it) parsed: a JSON object, None
    when absent, else a CheckpointError naming the entry."""
    raw = (metadata or {}).get("gemma_source_checkpoint")
    if raw is None:
        return None
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{where}: header metadata 'gemma_source_checkpoint' is not JSON ({e})") from e
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: header metadata 'gemma_source_checkpoint' must be a JSON object, got "
                              f"{value!r}")
    return value
