"""The LTX-2.3 / 2.5 switches of the LTX-2 transformer against diffusers' LTX2VideoTransformer3DModel
(0.42.1) and, for 2.3, Lightricks' ltx-core 1.0.0 LTXModel (it has gated attention and the
cross-attention adaLN, not the 2.5 switches), from the same perturbed random weights, fp32 on CPU.

Tolerance: REL = 1e-5 x max(1, |reference|), the 2.0 budget (ltx2_transformer_fixtures.REL): the
switches add elementwise modulation and a gate to the same arithmetic; measured errors are ~1e-6
of the output scale, a wiring error (wrong row, stream or flag) moves outputs by > 1e-3 (controls).

Where the references differ, Lightricks' wins: the 2.5 ``keyframes_abs_pos_embedding``. The reference
adds it to the first latent frame's tokens of every video state (ltx-core @400fd31 tools.py
``_first_frame_keyframes_mask``); diffusers applies it only when ``video_keyframes_mask`` is passed
and its pipelines pass none. Ours adds it where the caller's ``keyframes`` marker says
(``first_frame_keyframes`` for the reference's marking, zeros for diffusers' pipelines); on the tiny
2.5 config the two markings differ by 1.9 on video outputs of scale 11 (test_keyframes_follow_the_reference).
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ltxengine.config import (LTX2_TRANSFORMER_22B_V23, LTX2_TRANSFORMER_22B_V25, LTX2TransformerConfig,
                              parse_config)
from ltxengine.models.ltx2_transformer import CROSS_TIMESTEPS, Skip, count_parameters, first_frame_keyframes
from ltxengine.ops import reference
from ltxengine.presets import TINY_LTX2, TINY_LTX23, TINY_LTX25
from tests.helpers import assert_close_scaled
from tests.models.ltx2_transformer_fixtures import (FPS, NA, REL, TINY_V23, F, H, W, diffusers_ltx2, inputs,
                                                    ltx_core_model, original_section, pair, run_diffusers, run_ours,
                                                    to_original)
from tests.oracles import ltx_core


def _keyframes(cfg, x):
    """The reference's marking (first latent frame) for a 2.5 model, else None; and diffusers' mask."""
    if not cfg.use_keyframes_abs_pos_embedding:
        return None, {}
    kf = first_frame_keyframes(x["video"].shape[0], F, H, W)
    return kf, {"video_keyframes_mask": kf[..., None]}


def _perturb_keyframe_embedding(ours, ref):
    """The embedding initialises to zero; give it a value (same in both) so that it matters."""
    if not hasattr(ours, "keyframes_abs_pos_embedding"):
        return
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        value = torch.randn(ours.keyframes_abs_pos_embedding.shape, generator=g) * 0.5
        ours.keyframes_abs_pos_embedding.copy_(value)
        ref.keyframes_abs_pos_embedding.copy_(value)


def _pair(name, **kw):
    ref, ours, cfg = pair(name, **kw)
    _perturb_keyframe_embedding(ours, ref)
    return ref, ours, cfg


@pytest.mark.parametrize("name", list(TINY_V23))
def test_matches_diffusers(name):
    ref, ours, cfg = _pair(name)
    x = inputs(cfg)
    kf, dkw = _keyframes(cfg, x)
    v, a = run_ours(ours, x, keyframes=kf)
    rv, ra = run_diffusers(ref, x, **dkw)
    assert_close_scaled(v, rv, REL, f"{name} video")
    assert_close_scaled(a, ra, REL, f"{name} audio")


@pytest.mark.parametrize("name", ["v23", "video_gate_audio_mod"])
def test_stg_and_isolation_match_diffusers(name):
    """STG replaces the self-attention output by V, and the gate then scales V (both references)."""
    ref, ours, cfg = _pair(name, perturbed_attn=True)
    x = inputs(cfg)
    v, a = run_ours(ours, x, skip=[Skip.stg([1]), Skip()])
    rv, ra = run_diffusers(ref, x, spatio_temporal_guidance_blocks=[1], perturbation_mask=torch.tensor([0.0, 1.0]))
    assert_close_scaled(v, rv, REL, f"{name} stg mixed video")
    assert_close_scaled(a, ra, REL, f"{name} stg mixed audio")
    v, a = run_ours(ours, x, skip=Skip.stg([0, 1]))
    rv, ra = run_diffusers(ref, x, spatio_temporal_guidance_blocks=[0, 1])
    assert_close_scaled(v, rv, REL, f"{name} stg all video")
    assert_close_scaled(a, ra, REL, f"{name} stg all audio")
    v, a = run_ours(ours, x, skip=Skip.isolate())
    rv, ra = run_diffusers(ref, x, isolate_modalities=True)
    assert_close_scaled(v, rv, REL, f"{name} isolated video")
    assert_close_scaled(a, ra, REL, f"{name} isolated audio")


@pytest.mark.parametrize("skip", [None, "stg", "isolate"])
def test_v23_matches_ltx_core(skip):
    _, ours, cfg = _pair("v23")
    core = ltx_core_model(cfg, ours.state_dict())
    modality = ltx_core("model.transformer.modality")
    pert = ltx_core("guidance.perturbations")
    x = inputs(cfg)
    b = x["video"].shape[0]
    video = modality.Modality(latent=x["video"], sigma=x["sigma_v"], timesteps=x["vt"],
                              positions=ours.video_positions(b, F, H, W, FPS), context=x["vtext"],
                              context_mask=x["mask"])
    audio = modality.Modality(latent=x["audio"], sigma=x["sigma_a"], timesteps=x["sigma_a"][:, None].expand(b, NA),
                              positions=ours.audio_positions(b, NA), context=x["atext"], context_mask=x["mask"])
    T = pert.PerturbationType
    ours_skip, sample = {
        None: (None, []),
        "stg": (Skip.stg([1]), [pert.Perturbation(T.SKIP_VIDEO_SELF_ATTN, [1]),
                                pert.Perturbation(T.SKIP_AUDIO_SELF_ATTN, [1])]),
        "isolate": (Skip.isolate(), [pert.Perturbation(T.SKIP_A2V_CROSS_ATTN, None),
                                     pert.Perturbation(T.SKIP_V2A_CROSS_ATTN, None)]),
    }[skip]
    with torch.no_grad():
        rv, ra = core(video, audio, pert.BatchedPerturbationConfig([pert.PerturbationConfig(sample)] * b))
    v, a = run_ours(ours, x, skip=ours_skip)
    assert_close_scaled(v, rv, REL, f"v23/{skip} video vs ltx-core")
    assert_close_scaled(a, ra, REL, f"v23/{skip} audio vs ltx-core")


# -- the 2.5 keyframe embedding ----------------------------------------------------------------

def test_keyframes_follow_the_reference():
    ref, ours, cfg = _pair("v25")
    x = inputs(cfg)
    b, nv = x["video"].shape[:2]
    kf = first_frame_keyframes(b, F, H, W)
    assert kf[:, : H * W].eq(1).all() and kf[:, H * W:].eq(0).all()

    # The formula: block 0 reads proj_in(video) + marker * embedding.
    seen = {}
    hooks = [ours.proj_in.register_forward_hook(lambda m, i, o: seen.__setitem__("proj", o)),
             ours.transformer_blocks[0].register_forward_pre_hook(lambda m, a: seen.__setitem__("in", a[0]))]
    try:
        v_ref_marking, _ = run_ours(ours, x, keyframes=kf)
    finally:
        for h in hooks:
            h.remove()
    assert torch.equal(seen["in"], seen["proj"] + kf[..., None] * ours.keyframes_abs_pos_embedding)

    # One marker row serves the whole batch.
    v_broadcast, _ = run_ours(ours, x, keyframes=kf[:1])
    assert torch.equal(v_broadcast, v_ref_marking)

    # diffusers' pipelines (no mask) = ours with nothing marked.
    v_none, a_none = run_ours(ours, x, keyframes=torch.zeros(b, nv))
    rv, ra = run_diffusers(ref, x)
    assert_close_scaled(v_none, rv, REL, "unmarked video vs diffusers without a mask")
    assert_close_scaled(a_none, ra, REL, "unmarked audio vs diffusers without a mask")
    # The difference the reference's marking makes (measured 1.9 on outputs of scale 11 here).
    assert (v_ref_marking - v_none).abs().max() > 1e-2


def test_keyframes_marker_is_required_and_checked():
    _, ours, cfg = _pair("v25")
    x = inputs(cfg)
    with pytest.raises(ValueError, match="keyframes is required"):
        run_ours(ours, x)
    with pytest.raises(ValueError, match="keyframes must be"):
        run_ours(ours, x, keyframes=torch.ones(2, 3))
    # A model without the embedding ignores a marker (the reference passes one on every state).
    _, ours23, cfg23 = _pair("v23")
    x23 = inputs(cfg23)
    v0, _ = run_ours(ours23, x23)
    v1, _ = run_ours(ours23, x23, keyframes=first_frame_keyframes(2, F, H, W))
    assert torch.equal(v0, v1)


# -- the text path per step --------------------------------------------------------------------

def _text_kv(model, x, sigma):
    """Block 0's text-attention K input of one step at ``sigma``, the context prepared once."""
    b = x["video"].shape[0]
    rope = model.rope(model.video_positions(b, F, H, W, FPS), model.audio_positions(b, NA))
    ctx = model.prepare_context(x["vtext"], x["atext"], x["mask"])
    seen = []
    hook = model.transformer_blocks[0].attn2.to_k.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    s = torch.full((b,), sigma)
    try:
        with torch.no_grad():
            temb = model.embed_timesteps(s, s, s, s, b, torch.float32)
            out = model(x["video"], x["audio"], video_sigma=s, audio_sigma=s, context=ctx, rope=rope, temb=temb,
                        keyframes=first_frame_keyframes(b, F, H, W))
    finally:
        hook.remove()
    return seen[0], out, temb


