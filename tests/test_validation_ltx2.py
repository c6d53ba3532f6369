"""LTX-2 generate(): diffusers' LTX2Pipeline keyword spelling of the guidance, and every bad argument
refused before any model work with a message naming the argument, the rule and the value (issue
17: part 3 and findings 4.4, 4.5, 4.11). A refusal must run no module at all (text encoding
counts), leave the weights as they were, and leave the engine generating the same bits."""

from __future__ import annotations

import inspect
import warnings
from contextlib import contextmanager
from dataclasses import fields, replace

import numpy as np
import pytest
import torch

from ltxengine import Condition, Engine
from ltxengine.ltx2.engine import DIFFUSERS_GUIDANCE, LTX2TwoStage
from ltxengine.models.video_vae import TilingConfig
from ltxengine.ltx2.denoise import AUDIO_GUIDANCE, VIDEO_GUIDANCE, GuidanceParams
from tests.pipelines.ltx2_fixtures import LAYERS, SEQ, build_pipeline, write_lora

pytest.importorskip("diffusers")

SMALL = dict(height=128, width=128, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ)
TINY = dict(pipeline="one-stage", height=64, width=64, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ)
RATE = 24000
WAVE = (np.random.default_rng(0).standard_normal((2, RATE)) * 0.1).astype(np.float32)  # 1 s of stereo noise


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("ltx2val"))[2]


@pytest.fixture(scope="module")
def engine(folder):
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


@pytest.fixture(scope="module")
def reference(engine):
    """The engine's output for one fixed call, taken before any refusal."""
    return engine.generate("a dog", seed=0, **TINY)


def _weights(engine) -> dict[str, torch.Tensor]:
    parts = dict(transformer=engine.transformer, connectors=engine.connectors, vae=engine.vae,
                 audio_vae=engine.audio_vae, vocoder=engine.vocoder, upsampler=engine.latent_upsampler,
                 text=engine.text_encoder.model)
    return {f"{p}.{k}": v.detach().clone() for p, m in parts.items() for k, v in m.state_dict().items()}


@contextmanager
def no_model_work(engine):
    """Counts every nn.Module call anywhere and every text encoding; both must stay 0."""
    calls = {"modules": 0, "text": 0}

    def count(*_):
        calls["modules"] += 1
    handle = torch.nn.modules.module.register_module_forward_pre_hook(count)
    encode = engine.text_encoder.encode

    def counting_encode(*a, **k):
        calls["text"] += 1
        return encode(*a, **k)
    engine.text_encoder.encode = counting_encode
    try:
        yield calls
    finally:
        handle.remove()
        del engine.text_encoder.encode  # back to the class's method
    assert calls == {"modules": 0, "text": 0}, f"model work ran before the refusal: {calls}"


def refuse(engine, match, exc=ValueError, **kw):
    before = _weights(engine)
    lora_state = engine._lora
    with no_model_work(engine), pytest.raises(exc, match=match):
        engine.generate("a dog", **{**SMALL, "seed": 1, **kw})
    after = _weights(engine)
    assert all(torch.equal(before[k], after[k]) for k in before), "a refused call changed the weights"
    assert engine._lora is lora_state


def checked(engine, **kw):
    """generate()'s arguments after the argument check (no generation)."""
    bound = inspect.signature(engine.generate).bind("a dog", **kw)
    bound.apply_defaults()
    return engine._request(dict(bound.arguments))


def _clip(p: GuidanceParams) -> GuidanceParams:
    return replace(p, stg_blocks=(LAYERS - 1,))  # the released block 29 on the 2-layer test model


# -- diffusers' keyword spelling of the guidance -------------------------------------------------------

DIFFUSERS_KW = dict(guidance_scale=2.0, stg_scale=0.5, modality_scale=1.5, guidance_rescale=0.3,
                    audio_guidance_scale=4.0, audio_stg_scale=0.7, audio_modality_scale=2.0,
                    audio_guidance_rescale=0.2, spatio_temporal_guidance_blocks=[1])
