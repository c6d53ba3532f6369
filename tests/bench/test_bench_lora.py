"""bench/lora_switch.py (issue 20): a --smoke run on the tiny presets writes one record per model with
every timing, and the adapters it exercises leave the weights as they were (the script's own
unload is the engine's). CPU timings mean nothing; the GPU run is the measurement."""

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
    assert "not performance figures" in output
