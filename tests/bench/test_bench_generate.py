"""bench/scenario_generate.py (with generate_ltxv.py, generate_ltx2.py and generation.py): the end-to-end
smoke runs (tiny models, float32, CPU) and the checks they are made of. The smoke run is an fp32 parity
check of the whole Engine against diffusers' pipelines (text encoding, sampling, upsampling, refinement,
decode) on one set of weights."""

from __future__ import annotations


import pytest
import torch

from bench import generate_ltx2 as L
from bench import generate_ltxv as V
from bench import generation as G
from bench import scenario_generate as S
from tests.helpers import run_bench_smokes

pytest.importorskip("diffusers")

FIELDS = ("script", "op", "shape", "dims", "dtype", "impl", "source", "status", "reason", "device", "smoke",
          "median_ms", "p10_ms", "p90_ms", "reps", "max_abs_err", "tolerance", "peak_mem_bytes", "verify",
          "ratio_vs_diffusers", "seconds", "fps", "output_frames", "env")
RUNS = {  # name -> extra arguments; all start together (the runs are short; two cores share them)
    "ltxv": ["--models", "ltxv-098,ltxv-2b"],
    "ltxv-2b-3-steps": ["--models", "ltxv-2b", "--steps", "3"],
    "ltx2": ["--models", "ltx2-19b", "--ltx2-steps", "3"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return run_bench_smokes({name: ("scenario_generate", extra) for name, extra in RUNS.items()}, tmp_path_factory)


@pytest.mark.parametrize("name", list(RUNS))
def test_smoke_run_is_verified_and_timed(runs, name):
    rc, output, records = runs[name]
    assert rc == 0, output
    expected = {"ltxv": {"ltxv-098", "ltxv-2b"}, "ltxv-2b-3-steps": {"ltxv-2b"}, "ltx2": {"ltx2-19b"}}[name]
    assert {r["shape"] for r in records} == expected, output
    for r in records:
        missing = [f for f in FIELDS if f not in r]
        assert not missing, f"record lacks {missing}: {r}"
        assert r["script"] == "scenario_generate" and r["device"] == "cpu" and r["smoke"] is True
        assert r["dtype"] == "float32" and r["status"] == "ok", r
        assert r["impl"] in ("ltxengine", "diffusers") and r["reps"] == 1
        assert r["seconds"] > 0 and r["fps"] == pytest.approx(r["output_frames"] / r["seconds"])
        assert r["ratio_vs_diffusers"] > 0
        frames = r["verify"]["outputs"]["frames"]
        # the fp32 parity: same weights, seed and arithmetic -> the same frames within 1e-4
        assert r["verify"]["metric"] == "max_abs_diff" and r["tolerance"] == G.FP32_TOL
        assert frames["max_abs_diff"] <= G.FP32_TOL, r
        # frames carry content, so the equality is not vacuous
        assert frames["std"] > 0.05 and frames["unclamped_fraction"] > 0.5, frames
        if r["shape"] == "ltx2-19b":  # the audio track obeys the same fp32 parity and is not silent
            audio = r["verify"]["outputs"]["audio"]
            assert audio["max_abs_diff"] <= G.FP32_TOL and audio["std"] > 1e-3, audio
    ours = [r for r in records if r["impl"] == "ltxengine"]
    assert all(set(r["stage_seconds"]) >= {"text", "denoise", "decode", "total"} for r in ours)
    two = [r for r in ours if r["shape"] == "ltxv-098"]
    assert all("refine" in r["stage_seconds"] and r["dims"]["stage1"] == [64, 64] for r in two)
    two = [r for r in ours if r["shape"] == "ltx2-19b"]
    assert all("refine" in r["stage_seconds"] and r["dims"]["stage1"] == [64, 64] for r in two)
    if name == "ltx2":
        assert all(r["dims"]["num_inference_steps"] == 3 and r["dims"]["text_tokens"] == 1024 for r in records)
        assert all(r["dims"]["guidance_stage2"]["guidance_scale"] == 1.0 for r in records)
    if name == "ltxv-2b-3-steps":
        assert all(r["dims"]["num_inference_steps"] == 3 and "timesteps" not in r["dims"] for r in records)


def test_compare_verdicts():
    ref = {"frames": torch.linspace(0, 1, 24).reshape(2, 3, 4)}
    ok = G.compare({"frames": ref["frames"] + 5e-5}, ref, torch.float32)
    assert ok["status"] == "ok" and ok["max_abs_err"] == pytest.approx(5e-5, rel=1e-3)
    bad = G.compare({"frames": ref["frames"] + 2e-4}, ref, torch.float32)
    assert bad["status"] == "failed" and "max_abs_diff" in bad["reason"] and "not timed" in bad["reason"]
    # bf16: a mean bound only
    assert G.compare({"frames": ref["frames"] + 0.05}, ref, torch.bfloat16)["status"] == "ok"
    loose = G.compare({"frames": ref["frames"] + 0.2}, ref, torch.bfloat16)
    assert loose["status"] == "failed" and "mean_abs_diff" in loose["reason"]
    shape = G.compare({"frames": ref["frames"][:1]}, ref, torch.float32)
    assert shape["status"] == "failed" and "shape" in shape["reason"]


def test_stage_sizes_follow_two_stage_rounding():
    assert V.stage_sizes(G.FULL_SIZE, 32) == (320, 512)  # 2/3 of 512x768, down to multiples of 32
    assert V.stage_sizes(G.SMOKE_SIZE, 32) == (64, 64)


def test_recipe_picks_distilled_timesteps():
    from ltxengine import DISTILLED_STAGE1_TIMESTEPS
    assert V.ltxv_recipe("ltxv-098", 3)["timesteps"] == list(DISTILLED_STAGE1_TIMESTEPS)
    assert V.ltxv_recipe("ltxv-2b", 8)["timesteps"] == list(DISTILLED_STAGE1_TIMESTEPS)
    assert V.ltxv_recipe("ltxv-2b", 5)["num_inference_steps"] == 5


@pytest.mark.parametrize("argv, message", [
    (["--smoke", "--steps", "0"], "--steps must be >= 1, got 0"),
    (["--smoke", "--ltx2-steps", "0"], "--ltx2-steps must be >= 1, got 0"),
    (["--smoke", "--ltx2-tiling", "temporal"], "--ltx2-tiling: invalid choice"),
    (["--smoke", "--models", "ltx3"], "--models: unknown name 'ltx3'"),
    (["--smoke", "--kernels", "fast"], "--kernels: unknown name 'fast'"),
])
def test_cli_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        S.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU refusal of full-size runs")
def test_full_size_needs_a_gpu(capsys):
    with pytest.raises(SystemExit):
        S.main([])
    assert "no CUDA device" in capsys.readouterr().err


def test_ltx2_guidance_clips_stg_blocks_and_keeps_stage2_defaults():
    s1, s2 = L.ltx2_guidance(48)
    assert s1["spatio_temporal_guidance_blocks"] == [29] and s1["guidance_scale"] == 3.0
    assert s2 == dict(s1, guidance_scale=1.0)
    assert L.ltx2_guidance(2)[0]["spatio_temporal_guidance_blocks"] == [1]
    p = L.guidance_params(s1, "audio_")
    assert (p.cfg, p.stg, p.modality, p.rescale, p.stg_blocks) == (7.0, 1.0, 3.0, 0.7, (29,))


def test_fused_lora_restores_the_weights_exactly():
    lin = torch.nn.Sequential(torch.nn.Linear(5, 3)).to(torch.bfloat16)
    before = lin[0].weight.detach().clone()
    a, b = torch.randn(2, 5), torch.randn(3, 2)
    lora = {"diffusion_model.0.lora_A.weight": a, "diffusion_model.0.lora_B.weight": b}
    with L.fused(lin, lora):
        assert torch.equal(lin[0].weight, (before.float() + b @ a).to(torch.bfloat16))
    assert torch.equal(lin[0].weight, before)