PARAMS_KW = dict(video_guidance=GuidanceParams(cfg=2.0, stg=0.5, stg_blocks=(1,), rescale=0.3, modality=1.5),
                 audio_guidance=GuidanceParams(cfg=4.0, stg=0.7, stg_blocks=(1,), rescale=0.2, modality=2.0))


def test_diffusers_keywords_generate_what_guidance_params_generate(engine):
    assert set(DIFFUSERS_KW) == set(DIFFUSERS_GUIDANCE) | {"spatio_temporal_guidance_blocks"}
    a = engine.generate("a dog", seed=3, **TINY, **DIFFUSERS_KW)
    b = engine.generate("a dog", seed=3, **TINY, **PARAMS_KW)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    c = engine.generate("a dog", seed=3, **TINY)  # the default guidance: the keywords did change something
    assert not np.array_equal(a.frames, c.frames)


def test_a_keyword_left_out_keeps_that_fields_default(engine):
    a = checked(engine, **TINY, guidance_scale=5.0)
    assert a.video_guidance == replace(_clip(VIDEO_GUIDANCE), cfg=5.0)
    assert a.audio_guidance == _clip(AUDIO_GUIDANCE)  # unlike diffusers' None, not the video value
    a = checked(engine, **TINY, audio_stg_scale=0.0, spatio_temporal_guidance_blocks=(0,))
    assert a.video_guidance == replace(_clip(VIDEO_GUIDANCE), stg_blocks=(0,))
    assert a.audio_guidance == replace(_clip(AUDIO_GUIDANCE), stg=0.0, stg_blocks=(0,))  # 0 is off here
    a = checked(engine, **dict(TINY, pipeline="distilled", height=128, width=128), guidance_scale=2.0)
    assert a.video_guidance == GuidanceParams(cfg=2.0) and a.audio_guidance == GuidanceParams()
    # one modality per spelling: a GuidanceParams for one and keywords for the other is fine
    a = checked(engine, **TINY, video_guidance=GuidanceParams(cfg=2.0), audio_guidance_scale=3.0)
    assert a.video_guidance == GuidanceParams(cfg=2.0) and a.audio_guidance.cfg == 3.0
    assert not set(DIFFUSERS_KW) & {f.name for f in fields(a)}  # only one spelling travels on


@pytest.mark.parametrize("kw, match", [
    (dict(video_guidance=GuidanceParams(), guidance_scale=3.0),
     "video_guidance and guidance_scale are two spellings of the same guidance"),
    (dict(audio_guidance=GuidanceParams(), audio_stg_scale=1.0, audio_guidance_rescale=0.5),
     "audio_guidance and audio_stg_scale, audio_guidance_rescale are two spellings"),
    (dict(video_guidance=GuidanceParams(), spatio_temporal_guidance_blocks=[0]),
     "video_guidance and spatio_temporal_guidance_blocks are two spellings"),
    (dict(guidance_scale=float("nan")), "guidance_scale must be a finite number >= 0, got nan"),
    (dict(audio_modality_scale=-1.0), "audio_modality_scale must be a finite number >= 0, got -1.0"),
    (dict(guidance_rescale=1.5), r"guidance_rescale must be in \[0, 1\], got 1.5"),
    (dict(stg_scale="1"), "stg_scale must be a finite number >= 0, got '1'"),
    (dict(spatio_temporal_guidance_blocks=5), r"spatio_temporal_guidance_blocks must be block indices in \[0, 2\)"),
    (dict(spatio_temporal_guidance_blocks=[2]), r"spatio_temporal_guidance_blocks must be block indices .*got \[2\]"),
    (dict(pipeline="distilled", stg_scale=1.0), "stg_scale = 1.0 needs spatio_temporal_guidance_blocks"),
])
def test_diffusers_keywords_are_checked(engine, kw, match):
    refuse(engine, match, **kw)


# -- finding 4.4: every argument, nested objects included, checked before any model work ----------------

