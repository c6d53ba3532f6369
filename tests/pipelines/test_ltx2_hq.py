"""pipeline="two-stage-hq" against ltx-pipelines 1.0.0's TI2VidTwoStagesHQPipeline.

The engine's call is recorded stage by stage (what ``run_stage`` got: the schedule, the guidance,
the conditions, the fused weights, the generator's state; and what it returned). Each stage is then
run again by the reference's own code on ltx-core's X0Model holding the weights the stage ran with:
its create_noised_state with the conditioning item, its res2s_audio_video_denoising_loop with its
Res2sDiffusionStep and its default noise seed (the HQ pipeline passes none), its guided denoising
function with LTX_2_3_HQ_PARAMS in stage 1 and its simple denoising function in stage 2, its
scheduler on the stage-1 latent's shape and its stage-2 sigmas. The reference draws its initial
noise in packed order, we in diffusers' (see test_ltx2_reference), so it gets our draws through a
replay noiser; stage 2 starts from the latent our stage 1 and upsampler made (the upsampler has its
own parity tests). The preset itself is compared with the reference's constants and argument parser.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from ltxengine import Engine, LTX2TwoStage
from ltxengine.components import latents as lv
from ltxengine.ltx2 import stages
from ltxengine.ltx2.denoise import GuidanceParams
from ltxengine.ltx2.recipes import two_stage
from tests.helpers import assert_close_scaled
from tests.models.ltx2_transformer_fixtures import ltx_core_model
from tests.oracles import ltx_core, ltx_pipelines
from tests.pipelines.ltx2_fixtures import SEQ, ReplayNoiser, build_pipeline, write_lora

PROMPT, NEGATIVE = "a cat sits on the mat", "red car"
SIZE = dict(height=128, width=192, num_frames=9, frame_rate=24.0)
STEPS = 4  # the preset's 15 are checked on the request; 4 keep the reference's slow loop short
# Relative to the output scale (assert_close_scaled). fp32 on both sides, both loops on the same
# sigmas (ours float64 rounded once, ltx-core's float32 schedule: 5e-7 apart, checked separately;
# fed to the loops they would differ by 2.6e-5 after 4 res_2s steps); what is left is op order in
# the transformer (ltx-core's vs ours) through 4 steps of 2 guided evaluations (3 passes each) and
# bongmath. Measured (CPU, torch 2.13): 1.8e-6 / 1.9e-6 stage 1 video / audio, 1.1e-6 / 3.5e-6 stage 2.
REL = 2e-5


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx2hq")
    pipe, _, folder = build_pipeline(root)
    lora, _ = write_lora(root / "distilled-lora.safetensors", pipe.transformer, scale=0.1)
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, distilled_lora=lora)
    image = np.random.default_rng(3).integers(0, 256, (96, 160, 3), dtype=np.uint8)
    calls = []

    def record(engine_, a, gen, seed, **kw):
        weights = {k: v.clone() for k, v in engine_.transformer.state_dict().items()}
        calls.append(dict(kw, request=a, seed=seed, gen_state=gen.get_state(), weights=weights))
        calls[-1]["out"] = real(engine_, a, gen, seed, **kw)
        return calls[-1]["out"]

    real = stages.run_stage
    base = {k: v.clone() for k, v in engine.transformer.state_dict().items()}
    with pytest.MonkeyPatch.context() as m:
        m.setattr(stages, "run_stage", record)
        m.setattr(two_stage, "run_stage", record)
        with torch.no_grad():
            result = engine.generate(PROMPT, NEGATIVE, image=image, pipeline="two-stage-hq", seed=5,
                                     num_inference_steps=STEPS, max_sequence_length=SEQ, **SIZE)
    return engine, base, calls, result


def _our_noise(engine, call):
    """The draws our stage made, replayed from the generator's state at its start, in the
    reference's packed layout."""
    g = torch.Generator()
    g.set_state(call["gen_state"])
    _, c, f, h, w = call["latent_shape"]
    acfg = engine.audio_vae.config
    t = call["request"].audio_frames
    if call.get("video_init") is None:  # a fresh stage: diffusers' unpacked draws
        video = lv.pack(torch.randn(call["latent_shape"], generator=g))
        audio = torch.randn(1, acfg.latent_channels, t, acfg.latent_mel_bins, generator=g)
        return video, audio.permute(0, 2, 1, 3).flatten(2)
    return (torch.randn(1, f * h * w, c, generator=g),
            torch.randn(1, t, acfg.latent_channels * acfg.latent_mel_bins, generator=g))


def _guider_params(p: GuidanceParams):
    guiders = ltx_core("components.guiders")
    return guiders.MultiModalGuiderParams(cfg_scale=p.cfg, stg_scale=p.stg, stg_blocks=list(p.stg_blocks),
                                          rescale_scale=p.rescale, modality_scale=p.modality, skip_step=p.skip_step)


