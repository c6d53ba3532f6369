"""Session-wide test set-up.

Without a CUDA device, Triton kernels run through Triton's interpreter. ``triton.jit`` reads
TRITON_INTERPRET when a kernel is decorated, i.e. when its module is imported, so the variable is
set here, before any test module imports ``ltxengine.kernels``. On a GPU machine kernels compile
normally (set TRITON_INTERPRET=1 yourself to force the interpreter there).
"""

import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