def _wav(path, rate: int, seconds: float = 1.0):
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=rate)
        stream.layout = "stereo"
        samples = np.zeros((1, 2 * int(rate * seconds)), np.int16)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="stereo")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize("kw, match", [
    (dict(two_stage=LTX2TwoStage(adain_factor=float("nan"))), "two_stage.adain_factor must be finite, got nan"),
    (dict(two_stage=LTX2TwoStage(adain_factor=11.0)), r"two_stage.adain_factor must be in \[-10.0, 10.0\], got 11.0"),
    (dict(two_stage=LTX2TwoStage(tone_map_compression_ratio=1.5)),
     r"two_stage.tone_map_compression_ratio must be in \[0.0, 1.0\], got 1.5"),
    (dict(two_stage=LTX2TwoStage(noise_scale=float("inf"))), "two_stage.noise_scale must be finite, got inf"),
    (dict(two_stage=LTX2TwoStage(lora_strength=float("nan"))), "two_stage.lora_strength must be finite, got nan"),
    (dict(two_stage=LTX2TwoStage(sigmas=(0.9, float("nan"), 0.0))), r"two_stage.sigmas must lie in \[0, 1\]"),
    (dict(two_stage=LTX2TwoStage(sigmas=(0.5,))), "two_stage.sigmas needs at least 2 values"),
    (dict(two_stage=LTX2TwoStage(video_guidance={"cfg": 2.0})),
     "two_stage.video_guidance must be a GuidanceParams, got dict"),
    (dict(two_stage=LTX2TwoStage(audio_guidance=GuidanceParams(cfg=-1.0))),
     "two_stage.audio_guidance.cfg must be a finite number >= 0, got -1.0"),
    (dict(sampler="res2s", two_stage=LTX2TwoStage(sigmas=(0.5, 0.001, 0.0))),
     r"two_stage.sigmas: res2s inserts 0.0011 before a final 0.*two_stage.sigmas\[-2\] = 0.001"),
    (dict(sampler="res2s", sigmas=[0.5, 0.001]), r"sigmas: res2s inserts 0.0011.*sigmas\[-2\] = 0.001"),
    (dict(sigmas=[0.0]), "sigmas: must be 1-D with at least 2 values"),
    (dict(num_inference_steps=1), "num_inference_steps must be >= 2 for the stretched LTX-2 schedule, got 1"),
    (dict(num_frames=1, height=64, width=64, two_stage=LTX2TwoStage(adain_factor=1.0)),
     "two_stage.adain_factor = 1.0 needs at least 2 stage-1 latent values per channel"),
    (dict(vae_tiling="yes"), "vae_tiling must be a ltxengine TilingConfig or None, got str"),
    (dict(vae_tiling=TilingConfig(48, 64, 16, 48, 64, 8)),
     "vae_tiling: TilingConfig.tile_sample_min_height must be a multiple of the compression ratio 32, got 48"),
    (dict(pipeline="one-stage", height=32, width=64),
     r"height x width = 32x64: the decoder's reflect padding needs .*at least 2x2 latents, got a 1x2 grid"),
    (dict(pipeline="one-stage", height=128, width=96, vae_tiling=TilingConfig(64, 64, 16, 32, 32, 8)),
     r"height x width = 128x96: the decoder's reflect padding .* got a 1x1 tile .*tiles from vae_tiling"),
    (dict(callback=5), "callback must be callable .*got 5"),
    (dict(image=np.zeros((8, 8))), r"image: numpy images must be \(H, W, 3\)"),
    (dict(conditions=[Condition(image="not an image", frame_index=8)]), r"conditions\[0\].image"),
    (dict(conditions=[Condition(image=np.zeros((64, 64, 3), np.uint8), video=np.zeros((9, 64, 64, 3), np.uint8))]),
     r"conditions\[0\]: set exactly one of image and video, got image=ndarray and video=ndarray"),
    (dict(conditions=[Condition(video=np.zeros((9, 64, 64), np.uint8))]),
     r"conditions\[0\].video: numpy videos must be \(F, H, W, 3\), got shape \(9, 64, 64\)"),
    (dict(conditions=[Condition(video=[])]), r"conditions\[0\].video: video has no frames"),
    (dict(conditions=[Condition(video="clip.mp4")]), r"conditions\[0\].video: expected a tensor .* got str"),
    (dict(conditions=[Condition(video=[np.zeros((64, 64, 3), np.uint8)] * 8 + [np.zeros((32, 64, 3), np.uint8)])]),
     r"conditions\[0\].video: every frame must have the size of frame 0 \(64x64\), frame 8 is 32x64"),
    (dict(conditions=[Condition(video=np.full((9, 64, 64, 3), 2.0, np.float32))]),
     r"conditions\[0\].video\[0\]: float pixel values must lie in \[0, 1\]"),
    (dict(audio=WAVE, audio_sample_rate=12345),
     r"audio_sample_rate must be one AAC .*can carry, one of \[7350, .*96000\]; got 12345"),
    (dict(audio=WAVE), "audio_sample_rate .* is required with a waveform audio=, got None"),
    (dict(audio=WAVE, audio_sample_rate=24000.0), "audio_sample_rate must be an int, got 24000.0"),
    (dict(audio=WAVE.astype(np.int16), audio_sample_rate=RATE), "audio waveform must be floating point"),
    (dict(audio=WAVE[0], audio_sample_rate=RATE), r"audio waveform must be \(channels, samples\)"),
    (dict(audio=np.concatenate([WAVE, WAVE[:1]]), audio_sample_rate=RATE), "audio waveform must have 1 or 2 channels"),
    (dict(audio=WAVE[:, :4000], audio_sample_rate=RATE),
     r"audio is 0.167 s long from audio_start=0.0 s, shorter than the video's 0.375 s"),
    (dict(audio_sample_rate=RATE), "audio_sample_rate is the rate of a waveform audio=, got audio_sample_rate=24000 "
                                   "without audio"),
])
def test_bad_arguments_are_refused_before_any_model_work(engine, reference, kw, match):
    refuse(engine, match, **kw)
    again = engine.generate("a dog", seed=0, **TINY)
    assert np.array_equal(again.frames, reference.frames) and np.array_equal(again.audio, reference.audio)


