"""The package works with no GPU and no compiled extension, and its wheel and sdist hold all of it."""

import fnmatch
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile

import pytest

CODE = r"""
import sys, torch
sys.modules['ltxengine._C'] = None  # make any import of the extension fail
import ltxengine
from ltxengine.ops import get_ops, TORCH_OPS
from ltxengine.config import TransformerConfig
from ltxengine.models.transformer import LTXVideoTransformer, grid_positions
assert not torch.cuda.is_available()
assert get_ops("auto") is TORCH_OPS
torch.manual_seed(0)
m = LTXVideoTransformer(TransformerConfig(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=6,
                        cross_attention_dim=12, num_layers=1, caption_channels=5))
x = torch.randn(1, 6, 4)
out = m(x, torch.tensor([500.0]), context=m.prepare_context(torch.randn(1, 3, 5), None),
        rope=m.rope(grid_positions(1, 1, 2, 3, None)))
assert out.shape == (1, 6, 4) and torch.isfinite(out).all()
print("ok", ltxengine.__version__)
"""


def test_imports_and_runs_without_gpu_or_extension():
    r = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok ")


def test_kernels_option_errors_are_clear():
    import pytest

    from ltxengine.ops import get_ops

    with pytest.raises(ValueError, match=r"kernels must be one of .* got 'fast'"):
        get_ops("fast")
    with pytest.raises(ValueError, match=r"kernels='cuda' needs a CUDA device, got cpu"):
        get_ops("cuda", "cpu")


ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]


def test_kernels_folder_never_shadows_hugging_face_kernels():
    """Run from the repository root (cwd first on sys.path, as `python -m pytest` and `python -c` put it), the
    top-level kernels/ folder must not stand in for Hugging Face's `kernels`, which transformers imports."""
    code = ("import transformers.integrations.hub_kernels, kernels, ltxengine.kernels.qk_norm_rope as q\n"
            "import pathlib; root = pathlib.Path.cwd().resolve()\n"
            "assert pathlib.Path(kernels.__file__).resolve().parent != root / 'kernels', kernels.__file__\n"
            "assert pathlib.Path(q.__file__).resolve().parent == root / 'kernels', q.__file__\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def test_kernels_folder_without_the_real_package_is_not_importable_as_kernels():
    """With no other `kernels` on sys.path, `import kernels` from the root fails as a missing package would."""
    code = ("import sys; sys.path[:] = [p for p in sys.path if 'site-packages' not in p]\n"
            "try:\n    import kernels\nexcept ModuleNotFoundError as e:\n    print('missing', e.name)\n"
            "else:\n    print('found', kernels.__file__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and r.stdout.strip() == "missing kernels", (r.stdout, r.stderr[-2000:])


# ---- the wheel and the sdist hold every module (issue 17: a hand-written package list left out
# ltxengine/executor and ltxengine/quant, so a non-editable install could not `import ltxengine`)

# Never shipped, and never copied into the build tree: VCS, environments, build output, bytecode, an in-place _C.
_NOT_SOURCE = (".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", "*.so", ".pytest_cache",
               ".benchmarks", "*.mp4")


def _shipped_files(root):
    """Files the wheel must hold, by their path in it: everything under ltxengine/, and kernels/ as ltxengine/kernels/."""
    def source(p):
        parts = p.relative_to(root).parts
        return p.is_file() and not any(fnmatch.fnmatch(part, pat) for part in parts for pat in _NOT_SOURCE)

    files = {p.relative_to(root).as_posix() for p in (root / "ltxengine").rglob("*") if source(p)}
    kernels = {"ltxengine/" + p.relative_to(root).as_posix() for p in (root / "kernels").rglob("*") if source(p)}
    assert "ltxengine/executor/__init__.py" in files and "ltxengine/kernels/__init__.py" in kernels  # the walk works
    return files | kernels


def _wheel_contents(wheel):
    """(files outside the .dist-info, top-level names, top_level.txt, entry_points.txt) of a wheel."""
    with zipfile.ZipFile(wheel) as z:
        names = [n for n in z.namelist() if not n.endswith("/")]
        info = {n.rsplit("/", 1)[1]: z.read(n).decode() for n in names if n.split("/")[0].endswith(".dist-info")}
    files = {n for n in names if not n.split("/")[0].endswith(".dist-info")}
    return files, {n.split("/")[0] for n in names}, info["top_level.txt"].split(), info["entry_points.txt"]


def _build(args, cwd, out):
    env = dict(os.environ, LTXENGINE_SKIP_CUDA="1")  # compiling csrc/ is test_build.py's job
    r = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    (built,) = out.iterdir()
    return built


@pytest.fixture(scope="module")
def source_copy(tmp_path_factory):
    """The checkout as a fresh clone has it (a build writes build/ and *.egg-info into its tree, and a
    working tree may hold an in-place _C or bytecode), with tests/ and bench/ so their absence is tested."""
    src = tmp_path_factory.mktemp("pkg") / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*_NOT_SOURCE))
    return src


def _check_wheel(wheel, src):
    files, top, top_level, entry_points = _wheel_contents(wheel)
    expected = _shipped_files(src)
    assert files == expected, f"missing from the wheel: {sorted(expected - files)}; unexpected: {sorted(files - expected)}"
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"ltxengine"} and top_level == ["ltxengine"], (top, top_level)  # no kernels/tests/bench
    assert "ltxengine = ltxengine.cli:main" in entry_points


def test_wheel_holds_every_package_and_only_ltxengine(source_copy, tmp_path):
    """What `pip install .` installs: every directory of ltxengine/ (namespace ones too: models/ has no
    __init__.py), kernels/ as ltxengine.kernels, and no top-level `kernels`, `tests` or `bench`."""
    out = tmp_path / "wheel"
    wheel = _build(["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
                   source_copy, out)
    _check_wheel(wheel, source_copy)


def test_sdist_rebuilds_the_same_wheel_and_carries_csrc(source_copy, tmp_path):
    """The sdist holds what a wheel build needs: csrc/ (headers included) even when it was made without
    nvcc, since the machine that builds from it may have one; and a wheel built from it is complete."""
    out = tmp_path / "sdist"
    code = f"from setuptools import build_meta as b; b.build_sdist({str(out)!r})"
    sdist = _build(["-c", code], source_copy, out)
    with tarfile.open(sdist) as t:
        names = {n.split("/", 1)[1] for n in t.getnames() if "/" in n}
    csrc = {p.relative_to(source_copy).as_posix() for p in (source_copy / "csrc").iterdir()}
    assert csrc and csrc <= names, f"csrc files missing from the sdist: {sorted(csrc - names)}"
    assert "setup.py" in names and "kernels/__init__.py" in names
    wout = tmp_path / "wheel"
    wheel = _build(["-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wout), str(sdist)],
                   tmp_path, wout)
    _check_wheel(wheel, source_copy)


def test_python_dash_m_runs_the_cli_and_importing_main_runs_nothing(tmp_path):
    """``python -m ltxengine`` is the ``ltxengine`` command (torchrun launches it that way), while importing
    ``ltxengine.__main__`` (as .ci/wheel_check does with every installed module) must not run it."""
    import importlib
    sys.modules.pop("ltxengine.__main__", None)
    importlib.import_module("ltxengine.__main__")  # a SystemExit here fails the test
    run = subprocess.run([sys.executable, "-m", "ltxengine", "--help"], cwd=tmp_path, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0 and "usage: ltxengine" in run.stdout, run.stderr
