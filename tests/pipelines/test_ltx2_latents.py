"""Latent in / latent out (issue 21) against diffusers' LTX2Pipeline on the tiny folder, same seed,
fp32 on CPU: output_type="latent" (video and audio latents, unpacked and denormalized), latents= /
audio_latents= as the noisy start (noise_scale 0: taken as they are; > 0: mixed with noise drawn in
the packed shape), a latent result chained into the next call, and the two-stage recipe started
from given stage-1 latents and ending in latents. Budget 1e-4 as test_ltx2_parity's: absolute on
frames in [0, 1] and waveforms, relative to their scale (max |value|, at least 1) on the latents,
whose values reach ~10 (float32 reassociation amplified by the random tiny model over the steps).
Measured max |d|: latent out 2.0e-6 / 2.1e-6 of scale (video / audio); latents + audio_latents in
2.8e-5 / 1.5e-5, latents only 2.9e-5 / 1.5e-5; chain 8.8e-6 / 2.3e-5 of scale (first call), then
4.3e-6 / 4.1e-6 (decoded second call); two-stage latents in and out 1.6e-6 / 3.1e-6 of scale;
LTX-2.3 / 2.5 folders, in and out in one call: 9.5e-6 / 2.0e-5 and 1.1e-5 / 2.0e-5 of scale."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.ltx2.denoise import STAGE2_SIGMAS
from ltxengine.ltx2.engine import LTX2TwoStage
from tests.pipelines.ltx2_fixtures import (GUIDED, SEQ, STAGE2_GUIDED, build_pipeline, params, reference_two_stage,
                                           write_lora)

diffusers = pytest.importorskip("diffusers")

BUDGET = 1e-4
PROMPT, NEGATIVE = "a cat sits on the mat", "red car"
KW = dict(height=64, width=96, num_frames=17, frame_rate=24.0)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    pipe, upsampler, folder = build_pipeline(tmp_path_factory.mktemp("ltx2latents"))
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    return pipe, upsampler, folder, engine


def _theirs(pipe, seed, output_type="np", **kw):
    with torch.no_grad():
        return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(seed),
                    max_sequence_length=SEQ, output_type=output_type, return_dict=False, **kw)


def _ours(engine, seed, **kw):
    kw = {"pipeline": "one-stage", **kw}
    return engine.generate(PROMPT, NEGATIVE, video_guidance=params(GUIDED), audio_guidance=params(GUIDED, "audio_"),
                           shift_tokens=None, seed=seed, max_sequence_length=SEQ, **kw)


def _diff(a, b) -> float:
    a, b = (torch.as_tensor(np.asarray(x)) if not isinstance(x, torch.Tensor) else x for x in (a, b))
    assert a.shape == b.shape, (a.shape, b.shape)
    return float((a.float() - b.float()).abs().max())


def _compare_latents(result, video, audio, what):
    """The budget relative to the latents' scale (at least 1): their values reach ~10, and float32
    reassociation errors grow with the values, as they do on frames in [0, 1] with the absolute
    budget."""
    dv = _diff(result.latents, video) / max(1.0, float(video.abs().max()))
    da = _diff(result.audio_latents, audio) / max(1.0, float(audio.abs().max()))
    assert dv <= BUDGET and da <= BUDGET, f"{what}: latents max |d| / scale video {dv:.2e}, audio {da:.2e} " \
                                          f"(budget {BUDGET})"
    assert float(video.std()) > 0.1 and float(audio.std()) > 0.1  # not flat: the check means something


def _compare_decoded(result, video, audio, what):
    dv, da = _diff(result.frames, video[0]), _diff(result.audio, audio[0])
    assert dv <= BUDGET and da <= BUDGET, f"{what}: max |d| video {dv:.2e}, audio {da:.2e} (budget {BUDGET})"
    assert np.abs(video[0] - video[0].mean()).max() > 0.05


def test_latent_output_matches_ltx2pipeline(setup):
    """output_type="latent": diffusers' (video, audio) latents, no frames; the same call decoded
    had the same latents (its result.latents are the normalized ones)."""
    pipe, _, _, engine = setup
    video, audio = _theirs(pipe, 3, output_type="latent", num_inference_steps=4, **KW, **GUIDED)
    ours = _ours(engine, 3, num_inference_steps=4, output_type="latent", **KW)
    _compare_latents(ours, video, audio, "latent out")
    assert ours.latents.shape == (1, 8, 3, 2, 3) and ours.audio_latents.shape == tuple(audio.shape)
    assert ours.frames is None and ours.video is None and ours.audio is None
    assert ours.latents.dtype == ours.audio_latents.dtype == torch.float32
    with pytest.raises(ValueError, match="save: this result holds latents only"):
        ours.save("never.mp4")
    decoded = _ours(engine, 3, num_inference_steps=4, **KW)
    assert torch.equal(engine.vae.denormalize_latents(decoded.latents), ours.latents)
    assert decoded.audio_latents is None


def test_given_latents_are_the_noisy_start(setup):
    """latents= and audio_latents= (noise_scale 0: the start itself), and latents= alone (the audio
    starts from its usual noise, drawn after the video's unused draw, as diffusers does)."""
    pipe, _, _, engine = setup
    g = torch.Generator().manual_seed(100)
    lat = torch.randn((1, 8, 3, 2, 3), generator=g) * 1.5
    alat = torch.randn((1, 4, 18, 4), generator=g)
    kw = dict(num_inference_steps=3, **KW)
    video, audio = _theirs(pipe, 5, latents=lat.clone(), audio_latents=alat.clone(), **kw, **GUIDED)
    _compare_decoded(_ours(engine, 5, latents=lat, audio_latents=alat, **kw), video, audio, "latents + audio_latents")
    video, audio = _theirs(pipe, 5, latents=lat.clone(), **kw, **GUIDED)
    ours = _ours(engine, 5, latents=lat, **kw)
    _compare_decoded(ours, video, audio, "latents only")
    # the given start matters: other latents, another video
    other = _ours(engine, 5, latents=lat.flip(-1), **kw)
    assert np.abs(other.frames - ours.frames).max() > 0.01


def test_latent_result_chains_into_the_next_call(setup):
    """A latent result of one call refined by the next, as diffusers' documented stage 2 takes
    stage 1's: latents= / audio_latents= re-noised at noise_scale = the first of the distilled
    stage-2 sigmas (diffusers: a scheduler without shifting for the given sigmas)."""
    from diffusers import FlowMatchEulerDiscreteScheduler
    pipe, _, _, engine = setup
    v_lat, a_lat = _theirs(pipe, 7, output_type="latent", num_inference_steps=3, **KW, **GUIDED)
    first = _ours(engine, 7, num_inference_steps=3, output_type="latent", **KW)
    _compare_latents(first, v_lat, a_lat, "chain, first call")
    scheduler = pipe.scheduler
    pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, use_dynamic_shifting=False,
                                                                 shift_terminal=None)
    try:
        video, audio = _theirs(pipe, 8, latents=v_lat, audio_latents=a_lat, noise_scale=STAGE2_SIGMAS[0],
                               sigmas=list(STAGE2_SIGMAS[:-1]), num_inference_steps=3, **KW, **GUIDED)
    finally:
        pipe.scheduler = scheduler
    second = _ours(engine, 8, latents=first.latents, audio_latents=first.audio_latents,
                   noise_scale=STAGE2_SIGMAS[0], sigmas=STAGE2_SIGMAS, **KW)
    _compare_decoded(second, video, audio, "chain, second call")