def test_audio_files_and_the_vocoder_must_have_a_rate_aac_carries(engine, tmp_path, monkeypatch):
    odd = _wav(tmp_path / "odd.wav", 12345)
    refuse(engine, r"audio: the sample rate of '.*odd.wav' must be one AAC .*; got 12345", audio=odd)
    refuse(engine, "audio: no file at", audio=tmp_path / "missing.wav")
    refuse(engine, "audio_sample_rate is for a waveform audio= .*with a path", audio=odd, audio_sample_rate=12345)
    monkeypatch.setattr(engine.vocoder, "config", replace(engine.vocoder.config, output_sampling_rate=12345))
    refuse(engine, "the vocoder's output_sampling_rate .* must be one AAC .*got 12345")


# -- finding 4.5: seed and generator -----------------------------------------------------------------------

def test_seed_and_generator_together_are_refused(engine):
    refuse(engine, "pass seed or generator, not both", generator=torch.Generator().manual_seed(3))
    a = engine.generate("a dog", generator=torch.Generator().manual_seed(3), **TINY)
    b = engine.generate("a dog", seed=3, **TINY)
    assert np.array_equal(a.frames, b.frames) and b.seed == 3


# -- finding 4.11: unclear errors mended ----------------------------------------------------------------------

@pytest.mark.parametrize("kw, match", [
    (dict(seed=None, generator="x"), "generator must be a torch.Generator or None, got str"),
    (dict(frame_rate=1000), r"frame_rate: 9 frames at 1000 fps last 0.009 s, less than one audio latent frame "
                            r"\(0.04 s\), so the audio would be empty"),
    (dict(audio_start=0.5), "audio_start skips the start of audio=, got audio_start=0.5 without audio"),
    (dict(audio_start=-1.0), r"audio_start must be >= 0.0, got -1.0"),
    (dict(audio=WAVE, audio_sample_rate=RATE, audio_start=0.75),
     "audio is 0.250 s long from audio_start=0.75 s, shorter than the video's 0.375 s"),
    (dict(shift_tokens=10**9), r"shift_tokens=1000000000: the 2-step LTX-2 schedule shifted for that many tokens "
                               r"degenerates \(math range error\); use a smaller shift_tokens"),
    (dict(shift_tokens=None, pipeline="one-stage", height=8192, width=8192, num_frames=25),
     r"shift_tokens=None \(the video's 262144 tokens\): .* degenerates"),
])
def test_unclear_errors_now_name_the_argument(engine, kw, match):
    refuse(engine, match, **kw)


