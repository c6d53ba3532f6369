"""The RoPE layout of an LTX-2 header without ``rope_type`` (issue 19).

ltx-core read a missing key as "interleaved" up to 2026-03-30 (1.0.0, installed: checked here) and as
"split" since 2026-05-11 (@7df34df, still @400fd31: model_configurator.py ``config.get("rope_type",
"split")`` for the DiT, embeddings_connector.py the same for the connectors; not installable, so that
side is stated from the source). Every released header names "split", so only headers without the key
are decided: 2.3+ sections (any of their switches on) as the current reference, others as 1.0.0.
"""

from __future__ import annotations

import pytest
import torch

from ltxengine.config import LTX2TransformerConfig, parse_config
from ltxengine.loading.ltx2_text import V2_EXPECTED, config_from_original
from ltxengine.loading.ltx2_transformer import default_rope_type, transformer_config
from ltxengine.presets import TINY_LTX2, TINY_LTX23, TINY_LTX25
from tests.models.ltx2_transformer_fixtures import original_section


def _section(cfg, **extra):
    section = dict(original_section(cfg), **extra)
    del section["rope_type"]
    return section


# connectors at the tiny DiT's widths: 2.0 reads the 24-wide caption, 2.3+ project to 2 x 16 / 2 x 8
V1 = dict(connector_num_attention_heads=2, connector_attention_head_dim=12)
V2 = dict(V2_EXPECTED, connector_num_attention_heads=2, connector_attention_head_dim=16,
          audio_connector_num_attention_heads=2, audio_connector_attention_head_dim=8)
SECTIONS = {"2.0": _section(TINY_LTX2, **V1), "2.3": _section(TINY_LTX23, **V2), "2.5": _section(TINY_LTX25, **V2)}


@pytest.mark.parametrize("version, expected", [("2.0", "interleaved"), ("2.3", "split"), ("2.5", "split")])
def test_missing_rope_type_follows_the_reference_of_the_release(version, expected):
    section = SECTIONS[version]
    assert default_rope_type(section) == expected
    assert transformer_config(section, "ckpt").rope_type == expected
    kw = {"text_proj_in_factor": 4, "caption_channels": 32} if version != "2.0" else {}
    assert config_from_original(section, "ckpt", **kw).rope_type == expected  # one key for DiT and connectors
    for given in ("split", "interleaved"):  # a header that names it is read as it says
        assert transformer_config({**section, "rope_type": given}, "ckpt").rope_type == given
        assert config_from_original({**section, "rope_type": given}, "ckpt", **kw).rope_type == given


def test_each_switch_marks_the_new_layout():
    for key in ("apply_gated_attention", "cross_attention_adaln", "caption_proj_before_connector"):
        assert default_rope_type({key: True}) == "split"
        assert default_rope_type({key: False}) == "interleaved"
    assert default_rope_type({}) == "interleaved"


def test_2_0_default_is_ltx_core_1_0_0s():
    """ltx-core 1.0.0's configurator on the same 2.0 section without rope_type builds interleaved RoPE,
    as ours does; the released layout (split) is unchanged."""
    from tests.oracles import ltx_core
    conf = ltx_core("model.transformer.model_configurator")
    with torch.device("meta"):
        core = conf.LTXModelConfigurator.from_config({"transformer": SECTIONS["2.0"]})
    assert core.rope_type.value == transformer_config(SECTIONS["2.0"], "ckpt").rope_type == "interleaved"
    assert transformer_config(original_section(TINY_LTX2), "ckpt") == parse_config(
        LTX2TransformerConfig, {**TINY_LTX2.__dict__, "causal_offset": 1}, "test")
