"""The LTX-2 Engine's API on a tiny random pipeline folder: result and mp4 with audio, the
pipelines and samplers run, callbacks, audio-to-video, and bad input (clear errors, engine still
usable). Numbers against diffusers / ltx-pipelines are in tests/pipelines/test_ltx2_*.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import STOP, Condition, Engine, GenerationCancelled
from ltxengine.ltx2.engine import LTX2Engine, LTX2TwoStage
from ltxengine.media import read_media, write_mp4
from ltxengine.ltx2.denoise import GuidanceParams
from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline, write_lora

pytest.importorskip("diffusers")

SMALL = dict(height=128, width=128, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("ltx2eng"))[2]


@pytest.fixture(scope="module")
def engine(folder):
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


def test_from_pretrained_returns_an_ltx2_engine_and_result_has_audio(engine, tmp_path):
    assert isinstance(engine, LTX2Engine) and isinstance(engine, Engine) and engine.family == "ltx-2"
    r = engine.generate("a cat sits on the mat", seed=1, **SMALL)  # default: two-stage (upsampler present)
    assert r.frames.shape == (9, 128, 128, 3) and r.video.dtype == np.uint8
    assert r.audio.dtype == np.float32 and r.audio.shape[0] == 2 and r.sample_rate == 24000
    assert set(r.timings) >= {"text", "denoise", "refine", "decode", "total"}
    r2 = engine.generate("a cat sits on the mat", seed=1, **SMALL)
    assert np.array_equal(r.frames, r2.frames) and np.array_equal(r.audio, r2.audio)  # same seed, same output
    out = r.save(tmp_path / "out.mp4")
    frames, fps, audio, rate = read_media(out)
    assert frames.shape[0] == 9 and fps == 24 and audio is not None and audio.shape[0] == 2 and rate == 24000
    assert abs(audio.shape[1] / rate - 9 / 24) <= 1024 / rate  # same duration as the video, within an AAC frame


@pytest.mark.parametrize("sampler", ["gradient-estimation", "res2s"])
def test_samplers_and_distilled_pipeline_run(engine, sampler):
    r = engine.generate("a dog", pipeline="distilled", sampler=sampler, seed=2, **SMALL)
    assert np.isfinite(r.frames).all() and np.isfinite(r.audio).all()
    e = engine.generate("a dog", pipeline="distilled", seed=2, **SMALL)
    assert not np.array_equal(r.frames, e.frames)  # the sampler choice reaches the loop


def test_keyframe_and_one_stage(engine):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)  # other size and aspect: resized + centre crop
    r = engine.generate("a dog", image=img, conditions=[Condition(image=img, frame_index=8, strength=0.9)],
                        pipeline="one-stage", height=64, width=96, num_frames=17, num_inference_steps=2,
                        max_sequence_length=SEQ, seed=3, image_crf=0)
    assert r.frames.shape == (17, 64, 96, 3)


def test_callback_sees_every_step_and_can_cancel(engine):
    seen = []

    def cb(stage, step, total, timestep, latents):
        seen.append((stage, step, total))
    engine.generate("a dog", seed=4, callback=cb, **SMALL)
    assert [s for s in seen if s[0] == "denoise"] == [("denoise", 1, 2), ("denoise", 2, 2)]
    assert [s for s in seen if s[0] == "refine"] == [("refine", i, 3) for i in (1, 2, 3)]
    assert seen[-1] == ("decode", 1, 1)
    with pytest.raises(GenerationCancelled, match="refine step 1/3"):
        engine.generate("a dog", seed=4, callback=lambda stage, *a, **k: STOP if stage == "refine" else None,
                        **SMALL)


def test_stage2_lora_is_removed_even_when_stage_2_fails(folder, tmp_path):
    e = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    lora, _ = write_lora(tmp_path / "l.safetensors", e.transformer)
    e = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, distilled_lora=lora)
    before = {k: v.clone() for k, v in e.transformer.state_dict().items()}
    with pytest.raises(GenerationCancelled):
        e.generate("a dog", seed=5, callback=lambda stage, *a, **k: STOP if stage == "refine" else None, **SMALL)
    assert all(torch.equal(before[k], v) for k, v in e.transformer.state_dict().items())
    ok = e.generate("a dog", seed=5, **SMALL)  # still usable
    assert np.isfinite(ok.frames).all()


def test_a_lora_for_another_model_fails_at_load(folder, tmp_path):
    from safetensors.torch import save_file
    bad = tmp_path / "bad.safetensors"
    save_file({"diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(2, 5),
               "diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(32, 2)}, str(bad))
    with pytest.raises(ValueError, match="to_q"):
        Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, distilled_lora=bad)


def test_audio_to_video_keeps_the_given_audio(engine, tmp_path):
    sr = 24000
    t = np.arange(int(sr * 0.5)) / sr
    wave = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 660 * t)]).astype(np.float32) * 0.5
    r = engine.generate("a dog", audio=wave, audio_sample_rate=sr, seed=6, **SMALL)
    assert r.sample_rate == sr and np.array_equal(r.audio, wave)
    path = tmp_path / "in.mp4"
    write_mp4(path, np.zeros((13, 64, 64, 3), np.uint8), 24, audio=wave, sample_rate=sr)
    r2 = engine.generate("a dog", audio=path, seed=6, **SMALL)
    assert r2.sample_rate == sr and r2.audio.shape[0] == 2
    with pytest.raises(ValueError, match="shorter"):
        engine.generate("a dog", audio=wave[:, :2000], audio_sample_rate=sr, seed=6, **SMALL)


@pytest.mark.parametrize("kw, match", [
    (dict(height=96), "height must be a multiple of 64 for pipeline='two-stage'"),
    (dict(pipeline="one-stage", width=80), "width must be a multiple of 32 for pipeline='one-stage'"),
    (dict(num_frames=10), "num_frames must be of the form 8k\\+1"),
    (dict(pipeline="fast"), "pipeline must be one of"),
    (dict(sampler="dpm"), "sampler must be one of"),
    (dict(video_guidance=GuidanceParams(stg=1.0, stg_blocks=(7,))), "video_guidance.stg_blocks must be block"),
    (dict(audio_guidance=GuidanceParams(rescale=2.0)), "audio_guidance.rescale must be in"),
    (dict(two_stage=LTX2TwoStage(sigmas=(0.5, 0.7))), "two_stage.sigmas must be strictly decreasing"),
    (dict(pipeline="one-stage", two_stage=LTX2TwoStage()), "two_stage= configures stage 2"),
    (dict(image_crf=60), "image_crf must be in \\[0, 51\\]"),
    (dict(conditions=[Condition(video=np.zeros((9, 8, 8)))]), r"conditions\[0\].video: numpy videos must be"),
    (dict(conditions=[Condition(image=np.zeros((8, 8, 3), np.uint8), frame_index=9)]), "frame_index must be <"),
    (dict(sigmas=[0.5, 0.9]), "sigmas must be strictly decreasing"),
    (dict(frame_rate=0), "frame_rate must be positive"),
])
def test_bad_arguments_are_named_and_engine_stays_usable(engine, kw, match):
    args = dict(SMALL, **kw)
    with pytest.raises(ValueError, match=match):
        engine.generate("a dog", seed=0, **args)
    assert np.isfinite(engine.generate("a dog", pipeline="one-stage", height=64, width=64, num_frames=9,
                                       num_inference_steps=2, max_sequence_length=SEQ, seed=0).frames).all()


def test_two_stage_needs_an_upsampler(folder, tmp_path):
    import shutil
    bare = tmp_path / "bare"
    shutil.copytree(folder, bare)
    shutil.rmtree(bare / "latent_upsampler")
    e = Engine.from_pretrained(bare, device="cpu", dtype=torch.float32)
    with pytest.raises(ValueError, match="needs the spatial latent upsampler"):
        e.generate("a dog", pipeline="two-stage", seed=0, **SMALL)
    assert e.generate("a dog", seed=0, **dict(SMALL, height=64, width=64)).frames.shape[1:3] == (64, 64)