@pytest.mark.parametrize("kw, match", [  # finding 4.6 for LTX-2: the bounds LTX-Video's Engine has
    (dict(height=8256), r"height must be <= 8192 \(MAX_SIDE\), got 8256"),
    (dict(num_frames=4105), r"num_frames must be <= 4097 \(MAX_NUM_FRAMES\), got 4105"),
    (dict(num_inference_steps=10**12), r"num_inference_steps must be <= 1000 \(MAX_STEPS.*got 1000000000000"),
    (dict(sigmas=np.linspace(1, 0, 5000)), "sigmas must hold at most 1000 values"),
    (dict(two_stage=LTX2TwoStage(sigmas=np.linspace(1, 0, 5000))), "two_stage.sigmas must hold at most 1000"),
    (dict(max_sequence_length=10**8), r"max_sequence_length must be <= 1024 \(MAX_SEQUENCE_LENGTH\)"),
    (dict(seed=2**64), r"seed must be <= 18446744073709551615 .*got 18446744073709551616"),
    (dict(conditions=[Condition(image=np.zeros((8, 8, 3), np.uint8), frame_index=8)] * 65),
     r"conditions must hold at most 64 images, image= included \(MAX_CONDITIONS\), got 65"),
])
def test_size_like_arguments_have_bounds(engine, kw, match):
    refuse(engine, match, **kw)


def _nan_output(module, monkeypatch, first: int = 0):
    """module's forward returns NaN outputs (from its ``first``-th call on)."""
    forward, seen = module.forward, [0]

    def broken(*a, **k):
        out = forward(*a, **k)
        seen[0] += 1
        if seen[0] <= first:
            return out
        return tuple(o * float("nan") for o in out) if isinstance(out, tuple) else out * float("nan")
    monkeypatch.setattr(module, "forward", broken)


def test_a_non_finite_result_names_its_stage(folder, monkeypatch):
    from ltxengine.ltx2.recipes import two_stage
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    with monkeypatch.context() as m:
        _nan_output(engine.transformer, m)
        with pytest.raises(FloatingPointError, match="denoise: video latents became non-finite .* at step 1/2"):
            engine.generate("a dog", seed=0, **SMALL)
    with monkeypatch.context() as m:
        m.setattr(two_stage, "upsample_latents", lambda *a, **k: torch.full((1, 8, 2, 4, 4), float("nan")))
        with pytest.raises(FloatingPointError, match="refine: video latents became non-finite .* at step 1/3"):
            engine.generate("a dog", seed=0, **SMALL)
    with monkeypatch.context() as m:
        _nan_output(engine.vae.decoder, m)
        with pytest.raises(FloatingPointError, match="decode produced non-finite frames"):
            engine.generate("a dog", seed=0, **TINY)
    with monkeypatch.context() as m:
        _nan_output(engine.vocoder, m)
        with pytest.raises(FloatingPointError, match="audio decode produced non-finite samples"):
            engine.generate("a dog", seed=0, **TINY)


def test_two_stage_without_a_distilled_lora_warns_once_per_engine(folder, tmp_path):
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    with pytest.warns(UserWarning, match="pipeline='two-stage' without a distilled LoRA: stage 2 refines with the "
                                         "base weights.*distilled_lora=PATH.*LTX2TwoStage\\(lora_strength=0\\)"):
        engine.generate("a dog", seed=0, **SMALL)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        engine.generate("a dog", seed=0, **SMALL)  # once per engine
        fresh = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
        fresh.generate("a dog", seed=0, two_stage=LTX2TwoStage(lora_strength=0), **SMALL)  # base weights meant
        fresh.generate("a dog", seed=0, **TINY)  # no stage 2
        lora, _ = write_lora(tmp_path / "l.safetensors", fresh.transformer)
        with_lora = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, distilled_lora=lora)
        with_lora.generate("a dog", seed=0, **SMALL)
    assert not [w for w in seen if "distilled LoRA" in str(w.message)]


