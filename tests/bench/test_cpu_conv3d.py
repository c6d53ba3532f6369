"""bench/cpu_conv3d.py: the smoke run times both routes and reports their fp32 errors against a
float64 conv within the VAE parity budget; a bad --reps is named. No assertion on timing."""

import pytest

from bench import cpu_conv3d as B


def test_smoke_run_reports_both_routes(tmp_path):
    out = tmp_path / "r.md"
    assert B.main(["--smoke", "--out", str(out)]) == 0
    rows = [line.split("|")[1:-1] for line in out.read_text().splitlines() if line.startswith("| tiny")]
    assert [r[0].strip() for r in rows] == [s[0] for s in B.SMOKE]
    for r in rows:
        assert float(r[4]) > 0 and float(r[5]) > 0 and float(r[6]) > 0
        assert all(float(e) <= 1e-5 for e in r[7].split("/"))
    assert [r[8].strip().split()[0] for r in rows] == ["oneDNN", "F.conv3d"]  # 3x3x3 and 1x1x1


def test_bad_reps_is_named(capsys):
    with pytest.raises(SystemExit):
        B.main(["--reps", "0"])
    assert "--reps must be >= 1, got 0" in capsys.readouterr().err
