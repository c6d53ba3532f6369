"""bench/report.py: the README's results table from bench/results (GPU records only, newest wins)."""

import json

import pytest

from bench import report


def _record(impl, median, date, device="cuda", **extra):
    return {"script": "ops_adaln", "op": "ada_norm/rms/per-sample", "shape": "2b-b2", "impl": impl,
            "status": "ok", "device": device, "smoke": device == "cpu", "median_ms": median, "gbps": 2500.0,
            "ratio_vs_best_alternative": 3.5, "best_alternative": "torch.compile",
            "env": {"gpu": "NVIDIA H100 80GB HBM3", "date": date}, **extra}


def _write(folder, records):
    (folder / "ops_adaln.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_newest_gpu_record_per_case_and_no_cpu_records(tmp_path):
    _write(tmp_path, [_record("triton", 0.050, "2026-12-01T10:00:00"), _record("triton", 0.040, "2026-12-02T10:00:00"),
                      _record("torch", 0.300, "2026-12-02T10:00:00"), _record("triton", 9.0, "2026-12-03T10:00:00",
                                                                              device="cpu"),
                      _record("cuda", 1.0, "2026-12-03T10:00:00", status="failed")])
    records = report.latest_gpu_records(tmp_path)
    assert [(r["impl"], r["median_ms"]) for r in records] == [("torch", 0.300), ("triton", 0.040)]
    text = report.table(records)
    assert "| ops_adaln | ada_norm/rms/per-sample / 2b-b2 | triton | 0.040 | 2500 GB/s | 3.50x (torch.compile) |" in text
    assert "NVIDIA H100 80GB HBM3 | 2026-12-02 |" in text


def test_no_results_says_so():
    assert report.table([]).startswith("No GPU results yet")


def test_readme_block_is_replaced_between_markers(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{report.BEGIN}\nold table\n{report.END}\nrest\n")
    report.write_readme(readme, "new table")
    assert readme.read_text() == f"intro\n{report.BEGIN}\nnew table\n{report.END}\nrest\n"
    readme.write_text("no markers")
    with pytest.raises(ValueError, match="must contain <!-- bench-results:begin --> followed by"):
        report.write_readme(readme, "x")


def test_the_readme_shows_the_current_table():
    """The committed README block equals what report.py generates from the committed results."""
    content = (report.REPO / "README.md").read_text()
    block = content[content.index(report.BEGIN) + len(report.BEGIN):content.index(report.END)].strip()
    assert block == report.table(report.latest_gpu_records(report.RESULTS_DIR)).strip()