def test_keyframe_interpolation_without_a_distilled_lora_warns_too(folder):
    """keyframe-interpolation is the two-stage recipe: its stage 2 also refines with the distilled
    LoRA in ltx-pipelines, so base weights warn as for two-stage."""
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    image = np.full((128, 128, 3), 128, np.uint8)
    with pytest.warns(UserWarning, match="pipeline='keyframe-interpolation' without a distilled LoRA"):
        engine.generate("a dog", seed=0, pipeline="keyframe-interpolation", image=image, **SMALL)


def test_audio_start_applies_to_waveforms_as_to_files(engine):
    start = 0.25
    cut = WAVE[:, round(start * RATE):]
    a = engine.generate("a dog", audio=WAVE, audio_sample_rate=RATE, audio_start=start, seed=2, **TINY)
    b = engine.generate("a dog", audio=cut, audio_sample_rate=RATE, seed=2, **TINY)
    assert np.array_equal(a.audio, cut) and np.array_equal(a.frames, b.frames)
    c = engine.generate("a dog", audio=WAVE, audio_sample_rate=RATE, seed=2, **TINY)
    assert not np.array_equal(a.frames, c.frames)  # the start reached the conditioning


# -- latent in / latent out (issue 21) ----------------------------------------------------------------

_STAGE1 = (1, 8, 2, 2, 2)  # SMALL's stage-1 latents: 9 frames at 64x64 (two-stage: half of 128x128)
_LATENT_RULE = r"latents must be unpacked, denormalized \(1, C, F', H', W'\) video latents \(diffusers' form\)"


@pytest.mark.parametrize("kw, match", [
    (dict(latents=torch.zeros(1, 8, 2, 4, 4)),
     _LATENT_RULE + r" of shape \(1, 8, 2, 2, 2\) for 9 frames at 128x128 \(stage 1 of pipeline='two-stage', at "
                    r"half the size\), got shape \(1, 8, 2, 4, 4\)"),
    (dict(TINY, latents=torch.zeros(1, 8, 2, 1, 2)),
     _LATENT_RULE + r" of shape \(1, 8, 2, 2, 2\) for 9 frames at 64x64, got shape \(1, 8, 2, 1, 2\)"),
    (dict(latents=torch.zeros(1, 8, 8)), _LATENT_RULE + r".*got shape \(1, 8, 8\)"),  # packed
    (dict(latents=np.zeros(_STAGE1, np.float32)), _LATENT_RULE + ".*got ndarray"),
    (dict(latents=torch.zeros(_STAGE1, dtype=torch.int64)), "latents must be floating point, got torch.int64"),
    (dict(latents=torch.zeros(_STAGE1).flatten().index_fill_(0, torch.tensor([3]), float("nan")).view(_STAGE1)),
     "latents must be finite, got 1 non-finite values"),
    (dict(latents=torch.zeros(_STAGE1, device="meta")),
     "latents must be on the CPU or the engine's device cpu, got meta"),
    (dict(audio_latents=torch.zeros(1, 4, 10, 4)),
     r"audio_latents must be unpacked, denormalized \(1, C, T, M\) audio latents \(diffusers' form\) of shape "
     r"\(1, 4, 9, 4\) for 9 frames at 128x128 .*, 9 audio frames, got shape \(1, 4, 10, 4\)"),
    (dict(audio_latents=torch.zeros(1, 4, 9, 4), audio=WAVE, audio_sample_rate=RATE),
     "audio_latents start the generated audio, which audio= replaces"),
    (dict(noise_scale=0.5), "noise_scale mixes noise into latents= / audio_latents=, got noise_scale=0.5 without"),
    (dict(latents=torch.zeros(_STAGE1), noise_scale=1.5), r"noise_scale must be in \[0.0, 1.0\], got 1.5"),
    (dict(output_type="np"), r"output_type must be None \(decoded frames and audio\) or 'latent'.*got 'np'"),
    (dict(output_type="latent", output="x.mp4"),
     "output is for decoding, which output_type='latent' skips; got output='x.mp4'"),
    (dict(output_type="latent", decode_timestep=0.05), "decode_timestep is for decoding, which output_type='latent'"),
])
def test_bad_latent_io_is_refused_before_any_model_work(engine, kw, match):
    refuse(engine, match, **kw)


