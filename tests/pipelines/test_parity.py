"""Same folder, same arguments, same integer seed: ltxengine's frames equal diffusers'.

References: LTXPipeline, LTXImageToVideoPipeline, LTXConditionPipeline and the documented two-stage
recipe (condition pipeline -> LTXLatentUpsamplePipeline -> condition pipeline), run by
tests/pipelines/fixtures.py on folders written by diffusers' own save_pretrained, fp32 on CPU with
``generator=torch.Generator().manual_seed(seed)``.

Tolerance: 1e-4 absolute on [0, 1] frames (the issue's contract). Both sides run the same fp32
arithmetic; the measured gap is 0 for text-to-video and <= ~2e-6 elsewhere, where the only
difference is that per-token timesteps are embedded once per distinct value instead of once per
token (a different matmul shape, hence different fp32 rounding). A wrong random draw, schedule,
mask, coordinate or text path moves frames by >= 1e-2 (checked in test_parity_is_sensitive).
"""

import numpy as np
import pytest
import torch

import ltxengine
from ltxengine import Condition, TwoStage

from . import fixtures as fx

diffusers = pytest.importorskip("diffusers")
from diffusers.pipelines.ltx.pipeline_ltx_condition import LTXVideoCondition  # noqa: E402

TOL = 1e-4
PROMPT = "a red car drives fast across the street at night"
NEGATIVE = "blurry video"
BASE = dict(prompt=PROMPT, negative_prompt=NEGATIVE, height=64, width=96, num_frames=17, num_inference_steps=3,
            guidance_scale=3.0)
SEEDS = (0, 1234)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("parity")


@pytest.fixture(scope="module")
def folders(root):
    return {name: fx.build_pipeline_folder(root, name) for name in fx.CONFIGS}


@pytest.fixture(scope="module")
def engines(folders, root):
    out = {}
    for name, folder in folders.items():
        up = fx.build_upsampler_folder(root, name)
        out[name] = ltxengine.Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, latent_upsampler=up)
        out[name].upsampler_folder = up
    return out


def check(result, expected):
    ours = torch.from_numpy(result.frames)
    assert ours.shape == expected.shape, (ours.shape, expected.shape)
    err = (ours - expected).abs().max().item()
    assert err <= TOL, f"max abs frame error {err:.3e} > {TOL}"
    # frames carry content (not all clamped), else equality would be vacuous
    assert 0.05 < expected.std().item() and ((expected > 0) & (expected < 1)).float().mean() > 0.5
    return err


