"""pipeline="retake" against Lightricks' own code: ltx-pipelines 1.0.0's retake (its
TemporalRegionMask on create_noised_state with the encoded source as the initial latent, the same
seeded GaussianNoiser, its simple / multimodal-guider denoising functions and Euler loop) on
ltx-core's X0Model holding our weights, fed the source latents our engine encoded (ltx-core's audio
encoder needs torchaudio; its video encoder is compared on its own). Draws are the reference's:
packed video noise, then packed audio noise, from one generator seeded with the seed."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.ltx2.audio_input import load_audio_condition
from ltxengine.ltx2.denoise import DISTILLED_SIGMAS, GuidanceParams, ltx2_sigmas
from ltxengine.ltx2.recipes import retake
from ltxengine.ltx2.stages import encode_text
from ltxengine.media import write_mp4
from tests.helpers import assert_close_scaled
from tests.models.ltx2_transformer_fixtures import ltx_core_model
from tests.oracles import ltx_core, ltx_pipelines
from tests.pipelines.ltx2_fixtures import LAYERS, SEQ, build_pipeline, build_pipeline_version

# relative to the output scale: fp32, 8 (or 3 guided) chained transformer calls in another op order,
# as test_ltx2_reference's stage (2e-5); the bound is 1e-4
REL = 2e-5
N, H, W, FPS, SEED, RATE = 17, 64, 96, 24, 9, 16000
PROMPT, NEGATIVE = "a cat sits on the mat", "red car"
GUIDED_V = GuidanceParams(cfg=3.0, stg=1.0, stg_blocks=(LAYERS - 1,), rescale=0.7, modality=3.0)
GUIDED_A = GuidanceParams(cfg=7.0, stg=1.0, stg_blocks=(LAYERS - 1,), rescale=0.7, modality=3.0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    _, _, folder = build_pipeline(tmp_path_factory.mktemp("ltx2retake"))
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)


def _clip(frames: int = N, height: int = H, width: int = W):
    rng = np.random.default_rng(3)
    video = rng.integers(0, 256, (frames, height, width, 3), dtype=np.uint8)
    wave = (0.3 * rng.standard_normal((2, RATE))).astype(np.float32)  # 1 s: longer than the clip
    return video, wave


def _request(engine, **kw):
    """generate()'s checked request for pipeline='retake' on the tiny clip (nothing runs)."""
    args = {k: p.default for k, p in inspect.signature(engine.generate).parameters.items()}
    video, wave = _clip()
    args.update(self=engine, prompt=PROMPT, negative_prompt=NEGATIVE, pipeline="retake", height=H, width=W,
                num_frames=N, frame_rate=FPS, max_sequence_length=SEQ, seed=SEED, video=video, audio=wave,
                audio_sample_rate=RATE, start_time=0.4, end_time=0.6)
    args.update(kw)
    return engine._request(args)


def _ours(engine, a):
    texts = encode_text(engine, a, a.video_guidance.uncond or a.audio_guidance.uncond)
    with torch.no_grad():
        src_v, src_a = retake.source_latents(engine, a)
        out = retake.denoise(engine, a, texts, src_v, src_a, torch.Generator().manual_seed(SEED), SEED)
    return (src_v, src_a), out


