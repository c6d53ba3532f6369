"""Triton kernels, installed as ``ltxengine.kernels``: one file per op (a private @triton.jit
kernel, its launcher and a pure-torch reference). Empty until the fused-kernels issue; the
models reach kernels only through ``ltxengine.ops``."""
