"""bench/gpu_session.sh, checked on the CPU: the one prepared GPU run must fit its 9 minutes, run the
checks in order of value, keep going past a hung or failed stage, and only run command lines the
scripts accept (a typo would waste a rare GPU session)."""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import common

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_session.sh"
LIMIT_S = 540  # one device command may run 10 minutes; the session must end by 9
STAGE = re.compile(r"stage (\d+) (\S+) budget=(\d+)s deadline=(\d+)s command: (.*)")


def _run(*args, env=None, timeout=60):
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def _plan(out: Path) -> list[tuple[str, int, int, str]]:
    r = _run("--dry-run", env={"OUT": str(out), "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    stages = [STAGE.fullmatch(line) for line in r.stdout.splitlines()[1:]]
    assert all(stages), r.stdout
    assert [int(m[1]) for m in stages] == list(range(1, len(stages) + 1))
    return [(m[2], int(m[3]), int(m[4]), m[5]) for m in stages]


def test_script_parses():
    r = subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_dry_run_fits_the_session_in_order_of_value(tmp_path):
    plan = _plan(tmp_path)
    names = [name for name, *_ in plan]
    assert names == ["env", "install", "tests", "2b-step", "epilogue", "2b-graphs", "2b-fp8", "ltx2-step", "roofline"]
    budgets = [budget for _, budget, _, _ in plan]
    assert all(b > 0 for b in budgets) and sum(budgets) <= LIMIT_S, budgets
    assert [deadline for _, _, deadline, _ in plan] == [sum(budgets[: i + 1]) for i in range(len(budgets))]
    commands = dict((name, cmd) for name, _, _, cmd in plan)
    assert "--models 2b " in commands["2b-step"] and "--models ltx2-19b " in commands["ltx2-step"]
    assert "scenario_graphs.py" in commands["2b-graphs"] and "scenario_fp8.py" in commands["2b-fp8"]
    assert "ops_linear_epilogue.py" in commands["epilogue"] and "ltxv-2b-attn-out" in commands["epilogue"]
    assert f"--out {tmp_path}/results" in commands["2b-step"]
    assert os.listdir(tmp_path) == []  # a dry run writes nothing
    same = _run(env={"OUT": str(tmp_path), "PYTHON": sys.executable, "GPU_SESSION_DRY_RUN": "1"})
    assert same.returncode == 0 and same.stdout == _run("--dry-run", env={"OUT": str(tmp_path),
                                                                         "PYTHON": sys.executable}).stdout


def test_the_session_writes_at_most_8_result_files(tmp_path):
    """The device tool brings back at most 8 files from $OUT: the session's own two, the files its
    commands name, and each bench script's records (<script>.jsonl; roofline: roofline_calibration.md)."""
    files = {"gpu_session_summary.txt", "gpu_session.log"}
    for _, _, _, command in _plan(tmp_path):
        files |= set(re.findall(rf"{tmp_path}/results/([\w.-]+)", command))
        argv = shlex.split(command)
        if argv[0] == sys.executable and argv[1].startswith("bench/"):
            stem = Path(argv[1]).stem
            files.add("roofline_calibration.md" if stem == "roofline" else stem + ".jsonl")
    assert len(files) <= 8, sorted(files)


def test_tests_stage_covers_every_folder_with_gpu_tests(tmp_path):
    """A new folder of GPU-marked tests must be added to the session, or it is never run on a GPU."""
    mark = re.compile(r"(@|marks=\[?)pytest\.mark\.gpu\b")
    marked = {p.relative_to(ROOT).parts[1] for p in (ROOT / "tests").rglob("test_*.py") if mark.search(p.read_text())}
    command = dict((name, cmd) for name, _, _, cmd in _plan(tmp_path))["tests"]
    assert "-m gpu" in command and f"--junitxml={tmp_path}/results/gpu_tests.xml" in command
    assert marked and all(f"tests/{folder}" in command.split() for folder in marked), (marked, command)


def test_tests_stage_command_collects_the_gpu_tests(tmp_path):
    """The exact pytest command line, collecting only: every option is valid and GPU tests are selected."""
    command = dict((name, cmd) for name, _, _, cmd in _plan(tmp_path))["tests"]
    r = subprocess.run(shlex.split(command) + ["--collect-only", "-q"], cwd=ROOT, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    collected = re.search(r"(\d+)/\d+ tests collected", r.stdout)
    assert collected and int(collected[1]) > 0 and "error" not in r.stdout.splitlines()[-1], r.stdout[-2000:]


class _Accepted(Exception):
    pass


def test_every_bench_command_is_accepted_by_its_script(tmp_path, monkeypatch):
    """Each bench stage's arguments go through its script's own parsing and checks, up to the point
    where a run would start (settings_from_args; a CPU stands in for the GPU there)."""
    real = common.settings_from_args

    def accept(script, parser, args, shape_names, **kw):
        args.smoke = True  # settings_from_args refuses full-size runs on a CPU; its other checks run
        raise _Accepted(real(script, parser, args, shape_names, **kw))

    monkeypatch.setattr(common, "settings_from_args", accept)
    monkeypatch.setattr(common, "measure_ceilings", lambda device, which=(): {})
    checked = []
    for name, _, _, command in _plan(tmp_path):
        argv = shlex.split(command)
        if argv[0] != sys.executable or not argv[1].startswith("bench/") or argv[1] == "bench/roofline.py":
            continue  # roofline times nothing (no settings_from_args): tests/bench/test_roofline.py checks it
        module = importlib.import_module("bench." + Path(argv[1]).stem)
        with pytest.raises(_Accepted) as accepted:
            module.main(argv[2:])
        settings = accepted.value.args[0]
        assert settings.out_dir == tmp_path / "results" and settings.shapes, (name, settings)
        assert settings.reps == int(argv[argv.index("--reps") + 1]), name
        checked.append(name)
    assert checked == ["2b-step", "epilogue", "2b-graphs", "2b-fp8", "ltx2-step"]


FAKE_PYTHON = """#!/usr/bin/env bash
case "$*" in
  *pytest.main*)  # hangs until its deadline; a SIGINT lets it write what it has
    trap 'echo interrupted >> "$OUT/results/gpu_tests.xml"; kill $!; exit 130' INT
    echo "collected 3 items"; sleep 60 & wait ;;
  *scenario_graphs*) echo "graphs broke"; exit 3 ;;
  *) echo "fake python: $*"; exit 0 ;;
esac
"""


def test_session_goes_on_past_a_hung_and_a_failed_stage(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    out = tmp_path / "out"
    start = time.monotonic()
    r = _run(env={"OUT": str(out), "PYTHON": str(fake), "GPU_SESSION_BUDGETS": "3 3 1 5 5 5 5 5 5"})
    elapsed = time.monotonic() - start
    assert r.returncode == 1, r.stdout + r.stderr  # not every stage passed
    assert elapsed < 20, (elapsed, r.stdout)  # the hung stage (60 s) was stopped at its deadline, 7 s from the start
    results = out / "results"
    summary = (results / "gpu_session_summary.txt").read_text()
    status = dict(re.findall(r"^(\S+) +(ok|timeout|failed rc=\d+|skipped[^\d]*?) +\d+ s used", summary, re.M))
    assert status == {"env": "ok", "install": "ok", "tests": "timeout", "2b-step": "ok", "epilogue": "ok",
                      "2b-graphs": "failed rc=3", "2b-fp8": "ok", "ltx2-step": "ok", "roofline": "ok"}, summary
    assert summary.startswith("gpu_session ") and " commit=" in summary.splitlines()[0]
    assert (results / "gpu_tests.xml").read_text() == "interrupted\n"  # SIGINT first, not a kill
    log = (results / "gpu_session.log").read_text()
    assert [line.split()[1] for line in log.splitlines() if line.startswith("=== ")] == list(status)
    assert "graphs broke" in log and "--models ltx2-19b" in log
    assert "commit:" in summary  # the env stage's facts
    assert summary.splitlines()[-1] in r.stdout  # the device reply's output ends with the summary


@pytest.mark.parametrize("budgets, match", [
    ("1 2", r"must give 9 budgets"),
    ("15 120 130 50 70 45 40 55 1.5", r"positive whole seconds, got '1\.5'"),
    ("15 120 130 50 70 45 40 55 0", r"positive whole seconds, got '0'"),
    ("100 100 100 100 100 100 100 100 100", r"add up to 900 s, more than the session's 540 s"),
])
def test_bad_budgets_are_refused(tmp_path, budgets, match):
    r = _run("--dry-run", env={"OUT": str(tmp_path), "GPU_SESSION_BUDGETS": budgets})
    assert r.returncode == 2 and re.search(match, r.stderr), r.stderr


def test_unknown_subcommand_prints_usage():
    r = _run("nope")
    assert r.returncode == 2 and "usage: bash bench/gpu_session.sh" in r.stderr


def test_the_tests_stage_collects_every_gpu_marked_test():
    # The session runs `pytest -m gpu $TEST_DIRS`: a GPU test written elsewhere would never run on a device.
    dirs = re.search(r'^TEST_DIRS="([^"]+)"', SCRIPT.read_text(), re.M).group(1).split()
    gpu = re.compile(r"\bpytest\.mark\.gpu\b")  # a decorator, pytestmark or a parameter's marks=
    marked = {p.relative_to(ROOT).as_posix() for p in (ROOT / "tests").rglob("test_*.py")
              if p != Path(__file__) and gpu.search(p.read_text())}
    assert marked and all(any(m.startswith(d + "/") for d in dirs) for m in marked), sorted(marked)