def _reference(engine, a, src_v, src_a):
    """ltx-pipelines 1.0.0 RetakePipeline.__call__ from the encoded latents on: states, denoising, cleanup."""
    rt, helpers, samplers = ltx_pipelines("retake"), ltx_pipelines("utils.helpers"), ltx_pipelines("utils.samplers")
    guiders, noisers, steps = (ltx_core("components.guiders"), ltx_core("components.noisers"),
                               ltx_core("components.diffusion_steps"))
    types, tools, patch = ltx_core("types"), ltx_core("tools"), ltx_core("components.patchifiers")
    x0model = ltx_core("model.transformer.model").X0Model(ltx_core_model(engine.transformer.config,
                                                                        engine.transformer.state_dict()))
    _, c, f, h, w = src_v.shape
    acfg = engine.audio_vae.config
    fps = float(a.fps)
    vtools = tools.VideoLatentTools(patch.VideoLatentPatchifier(1), types.VideoLatentShape(1, c, f, h, w), fps)
    atools = tools.AudioLatentTools(patch.AudioPatchifier(1), types.AudioLatentShape(
        1, acfg.latent_channels, a.audio_frames, acfg.latent_mel_bins))

    def region(regenerate):  # as RetakePipeline builds it: (0, 0) when the modality is not regenerated
        return rt.TemporalRegionMask(a.start_time if regenerate else 0.0, a.end_time if regenerate else 0.0, fps)
    noiser = noisers.GaussianNoiser(torch.Generator().manual_seed(SEED))
    cpu = torch.device("cpu")
    vstate = helpers.create_noised_state(vtools, [region(a.regenerate_video)], noiser, torch.float32, cpu, 1.0, src_v)
    a_init = None if src_a is None else src_a.unflatten(2, (acfg.latent_channels, -1)).transpose(1, 2)
    astate = helpers.create_noised_state(atools, [] if src_a is None else [region(a.regenerate_audio)], noiser,
                                         torch.float32, cpu, 1.0, a_init)
    v, au, _ = engine.text_encoder.encode([PROMPT, NEGATIVE], SEQ)
    vp, ap = a.video_guidance, a.audio_guidance
    if not (vp.uncond or vp.perturbed or vp.isolated or ap.uncond or ap.perturbed or ap.isolated):
        fn = helpers.simple_denoising_func(v[:1], au[:1], x0model)
    else:
        def params(p):
            return guiders.MultiModalGuiderParams(cfg_scale=p.cfg, stg_scale=p.stg, stg_blocks=list(p.stg_blocks),
                                                  rescale_scale=p.rescale, modality_scale=p.modality)
        fn = helpers.multi_modal_guider_denoising_func(guiders.MultiModalGuider(params(vp), v[1:]),
                                                       guiders.MultiModalGuider(params(ap), au[1:]), v[:1], au[:1],
                                                       x0model)
    sigmas = torch.tensor(a.sigmas if a.sigmas is not None else DISTILLED_SIGMAS, dtype=torch.float32)
    with torch.no_grad():
        vstate, astate = samplers.euler_denoising_loop(sigmas, vstate, astate, steps.EulerDiffusionStep(), fn)
    vstate = vtools.unpatchify(vtools.clear_conditioning(vstate))
    return vstate.latent, astate.latent


CASES = {
    "distilled": {},
    "full-model": dict(num_inference_steps=3, video_guidance=GUIDED_V, audio_guidance=GUIDED_A, start_time=0.05,
                       end_time=0.3),
    "video-only": dict(regenerate_audio=False),
    "audio-only": dict(regenerate_video=False, start_time=0.0, end_time=0.2),
    "clip-without-audio": dict(audio=None, audio_sample_rate=None),
}


@pytest.mark.parametrize("case", list(CASES))
def test_retake_matches_ltx_pipelines(engine, case):
    a = _request(engine, **CASES[case])
    (src_v, src_a), (v, au) = _ours(engine, a)
    ref_v, ref_a = _reference(engine, a, src_v, src_a)
    err_v = assert_close_scaled(v, ref_v, REL, f"{case} video")
    err_a = assert_close_scaled(au, ref_a, REL, f"{case} audio")
    print(f"{case}: max abs error video {err_v:.2e}, audio {err_a:.2e}")
    assert (v - src_v).abs().max() > 0.01 if a.regenerate_video else torch.equal(v, src_v)


def test_kept_region_is_the_source_exactly(engine):
    """[0.4, 0.6) s of 17 frames at 24 fps: latent frames 0 ([0, 1/24)) and 1 ([1/24, 9/24)) are kept,
    2 ([9/24, 17/24)) regenerated; audio latent i spans [max(0, 4i - 3), 4i + 1) / 100 s, so 10..15
    are regenerated and 0..9, 16, 17 kept. The kept tokens stay the encoded source bit for bit."""
    a = _request(engine)
    vm, am = retake.region_masks(engine, a, 3, 2, 3)
    assert vm[0, :, 0].tolist() == [0.0] * 12 + [1.0] * 6
    assert [i for i in range(a.audio_frames) if am[0, i, 0] == 1] == list(range(10, 16))
    (src_v, src_a), (v, au) = _ours(engine, a)
    assert torch.equal(v[:, :, :2], src_v[:, :, :2])
    assert (v[:, :, 2] - src_v[:, :, 2]).abs().min() > 0  # every regenerated value moved
    kept = [i for i in range(a.audio_frames) if not 10 <= i < 16]
    assert torch.equal(au[:, kept], src_a[:, kept])
    assert (au[:, 10:16] - src_a[:, 10:16]).abs().min() > 0


