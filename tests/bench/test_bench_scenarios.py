"""bench/scenario_*.py: the smoke runs (CPU, tiny configs) and the pieces they are built from.

The float32 smoke runs are the parity check of ltxengine against diffusers at model level: every
implementation is compared with ltxengine-torch's output within 1e-5 of the output scale. The
bfloat16 smoke runs exercise the GPU path's oracle (a float32 forward on the bf16 weights, one
block upcast at a time) and its error budget. The FLOP model must reproduce the per-step numbers
of ltx-architecture.md section 6.
"""

from __future__ import annotations

import math
import re
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
def all_runs(tmp_path_factory):
    """Every smoke run of this file (RUNS, FP8_RUNS and GRAPH_RUNS below), started together."""
    return run_bench_smokes({**RUNS, **FP8_RUNS, **GRAPH_RUNS}, tmp_path_factory)


@pytest.fixture(scope="module")
def runs(all_runs):
    """run name -> (returncode, output, records): the four smoke runs of RUNS."""
    return {name: all_runs[name] for name in RUNS}


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
            # per output the oracle is ltxengine-torch's output, so the largest error is the largest difference
            # (the headline max_abs_err is the worst output relative to its own tolerance, maybe another one)
            assert r["max_abs_diff_vs_ltxengine_torch"] == max(e for e, _ in r["errors"].values()), r
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
            # vs the bf16 ltxengine-torch twin, not the fp32 oracle: the transformer's torch backend computes
            # diffusers' own bf16 arithmetic (ops/native.py, d04fb36), so bit-equal; the VAE's does not
            diff = group["diffusers"]["max_abs_diff_vs_ltxengine_torch"]
            assert diff == 0 if name == "transformer-bf16" else diff > 0, (name, shape, diff)
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


# -- fp8 against bf16 (bench/scenario_fp8.py, bench/fp8_quality.py) ---------------------------------

from bench import fp8_quality as Q  # noqa: E402
from bench import scenario_fp8 as F8  # noqa: E402
from ltxengine.quant import POLICIES, Fp8Linear, fp8_targets  # noqa: E402

FP8_RUNS = {  # name -> (script, extra arguments); bfloat16 on the CPU, 8-block tiny models
    "fp8": ("scenario_fp8", []),
    "fp8-quality": ("fp8_quality", ["--models", "tiny8-2b", "--policies", "fp8-scaled-mm"]),
}
FP8_FIELDS = FIELDS[:10] + ("median_ms", "reps", "peak_mem_bytes", "ratio_vs_bf16", "ratio_basis", "timed_with",
                            "rel_l2_vs_bf16", "gate_rel_l2", "weight_bytes", "weight_bytes_bf16",
                            "weight_ratio_vs_bf16", "fp8_layers", "memory_plan", "memory_estimate", "flops", "tflops",
                            "ceilings", "env")


def _split(rc, output, records, quality_only=False):
    """(returncode, output, step records, quality records): scenario_fp8 writes the quality
    records next to its own, in fp8_quality.jsonl."""
    if quality_only:
        return rc, output, [], records
    paths = [Path(p) for p in re.findall(r"records appended to (\S+)", output) if p.endswith("fp8_quality.jsonl")]
    return rc, output, records, common.read_results(paths[0]) if paths else []


def _in_process(tmp_path_factory, name, argv):
    """scenario_fp8 in this process (the memory-plan variants: short runs of one tiny model)."""
    import contextlib
    import io

    out, buf = tmp_path_factory.mktemp(name), io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = F8.main(["--smoke", "--out", str(out), *argv])
    path = out / "scenario_fp8.jsonl"
    return _split(rc, buf.getvalue(), common.read_results(path) if path.exists() else [])


@pytest.fixture(scope="module")
def fp8_runs(all_runs, tmp_path_factory):
    """run name -> (returncode, output, step records, quality records)."""
    out = {name: _split(*all_runs[name], quality_only=FP8_RUNS[name][0] == "fp8_quality") for name in FP8_RUNS}
    out["fp8-pairwise"] = _in_process(tmp_path_factory, "fp8-pairwise", [
        "--models", "tiny8-2b", "--memory-plan", "pairwise", "--no-quality"])
    out["fp8-sequential"] = _in_process(tmp_path_factory, "fp8-sequential", [
        "--models", "tiny8-2b", "--memory-plan", "sequential", "--policies", "fp8-scaled-mm"])
    return out