@pytest.mark.parametrize("name,depends", [("split64", False), ("static_kv", False), ("v23", True)])
def test_text_kv_depend_on_sigma_only_with_prompt_adaln(name, depends):
    """With cross_attn_mod and prompt_adaln, the text K/V input is ctx (1 + scale(sigma)) + shift(sigma):
    a step must recompute it from the context prepared once (as forward does); 2.0 and the static
    table keep it constant over the steps."""
    ref, ours, cfg = _pair(name)
    x = inputs(cfg)
    b = x["video"].shape[0]
    for sigma in (0.9, 0.35):
        _, (v, a), temb = _text_kv(ours, x, sigma)
        assert (temb.video_prompt is not None) == depends
        s = torch.full((b,), sigma)
        rv, ra = run_diffusers(ref, {**x, "sigma_v": s, "sigma_a": s, "vt": s}, video_keyframes_mask=None)
        assert_close_scaled(v, rv, REL, f"{name} sigma {sigma} video")
        assert_close_scaled(a, ra, REL, f"{name} sigma {sigma} audio")
    k_hi, _, _ = _text_kv(ours, x, 0.9)
    k_lo, _, _ = _text_kv(ours, x, 0.35)
    assert (not torch.equal(k_hi, k_lo)) == depends


@pytest.mark.parametrize("executor", [False, True])
def test_denoiser_steps_recompute_the_modulated_text(executor):
    """The LTX-2 Denoiser on a 2.3 model, called directly or through the static-graph executor (eager
    mode: the data flow of a replay; the context is copied into the bucket once): x0 per step equals
    diffusers' at that sigma, with one TextContext for the whole generation and one bucket for both steps."""
    from ltxengine.executor.graphs import GraphExecutor
    from ltxengine.ltx2.denoise import Denoiser

    ref, ours, cfg = _pair("v23")
    x = inputs(cfg, batch=1)
    rope = ours.rope(ours.video_positions(1, F, H, W, FPS), ours.audio_positions(1, NA))
    ctx = ours.prepare_context(x["vtext"], x["atext"], x["mask"])
    graphs = GraphExecutor("cpu", "eager") if executor else None
    den = Denoiser(ours, ctx, None, rope, torch.ones(1, F * H * W, 1), torch.ones(1, NA, 1), executor=graphs)
    for step, sigma in enumerate((0.95, 0.5)):
        with torch.no_grad():
            x0v, x0a = den(x["video"], x["audio"], sigma, step)
        s = torch.full((1,), sigma)
        rv, ra = run_diffusers(ref, {**x, "sigma_v": s, "sigma_a": s, "vt": s})
        assert_close_scaled(x0v, x["video"] - rv * sigma, REL, f"step {step} video x0")
        assert_close_scaled(x0a, x["audio"] - ra * sigma, REL, f"step {step} audio x0")
    if executor:
        assert len(graphs.buckets) == 1