@pytest.mark.parametrize("version", ["2.3", "2.5"])
def test_retake_on_later_releases_keeps_the_source(tmp_path, version):
    """The same recipe on the 2.3 / 2.5 layouts (ltx-core 1.0.0 predates them: no parity here). 2.5's
    distilled default sampler is Euler ancestral; the reference's retake samples with Euler on every release."""
    folder = build_pipeline_version(tmp_path, version)[2]
    later = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    a = _request(later)
    assert a.sampler == "euler" and a.sigmas is None
    (src_v, src_a), (v, au) = _ours(later, a)
    kept = [i for i in range(a.audio_frames) if not 10 <= i < 16]
    assert torch.equal(v[:, :, :2], src_v[:, :, :2]) and torch.equal(au[:, kept], src_a[:, kept])
    assert (v[:, :, 2] - src_v[:, :, 2]).abs().min() > 0 and (au[:, 10:16] - src_a[:, 10:16]).abs().min() > 0


@pytest.mark.parametrize("fps", [24, 25, 30000 / 1001])
@pytest.mark.parametrize("region", [(0.0, 0.1), (9 / 24, 0.5), (0.2, 17 / 24), (0.33, 0.34), (0.0, 0.7)])
def test_region_masks_equal_temporal_region_mask(engine, fps, region):
    """Token time bounds and the overlap test as ltx-pipelines' TemporalRegionMask, boundaries included."""
    rt, tools, patch, types = (ltx_pipelines("retake"), ltx_core("tools"), ltx_core("components.patchifiers"),
                               ltx_core("types"))
    f, h, w, t = 5, 2, 3, 30
    a = SimpleNamespace(fps=fps, start_time=region[0], end_time=region[1], regenerate_video=True,
                        regenerate_audio=True, audio_frames=t)
    vm, am = retake.region_masks(engine, a, f, h, w)
    item = rt.TemporalRegionMask(region[0], region[1], fps)
    vtools = tools.VideoLatentTools(patch.VideoLatentPatchifier(1), types.VideoLatentShape(1, 8, f, h, w), fps)
    atools = tools.AudioLatentTools(patch.AudioPatchifier(1), types.AudioLatentShape(1, 8, t, 16))
    for ours, tl in ((vm, vtools), (am, atools)):
        ref = item.apply_to(tl.create_initial_state("cpu", torch.float32), tl).denoise_mask
        assert torch.equal(ours, ref), (fps, region)
        assert 0 < ours.sum() < ours.numel() or region == (0.0, 0.7)


def test_source_video_latents_equal_ltx_core_encoder(engine):
    """The source frames as the reference loads them (uint8 / 127.5 - 1) through ltx-core's VideoEncoder
    holding our weights."""
    from tests.models.ltx2_video_vae_fixtures import ltx_core_halves
    a = _request(engine)
    encoder, _ = ltx_core_halves(engine.vae)
    pixels = torch.from_numpy(a.video).float().permute(3, 0, 1, 2)[None] / 127.5 - 1.0
    with torch.no_grad():
        ref = encoder(pixels)
        ours, _ = retake.source_latents(engine, a)
    assert_close_scaled(ours, ref, 1e-5, "source video latents")