def test_two_stage_starts_stage_1_from_given_latents_and_returns_latents(setup, tmp_path):
    """pipeline="two-stage" with latents= / audio_latents= (stage 1's size) and output_type="latent":
    diffusers' documented recipe (test_ltx2_parity) with the latents given to its stage-1 call
    (noise_scale 0.5) and its stage-2 call returning latents."""
    pipe, upsampler, folder, _ = setup
    lora, deltas = write_lora(tmp_path / "distilled-lora.safetensors", pipe.transformer)
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, distilled_lora=lora)
    kw = dict(num_frames=9, frame_rate=24.0)
    g = torch.Generator().manual_seed(200)
    lat, alat = torch.randn((1, 8, 2, 2, 2), generator=g), torch.randn((1, 4, 9, 4), generator=g)
    video, audio, _ = reference_two_stage(pipe, upsampler, deltas, PROMPT, NEGATIVE, output_type="latent",
                                          stage1=dict(latents=lat.clone(), audio_latents=alat.clone(), noise_scale=0.5))
    two = LTX2TwoStage(video_guidance=params(STAGE2_GUIDED), audio_guidance=params(STAGE2_GUIDED, "audio_"))
    ours = _ours(engine, 11, pipeline="two-stage", two_stage=two, height=128, width=128, num_inference_steps=3,
                 latents=lat, audio_latents=alat, noise_scale=0.5, output_type="latent", **kw)
    assert ours.latents.shape == (1, 8, 2, 4, 4)
    _compare_latents(ours, video, audio, "two-stage, latents in and out")


def test_the_memory_plan_has_no_decode_phase_for_latent_output(setup):
    _, _, _, engine = setup
    kw = dict(pipeline="one-stage", num_inference_steps=2, max_sequence_length=SEQ, **KW)
    assert [p.name for p in engine.plan(PROMPT, **kw).phases] == ["text", "denoise", "decode"]
    assert [p.name for p in engine.plan(PROMPT, **kw, output_type="latent").phases] == ["text", "denoise"]


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_latents_in_and_out_on_later_releases(tmp_path, version):
    """The 2.3 / 2.5 folders (their own video VAE statistics and audio layout): latents= /
    audio_latents= at noise_scale 0.3 and output_type="latent" in one call, as LTX2Pipeline does
    (2.5's keyframe embedding zeroed on both sides, which diffusers never applies: test_ltx2_versions)."""
    from tests.pipelines.ltx2_fixtures import build_pipeline_version
    pipe, _, folder = build_pipeline_version(tmp_path, version)
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    if version == "2.5":
        with torch.no_grad():
            pipe.transformer.keyframes_abs_pos_embedding.zero_()
            engine.transformer.keyframes_abs_pos_embedding.zero_()
    kw = dict(height=64, width=96, num_frames=9, frame_rate=24.0, num_inference_steps=3)
    c = pipe.transformer.config.in_channels
    ac, mel = pipe.audio_vae.config.latent_channels, pipe.audio_vae.config.mel_bins // 4
    g = torch.Generator().manual_seed(300)
    lat, alat = torch.randn((1, c, 2, 2, 3), generator=g), torch.randn((1, ac, 9, mel), generator=g)
    video, audio = _theirs(pipe, 9, output_type="latent", latents=lat.clone(), audio_latents=alat.clone(),
                           noise_scale=0.3, **kw, **GUIDED)
    ours = engine.generate(PROMPT, NEGATIVE, pipeline="one-stage", shift_tokens=None, seed=9, max_sequence_length=SEQ,
                           latents=lat, audio_latents=alat, noise_scale=0.3, output_type="latent", **kw, **GUIDED)
    _compare_latents(ours, video, audio, f"{version}: latents in and out")