def _meta(name):
    config = Q.CONFIGS[name]
    with torch.device("meta"):
        return M._CLASSES[type(config)][0](config).to(torch.bfloat16)


def _expected_bytes(name, policy):
    """bf16 bytes of every tensor; an fp8 twin stores its converted weights in 1 byte + a 4-byte scale,
    and keeps that scale per output channel too (Fp8Linear.channel_scale, 4 bytes a row: 40723df)."""
    model = _meta(name)
    total = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    if policy is None:
        return total
    layers = [model.get_submodule(n) for n in fp8_targets(model, policy)]
    return total - sum(layer.weight.numel() - 4 - 4 * layer.out_features for layer in layers)


@pytest.mark.parametrize("name", [*FP8_RUNS, "fp8-pairwise", "fp8-sequential"])
def test_fp8_smoke_runs(fp8_runs, name):
    rc, output, records, quality = fp8_runs[name]
    assert rc == 0, output
    assert records or name == "fp8-quality", output
    for r in records:
        missing = [f for f in FP8_FIELDS if f not in r]
        assert not missing, f"{name}: record lacks {missing}: {r}"
        assert r["script"] == "scenario_fp8" and r["device"] == "cpu" and r["dtype"] == "bfloat16", r
        assert r["status"] == "ok", r
        model, policy = r["dims"]["model"], r["policy"]
        assert r["weight_bytes"] == _expected_bytes(model, policy) and r["weight_bytes_bf16"] == _expected_bytes(model,
                                                                                                                None)
        assert r["fp8_layers"] == (len(fp8_targets(_meta(model), policy)) if policy else 0)
        assert r["flops"] == T.transformer_flops(Q.CONFIGS[model], 45, 7, r["dims"]["audio_tokens"], 2)
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["reps"] == common.SMOKE_REPS
        if policy is None:
            assert r["impl"] == "ltxengine-bf16" and r["rel_l2_vs_bf16"] is None
            continue
        assert r["impl"] == f"ltxengine-{policy}" and r["weight_ratio_vs_bf16"] < 1
        # fp8 rounding must show (the twin is not the bf16 model) and stay under the gate
        assert all(0 < e <= F8.GATE_REL_L2 for e in r["rel_l2_vs_bf16"].values()), r
        assert set(r["rel_l2_vs_bf16"]) == ({"video", "audio"} if model == "tiny8-ltx2" else {"video"})
    assert not any(r["status"] == "failed" for r in quality), quality


def test_fp8_together_plan_times_all_three_in_one_rotation(fp8_runs):
    records = fp8_runs["fp8"][2]
    assert {r["shape"] for r in records} == {"tiny8-2b-b2", "tiny8-ltx2-b2"}
    for shape in ("tiny8-2b-b2", "tiny8-ltx2-b2"):
        group = {r["impl"]: r for r in records if r["shape"] == shape}
        assert set(group) == {"ltxengine-bf16"} | {f"ltxengine-{p}" for p in POLICIES}
        for r in group.values():
            assert r["memory_plan"] == "together" and r["timed_with"] == sorted(group)
            assert r["ratio_basis"] == "same rotation"
            assert r["ratio_vs_bf16"] == pytest.approx(group["ltxengine-bf16"]["median_ms"] / r["median_ms"])


def test_fp8_pairwise_and_sequential_plans(fp8_runs):
    pairwise = fp8_runs["fp8-pairwise"][2]
    bf16 = [r for r in pairwise if r["impl"] == "ltxengine-bf16"]
    assert len(bf16) == 2 and sorted(len(r["timed_with"]) for r in pairwise) == [2, 2, 2, 2]
    for r in pairwise:
        assert r["memory_plan"] == "pairwise" and r["ratio_basis"] == "same rotation"
        assert "ltxengine-bf16" in r["timed_with"]
    sequential = {r["impl"]: r for r in fp8_runs["fp8-sequential"][2]}
    fp8 = sequential["ltxengine-fp8-scaled-mm"]
    assert fp8["timed_with"] == ["ltxengine-fp8-scaled-mm"] and fp8["ratio_basis"] == "separate timing"
    assert fp8["ratio_vs_bf16"] == pytest.approx(sequential["ltxengine-bf16"]["median_ms"] / fp8["median_ms"])
    # converted in place from a model built with the same seed: the same fp8 values as the twins
    together = next(r for r in fp8_runs["fp8"][2] if r["shape"] == "tiny8-2b-b2" and r["impl"] == fp8["impl"])
    assert fp8["rel_l2_vs_bf16"] == together["rel_l2_vs_bf16"]
    skipped = fp8_runs["fp8-sequential"][3]
    assert skipped and all(r["status"] == "skipped" and "sequential" in r["reason"] for r in skipped)


