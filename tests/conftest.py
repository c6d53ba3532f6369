"""Session-wide test set-up.

Without a CUDA device, Triton kernels run through Triton's interpreter. ``triton.jit`` reads
TRITON_INTERPRET when a kernel is decorated, i.e. when its module is imported, so the variable is
set here, before any test module imports ``ltxengine.kernels``. On a GPU machine kernels compile
normally (set TRITON_INTERPRET=1 yourself to force the interpreter there).

A test marked ``@pytest.mark.gpu`` is skipped here, with a reason, when there is no CUDA device;
a test that needs more than that (a compute capability, the compiled extension) adds its own skipif.
"""

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if item.get_closest_marker("gpu") is not None:
            item.add_marker(skip)
