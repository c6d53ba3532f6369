"""bench/: the smoke run of every benchmark script (what CI runs) and the shared harness.

The scripts run on the CPU (CUDA hidden, Triton through its interpreter) in parallel
subprocesses, each into its own results file; their records must parse, carry every field and
pass their own verification. The harness's statistics, result files, verification and ratio
logic are checked directly on known inputs.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from bench import common
from tests.helpers import run_bench_smokes

SCRIPTS = {"ops_qk_norm_rope": "gbps", "ops_adaln": "gbps", "ops_fp8_gemm": "tflops", "ops_conv3d": "tflops",
           "ops_linear_epilogue": "tflops", "ops_gguf_linear": "tflops"}
FIELDS = ("script", "op", "shape", "dims", "dtype", "impl", "source", "status", "reason", "device", "smoke",
          "median_ms", "p10_ms", "p90_ms", "reps", "max_abs_err", "tolerance", "ratio_vs_best_alternative",
          "best_alternative", "ceilings", "env")
ENV_FIELDS = ("gpu", "driver", "cuda", "torch", "triton", "commit", "date")


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    """script -> (returncode, output, records): the smoke runs, started together."""
    return run_bench_smokes({name: (name, []) for name in SCRIPTS}, tmp_path_factory, timeout=180)


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_smoke_run_writes_verified_records(smoke_runs, script):
    rc, output, records = smoke_runs[script]
    assert rc == 0, output
    assert records, f"{script} wrote no records:\n{output}"
    for r in records:
        missing = [f for f in FIELDS if f not in r]
        assert not missing, f"{script} record lacks {missing}: {r}"
        assert SCRIPTS[script] in r, r
        assert r["script"] == script and r["device"] == "cpu" and r["smoke"] is True
        assert all(f in r["env"] for f in ENV_FIELDS)
        assert r["status"] in ("ok", "unavailable", "skipped"), r  # "failed" = a wrong kernel
        if r["status"] == "ok":
            assert 0 <= r["max_abs_err"] <= r["tolerance"], r
            assert r["p10_ms"] <= r["median_ms"] <= r["p90_ms"] and r["reps"] == common.SMOKE_REPS
        else:
            assert r["reason"].startswith(r["status"]) and r["median_ms"] is None, r
    ok = {(r["op"], r["shape"]) for r in records if r["status"] == "ok" and r["impl"] == "torch"}
    assert ok == {(r["op"], r["shape"]) for r in records}, "the torch backend must pass everywhere"


# -- statistics -----------------------------------------------------------------------------

def test_percentile_matches_linear_interpolation():
    values = [10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]  # 1..10, unsorted
    assert common.percentile(values, 50) == pytest.approx(5.5)
    assert common.percentile(values, 10) == pytest.approx(1.9)
    assert common.percentile(values, 90) == pytest.approx(9.1)
    assert common.percentile(values, 0) == 1.0 and common.percentile(values, 100) == 10.0
    assert common.percentile([4.0], 37) == 4.0


def test_percentile_errors():
    with pytest.raises(ValueError, match=r"percentile: values must be non-empty, got \[\]"):
        common.percentile([], 50)
    with pytest.raises(ValueError, match=r"percentile: q must be in \[0, 100\], got 101"):
        common.percentile([1.0], 101)


def test_summarize():
    s = common.summarize([3.0, 1.0, 2.0, 4.0, 5.0])
    assert s == {"median_ms": 3.0, "p10_ms": pytest.approx(1.4), "p90_ms": pytest.approx(4.6), "min_ms": 1.0,
                 "mean_ms": 3.0, "reps": 5}


def test_time_fn_counts_warmup_and_reps():
    calls = []
    times = common.time_fn(lambda: calls.append(1), torch.device("cpu"), reps=4, warmup=2)
    assert len(times) == 4 and len(calls) == 6 and all(t >= 0 for t in times)
    with pytest.raises(ValueError, match="time_fn: reps must be >= 1, got 0"):
        common.time_fn(lambda: None, torch.device("cpu"), reps=0, warmup=0)


# -- result files ------------------------------------------------------------------------------

def test_append_results_appends_json_lines(tmp_path):
    path = tmp_path / "deeper" / "ops_x.jsonl"
    assert common.append_results(path, [{"a": 1, "dtype": torch.bfloat16}]) == path
    common.append_results(path, [{"b": math.inf, "c": [math.nan, 2.0]}, {"d": None}])
    lines = path.read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"a": 1, "dtype": "torch.bfloat16"},
                                                    {"b": "inf", "c": ["nan", 2.0]}, {"d": None}]
    assert common.read_results(path)[2] == {"d": None}


def test_environment_fields():
    env = common.environment()
    assert all(f in env for f in ENV_FIELDS)
    assert env["torch"] == torch.__version__ and env["date"].endswith("+00:00")


# -- verification and ratios -------------------------------------------------------------------

def test_max_abs_err():
    ref = (torch.zeros(3), torch.ones(2))
    assert common.max_abs_err((torch.tensor([0.0, -0.5, 0.25]), torch.ones(2)), ref) == 0.5
    assert common.max_abs_err((torch.tensor([0.0, math.nan, 0.0]), torch.ones(2)), ref) == math.inf
    with pytest.raises(ValueError, match="max_abs_err: expected 2 outputs, got 1"):
        common.max_abs_err(torch.zeros(3), ref)
    with pytest.raises(ValueError, match=r"max_abs_err: output shape \(4,\) != reference \(3,\)"):
        common.max_abs_err(torch.zeros(4), torch.zeros(3))


def test_error_budget_is_twice_lowp_plus_one_ulp():
    assert common.ulp(1.0) == 2.0 ** -7 and common.ulp(3.0) == 2.0 ** -6 and common.ulp(0.75) == 2.0 ** -8
    ref = torch.tensor([-3.0, 1.0])
    assert common.error_budget(0.01, ref) == pytest.approx(0.02 + 2.0 ** -6)
    assert common.error_budget(0.01, ref, floor=0.5) == pytest.approx(0.52 + 2.0 ** -6)


def _settings(**kw):
    base = dict(script="t", device=torch.device("cpu"), smoke=True, reps=3, warmup=1, out_dir=Path("."),
                shapes=[], impls=None, ceilings={"copy_gbps": 10.0, "bf16_matmul_tflops": 1.0})
    return common.Settings(**{**base, **kw})


def _counting(value):
    calls = []

    def fn():
        calls.append(1)
        return value

    return fn, calls


def test_measure_times_only_verified_implementations():
    ref = torch.ones(5)
    good, good_calls = _counting(ref + 0.01)
    r = common.measure(common.Impl("good", good), ref, 0.02, _settings())
    assert r["status"] == "ok" and r["max_abs_err"] == pytest.approx(0.01, rel=1e-5) and r["reps"] == 3
    assert len(good_calls) == 1 + 1 + 3  # verification, warm-up, timed reps
    bad, bad_calls = _counting(ref + 1.0)
    r = common.measure(common.Impl("bad", bad), ref, 0.02, _settings())
    assert r["status"] == "failed" and r["median_ms"] is None and len(bad_calls) == 1
    assert r["reason"] == "failed: max_abs_err 1.000e+00 > tolerance 2.000e-02; not timed"
    r = common.measure(common.Impl("shape", lambda: torch.ones(4)), ref, 0.02, _settings())
    assert r["status"] == "failed" and "shape (4,) != reference (5,)" in r["reason"]


def test_measure_reports_unavailable_implementations():
    def raises():
        raise RuntimeError("no kernel image\nsecond line")

    r = common.measure(common.Impl("x", raises), torch.ones(1), 1.0, _settings())
    assert (r["status"], r["reason"]) == ("unavailable", "unavailable: first call raised RuntimeError: no kernel image")
    r = common.measure(common.Impl("y", None, "skipped", "skipped: why"), torch.ones(1), 1.0, _settings())
    assert (r["status"], r["reason"], r["max_abs_err"]) == ("skipped", "skipped: why", None)


def test_measure_uses_an_implementations_own_oracle():
    impl = common.Impl("bf16", lambda: torch.full((2,), 3.0), oracle=torch.full((2,), 3.0), tolerance=0.0)
    assert common.measure(impl, torch.zeros(2), 0.0, _settings())["status"] == "ok"


def test_add_ratios_and_throughput():
    res = [{"impl": "torch", "status": "ok", "median_ms": 4.0}, {"impl": "triton", "status": "ok", "median_ms": 1.0},
           {"impl": "cuda", "status": "ok", "median_ms": 2.0}, {"impl": "gone", "status": "unavailable",
                                                                 "median_ms": None}]
    common.add_ratios(res, {"eager": "torch", "compile": "torch.compile"})
    by = {r["impl"]: r for r in res}
    assert by["triton"]["ratio_vs_eager"] == 4.0 and by["triton"]["ratio_vs_compile"] is None
    assert (by["triton"]["best_alternative"], by["triton"]["ratio_vs_best_alternative"]) == ("cuda", 2.0)
    assert (by["cuda"]["best_alternative"], by["cuda"]["ratio_vs_best_alternative"]) == ("triton", 0.5)
    assert by["gone"]["ratio_vs_best_alternative"] is None and by["gone"]["best_alternative"] == "triton"
    t = common.throughput(by["triton"], {"copy_gbps": 4.0, "bf16_matmul_tflops": 2.0}, nbytes=2_000_000, flops=1e9)
    assert t == {"bytes": 2_000_000, "gbps": 2.0, "fraction_of_copy_bw": 0.5, "flops": 1e9, "tflops": 1.0,
                 "fraction_of_bf16_peak": 0.5}


def test_backend_impls_report_what_does_not_resolve():
    impls = common.backend_impls("ada_norm", lambda fn: fn, torch.device("cpu"), backends=("torch", "nope"))
    assert impls[0].status == "ok" and impls[0].source == "torch" and impls[0].fn() is not None
    assert impls[1].fn is None and impls[1].status == "unavailable"
    assert impls[1].reason.startswith("unavailable: ValueError: kernels must be one of")
    missing = common.backend_impls("no_such_op", lambda fn: fn, torch.device("cpu"), backends=("torch",))
    assert missing[0].reason == "unavailable: the torch backend has no no_such_op"


def test_compiled_impl():
    skipped = common.compiled_impl(torch.neg, lambda fn: fn(torch.ones(3)), _settings(compile_skip_reason="skipped: x"))
    assert (skipped.status, skipped.reason, skipped.fn) == ("skipped", "skipped: x", None)
    # The eager backend runs dynamo only: the same path as inductor without code generation.
    impl = common.compiled_impl(torch.neg, lambda fn: fn(torch.ones(3)), _settings(compile=True), backend="eager")
    assert common.measure(impl, -torch.ones(3), 0.0, _settings())["status"] == "ok"


# -- command lines ------------------------------------------------------------------------------

def _main(script: str):
    return __import__(f"bench.{script}", fromlist=["main"]).main


@pytest.mark.parametrize("argv, message", [
    (["--smoke", "--shapes", "nope"], "--shapes: unknown name 'nope'; choose from"),
    (["--smoke", "--reps", "0"], "--reps must be >= 1, got 0"),
    (["--smoke", "--warmup", "-1"], "--warmup must be >= 0, got -1"),
    ([], "no CUDA device: full-size runs need a GPU; use --smoke"),
])
@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_cli_errors(script, argv, message, capsys):
    if not argv and torch.cuda.is_available():
        pytest.skip("a GPU is present: the full-size run is allowed")
    with pytest.raises(SystemExit) as exc:
        _main(script)(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.parametrize("script, argv, message", [
    ("ops_adaln", ["--smoke", "--variants", "nope"], "--variants: unknown name 'nope'"),
    ("ops_fp8_gemm", ["--smoke", "--variants", "nope"], "--variants: unknown name 'nope'"),
    ("ops_conv3d", ["--smoke", "--max-frames", "0"], "--max-frames must be >= 1, got 0"),
    ("ops_conv3d", ["--smoke", "--decoder", "nope"], "invalid choice: 'nope'"),
])
def test_script_specific_cli_errors(script, argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        _main(script)(argv)
    assert exc.value.code == 2 and message in capsys.readouterr().err


def test_conv3d_caps_frames_and_says_so(tmp_path):
    rc = _main("ops_conv3d")(["--smoke", "--shapes", "smoke-upsampler", "--impls", "torch", "--max-frames", "2",
                              "--out", str(tmp_path)])
    (record,) = common.read_results(tmp_path / "ops_conv3d.jsonl")
    assert rc == 0 and record["status"] == "ok"
    assert (record["dims"]["frames"], record["dims"]["frames_full"], record["dims"]["frames_capped"]) == (2, 3, True)


def _bench_imports(path: Path) -> set[str]:
    """The bench modules a bench file imports, at module level or inside functions (a lazy import
    hides a cycle, it does not cut it)."""
    import ast

    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module == "bench":
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("bench."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("bench.")}
    return names


def test_bench_has_no_import_cycles():
    folder = Path(common.__file__).parent
    graph = {p.stem: _bench_imports(p) for p in folder.glob("*.py")}

    def visit(name: str, path: tuple[str, ...]):
        for dep in sorted(graph.get(name, ())):
            assert dep not in path, f"bench import cycle: {' -> '.join(path + (dep,))}"
            visit(dep, path + (dep,))
    for name in graph:
        visit(name, (name,))


def test_bench_imports_no_private_ltxengine_names():
    """bench/ builds on ltxengine's public names (tiny configs: ltxengine.presets), so a refactor of the
    package's internals cannot break the benchmarks silently."""
    import ast

    private = []
    for path in Path(common.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ltxengine"):
                private += [f"{path.name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
    assert not private, private