def test_latents_are_refused_by_a_pipeline_whose_first_stage_starts_elsewhere(engine, monkeypatch):
    """A recipe outside latent_io.LATENT_START (retake, IC-LoRA ...) refuses latents= instead of
    ignoring them; the check reads the pipeline's name only."""
    from ltxengine.ltx2 import recipes, request
    monkeypatch.setitem(recipes.RECIPES, "elsewhere", recipes.Recipe(recipes.one_stage.run, stages=1))
    monkeypatch.setattr(request, "PIPELINES_LTX2", request.PIPELINES_LTX2 + ("elsewhere",))
    kw = dict(TINY, pipeline="elsewhere")
    refuse(engine, r"latents start the first stage of pipelines \('two-stage', .*\), not of pipeline='elsewhere', "
                   r"got latents=a tensor of shape \(1, 8, 2, 2, 2\)", latents=torch.zeros(_STAGE1), **kw)
    refuse(engine, "audio_latents start the first stage of pipelines .* not of pipeline='elsewhere'",
           audio_latents=torch.zeros(1, 4, 9, 4), **kw)


# -- pipeline="ic-lora" (issue 21) -----------------------------------------------------------------------

REF = np.random.default_rng(1).integers(0, 256, (9, 32, 32, 3), dtype=np.uint8)  # 9 frames at stage 1's half


@pytest.fixture(scope="module")
def ic_engine(folder, tmp_path_factory):
    """An engine with three IC-LoRA adapters: "ic" active (metadata factor 2), "ic3" (factor 3) and
    "plain" (no metadata) loaded but inactive."""
    from safetensors.torch import load_file, save_file
    from ltxengine import ReferenceCondition  # noqa: F401 - the public name the cases use
    root = tmp_path_factory.mktemp("ltx2ic")
    eng = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    for name, factor in (("ic", "2"), ("ic3", "3"), ("plain", None)):
        path, _ = write_lora(root / f"{name}.safetensors", _diffusers_dit(folder))
        if factor is not None:
            save_file(load_file(str(path)), str(path), metadata={"reference_downscale_factor": factor})
        eng.load_lora_weights(str(path), adapter_name=name)
    eng.set_adapters(["ic"])
    return eng


def _diffusers_dit(folder):
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel
    return LTX2VideoTransformer3DModel.from_pretrained(folder / "transformer")


def _ref(video=REF, strength=1.0):
    from ltxengine import ReferenceCondition
    return [ReferenceCondition(video, strength)]


IC = dict(pipeline="ic-lora")


