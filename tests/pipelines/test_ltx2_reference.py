"""The LTX-2 stage against Lightricks' own code: ltx-pipelines 1.0.0's state building
(create_noised_state with VideoConditionByLatentIndex / VideoConditionByKeyframeIndex), its
multimodal guider denoising function and Euler loop, on ltx-core's X0Model holding our weights;
and the guidance formula against ltx-core's MultiModalGuider directly.

ltx-pipelines draws its noise in packed order, we in diffusers' order (see pipelines/ltx2.py), so
the reference gets our noise through a replay noiser; everything else is theirs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.components import latents as lv
from ltxengine.ltx2.denoise import DISTILLED_SIGMAS, GuidanceParams, guide, ltx2_sigmas
from ltxengine.ltx2.stages import encode_conditions, encode_text, run_stage
from tests.helpers import assert_close_scaled
from tests.models.ltx2_transformer_fixtures import ltx_core_model
from tests.oracles import ltx_core, ltx_pipelines
from tests.pipelines.ltx2_fixtures import LAYERS, SEQ, ReplayNoiser, build_pipeline

REL = 2e-5  # relative to the output scale: fp32, ~10 chained transformer calls, different op order


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    _, _, folder = build_pipeline(tmp_path_factory.mktemp("ltx2ref"))
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


def _reference_stage(engine, texts, first, keys, shape, t_audio, sigmas, vp, ap, noises, fps,
                     video_init=None, audio_init=None, noise_scale=1.0):
    helpers = ltx_pipelines("utils.helpers")
    samplers = ltx_pipelines("utils.samplers")
    guiders = ltx_core("components.guiders")
    cond = ltx_core("conditioning")
    types, tools, patch = ltx_core("types"), ltx_core("tools"), ltx_core("components.patchifiers")
    steps = ltx_core("components.diffusion_steps")
    x0model = ltx_core("model.transformer.model").X0Model(ltx_core_model(engine.transformer.config,
                                                                        engine.transformer.state_dict()))
    _, c, f, h, w = shape
    acfg = engine.audio_vae.config
    vtools = tools.VideoLatentTools(patch.VideoLatentPatchifier(1), types.VideoLatentShape(1, c, f, h, w), fps)
    atools = tools.AudioLatentTools(patch.AudioPatchifier(1), types.AudioLatentShape(1, acfg.latent_channels, t_audio,
                                                                                    acfg.latent_mel_bins))
    items = []
    if first is not None:
        items.append(cond.VideoConditionByLatentIndex(lv.unpack(first[0], 1, h, w), first[1], 0))
    for k, (frame_index, _) in zip(keys, noises["key_frames"]):
        items.append(cond.VideoConditionByKeyframeIndex(lv.unpack(k.tokens, 1, h, w), frame_index, k.strength))
    noiser = ReplayNoiser([noises["video"], noises["audio"]])
    vstate = helpers.create_noised_state(vtools, items, noiser, torch.float32, torch.device("cpu"), noise_scale,
                                         video_init)
    astate = helpers.create_noised_state(atools, [], noiser, torch.float32, torch.device("cpu"), noise_scale,
                                         audio_init)
    (vctx_n, actx_n), (vctx, actx) = texts

    def params(p):
        return guiders.MultiModalGuiderParams(cfg_scale=p.cfg, stg_scale=p.stg, stg_blocks=list(p.stg_blocks),
                                              rescale_scale=p.rescale, modality_scale=p.modality, skip_step=p.skip_step)
    fn = helpers.multi_modal_guider_denoising_func(guiders.MultiModalGuider(params(vp), vctx_n),
                                                   guiders.MultiModalGuider(params(ap), actx_n), vctx, actx, x0model)
    with torch.no_grad():
        vstate, astate = samplers.euler_denoising_loop(sigmas, vstate, astate, steps.EulerDiffusionStep(), fn)
    vstate = vtools.unpatchify(vtools.clear_conditioning(vstate))
    return vstate.latent, atools.patchifier.patchify(astate.latent) if astate.latent.ndim == 4 else astate.latent


def _run_both(engine, *, strength=1.0, keyframe=None, vp, ap, steps=3, video_init=None, audio_init=None,
              noise_scale=1.0, sigmas=None):
    fps, n = 24.0, 17
    shape = (1, 8, 3, 2, 3)
    t_audio = round(n / fps * 25)
    rng = np.random.default_rng(1)
    images = [(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), 0, strength)]
    if keyframe is not None:
        images.append((rng.integers(0, 256, (64, 96, 3), dtype=np.uint8), keyframe, 0.8))
    first, keys = encode_conditions(engine, images, 64, 96, fps)
    # the fields of the request (LTX2Request) that encode_text and run_stage read
    a = SimpleNamespace(prompt="a cat sits on the mat", negative_prompt="red car", max_sequence_length=SEQ, fps=fps,
                        audio_frames=t_audio, guidance_batch=None, sampler="euler", callback=None,
                        cross_timestep="sigma")  # ltx-core 1.0.0's convention
    pos, neg = encode_text(engine, a, True)
    sigmas = ltx2_sigmas(steps) if sigmas is None else sigmas
    gen = torch.Generator().manual_seed(9)
    with torch.no_grad():
        ours_v, ours_a = run_stage(engine, a, gen, 9, stage="denoise", latent_shape=shape, sigmas=sigmas,
                                   video_params=vp, audio_params=ap, texts=(pos, neg), first=first, keyframes=keys,
                                   video_init=video_init, audio_init=audio_init, noise_scale=noise_scale)
    # the same draws, in the same order, for the reference's replay noiser
    g = torch.Generator().manual_seed(9)
    acfg = engine.audio_vae.config
    n_key = sum(k.tokens.shape[1] for k in keys)
    if video_init is None:
        video = lv.pack(torch.randn(shape, generator=g))
        audio = torch.randn(1, acfg.latent_channels, t_audio, acfg.latent_mel_bins, generator=g)
        audio = audio.permute(0, 2, 1, 3).flatten(2)
        video = torch.cat([video, torch.randn(1, n_key, 8, generator=g)], 1) if n_key else video
    else:
        video = torch.randn(1, shape[2] * shape[3] * shape[4] + n_key, 8, generator=g)
        audio = torch.randn(1, t_audio, acfg.latent_channels * acfg.latent_mel_bins, generator=g)
    te = engine.text_encoder
    v, au, _ = te.encode(["red car", "a cat sits on the mat"], SEQ)
    texts = ((v[:1], au[:1]), (v[1:], au[1:]))
    noises = dict(video=video, audio=audio, key_frames=[(keyframe, None)] if keyframe is not None else [])
    a_init = None if audio_init is None else audio_init.unflatten(2, (acfg.latent_channels, -1)).transpose(1, 2)
    ref_v, ref_a = _reference_stage(engine, texts, first, keys, shape, t_audio, sigmas, vp, ap, noises, fps,
                                    video_init=video_init, audio_init=a_init, noise_scale=noise_scale)
    return (ours_v, ours_a), (ref_v, ref_a)


GUIDED_V = GuidanceParams(cfg=3.0, stg=1.0, stg_blocks=(LAYERS - 1,), rescale=0.7, modality=3.0)
GUIDED_A = GuidanceParams(cfg=7.0, stg=1.0, stg_blocks=(LAYERS - 1,), rescale=0.7, modality=3.0)


@pytest.mark.parametrize("case", ["image", "image+keyframe", "partial-strength", "audio-stg-only", "skip-step"])
def test_stage_matches_ltx_pipelines(engine, case):
    vp, ap = GUIDED_V, GUIDED_A
    kw = {}
    if case == "image+keyframe":
        kw["keyframe"] = 9
    elif case == "partial-strength":
        kw["strength"] = 0.6
    elif case == "audio-stg-only":  # ltx-core perturbs only the modality whose STG is on
        vp = GuidanceParams(cfg=2.0, rescale=0.3)
        ap = GuidanceParams(cfg=1.0, stg=2.0, stg_blocks=(0,), modality=2.0)
    elif case == "skip-step":  # both modalities skip the same steps: the previous x0 is reused
        vp = GuidanceParams(cfg=3.0, skip_step=1)
        ap = GuidanceParams(cfg=5.0, skip_step=1)
    (v, a), (rv, ra) = _run_both(engine, vp=vp, ap=ap, steps=4, **kw)
    assert_close_scaled(v, rv, REL, f"{case} video")
    assert_close_scaled(a, ra, REL, f"{case} audio")


def test_renoised_stage_matches_ltx_pipelines(engine):
    """Stage 2's state: given latents re-noised at the first distilled sigma, no guidance."""
    g = torch.Generator().manual_seed(2)
    init_v = torch.randn(1, 8, 3, 2, 3, generator=g)
    init_a = torch.randn(1, 18, 16, generator=g)
    sig = torch.tensor(DISTILLED_SIGMAS[5:])
    (v, a), (rv, ra) = _run_both(engine, vp=GuidanceParams(), ap=GuidanceParams(), video_init=init_v,
                                 audio_init=init_a, noise_scale=float(sig[0]), sigmas=sig)
    assert_close_scaled(v, rv, REL, "stage-2 video")
    assert_close_scaled(a, ra, REL, "stage-2 audio")