T2V_CASES = {
    "plain": dict(),
    "rescale+decode-noise": dict(guidance_rescale=0.7, decode_timestep=0.05, decode_noise_scale=0.025),
    "no-cfg+ntsc": dict(guidance_scale=1.0, frame_rate=24000 / 1001, decode_timestep=0.03),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("case", T2V_CASES)
@pytest.mark.parametrize("name", list(fx.CONFIGS))
def test_text_to_video(engines, folders, name, case, seed):
    kw = {**BASE, **T2V_CASES[case]}
    expected = fx.reference_t2v(folders[name], seed, **kw)
    result = engines[name].generate(seed=seed, **kw)
    check(result, expected)
    assert result.latents.shape[2:] == (3, 2, 3)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("name", list(fx.CONFIGS))
def test_image_to_video(engines, folders, name, seed):
    image = fx.make_image(64, 96, seed + 7)
    kw = dict(BASE, guidance_rescale=0.5, decode_timestep=0.05, decode_noise_scale=0.025)
    expected = fx.reference_i2v(folders[name], image, seed, **kw)
    check(engines[name].generate(image=image, seed=seed, **kw), expected)


def test_image_to_video_resizes_like_diffusers(engines, folders):
    """An image of another size is resized (nearest, as diffusers does for tensors)."""
    image = fx.make_image(40, 50, 3)
    expected = fx.reference_i2v(folders["tiny-095"], image, 0, **BASE)
    check(engines["tiny-095"].generate(image=image, seed=0, **BASE), expected)


def _conditions(kind, seed):
    img, img2 = fx.make_image(64, 96, seed + 1), fx.make_image(64, 96, seed + 2)
    video9, video17 = fx.make_video(9, 64, 96, seed + 3), fx.make_video(17, 64, 96, seed + 4)
    specs = {
        # first frame pinned by an image, a clip appended at frame 8 (prefix tokens + noise)
        "image0+video8": [dict(image=img, frame_index=0), dict(video=video9, frame_index=8, strength=0.8)],
        # a keyframe image at frame 8, and a 17-frame clip at 0 with partial strength
        "video0+image8": [dict(video=video17, frame_index=0, strength=0.6), dict(image=img2, frame_index=8,
                                                                                 strength=0.7)],
        # a long clip at frame 1: trimmed to 9 frames, 2 prefix latents appended
        "video1-trimmed": [dict(video=video17, frame_index=1, strength=0.9)],
    }[kind]
    return [LTXVideoCondition(**s) for s in specs], [Condition(**s) for s in specs]


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("kind", ["image0+video8", "video0+image8", "video1-trimmed"])
@pytest.mark.parametrize("name", ["tiny-095", "tiny-095b"])
def test_conditions(engines, folders, name, kind, seed):
    theirs, ours = _conditions(kind, seed)
    kw = dict(BASE, guidance_rescale=0.7, decode_timestep=0.05, decode_noise_scale=0.025)
    expected = fx.reference_condition(folders[name], theirs, seed, **kw)
    check(engines[name].generate(conditions=ours, seed=seed, **kw), expected)


@pytest.mark.parametrize("name", ["tiny-095", "tiny-095b"])
def test_condition_pipeline_text_only_and_video_to_video(engines, folders, name):
    """Text only through the condition pipeline (linear-quadratic schedule, masked T5), then
    video-to-video: given latents re-noised at the first kept sigma (denoise_strength < 1)."""
    kw = dict(BASE, image_cond_noise_scale=0.0)
    expected = fx.reference_condition(folders[name], None, 5, **kw)
    first = engines[name].generate(seed=5, pipeline="condition", **kw)
    check(first, expected)
    kw2 = dict(kw, denoise_strength=0.6, num_inference_steps=5, decode_timestep=0.05)
    expected = fx.reference_condition(folders[name], None, 6, latents=first.latents, **kw2)
    check(engines[name].generate(seed=6, latents=first.latents, **kw2), expected)


TWO_STAGE_CASES = {
    # diffusers' 0.9.7-dev example: CFG + rescale in both stages, adain, strength 0.5 refinement
    "dev": (dict(num_inference_steps=4, guidance_scale=3.0, guidance_rescale=0.7),
            dict(adain_factor=1.0, tone_map_compression_ratio=0.0),
            dict(denoise_strength=0.5, num_inference_steps=4, guidance_scale=3.0, guidance_rescale=0.7)),
    # the distilled recipe: fixed timesteps, no guidance, tone map 0.6, strength 0.999
    "distilled": (dict(timesteps=list(ltxengine.DISTILLED_STAGE1_TIMESTEPS), guidance_scale=1.0),
                  dict(adain_factor=1.0, tone_map_compression_ratio=0.6),
                  dict(denoise_strength=0.999, timesteps=list(ltxengine.DISTILLED_STAGE2_TIMESTEPS),
                       guidance_scale=1.0)),
}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("with_image", [False, True])
@pytest.mark.parametrize("case", TWO_STAGE_CASES)
@pytest.mark.parametrize("name", ["tiny-095", "tiny-095b"])
def test_two_stage(engines, folders, name, case, with_image, seed):
    s1, up, s2 = TWO_STAGE_CASES[case]
    image = fx.make_image(64, 64, seed) if with_image else None
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=17, image_cond_noise_scale=0.05)
    decode = dict(decode_timestep=0.05, decode_noise_scale=0.025)
    stage1 = dict(common, height=64, width=64, **s1)
    if with_image:
        stage1["conditions"] = [LTXVideoCondition(image=image, frame_index=0)]
    # the recipe repeats image_cond_noise_scale in its stage-2 call; TwoStage inherits it
    ref = fx.reference_two_stage(folders[name], engines[name].upsampler_folder, seed, stage1, up,
                                 dict(s2, image_cond_noise_scale=0.05, **decode))
    two = TwoStage(downscale_factor=0.5, adain_factor=up["adain_factor"],
                   tone_map_compression_ratio=up["tone_map_compression_ratio"],
                   denoise_strength=s2["denoise_strength"], num_inference_steps=s2.get("num_inference_steps", 10),
                   timesteps=s2.get("timesteps"), guidance_scale=s2["guidance_scale"],
                   guidance_rescale=s2.get("guidance_rescale"))
    result = engines[name].generate(image=image, height=128, width=128, two_stage=two, seed=seed,
                                    **common, **decode, **s1)
    check(result, ref.frames)
    assert result.frames.shape == (17, 128, 128, 3)


