"""Issue 17, findings 4.3, 4.4, 4.6 and 4.11 on the LTX-Video engine (tiny random-weight 0.9.5
folder, fp32 on CPU): every argument, nested TwoStage / TilingConfig / Condition objects and the
output path included, is checked before any model work, with a message naming the argument, the
rule and the value; every size-like argument has an upper bound; non-finite model output is an
error naming the stage, never a returned or saved video. After each refusal the engine still
makes bit-identical frames.

"No model work" is observed, not assumed: forward pre-hooks count every call of the text
encoder, the transformer, the VAE's encoder and decoder and the latent upsampler.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import reprlib
from fractions import Fraction

import numpy as np
import pytest
import torch

from ltxengine import Condition, Engine, TwoStage
from ltxengine.checks import make_generator as _generator
from ltxengine.engine import MAX_CONDITIONS, MAX_NUM_FRAMES, MAX_SEQUENCE_LENGTH, MAX_SIDE, MAX_STEPS, SEED_MAX
from ltxengine.media import frame_rate_fraction
from ltxengine.models.video_vae import TilingConfig

from .pipelines.fixtures import build_pipeline_folder, build_upsampler_folder, make_image

H, W, F = 64, 96, 9
TINY = dict(height=H, width=W, num_frames=F, num_inference_steps=2)
PROMPT = "a red car drives through the park"
TWO = TwoStage(downscale_factor=0.5, num_inference_steps=4, denoise_strength=0.5)


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: one thread is as fast and immune to a busy machine
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return build_pipeline_folder(root, "tiny-095"), build_upsampler_folder(root, "tiny-095")


@pytest.fixture(scope="module")
def engine(folders):
    return Engine.from_pretrained(folders[0], device="cpu", dtype=torch.float32, latent_upsampler=folders[1])


@pytest.fixture(scope="module")
def reference(engine):
    """The baseline frames, made before any test below has fed the engine a bad input."""
    return generate(engine, seed=0).frames


def generate(engine, prompt=PROMPT, **kw):
    return engine.generate(prompt, **{**TINY, **kw})


def assert_still_works(engine, reference):
    assert np.array_equal(generate(engine, seed=0).frames, reference)


@contextlib.contextmanager
def model_calls(engine):
    """Yields the list of model components called inside the block, in call order."""
    calls = []
    modules = {"text_encoder": engine.text_encoder.model, "transformer": engine.transformer,
               "vae.encoder": engine.vae.encoder, "vae.decoder": engine.vae.decoder,
               "latent_upsampler": engine.latent_upsampler}
    handles = [m.register_forward_pre_hook(lambda *_, name=name: calls.append(name))
               for name, m in modules.items() if m is not None]
    try:
        yield calls
    finally:
        for h in handles:
            h.remove()


def assert_refused_before_work(engine, reference, message, exc=ValueError, **kwargs):
    with model_calls(engine) as calls, pytest.raises(exc, match=message):
        generate(engine, **{"seed": 0, **kwargs})
    assert calls == [], f"model work before the refusal: {calls}"
    assert_still_works(engine, reference)


def case_id(case) -> str:
    """A readable test id: the arguments (or the TwoStage fields) a case sets."""
    if isinstance(case, TwoStage):
        case = {f.name: getattr(case, f.name) for f in dataclasses.fields(case) if getattr(case, f.name) != f.default}
    text = re.sub(r" at 0x[0-9a-f]+", "", "-".join(f"{k}={reprlib.repr(v)}" for k, v in case.items()))
    return re.sub(r"[^\w.=+-]", "", text)[:60]


def test_model_calls_sees_the_model_work(engine):
    """The observer itself: a real call is seen in order (text, denoise, decode)."""
    with model_calls(engine) as calls:
        generate(engine, seed=0, num_inference_steps=1)
    assert calls[0] == "text_encoder" and "transformer" in calls and calls[-1] == "vae.decoder"


# -- 4.4 nested config objects, late failures, the output path ---------------------------------------

TWO_STAGE_REFUSED = [
    (TwoStage(guidance_scale=-5), r"two_stage\.guidance_scale must be >= 0(\.0)?, got -5"),
    (TwoStage(guidance_scale=float("nan")), r"two_stage\.guidance_scale must be finite, got nan"),
    (TwoStage(guidance_scale="3"), r"two_stage\.guidance_scale must be a number, got '3'"),
    (TwoStage(guidance_rescale=5), r"two_stage\.guidance_rescale must be in \[0(\.0)?, 1(\.0)?\], got 5"),
    (TwoStage(image_cond_noise_scale=-0.1), r"two_stage\.image_cond_noise_scale must be >= 0(\.0)?, got -0\.1"),
    (TwoStage(image_cond_noise_scale=float("inf")), r"two_stage\.image_cond_noise_scale must be finite"),
    (TwoStage(adain_factor=float("nan")), r"two_stage\.adain_factor must be finite"),
    # the default strength 0.4 keeps int(2 * 0.4) = 0 steps: was found only after stage 1
    (TwoStage(num_inference_steps=2), r"two_stage\.denoise_strength=0\.4 keeps no step of the 2-step schedule of "
                                      r"two_stage\.num_inference_steps \(int\(2 \* 0\.4\) = 0\)"),
    (TwoStage(timesteps=[900.0, 500.0], denoise_strength=0.4),
     r"two_stage\.denoise_strength=0\.4 keeps no step of the 2-step schedule of two_stage\.timesteps"),
    (TwoStage(timesteps="abc"), r"two_stage\.timesteps must be a sequence of numbers, got 'abc'"),
    (TwoStage(num_inference_steps=10**12), r"two_stage\.num_inference_steps must be <= 1000 .*got 1000000000000"),
]


@pytest.mark.parametrize("two, message", TWO_STAGE_REFUSED, ids=[case_id(c) for c, _ in TWO_STAGE_REFUSED])
def test_two_stage_fields_are_checked_before_any_work(engine, reference, two, message):
    assert_refused_before_work(engine, reference, message, two_stage=two)


def test_two_stage_check_is_reusable_and_normalizes():
    two = TwoStage(timesteps=(1000, 909, 725, 421, 0), denoise_strength=0.999, guidance_scale=1.0).check("stage2")
    assert two.timesteps == [1000.0, 909.0, 725.0, 421.0, 0.0]
    with pytest.raises(ValueError, match=r"stage2\.guidance_rescale must be in"):
        TwoStage(guidance_rescale=1.5).check("stage2")


def test_stage1_strength_keeping_no_step_is_refused_before_work(engine, reference):
    # was: refused in the denoising loop, after the text encoder had run
    assert_refused_before_work(engine, reference, r"denoise_strength=0\.4 keeps no step of the 2-step schedule of "
                               r"num_inference_steps", pipeline="condition", denoise_strength=0.4)
    assert_refused_before_work(engine, reference, r"denoise_strength=0\.3 keeps no step of the 3-step schedule of "
                               r"sigmas", pipeline="condition", denoise_strength=0.3, sigmas=[1.0, 0.5, 0.2])


def test_schedule_that_cannot_run_is_refused_before_work(folders):
    """A one-step schedule cannot be stretched to shift_terminal: was found after text encoding."""
    eng = Engine.from_pretrained(folders[0], device="cpu", dtype=torch.float32,
                                 scheduler_config=dict(shift_terminal=0.1))
    baseline = generate(eng, seed=0).frames
    for kw, name in ((dict(num_inference_steps=1), "num_inference_steps"), (dict(sigmas=[1.0]), "sigmas")):
        assert_refused_before_work(eng, baseline, rf"{name}: the schedule's last sigma is 1, so it cannot be "
                                                  rf"stretched to end at shift_terminal=0\.1", **kw)


TILING_REFUSED = [
    # sizes that are not whole latent cells: was found when decoding, after the denoising
    (dict(vae_tiling=TilingConfig(tile_sample_min_height=100, tile_sample_stride_height=100)),
     r"vae_tiling: TilingConfig\.tile_sample_min_height must be a multiple of the compression ratio 32, got 100"),
    (dict(vae_tiling=TilingConfig(tile_sample_min_num_frames=12, tile_sample_stride_num_frames=4)),
     r"vae_tiling: TilingConfig\.tile_sample_min_num_frames must be a multiple of the compression ratio 8, got 12"),
    (dict(vae_tiling="512"), r"vae_tiling must be a TilingConfig or None, got str"),
]


@pytest.mark.parametrize("kwargs, message", TILING_REFUSED, ids=[case_id(c) for c, _ in TILING_REFUSED])
def test_tiling_is_checked_before_any_work(engine, reference, kwargs, message):
    assert_refused_before_work(engine, reference, message, **kwargs)


def test_valid_tiling_still_runs(engine):
    tiling = TilingConfig(tile_sample_min_height=64, tile_sample_min_width=64, tile_sample_stride_height=32,
                          tile_sample_stride_width=32)
    assert np.isfinite(generate(engine, seed=0, vae_tiling=tiling).frames).all()


def test_two_stage_latents_are_checked_at_the_first_stage_size(engine, reference):
    """Given latents start stage 1: full-size ones were accepted and broke the denoising loop."""
    two = TwoStage(downscale_factor=0.5, num_inference_steps=2, denoise_strength=1.0)
    kw = dict(two_stage=two, denoise_strength=0.5, height=128, width=192)
    assert_refused_before_work(engine, reference, r"latents must be a tensor of shape \(1, 8, 2, 2, 3\) .*got "
                                                  r"\(1, 8, 2, 4, 6\)", latents=torch.zeros(1, 8, 2, 4, 6), **kw)
    result = generate(engine, seed=0, latents=torch.zeros(1, 8, 2, 2, 3), **kw)
    assert result.frames.shape == (F, 128, 192, 3)


def test_output_that_is_a_folder_is_refused_before_work(engine, reference, tmp_path):
    assert_refused_before_work(engine, reference, r"output: '.*' is a folder, expected an mp4 file name",
                               output=tmp_path)
    assert os.listdir(tmp_path) == []


def test_output_in_a_missing_folder_is_refused_before_work(engine, reference, tmp_path):
    assert_refused_before_work(engine, reference, r"output: the folder '.*missing' does not exist",
                               output=tmp_path / "missing" / "out.mp4")


def test_output_in_an_unwritable_folder_is_refused_before_work(engine, reference):
    """/proc takes no new files, even from root (a chmod 555 folder would not stop root)."""
    if not os.path.isdir("/proc"):
        pytest.skip("no /proc on this system")
    assert_refused_before_work(engine, reference, r"output: cannot write into the folder '/proc'",
                               output="/proc/ltxengine-out.mp4")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root writes into read-only folders")
def test_output_in_a_read_only_folder_is_refused_before_work(engine, reference, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        assert_refused_before_work(engine, reference, r"output: cannot write into the folder",
                                   output=folder / "out.mp4")
    finally:
        folder.chmod(0o755)
    assert os.listdir(folder) == []


# -- 4.6 upper bounds of size-like arguments ---------------------------------------------------------------

BOUNDS_REFUSED = [
    (dict(height=MAX_SIDE + 32), rf"height must be <= {MAX_SIDE} \(MAX_SIDE\), got {MAX_SIDE + 32}"),
    (dict(width=10**9), rf"width must be <= {MAX_SIDE} \(MAX_SIDE\), got 1000000000"),
    (dict(num_frames=MAX_NUM_FRAMES + 8), rf"num_frames must be <= {MAX_NUM_FRAMES} \(MAX_NUM_FRAMES\), got "
                                         rf"{MAX_NUM_FRAMES + 8}"),
    # numpy failed on this without naming the argument
    (dict(num_inference_steps=10**12), r"num_inference_steps must be <= 1000 \(MAX_STEPS: the scheduler's 1000 "
                                       r"training timesteps\), got 1000000000000"),
    # this one grew memory until the process died
    (dict(max_sequence_length=10**8), rf"max_sequence_length must be <= {MAX_SEQUENCE_LENGTH} "
                                      rf"\(MAX_SEQUENCE_LENGTH\), got 100000000"),
    (dict(timesteps=np.linspace(1000, 0, MAX_STEPS + 1)), r"timesteps must hold at most 1000 values"),
    (dict(sigmas=(1 - i / 10**12 for i in range(10**12))), r"sigmas must hold at most 1000 values"),
    (dict(conditions=[Condition(image=make_image(H, W, 1))] * (MAX_CONDITIONS + 1)),
     rf"conditions must hold at most {MAX_CONDITIONS} conditions \(MAX_CONDITIONS\), got {MAX_CONDITIONS + 1}"),
    # a view: MAX_NUM_FRAMES + 1 frames without their memory (each was preprocessed before any work)
    (dict(conditions=[Condition(video=torch.zeros(1, 3, H, W).expand(MAX_NUM_FRAMES + 1, 3, H, W))]),
     rf"conditions\[0\]\.video must have at most {MAX_NUM_FRAMES} frames \(MAX_NUM_FRAMES\), got "
     rf"{MAX_NUM_FRAMES + 1}"),
]


@pytest.mark.parametrize("kwargs, message", BOUNDS_REFUSED, ids=[case_id(c) for c, _ in BOUNDS_REFUSED])
def test_size_like_arguments_have_upper_bounds(engine, reference, kwargs, message):
    assert_refused_before_work(engine, reference, message, **kwargs)


BASE_ARGS = dict(height=512, width=704, num_frames=161, frame_rate=25, num_inference_steps=50, guidance_scale=3.0,
                 guidance_rescale=0.0, timesteps=None, sigmas=None, decode_timestep=0.0, decode_noise_scale=None,
                 seed=None, generator=None, latents=None, callback=None, denoise_strength=1.0,
                 image_cond_noise_scale=0.15, max_sequence_length=None, two_stage=None, pipeline=None,
                 vae_tiling=None, output=None, loras=None)


def test_upper_bounds_themselves_are_accepted(engine):
    """The bounds refuse only what is past them (checked without generating: these are huge)."""
    def check(**kw):
        args = {"prompt": PROMPT, "negative_prompt": None, "image": None, "conditions": None, **BASE_ARGS, **kw}
        return engine._request(args)
    a = check(height=MAX_SIDE, width=MAX_SIDE, num_frames=MAX_NUM_FRAMES, num_inference_steps=MAX_STEPS,
              max_sequence_length=MAX_SEQUENCE_LENGTH, seed=SEED_MAX)
    assert (a.height, a.num_frames, a.num_inference_steps) == (MAX_SIDE, MAX_NUM_FRAMES, MAX_STEPS)
    assert len(check(timesteps=np.linspace(1000, 0, MAX_STEPS)).timesteps) == MAX_STEPS
    assert len(check(conditions=[Condition(image=make_image(H, W, 1))] * MAX_CONDITIONS, **TINY).conditions) \
        == MAX_CONDITIONS


def test_base_args_match_generate_signature(engine):
    import inspect
    params = inspect.signature(engine.generate).parameters
    assert set(BASE_ARGS) | {"prompt", "negative_prompt", "image", "conditions"} == set(params)


# -- 4.11 unclear errors -----------------------------------------------------------------------------------

UNCLEAR_REFUSED = [
    (dict(seed=2**64), r"seed must be <= 18446744073709551615 \(2\*\*64 - 1, the largest seed "
                       r"torch\.Generator\.manual_seed takes\), got 18446744073709551616"),
    (dict(sigmas="abc"), r"sigmas must be a sequence of numbers, got 'abc'"),
    (dict(timesteps="abc"), r"timesteps must be a sequence of numbers, got 'abc'"),
    (dict(timesteps=["900", "500"]), r"timesteps must be a sequence of numbers, got '900' in \['900', '500'\]"),
    (dict(sigmas=torch.ones(2, 2)), r"sigmas must be a 1-D sequence of numbers, got shape \(2, 2\)"),
    # failed only when the mp4 was written, after all the work
    (dict(frame_rate=1e12), r"frame_rate must be in \[1/1000, 1000\] frames per second .*got 1000000000000\.0"),
    (dict(frame_rate=1e-6), r"frame_rate must be in \[1/1000, 1000\] frames per second .*got 1e-06"),
    (dict(frame_rate=Fraction(2**31 - 1, 2**31 - 2)), r"frame_rate must be a fraction whose numerator and "
                                                      r"denominator are at most 1000000"),
]


@pytest.mark.parametrize("kwargs, message", UNCLEAR_REFUSED, ids=[case_id(c) for c, _ in UNCLEAR_REFUSED])
def test_unclear_errors_name_the_argument(engine, reference, kwargs, message):
    assert_refused_before_work(engine, reference, message, **kwargs)


def test_frame_rate_bound_also_covers_output(engine, reference, tmp_path):
    assert_refused_before_work(engine, reference, r"frame_rate must be in \[1/1000, 1000\]", frame_rate=1e12,
                               output=tmp_path / "out.mp4")
    assert os.listdir(tmp_path) == []


def test_frame_rate_bounds_are_inclusive():
    assert frame_rate_fraction(1000) == 1000 and frame_rate_fraction("1/1000") == Fraction(1, 1000)
    assert frame_rate_fraction(Fraction(30000, 1001)) == Fraction(30000, 1001)
    with pytest.raises(ValueError, match=r"fps must be positive, got -1"):
        frame_rate_fraction(-1)


def test_largest_seed_works_and_generator_helper_names_the_seed(engine):
    assert generate(engine, seed=SEED_MAX, num_inference_steps=1).seed == SEED_MAX
    with pytest.raises(ValueError, match=r"seed must be <= 18446744073709551615"):
        _generator(None, 2**64)  # the LTX-2 engine seeds through this helper too


# -- 4.3 non-finite model output ------------------------------------------------------------------------

@contextlib.contextmanager
def output_replaced(module, value: float):
    """The module's output filled with ``value`` (nan / inf) inside the block."""
    handle = module.register_forward_hook(lambda mod, args, out: torch.full_like(out, value))
    try:
        yield
    finally:
        handle.remove()


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_decode_is_an_error_naming_the_stage(engine, reference, value):
    # inf used to be clamped into a plausible white or black video; nan was returned as is
    with output_replaced(engine.vae.decoder, value), \
            pytest.raises(FloatingPointError, match=r"decode produced non-finite frames \(nan/inf\)"):
        generate(engine, seed=0)
    assert_still_works(engine, reference)