# -- the audio<->video timestep conventions --------------------------------------------------------

def test_cross_timestep_conventions():
    """"mixed" (Lightricks since ltx-core 1.1.4, @400fd31) = the own per-token timesteps' scale/shift
    tables ("own") with the other modality's sigma's gates ("sigma"); "own" is diffusers'
    use_cross_timestep=False, also on a 2.3 model."""
    ref, ours, cfg = _pair("v23")
    x = inputs(cfg)
    b = x["video"].shape[0]
    at = x["sigma_a"][:, None].expand(b, NA)
    args = (x["sigma_v"], x["sigma_a"], x["vt"], at, b, torch.float32)
    sigma, own, mixed = (ours.embed_timesteps(*args, cross_timestep=m) for m in ("sigma", "own", "mixed"))
    legacy = ours.embed_timesteps(*args, legacy_cross_timestep=True)
    for a_, b_ in ((sigma, ours.embed_timesteps(*args)), (own, legacy)):
        assert all(p is None and q is None or torch.equal(p, q) for p, q in zip(a_, b_))
    assert torch.equal(mixed.video_cross, own.video_cross) and torch.equal(mixed.audio_cross, own.audio_cross)
    assert torch.equal(mixed.video_gate, sigma.video_gate) and torch.equal(mixed.audio_gate, sigma.audio_gate)
    assert not torch.equal(mixed.video_cross, sigma.video_cross) and not torch.equal(mixed.video_gate, own.video_gate)

    rope = ours.rope(ours.video_positions(b, F, H, W, FPS), ours.audio_positions(b, NA))
    ctx = ours.prepare_context(x["vtext"], x["atext"], x["mask"])
    outs = {}
    for m in CROSS_TIMESTEPS:
        with torch.no_grad():
            outs[m] = ours(x["video"], x["audio"], video_sigma=x["sigma_v"], audio_sigma=x["sigma_a"],
                           video_timesteps=x["vt"], context=ctx, rope=rope, cross_timestep=m)
    with torch.no_grad():
        rv, ra = ref(hidden_states=x["video"], audio_hidden_states=x["audio"], encoder_hidden_states=x["vtext"],
                     audio_encoder_hidden_states=x["atext"], timestep=x["vt"] * 1000, audio_timestep=at * 1000,
                     sigma=x["sigma_v"] * 1000, audio_sigma=x["sigma_a"] * 1000, encoder_attention_mask=x["mask"],
                     audio_encoder_attention_mask=x["mask"], num_frames=F, height=H, width=W, fps=FPS,
                     audio_num_frames=NA, return_dict=False, use_cross_timestep=False)
    assert_close_scaled(outs["own"][0], rv, REL, "own video vs diffusers use_cross_timestep=False")
    assert_close_scaled(outs["own"][1], ra, REL, "own audio vs diffusers use_cross_timestep=False")
    for m in ("sigma", "own"):
        assert (outs["mixed"][0] - outs[m][0]).abs().max() > 1e-3, m
    with pytest.raises(ValueError, match="cross_timestep must be one of"):
        ours.embed_timesteps(*args, cross_timestep="other")
    with pytest.raises(ValueError, match="legacy_cross_timestep=True is cross_timestep='own'"):
        ours.embed_timesteps(*args, legacy_cross_timestep=True, cross_timestep="mixed")