@pytest.mark.parametrize("kw, match", [
    (dict(IC), r"reference_conditions: pipeline='ic-lora' needs at least one ReferenceCondition\(video, strength\)"),
    (dict(IC, reference_conditions=[REF]), r"reference_conditions\[0\] must be a ltxengine ReferenceCondition"),
    (dict(IC, reference_conditions=_ref(strength=1.5)),
     r"reference_conditions\[0\].strength must be in \[0.0, 1.0\], got 1.5"),
    (dict(IC, reference_conditions=_ref(REF[:8])),
     r"reference_conditions\[0\].video must have 8k\+1 frames .*num_frames=9\), got 8"),
    (dict(IC, reference_conditions=_ref(REF[..., 0])),
     r"reference_conditions\[0\].video: numpy videos must be \(F, H, W, 3\), got shape \(9, 32, 32\)"),
    (dict(IC, reference_conditions=_ref("missing.mp4")), r"reference_conditions\[0\].video: no file at 'missing.mp4'"),
    (dict(IC, reference_conditions=_ref([REF[0]] * 8 + [REF[0, :16]])),
     r"reference_conditions\[0\].video: every frame must have the same size"),
    (dict(IC, reference_conditions=_ref(), loras={}),
     r"reference_downscale_factor: none of the call's LoRAs \(adapters \[\]\) has reference_downscale_factor in "
     r"its safetensors metadata"),
    (dict(IC, reference_conditions=_ref(), loras={"plain": 1.0}),
     r"none of the call's LoRAs \(adapters \['plain'\]\) has reference_downscale_factor"),
    (dict(IC, reference_conditions=_ref(), loras={"ic": 1.0, "ic3": 1.0}),
     r"reference_downscale_factor: the call's IC-LoRAs disagree \(\{'ic': 2, 'ic3': 3\}\)"),
    (dict(IC, reference_conditions=_ref(), reference_downscale_factor=1),
     r"reference_downscale_factor=1 contradicts the IC-LoRA metadata of the call's adapters \{'ic': 2\}"),
    (dict(IC, reference_conditions=_ref(), reference_downscale_factor=4, loras={}),
     r"reference_downscale_factor: the references are encoded at 1/4 of stage 1's 64x64, which must stay a multiple "
     r"of 32 .*height=128 gives 64/4: use a height that is a multiple of 256"),
    (dict(IC, reference_conditions=_ref(), reference_downscale_factor=0, loras={}),
     "reference_downscale_factor must be >= 1, got 0"),
    (dict(IC, reference_conditions=_ref(), conditioning_attention_strength=1.5),
     r"conditioning_attention_strength must be in \[0.0, 1.0\], got 1.5"),
    (dict(IC, reference_conditions=_ref(), conditioning_attention_mask=np.ones((9, 32), np.float32)),
     r"conditioning_attention_mask must be a float \(F, H, W\) or \(1, 1, F, H, W\) mask in \[0, 1\], got "
     r"torch.float32 of shape \(9, 32\)"),
    (dict(IC, reference_conditions=_ref(), conditioning_attention_mask=np.full((9, 32, 32), 2.0, np.float32)),
     r"conditioning_attention_mask values must lie in \[0, 1\], got range \[2, 2\]"),
    (dict(IC, num_frames=17, reference_conditions=_ref(np.concatenate([REF, REF[:8]])),
          conditioning_attention_mask=np.ones((4, 32, 32), np.float32)),
     r"conditioning_attention_mask has 4 frames; reference_conditions\[0\] has 17 frames \(3 latent frames\), so "
     r"the mask needs 1 \+ k x 2 frames"),
    (dict(reference_conditions=_ref()), "reference_conditions is read by pipeline='ic-lora' only"),
    (dict(conditioning_attention_strength=0.5), "conditioning_attention_strength is read by pipeline='ic-lora' only"),
])
def test_bad_ic_lora_arguments_are_refused_before_any_model_work(ic_engine, kw, match):
    refuse(ic_engine, match, **kw)


def test_ic_lora_arguments_are_normalized(ic_engine):
    """The factor comes from the active IC-LoRA's metadata, a clip longer than num_frames is cut to
    it, a (1, 1, F, H, W) mask becomes (F, H, W), the strength defaults to 1."""
    from ltxengine import ReferenceCondition
    long = np.concatenate([REF, REF[:8]])
    a = checked(ic_engine, **SMALL, **IC, reference_conditions=ReferenceCondition(torch.from_numpy(long).permute(
        0, 3, 1, 2), 0.5), conditioning_attention_mask=torch.ones(1, 1, 9, 16, 16))
    assert a.reference_downscale_factor == 2 and a.conditioning_attention_strength == 1.0
    (ref,) = a.reference_conditions
    assert ref.strength == 0.5 and ref.video.shape == (9, 32, 32, 3) and np.array_equal(ref.video, REF)
    assert a.conditioning_attention_mask.shape == (9, 16, 16)
    assert checked(ic_engine, **dict(SMALL, height=192, width=192), **IC, reference_conditions=_ref(),
                   loras={"ic3": 1.0}).reference_downscale_factor == 3