def test_schedule_matches_ltx_core_scheduler():
    """ltx-core computes in float32 (its 2-step schedule ends at 0.10000002), we in float64 and
    round once: within a few float32 ulps (5e-7 absolute near 1)."""
    sched = ltx_core("components.schedulers").LTX2Scheduler()
    for steps in (2, 3, 8, 40):
        ref = sched.execute(steps=steps)
        assert torch.allclose(ltx2_sigmas(steps), ref, rtol=0, atol=5e-7), steps
    latent = torch.zeros(1, 128, 4, 16, 24)  # 1536 tokens: the shift follows the count
    assert torch.allclose(ltx2_sigmas(8, tokens=1536), sched.execute(steps=8, latent=latent), rtol=0, atol=5e-7)
    with pytest.raises(ValueError, match="num_inference_steps must be an int >= 1, got 0"):
        ltx2_sigmas(0)
    with pytest.raises(ValueError, match="must be >= 2 for the stretched LTX-2 schedule, got 1"):
        ltx2_sigmas(1)


@pytest.mark.parametrize("p", [GuidanceParams(cfg=3.0, stg=1.0, stg_blocks=(0,), rescale=0.7, modality=3.0),
                               GuidanceParams(cfg=7.0, rescale=1.0), GuidanceParams(stg=2.0, stg_blocks=(1,)),
                               GuidanceParams(modality=0.5), GuidanceParams()])