def test_source_audio_is_cut_or_zero_padded(engine):
    """As ltx-pipelines' retake: the whole track's latents cut to the clip (equal to the audio-to-video
    encoding of the same waveform) or padded with zeros (normalized) past a short track's end."""
    _, wave = _clip()
    avae = engine.audio_vae
    tokens = retake.encode_audio(avae, torch.from_numpy(wave), RATE, 18)
    a2v = load_audio_condition(avae, wave, num_frames=N, frame_rate=FPS, sample_rate=RATE)
    assert torch.equal(tokens, a2v.float())
    short = retake.encode_audio(avae, torch.from_numpy(wave[:, :RATE // 4]), RATE, 18)
    whole = retake.encode_audio(avae, torch.from_numpy(wave[:, :RATE // 4]), RATE, 7)  # 0.25 s: 7 latents
    assert short.shape == (1, 18, whole.shape[2])
    assert torch.equal(short[:, :7], whole) and not short[:, 6].eq(0).all()
    assert short[:, 7:].eq(0).all()


def test_full_model_schedule_and_defaults(engine):
    a = _request(engine)
    assert a.sigmas is None and a.sampler == "euler" and a.regenerate_video and a.regenerate_audio
    assert a.video_guidance == GuidanceParams() and a.audio_guidance == GuidanceParams()
    full = _request(engine, num_inference_steps=5)
    assert full.sigmas == tuple(ltx2_sigmas(5).tolist())
    given = _request(engine, num_inference_steps=5, sigmas=[0.9, 0.5, 0.1])
    assert given.sigmas == (0.9, 0.5, 0.1)


def test_generate_from_a_file(engine, tmp_path):
    """The public path: an mp4 with its AAC audio track, read with PyAV; the result is the clip's size,
    and its latents keep the kept frames of the source (the decoded mp4 frames) exactly."""
    video, wave = _clip()
    path = write_mp4(tmp_path / "clip.mp4", video, FPS, audio=wave, sample_rate=RATE)
    out = engine.generate(PROMPT, pipeline="retake", video=str(path), start_time=0.4, end_time=0.6, height=H,
                          width=W, num_frames=N, frame_rate=FPS, max_sequence_length=SEQ, seed=SEED)
    assert out.frames.shape == (N, H, W, 3) and out.audio is not None
    a = _request(engine, video=str(path), audio=None, audio_sample_rate=None)
    assert a.audio is not None and a.audio_sample_rate == RATE
    src_v, _ = retake.source_latents(engine, a)
    assert torch.equal(out.latents[:, :, :2], src_v[:, :, :2])
    assert not torch.equal(out.latents[:, :, 2], src_v[:, :, 2])


def _bad_clips():
    video, wave = _clip()
    return [
        (dict(video=None), "video is required by pipeline='retake'"),
        (dict(start_time=None), "start_time is required by pipeline='retake'"),
        (dict(end_time=float("nan")), "end_time must be finite"),
        (dict(start_time=-0.1), "start_time must be >= 0"),
        (dict(start_time=0.5, end_time=0.5), r"start_time must be < end_time .* got start_time=0.5, end_time=0.5"),
        (dict(end_time=0.8), r"end_time must be <= the clip's duration 0.7083 s \(17 frames at 24 fps\), got "
                             r"end_time=0.8"),
        (dict(video=video[:16]), "video: the clip has 16 frames; retake needs 8k[+]1 .* trim it to 9 frames"),
        (dict(video=video[:, :, :80]), r"video: the clip is 80x64 \(width x height\); retake needs both multiples"),
        (dict(video=video[:9]), "video: the clip is 9 frames of 96x64 at 24 fps.* pass num_frames=9, height=64, "
                                "width=96, frame_rate=24; got num_frames=17"),
        (dict(video=video[..., 0]), r"video frames must be \(F, H, W, 3\) RGB, got shape \(17, 64, 96\)"),
        (dict(video=video.astype(np.float32)), r"video frames must be finite and in \[0, 1\]"),
        (dict(video=video.astype(np.int32)), "video frames must be uint8 or floating point"),
        (dict(video=[1, 2]), "video must be a file path or .* got list"),
        (dict(video="/nonexistent/clip.mp4", audio=None, audio_sample_rate=None), "video: no file at"),
        (dict(video=__file__, audio=None, audio_sample_rate=None),
         "video: cannot read .*test_ltx2_retake.py. as a video"),
        (dict(video="/nonexistent/clip.mp4"), "a file's own audio track is used"),
        (dict(regenerate_video="yes"), "regenerate_video must be a bool or None"),
        (dict(regenerate_video=False, regenerate_audio=False), "both False"),
        (dict(regenerate_audio=False, audio=None, audio_sample_rate=None), "regenerate_audio=False keeps"),
        (dict(image=video[0]), "pipeline='retake' regenerates a region of video= and takes no condition images"),
        (dict(num_inference_steps=1), "num_inference_steps must be >= 2, got 1"),
        (dict(audio=wave[:, :RATE // 2]), "audio is 0.500 s long .* shorter than the video's"),
    ]


@pytest.mark.parametrize("i", range(len(_bad_clips())))
def test_bad_input_is_a_named_error_before_any_work(engine, i):
    kw, match = _bad_clips()[i]
    with pytest.raises(ValueError, match=match):
        _request(engine, **kw)


def test_retake_arguments_are_refused_by_other_pipelines(engine):
    with pytest.raises(ValueError, match="start_time is read by pipeline='retake' only, got start_time=0.4 with "
                                         "pipeline='one-stage'"):
        _request(engine, pipeline="one-stage", video=None, audio=None, audio_sample_rate=None, end_time=None)