def test_fp8_quality_records(fp8_runs):
    quality = fp8_runs["fp8"][3]
    assert {(r["op"], r["impl"]) for r in quality if r["dims"]["model"] == "tiny8-ltx2"} == {
        ("denoise_psnr", "ltxengine-bf16"), *{(op, f"ltxengine-{p}") for p in POLICIES
                                              for op in ("denoise_psnr", "layer_rel_l2")}}
    standalone = fp8_runs["fp8-quality"][3]
    assert {(r["op"], r["impl"]) for r in standalone} == {("denoise_psnr", "ltxengine-bf16"),
                                                         ("denoise_psnr", "ltxengine-fp8-scaled-mm"),
                                                         ("layer_rel_l2", "ltxengine-fp8-scaled-mm")}
    for records in (quality, standalone):
        _check_quality(records)


def _check_quality(records):
    for r in records:
        assert r["script"] == "fp8_quality" and r["status"] == "ok" and r["median_ms"] is None, r
        model = r["dims"]["model"]
        if r["op"] == "layer_rel_l2":
            targets = fp8_targets(_meta(model), r["policy"])
            assert r["layers"] == len(targets) == len(r["per_layer"]) and r["not_called"] == []
            err, own = r["layer_rel_l2_vs_bf16"], r["bf16_layer_rel_l2_vs_fp32"]
            # e4m3 keeps 3 mantissa bits, bf16 7: fp8's own rounding is several times bf16's, and a
            # layer's relative error stays at the few-percent level (1.0 would be an unrelated output)
            assert 0 < err["median"] <= err["p90"] <= err["max"] < 0.1
            assert 4 * own["median"] < err["median"]
        elif r["policy"] is None:  # bf16 against the float32 denoise of the same weights
            assert r["psnr_db"] is None and all(v > 40 for v in r["psnr_db_vs_fp32"].values())
        else:
            bf16 = next(q for q in records if q["dims"]["model"] == model and q["impl"] == "ltxengine-bf16")
            for k, v in r["psnr_db"].items():
                assert v > 20  # same weights, noise and schedule: a broken fp8 model gives ~0 dB
                assert r["psnr_db_vs_fp32"][k] < bf16["psnr_db_vs_fp32"][k]  # fp8 is further from fp32
            assert r["dims"]["steps"] == len(Q.SMOKE_STEPS) - 1 and len(r["dims"]["sigmas"]) == len(Q.SMOKE_STEPS)


def test_fp8_records_in_the_report(fp8_runs, tmp_path):
    """report.py shows quality records (no time) with their PSNR / layer error."""
    from bench import report

    rows = [dict(r, device="cuda", smoke=False) for r in fp8_runs["fp8"][2] + fp8_runs["fp8"][3]]
    common.append_results(tmp_path / "x.jsonl", rows)
    text = report.table(report.latest_gpu_records(tmp_path))
    assert "| fp8_quality | denoise_psnr / tiny8-2b-3steps | ltxengine-fp8-cast | - | PSNR vs bf16 video " in text
    assert "| fp8_quality | denoise_psnr / tiny8-2b-3steps | ltxengine-bf16 | - | PSNR vs fp32 video " in text
    assert "| fp8_quality | layer_rel_l2 / tiny8-ltx2-b1 | ltxengine-fp8-cast | - | layer rel L2 median 0.0" in text
    assert "| scenario_fp8 | transformer_step / tiny8-2b-b2 | ltxengine-fp8-scaled-mm | " in text


