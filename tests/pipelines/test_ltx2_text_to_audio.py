"""pipeline="text-to-audio" on an audio-only engine (Engine.from_pretrained(..., modalities=("audio",))),
against Lightricks' t2a_one_stage, which ltx-pipelines 1.0.0 does not have.

The reference is therefore a transcription of its loop (ltx-pipelines @400fd31: t2a_one_stage.py
T2AOneStagePipeline.__call__ -> DiffusionStage.__call__ (blocks.py) with video=None -> FactoryGuidedDenoiser
/ _guided_denoise (denoisers.py) -> euler_denoising_loop + EulerDiffusionStep -> AudioDecoder), run on
ltx-core 1.0.0's pieces where 1.0.0 has them: LTXModel(model_type=AudioOnly) built as
LTXAudioOnlyModelConfigurator builds it (tests/models/ltx2_audio_only_fixtures.py) inside X0Model,
GaussianNoiser on a zero LatentState of the packed shape
(1, T, C x mel bins), AudioPatchifier positions, MultiModalGuider(params, negative_context).calculate
(the same formula at @400fd31), EulerDiffusionStep. Each guidance pass runs as its own call (the
reference batches them; rows are independent). Shared with the engine, and tested elsewhere against
diffusers / ltx-core: the prompt contexts (the engine's Gemma + audio connectors, encoded once for both),
the sigmas (see reference_t2a) and the audio decode (ltx-core's audio VAE needs torchaudio, absent here).

Tolerance: 1e-4 x max(1, |reference|) (the house's): fp32 on the CPU, same seed; the same arithmetic in
another order measures ~1e-6 per step (the audio-only step matches ltx-core to 5e-6 of its scale).
"""

from __future__ import annotations

import wave

import numpy as np
import pytest
import torch

from ltxengine.ltx2.denoise import DEFAULT_NEGATIVE_PROMPT, GuidanceParams, ltx2_sigmas
from tests.helpers import assert_close_scaled
from tests.oracles import ltx_core
from tests.pipelines.ltx2_fixtures import SEQ, build_pipeline, build_pipeline_version

REL = 1e-4
PROMPT = "a dog barks at the sea"
FRAMES, FPS, STEPS = 17, 24, 4


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_pipeline(tmp_path_factory.mktemp("t2a"))[2]


@pytest.fixture(scope="module")
def engine(folder):
    from ltxengine import Engine
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, modalities=("audio",))


@pytest.fixture(scope="module", params=["2.0", "2.3", "2.5"])
def version_engine(request, engine, tmp_path_factory):
    """The audio-only engine of each release's tiny pipeline (2.3: V2 feature projection, gated attention,
    text K/V modulation; 2.5: those with Gemma 4)."""
    if request.param == "2.0":
        return engine
    from ltxengine import Engine
    folder = build_pipeline_version(tmp_path_factory.mktemp("t2a" + request.param), request.param)[2]
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, modalities=("audio",))