def test_guidance_formula_equals_ltx_core_guider(p):
    guiders = ltx_core("components.guiders")
    g = torch.Generator().manual_seed(0)
    cond, uncond, ptb, iso = (torch.randn(1, 40, 8, generator=g) for _ in range(4))
    ref = guiders.MultiModalGuider(guiders.MultiModalGuiderParams(
        cfg_scale=p.cfg, stg_scale=p.stg, stg_blocks=list(p.stg_blocks), rescale_scale=p.rescale,
        modality_scale=p.modality)).calculate(cond, uncond, ptb, iso)
    assert torch.equal(guide(p, cond, uncond, ptb, iso), ref)


def test_guidance_params_are_checked():
    with pytest.raises(ValueError, match=r"video_guidance.rescale must be in \[0, 1\], got 1.5"):
        GuidanceParams(rescale=1.5).check("video_guidance", 4)
    with pytest.raises(ValueError, match=r"audio_guidance.stg_blocks must be block indices in \[0, 4\), got \[4\]"):
        GuidanceParams(stg=1.0, stg_blocks=(4,)).check("audio_guidance", 4)
    with pytest.raises(ValueError, match="needs stg_blocks"):
        GuidanceParams(stg=1.0).check("video_guidance", 4)
    with pytest.raises(ValueError, match="video_guidance.cfg must be a finite number >= 0, got nan"):
        GuidanceParams(cfg=float("nan")).check("video_guidance", 4)
    with pytest.raises(ValueError, match="skip_step must be an int >= 0, got -1"):
        GuidanceParams(skip_step=-1).check("video_guidance", 4)