def test_two_stage_resizes_to_requested_size(engines):
    """A downscale factor whose doubled size misses the request: frames are resized bilinearly."""
    eng = engines["tiny-095"]
    kw = dict(prompt=PROMPT, num_frames=9, num_inference_steps=2, guidance_scale=1.0, seed=0)
    result = eng.generate(height=96, width=160, two_stage=TwoStage(downscale_factor=2 / 3, num_inference_steps=2,
                                                                   denoise_strength=1.0), **kw)
    # stage 1 at 64x96 (96*2/3, 160*2/3=106 -> 96), refined at 128x192, resized to 96x160
    assert result.frames.shape == (9, 96, 160, 3)
    assert result.latents.shape[3:] == (4, 6)


def test_parity_is_sensitive(engines, folders):
    """The tolerance is meaningful: one changed seed or one changed argument is far outside it."""
    kw = dict(BASE, decode_timestep=0.05, decode_noise_scale=0.025)
    expected = fx.reference_t2v(folders["tiny-095"], 0, **kw)
    eng = engines["tiny-095"]
    for changed in (dict(seed=1), dict(seed=0, frame_rate=24), dict(seed=0, guidance_scale=3.5),
                    dict(seed=0, decode_noise_scale=0.05)):
        frames = torch.from_numpy(eng.generate(**{**kw, **changed}).frames)
        assert (frames - expected).abs().max().item() > 1e-2, changed


def test_one_engine_many_generations(engines, folders):
    """Reusing one engine across modes and sizes changes nothing: repeat the first call last."""
    eng = engines["tiny-095b"]
    first = eng.generate(seed=3, **BASE)
    eng.generate(image=fx.make_image(64, 64, 0), seed=3, **dict(BASE, height=64, width=64))
    eng.generate(conditions=_conditions("image0+video8", 0)[1], seed=3, **BASE)
    again = eng.generate(seed=3, **BASE)
    assert np.array_equal(first.frames, again.frames)


def test_bfloat16_engine_stays_near_float32(folders, engines):
    """The default deployment dtype runs every mode and stays close to fp32. Measured mean |diff|
    0.013 (max ~0.1) on tiny-095b: bf16 keeps 8 mantissa bits through the transformer and VAE.
    The bound is ~2x that; a missing cast or a wrong-dtype draw moves frames by > 0.1 on average."""
    bf16 = ltxengine.Engine.from_pretrained(folders["tiny-095b"], device="cpu", dtype=torch.bfloat16,
                                            latent_upsampler=engines["tiny-095b"].upsampler_folder)
    fp32 = engines["tiny-095b"]
    kw = dict(BASE, decode_timestep=0.05, seed=0)
    calls = [dict(), dict(image=fx.make_image(64, 96, 0)),
             dict(height=128, width=128, two_stage=TwoStage(downscale_factor=0.5, num_inference_steps=3,
                                                            denoise_strength=0.5))]
    for extra in calls:
        a, b = fp32.generate(**{**kw, **extra}), bf16.generate(**{**kw, **extra})
        assert b.frames.dtype == np.float32 and b.latents.dtype == torch.float32
        assert np.abs(a.frames - b.frames).mean() < 0.03