def test_fp8_twin_shares_everything_but_the_converted_weights():
    model = M.build(Q.CONFIGS["tiny8-2b"], torch.device("cpu"), torch.bfloat16)
    before = {k: (v.data_ptr(), v.dtype) for k, v in model.state_dict().items()}
    twin = Q.fp8_twin(model, "fp8-scaled-mm")
    assert {k: (v.data_ptr(), v.dtype) for k, v in model.state_dict().items()} == before  # bf16 untouched
    names = fp8_targets(model, "fp8-scaled-mm")
    assert names and all(isinstance(twin.get_submodule(n), Fp8Linear) for n in names)
    shared = {k for k, v in twin.state_dict().items() if k in before and v.data_ptr() == before[k][0]}
    assert shared == {k for k in before if not any(k == f"{n}.weight" for n in names)}


def test_layer_errors_compare_each_layer_on_its_own_input():
    geo = T.SMOKE_GEOMETRY["ltxv"]
    model = M.build(Q.CONFIGS["tiny8-2b"], torch.device("cpu"), torch.bfloat16)
    twin = Q.fp8_twin(model, "fp8-cast")
    names = fp8_targets(model, "fp8-cast")
    broken = names[3]
    twin.get_submodule(broken).weight_scale.data.mul_(2)  # a scale wired twice: output doubled
    inp = T.make_inputs(model.config, geo, 1, torch.device("cpu"), torch.bfloat16)
    step = T.ltxengine_call(model, inp, geo, cross_kv=False)  # every layer inside the step (fp8_quality's call)
    rows, not_called = Q.layer_errors(model, twin, names + ["proj_in"], step)
    errs = {r[0]: r[1] for r in rows}
    assert not_called == [] and set(errs) == set(names) | {"proj_in"}
    # proj_in is not converted: the twin's layer is the same bf16 layer, so on the same input it
    # must agree exactly (errors accumulated upstream would show here if inputs were not shared)
    assert errs["proj_in"] == 0.0
    assert errs[broken] == pytest.approx(1.0, abs=0.1)  # |2y - y| / |y|
    assert all(0 < e < 0.1 for n, e in errs.items() if n not in (broken, "proj_in"))
    # the hooks are removed: another forward records nothing more
    assert all(not m._forward_hooks for m in model.modules())


def test_plan_memory_chooses_by_the_estimate():
    model = M.build(Q.CONFIGS["tiny8-2b"], torch.device("cpu"), torch.bfloat16)
    copies = {p: F8.fp8_copy_bytes(model, p) for p in POLICIES}
    assert copies == {p: sum(model.get_submodule(n).weight.numel() + 4 for n in fp8_targets(model, p))
                      for p in POLICIES}
    largest = max(model.get_submodule(n).weight.numel() for p in POLICIES for n in fp8_targets(model, p))
    act = 1000
    headroom = int(1.25 * act) + 9 * largest + (1 << 30)
    together, pair = sum(copies.values()) + headroom, max(copies.values()) + headroom
    policies = list(POLICIES)
    assert F8.plan_memory(model, policies, act, None)[0] == "together"  # CPU: nothing to plan
    assert F8.plan_memory(model, policies, act, together)[0] == "together"
    assert F8.plan_memory(model, policies, act, together - 1)[0] == "pairwise"
    assert F8.plan_memory(model, policies, act, pair - 1)[0] == "sequential"
    plan, estimate = F8.plan_memory(model, policies, act, pair - 1, "together")  # asked for: obeyed
    assert plan == "together" and estimate["need_together_bytes"] == together
    assert estimate["need_pairwise_bytes"] == pair and estimate["headroom_bytes"] == headroom
    with pytest.raises(ValueError, match="plan_memory: requested must be one of .* got 'maybe'"):
        F8.plan_memory(model, policies, act, None, "maybe")


