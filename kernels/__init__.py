"""Triton kernels, installed as ``ltxengine.kernels``: one file per op (a private @triton.jit
kernel, its launcher and a pure-torch reference). The models reach kernels only through
``ltxengine.ops``.

This folder is only ever ``ltxengine.kernels``. When a clone's root is on ``sys.path`` (``python -m
pytest``, ``python -c`` or a script run from the root), ``import kernels`` finds it before Hugging
Face's ``kernels`` package, which transformers imports. Under that name the import is handed to the
first ``kernels`` found on the rest of ``sys.path``, or fails as if this folder were not there.
"""

if __name__ == "kernels":
    import importlib.machinery
    import importlib.util
    import os
    import sys

    _root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    _path = [p for p in sys.path if os.path.abspath(p or os.curdir) != _root]
    _spec = importlib.machinery.PathFinder.find_spec(__name__, _path)
    if _spec is None:
        raise ModuleNotFoundError(f"No module named {__name__!r}", name=__name__)
    _module = importlib.util.module_from_spec(_spec)
    # The import statement returns sys.modules[name] after this body runs: the real package.
    sys.modules[__name__] = _module
    _spec.loader.exec_module(_module)
