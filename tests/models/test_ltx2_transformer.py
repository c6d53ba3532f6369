"""LTX-2 audio+video transformer against diffusers' LTX2VideoTransformer3DModel and Lightricks'
ltx-core 1.0.0 LTXModel, from the same random weights, fp32 on CPU.

Tolerance: 1e-5 x max(1, |reference|) -- fp32 rounding of the same arithmetic in a different
order (fused rms_norm in ltx-core, addcmul in the split rotary) over 2-3 blocks measures
~1e-6; a wiring error (wrong table row, norm, rope slice) moves outputs by > 1e-2 (controls).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxengine.config import ConfigError, LTX2TransformerConfig, parse_config
from ltxengine.models.ltx2_transformer import Skip, count_parameters
from tests.helpers import assert_close_scaled
from tests.models.ltx2_transformer_fixtures import (FPS, NA, REL, TINY, F, H, W, inputs, ltx_core_model,
                                                    original_section, pair, run_ours, to_original)
from tests.oracles import ltx_core

def _diffusers(ref, x, **kw):
    with torch.no_grad():
        out = ref(hidden_states=x["video"], audio_hidden_states=x["audio"], encoder_hidden_states=x["vtext"],
                  audio_encoder_hidden_states=x["atext"], timestep=x["vt"] * 1000, audio_timestep=x["sigma_a"] * 1000,
                  sigma=x["sigma_v"] * 1000, audio_sigma=x["sigma_a"] * 1000, encoder_attention_mask=x["mask"],
                  audio_encoder_attention_mask=x["mask"], num_frames=F, height=H, width=W, fps=FPS,
                  audio_num_frames=NA, return_dict=False, **kw)
    return out


@pytest.mark.parametrize("name", list(TINY))
def test_matches_diffusers(name):
    ref, ours, cfg = pair(name)
    x = inputs(cfg)
    v, a = run_ours(ours, x)
    rv, ra = _diffusers(ref, x, use_cross_timestep=True)
    assert_close_scaled(v, rv, REL, f"{name} video")
    assert_close_scaled(a, ra, REL, f"{name} audio")


def test_legacy_cross_timestep_matches_diffusers_and_differs():
    ref, ours, cfg = pair("split64")
    x = inputs(cfg)
    v, a = run_ours(ours, x, legacy=True)
    rv, ra = _diffusers(ref, x, use_cross_timestep=False)
    assert_close_scaled(v, rv, REL, "legacy video")
    assert_close_scaled(a, ra, REL, "legacy audio")
    v_new, _ = run_ours(ours, x)
    assert (v_new - v).abs().max() > 1e-3  # the convention matters when sigmas differ / tokens are conditioned


def test_stg_and_isolation_match_diffusers():
    ref, ours, cfg = pair("split64", perturbed_attn=True)
    x = inputs(cfg)
    # Sample 0 perturbed at block 1, sample 1 not (per-sample blend), then all perturbed.
    v, a = run_ours(ours, x, skip=[Skip.stg([1]), Skip()])
    rv, ra = _diffusers(ref, x, use_cross_timestep=True, spatio_temporal_guidance_blocks=[1],
                        perturbation_mask=torch.tensor([0.0, 1.0]))
    assert_close_scaled(v, rv, REL, "stg mixed video")
    assert_close_scaled(a, ra, REL, "stg mixed audio")
    v, a = run_ours(ours, x, skip=Skip.stg([0, 1]))
    rv, ra = _diffusers(ref, x, use_cross_timestep=True, spatio_temporal_guidance_blocks=[0, 1])
    assert_close_scaled(v, rv, REL, "stg all video")
    v, a = run_ours(ours, x, skip=Skip.isolate())
    rv, ra = _diffusers(ref, x, use_cross_timestep=True, isolate_modalities=True)
    assert_close_scaled(v, rv, REL, "isolated video")
    assert_close_scaled(a, ra, REL, "isolated audio")
    plain, _ = run_ours(ours, x)
    assert (plain - v).abs().max() > 1e-3


# -- ltx-core ----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["split64", "split_heads"])
@pytest.mark.parametrize("skip", [None, "stg", "isolate"])
def test_matches_ltx_core(name, skip):
    _, ours, cfg = pair(name)
    core = ltx_core_model(cfg, ours.state_dict())
    modality = ltx_core("model.transformer.modality")
    pert = ltx_core("guidance.perturbations")
    x = inputs(cfg)
    b = x["video"].shape[0]
    vpos = ours.video_positions(b, F, H, W, FPS)
    apos = ours.audio_positions(b, NA)
    video = modality.Modality(latent=x["video"], sigma=x["sigma_v"], timesteps=x["vt"], positions=vpos,
                              context=x["vtext"], context_mask=x["mask"])
    audio = modality.Modality(latent=x["audio"], sigma=x["sigma_a"], timesteps=x["sigma_a"][:, None].expand(b, NA),
                              positions=apos, context=x["atext"], context_mask=x["mask"])
    T = pert.PerturbationType
    if skip is None:
        ours_skip, sample = None, pert.PerturbationConfig([])
    elif skip == "stg":
        ours_skip = Skip.stg([1])
        sample = pert.PerturbationConfig([pert.Perturbation(T.SKIP_VIDEO_SELF_ATTN, [1]),
                                          pert.Perturbation(T.SKIP_AUDIO_SELF_ATTN, [1])])
    else:
        ours_skip = Skip.isolate()
        sample = pert.PerturbationConfig([pert.Perturbation(T.SKIP_A2V_CROSS_ATTN, None),
                                          pert.Perturbation(T.SKIP_V2A_CROSS_ATTN, None)])
    with torch.no_grad():
        rv, ra = core(video, audio, pert.BatchedPerturbationConfig([sample] * b))
    v, a = run_ours(ours, x, skip=ours_skip)
    assert_close_scaled(v, rv, REL, f"{name}/{skip} video vs ltx-core")
    assert_close_scaled(a, ra, REL, f"{name}/{skip} audio vs ltx-core")


def test_ltx_core_positions_equal_ours():
    """ltx-core's patchifier bounds (kept in fp32 here; its pipelines store them in bf16) equal
    our positions."""
    from ltxengine.models.ltx2_transformer import audio_positions, video_positions
    patchifiers = ltx_core("components.patchifiers")
    types = ltx_core("types")
    shape = types.VideoLatentShape(batch=1, channels=8, frames=F, height=H, width=W)
    bounds = patchifiers.VideoLatentPatchifier(patch_size=1).get_patch_grid_bounds(shape, torch.device("cpu"))
    pixel = patchifiers.get_pixel_coords(bounds, types.SpatioTemporalScaleFactors.default(), causal_fix=True).float()
    pixel[:, 0] = pixel[:, 0] / FPS
    assert torch.equal(video_positions(1, F, H, W, FPS), pixel)
    ashape = types.AudioLatentShape(batch=1, channels=8, frames=NA, mel_bins=16)
    abounds = patchifiers.AudioPatchifier(patch_size=1).get_patch_grid_bounds(ashape, torch.device("cpu"))
    assert torch.allclose(audio_positions(1, NA), abounds.float(), atol=1e-7, rtol=0)


def test_mixed_perturbation_per_sample_equals_separate_calls():
    _, ours, cfg = pair("split64")
    x = inputs(cfg)
    both_v, both_a = run_ours(ours, x, skip=[Skip.stg([0]), Skip.isolate()])
    for i, s in enumerate([Skip.stg([0]), Skip.isolate()]):
        one = {k: v[i:i + 1] for k, v in x.items()}
        v, a = run_ours(ours, one, skip=s)
        assert_close_scaled(both_v[i:i + 1], v, REL, f"sample {i} video")
        assert_close_scaled(both_a[i:i + 1], a, REL, f"sample {i} audio")


# -- config, sizes, errors -----------------------------------------------------------------------

def test_19b_parameter_count():
    assert count_parameters(LTX2TransformerConfig()) == 18_876_174_592


def test_refuses_unsupported_options():
    # The 2.3 / 2.5 switches are accepted (tests/models/test_ltx2_transformer_v23.py); biases are not optional.
    for key in ("attention_bias", "attention_out_bias"):
        with pytest.raises(ConfigError, match=key):
            parse_config(LTX2TransformerConfig, {key: False}, "cfg.json")
    with pytest.raises(ConfigError, match="unknown config option 'foo'"):
        parse_config(LTX2TransformerConfig, {"foo": 1}, "cfg.json")
    with pytest.raises(ConfigError, match="audio_cross_attention_dim"):
        parse_config(LTX2TransformerConfig, {"audio_cross_attention_dim": 1024}, "cfg.json")


def test_bad_inputs_are_named():
    _, ours, cfg = pair("split64")
    x = inputs(cfg)
    with pytest.raises(ValueError, match="video_timesteps"):
        run_ours(ours, {**x, "vt": x["vt"][:, :3]})
    with pytest.raises(ValueError, match="audio must be"):
        run_ours(ours, {**x, "audio": x["audio"][..., :2]})
    with pytest.raises(ValueError, match="Skip.video_self_attn"):
        Skip(video_self_attn=[-1])
    with pytest.raises(ValueError, match="one per sample"):
        run_ours(ours, x, skip=[Skip()])
    with pytest.raises(ValueError, match="mask must be"):
        ours.prepare_context(x["vtext"], x["atext"], x["mask"][:, :3])


def test_controls_wiring_matters():
    """A swapped cross-modal table row or a dropped text mask changes the output."""
    _, ours, cfg = pair("split64")
    x = inputs(cfg)
    v0, a0 = run_ours(ours, x)
    v1, _ = run_ours(ours, {**x, "mask": torch.ones_like(x["mask"])})
    assert (v1 - v0).abs().max() > 1e-3
    with torch.no_grad():
        t = ours.transformer_blocks[0].video_a2v_cross_attn_scale_shift_table
        t.copy_(t[[1, 0, 2, 3, 4]])
    v2, _ = run_ours(ours, x)
    assert (v2 - v0).abs().max() > 1e-3


# -- single-file format ------------------------------------------------------------------------

def test_keymap_recovers_our_keys_and_drops_connectors():
    from ltxengine.loading.ltx2_transformer import KEYMAP
    _, ours, _ = pair("split64")
    for key in ours.state_dict():
        assert KEYMAP.apply("model.diffusion_model." + to_original(key)) == key
    assert KEYMAP.apply("model.diffusion_model.video_embeddings_connector.learnable_registers") is None
    assert KEYMAP.apply("vae.decoder.conv_in.conv.weight") is None


@pytest.mark.parametrize("name", list(TINY))
def test_original_config_converts_to_the_diffusers_config(name):
    from ltxengine.loading.ltx2_transformer import transformer_config
    _, _, cfg = pair(name)
    # ltx-core has no causal-offset option: its positions always get the causal fix (offset 1).
    assert transformer_config(original_section(cfg), "ckpt") == dataclasses.replace(cfg, causal_offset=1)


def test_original_config_defaults_and_refusals():
    from ltxengine.loading.ltx2_transformer import transformer_config
    full = original_section(LTX2TransformerConfig())
    assert transformer_config(full, "ckpt") == LTX2TransformerConfig()
    # ltx-core's defaults where absent: interleaved RoPE, float32 grid, gate multiplier 1.
    sparse = {k: v for k, v in full.items() if k not in ("rope_type", "frequencies_precision",
                                                        "av_ca_timestep_scale_multiplier")}
    cfg = transformer_config(sparse, "ckpt")
    assert (cfg.rope_type, cfg.rope_double_precision, cfg.cross_attn_timestep_scale_multiplier) == (
        "interleaved", False, 1)
    assert transformer_config({**full, "connector_num_layers": 2, "attention_type": "xformers"}, "ckpt")
    for key, value in (("apply_gated_attention", "true"), ("share_ff", True), ("qk_norm", "layer_norm")):
        with pytest.raises(ConfigError, match=key):
            transformer_config({**full, key: value}, "ckpt")
    with pytest.raises(ConfigError, match="unknown config option 'mystery'"):
        transformer_config({**full, "mystery": 1}, "ckpt")
    with pytest.raises(ConfigError, match="dropout"):
        transformer_config({k: v for k, v in full.items() if k != "dropout"}, "ckpt")
