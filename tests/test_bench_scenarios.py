"""bench/scenario_*.py: the smoke runs (CPU, tiny configs) and the pieces they are built from.

The float32 smoke runs are the parity check of ltxengine against diffusers at model level: every
implementation is compared with ltxengine-torch's output within 1e-5 of the output scale. The
bfloat16 smoke runs exercise the GPU path's oracle (a float32 forward on the bf16 weights, one
block upcast at a time) and its error budget. The FLOP model must reproduce the per-step numbers
of ltx-architecture.md section 6.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bench import common
from bench import models as M
from bench import scenario_transformer as T
from bench import scenario_vae_decode as V
from tests.helpers import run_bench_smokes

pytest.importorskip("diffusers")

FIELDS = ("script", "op", "shape", "dims", "dtype", "impl", "source", "status", "reason", "device", "smoke",
          "median_ms", "p10_ms", "p90_ms", "reps", "max_abs_err", "tolerance", "errors",
          "max_abs_diff_vs_ltxengine_torch", "peak_mem_bytes", "ratio_vs_diffusers", "ratio_vs_diffusers_compile",
          "ratio_vs_best_alternative", "best_alternative", "ceilings", "env")
EXTRA = {"scenario_transformer": ("flops", "tflops", "fraction_of_bf16_peak", "precomputed"),
         "scenario_vae_decode": ("fps", "output_frames")}
RUNS = {  # name -> (script, extra arguments)
    "transformer": ("scenario_transformer", []),
    "vae": ("scenario_vae_decode", []),
    "transformer-bf16": ("scenario_transformer", ["--dtype", "bfloat16", "--models", "tiny-ltx2", "--batch", "2"]),
    "vae-bf16": ("scenario_vae_decode", ["--dtype", "bfloat16", "--models", "tiny-ltx2", "--tiling",
                                         "none,spatiotemporal"]),
}
RAN = ("ltxengine-torch", "ltxengine-auto", "diffusers")  # diffusers+compile: skipped in smoke runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """run name -> (returncode, output, records): the four smoke runs, started together."""
    return run_bench_smokes(RUNS, tmp_path_factory)


@pytest.mark.parametrize("name", list(RUNS))
def test_smoke_run_writes_verified_records(runs, name):
    rc, output, records = runs[name]
    script = RUNS[name][0]
    assert rc == 0, output
    assert records, output
    for r in records:
        missing = [f for f in FIELDS + EXTRA[script] if f not in r]
        assert not missing, f"{name}: record lacks {missing}: {r}"
        assert r["script"] == script and r["device"] == "cpu" and r["smoke"] is True
        if r["impl"] in RAN:
            assert r["status"] == "ok", r
            assert 0 <= r["max_abs_err"] <= r["tolerance"], r
            assert all(err <= tol for err, tol in r["errors"].values()), r
            assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["reps"] == common.SMOKE_REPS
            assert r["ratio_vs_diffusers"] > 0 and r["ratio_vs_diffusers_compile"] is None
        else:
            assert r["impl"] == "diffusers+compile" and r["status"] == "skipped", r
            assert r["reason"].startswith("skipped") and r["median_ms"] is None
    assert {r["impl"] for r in records} == set(RAN) | {"diffusers+compile"}


def test_float32_smoke_is_a_parity_check(runs):
    """In float32 the oracle is ltxengine-torch itself; diffusers must match it to fp32 rounding."""
    for name in ("transformer", "vae"):
        records = runs[name][2]
        for r in records:
            if r["impl"] not in RAN:
                continue
            assert r["max_abs_diff_vs_ltxengine_torch"] == r["max_abs_err"], r
            scale = r["tolerance"] / M.REL_FP32  # max(1, max|output|)
            assert r["max_abs_err"] <= 1e-5 * scale, r
            if r["impl"] == "ltxengine-torch":
                assert r["max_abs_err"] == 0.0
        shapes = {r["shape"] for r in records}
        expected = ({f"{m}-b{b}" for m in T.SMOKE_MODELS for b in (1, 2)} if name == "transformer" else
                    {f"{m}-{t}-b1" for m in V.SMOKE_MODELS for t in V.TILINGS})
        assert shapes == expected


def test_bfloat16_smoke_uses_the_fp32_oracle_and_budget(runs):
    for name in ("transformer-bf16", "vae-bf16"):
        records = runs[name][2]
        for shape in {r["shape"] for r in records}:
            group = {r["impl"]: r for r in records if r["shape"] == shape}
            own = group["ltxengine-torch"]
            for key, (err, tol) in own["errors"].items():
                # budget = 2 x ltxengine-torch's own bf16 error + one bf16 ulp (a power of two)
                assert 0 < err and 2 * err < tol, (shape, key)
                ulp = math.log2(tol - 2 * err)
                assert abs(ulp - round(ulp)) < 1e-6, (shape, key, err, tol)
            assert group["diffusers"]["max_abs_diff_vs_ltxengine_torch"] > 0  # bf16: not the oracle itself
    audio = [r for r in runs["transformer-bf16"][2] if r["impl"] == "diffusers"]
    assert audio and all(set(r["errors"]) == {"video", "audio"} for r in audio)
    st = [r for r in runs["vae-bf16"][2] if r["impl"] == "diffusers" and r["dims"]["tiling"] == "spatiotemporal"]
    assert st and st[0]["verified_on"].startswith("frames 0-8")


def test_transformer_record_contents(runs):
    for r in runs["transformer"][2]:
        d = r["dims"]
        assert d["video_tokens"] == math.prod(d["latent_grid"]) == 45 and d["text_tokens"] == 7
        assert d["audio_tokens"] == (18 if d["model"] == "tiny-ltx2" else 0)
        config = M.TRANSFORMERS[d["model"]]
        assert r["flops"] == T.transformer_flops(config, 45, 7, d["audio_tokens"], d["batch"])
        if r["status"] != "ok":
            continue
        assert r["tflops"] == pytest.approx(r["flops"] / r["median_ms"] / 1e9)
        ltx2 = d["model"] == "tiny-ltx2"
        if r["impl"].startswith("ltxengine"):
            assert r["precomputed"] == (T.PRECOMPUTED_LTX2 if ltx2 else T.PRECOMPUTED_LTXV)
        else:  # what diffusers' pipeline computes once per generation
            assert r["precomputed"] == (["video_coords", "audio_coords"] if ltx2 else [])


def test_vae_record_contents(runs):
    for r in runs["vae"][2]:
        d = r["dims"]
        assert d["output"] == [3, 17, 128, 128] and d["latent"] == [8, 3, 4, 4]
        assert d["decode_timestep"] == (0.05 if d["model"] == "tiny-095" else None)
        if r["status"] == "ok":
            assert r["fps"] == pytest.approx(17 / (r["median_ms"] / 1e3))


# -- the FLOP model (ltx-architecture.md section 6) -------------------------------------------------

def _tokens(name):
    config = M.TRANSFORMERS[name]
    geo = T.geometry(name, smoke=False)
    f, h, w = T.latent_grid(config, geo)
    return config, f * h * w, geo.text_tokens, T.audio_tokens(config, geo)


def test_workload_geometry():
    assert _tokens("2b")[1:] == (6144, 128, 0)
    assert _tokens("13b")[1:] == (6144, 128, 0)
    assert _tokens("ltx2-19b")[1:] == (6144, 1024, 126)  # round(121 / 24 * 25) audio latents


@pytest.mark.parametrize("name, per_block, total", [("2b", 1.0394, 29.1), ("13b", 3.5262, 169.3),
                                                    ("ltx2-19b", 4.1389, 198.8)])
def test_flops_reproduce_section_6(name, per_block, total):
    config, n, l, na = _tokens(name)
    block = T.ltx2_block_flops(config, n, na, l) if M.is_ltx2(config) else T.ltxv_block_flops(config, n, l)
    assert block / 1e12 == pytest.approx(per_block, abs=5e-5)
    assert T.transformer_flops(config, n, l, na) / 1e12 == pytest.approx(total, abs=0.05)
    assert T.transformer_flops(config, n, l, na, batch=2) == 2 * T.transformer_flops(config, n, l, na)


def test_flops_section_6_terms_and_other_resolutions():
    config, n, l, _ = _tokens("2b")
    d = config.inner_dim
    assert T.attention_flops(n, n, d, d, d, d) / 1e9 == pytest.approx(206.16 + 309.24, abs=0.01)
    assert T.attention_flops(n, l, d, d, d, d) / 1e9 == pytest.approx(103.08 + 2.15 + 6.44, abs=0.01)
    ltx2 = M.TRANSFORMERS["ltx2-19b"]
    assert T.transformer_flops(ltx2, 1536, 1024, 126) / 1e12 == pytest.approx(48.0, abs=0.05)  # 384x256
    assert T.transformer_flops(ltx2, 24576, 1024, 126) / 1e12 == pytest.approx(1135.8, abs=0.05)  # 1536x1024


# -- models: random weights, shared storage, the fp32 oracle -------------------------------------------

def test_build_shares_one_storage_with_diffusers_and_twins():
    model = M.build(M.TINY_LTX2, torch.device("cpu"), torch.bfloat16)
    twin, ref = M.share(model, M.TORCH_OPS), M.build_diffusers(model)
    assert type(ref).__name__ == "LTX2VideoTransformer3DModel"
    ptrs = {k: v.data_ptr() for k, v in model.state_dict().items()}
    assert ptrs == {k: v.data_ptr() for k, v in twin.state_dict().items()}
    assert ptrs == {k: v.data_ptr() for k, v in ref.state_dict().items()}
    assert all(p.dtype == torch.bfloat16 and p.device.type == "cpu" for p in ref.parameters())


def test_random_weights_have_realistic_scales():
    torch.manual_seed(0)
    vae = M.build(M.VAES["tiny-095"], torch.device("cpu"), torch.float32, seed=3)
    w = vae.decoder.conv_in.conv.weight
    assert w.std().item() == pytest.approx((w.numel() / w.shape[0]) ** -0.5, rel=0.1)
    assert vae.decoder.timestep_scale_multiplier.item() == 1000.0
    assert torch.equal(vae.latents_std, torch.ones_like(vae.latents_std)) and not vae.latents_mean.any()
    tr = M.build(M.TINY_2B, torch.device("cpu"), torch.float32)
    norm = tr.transformer_blocks[0].attn1.norm_q.weight
    assert (norm - 1).abs().max() < 0.3 and not torch.equal(norm, torch.ones_like(norm))
    table = tr.transformer_blocks[0].scale_shift_table
    assert table.std().item() < 2 * table.shape[-1] ** -0.5
    bias = tr.proj_in.bias
    assert bias.std().item() < 3 * M.BIAS_STD
    again = M.build(M.TINY_2B, torch.device("cpu"), torch.float32)
    assert all(torch.equal(a, b) for a, b in zip(tr.parameters(), again.parameters()))  # seeded


def test_randomize_refuses_an_unknown_tensor():
    module = torch.nn.Module()
    module.register_buffer("mystery", torch.zeros(3))
    module.lin = torch.nn.Linear(2, 2)
    with pytest.raises(ValueError, match=r"randomize_: no initialisation rule for 'mystery' of shape \(3,\)"):
        M.randomize_(module)


def test_fp32_weights_runs_in_float32_and_restores():
    dev, geo = torch.device("cpu"), T.SMOKE_GEOMETRY["ltxv"]
    model = M.build(M.TINY_2B, dev, torch.bfloat16)
    twin = M.share(model, M.TORCH_OPS)
    ptrs = [p.data_ptr() for p in model.parameters()]
    inp = T.make_inputs(M.TINY_2B, geo, 2, dev, torch.bfloat16)
    before = {k: v.clone() for k, v in inp.items()}
    got = T.oracle(model, inp, geo)()["video"]
    assert got.dtype == torch.float32
    assert [p.data_ptr() for p in model.parameters()] == ptrs and all(p.dtype == torch.bfloat16
                                                                     for p in model.parameters())
    assert all(torch.equal(before[k], inp[k]) for k in inp)  # inputs untouched
    ref32 = M.share(twin, M.TORCH_OPS).float()  # a real fp32 model of the same bf16-valued weights
    expected = T.ltxengine_call(ref32, {k: v.float() for k, v in inp.items()}, geo)()["video"]
    assert torch.equal(got, expected)


# -- verification and alternating timing ---------------------------------------------------------------

def _settings(**kw):
    base = dict(script="t", device=torch.device("cpu"), smoke=True, reps=3, warmup=1, out_dir=Path("."),
                shapes=[], impls=None, ceilings={"bf16_matmul_tflops": 1.0})
    return common.Settings(**{**base, **kw})


def test_time_alternating_interleaves_and_drops_a_failing_implementation():
    calls = []

    def make(name, fail_at=None):
        def fn():
            calls.append(name)
            if fail_at is not None and calls.count(name) == fail_at:
                raise RuntimeError("out of memory")
        return fn

    times, errors = M.time_alternating({"a": make("a"), "b": make("b"), "c": make("c", fail_at=3)},
                                       torch.device("cpu"), reps=3, warmup=1)
    assert calls == ["a", "b", "c", "a", "b", "c", "a", "b", "c", "a", "b"]
    assert len(times["a"]) == len(times["b"]) == 3 and len(times["c"]) == 1
    assert errors == {"c": "RuntimeError: out of memory"}
    with pytest.raises(ValueError, match="time_alternating: reps must be >= 1, got 0"):
        M.time_alternating({}, torch.device("cpu"), reps=0, warmup=0)


def test_run_group_verifies_before_timing():
    x = torch.linspace(-1, 1, 7)
    cands = [M.Candidate(M.TORCH_IMPL, lambda: {"y": x * 2}, "torch"),
             M.Candidate("good", lambda: {"y": x * 2 + 1e-7}),
             M.Candidate("wrong", lambda: {"y": x * 2 + 1e-3}),
             M.Candidate("broken", lambda: 1 / 0),
             M.Candidate("shape", lambda: {"y": x[:3]}),
             M.Candidate("missing", lambda: {"z": x}),
             M.Candidate(M.DIFFUSERS, lambda: {"y": x * 2}),
             M.compile_skipped("skipped: --no-compile")]
    res = {r["impl"]: r for r in M.run_group(cands, _settings(), torch.float32)}
    assert res["good"]["status"] == "ok" and res["good"]["max_abs_err"] == pytest.approx(1e-7, rel=0.5)
    assert res["good"]["tolerance"] == pytest.approx(M.REL_FP32 * 2)  # max(1, |ref| = 2)
    assert res["wrong"]["status"] == "failed" and res["wrong"]["median_ms"] is None
    assert res["wrong"]["reason"].startswith("failed: y max_abs_err 1.000e-03 > tolerance")
    assert res["broken"]["status"] == "unavailable" and "ZeroDivisionError" in res["broken"]["reason"]
    assert res["shape"]["reason"] == "failed: ValueError: max_abs_err: output shape (3,) != reference (7,)"
    assert res["missing"]["status"] == "failed" and "KeyError" in res["missing"]["reason"]
    assert res["diffusers+compile"]["status"] == "skipped"
    assert res["good"]["ratio_vs_diffusers"] > 0 and res["good"]["reps"] == 3


def test_run_group_needs_the_oracle_and_compares_views():
    x = torch.arange(6.0).view(1, 1, 6)
    late = torch.cat([x[:, :, :3], x[:, :, 3:] + 5], dim=2)
    cands = [M.Candidate(M.TORCH_IMPL, lambda: {"v": x}),
             M.Candidate("head-only", lambda: {"v": late}, view=lambda d: {k: t[:, :, :3] for k, t in d.items()})]
    res = {r["impl"]: r for r in M.run_group(cands, _settings(), torch.float32)}
    assert res["head-only"]["status"] == "ok" and res["head-only"]["max_abs_err"] == 0
    res = M.run_group([M.Candidate(M.TORCH_IMPL, lambda: 1 / 0), M.Candidate("x", lambda: {"v": x})],
                      _settings(), torch.float32)
    assert res[1]["status"] == "failed" and res[1]["reason"] == "failed: no oracle (ltxengine-torch did not run)"
    res = M.run_group([M.Candidate(M.TORCH_IMPL, lambda: {"v": x})], _settings(), torch.bfloat16,
                      oracle=lambda: 1 / 0)
    assert res[0]["reason"] == "failed: the float32 oracle raised ZeroDivisionError: division by zero"


def test_budgets():
    ref = {"v": torch.tensor([0.0, 3.0])}
    assert M.budgets(ref, ref, torch.float32) == {"v": pytest.approx(3e-5)}
    low = {"v": torch.tensor([0.01, 3.0])}
    assert M.budgets(low, ref, torch.bfloat16) == {"v": pytest.approx(0.02 + 2.0 ** -6)}
    assert M.exit_status([{"impl": "ltxengine-auto", "status": "failed"}], 0) == 1
    assert M.exit_status([{"impl": "diffusers", "status": "failed"}], 0) == 0


# -- command line errors --------------------------------------------------------------------------------

@pytest.mark.parametrize("script", [T, V])
@pytest.mark.parametrize("argv, message", [
    (["--smoke", "--models", "nope"], "--models: unknown name 'nope'"),
    (["--smoke", "--batch", "0"], "--batch must list positive integers, got '0'"),
    (["--smoke", "--batch", "x"], "--batch must be comma-separated integers, got 'x'"),
    (["--smoke", "--kernels", "fast"], "--kernels: unknown name 'fast'"),
    ([], "no CUDA device: full-size runs need a GPU"),
])
def test_command_line_errors(script, argv, message, capsys):
    if not argv and torch.cuda.is_available():
        pytest.skip("a GPU is present: a full run would start")
    with pytest.raises(SystemExit) as e:
        script.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


def test_vae_tiling_option_and_configs():
    with pytest.raises(SystemExit):
        V.main(["--smoke", "--tiling", "diagonal"])
    assert V.tiling_config("none", 16, 8, smoke=False) is None
    spatial = V.tiling_config("spatial", 16, 8, smoke=False)
    assert spatial.tile_sample_min_num_frames == 128 and spatial.tile_sample_min_width == 512
    assert V.tiling_config("spatiotemporal", 16, 8, smoke=False).tile_sample_min_num_frames == 16
