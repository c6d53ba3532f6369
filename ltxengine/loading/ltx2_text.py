"""LTX-2 text connectors in Lightricks' single file: key map and header config.

The connectors are split across two prefixes of the main checkpoint::

    text_embedding_projection.aggregate_embed.weight            -> text_proj_in.weight
    model.diffusion_model.video_embeddings_connector.<rest>     -> video_connector.<rest'>
    model.diffusion_model.audio_embeddings_connector.<rest>     -> audio_connector.<rest'>

with ``transformer_1d_blocks`` -> ``transformer_blocks`` and ``q_norm``/``k_norm`` -> ``norm_q``/``norm_k``
in <rest> (diffusers' ``LTX_2_0_CONNECTORS_KEYS_RENAME_DICT``). Every other ``model.diffusion_model.``
key belongs to the DiT, whose key map must in turn skip the two connector prefixes.

The configuration lives in the ``transformer`` section of the header, next to the DiT's options;
``config_from_original`` reads the keys ltx-core 1.0.0's connector configurators read
(``Embeddings1DConnectorConfigurator``, ``AudioEmbeddings1DConnectorConfigurator``,
``_create_feature_extractor``) with ltx-core's defaults where a key is absent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config import ConfigError, check_value, parse_config
from ..models.ltx2_text import TextConnectorsConfig
from .keymaps import KeyMap

__all__ = ["KEYMAP", "KeyMapUnion", "config_from_original", "V2_KEYS"]

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
    (KeyMap("model.diffusion_model.video_embeddings_connector.", _CONNECTOR_RENAMES), "video_connector."),
    (KeyMap("model.diffusion_model.audio_embeddings_connector.", _CONNECTOR_RENAMES), "audio_connector."),
))

# Presence of any of these selects ltx-core's feature extractor V2 (LTX-2.3).
V2_KEYS = ("caption_proj_before_connector", "caption_projection_first_linear", "caption_proj_input_norm",
           "caption_projection_second_linear")

# ltx-core 1.0.0 defaults for an absent key.
_DEFAULT_HEADS, _DEFAULT_HEAD_DIM, _DEFAULT_LAYERS, _DEFAULT_REGISTERS = 30, 128, 2, 128


def config_from_original(section: dict[str, Any], source: str, *, text_proj_in_factor: int = 49
                         ) -> TextConnectorsConfig:
    """``transformer`` header section -> TextConnectorsConfig.

    Only the connector keys are read (the section also describes the DiT). ltx-core defaults:
    ``rope_type`` "interleaved", ``frequencies_precision`` float32, ``connector_positional_embedding_max_pos``
    [1], 30 heads x 128, 2 layers; the audio connector falls back to the video connector's sizes.
    ``text_proj_in_factor`` (Gemma hidden states: layers + 1) is not in the header: ltx-core fixes it
    to Gemma-3-12B's 49. ltx-core hard-codes 128 registers; a ``connector_num_learnable_registers``
    key, when present, is honoured (the weights' shape decides in any case).
    """
    src = f"{source} [transformer: text connectors]"
    v2 = [k for k in V2_KEYS if k in section]
    if v2:
        raise ConfigError(f"{src}: config options {v2} select the LTX-2.3 feature extractor V2 (per-token RMS norm, "
                          "per-modality projections), which is not supported")
    if check_value(section.get("connector_apply_gated_attention", False), bool, src, "connector_apply_gated_attention"):
        raise ConfigError(f"{src}: config option 'connector_apply_gated_attention' must be false (LTX-2.3 gated "
                          f"attention is not supported), got {section['connector_apply_gated_attention']!r}")
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
    fields = dict(
        caption_channels=section.get("caption_channels", width),
        text_proj_in_factor=text_proj_in_factor,
        video_connector_num_attention_heads=heads,
        video_connector_attention_head_dim=head_dim,
        video_connector_num_layers=layers,
        video_connector_num_learnable_registers=registers,
        audio_connector_num_attention_heads=section.get("audio_connector_num_attention_heads", heads),
        audio_connector_attention_head_dim=section.get("audio_connector_attention_head_dim", head_dim),
        audio_connector_num_layers=section.get("audio_connector_num_layers", layers),
        audio_connector_num_learnable_registers=registers,
        connector_rope_base_seq_len=max_pos[0],
        rope_theta=10000.0,  # ltx-core's connectors never read a theta from the header
        rope_double_precision=precision == "float64",
        rope_type=section.get("rope_type", "interleaved"),
    )
    names = dict(video_connector_num_attention_heads="connector_num_attention_heads",
                 video_connector_attention_head_dim="connector_attention_head_dim",
                 video_connector_num_layers="connector_num_layers",
                 video_connector_num_learnable_registers="connector_num_learnable_registers",
                 audio_connector_num_learnable_registers="connector_num_learnable_registers",
                 connector_rope_base_seq_len="connector_positional_embedding_max_pos[0]")
    for key in ("num_attention_heads", "attention_head_dim", "num_layers"):
        names[f"audio_connector_{key}"] = f"audio_connector_{key}" if f"audio_connector_{key}" in section \
            else f"connector_{key}"
    return parse_config(TextConnectorsConfig, fields, src, names=names)


def _is_int(*values) -> bool:
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)