def test_fp8_gate_fails_a_wrong_model_before_timing():
    x = torch.linspace(-1, 1, 50).view(1, 50, 1)
    ref = {"video": x}
    fns = {F8.BF16: lambda: {"video": x}, "close": lambda: {"video": x * 1.05},
           "scaled": lambda: {"video": x * 2}, "nan": lambda: {"video": x * float("nan")}, "raises": lambda: 1 / 0}
    results = {name: F8._result(name, None if name == F8.BF16 else "p", _settings()) for name in fns}
    F8.time_group(_settings(), fns, results, ref)
    close = results["close"]
    assert close["status"] == "ok" and close["rel_l2_vs_bf16"]["video"] == pytest.approx(0.05, rel=1e-5)
    assert results["close"]["ratio_vs_bf16"] > 0 and results["close"]["timed_with"] == ["close", F8.BF16]
    for name in ("scaled", "nan"):
        assert results[name]["status"] == "failed" and results[name]["median_ms"] is None
        reason = results[name]["reason"]
        assert reason.startswith("failed: video rel L2 vs bf16") and reason.endswith("> gate 0.15; not timed")
    assert results["raises"]["status"] == "unavailable" and "ZeroDivisionError" in results["raises"]["reason"]


def test_quality_metrics():
    ref = torch.tensor([0.0, 1.0])
    assert Q.psnr(torch.tensor([0.1, 1.0]), ref) == pytest.approx(10 * math.log10(1 / 0.005))
    assert Q.psnr(ref, ref) == math.inf and math.isnan(Q.psnr(ref * float("nan"), ref))
    assert Q.rel_l2(torch.tensor([0.0, 2.0]), ref) == pytest.approx(1.0)
    assert Q.rel_l2(ref * 0, ref * 0) == 0.0 and Q.rel_l2(ref, ref * 0) == math.inf
    assert Q.sigmas(M.TINY_2B) == [t / 1000 for t in (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 0.03)] + [0.0]
    assert Q.sigmas(M.TINY_LTX2, smoke=True) == [1.0, 0.98125, 0.725, 0.0]
    assert Q.layer_summary([["transformer_blocks.3.attn1.to_q", 0.02, 0.03, 0.001],
                            ["transformer_blocks.4.attn1.to_q", 0.04, 0.05, 0.002]])["per_kind_mean_rel_l2_vs_bf16"] \
        == {"attn1.to_q": pytest.approx(0.03)}


@pytest.mark.parametrize("script", [F8, Q])
@pytest.mark.parametrize("argv, message", [
    (["--smoke", "--models", "tiny-2b"], "--models: unknown name 'tiny-2b'"),
    (["--smoke", "--policies", "int4"], "--policies: unknown name 'int4'"),
    (["--smoke", "--kernels", "fast"], "argument --kernels: invalid choice: 'fast'"),
    (["--smoke", "--kernels", "cuda"], "--kernels cuda: unavailable: ValueError: kernels='cuda' needs a CUDA device"),
    ([], "no CUDA device: full-size runs need a GPU"),
])
def test_fp8_command_line_errors(script, argv, message, capsys):
    if torch.cuda.is_available() and (not argv or "cuda" in argv):
        pytest.skip("a GPU is present: the run would start")
    with pytest.raises(SystemExit) as e:
        script.main(argv)
    assert e.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--smoke", "--memory-plan", "maybe"], "argument --memory-plan: invalid choice: 'maybe'"),
    (["--smoke", "--batch", "0"], "--batch must list positive integers, got '0'"),
    (["--smoke", "--batch", "x"], "--batch must be comma-separated integers, got 'x'"),
])
def test_scenario_fp8_option_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as e:
        F8.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_bench_suites_include_the_fp8_scenario():
    from ltxengine.cli import _BENCH_SUITES

    for suite, model in (("2b", "2b"), ("13b", "13b"), ("ltx2", "ltx2-19b")):
        assert ("scenario_fp8", ["--models", model]) in _BENCH_SUITES[suite]


# -- the executor and generation memory (bench/scenario_graphs.py, bench/graphs_memory.py) -------------

from types import SimpleNamespace  # noqa: E402

from bench import graphs_memory as GM  # noqa: E402
from bench import report  # noqa: E402
from bench import scenario_graphs as SG  # noqa: E402

GRAPH_RUNS = {"graphs": ("scenario_graphs", [])}  # both tiny models, both parts, float32 on the CPU
PHASES = {"tiny-2b": ["text", "denoise", "decode"], "tiny-ltx2": ["text", "denoise", "upsample", "refine", "decode"]}


