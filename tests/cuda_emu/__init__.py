"""A CPU emulation of the CUDA execution model for testing csrc/'s kernels without a GPU.

``build.build(out_dir)`` compiles csrc/ with g++ against ``emu.h`` into a module with the
interface of ``ltxengine._C``; tests/kernels/test_cuda_emulated.py runs ``ltxengine.ops.cuda``
through it. See emu.h for what is emulated and how.
"""
