"""Session-wide test set-up.

Without a CUDA device, Triton kernels run through Triton's interpreter. ``triton.jit`` reads
TRITON_INTERPRET when a kernel is decorated, i.e. when its module is imported, so the variable is
set here, before any test module imports ``ltxengine.kernels``. On a GPU machine kernels compile
normally (set TRITON_INTERPRET=1 yourself to force the interpreter there).

A test marked ``@pytest.mark.gpu`` is skipped here, with a reason, when there is no CUDA device;
a test that needs more than that (a compute capability, the compiled extension) adds its own skipif.
"""

import itertools
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

_cache_dirs = itertools.count()


@pytest.fixture(autouse=True)
def _plan_cache_isolated(tmp_path_factory, monkeypatch):
    """Memory plans kept on disk (ltxengine/executor/plan_cache.py) never touch ~/.cache: each test
    gets a folder of its own (made only if written). Off unless a test turns it on: tests that clear
    the engine's in-memory plans to plan again would otherwise read the plan back from disk."""
    monkeypatch.setenv("LTXENGINE_CACHE_DIR", str(tmp_path_factory.getbasetemp() / f"cache{next(_cache_dirs)}"))
    monkeypatch.setenv("LTXENGINE_PLAN_CACHE", "0")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