def test_graphs_smoke_step_records(all_runs):
    rc, output, records = all_runs["graphs"]
    assert rc == 0, output
    steps = [r for r in records if r["op"] == "denoise_step"]
    assert {r["shape"] for r in steps} == {"tiny-2b-b2", "tiny-ltx2-b4"}, output
    for r in steps:
        assert r["script"] == "scenario_graphs" and r["device"] == "cpu" and r["smoke"] is True
        model, batch = r["dims"]["model"], r["dims"]["batch"]
        assert r["flops"] == T.transformer_flops(M.TRANSFORMERS[model], 45, 7, r["dims"]["audio_tokens"], batch)
        assert r["dims"]["passes"] == (["uncond", "cond"] if model == "tiny-2b" else
                                       ["cond", "uncond", "perturbed", "isolated"])
        if r["impl"] == "graphs":  # needs CUDA: skipped with the reason, also printed
            assert r["status"] == "skipped" and "CUDA graphs need a CUDA device" in r["reason"], r
            assert f"{model} graphs: skipped" in output
            continue
        assert r["status"] == "ok", r
        assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["reps"] == common.SMOKE_REPS
        assert r["ratio_vs_none"] > 0 and r["profile"] == {"skipped": "no CUDA device"}
        if r["impl"] == "eager":
            # the executor's static buffers give what the plain call gives (float32: same arithmetic)
            assert 0 <= r["rel_diff_vs_none"] <= r["tolerance"] == SG.GATE_FP32, r
            # one bucket; per-generation constants (text context, RoPE tables) are copied once, not per step
            assert r["buckets"] == 1 and r["copies_skipped"] > 0, r


def test_graphs_smoke_memory_records(all_runs):
    rc, output, records = all_runs["graphs"]
    mem = {r["shape"]: r for r in records if r["op"] == "generate_memory"}
    assert set(mem) == {"tiny-2b-offload-text", "tiny-2b-offload-text-encoder", "tiny-2b-resident",
                        "tiny-ltx2-resident"}, output
    for shape, r in mem.items():
        assert r["status"] == "ok" and r["impl"] == "ltxengine-eager", r
        assert r["offload"] == list(GM.OFFLOAD[shape.split("-", 2)[2]]) and r["offload_effective"] == []
        assert len(r["runs"]) == 2 and r["median_ms"] > 0
        for run in r["runs"]:  # every phase boundary fired, in order; no GPU figures on the CPU
            assert list(run["phases"]) == PHASES[r["dims"]["model"]], run
            assert all(v == {"max_allocated_bytes": None, "max_reserved_bytes": None} for v in run["phases"].values())
            assert run["stage_seconds"]["total"] > 0
        assert r["weights_bytes"]["transformer"] > 0 and r["weights_bytes"]["text_encoder"] > 0
        assert r["graphs"]["buckets"] >= 1 and r["graphs"]["capture_bytes"] == 0
    assert mem["tiny-2b-offload-text"]["criterion"] == {"target_bytes": GM.TARGET_2B_BYTES, "met": None,
                                                        "metric": "peak_after_text_reserved_bytes"}
    assert set(mem["tiny-ltx2-resident"]["weights_bytes"]) == {"transformer", "vae", "text_encoder", "connectors",
                                                               "audio_vae", "vocoder", "latent_upsampler"}


def _event(kind, name, us):
    from torch.autograd import DeviceType
    from torch.autograd.profiler_util import Interval

    return SimpleNamespace(device_type=DeviceType.CUDA if kind != "cpu" else DeviceType.CPU, name=name,
                           activity_type=kind if kind not in ("cpu", None) else None, time_range=Interval(0, us))


def test_gpu_time_separates_kernels_copies_and_annotations():
    events = [_event("kernel", "gemm", 10.0), _event("kernel", "softmax", 2.5), _event("gpu_memcpy", "Memcpy DtoD", 4.0),
              _event("gpu_memset", "Memset", 1.0), _event("gpu_user_annotation", "step", 50.0),
              _event("cpu", "aten::mm", 99.0),
              _event(None, "flash_fwd", 3.0), _event(None, "Memcpy HtoD", 7.0)]  # older torch: by name
    assert SG.gpu_time(events) == {"kernel_us": 15.5, "copy_us": 12.0, "kernels": 3}
    assert SG.overhead(1.0, 4.0) == 0.75
    with pytest.raises(ValueError, match="overhead: step_ms must be > 0, got 0"):
        SG.overhead(1.0, 0)


