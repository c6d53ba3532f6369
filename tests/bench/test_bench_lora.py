"""bench/lora_switch.py (issue 20): a --smoke run on the tiny presets writes one record per model with
every timing, and its checks hold: the timed LoRA changed the step and unloading restored the step
bit for bit. CPU timings mean nothing; the GPU run is the measurement."""

from __future__ import annotations

import math

from ..helpers import run_bench_smokes


def test_smoke_run_writes_every_timing(tmp_path_factory):
    runs = run_bench_smokes({"lora_switch": ("lora_switch", ["--reps", "1", "--rank", "4"])}, tmp_path_factory,
                            timeout=300)
    code, output, records = runs["lora_switch"]
    assert code == 0, output
    assert [r["shape"] for r in records] == ["tiny-2b", "tiny-ltx2"], output
    for r in records:
        assert r["status"] == "ok" and r["rank"] == 4
        for k in ("load_ms", "switch_ms", "unload_ms", "step_ms", "fused_step_ms", "fp8_step_ms", "branch_step_ms",
                  "fused_ratio", "branch_ratio"):
            assert isinstance(r[k], float) and math.isfinite(r[k]) and r[k] > 0, (k, r)
        # what was timed was a LoRA at work, and unloading restored the step exactly (dense and fp8 branch)
        assert r["lora_changes_step"] is True and r["branch_changes_step"] is True, r
        assert r["unload_exact"] is True and r["branch_unload_exact"] is True, r
    assert "not performance figures" in output
