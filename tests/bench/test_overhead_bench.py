"""pytest-benchmark entries for tiny configs: the Python-side cost of a generation (argument
checks, schedule, conditioning, per-step glue, decode, mp4-free) and of one transformer step, on the
CPU. The compute is negligible at these sizes, so a regression in the engine's overhead shows up
in `pytest --benchmark-only --benchmark-compare` runs. Each entry also checks that the timed call
produced the same result as an untimed one (timing must not change what is computed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import Engine
from tests.pipelines.fixtures import build_pipeline_folder

pytest.importorskip("pytest_benchmark")

TINY = dict(height=64, width=96, num_frames=9, num_inference_steps=2, seed=0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    folder = build_pipeline_folder(tmp_path_factory.mktemp("overhead"), "tiny-095")
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, kernels="torch")


def test_generation_overhead(benchmark, engine):
    expect = engine.generate("a red car", **TINY).frames
    result = benchmark.pedantic(lambda: engine.generate("a red car", **TINY), rounds=5, iterations=1,
                                warmup_rounds=1)
    assert np.array_equal(result.frames, expect)


def test_transformer_step_overhead(benchmark, engine):
    """One step as the engine runs it: context projection and RoPE tables precomputed."""
    from ltxengine.models.transformer import grid_positions

    t = engine.transformer
    c = t.config
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2 * 3 * 4, c.in_channels, generator=g)
    context = t.prepare_context(torch.randn(2, 8, c.caption_channels, generator=g), torch.ones(2, 8))
    rope = t.rope(grid_positions(2, 2, 3, 4, None, x.device))
    timestep = torch.full((2,), 500.0)
    with torch.no_grad():
        expect = t(x, timestep, context=context, rope=rope)
        out = benchmark.pedantic(lambda: t(x, timestep, context=context, rope=rope), rounds=10, iterations=1,
                                 warmup_rounds=1)
    assert torch.equal(out, expect)