# -- controls: each switch matters --------------------------------------------------------------

def test_controls_gate_and_modulation_matter():
    _, ours, cfg = _pair("v25")
    x = inputs(cfg)
    kf = first_frame_keyframes(2, F, H, W)
    v0, a0 = run_ours(ours, x, keyframes=kf)
    block = ours.transformer_blocks[0]
    edits = {
        "video gate logits (gate 1)": lambda: block.attn1.to_gate_logits.weight.zero_(),
        "audio cross-modal gate": lambda: block.video_to_audio_attn.to_gate_logits.bias.add_(3.0),
        "text K/V table rows swapped": lambda: block.prompt_scale_shift_table.copy_(
            block.prompt_scale_shift_table[[1, 0]]),
        "text query rows swapped": lambda: block.scale_shift_table.copy_(
            block.scale_shift_table[[0, 1, 2, 3, 4, 5, 7, 6, 8]]),
        "prompt adaLN": lambda: ours.prompt_adaln.linear.bias.add_(0.5),
    }
    for what, edit in edits.items():
        saved = {k: t.clone() for k, t in ours.state_dict().items()}
        with torch.no_grad():
            edit()
        v1, a1 = run_ours(ours, x, keyframes=kf)
        ours.load_state_dict(saved)
        assert max((v1 - v0).abs().max(), (a1 - a0).abs().max()) > 1e-3, what