def reference_t2a(engine, params: GuidanceParams, seed: int, negative: str = DEFAULT_NEGATIVE_PROMPT):
    """The transcribed t2a_one_stage loop -> final audio tokens (1, T, C x M) float32."""
    from tests.models.ltx2_audio_only_fixtures import ltx_core_audio_only
    model_mod = ltx_core("model.transformer.model")
    modality = ltx_core("model.transformer.modality")
    pert = ltx_core("guidance.perturbations")
    guiders = ltx_core("components.guiders")
    types = ltx_core("types")
    tr = engine.transformer
    x0_model = model_mod.X0Model(ltx_core_audio_only(tr.config, tr.state_dict())).eval()
    # contexts: [negative, positive] through the engine's text path (shared, see the module docstring)
    _, audio_ctx, _ = engine.text_encoder.encode([negative, PROMPT], SEQ)
    positive, negative_ctx = audio_ctx[1:], audio_ctx[:1]  # 2.0: the model projects them (caption projection)
    # the schedule: LTX2Scheduler().execute(steps) in the reference, ltx2_sigmas here (the same formula in
    # float64, within 5e-7: test_ltx2_reference.test_schedule_matches_ltx_core_scheduler); both sides take
    # ours, since its first sigma 1.0 against ltx-core's float32 0.9999995 moves the timestep embedding
    # (x1000) by 5e-4 and the tiny model's output by ~1e-4
    sigmas = ltx2_sigmas(STEPS, 4096)
    acfg = engine.audio_vae.config
    shape = types.AudioLatentShape(batch=1, channels=acfg.latent_channels, frames=round(FRAMES / FPS * 25),
                                   mel_bins=acfg.latent_mel_bins)
    positions = ltx_core("components.patchifiers").AudioPatchifier(patch_size=1).get_patch_grid_bounds(
        shape, torch.device("cpu")).float()
    zeros = torch.zeros(1, shape.frames, shape.channels * shape.mel_bins)
    state = types.LatentState(latent=zeros, denoise_mask=torch.ones(1, shape.frames, 1), positions=positions,
                              clean_latent=zeros.clone())
    state = ltx_core("components.noisers").GaussianNoiser(torch.Generator().manual_seed(seed))(state)
    guider = guiders.MultiModalGuider(
        params=guiders.MultiModalGuiderParams(cfg_scale=params.cfg, stg_scale=params.stg,
                                              stg_blocks=list(params.stg_blocks), rescale_scale=params.rescale,
                                              modality_scale=1.0, skip_step=params.skip_step),
        negative_context=negative_ctx)
    T = pert.PerturbationType
    step = ltx_core("components.diffusion_steps").EulerDiffusionStep()
    x = state.latent
    last = None
    for i in range(len(sigmas) - 1):
        if guider.should_skip_step(i):
            x0 = last
        else:
            def run(ctx, perturbations=()):
                m = modality.Modality(latent=x, sigma=sigmas[i].expand(1), timesteps=state.denoise_mask * sigmas[i],
                                      positions=positions, context=ctx, context_mask=None)
                config = pert.BatchedPerturbationConfig([pert.PerturbationConfig(list(perturbations))])
                with torch.no_grad():
                    return x0_model(None, m, config)[1]
            cond = run(positive)
            uncond = run(negative_ctx) if guider.do_unconditional_generation() else 0.0
            ptb = run(positive, [pert.Perturbation(T.SKIP_AUDIO_SELF_ATTN, list(params.stg_blocks))]) \
                if guider.do_perturbed_generation() else 0.0
            x0 = guider.calculate(cond, uncond, ptb, 0.0)
        last = x0
        x0 = x0 * state.denoise_mask + state.clean_latent * (1 - state.denoise_mask)  # post_process_latent
        x = step.step(x, x0, sigmas, i)
    return x


@pytest.mark.parametrize("case", ["default", "cfg_stg_rescale", "skip_step"])
def test_matches_the_reference_loop(version_engine, case):
    """The engine's text-to-audio equals the transcribed reference: final latents and the decoded waveform."""
    from dataclasses import replace

    from ltxengine.ltx2.request import clip_blocks
    from ltxengine.ltx2.stages import decode_audio
    from ltxengine.models.audio_vae import unpack_audio_latents
    engine = version_engine
    kw = {}
    if case == "default":  # the release's audio guidance with its modality term off (cfg 7, STG, rescale 0.7)
        params = replace(clip_blocks(engine.release.guidance("audio"), engine.transformer.config.num_layers),
                         modality=1.0)
        assert params.uncond and params.perturbed and params.rescale
    elif case == "cfg_stg_rescale":
        params = GuidanceParams(cfg=4.0, stg=0.5, stg_blocks=(0,), rescale=0.3)
        kw = dict(audio_guidance=params)
    else:
        params = GuidanceParams(cfg=3.0, stg=0.0, skip_step=1)
        kw = dict(audio_guidance=params)
    seed = 11
    result = engine.generate(PROMPT, num_frames=FRAMES, frame_rate=FPS, num_inference_steps=STEPS, seed=seed,
                             max_sequence_length=SEQ, **kw)
    expected = reference_t2a(engine, params, seed)
    channels = engine.audio_vae.config.latent_channels
    assert result.frames is None and result.video is None
    assert_close_scaled(result.latents, unpack_audio_latents(expected, channels), REL, f"{case} latents")
    assert result.sample_rate == engine.vocoder.config.output_sampling_rate
    waveform = decode_audio(engine, expected)
    assert_close_scaled(torch.from_numpy(result.audio), torch.from_numpy(waveform), REL, f"{case} waveform")
    # control: another seed moves the latents far beyond the tolerance
    other = reference_t2a(engine, params, seed + 1)
    assert (unpack_audio_latents(other, channels) - result.latents).abs().max() > 1e-2