def test_nan_vae_weights_with_output_write_nothing(engine, reference, tmp_path):
    weight = next(engine.vae.decoder.parameters())
    saved = weight.detach().clone()
    target = tmp_path / "out.mp4"
    try:
        with torch.no_grad():
            weight.fill_(float("nan"))
        with pytest.raises(FloatingPointError, match=r"decode produced non-finite frames"):
            generate(engine, seed=0, output=target)
    finally:
        with torch.no_grad():
            weight.copy_(saved)
    assert os.listdir(tmp_path) == []  # no mp4, no temporary file
    assert_still_works(engine, reference)


def test_non_finite_upsampler_output_names_the_upsampler(engine, reference):
    with output_replaced(engine.latent_upsampler, float("nan")), model_calls(engine) as calls, \
            pytest.raises(FloatingPointError, match=r"upsample produced non-finite latents"):
        generate(engine, seed=0, two_stage=TWO)
    assert calls[-1] == "latent_upsampler"  # stage 2 never ran on them
    assert_still_works(engine, reference)


def test_finite_streamed_output_is_unchanged(engine, reference, tmp_path):
    """The non-finite check changes no finite value: streamed and returned frames are the baseline."""
    assert np.array_equal(generate(engine, seed=0, output=tmp_path / "o.mp4").frames, reference)


