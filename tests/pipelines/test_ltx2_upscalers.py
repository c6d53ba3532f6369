"""LTX-2.3's x1.5 spatial upscaler in the two-stage recipes, and the temporal x2 upscaler's place
(issue 19). fp32 on CPU.

- The stage between the two stages (denormalize, upscale, renormalize) equals ltx-core 1.0.0's
  ``upsample_video`` on the same weights for the x1.5, 2.3 x2 and temporal x2 upscalers (the same
  torch convs, GroupNorms and blur on both sides: measured bit-equal; budget 1e-5 of the scale).
- pipeline="two-stage" with the x1.5 upscaler on the tiny LTX-2.3-like folder = diffusers' documented
  two-stage recipe with that upscaler (LTX2Pipeline at two thirds of the size ->
  LTX2LatentUpsamplePipeline -> LTX2Pipeline stage 2 with the distilled LoRA), same seed; budget 1e-4
  absolute on frames and waveforms as test_ltx2_parity / test_ltx2_versions.
- The sizes x1.5 needs, ic-lora's refusal, a temporal upscaler refused by name at load.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.components.latents import upsample_latents
from ltxengine.ltx2.engine import LTX2TwoStage
from ltxengine.models.latent_upsampler import upsampler_kind
from tests.helpers import assert_close_scaled, perturb_
from tests.oracles import ltx_core
from tests.pipelines.ltx2_fixtures import (GUIDED, SEQ, STAGE2_GUIDED, UPSAMPLER, build_pipeline_version, params,
                                           reference_two_stage, write_lora)

diffusers = pytest.importorskip("diffusers")
from diffusers.pipelines.ltx2.latent_upsampler import LTX2LatentUpsamplerModel  # noqa: E402

BUDGET = 1e-4
PROMPT, NEGATIVE = "a cat sits on the mat", "red car"
# the tiny pipeline's upsampler widths in the three released layouts (models/latent_upsampler.py's presets)
KINDS = {"x1.5": dict(UPSAMPLER, rational_spatial_scale=1.5),
         "x2_v23": dict(UPSAMPLER, use_rational_resampler=False),
         "temporal_x2": dict(UPSAMPLER, spatial_upsample=False, temporal_upsample=True, use_rational_resampler=False)}


def _upsampler(kind: str, folder):
    torch.manual_seed(0)
    model = LTX2LatentUpsamplerModel(**KINDS[kind]).eval()
    perturb_(model, seed=9)  # the blur kernel too
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("ltx2_upscalers")
    pipe, _, folder = build_pipeline_version(root, "2.3")  # the x1.5 upscaler is LTX-2.3's
    ups = {kind: (_upsampler(kind, root / kind), root / kind) for kind in KINDS}
    lora, deltas = write_lora(root / "distilled-lora.safetensors", pipe.transformer)
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, latent_upsampler=ups["x1.5"][1],
                                    distilled_lora=lora)
    return pipe, ups, deltas, engine


def _ltx_core_upsampler(kind: str, weights):
    cfg = KINDS[kind]
    raw = {"in_channels": cfg["in_channels"], "mid_channels": cfg["mid_channels"],
           "num_blocks_per_stage": cfg["num_blocks_per_stage"], "dims": 3,
           "spatial_upsample": cfg.get("spatial_upsample", True),
           "temporal_upsample": cfg.get("temporal_upsample", False),
           "spatial_scale": cfg.get("rational_spatial_scale", 2.0),
           "rational_resampler": cfg.get("use_rational_resampler", True)}
    model = ltx_core("model.upsampler").LatentUpsamplerConfigurator.from_config(raw).eval()
    model.load_state_dict(weights, strict=True)
    return model


@pytest.mark.parametrize("kind", list(KINDS))
def test_upsample_stage_matches_ltx_core(setup, kind):
    """ltxengine's stage between the stages (components/latents.upsample_latents without AdaIN or
    tone map, as the two-stage recipes run it) against ltx-core's upsample_video, the VAE's
    per-channel statistics on both sides."""
    from ltxengine.loading import load_latent_upsampler
    _, ups, _, engine = setup
    ours = load_latent_upsampler(ups[kind][1], dtype=torch.float32, family="ltx-2")
    core = _ltx_core_upsampler(kind, ours.state_dict())
    stats = ltx_core("model.video_vae.ops").PerChannelStatistics(engine.vae.latents_mean.numel())
    stats.get_buffer("mean-of-means").copy_(engine.vae.latents_mean)
    stats.get_buffer("std-of-means").copy_(engine.vae.latents_std)
    assert engine.vae.config.scaling_factor == 1.0  # ltx-core's statistics have none
    z = torch.randn(1, 8, 3, 4, 6, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        actual = upsample_latents(ours, engine.vae, z)
        expected = ltx_core("model.upsampler.model").upsample_video(z, SimpleNamespace(per_channel_statistics=stats),
                                                                    core)
    assert tuple(actual.shape) == {"x1.5": (1, 8, 3, 6, 9), "x2_v23": (1, 8, 3, 8, 12),
                                   "temporal_x2": (1, 8, 5, 4, 6)}[kind]
    err = assert_close_scaled(actual, expected, 1e-5, kind)
    print(f"{kind} ({upsampler_kind(ours.config)}): max |d| vs ltx-core {err:.1e}")


def test_x1_5_two_stage_matches_diffusers(setup):
    """Stage 1 at 64 x 64 (two thirds of 96), the x1.5 upscaler (latents 2 x 2 -> 3 x 3), stage 2 at
    96 x 96 with the distilled LoRA and sigmas: diffusers' documented two-stage recipe with the x1.5
    model in LTX2LatentUpsamplePipeline, one generator throughout."""
    pipe, ups, deltas, engine = setup
    assert upsampler_kind(engine.latent_upsampler.config) == "spatial x1.5"
    kw = dict(num_frames=9, frame_rate=24.0)
    video, audio, up = reference_two_stage(pipe, ups["x1.5"][0], deltas, PROMPT, NEGATIVE,
                                           stage2=dict(height=96, width=96))
    assert tuple(up.shape[-2:]) == (3, 3)
    two = LTX2TwoStage(video_guidance=params(STAGE2_GUIDED), audio_guidance=params(STAGE2_GUIDED, "audio_"))
    ours = engine.generate(PROMPT, NEGATIVE, height=96, width=96, **kw, num_inference_steps=3, pipeline="two-stage",
                           two_stage=two, video_guidance=params(GUIDED), audio_guidance=params(GUIDED, "audio_"),
                           shift_tokens=None, seed=11, max_sequence_length=SEQ)
    assert ours.frames.shape == video[0].shape == (9, 96, 96, 3)
    dv = np.abs(ours.frames - video[0]).max()
    da = np.abs(ours.audio - audio[0].numpy()).max()
    print(f"x1.5 two-stage: max |d| video {dv:.1e}, audio {da:.1e}")
    assert dv <= BUDGET and da <= BUDGET, f"max |d| video {dv:.2e}, audio {da:.2e} (budget {BUDGET})"
    assert np.abs(video[0] - video[0].mean()).max() > 0.05  # the frames are not flat
    plan = engine.plan(PROMPT, height=96, width=96, **kw, pipeline="two-stage")
    assert [p.name for p in plan.phases][:3] == ["text", "denoise", "upsample"]


def test_x1_5_sizes_and_refusals(setup):
    _, _, _, engine = setup
    with pytest.raises(ValueError, match=r"height must be a multiple of 96 for pipeline='two-stage' \(stage 1 runs "
                                         r"at 1/1.5 of the size for the x1.5 upscaler.*got 128"):
        engine.generate(PROMPT, height=128, width=96, num_frames=9, pipeline="two-stage")
    with pytest.raises(ValueError, match=r"pipeline='ic-lora' runs stage 1 at half size.*x2 spatial upscaler; this "
                                         r"engine holds the x1.5 one"):
        engine.generate(PROMPT, height=96, width=96, num_frames=9, pipeline="ic-lora")


def test_temporal_upscaler_is_refused_at_load(setup):
    """No LTX-2 recipe upsamples in time (ltx-pipelines uses the temporal x2 file only in DFR's
    temporal rounds): given as latent_upsampler it is named before any weight is read."""
    _, ups, _, engine = setup
    with pytest.raises(ValueError, match=r"latent_upsampler: .*temporal_x2 is the temporal x2 latent upscaler; the "
                                         r"two-stage recipes take a spatial one.*DFRPipeline"):
        Engine.from_pretrained(engine.source, device="cpu", dtype=torch.float32, latent_upsampler=ups["temporal_x2"][1])


def test_cli_reads_the_upscaler_kind_before_loading(setup, tmp_path, monkeypatch, capsys):
    """``ltxengine generate --latent-upsampler x1.5`` checks the size for x1.5 (multiples of 96) and
    names a temporal upscaler, both before any model is loaded."""
    from ltxengine.cli import main
    _, ups, _, engine = setup
    monkeypatch.setattr(Engine, "from_pretrained", lambda *a, **k: pytest.fail("loaded before the checks"))
    for up, height, message in ((ups["x1.5"][1], 128, "--height must be a multiple of 96 for the two-stage pipeline "
                                 "(stage 1 runs at 2/3 of the size), got 128"),
                                (ups["temporal_x2"][1], 96, "is the temporal x2 latent upscaler")):
        code = main(["generate", "--model", engine.source, "--prompt", "x", "--output", str(tmp_path / "o.mp4"),
                     "--num-frames", "9", "--height", str(height), "--width", "96", "--latent-upsampler", str(up)])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