def test_layout_of_the_switches():
    """Parameters each switch adds or removes, as diffusers and the reference lay them out."""
    _, ours, cfg = _pair("v25")
    keys = set(ours.state_dict())
    assert "caption_projection.linear_1.weight" not in keys and "keyframes_abs_pos_embedding" in keys
    assert "transformer_blocks.0.ff.net.0.proj.bias" not in keys and "transformer_blocks.0.ff.net.2.bias" not in keys
    assert "transformer_blocks.0.audio_ff.net.2.bias" in keys
    for attn in ("attn1", "attn2", "audio_attn1", "audio_attn2", "audio_to_video_attn", "video_to_audio_attn"):
        assert ours.state_dict()[f"transformer_blocks.1.{attn}.to_gate_logits.weight"].shape[0] == (
            getattr(ours.transformer_blocks[1], attn).heads)
    assert ours.transformer_blocks[0].scale_shift_table.shape[0] == 9
    assert ours.time_embed.linear.out_features == 9 * cfg.inner_dim
    assert ours.prompt_adaln.linear.out_features == 2 * cfg.inner_dim
    _, ours, _ = _pair("static_kv")
    assert not hasattr(ours, "prompt_adaln") and hasattr(ours.transformer_blocks[0], "prompt_scale_shift_table")


def test_head_gate_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3 * 4, generator=g)
    logits = torch.randn(2, 5, 3, generator=g)
    before = x.clone()
    y = reference.head_gate(x, logits)
    want = torch.cat([x[..., 4 * h:4 * (h + 1)] * 2 * torch.sigmoid(logits[..., h:h + 1]) for h in range(3)], -1)
    assert torch.allclose(y, want, rtol=1e-6, atol=0) and torch.equal(x, before)
    assert torch.equal(reference.head_gate(x, torch.zeros_like(logits)), x)  # zero logits: gate 1
    out = torch.empty_like(x)
    assert reference.head_gate(x, logits, out=out) is out and torch.equal(out, y)
    assert reference.head_gate(x.bfloat16(), logits).dtype == torch.bfloat16


# -- configs, presets, loading --------------------------------------------------------------------

def test_released_22b_configs_build_on_meta():
    """diffusers' converter values (version "2.3"; 2.5 drops the video FFN bias and adds the keyframe
    embedding). 2.3 = 18.99 B DiT parameters (the published "22B" adds the 3.17 B text connectors)."""
    assert count_parameters(LTX2_TRANSFORMER_22B_V23) == 18_988_838_144
    assert count_parameters(LTX2_TRANSFORMER_22B_V25) == 18_987_859_200
    for cfg in (LTX2_TRANSFORMER_22B_V23, LTX2_TRANSFORMER_22B_V25):
        with torch.device("meta"):
            theirs = diffusers_ltx2.LTX2VideoTransformer3DModel(**dataclasses.asdict(cfg))
        assert sum(p.numel() for p in theirs.parameters()) == count_parameters(cfg)
        cfg.validate("preset")
    assert (LTX2_TRANSFORMER_22B_V23.rope_type, LTX2_TRANSFORMER_22B_V23.cross_attn_timestep_scale_multiplier) == (
        "split", 1000)


def test_tiny_presets_carry_the_release_switches():
    base = LTX2TransformerConfig()
    for tiny, release in ((TINY_LTX23, LTX2_TRANSFORMER_22B_V23), (TINY_LTX25, LTX2_TRANSFORMER_22B_V25)):
        switches = {f.name for f in dataclasses.fields(base) if getattr(release, f.name) != getattr(base, f.name)}
        assert switches and all(getattr(tiny, k) == getattr(release, k) for k in switches)
        assert dataclasses.replace(tiny, **{k: getattr(TINY_LTX2, k) for k in switches}) == TINY_LTX2


@pytest.mark.parametrize("name", ["v23", "v25"])
def test_diffusers_folder_loads_strictly_to_identical_outputs(name, tmp_path):
    from ltxengine.loading.ltx2 import load_ltx2_component

    ref, ours, cfg = _pair(name)
    ref.save_pretrained(tmp_path)
    loaded = load_ltx2_component(tmp_path, "transformer", device="cpu", dtype=torch.float32).eval()
    assert loaded.config == cfg
    x = inputs(cfg)
    kf, _ = _keyframes(cfg, x)
    for got, want in zip(run_ours(loaded, x, keyframes=kf), run_ours(ours, x, keyframes=kf)):
        assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["v23", "v25", "static_kv"])
