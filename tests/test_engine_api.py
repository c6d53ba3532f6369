"""Behaviour tests of the public ``ltxengine.Engine`` API on a tiny random-weight LTX-Video 0.9.5
folder (``tests/pipelines/fixtures.py``), fp32 on CPU.

What a caller sees: bad arguments are refused with a ValueError that names the argument, the rule
and the value, and leave the engine working; numeric blow-ups name the step; over-long prompts warn;
the callback reports every step and can cancel; concurrent calls are serialized and reproducible;
seeds reproduce; results and saved mp4 files are what they claim; Hub ids fail clearly offline.

Generations are tiny (64x96, 9 frames, 2-3 steps) so the whole file runs in seconds.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import ltxengine
from ltxengine import STOP, Condition, Engine, GenerationCancelled, GenerationResult, TwoStage
from ltxengine.media import read_mp4

from .pipelines.fixtures import WORDS, build_pipeline_folder, build_upsampler_folder, make_image, make_video

H, W, F = 64, 96, 9
LATENT_SHAPE = (1, 8, 2, H // 32, W // 32)  # tiny-095: 8 latent channels, 32x spatial, 8x temporal
TINY = dict(height=H, width=W, num_frames=F, num_inference_steps=2)
PROMPT = "a red car drives through the park"
TWO = TwoStage(downscale_factor=0.5, num_inference_steps=4, denoise_strength=0.5)
NTSC = Fraction(24000, 1001)


# -- fixtures and helpers ---------------------------------------------------------------------------

@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The tensors here are tiny: one intra-op thread is as fast, and it does not collapse (50x) when
    another process competes for the two cores, as OpenMP's spinning workers do."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return build_pipeline_folder(root, "tiny-095"), build_upsampler_folder(root, "tiny-095")


@pytest.fixture(scope="module")
def engine(folders):
    folder, upsampler = folders
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, latent_upsampler=upsampler)


@pytest.fixture(scope="module")
def reference(engine):
    """Frames of the baseline call (seed 0), made when the first test asks for them; the
    bad-input tests come first in this file, so this is before the engine has seen any error."""
    return generate(engine, seed=0).frames


def generate(engine, prompt=PROMPT, **kw):
    """engine.generate at the tiny size; keyword arguments override TINY."""
    return engine.generate(prompt, **{**TINY, **kw})


def assert_still_works(engine, reference):
    """A valid call after whatever happened gives bitwise the frames of the baseline call."""
    assert np.array_equal(generate(engine, seed=0).frames, reference)


def recorder(calls: list, stop_at: tuple | None = None):
    """A callback appending (stage, step, total, kwargs) to ``calls``; returns STOP at (stage, step)."""
    def callback(stage, step, total, **kwargs):
        calls.append((stage, step, total, kwargs))
        return STOP if (stage, step) == stop_at else None
    return callback


def steps_of(calls):
    return [(stage, step, total) for stage, step, total, _ in calls]


# -- 1. bad input -------------------------------------------------------------------------------------

def _rgba_array():
    return np.zeros((H, W, 4), np.uint8)


def _gray_tensor():
    return torch.full((1, H, W), 0.5)


def _bright_tensor():
    img = make_image(H, W, 1)
    img[0, 0, 0] = 1.5
    return img


def _negative_array():
    img = make_image(H, W, 1).permute(1, 2, 0).numpy().copy()
    img[3, 4, 1] = -0.25
    return img


BAD_INPUTS = [
    pytest.param(lambda: dict(num_frames=10), r"num_frames must be of the form 8k\+1 \(e\.g\. 9 or 17\), got 10",
                 id="num_frames-10"),
    pytest.param(lambda: dict(height=100), r"height must be a multiple of 32, got 100", id="height-100"),
    pytest.param(lambda: dict(width=100), r"width must be a multiple of 32, got 100", id="width-100"),
    pytest.param(lambda: dict(num_inference_steps=0), r"num_inference_steps must be >= 1, got 0", id="steps-0"),
    pytest.param(lambda: dict(num_inference_steps=-1), r"num_inference_steps must be >= 1, got -1", id="steps--1"),
    pytest.param(lambda: dict(guidance_rescale=1.5), r"guidance_rescale must be in \[0(\.0)?, 1(\.0)?\], got 1\.5",
                 id="guidance_rescale-1.5"),
    pytest.param(lambda: dict(image=_rgba_array()), r"image: numpy images must be \(H, W, 3\) RGB, got shape "
                 r"\(64, 96, 4\)", id="image-rgba-array"),
    pytest.param(lambda: dict(image=_gray_tensor()), r"image: tensor images must be \(3, H, W\) RGB, got shape "
                 r"\(1, 64, 96\)", id="image-gray-tensor"),
    pytest.param(lambda: dict(conditions=[Condition(image=_gray_tensor())]),
                 r"conditions\[0\]\.image: tensor images must be \(3, H, W\).*\(1, 64, 96\)", id="condition-gray"),
    pytest.param(lambda: dict(image=_bright_tensor()), r"image: float pixel values must lie in \[0, 1\], got range "
                 r"\[0\.\d+, 1\.5\]", id="image-above-1"),
    pytest.param(lambda: dict(image=_negative_array()), r"image: float pixel values must lie in \[0, 1\], got "
                 r"range \[-0\.25, 0\.\d+\]", id="image-below-0"),
    pytest.param(lambda: dict(conditions=[Condition(image=make_image(H, W, 1), frame_index=F)]),
                 r"conditions\[0\]\.frame_index must be < num_frames \(9\), got 9", id="condition-past-end"),
    pytest.param(lambda: dict(conditions=[Condition(image=make_image(H, W, 1), video=make_video(9, H, W, 1))]),
                 r"conditions\[0\]: set exactly one of image and video", id="condition-image-and-video"),
    pytest.param(lambda: dict(image=make_image(H, W, 1), conditions=[Condition(image=make_image(H, W, 2))]),
                 r"pass image or conditions, not both", id="image-and-conditions"),
    pytest.param(lambda: dict(generator=torch.Generator().manual_seed(0)), r"pass seed or generator, not both",
                 id="seed-and-generator"),
    pytest.param(lambda: dict(seed=-1), r"seed must be >= 0, got -1", id="seed--1"),
    pytest.param(lambda: dict(timesteps=[500, 800]), r"timesteps must be strictly decreasing, got \[500\.0, 800\.0\]",
                 id="timesteps-increasing"),
    pytest.param(lambda: dict(timesteps=[900, 500], sigmas=[0.9, 0.5]),
                 r"pass at most one of timesteps and sigmas, got both", id="timesteps-and-sigmas"),
    pytest.param(lambda: dict(denoise_strength=0), r"denoise_strength must be in \(0(\.0)?, 1(\.0)?\], got 0",
                 id="denoise_strength-0"),
    pytest.param(lambda: dict(latents=torch.zeros(1, 8, 2, 2, 2)),
                 r"latents must be a tensor of shape \(1, 8, 2, 2, 3\).*got \(1, 8, 2, 2, 2\)", id="latents-shape"),
    pytest.param(lambda: dict(prompt=[PROMPT, PROMPT]), r"prompt must be a str .*got list", id="prompt-list"),
]


@pytest.mark.parametrize("make_kwargs, message", BAD_INPUTS)
def test_bad_input_is_refused_and_engine_keeps_working(engine, reference, make_kwargs, message):
    kwargs = {"seed": 0, **make_kwargs()}
    with pytest.raises(ValueError, match=message):
        generate(engine, **kwargs)
    assert_still_works(engine, reference)


def test_two_stage_without_upsampler_is_refused(folders, reference):
    plain = Engine.from_pretrained(folders[0], device="cpu", dtype=torch.float32)
    assert plain.latent_upsampler is None
    for two_stage in (TWO, True):
        with pytest.raises(ValueError, match=r"two_stage needs a latent upsampler.*latent_upsampler=PATH"):
            generate(plain, seed=0, two_stage=two_stage)
    assert_still_works(plain, reference)  # same folder, same frames


# -- 2. non-finite latents ------------------------------------------------------------------------------

def test_non_finite_latents_at_step_one_name_the_step(engine, reference):
    # finite but huge starting latents: the first transformer call overflows
    with pytest.raises(FloatingPointError, match=r"denoise: latents became non-finite \(nan/inf\) at step 1/2"):
        generate(engine, seed=0, latents=torch.full(LATENT_SHAPE, 1e38))
    assert_still_works(engine, reference)


def test_guidance_overflow_stops_at_the_first_non_finite_step(engine, reference):
    calls = []
    with pytest.raises(FloatingPointError, match=r"denoise: .*non-finite.* at step \d+/3") as info:
        generate(engine, seed=0, guidance_scale=1e38, num_inference_steps=3, callback=recorder(calls))
    failed = int(re.search(r"step (\d+)/3", str(info.value)).group(1))
    # every step before the reported one completed with finite latents; no step after it ran
    assert steps_of(calls) == [("denoise", s, 3) for s in range(1, failed)]
    assert all(torch.isfinite(kw["latents"]).all() for *_, kw in calls)
    assert_still_works(engine, reference)


# -- 3. over-long prompt ------------------------------------------------------------------------------

def test_overlong_prompt_warns_and_is_truncated(engine):
    long_prompt = " ".join(WORDS[:20])  # one token per word + </s>: 21 tokens
    with pytest.warns(UserWarning, match=r"21 tokens is longer than max_sequence_length=8") as record:
        long = generate(engine, long_prompt, seed=0, max_sequence_length=8)
    assert [w.filename for w in record if "max_sequence_length" in str(w.message)] == [__file__]
    assert long.frames.shape == (F, H, W, 3)
    # the encoder saw 7 words + </s>: the same video as the 7-word prompt, which fits without a warning
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*max_sequence_length")
        short = generate(engine, " ".join(WORDS[:7]), seed=0, max_sequence_length=8)
    assert np.array_equal(long.frames, short.frames)


# -- 4. callback --------------------------------------------------------------------------------------

def test_callback_reports_every_step_then_decode(engine):
    calls = []
    result = generate(engine, seed=0, num_inference_steps=3, callback=recorder(calls))
    assert steps_of(calls) == [("denoise", 1, 3), ("denoise", 2, 3), ("denoise", 3, 3), ("decode", 1, 1)]
    assert all(set(kw) == {"timestep", "latents"} for *_, kw in calls)
    timesteps = [kw["timestep"] for stage, *_, kw in calls if stage == "denoise"]
    assert all(isinstance(t, float) for t in timesteps) and timesteps == sorted(timesteps, reverse=True)
    for *_, kw in calls:
        assert kw["latents"].dtype == torch.float32 and torch.isfinite(kw["latents"]).all()
        assert kw["latents"].shape == result.latents.shape  # (1, C, F', H', W') at every stage
    assert torch.equal(calls[-1][3]["latents"], result.latents)


def test_callback_two_stage_order(engine):
    calls = []
    result = generate(engine, seed=0, two_stage=TWO, callback=recorder(calls))
    assert steps_of(calls) == [("denoise", 1, 2), ("denoise", 2, 2), ("refine", 1, 2), ("refine", 2, 2),
                               ("decode", 1, 1)]
    assert result.frames.shape == (F, H, W, 3)


@pytest.mark.parametrize("stop_at, two_stage", [
    (("denoise", 2), None),
    (("refine", 1), TWO),
    (("decode", 1), None),
])
def test_stop_cancels_at_that_step(engine, reference, stop_at, two_stage):
    calls = []
    with pytest.raises(GenerationCancelled) as info:
        generate(engine, seed=0, num_inference_steps=3, two_stage=two_stage, callback=recorder(calls, stop_at))
    assert (info.value.stage, info.value.step) == stop_at
    assert info.value.total == calls[-1][2]
    assert (calls[-1][0], calls[-1][1]) == stop_at  # nothing ran after the STOP
    assert f"{stop_at[0]} step {stop_at[1]}/" in str(info.value)
    assert_still_works(engine, reference)


def test_cancellation_raised_by_the_callback_propagates(engine, reference):
    cancel = GenerationCancelled("denoise", 2, 3)

    def callback(stage, step, total, **kwargs):
        if step == 2:
            raise cancel

    with pytest.raises(GenerationCancelled) as info:
        generate(engine, seed=0, num_inference_steps=3, callback=callback)
    assert info.value is cancel
    assert_still_works(engine, reference)


def test_bare_cancellation_from_the_callback_reports_where(engine, reference):
    def callback(stage, step, total, **kwargs):
        if step == 2:
            raise GenerationCancelled()

    with pytest.raises(GenerationCancelled) as info:
        generate(engine, seed=0, num_inference_steps=3, callback=callback)
    assert (info.value.stage, info.value.step, info.value.total) == ("denoise", 2, 3)


# -- 5. threads ---------------------------------------------------------------------------------------

def test_concurrent_calls_are_serialized_and_reproducible(engine):
    seeds = (1, 2)
    expected = {s: generate(engine, seed=s).frames for s in seeds}
    log, log_lock = [], threading.Lock()
    barrier = threading.Barrier(len(seeds))
    results, errors = {}, []

    def callback(stage, step, total, **kwargs):
        with log_lock:
            log.append((threading.get_ident(), stage, step))
        time.sleep(0.003)  # widen the window in which unserialized calls would interleave

    def work(seed):
        try:
            barrier.wait(timeout=30)
            results[seed] = (threading.get_ident(), generate(engine, seed=seed, callback=callback))
        except BaseException as e:  # re-raised in the main thread below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(s,)) for s in seeds]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    for s in seeds:
        assert np.array_equal(results[s][1].frames, expected[s])
    owners = [tid for tid, *_ in log]
    assert len([tid for tid, _ in itertools.groupby(owners)]) == len(seeds), "generations interleaved"
    for tid, _ in results.values():
        assert [(stage, step) for t, stage, step in log if t == tid] == [("denoise", 1), ("denoise", 2),
                                                                          ("decode", 1)]


# -- 6. seeds -----------------------------------------------------------------------------------------

def test_same_seed_same_video_different_seed_different_video(engine):
    a, b, c = (generate(engine, seed=s) for s in (7, 7, 8))
    assert np.array_equal(a.frames, b.frames) and torch.equal(a.latents, b.latents)
    assert a.seed == 7
    assert np.abs(a.frames - c.frames).mean() > 1e-2


def test_seed_none_is_random_and_reported(engine):
    a, b = generate(engine, seed=None), generate(engine, seed=None)
    assert a.frames.shape == (F, H, W, 3)
    assert not np.array_equal(a.frames, b.frames)
    # the drawn seed is on the result and reproduces the video
    assert isinstance(a.seed, int) and a.seed != b.seed
    assert np.array_equal(generate(engine, seed=a.seed).frames, a.frames)
    assert generate(engine, generator=torch.Generator().manual_seed(1)).seed is None


@pytest.mark.parametrize("kwargs", [
    pytest.param({}, id="text-to-video"),
    pytest.param({"image": make_image(H, W, 3)}, id="image-to-video"),
    pytest.param({"conditions": [Condition(image=make_image(H, W, 3), frame_index=8, strength=0.8)]},
                 id="condition"),
    pytest.param({"two_stage": TWO}, id="two-stage"),
])
def test_generator_equals_seed(engine, kwargs):
    by_seed = generate(engine, seed=11, **kwargs)
    by_generator = generate(engine, generator=torch.Generator().manual_seed(11), **kwargs)
    assert np.array_equal(by_seed.frames, by_generator.frames)


# -- 7. result and save -------------------------------------------------------------------------------

def test_result_frames_video_latents(engine):
    result = generate(engine, seed=0)
    assert result.frames.dtype == np.float32 and result.frames.shape == (F, H, W, 3)
    assert result.frames.min() >= 0.0 and result.frames.max() <= 1.0
    assert result.video.dtype == np.uint8
    assert np.array_equal(result.video, np.round(result.frames * 255).astype(np.uint8))
    assert result.latents.dtype == torch.float32 and tuple(result.latents.shape) == LATENT_SHAPE
    assert result.fps == 25 and isinstance(result.fps, Fraction)


@pytest.mark.parametrize("frame_rate", ["24000/1001", 24000 / 1001, NTSC], ids=["str", "float", "Fraction"])
def test_fractional_frame_rate(engine, frame_rate):
    result = generate(engine, seed=0, frame_rate=frame_rate)
    assert isinstance(result.fps, Fraction) and result.fps == NTSC


def test_save_writes_a_playable_mp4(engine, tmp_path):
    result = generate(engine, seed=0, frame_rate="24000/1001")
    path = result.save(tmp_path / "out.mp4")
    assert Path(path) == tmp_path / "out.mp4"
    frames, rate = read_mp4(path)
    assert frames.shape == (F, H, W, 3)
    assert rate == NTSC
    # lossy, but each decoded frame keeps its source frame's mean colour
    assert np.abs(frames.mean(axis=(1, 2)) - result.video.mean(axis=(1, 2))).max() < 8


def test_save_into_missing_directory_leaves_nothing(engine, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"  # where a temporary file would go
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    result = generate(engine, seed=0)
    with pytest.raises(OSError):
        result.save(tmp_path / "missing" / "out.mp4")
    assert not (tmp_path / "missing").exists()
    assert list(scratch.iterdir()) == []


def _odd_width(result):
    return GenerationResult(frames=result.frames[:, :, :-1], video=result.video[:, :, :-1], latents=result.latents,
                            fps=result.fps)


def _zero_fps(result):  # fails only once the temporary file next to the target exists
    return GenerationResult(frames=result.frames, video=result.video, latents=result.latents, fps=Fraction(0))


@pytest.mark.parametrize("broken, message", [(_odd_width, "height and width must be even"),
                                             (_zero_fps, "fps must be positive")], ids=["odd-width", "zero-fps"])
def test_failing_save_keeps_the_existing_file(engine, tmp_path, broken, message):
    result = generate(engine, seed=0)
    target = result.save(tmp_path / "keep.mp4")
    before = target.read_bytes()
    with pytest.raises(ValueError, match=message):
        broken(result).save(target)
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.mp4"]


def test_saved_file_has_ordinary_permissions(engine, tmp_path):
    path = generate(engine, seed=0).save(tmp_path / "out.mp4")
    plain = tmp_path / "plain"
    plain.touch()
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777


# -- 8. Hub ids offline -------------------------------------------------------------------------------

def test_hub_id_without_cache_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no local folder of that name
    with pytest.raises(OSError, match="Hugging Face Hub") as info:
        Engine.from_pretrained("Lightricks/LTX-Video", local_files_only=True)
    assert not isinstance(info.value, FileNotFoundError)
    assert "Lightricks/LTX-Video" in str(info.value) and "local path" in str(info.value)


def test_missing_path_fails_with_its_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=re.escape("'./no/such/dir'")):
        Engine.from_pretrained("./no/such/dir")


def test_hub_id_offline_in_a_fresh_process(tmp_path):
    repo_root = Path(ltxengine.__file__).resolve().parent.parent
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home"),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(repo_root), os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-c",
                           "import ltxengine; ltxengine.Engine.from_pretrained('Lightricks/LTX-Video')"],
                          env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "OSError" in proc.stderr and "Hugging Face Hub" in proc.stderr, proc.stderr[-2000:]


# -- 9. from_pretrained checks --------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, message", [
    ({"dtype": torch.int8}, r"dtype must be torch\.float32, torch\.bfloat16 or torch\.float16, got torch\.int8"),
    ({"kernels": "nope"}, r"kernels must be one of .*, got 'nope'"),
    ({"kernels": "cuda"}, r"kernels='cuda': the CUDA C\+\+ kernels take bfloat16 activations, got dtype=torch.float32"),
])
def test_from_pretrained_refuses_bad_options(folders, kwargs, message):
    with pytest.raises(ValueError, match=message):
        Engine.from_pretrained(folders[0], device="cpu", **{"dtype": torch.float32, **kwargs})