# -- 4.3 on LTX-2: the decode path and its checks are shared ---------------------------------------------

@pytest.fixture(scope="module")
def ltx2(tmp_path_factory):
    pytest.importorskip("diffusers")
    from .pipelines.ltx2_fixtures import SEQ, build_pipeline
    engine = Engine.from_pretrained(build_pipeline(tmp_path_factory.mktemp("ltx2"))[2], device="cpu",
                                    dtype=torch.float32)
    kw = dict(height=64, width=96, num_frames=9, num_inference_steps=2, max_sequence_length=SEQ, pipeline="one-stage",
              seed=0)
    result = engine.generate(PROMPT, **kw)
    return engine, kw, result


@pytest.mark.parametrize("streamed", [False, True], ids=["returned", "output"])
@pytest.mark.parametrize("module, message", [("vae.decoder", r"decode produced non-finite frames"),
                                             ("vocoder", r"audio decode produced non-finite samples")],
                         ids=["vae", "vocoder"])
def test_ltx2_non_finite_decode_is_an_error_naming_the_stage(ltx2, tmp_path, module, message, streamed):
    engine, kw, baseline = ltx2
    target = tmp_path / "out.mp4"
    component = engine.vae.decoder if module == "vae.decoder" else engine.vocoder
    with output_replaced(component, float("nan")), pytest.raises(FloatingPointError, match=message):
        engine.generate(PROMPT, **kw, output=target if streamed else None)
    assert os.listdir(tmp_path) == []
    again = engine.generate(PROMPT, **kw)
    assert np.array_equal(again.frames, baseline.frames) and np.array_equal(again.audio, baseline.audio)