def test_step_gate_fails_a_wrong_output():
    ref = {"video": torch.linspace(-1, 1, 10)}
    res = SG._step_result("graphs")
    SG._gate(res, {"video": ref["video"] * 1.05}, ref, 1e-2)
    assert res["status"] == "failed" and res["rel_diff_vs_none"] == pytest.approx(0.05, rel=1e-5)
    assert res["reason"].startswith("failed: rel diff vs none") and "not timed" in res["reason"]
    res = SG._step_result("eager")
    SG._gate(res, ref, None, 1e-2)
    assert res["status"] == "failed" and "no reference" in res["reason"]
    res = SG._step_result("graphs")
    assert SG._first_call(res, lambda: 1 / 0, _settings()) is None
    assert res["status"] == "failed" and "ZeroDivisionError" in res["reason"]


class _FakeCuda:
    """torch.cuda's peak counters, scripted: each read returns the next value."""

    def __init__(self, monkeypatch, peaks):
        self.peaks, self.resets = iter(peaks), 0
        monkeypatch.setattr(torch.cuda, "synchronize", lambda *a: None)
        monkeypatch.setattr(torch.cuda, "reset_peak_memory_stats", self.reset)
        monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda *a: next(self.peaks))
        monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda *a: 10 * next(self.peaks))

    def reset(self, *a):
        self.resets += 1


def test_phase_memory_boundaries_and_peaks(monkeypatch):
    class Tr(torch.nn.Module):
        def prepare_context(self, x):
            return x

    engine = SimpleNamespace(device=torch.device("cuda"), transformer=Tr(), latent_upsampler=torch.nn.Identity(),
                             vae=SimpleNamespace(decoder=torch.nn.Identity()))
    fake = _FakeCuda(monkeypatch, [5, 6, 7, 8, 9, 10, 11, 12, 3, 4, 2, 1])
    tracker = GM.PhaseMemory(engine)
    tracker.start()
    x = torch.ones(1)
    engine.transformer.prepare_context(x)  # text -> denoise (allocated 5, reserved 60)
    engine.transformer.prepare_context(x)  # a second context: still denoise
    engine.latent_upsampler(x)  # denoise (7, 80) -> upsample (9, 100) -> refine
    engine.vae.decoder(x)  # refine (11, 120) -> decode
    engine.vae.decoder(x)  # a second tile: still decode
    tracker.mark("denoise")  # decode (3, 40) -> denoise again: its peaks merge with the first ones'
    tracker.mark(None)  # denoise (2, 10) merged with the first denoise's (7, 80)
    assert list(tracker.phases) == ["text", "denoise", "upsample", "refine", "decode"]
    assert tracker.phases["text"] == {"max_allocated_bytes": 5, "max_reserved_bytes": 60}
    assert tracker.phases["denoise"] == {"max_allocated_bytes": 7, "max_reserved_bytes": 80}
    assert tracker.phases["upsample"] == {"max_allocated_bytes": 9, "max_reserved_bytes": 100}
    assert tracker.phases["decode"] == {"max_allocated_bytes": 3, "max_reserved_bytes": 40}
    assert fake.resets == 7  # start + six boundaries
    tracker.close()
    assert "prepare_context" not in vars(engine.transformer) and not engine.latent_upsampler._forward_pre_hooks
    assert not engine.vae.decoder._forward_pre_hooks and not engine.latent_upsampler._forward_hooks


def test_memory_failures_are_recorded(monkeypatch):
    class Tr(torch.nn.Module):
        def prepare_context(self, x):
            return x

    engine = SimpleNamespace(device=torch.device("cpu"), transformer=Tr(), latent_upsampler=None, executor=None,
                             vae=SimpleNamespace(decoder=torch.nn.Identity()))
    res = {"runs": []}
    with pytest.raises(ZeroDivisionError):
        GM._measure(engine, lambda: (engine.transformer.prepare_context(1), 1 / 0), res, _settings(), 2)
    assert res["failed_in_phase"] == "denoise" and res["runs"] == []
    assert "prepare_context" not in vars(engine.transformer) and not engine.vae.decoder._forward_pre_hooks

    def no_memory(*a):
        raise RuntimeError("CUDA out of memory")
    monkeypatch.setattr(GM, "build_ltxv_engine", no_memory)
    args = SimpleNamespace(executor="auto")
    records = GM.bench_memory(_settings(), "tiny-2b", torch.float32, None, args)
    assert [r["shape"] for r in records] == ["tiny-2b-offload-text", "tiny-2b-offload-text-encoder", "tiny-2b-resident"]
    assert all(r["status"] == "failed" and "RuntimeError: CUDA out of memory" in r["reason"] for r in records)