def test_the_video_weights_are_never_read(folder, monkeypatch):
    """modalities=("audio",) opens no video VAE file and reads no tensor of the video stream, the audio<->video
    attention or the video connector; the full engine reads them (control)."""
    from ltxengine.loading import safetensors_io
    from ltxengine.loading.ltx2 import load_ltx2
    read, opened = [], []
    original_read, original_init = safetensors_io.SafetensorsFile.read, safetensors_io.SafetensorsFile.__init__

    def recording_read(self, key, *args, **kwargs):
        read.append((self.path.parent.name, key))
        return original_read(self, key, *args, **kwargs)

    def recording_init(self, path, *args, **kwargs):
        opened.append(str(path))
        original_init(self, path, *args, **kwargs)

    monkeypatch.setattr(safetensors_io.SafetensorsFile, "read", recording_read)
    monkeypatch.setattr(safetensors_io.SafetensorsFile, "__init__", recording_init)
    ckpt = load_ltx2(folder, dtype=torch.float32, modalities=("audio",))
    assert ckpt.vae is None
    assert not [p for p in opened if "/vae/" in p]
    dit = [k for comp, k in read if comp == "transformer"]
    text = [k for comp, k in read if comp == "connectors"]
    assert dit and text
    assert not [k for k in dit if not k.startswith(("audio_", "transformer_blocks."))]
    assert not [k for k in dit if "audio" not in k or "a2v" in k or "v2a" in k or "video" in k]
    assert not [k for k in text if "video" in k]
    assert sorted(dit) == sorted(ckpt.transformer.state_dict())
    read.clear()
    full = load_ltx2(folder, dtype=torch.float32)
    assert len([k for comp, k in read if comp == "transformer"]) == len(full.transformer.state_dict()) > len(dit)


