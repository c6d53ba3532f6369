"""pipeline="keyframe-interpolation" (ltx-pipelines' keyframe_interpolation) and LTX-2 video
conditions against Lightricks' own code: ltx-pipelines 1.0.0's state building
(create_noised_state with its conditioning items), its multimodal guider / simple denoising
functions and Euler loop, on ltx-core 1.0.0's X0Model holding our weights.

The guiding latents follow ltx-core's VideoConditionByKeyframeIndex as of @400fd31 (2026-08), which
changed two things since 1.0.0: a single-pixel-frame keyframe spans [t, t + 1) pixel frames
(b604d3f, 2026-04-23) and its noisy slot starts at zeros under a lerp noiser (f4b06fb,
2026-06-17). ``GuidingLatent`` and ``LerpNoiser`` below transcribe those two source changes onto
1.0.0's helpers (get_pixel_coords, update_attention_mask); everything else is 1.0.0's. Video
conditions (Condition(video=...)) are checked against unmodified 1.0.0 items
(VideoConditionByLatentIndex at frame 0, VideoConditionByKeyframeIndex later).

ltx-pipelines draws its noise in packed order, we in diffusers' order for fresh stages, so the
reference gets our draws replayed. Budget REL = 2e-5 of the output scale (as test_ltx2_reference:
fp32, a few chained transformer calls, different op order); measured max |d| 2.6e-6 to 1.6e-5
at output scales 5 to 12 (under 3e-6 of the scale)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltxengine import Condition, Engine
from ltxengine.components import latents as lv
from ltxengine.ltx2 import stages
from ltxengine.ltx2.denoise import STAGE2_SIGMAS, GuidanceParams, ltx2_sigmas
from ltxengine.ltx2.recipes import two_stage
from ltxengine.ltx2.stages import encode_conditions, encode_text, run_stage
from tests.helpers import assert_close_scaled
from tests.models.ltx2_transformer_fixtures import ltx_core_model
from tests.oracles import ltx_core, ltx_pipelines
from tests.pipelines.ltx2_fixtures import LAYERS, SEQ, ReplayNoiser, build_pipeline

REL = 2e-5
PROMPT, NEGATIVE = "a cat sits on the mat", "red car"
GUIDED_V = GuidanceParams(cfg=3.0, stg=1.0, stg_blocks=(LAYERS - 1,), rescale=0.7, modality=3.0)
GUIDED_A = GuidanceParams(cfg=7.0, stg=1.0, stg_blocks=(LAYERS - 1,), rescale=0.7, modality=3.0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    _, _, folder = build_pipeline(tmp_path_factory.mktemp("ltx2kf"))
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


# -- the reference ------------------------------------------------------------------------------------

def _guiding_item_class():
    """ltx-core @400fd31's VideoConditionByKeyframeIndex.apply_to, on 1.0.0's helpers."""
    cond = ltx_core("conditioning")
    patch, types = ltx_core("components.patchifiers"), ltx_core("types")
    mask_utils = ltx_core("conditioning.mask_utils")

    class GuidingLatent(cond.VideoConditionByKeyframeIndex):
        def apply_to(self, latent_state, latent_tools):
            tokens = latent_tools.patchifier.patchify(self.keyframes)
            coords = latent_tools.patchifier.get_patch_grid_bounds(
                output_shape=types.VideoLatentShape.from_torch_shape(self.keyframes.shape), device=tokens.device)
            positions = patch.get_pixel_coords(latent_coords=coords, scale_factors=latent_tools.scale_factors,
                                               causal_fix=latent_tools.causal_fix if self.frame_idx == 0 else False)
            positions[:, 0, ...] += self.frame_idx
            if self.keyframes.shape[2] == 1:  # b604d3f: one pixel frame spans [t, t + 1)
                positions[:, 0, ..., 1:] = positions[:, 0, ..., :1] + 1
            positions = positions.to(dtype=torch.float32)
            positions[:, 0, ...] /= latent_tools.fps
            mask = torch.full((*tokens.shape[:2], 1), 1.0 - self.strength, dtype=tokens.dtype)
            attention = mask_utils.update_attention_mask(
                latent_state=latent_state, attention_mask=None,
                num_noisy_tokens=latent_tools.target_shape.token_count(), num_new_tokens=tokens.shape[1],
                batch_size=tokens.shape[0], device=tokens.device, dtype=tokens.dtype)
            return types.LatentState(  # f4b06fb: the noisy slot starts at zeros
                latent=torch.cat([latent_state.latent, torch.zeros_like(tokens)], dim=1),
                denoise_mask=torch.cat([latent_state.denoise_mask, mask], dim=1),
                positions=torch.cat([latent_state.positions, positions], dim=2),
                clean_latent=torch.cat([latent_state.clean_latent, tokens], dim=1), attention_mask=attention)
    return GuidingLatent


def _reference_stage(engine, texts, items, shape, t_audio, sigmas, vp, ap, noises, fps, *, video_init=None,
                     audio_init=None, noise_scale=1.0, lerp=False):
    helpers, samplers = ltx_pipelines("utils.helpers"), ltx_pipelines("utils.samplers")
    guiders = ltx_core("components.guiders")
    types, tools, patch = ltx_core("types"), ltx_core("tools"), ltx_core("components.patchifiers")
    steps = ltx_core("components.diffusion_steps")
    x0model = ltx_core("model.transformer.model").X0Model(ltx_core_model(engine.transformer.config,
                                                                        engine.transformer.state_dict()))
    _, c, f, h, w = shape
    acfg = engine.audio_vae.config
    vtools = tools.VideoLatentTools(patch.VideoLatentPatchifier(1), types.VideoLatentShape(1, c, f, h, w), fps)
    atools = tools.AudioLatentTools(patch.AudioPatchifier(1), types.AudioLatentShape(1, acfg.latent_channels, t_audio,
                                                                                    acfg.latent_mel_bins))
    noiser = ReplayNoiser(noises, lerp)
    cpu = torch.device("cpu")
    vstate = helpers.create_noised_state(vtools, items, noiser, torch.float32, cpu, noise_scale, video_init)
    astate = helpers.create_noised_state(atools, [], noiser, torch.float32, cpu, noise_scale, audio_init)
    (vctx_n, actx_n), (vctx, actx) = texts
    if vp.uncond or vp.perturbed or vp.isolated or ap.uncond or ap.perturbed or ap.isolated:
        def params(p):
            return guiders.MultiModalGuiderParams(cfg_scale=p.cfg, stg_scale=p.stg, stg_blocks=list(p.stg_blocks),
                                                  rescale_scale=p.rescale, modality_scale=p.modality)
        fn = helpers.multi_modal_guider_denoising_func(guiders.MultiModalGuider(params(vp), vctx_n),
                                                       guiders.MultiModalGuider(params(ap), actx_n), vctx, actx,
                                                       x0model)
    else:  # keyframe_interpolation's stage 2
        fn = helpers.simple_denoising_func(vctx, actx, x0model)
    with torch.no_grad():
        vstate, astate = samplers.euler_denoising_loop(sigmas, vstate, astate, steps.EulerDiffusionStep(), fn)
    vstate = vtools.unpatchify(vtools.clear_conditioning(vstate))
    return vstate.latent, astate.latent  # audio stays packed (1, T, C * M)


def _reference_items(first, keys, images, guiding: bool, h: int, w: int):
    """The 1.0.0 conditioning items (guiding: @400fd31's) of what encode_conditions gave."""
    cond = ltx_core("conditioning")
    item = _guiding_item_class() if guiding else cond.VideoConditionByKeyframeIndex
    items, appended = [], iter(keys)
    for img, frame_index, strength in images:
        frames = (img.shape[0] - 1) // 8 + 1 if img.ndim == 4 else 1
        if frame_index == 0 and not guiding:
            items.append(cond.VideoConditionByLatentIndex(lv.unpack(first[0], frames, h, w), first[1], 0))
        else:
            items.append(item(lv.unpack(next(appended).tokens, frames, h, w), frame_index, strength))
    return items


def _texts(engine):
    v, au, _ = engine.text_encoder.encode([NEGATIVE, PROMPT], SEQ)
    return (v[:1], au[:1]), (v[1:], au[1:])


def _draws(gen_state, shape, t_audio, n_key, acfg, renoised: bool):
    """Our build_states' draws, again, in the reference's packed layout."""
    g = torch.Generator().manual_seed(0)
    g.set_state(gen_state)
    c = shape[1]
    if not renoised:
        video = lv.pack(torch.randn(shape, generator=g))
        audio = torch.randn(1, acfg.latent_channels, t_audio, acfg.latent_mel_bins, generator=g)
        audio = audio.permute(0, 2, 1, 3).flatten(2)
        video = torch.cat([video, torch.randn(1, n_key, c, generator=g)], 1) if n_key else video
    else:
        video = torch.randn(1, shape[2] * shape[3] * shape[4] + n_key, c, generator=g)
        audio = torch.randn(1, t_audio, acfg.latent_channels * acfg.latent_mel_bins, generator=g)
    return [video, audio]


# -- one stage ----------------------------------------------------------------------------------------

def _run_both(engine, images, *, guiding, vp, ap, sigmas, size=(64, 96), renoise=None):
    fps, n = 24.0, 17
    shape = (1, 8, 3, size[0] // 32, size[1] // 32)
    t_audio = round(n / fps * 25)
    first, keys = encode_conditions(engine, images, *size, fps, guiding=guiding)
    a = SimpleNamespace(prompt=PROMPT, negative_prompt=NEGATIVE, max_sequence_length=SEQ, fps=fps,
                        audio_frames=t_audio, guidance_batch=None, sampler="euler", callback=None,
                        cross_timestep="sigma")  # ltx-core 1.0.0's convention
    pos, neg = encode_text(engine, a, True)
    gen = torch.Generator().manual_seed(9)
    state = gen.get_state()
    kw = {}
    if renoise is not None:
        kw = dict(video_init=renoise[0], audio_init=renoise[1], noise_scale=float(sigmas[0]))
    with torch.no_grad():
        ours_v, ours_a = run_stage(engine, a, gen, 9, stage="denoise" if renoise is None else "refine",
                                   latent_shape=shape, sigmas=sigmas, video_params=vp, audio_params=ap,
                                   texts=(pos, neg), first=first, keyframes=keys, **kw)
    acfg = engine.audio_vae.config
    noises = _draws(state, shape, t_audio, sum(k.tokens.shape[1] for k in keys), acfg, renoise is not None)
    ref_kw = {}
    if renoise is not None:
        a_init = renoise[1].unflatten(2, (acfg.latent_channels, -1)).transpose(1, 2)
        ref_kw = dict(video_init=renoise[0], audio_init=a_init, noise_scale=float(sigmas[0]))
    items = _reference_items(first, keys, images, guiding, shape[3], shape[4])
    ref_v, ref_a = _reference_stage(engine, _texts(engine), items, shape, t_audio, sigmas, vp, ap, noises, fps,
                                    lerp=guiding, **ref_kw)
    return (ours_v, ours_a), (ref_v, ref_a), keys


def _image(seed, h=64, w=96):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _video(seed, frames, h=64, w=96):
    return np.random.default_rng(seed).integers(0, 256, (frames, h, w, 3), dtype=np.uint8)


@pytest.mark.parametrize("case", ["guiding", "guiding-partial", "video-keyframe", "video-first"])
def test_stage_matches_ltx_pipelines(engine, case):
    """guiding: keyframe interpolation's stage 1 (every image appended, frame 0 too, guidance on);
    guiding-partial: a frame-0 image at strength 0.6 and one at 16 at 0.8 (single-frame extents,
    partial masks); video-keyframe: an image replacing frame 0 and a 9-frame video appended at
    pixel frame 9 (2 latent frames, positions [9 + 8t, 17 + 8t)); video-first: a 9-frame video
    replacing the first 2 latent frames and an image appended at 16."""
    sig = ltx2_sigmas(3)
    images = {"guiding": [(_image(1), 0, 1.0), (_image(2), 9, 1.0)],
              "guiding-partial": [(_image(1), 0, 0.6), (_image(2), 16, 0.8)],
              "video-keyframe": [(_image(1), 0, 1.0), (_video(3, 9), 9, 0.9)],
              "video-first": [(_video(3, 9), 0, 1.0), (_image(2), 16, 0.7)]}[case]
    guiding = case.startswith("guiding")
    (v, a), (rv, ra), keys = _run_both(engine, images, guiding=guiding, vp=GUIDED_V, ap=GUIDED_A, sigmas=sig)
    assert len(keys) == (2 if guiding else 1)
    assert_close_scaled(v, rv, REL, f"{case} video")
    assert_close_scaled(a, ra, REL, f"{case} audio")


def test_guiding_renoised_stage_matches_ltx_pipelines(engine):
    """keyframe interpolation's stage 2: the upsampled latent re-noised at 0.909375 with partial-
    strength guiding latents (where @400fd31's empty slot and lerp noiser differ from 1.0.0's
    arithmetic), no guidance, the 3 distilled sigmas."""
    g = torch.Generator().manual_seed(2)
    init_v = torch.randn(1, 8, 3, 2, 3, generator=g)
    init_a = torch.randn(1, 18, 16, generator=g)
    images = [(_image(1), 0, 0.5), (_image(2), 9, 0.75)]
    sig = torch.tensor(STAGE2_SIGMAS)
    (v, a), (rv, ra), _ = _run_both(engine, images, guiding=True, vp=GuidanceParams(), ap=GuidanceParams(),
                                    sigmas=sig, renoise=(init_v, init_a))
    assert_close_scaled(v, rv, REL, "stage-2 video")
    assert_close_scaled(a, ra, REL, "stage-2 audio")


# -- the recipe, end to end -----------------------------------------------------------------------------

def test_keyframe_interpolation_recipe_stages_match_ltx_pipelines(engine, tmp_path, monkeypatch):
    """engine.generate(pipeline="keyframe-interpolation") with an image at frame 0 and one at 16
    (17 frames, 128x192). Every stage the recipe runs is run again by the reference on the same
    inputs and our replayed draws: stage 1 at 64x96 with the multimodal guider, every image appended
    (1.0.0's denoise_audio_video + euler_denoising_loop, the items as GuidingLatent), stage 2 at
    128x192 from the upsampled latent re-noised at 0.909375 on the 3 distilled sigmas with
    simple_denoising_func (no guidance) and the distilled LoRA fused, the images re-encoded at that
    size (keyframe_interpolation.py:149-223). Derived from that source, checked here: the stage
    outputs within REL, the LoRA fused in stage 2 only, the sizes, masks and schedules of each stage,
    the two images re-encoded per stage. The upsampler and decoding are the two-stage recipe's
    (test_ltx2_parity against diffusers)."""
    from tests.pipelines.ltx2_fixtures import write_lora
    lora, _ = write_lora(tmp_path / "distilled-lora.safetensors", engine.transformer)
    eng = Engine.from_pretrained(engine.source, device="cpu", dtype=torch.float32, distilled_lora=lora)
    base = {k: v.clone() for k, v in eng.transformer.state_dict().items()}
    texts = _texts(eng)
    seen = []
    real = stages.run_stage

    def both(engine_, a, gen, seed, **kw):
        state = gen.get_state()
        v, au = real(engine_, a, gen, seed, **kw)
        shape, keys = kw["latent_shape"], kw["keyframes"]
        fused = any(not torch.equal(base[k], t) for k, t in eng.transformer.state_dict().items())
        renoised = kw.get("video_init") is not None
        noises = _draws(state, shape, a.audio_frames, sum(k.tokens.shape[1] for k in keys), eng.audio_vae.config,
                        renoised)
        item = _guiding_item_class()
        items = [item(lv.unpack(k.tokens, 1, shape[3], shape[4]), fi, s) for k, (_, fi, s) in zip(keys, a.images)]
        ref_kw = {}
        if renoised:
            acfg = eng.audio_vae.config
            ref_kw = dict(video_init=kw["video_init"].float(), noise_scale=kw["noise_scale"],
                          audio_init=kw["audio_init"].unflatten(2, (acfg.latent_channels, -1)).transpose(1, 2))
        rv, ra = _reference_stage(eng, texts, items, shape, a.audio_frames, kw["sigmas"], kw["video_params"],
                                  kw["audio_params"], noises, float(a.fps), lerp=True, **ref_kw)
        seen.append(dict(kw, fused=fused, errors=(assert_close_scaled(v, rv, REL, f"{kw['stage']} video"),
                                                  assert_close_scaled(au, ra, REL, f"{kw['stage']} audio"))))
        return v, au

    monkeypatch.setattr(stages, "run_stage", both)
    monkeypatch.setattr(two_stage, "run_stage", both)
    out = eng.generate(PROMPT, NEGATIVE, conditions=[Condition(image=_image(4, 128, 192), frame_index=0),
                                                     Condition(image=_image(5, 128, 192), frame_index=16,
                                                               strength=0.9)],
                       height=128, width=192, num_frames=17, frame_rate=24, num_inference_steps=3,
                       video_guidance=GUIDED_V, audio_guidance=GUIDED_A, pipeline="keyframe-interpolation",
                       seed=5, max_sequence_length=SEQ)
    assert [s["stage"] for s in seen] == ["denoise", "refine"]
    one, two = seen
    assert one["latent_shape"][3:] == (2, 3) and two["latent_shape"][3:] == (4, 6)
    assert one["first"] is None and two["first"] is None
    assert [k.tokens.shape[1] for k in one["keyframes"]] == [6, 6]
    assert [k.tokens.shape[1] for k in two["keyframes"]] == [24, 24]
    assert [k.strength for k in two["keyframes"]] == [1.0, 0.9]
    assert not one["fused"] and two["fused"], "the distilled LoRA is fused for stage 2 only"
    assert one["video_params"] == GUIDED_V and two["video_params"] == GuidanceParams()
    assert two["noise_scale"] == STAGE2_SIGMAS[0] and torch.equal(two["sigmas"], torch.tensor(STAGE2_SIGMAS))
    assert np.isfinite(out.frames).all() and out.frames.shape == (17, 128, 192, 3)
    assert np.isfinite(out.audio).all()


def test_plan_counts_appended_tokens(engine):
    """The memory plan traces each stage with the tokens its conditions append: none for a frame-0
    image that replaces latents (two-stage), one latent frame per image and 2 for a 9-frame video
    when they are appended (keyframe interpolation; a video condition at a later frame)."""
    from ltxengine.ltx2.conditions import appended_tokens
    images = [(_image(1), 0, 1.0), (_video(3, 9), 9, 1.0)]
    assert appended_tokens(images, False, 128, 192) == 2 * 4 * 6
    assert appended_tokens(images, True, 128, 192) == 3 * 4 * 6
    kw = dict(height=128, width=192, num_frames=17, max_sequence_length=SEQ, num_inference_steps=2)
    eng = Engine.from_pretrained(engine.source, device="cpu", dtype=torch.float32)

    def steps(pipeline, conditions):
        plan = eng.plan(PROMPT, **kw, pipeline=pipeline, conditions=conditions)
        return {p.name: p.transient_bytes for p in plan.phases if p.name in ("denoise", "refine")}
    frame0 = [Condition(image=_image(1, 128, 192))]
    replaced, guiding = steps("two-stage", frame0), steps("keyframe-interpolation", frame0)
    assert all(guiding[k] > replaced[k] for k in ("denoise", "refine")), (replaced, guiding)
    video = steps("two-stage", frame0 + [Condition(video=_video(3, 9, 128, 192), frame_index=9)])
    assert all(video[k] > replaced[k] for k in ("denoise", "refine")), (replaced, video)


def test_the_25_keyframe_marker_marks_only_the_first_latent_frame():
    """LTX-2.5's keyframe embedding reads a per-token marker. ltx-core @400fd31 marks the first
    latent frame of every video state (VideoLatentTools._first_frame_keyframes_mask) and never the
    tokens conditioning items append (extend_keyframes_mask(marked=False) in keyframe_cond.py and
    reference_video_cond.py; only generated keyframe slots are marked, which the engine has none
    of). Models without the embedding get no marker."""
    from ltxengine.ltx2.denoise import keyframe_marker
    from ltxengine.models.ltx2_transformer import LTX2TransformerConfig
    f, h, w, appended = 3, 2, 4, 10
    cfg = LTX2TransformerConfig(use_keyframes_abs_pos_embedding=True)
    marker = keyframe_marker(cfg, f, h, w, appended)
    assert marker.shape == (1, f * h * w + appended)
    assert marker[0, :h * w].eq(1).all() and marker[0, h * w:].eq(0).all()
    assert keyframe_marker(LTX2TransformerConfig(), f, h, w, appended) is None