def test_memory_criteria(monkeypatch):
    total, free, reserved = 80 * 2 ** 30, 10 * 2 ** 30, 60 * 2 ** 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda *a: (free, total))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda *a: reserved)
    context = total - free - reserved
    for peak in (GM.BUDGET_BYTES - context, GM.BUDGET_BYTES - context + 1):
        v = GM._verdict("ltx2-19b", "resident", {"peak_reserved_bytes": peak}, torch.device("cuda"))
        assert v["context_bytes"] == context and v["peak_device_bytes"] == peak + context
        assert v["budget_bytes"] == min(GM.BUDGET_BYTES, total) and v["headroom_bytes"] == v["budget_bytes"] - peak - context
        assert v["fits"] == (v["headroom_bytes"] >= 0)
    two_b = {"peak_after_text_reserved_bytes": GM.TARGET_2B_BYTES + 1}
    assert GM._verdict("2b", "offload-text", two_b, None)["met"] is False
    assert GM._verdict("2b", "resident", two_b, None) == {}
    runs = [{"phases": {"text": {"r": 9}, "decode": {"r": 4}}}, {"phases": {"denoise": {"r": 5}, "text": {"r": None}}}]
    assert GM._peaks(runs, "r") == 9 and GM._peaks(runs, "r", ("text",)) == 5


def test_graphs_records_in_the_report():
    env = {"gpu": "H100", "date": "2026-01-01T00:00:00"}
    step = {"script": "scenario_graphs", "op": "denoise_step", "shape": "2b-b2", "impl": "graphs", "status": "ok",
            "median_ms": 50.0, "tflops": 1.5, "overhead_outside_kernels": 0.015, "env": env}
    mem = {"script": "scenario_graphs", "op": "generate_memory", "shape": "2b-offload-text", "impl": "ltxengine-graphs",
           "status": "ok", "median_ms": 9000.0, "peak_reserved_bytes": 3 * 2 ** 29, "env": env}
    text = report.table([step, mem])
    assert "| 1.5 TFLOP/s, 1.5% outside kernels |" in text
    assert "| peak 1.50 GiB reserved |" in text


def test_bench_suites_include_the_graphs_scenario():
    from ltxengine.cli import _BENCH_SUITES

    assert ("scenario_graphs", ["--models", "2b"]) in _BENCH_SUITES["2b"]
    assert ("scenario_graphs", ["--models", "ltx2-19b"]) in _BENCH_SUITES["ltx2"]


@pytest.mark.parametrize("argv, message", [
    (["--smoke", "--parts", "speed"], "--parts: unknown name 'speed'"),
    (["--smoke", "--impls", "cudagraph"], "--impls: unknown name 'cudagraph'"),
    (["--smoke", "--models", "13b"], "--models: unknown name '13b'"),
    (["--smoke", "--runs", "0"], "--runs must be >= 1, got 0"),
    (["--smoke", "--ltx2-steps", "1"], "--ltx2-steps must be >= 2, got 1"),
    (["--smoke", "--ltxv-steps", "0"], "--ltxv-steps must be >= 1, got 0"),
    (["--smoke", "--profile-steps", "-1"], "--profile-steps must be >= 0, got -1"),
    (["--smoke", "--executor", "jit"], "argument --executor: invalid choice: 'jit'"),
    ([], "no CUDA device: full-size runs need a GPU"),
])
def test_graphs_command_line_errors(argv, message, capsys):
    if not argv and torch.cuda.is_available():
        pytest.skip("a GPU is present: a full run would start")
    with pytest.raises(SystemExit) as e:
        SG.main(argv)
    assert e.value.code == 2 and message in capsys.readouterr().err
