"""The csrc/ build path: setup.py compiles ltxengine._C with nvcc (when present) and the module
imports and validates its arguments on a machine without a GPU."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built_ext(tmp_path_factory):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH: the CUDA extension build cannot be checked here")
    out = tmp_path_factory.mktemp("ext")
    env = dict(os.environ, LTXENGINE_SKIP_CUDA="0")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out),
                    "--build-temp", str(out / "tmp")], cwd=ROOT, env=env, check=True, capture_output=True)
    return out


def run_in(path, code):
    return subprocess.run([sys.executable, "-c", code], cwd=path, capture_output=True, text=True)


def test_extension_compiles_and_imports(built_ext):
    r = run_in(built_ext, "import ltxengine._C as C; print(C.build_info()['cuda_version'])")
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 12000


def test_extension_checks_arguments_before_touching_the_device(built_ext):
    code = ("import ltxengine._C as C\n"
            "try:\n    C.gated_residual(16, 16, 16, 16, 4, 12, 1)\n"
            "except ValueError as e:\n    print(e)\n")
    r = run_in(built_ext, code)
    assert "dim must be a positive multiple of 8, got 12" in r.stdout, r.stdout + r.stderr


def test_extension_reports_missing_gpu(built_ext):
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU is present: the no-device message is not reachable")
    code = ("import ltxengine._C as C\n"
            "try:\n    C.gated_residual(16, 16, 16, 16, 4, 8, 1)\n"
            "except RuntimeError as e:\n    print(e)\n")
    r = run_in(built_ext, code)
    assert "no usable CUDA device" in r.stdout, r.stdout + r.stderr


def test_skip_env_builds_nothing(tmp_path):
    env = dict(os.environ, LTXENGINE_SKIP_CUDA="1")
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "building without ltxengine._C" in r.stderr
    assert not list(tmp_path.rglob("_C*.so"))
