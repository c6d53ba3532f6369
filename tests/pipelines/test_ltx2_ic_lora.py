"""pipeline="ic-lora" against its references, fp32 on CPU, the tiny LTX-2 folder.

End to end: diffusers' LTX2InContextPipeline is stage 1 (the IC-LoRA fused, the distilled sigmas
on a scheduler without shifting, no guidance unless given), then LTX2LatentUpsamplePipeline, then
LTX2Pipeline as stage 2 with the distilled LoRA instead of the IC-LoRA and the 3 distilled sigmas
(ltx-pipelines 1.0.0's ic_lora: stage 2 without the IC-LoRA and the references), one generator
throughout; the engine: one generate(pipeline="ic-lora") with the IC-LoRA loaded as an adapter whose
file metadata carries reference_downscale_factor. Budget 1e-4 absolute on frames in [0, 1] and on
waveforms, as the other LTX-2 parity tests (test_ltx2_parity.py) -- float32 reassociation only.

Attention strength: the engine builds ltx-core's log-space bias (log m, 0 -> the dtype's minimum);
diffusers 0.42.1 adds (1 - m) x -10000 instead. Both give 0 for m = 1 and mask m = 0 completely,
but differ for 0 < m < 1, so the fractional case gives each side the strength that means the same
bias: diffusers m' = 1 - 2^-14 (bias -10000 x 2^-14 = -0.6103515625, exact in fp32) and the engine
m = exp(-0.6103515625).

Reference strength: a reference below strength 1 is denoised at sigma x (1 - strength); the engine
(ltx-core's X0Model) takes x0 = x - v x sigma (1 - strength) for those tokens, diffusers x - v x
sigma, so the parity cases use strength 1 (partial strengths share the engine's keyframe path,
checked against ltx-pipelines in test_ltx2_reference's "partial-strength" case). The mask builder and
the bias are also checked against ltx-core 1.0.0's own functions (and ltx-pipelines' mask pooling)
for fractional values."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltxengine import Engine, ReferenceCondition
from ltxengine.ltx2.denoise import DISTILLED_SIGMAS, STAGE2_SIGMAS
from ltxengine.ltx2.recipes.ic_lora import attention_bias, attention_mask, pool_mask
from tests.oracles import ltx_core, ltx_pipelines
from tests.pipelines.ltx2_fixtures import GUIDED, SEQ, build_pipeline, params, write_lora

diffusers = pytest.importorskip("diffusers")

BUDGET = 1e-4
PROMPT, NEGATIVE = "a cat sits on the mat", "red car"
NONE = dict(guidance_scale=1.0, stg_scale=0.0, modality_scale=1.0, guidance_rescale=0.0, audio_guidance_scale=1.0,
            audio_stg_scale=0.0, audio_modality_scale=1.0, audio_guidance_rescale=0.0)
DIFFUSERS_STRENGTH = 1.0 - 2.0 ** -14  # (1 - m') x -10000 = -0.6103515625 exactly
STRENGTH = math.exp(-10000.0 * 2.0 ** -14)  # log(m) = the same bias


def _ic_lora(path, transformer, factor: int):
    """A tiny IC-LoRA file with its metadata -> (path, {diffusers parameter: delta W})."""
    from safetensors.torch import load_file, save_file
    path, deltas = write_lora(path, transformer, seed=9, scale=0.08)
    save_file(load_file(str(path)), str(path), metadata={"reference_downscale_factor": str(factor)})
    return path, deltas


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx2ic")
    pipe, upsampler, folder = build_pipeline(root)
    distilled, distilled_deltas = write_lora(root / "distilled-lora.safetensors", pipe.transformer)
    ic, ic_deltas = _ic_lora(root / "ic-lora.safetensors", pipe.transformer, factor=2)
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, distilled_lora=distilled)
    engine.load_lora_weights(str(ic), adapter_name="ic")
    engine.ic_path = ic  # for engines built later from the same files
    return pipe, upsampler, engine, ic_deltas, distilled_deltas


def _video(seed: int, frames: int, size: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)


def _diffusers_ic_lora(setup, refs, seed, height, width, guidance, **kw):
    """The reference: stage 1 (LTX2InContextPipeline at half size) -> x2 upsampler -> stage 2."""
    from diffusers import FlowMatchEulerDiscreteScheduler, LTX2InContextPipeline, LTX2LatentUpsamplePipeline
    from diffusers.pipelines.ltx2.pipeline_ltx2_ic_lora import LTX2ReferenceCondition
    from PIL import Image
    pipe, upsampler, _, ic_deltas, distilled_deltas = setup
    conds = [LTX2ReferenceCondition(frames=[Image.fromarray(f) for f in video], strength=s) for video, s in refs]
    gen = torch.Generator().manual_seed(seed)
    common = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_frames=9, frame_rate=24.0, generator=gen,
                  max_sequence_length=SEQ, return_dict=False)
    original = {k: v.clone() for k, v in pipe.transformer.state_dict().items()}
    scheduler = pipe.scheduler
    try:
        with torch.no_grad():
            pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(scheduler.config, use_dynamic_shifting=False,
                                                                         shift_terminal=None)
            _add(pipe.transformer, ic_deltas)
            # the IC pipeline reads the tokenizer's padding side once, when built, and encodes with
            # "left" (as every LTX-2 pipeline does); the tiny tokenizer starts as "right"
            pipe.tokenizer.padding_side = "left"
            ic = LTX2InContextPipeline(**{k: v for k, v in pipe.components.items()
                                          if k in LTX2InContextPipeline._get_signature_keys(LTX2InContextPipeline)[0]})
            v_lat, a_lat = ic(reference_conditions=conds, height=height // 2, width=width // 2,
                              sigmas=list(DISTILLED_SIGMAS[:-1]), output_type="latent", **common, **guidance, **kw)
            up = LTX2LatentUpsamplePipeline(vae=pipe.vae, latent_upsampler=upsampler)(
                latents=v_lat, output_type="latent", return_dict=False)[0]
            pipe.transformer.load_state_dict(original)
            _add(pipe.transformer, distilled_deltas)
            return pipe(latents=up, audio_latents=a_lat, num_inference_steps=3, noise_scale=STAGE2_SIGMAS[0],
                        sigmas=list(STAGE2_SIGMAS[:-1]), output_type="np", **common, **NONE)
    finally:
        pipe.transformer.load_state_dict(original)
        pipe.scheduler = scheduler


def _add(transformer, deltas):
    sd = transformer.state_dict()
    for name, delta in deltas.items():
        sd[name].add_(delta)


def _compare(result, video, audio, what):
    dv = np.abs(result.frames - video[0]).max()
    da = np.abs(result.audio - audio[0].numpy()).max()
    assert result.frames.shape == video[0].shape and result.audio.shape == tuple(audio[0].shape), what
    assert dv <= BUDGET and da <= BUDGET, f"{what}: max |d| video {dv:.2e}, audio {da:.2e} (budget {BUDGET})"
    assert np.abs(video[0] - video[0].mean()).max() > 0.05  # the frames are not flat: the check means something


def test_ic_lora_matches_diffusers_in_context_pipeline(setup):
    """One reference at half the stage-1 size (the file's factor 2), full attention, no guidance
    (ltx-pipelines' distilled IC-LoRA), the engine's defaults; the weights are the checkpoint's after."""
    *_, engine, _, _ = setup
    ref = _video(1, 9, 64)
    video, audio = _diffusers_ic_lora(setup, [(ref, 1.0)], 11, 256, 256, NONE, reference_downscale_factor=2)
    before = {k: v.clone() for k, v in engine.transformer.state_dict().items()}
    ours = engine.generate(PROMPT, NEGATIVE, height=256, width=256, num_frames=9, frame_rate=24.0, seed=11,
                           pipeline="ic-lora", reference_conditions=[ReferenceCondition(ref)],
                           max_sequence_length=SEQ)
    _compare(ours, video, audio, "ic-lora")
    after = engine.transformer.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "stage 2's LoRA swap must restore the weights"
    # the references matter: without the IC-LoRA's tokens' content the result differs
    other = engine.generate(PROMPT, NEGATIVE, height=256, width=256, num_frames=9, frame_rate=24.0, seed=11,
                            pipeline="ic-lora", reference_conditions=[ReferenceCondition(_video(2, 9, 64))],
                            max_sequence_length=SEQ)
    assert np.abs(other.frames - ours.frames).max() > 1e-3


def test_attention_strength_and_mask_with_two_references_and_guidance(setup):
    """Two references (two groups, masked from each other), a fractional
    attention strength times a mask video with zeros, full guidance but rescale (diffusers' rescale
    std also counts the conditioned tokens, see test_ltx2_parity's i2v): every guidance pass gets the
    block bias."""
    *_, engine, _, _ = setup
    refs = [(_video(3, 9, 64), 1.0), (_video(4, 9, 64), 1.0)]
    mask = np.ones((9, 64, 64), dtype=np.float32)
    mask[:, :32, :32] = 0.0  # one latent cell of the reference masked out, all frames
    mask[1:, 32:, 32:] = 0.0  # another in the second latent frame (pixel frames 1-8) only
    g = dict(GUIDED, guidance_rescale=0.0, audio_guidance_rescale=0.0)
    video, audio = _diffusers_ic_lora(setup, refs, 12, 256, 256, g, reference_downscale_factor=2,
                                      conditioning_attention_strength=DIFFUSERS_STRENGTH,
                                      conditioning_attention_mask=torch.from_numpy(mask)[None, None])
    ours = engine.generate(PROMPT, NEGATIVE, height=256, width=256, num_frames=9, frame_rate=24.0, seed=12,
                           pipeline="ic-lora", reference_conditions=[ReferenceCondition(v, s) for v, s in refs],
                           conditioning_attention_strength=STRENGTH, conditioning_attention_mask=mask,
                           video_guidance=params(g), audio_guidance=params(g, "audio_"), max_sequence_length=SEQ)
    _compare(ours, video, audio, "ic-lora masked")
    full = engine.generate(PROMPT, NEGATIVE, height=256, width=256, num_frames=9, frame_rate=24.0, seed=12,
                           pipeline="ic-lora", reference_conditions=[ReferenceCondition(v, s) for v, s in refs],
                           video_guidance=params(g), audio_guidance=params(g, "audio_"), max_sequence_length=SEQ)
    assert np.abs(full.frames - ours.frames).max() > 1e-3, "the attention bias must change the result"


def test_attention_mask_and_bias_match_ltx_core():
    """Fractional strengths: our block mask equals ltx-core's build_attention_mask applied once per
    reference (after image keyframes), our bias its log-space conversion, our pooling
    ltx-pipelines' _downsample_mask_to_latent -- exactly."""
    mask_utils = ltx_core("conditioning.mask_utils")
    args = ltx_core("model.transformer.transformer_args")
    ic = ltx_pipelines("ic_lora")
    noisy, keys = 6, 2
    g = torch.Generator().manual_seed(0)
    groups = [torch.rand(4, generator=g) * (torch.rand(4, generator=g) > 0.3), torch.rand(3, generator=g)]
    ref = None
    total = noisy + keys
    for grp in groups:
        ref = mask_utils.build_attention_mask(ref, noisy, grp.shape[0], total, grp[None], "cpu", torch.float32)
        total += grp.shape[0]
    ours = attention_mask(noisy, noisy + keys, groups)
    assert torch.equal(ours, ref[0])
    prep = args.TransformerArgsPreprocessor.__new__(args.TransformerArgsPreprocessor)
    for dtype in (torch.float32, torch.bfloat16):
        assert torch.equal(attention_bias(ours, dtype), prep._prepare_self_attention_mask(ref, dtype))
    pixels = torch.rand(17, 40, 24, generator=g)
    shape = ltx_core("types").VideoLatentShape(batch=1, channels=8, frames=3, height=5, width=3)
    expected = ic.ICLoraPipeline._downsample_mask_to_latent(pixels[None, None], shape)[0]
    assert torch.equal(pool_mask(pixels, 3, 5, 3), expected)


def test_plan_counts_the_reference_tokens_and_the_dense_bias(setup):
    """Stage 1's traced step grows with the reference tokens (two references > one) and with the
    (Nv, Nv) attention bias when attention is masked; stage 2 has no references."""
    *_, engine, _, _ = setup
    kw = dict(height=256, width=256, num_frames=9, max_sequence_length=SEQ, pipeline="ic-lora")

    def steps(refs, **extra):
        plan = engine.plan(PROMPT, **kw, reference_conditions=[ReferenceCondition(_video(i, 9, 64)) for i in
                                                               range(refs)], **extra)
        return {p.name: p.transient_bytes for p in plan.phases if p.name in ("denoise", "refine")}
    one, two, masked = steps(1), steps(2), steps(1, conditioning_attention_strength=0.5)
    assert two["denoise"] > one["denoise"] and masked["denoise"] > one["denoise"], (one, two, masked)
    assert one["refine"] == two["refine"] == masked["refine"]


def test_the_video_attention_bias_is_diffusers_video_self_attention_mask():
    """The transformer's video_attention_bias on a tiny DiT equals diffusers' video_self_attention_mask
    given as the multiplicative mask whose (1 - m) x -10000 is the same bias (m in {0, 1} and one
    exactly representable fraction), within the transformer tests' 1e-5 of the output scale; None
    leaves the call bit for bit as before; a bias of the wrong shape or dtype is refused by name."""
    from tests.models import ltx2_transformer_fixtures as dit
    ref, ours, cfg = dit.pair("split64")
    x = dit.inputs(cfg)
    n = dit.F * dit.H * dit.W
    g = torch.Generator().manual_seed(3)
    cells = torch.randint(0, 3, (n, n), generator=g).float()  # 0: masked, 1: full, 2: the fraction below
    m = torch.where(cells == 2, torch.tensor(DIFFUSERS_STRENGTH), cells).fill_diagonal_(1.0)
    bias = torch.where(m == 1, 0.0, torch.where(m == 0, torch.finfo(torch.float32).min, -10000.0 * 2.0 ** -14))
    expected = dit.run_diffusers(ref, x, video_self_attention_mask=m[None].expand(2, -1, -1))
    plain = dit.run_ours(ours, x)
    rope = ours.rope(ours.video_positions(2, dit.F, dit.H, dit.W, dit.FPS), ours.audio_positions(2, dit.NA))
    ctx = ours.prepare_context(x["vtext"], x["atext"], x["mask"])
    kw = dict(video_sigma=x["sigma_v"], audio_sigma=x["sigma_a"], video_timesteps=x["vt"], context=ctx, rope=rope)
    with torch.no_grad():
        got = ours(x["video"], x["audio"], **kw, video_attention_bias=bias[None, None])
        unmasked = ours(x["video"], x["audio"], **kw, video_attention_bias=None)
    for a, b in zip(got, expected):
        assert (a - b).abs().max() <= dit.REL * b.abs().max()
    assert (got[0] - plain[0]).abs().max() > 1e-2  # the bias changes the video
    assert all(torch.equal(a, b) for a, b in zip(unmasked, plain))
    with pytest.raises(ValueError, match=r"video_attention_bias must be \(B=2 or 1, 1, 18, 18\), got \(1, 18, 18\)"):
        ours(x["video"], x["audio"], **kw, video_attention_bias=bias[None])
    with pytest.raises(ValueError, match="video_attention_bias must have the latents' dtype torch.float32"):
        ours(x["video"], x["audio"], **kw, video_attention_bias=bias[None, None].double())


def test_the_step_executor_runs_the_masked_step_as_the_direct_call(setup):
    """The masked step goes through the engine's GraphExecutor (its own bucket, the bias one more
    input; on the CPU the graphs path without capture) with the result of the direct call
    (executor="none"), bit for bit."""
    _, _, engine, _, _ = setup
    direct = Engine.from_pretrained(engine.source, device="cpu", dtype=torch.float32, executor="none",
                                    distilled_lora=engine.distilled_lora)
    direct.load_lora_weights(str(engine.ic_path), adapter_name="ic")
    kw = dict(height=256, width=256, num_frames=9, seed=5, pipeline="ic-lora", max_sequence_length=SEQ,
              reference_conditions=[ReferenceCondition(_video(6, 9, 64))], conditioning_attention_strength=0.5)
    assert engine.executor is not None and direct.executor is None
    assert np.array_equal(direct.generate(PROMPT, **kw).frames, engine.generate(PROMPT, **kw).frames)


# -- reference_temporal_scale_factor (issue 21) -----------------------------------------------------------
# Neither ltx-pipelines 1.0.0 nor diffusers 0.42.1 has it: the oracles below are transcriptions of
# Lightricks' LTX-2 @400fd31, ltx-core's VideoConditionByReferenceLatent.apply_to
# (conditioning/types/reference_video_cond.py) and ltx-pipelines' temporal_subsample
# (iclora_utils.py), on ltx-core 1.0.0's patch grid and pixel coordinates (which @400fd31 calls unchanged).

def _transcribed_temporal_subsample(video: torch.Tensor, temporal_scale_factor: int) -> torch.Tensor:
    """@400fd31 iclora_utils.temporal_subsample, verbatim (video (B, C, F, H, W))."""
    indices = [0, *list(range(1, video.shape[2], temporal_scale_factor))]
    return video[:, :, indices]


def _transcribed_positions(frames, height, width, fps, downscale, temporal):
    """@400fd31 VideoConditionByReferenceLatent.apply_to's positions; t_target from a target state's
    positions as ltx-core's VideoLatentTools builds them (pixel coordinates, time / fps)."""
    from ltx_core.components.patchifiers import VideoLatentPatchifier, get_pixel_coords
    types = ltx_core("types")
    scale = types.SpatioTemporalScaleFactors.default()
    patchifier = VideoLatentPatchifier(patch_size=1)

    def pixel(f, h, w):
        shape = types.VideoLatentShape(batch=1, channels=128, frames=f, height=h, width=w)
        return get_pixel_coords(patchifier.get_patch_grid_bounds(output_shape=shape), scale, causal_fix=True)
    target = pixel(3, 2, 2).to(torch.float32)
    target[:, 0, ...] = target[:, 0, ...] / fps  # ltx-core's VideoLatentTools.create_initial_state
    positions = pixel(frames, height, width).to(dtype=torch.float32)
    positions[:, 0, ...] /= fps / temporal
    if temporal != 1:
        t_target = target[:, 0, 0:1, 1:2].to(dtype=torch.float32)
        positions[:, 0, ...] = torch.clamp(positions[:, 0, ...] - (temporal - 1) * t_target, min=0)
    if downscale != 1:
        positions[:, 1, ...] *= downscale
        positions[:, 2, ...] *= downscale
    return positions


def test_temporal_scale_positions_and_kept_frames_match_the_transcribed_reference():
    """The reference tokens' positions (fps / S, shifted to end with the target, clamped at 0; height
    and width times the downscale factor) and the kept frames equal the @400fd31 transcriptions
    exactly; S = 1 is the stage's own positions scaled, as before the temporal factor existed."""
    from ltxengine.ltx2.recipes.ic_lora import reference_positions, temporal_subsample
    from ltxengine.models.ltx2_transformer import video_positions
    for fps in (24.0, 25.0, 30.0, 23.976):
        for temporal in (1, 2, 3, 4):
            for frames, h, w, down in ((3, 2, 2, 2), (2, 1, 3, 1), (5, 2, 1, 4)):
                ours = reference_positions(video_positions, frames, h, w, fps, down, temporal)
                ref = _transcribed_positions(frames, h, w, fps, down, temporal)
                assert torch.equal(ours, ref), (fps, temporal, frames, down, (ours - ref).abs().max())
        plain = video_positions(1, 3, 2, 2, fps).clone()
        plain[:, 1:] *= 2
        assert torch.equal(reference_positions(video_positions, 3, 2, 2, fps, 2, 1), plain)
    # S = 2: the last reference patch ends where the target's third latent frame (pixel 17) does
    pos = reference_positions(video_positions, 2, 1, 1, 24.0, 1, 2)
    assert pos[0, 0, -1, 1].item() == pytest.approx(17 / 24.0) and pos[0, 0, 0, 0].item() == 0.0
    rng = np.random.default_rng(0)
    for n in (1, 9, 17, 25, 33, 41):
        video = rng.integers(0, 256, (n, 4, 4, 3), dtype=np.uint8)
        for temporal in (1, 2, 3, 4):
            expected = _transcribed_temporal_subsample(torch.from_numpy(video).permute(3, 0, 1, 2)[None], temporal)
            assert torch.equal(torch.from_numpy(temporal_subsample(video, temporal)).permute(3, 0, 1, 2)[None],
                               expected)


def _temporal_lora(path, transformer, **metadata):
    from safetensors.torch import load_file, save_file
    path, _ = write_lora(path, transformer, seed=9, scale=0.08)
    save_file(load_file(str(path)), str(path), metadata={k: str(v) for k, v in metadata.items()})
    return str(path)


def test_a_lora_with_temporal_scale_2_runs_end_to_end(setup, tmp_path, monkeypatch):
    """An IC-LoRA file with reference_temporal_scale_factor=2 in its metadata: a 17-frame reference keeps
    frames 0, 1, 3, ..., 15 (9 frames, 2 latent frames), whose tokens carry the transcribed positions;
    the result is finite, and differs from the same LoRA without the temporal factor."""
    from ltxengine.ltx2.recipes import ic_lora
    pipe, _, _, _, _ = setup
    engine = Engine.from_pretrained(setup[2].source, device="cpu", dtype=torch.float32)
    engine.load_lora_weights(_temporal_lora(tmp_path / "t2.safetensors", pipe.transformer, reference_downscale_factor=2,
                                            reference_temporal_scale_factor=2), adapter_name="t2")
    seen = []
    encode = ic_lora.encode_references

    def spy(engine, a, height, width, fps):
        seen.append(([len(r.video) for r in a.reference_conditions], a.reference_temporal_scale_factor))
        out = encode(engine, a, height, width, fps)
        seen.append(out[0])
        return out
    monkeypatch.setattr(ic_lora, "encode_references", spy)
    ref = _video(7, 17, 64)
    kw = dict(height=256, width=256, num_frames=17, frame_rate=24.0, seed=3, pipeline="ic-lora",
              max_sequence_length=SEQ)
    out = engine.generate(PROMPT, reference_conditions=[ReferenceCondition(ref)], **kw)
    assert np.isfinite(out.frames).all() and out.frames.shape[0] == 17
    (lengths, temporal), tokens = seen
    assert lengths == [9] and temporal == 2
    # stage 1 at 128 x 128, the reference at 1/2 of it: 2 latent frames x 2 x 2 tokens
    assert tokens[0].tokens.shape[1] == 2 * 2 * 2
    assert torch.equal(tokens[0].positions.cpu(), _transcribed_positions(2, 2, 2, 24.0, 2, 2))
    assert ic_lora.reference_tokens(SimpleNamespace(pipeline="ic-lora", reference_downscale_factor=2,
                                                    reference_conditions=[ReferenceCondition(ref[:9])]),
                                    128, 128) == 8
    # the same file without the factor: the first 9 frames, stage-1 positions, another result
    seen.clear()
    engine.delete_adapters(["t2"])
    engine.load_lora_weights(_temporal_lora(tmp_path / "t1.safetensors", pipe.transformer,
                                            reference_downscale_factor=2), adapter_name="t1")
    plain = engine.generate(PROMPT, reference_conditions=[ReferenceCondition(ref)], **kw)
    assert seen[0] == ([17], 1) and np.abs(plain.frames - out.frames).max() > 1e-3


def test_temporal_scale_metadata_errors(setup, tmp_path):
    """Conflicting or malformed reference_temporal_scale_factor metadata, a contradicting argument and
    a reference whose kept frames are not 8k+1 are refused by name before any model work."""
    pipe, _, _, _, _ = setup
    engine = Engine.from_pretrained(setup[2].source, device="cpu", dtype=torch.float32)
    t = pipe.transformer
    for name, value in (("a", 2), ("b", 3), ("bad", "two"), ("zero", 0)):
        engine.load_lora_weights(_temporal_lora(tmp_path / f"{name}.safetensors", t, reference_downscale_factor=2,
                                                reference_temporal_scale_factor=value), adapter_name=name)
    kw = dict(height=256, width=256, num_frames=17, pipeline="ic-lora", max_sequence_length=SEQ,
              reference_conditions=[ReferenceCondition(_video(1, 17, 64))])
    with pytest.raises(ValueError, match=r"reference_temporal_scale_factor: the call's IC-LoRAs disagree "
                                         r"\(\{'a': 2, 'b': 3\}\); use one at a time"):
        engine.generate(PROMPT, loras={"a": 1.0, "b": 1.0}, **kw)
    with pytest.raises(ValueError, match=r"reference_temporal_scale_factor: adapter 'bad'\'s metadata says "
                                         r"reference_temporal_scale_factor='two', not an int >= 1"):
        engine.generate(PROMPT, loras={"bad": 1.0}, **kw)
    with pytest.raises(ValueError, match=r"adapter 'zero'\'s metadata says reference_temporal_scale_factor='0', "
                                         r"not an int >= 1"):
        engine.generate(PROMPT, loras={"zero": 1.0}, **kw)
    with pytest.raises(ValueError, match=r"reference_temporal_scale_factor=3 contradicts the IC-LoRA metadata of the "
                                         r"call's adapters \{'a': 2\}"):
        engine.generate(PROMPT, loras={"a": 1.0}, reference_temporal_scale_factor=3, **kw)
    with pytest.raises(ValueError, match=r"reference_conditions\[0\]\.video must have 8kS\+1 frames with "
                                         r"reference_temporal_scale_factor S=2 .* got 9, which keeps 5; e\.g\. 17"):
        engine.generate(PROMPT, loras={"a": 1.0}, **dict(kw, reference_conditions=[ReferenceCondition(
            _video(1, 9, 64))]))
    with pytest.raises(ValueError, match="reference_temporal_scale_factor"):
        engine.generate(PROMPT, height=256, width=256, num_frames=9, max_sequence_length=SEQ, loras={},
                        reference_temporal_scale_factor=2)  # another pipeline refuses the IC-LoRA argument