def test_corrupt_video_tensors_still_load(tmp_path):
    """A bundle whose video tensors are corrupt (wrong shapes: the full load refuses them by name) loads
    audio-only, strictly: a missing audio tensor is still an error naming it."""
    import json

    from safetensors.torch import save_file

    from ltxengine.loading import CheckpointError
    from ltxengine.loading.ltx2 import load_ltx2
    from tests.models.ltx2_transformer_fixtures import original_section, pair, to_original
    _, ours, cfg = pair("split64")
    tensors = {"model.diffusion_model." + to_original(k): v.contiguous() for k, v in ours.state_dict().items()}
    meta = {"config": json.dumps({"transformer": original_section(cfg)}), "model_version": "2.0.0"}
    video = "model.diffusion_model.transformer_blocks.0.attn1.to_q.weight"
    cross = "model.diffusion_model.transformer_blocks.0.audio_to_video_attn.to_k.weight"
    path = tmp_path / "corrupt.safetensors"
    save_file(dict(tensors, **{video: torch.zeros(3), cross: torch.zeros(5)}), str(path), metadata=meta)
    with pytest.raises(CheckpointError, match="to_q"):
        load_ltx2(path, dtype=torch.float32, components=("transformer",))
    ckpt = load_ltx2(path, dtype=torch.float32, components=("transformer",), modalities=("audio",))
    assert type(ckpt.transformer).__name__ == "LTX2AudioTransformer"
    for key, value in ckpt.transformer.state_dict().items():
        assert torch.equal(value, ours.state_dict()[key]), key
    missing = {k: v for k, v in tensors.items() if not k.endswith("transformer_blocks.1.audio_attn2.to_v.weight")}
    save_file(missing, str(tmp_path / "missing.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="audio_attn2.to_v.weight"):
        load_ltx2(tmp_path / "missing.safetensors", dtype=torch.float32, components=("transformer",),
                  modalities=("audio",))


def test_other_pipelines_are_refused(engine):
    with pytest.raises(ValueError, match="holds the audio stream only"):
        engine.generate(PROMPT, pipeline="one-stage", max_sequence_length=SEQ)


def test_a_full_engine_runs_it_on_its_audio_stream(engine, folder):
    """pipeline="text-to-audio" on a full engine (its audio stream as a view) equals the audio-only engine's
    result bit for bit: the same weights, the same computation."""
    from ltxengine import Engine
    full = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    kw = dict(num_frames=FRAMES, frame_rate=FPS, num_inference_steps=STEPS, seed=5, max_sequence_length=SEQ)
    got = full.generate(PROMPT, pipeline="text-to-audio", **kw)
    expected = engine.generate(PROMPT, **kw)
    assert got.frames is None and torch.equal(got.latents, expected.latents)
    assert np.array_equal(got.audio, expected.audio)


@pytest.mark.parametrize("kwargs, match", [
    (dict(image=np.zeros((64, 64, 3), np.uint8)), "generates no video to condition"),
    (dict(audio=np.zeros((1, 48000), np.float32), audio_sample_rate=24000, num_frames=FRAMES),
     "audio= is the input of audio-to"),
    (dict(guidance_scale=5.0), "video_guidance: pipeline='text-to-audio' generates no video"),
    (dict(audio_modality_scale=2.0), "audio_modality_scale must be 1"),
    (dict(sampler="res2s"), "samples with Euler"),
    (dict(shift_tokens=None), "no video tokens"),
    (dict(num_frames=18), "8k\\+1"),
    (dict(pipeline="two-stage"), "holds the audio stream only"),
])
def test_arguments_it_does_not_read_are_refused(engine, kwargs, match):
    with pytest.raises(ValueError, match=match):
        engine.generate(PROMPT, max_sequence_length=SEQ, **kwargs)


def test_vae_tiling_is_refused(engine):
    from ltxengine.models.video_vae import TilingConfig
    with pytest.raises(ValueError, match="vae_tiling: pipeline='text-to-audio' decodes no video"):
        engine.generate(PROMPT, max_sequence_length=SEQ, vae_tiling=TilingConfig())


def test_load_options_are_checked(folder):
    from ltxengine import Engine
    with pytest.raises(ValueError, match="modalities must be one of"):
        Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, modalities=("video",))
    with pytest.raises(ValueError, match="latent_upsampler: an audio-only engine"):
        Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, modalities=("audio",),
                               latent_upsampler=folder / "latent_upsampler")
    with pytest.raises(ValueError, match="offload: an audio-only engine"):
        Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, modalities=("audio",),
                               offload=("vae_encoder",))


def test_plan_counts_only_what_is_loaded(engine, folder):
    from ltxengine import Engine
    from ltxengine.executor.plan import module_bytes
    plan = engine.plan(PROMPT, num_frames=FRAMES, num_inference_steps=STEPS, max_sequence_length=SEQ)
    held = module_bytes(engine.transformer, engine.connectors, engine.audio_vae, engine.vocoder,
                        engine.text_encoder.model)
    assert [p.name for p in plan.phases] == ["text", "denoise", "decode"]
    assert plan.phases[1].weights_bytes == held and plan.phases[1].transient_bytes > 0
    full = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    full_plan = full.plan(PROMPT, num_frames=FRAMES, pipeline="one-stage", height=64, width=64,
                          num_inference_steps=STEPS, max_sequence_length=SEQ)
    assert full_plan.phases[1].weights_bytes > held


def test_save_writes_wav(engine, tmp_path):
    result = engine.generate(PROMPT, num_frames=FRAMES, frame_rate=FPS, num_inference_steps=2, seed=0,
                             max_sequence_length=SEQ)
    path = result.save(tmp_path / "out.wav")
    with wave.open(str(path), "rb") as f:
        assert (f.getframerate(), f.getnchannels(), f.getsampwidth()) == (result.sample_rate, 2, 2)
        pcm = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2").reshape(-1, 2).T
    assert np.array_equal(pcm, (np.clip(result.audio, -1, 1) * 32767.0).astype(np.int16))
    with pytest.raises(ValueError, match=r"\.wav"):
        result.save(tmp_path / "out.mp4")