def _reference_stage(engine, call, sigmas, guided, audio_init=None, noise_scale=1.0):
    """One stage of TI2VidTwoStagesHQPipeline.__call__ (denoise_audio_video with its stage's loop)."""
    helpers, samplers = ltx_pipelines("utils.helpers"), ltx_pipelines("utils.samplers")
    consts = ltx_pipelines("utils.constants")
    guiders, cond, types = ltx_core("components.guiders"), ltx_core("conditioning"), ltx_core("types")
    tools, patch = ltx_core("tools"), ltx_core("components.patchifiers")
    steps = ltx_core("components.diffusion_steps")
    weights = {k: v.clone() for k, v in call["weights"].items()}  # recorded in generate's inference mode
    x0 = ltx_core("model.transformer.model").X0Model(ltx_core_model(engine.transformer.config, weights))
    _, c, f, h, w = call["latent_shape"]
    acfg, t = engine.audio_vae.config, call["request"].audio_frames
    vtools = tools.VideoLatentTools(patch.VideoLatentPatchifier(1), types.VideoLatentShape(1, c, f, h, w),
                                    float(call["request"].fps))
    atools = tools.AudioLatentTools(patch.AudioPatchifier(1),
                                    types.AudioLatentShape(1, acfg.latent_channels, t, acfg.latent_mel_bins))
    tokens, strength = call["first"]
    items = [cond.VideoConditionByLatentIndex(lv.unpack(tokens, 1, h, w), strength, 0)]
    noiser = ReplayNoiser(_our_noise(engine, call))
    cpu = torch.device("cpu")
    vstate = helpers.create_noised_state(vtools, items, noiser, torch.float32, cpu, noise_scale, call.get("video_init"))
    astate = helpers.create_noised_state(atools, [], noiser, torch.float32, cpu, noise_scale, audio_init)
    te = engine.text_encoder
    v, au, _ = te.encode([NEGATIVE, PROMPT], SEQ)
    if guided:
        hq = consts.LTX_2_3_HQ_PARAMS
        fn = helpers.multi_modal_guider_denoising_func(
            guiders.MultiModalGuider(hq.video_guider_params, v[:1]),
            guiders.MultiModalGuider(hq.audio_guider_params, au[:1]), v[1:], au[1:], x0)
    else:
        fn = helpers.simple_denoising_func(v[1:], au[1:], x0)
    with torch.no_grad():
        vstate, astate = samplers.res2s_audio_video_denoising_loop(
            sigmas=sigmas, video_state=vstate, audio_state=astate, stepper=steps.Res2sDiffusionStep(),
            denoise_fn=fn, model_dtype=torch.float32)  # the pipeline's states are bf16; ours fp32 here
    vstate = vtools.unpatchify(vtools.clear_conditioning(vstate))
    return vstate.latent, astate.latent  # the audio state stays patchified: (1, T, C * M)


def test_hq_stages_match_ltx_pipelines(setup):
    engine, _, calls, _ = setup
    consts = ltx_pipelines("utils.constants")
    schedulers = ltx_core("components.schedulers")
    assert [c["stage"] for c in calls] == ["denoise", "refine"]
    s1, s2 = calls
    # stage 1: the scheduler on the stage-1 latent's shape (the reference's 544x960, our 64x96)
    ref_sigmas = schedulers.LTX2Scheduler().execute(latent=torch.empty(s1["latent_shape"]), steps=STEPS)
    assert torch.allclose(s1["sigmas"], ref_sigmas, rtol=0, atol=5e-7)
    # the loop gets our sigmas: the schedules' own difference is checked just above
    ref_v, ref_a = _reference_stage(engine, s1, s1["sigmas"], guided=True)
    ours_v, ours_a = s1["out"]
    errs = [_rel(ours_v, ref_v, "stage-1 video"), _rel(ours_a, ref_a, "stage-1 audio")]
    # stage 2: from our stage 1's audio and upsampled video, re-noised at the first distilled sigma
    ref_sigmas2 = torch.tensor(consts.STAGE_2_DISTILLED_SIGMA_VALUES)
    # the reference re-noises at the float32 sigma (distilled_sigmas[0]), we at the float: 1.2e-8 apart
    assert torch.equal(s2["sigmas"], ref_sigmas2)
    assert s2["noise_scale"] == pytest.approx(ref_sigmas2[0].item(), abs=2e-8)
    acfg = engine.audio_vae.config
    a_init = ours_a.unflatten(2, (acfg.latent_channels, -1)).transpose(1, 2)
    ref_v2, ref_a2 = _reference_stage(engine, s2, ref_sigmas2, guided=False, audio_init=a_init,
                                      noise_scale=ref_sigmas2[0])
    ours_v2, ours_a2 = s2["out"]
    errs += [_rel(ours_v2, ref_v2, "stage-2 video"), _rel(ours_a2, ref_a2, "stage-2 audio")]
    print(f"two-stage-hq vs ltx-pipelines 1.0.0, max error / output scale (stage 1 video, audio, stage 2 video, "
          f"audio): "
          f"{', '.join(f'{e:.2e}' for e in errs)}")


def _rel(ours, ref, what):
    return assert_close_scaled(ours, ref, REL, what) / max(1.0, ref.abs().max().item())


