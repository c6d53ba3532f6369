"""The tiny engines the memory-plan tests share (test_plan, test_plan_reuse, test_plan_text, test_replay):
one LTX-Video 0.9.5 engine with its latent upsampler and one LTX-2 engine, both fp32 on CPU. Module-scoped,
so each test file that takes them builds its own once."""

from __future__ import annotations

import pytest
import torch

from ltxengine import Engine
from tests.pipelines.fixtures import build_pipeline_folder, build_upsampler_folder


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    root = tmp_path_factory.mktemp("plan")
    folder, up = build_pipeline_folder(root, "tiny-095"), build_upsampler_folder(root, "tiny-095")
    return Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, latent_upsampler=up)


@pytest.fixture(scope="module")
def ltx2_engine(tmp_path_factory):
    pytest.importorskip("diffusers")
    from tests.pipelines.ltx2_fixtures import build_pipeline
    return Engine.from_pretrained(build_pipeline(tmp_path_factory.mktemp("ltx2plan"))[2], device="cpu",
                                  dtype=torch.float32)
