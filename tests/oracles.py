"""Importing the reference implementations used as test oracles.

ltx-core 1.0.0 (Lightricks' own LTX-2 code) imports torchaudio at module level for its mel
front-end. torchaudio has no wheel for the CPU torch CI uses, so when it cannot be imported a
stand-in module is installed whose every use raises: the components we compare (transformer,
VAEs, vocoder, connectors, upsampler) never call it. Tests that need the real mel transform
must not use this.
"""

from __future__ import annotations

import importlib
import importlib.machinery
import sys
import types

import pytest


class _Unavailable(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"torchaudio.{name} is not available in this test environment "
                           "(tests/oracles.py installed a stand-in)")


def ltx_core(module: str):
    """Import ``ltx_core.<module>`` (skip the test with a reason when ltx-core is not installed)."""
    try:
        import torchaudio  # noqa: F401
    except Exception:  # missing, or a wheel built for another torch
        stand_in = _Unavailable("torchaudio")
        # transformers probes importlib.util.find_spec("torchaudio"), which needs a spec
        stand_in.__spec__ = importlib.machinery.ModuleSpec("torchaudio", None)
        sys.modules["torchaudio"] = stand_in
    pytest.importorskip("ltx_core", reason="ltx-core 1.0.0 (test oracle) is not installed")
    return importlib.import_module(f"ltx_core.{module}")


def ltx_pipelines(module: str):
    """Import ``ltx_pipelines.<module>`` (ltx-pipelines 1.0.0, built on ltx-core; skipped with a
    reason when not installed)."""
    ltx_core("types")
    pytest.importorskip("ltx_pipelines", reason="ltx-pipelines 1.0.0 (test oracle) is not installed")
    return importlib.import_module(f"ltx_pipelines.{module}")
