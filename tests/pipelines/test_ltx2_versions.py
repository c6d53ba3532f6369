"""LTX-2.3 and LTX-2.5 end to end (issue 19): the engine on tiny 2.3-like and 2.5-like diffusers folders
(every new switch of the DiT, the feature extractor V2 and gated connectors, the 2.3 video VAE and x2
upsampler, the BWE vocoder at 48 kHz; Gemma 4 for 2.5) reproduces diffusers' LTX2Pipeline for the
same seed, video and audio, within 1e-4 in fp32 (the 2.0 contract, tests/pipelines/test_ltx2_parity.py).

2.5's keyframe embedding: the reference adds it to the first latent frame's tokens of every video
state; diffusers' pipeline never applies it. The parity run zeroes the embedding on both sides, and
a second check shows ours applies it (the frames move when it is non-zero)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import Engine, LTX2TwoStage
from tests.pipelines.ltx2_fixtures import GUIDED, SEQ, build_pipeline_version, params

diffusers = pytest.importorskip("diffusers")

BUDGET = 1e-4
PROMPT, NEGATIVE = "a cat sits on the mat", "red car"
SIZE = dict(height=64, width=96, num_frames=9, frame_rate=24.0, num_inference_steps=3)


def _theirs(pipe, seed):
    with torch.no_grad():
        return pipe(prompt=PROMPT, negative_prompt=NEGATIVE, generator=torch.Generator().manual_seed(seed),
                    max_sequence_length=SEQ, output_type="np", return_dict=False, **SIZE, **GUIDED)


def _ours(engine, seed):
    return engine.generate(PROMPT, NEGATIVE, pipeline="one-stage", shift_tokens=None, seed=seed,
                           max_sequence_length=SEQ, **SIZE, **GUIDED)


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_one_stage_matches_ltx2pipeline(tmp_path, version):
    pipe, _, folder = build_pipeline_version(tmp_path, version)
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    if version == "2.5":
        with torch.no_grad():  # diffusers' pipeline does not apply it: compare without it (see the docstring)
            pipe.transformer.keyframes_abs_pos_embedding.zero_()
            engine.transformer.keyframes_abs_pos_embedding.zero_()
    video, audio = _theirs(pipe, 3)
    ours = _ours(engine, 3)
    dv, da = np.abs(ours.frames - video[0]).max(), np.abs(ours.audio - audio[0].numpy()).max()
    assert ours.frames.shape == video[0].shape and ours.audio.shape == tuple(audio[0].shape)
    assert ours.sample_rate == 48000  # the BWE vocoder's rate, carried into the result (and its mp4)
    assert dv <= BUDGET and da <= BUDGET, f"{version}: max |d| video {dv:.2e}, audio {da:.2e}"
    assert np.abs(video[0] - video[0].mean()).max() > 0.05  # not flat: the comparison means something
    if version == "2.5":
        with torch.no_grad():
            engine.transformer.keyframes_abs_pos_embedding.normal_(0, 1.0)
        assert np.abs(_ours(engine, 3).frames - ours.frames).max() > 1e-3  # ours applies the embedding


def test_each_release_brings_its_defaults(tmp_path):
    """ltx-pipelines' per-release defaults (constants.py): steps 40 / 30 / 30, STG block 29 / 28 / 28
    (clipped to the tiny model's last block), image CRF 33 / 33 / 18; a header's model_version names
    the release directly (2.4 is 2.5's internal name)."""
    import dataclasses
    import inspect

    from ltxengine.config import LTX2TransformerConfig
    from ltxengine.ltx2.releases import release_of
    from tests.pipelines.ltx2_fixtures import build_pipeline

    def checked(engine):
        bound = inspect.signature(engine.generate).bind("a dog", height=128, width=128, num_frames=9,
                                                        max_sequence_length=SEQ)
        bound.apply_defaults()
        return engine._request(dict(bound.arguments))

    folders = {"2.0": build_pipeline(tmp_path / "v20")[2], "2.3": build_pipeline_version(tmp_path, "2.3")[2],
               "2.5": build_pipeline_version(tmp_path, "2.5")[2]}
    expected = {"2.0": (40, 33), "2.3": (30, 33), "2.5": (30, 18)}
    for version, folder in folders.items():
        engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
        assert engine.release.version == version
        r = checked(engine)
        assert (r.num_inference_steps, r.image_crf) == expected[version], version
        assert r.video_guidance.stg_blocks == r.audio_guidance.stg_blocks == (1,)  # 29 / 28 -> the last of 2 blocks
        engine.release = dataclasses.replace(engine.release, stg_blocks=(0,))  # the default guidance reads it
        assert checked(engine).video_guidance.stg_blocks == checked(engine).audio_guidance.stg_blocks == (0,)
    base = LTX2TransformerConfig()
    assert release_of(base).version == "2.0" and release_of(base, "2.3.0").version == "2.3"
    assert release_of(base, "2.4.1").version == "2.5" and release_of(base, "9.9").version == "2.0"
    from ltxengine.ltx2.releases import RELEASES
    assert RELEASES["2.0"].stg_blocks == (29,) and RELEASES["2.3"].stg_blocks == (28,)


def test_ltx25_distilled_stage1_is_euler_ancestral(tmp_path):
    """2.5's distilled pipeline samples stage 1 with Euler-ancestral by default (ltx-pipelines
    distilled.py: eta 1, noise from seed + 10000; the sampler itself is checked against diffusers and
    the reference in test_ltx2_ancestral.py); 2.0 / 2.3 keep Euler; sampler= overrides."""
    import inspect
    folder = build_pipeline_version(tmp_path, "2.5")[2]
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    kw = dict(height=128, width=128, num_frames=9, max_sequence_length=SEQ, pipeline="distilled", seed=4)

    def request(**extra):
        bound = inspect.signature(engine.generate).bind("a dog", **{**kw, **extra})
        bound.apply_defaults()
        return engine._request(dict(bound.arguments))
    assert request().sampler == "euler-ancestral" and request(sampler="euler").sampler == "euler"
    assert request(pipeline="two-stage").sampler == "euler"
    two = dict(two_stage=LTX2TwoStage(lora_strength=0))
    ancestral = engine.generate("a dog", **kw, **two)
    again = engine.generate("a dog", **kw, **two)
    plain = engine.generate("a dog", **kw, **two, sampler="euler")
    assert np.array_equal(ancestral.frames, again.frames)  # seeded: reproducible
    assert np.abs(ancestral.frames - plain.frames).max() > 1e-3  # and not plain Euler
    other = engine.generate("a dog", **dict(kw, seed=5), **two)
    assert np.abs(other.frames - ancestral.frames).max() > 1e-3


def test_ltx23_two_stage_matches_diffusers_recipe(tmp_path):
    """diffusers' documented two-stage recipe on the tiny 2.3 folder (stage 1 at half size with
    guidance, LTX2LatentUpsamplePipeline with the 2.3 x2 upsampler, a scheduler without shifting, stage 2
    on the 3 distilled sigmas re-noised at the first, no LoRA) against pipeline="two-stage":
    video and audio within 1e-4 (as the 2.0 recipe in test_ltx2_parity.py)."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2LatentUpsamplePipeline

    from ltxengine.ltx2.denoise import STAGE2_SIGMAS
    pipe, upsampler, folder = build_pipeline_version(tmp_path, "2.3")
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    kw = dict(num_frames=9, frame_rate=24.0)
    stage2 = dict(GUIDED, guidance_scale=1.0)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        v_lat, a_lat = pipe(prompt=PROMPT, negative_prompt=NEGATIVE, height=64, width=64, num_inference_steps=3,
                            generator=gen, max_sequence_length=SEQ, output_type="latent", return_dict=False,
                            **kw, **GUIDED)
        up = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)(
            latents=v_lat, output_type="latent", return_dict=False)[0]
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, use_dynamic_shifting=False,
                                                                     shift_terminal=None)
        video, audio = pipe(latents=up, audio_latents=a_lat, prompt=PROMPT, negative_prompt=NEGATIVE,
                            num_inference_steps=3, noise_scale=STAGE2_SIGMAS[0], sigmas=list(STAGE2_SIGMAS[:-1]),
                            generator=gen, max_sequence_length=SEQ, output_type="np", return_dict=False, **kw,
                            **stage2)
    two = LTX2TwoStage(video_guidance=params(stage2), audio_guidance=params(stage2, "audio_"), lora_strength=0)
    ours = engine.generate(PROMPT, NEGATIVE, height=128, width=128, **kw, num_inference_steps=3, pipeline="two-stage",
                           two_stage=two, video_guidance=params(GUIDED), audio_guidance=params(GUIDED, "audio_"),
                           shift_tokens=None, seed=11, max_sequence_length=SEQ)
    dv, da = np.abs(ours.frames - video[0]).max(), np.abs(ours.audio - audio[0].numpy()).max()
    assert ours.frames.shape == video[0].shape and dv <= BUDGET and da <= BUDGET, (dv, da)


def test_cross_timestep_follows_the_release(tmp_path):
    """The audio<->video tables' convention is the release's (releases.py): "sigma" for 2.0 (ltx-core
    1.0.0 and diffusers), "mixed" for 2.3 / 2.5 (Lightricks' reference since ltx-core 1.1.4; the model
    conventions themselves are checked in tests/models/test_ltx2_transformer_v23.py). It reaches the
    model on every step, changes a conditioned generation (the conventions differ only where per-token
    timesteps differ from sigma) and is refused by name when unknown."""
    import inspect

    from tests.pipelines.ltx2_fixtures import build_pipeline
    image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    kw = dict(height=64, width=96, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ, seed=1,
              pipeline="one-stage", image=image, output_type="latent")
    for version, folder in (("2.0", build_pipeline(tmp_path / "v20")[2]),
                            ("2.3", build_pipeline_version(tmp_path, "2.3")[2])):
        engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
        bound = inspect.signature(engine.generate).bind("a dog", **kw)
        bound.apply_defaults()
        default = {"2.0": "sigma", "2.3": "mixed"}[version]
        assert engine._request(dict(bound.arguments)).cross_timestep == default
        seen, embed = [], engine.transformer.embed_timesteps

        def spy(*args, **kwargs):
            seen.append(args[7] if len(args) > 7 else kwargs.get("cross_timestep"))
            return embed(*args, **kwargs)
        engine.transformer.embed_timesteps = spy
        ours = engine.generate("a dog", **kw)
        assert seen and set(seen) == {default}, (version, seen)
        other = engine.generate("a dog", **kw, cross_timestep="sigma" if default == "mixed" else "mixed")
        assert (ours.latents - other.latents).abs().max() > 1e-4, version  # a conditioned first frame: differs
        with pytest.raises(ValueError, match=r"cross_timestep must be one of \('sigma', 'own', 'mixed'\), got 'x'"):
            engine.generate("a dog", **kw, cross_timestep="x")
