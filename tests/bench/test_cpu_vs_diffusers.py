"""bench/cpu_vs_diffusers.py: the smoke run (tiny folders of both families, 64x64x9, 2 steps) verifies
ltxengine against diffusers and times both; the verification refuses to time disagreeing outputs; bad
arguments are named. No assertion on timing: CI machines are shared."""

import re

import pytest
import torch

from bench import cpu_vs_diffusers as B

pytest.importorskip("diffusers")


def test_smoke_run_verifies_and_times_both_families(tmp_path):
    out = tmp_path / "r.md"
    assert B.main(["--smoke", "--out", str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| ltx")]
    assert [(r[0].strip(), r[1].strip()) for r in rows] == [("ltxv", "64x64x9"), ("ltx2", "64x64x9")]
    for r in rows:
        assert float(r[2]) <= B.BUDGET and r[-1].strip() == "ok"
        assert float(r[3]) > 0 and float(r[4]) > 0 and float(r[5]) > 0  # both timed, a ratio
    assert "torch " + torch.__version__ in out.read_text()


def test_disagreeing_outputs_are_not_timed():
    calls = []

    def side(value):
        return lambda: calls.append(value) or {"frames": torch.full((2, 4, 4, 3), value)}
    row = B.bench_size("ltxv", (32, 32, 9), side(0.5), side(0.5 + 2e-4), reps=3, warmup=1)
    assert row["status"] == "failed: not timed" and "> 0.0001" in row["reason"] and len(calls) == 2
    assert "shape" in B.verify({"frames": torch.zeros(1, 2)}, {"frames": torch.zeros(2, 1)})[1]
    row = B.bench_size("ltxv", (32, 32, 9), side(0.5), side(0.5), reps=3, warmup=1)
    assert row["status"] == "ok" and len(calls) == 2 + 2 + 2 * 4 and row["ratio"] > 0


@pytest.mark.parametrize("argv, match", [
    (["--sizes", "65x96x9"], "multiples of 32"), (["--sizes", "64x96x10"], "8k\\+1"),
    (["--sizes", "64x96"], "HEIGHTxWIDTHxFRAMES"), (["--families", "ltx3"], "--families"),
    (["--reps", "0"], "--reps must be >= 1"), (["--warmup", "-1"], "--warmup must be >= 0")])
def test_bad_arguments_are_named(argv, match, capsys):
    with pytest.raises(SystemExit) as info:
        B.main(argv)
    assert info.value.code == 2
    assert re.search(match, capsys.readouterr().err)
