"""The LTX-2 audio-only model of the tests: ours loaded from a full model's audio weights, its call on
ltx2_transformer_fixtures' inputs, and ltx-core 1.0.0's LTXModel(model_type=AudioOnly) built with the
arguments of Lightricks' LTXAudioOnlyModelConfigurator (ltx-core @400fd31 model_configurator.py:146-196;
1.0.0 has no such configurator). Used by the model and the text-to-audio pipeline tests."""

from __future__ import annotations

import torch

from ltxengine.models.ltx2_audio_only import LTX2AudioTransformer
from tests.models.ltx2_transformer_fixtures import NA, original_section, to_original
from tests.oracles import ltx_core


def audio_only(ours, cfg):
    """Ours, audio stream only, holding ``ours``' audio weights (loaded strictly)."""
    model = LTX2AudioTransformer(cfg).eval()
    state = {k: v for k, v in ours.state_dict().items() if LTX2AudioTransformer.owns(k)}
    model.load_state_dict(state, strict=True)
    return model


def run_audio(model, x, skip=None):
    b = x["audio"].shape[0]
    rope = model.rope(None, model.audio_positions(b, NA))
    ctx = model.prepare_context(None, x["atext"], x["mask"])
    video = torch.zeros(b, 0, model.config.in_channels)
    with torch.no_grad():
        v, a = model(video, x["audio"], video_sigma=x["sigma_v"], audio_sigma=x["sigma_a"], context=ctx, rope=rope,
                     skip=skip)
    assert v.shape == (b, 0, model.config.out_channels)
    return a


def ltx_core_audio_only(cfg, state):
    """ltx-core's LTXModel(model_type=AudioOnly) with the arguments of LTXAudioOnlyModelConfigurator
    (@400fd31) from the header section of ``cfg``, holding the audio keys of ``state`` (strict)."""
    model_mod = ltx_core("model.transformer.model")
    configurator = ltx_core("model.transformer.model_configurator")
    rope = ltx_core("model.transformer.rope")
    section = original_section(cfg)
    _, audio_caption_projection = configurator._build_caption_projections({"transformer": section}, is_av=True)
    with torch.device("meta"):
        model = model_mod.LTXModel(
            model_type=model_mod.LTXModelType.AudioOnly, num_layers=section["num_layers"],
            norm_eps=section["norm_eps"], timestep_scale_multiplier=section["timestep_scale_multiplier"],
            use_middle_indices_grid=True, audio_num_attention_heads=section["audio_num_attention_heads"],
            audio_attention_head_dim=section["audio_attention_head_dim"],
            audio_in_channels=section["audio_in_channels"], audio_out_channels=section["audio_out_channels"],
            audio_cross_attention_dim=section["audio_cross_attention_dim"],
            audio_positional_embedding_max_pos=section["audio_positional_embedding_max_pos"],
            rope_type=rope.LTXRopeType(section["rope_type"]),
            double_precision_rope=section["frequencies_precision"] == "float64",
            apply_gated_attention=section.get("apply_gated_attention", False),
            audio_caption_projection=audio_caption_projection,
            cross_attention_adaln=section.get("cross_attention_adaln", False))
    audio = {to_original(k): v for k, v in state.items() if LTX2AudioTransformer.owns(k)}
    model.load_state_dict(audio, strict=True, assign=True)
    return model.eval()