def test_hq_fuses_the_distilled_lora_at_its_stage_strengths(setup):
    """0.25 in stage 1, 0.5 in stage 2 (the reference parser's defaults), removed afterwards."""
    engine, base, calls, _ = setup
    args = {a.dest: a.default for a in ltx_pipelines("utils.args").hq_2_stage_arg_parser()._actions}
    strengths = (args["distilled_lora_strength_stage_1"], args["distilled_lora_strength_stage_2"])
    assert strengths == (0.25, 0.5)
    lora_set = engine.lora_manager()
    lora_set.apply([(engine.distilled_lora, 1.0)])
    full = {k: v.clone() for k, v in engine.transformer.state_dict().items()}
    lora_set.apply([])
    changed = [k for k in base if not torch.equal(full[k], base[k])]
    assert changed, "the test LoRA must change some weights"
    for call, s in zip(calls, strengths):
        for k in base:
            expected = base[k] + s * (full[k] - base[k])
            assert torch.allclose(call["weights"][k], expected, rtol=0, atol=1e-6), (call["stage"], k)
    assert all(torch.equal(v, base[k]) for k, v in engine.transformer.state_dict().items())


def test_hq_request_carries_the_reference_preset(setup):
    engine = setup[0]
    hq = ltx_pipelines("utils.constants").LTX_2_3_HQ_PARAMS
    a = engine._request(_call_args(engine, pipeline="two-stage-hq"))
    assert a.sampler == "res2s" and a.num_inference_steps == hq.num_inference_steps == 15
    assert a.shift_tokens is None  # shifted for the stage-1 video's tokens, as execute(latent=...)
    for ours, theirs in ((a.video_guidance, hq.video_guider_params), (a.audio_guidance, hq.audio_guider_params)):
        assert ours == GuidanceParams(cfg=theirs.cfg_scale, stg=theirs.stg_scale, stg_blocks=tuple(theirs.stg_blocks),
                                      rescale=theirs.rescale_scale, modality=theirs.modality_scale,
                                      skip_step=theirs.skip_step)
    assert (a.two_stage.stage1_lora_strength, a.two_stage.lora_strength) == (0.25, 0.5)
    assert a.two_stage.sigmas == tuple(ltx_pipelines("utils.constants").STAGE_2_DISTILLED_SIGMA_VALUES)
    # what the call gives overrides the preset
    two = LTX2TwoStage(lora_strength=0.7, stage1_lora_strength=0.0)
    b = engine._request(_call_args(engine, pipeline="two-stage-hq", num_inference_steps=6, guidance_scale=4.0,
                                   audio_guidance=GuidanceParams(cfg=2.0), two_stage=two))
    assert b.num_inference_steps == 6 and b.video_guidance == replace(a.video_guidance, cfg=4.0)
    assert b.audio_guidance == GuidanceParams(cfg=2.0)
    assert (b.two_stage.stage1_lora_strength, b.two_stage.lora_strength) == (0.0, 0.7)
    # the other two-stage pipelines keep theirs
    c = engine._request(_call_args(engine, pipeline="two-stage"))
    assert c.sampler == "euler" and c.shift_tokens == 4096
    assert c.num_inference_steps == engine.release.num_inference_steps
    assert (c.two_stage.stage1_lora_strength, c.two_stage.lora_strength) == (0.0, 1.0)


def test_hq_seeds_res2s_as_the_reference(setup):
    """The initial noise follows the seed; res_2s' SDE noise comes from the reference's fixed seeds."""
    _, _, calls, result = setup
    assert [c["seed"] for c in calls] == [-1, -1]
    assert result.seed == 5


def _call_args(engine, **kw):
    """generate()'s arguments (its defaults, the tiny size, ``kw``) as its locals."""
    import inspect
    params = inspect.signature(type(engine).generate).parameters
    a = {k: p.default for k, p in params.items() if p.default is not inspect.Parameter.empty}
    return dict(a, self=engine, prompt=PROMPT, max_sequence_length=SEQ, **SIZE, **kw)


@pytest.mark.parametrize("kw, match", [
    (dict(pipeline="two-stage-hq", sampler="euler"),
     r"sampler: pipeline='two-stage-hq' samples with 'res2s' in both stages .*got sampler='euler'"),
    (dict(pipeline="two-stage-hq", shift_tokens=1024),
     r"shift_tokens: pipeline='two-stage-hq' shifts its schedule for the stage-1 video's own token count.*got 1024"),
    (dict(pipeline="two-stage-hq", stg_scale=1.0), r"stg_scale = 1.0 needs spatio_temporal_guidance_blocks"),
    (dict(pipeline="two-stage-hq", two_stage=LTX2TwoStage(stage1_lora_strength=float("nan"))),
     "two_stage.stage1_lora_strength must be finite, got nan"),
    (dict(pipeline="two-stage", two_stage=LTX2TwoStage(stage1_lora_strength=0.25)),
     r"two_stage.stage1_lora_strength: pipeline='two-stage' fuses the distilled LoRA in stage 2 only .*got 0.25"),
])
def test_hq_arguments_are_checked(setup, kw, match):
    with pytest.raises(ValueError, match=match):
        setup[0].generate(PROMPT, seed=0, max_sequence_length=SEQ, **SIZE, **kw)