def test_original_layout_keys_and_header(name):
    """Lightricks' single-file names (ltx-core @400fd31: prompt_adaln_single, to_gate_logits,
    prompt_scale_shift_table, keyframes_abs_pos_embedding) map to ours, and the header section
    converts to the diffusers config."""
    from ltxengine.loading.ltx2_transformer import KEYMAP, transformer_config

    _, ours, cfg = _pair(name)
    for key in ours.state_dict():
        assert KEYMAP.apply("model.diffusion_model." + to_original(key)) == key
    assert to_original("audio_prompt_adaln.linear.weight") == "audio_prompt_adaln_single.linear.weight"
    assert transformer_config(original_section(cfg), "ckpt") == dataclasses.replace(cfg, causal_offset=1)
    # The text connectors' caption flags in the same section are theirs to read.
    section = {**original_section(cfg), "caption_projection_first_linear": False, "caption_proj_input_norm": False}
    assert transformer_config(section, "ckpt") == dataclasses.replace(cfg, causal_offset=1)


@pytest.mark.parametrize("name", ["v23", "v25"])
def test_single_file_and_folder_load_identical_weights(name, tmp_path):
    """A transformer-only bundle in Lightricks' layout (original names, header section) and the diffusers
    folder of the same weights load strictly to equal tensors."""
    import json

    from safetensors.torch import save_file

    from ltxengine.loading.ltx2 import load_ltx2, load_ltx2_component

    ref, ours, cfg = _pair(name)
    tensors = {"model.diffusion_model." + to_original(k): v.contiguous() for k, v in ours.state_dict().items()}
    meta = {"config": json.dumps({"transformer": original_section(cfg)}), "model_version": "2.3.0"}
    save_file(tensors, str(tmp_path / "dit.safetensors"), metadata=meta)
    bundle = load_ltx2(tmp_path / "dit.safetensors", device="cpu", dtype=torch.float32,
                       components=("transformer",)).transformer
    ref.save_pretrained(tmp_path / "folder")
    folder = load_ltx2_component(tmp_path / "folder", "transformer", device="cpu", dtype=torch.float32)
    assert bundle.config == dataclasses.replace(folder.config, causal_offset=1) == dataclasses.replace(cfg,
                                                                                                       causal_offset=1)
    a, b = bundle.state_dict(), folder.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_original_header_keys_of_the_23_release():
    """Keys the released 2.3 header carries beside ltx-core's (restated by public ports): the
    connectors' and text encoder's, read elsewhere; the gate multiplier written as 1000.0."""
    from ltxengine.loading.ltx2_transformer import transformer_config

    _, _, cfg = _pair("v23")
    section = {**original_section(cfg), "av_ca_timestep_scale_multiplier": 1000.0, "use_embeddings_connector": True,
               "text_encoder_norm_type": "per_token_rms", "causal_temporal_positioning": True,
               "connector_norm_output": True, "connector_apply_gated_attention": True,
               "_class_name": "AVTransformer3DModel"}
    assert transformer_config(section, "ckpt") == dataclasses.replace(cfg, causal_offset=1)
    with pytest.raises(ValueError, match="av_ca_timestep_scale_multiplier"):
        transformer_config({**section, "av_ca_timestep_scale_multiplier": 999.5}, "ckpt")


def test_original_header_of_a_22b_release():
    from ltxengine.loading.ltx2_transformer import transformer_config

    for release in (LTX2_TRANSFORMER_22B_V23, LTX2_TRANSFORMER_22B_V25):
        section = {k: v for k, v in original_section(release).items() if k != "caption_channels"}
        assert transformer_config(section, "ckpt") == release  # caption_channels unused (connectors project)


def test_context_widths_are_checked():
    _, ours, cfg = _pair("v23")
    x = inputs(cfg)
    with pytest.raises(ValueError, match=f"video_text must be \\(B, L, {cfg.inner_dim}\\)"):
        ours.prepare_context(torch.zeros(2, 7, cfg.caption_channels), x["atext"])
    with pytest.raises(ValueError, match=f"audio_text must be \\(B, L, {cfg.audio_inner_dim}\\)"):
        ours.prepare_context(x["vtext"], x["vtext"])


def test_parse_config_accepts_the_diffusers_23_config():
    converter = {  # scripts/convert_ltx2_to_diffusers.py, version "2.3": the keys beyond 2.0's defaults
        "gated_attn": True, "cross_attn_mod": True, "audio_gated_attn": True, "audio_cross_attn_mod": True,
        "rope_type": "split", "use_prompt_embeddings": False, "perturbed_attn": True,
        "cross_attn_timestep_scale_multiplier": 1000, "rope_double_precision": True,
    }
    assert parse_config(LTX2TransformerConfig, converter, "config.json") == LTX2_TRANSFORMER_22B_V23
