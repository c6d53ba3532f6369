"""``ltxengine generate --pipeline keyframe-interpolation --image PATH FRAME STRENGTH ...`` (issue
21): the command runs the recipe with its images as the API's conditions (the same frames, bit for
bit, as ``generate(pipeline="keyframe-interpolation", conditions=...)`` with the command's other
arguments gives them)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltxengine import Condition
from ltxengine.cli import main
from ltxengine.demo import write_demo_ltx2_checkpoint
from ltxengine.engine import Engine
from ltxengine.ltx2.engine import LTX2Engine

FLAGS = ["--pipeline", "keyframe-interpolation", "--height", "128", "--width", "128", "--num-frames", "9",
         "--steps", "2", "--seed", "3", "--max-sequence-length", "32", "--dtype", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_demo_ltx2_checkpoint(tmp_path_factory.mktemp("cli_keyframes") / "ltx2")


def test_keyframe_interpolation_from_the_command_line(model, tmp_path, monkeypatch):
    from PIL import Image
    rng = np.random.default_rng(0)
    stills = [rng.integers(0, 256, (128, 128, 3), dtype=np.uint8) for _ in range(2)]
    paths = [tmp_path / f"{i}.png" for i in range(2)]
    for still, path in zip(stills, paths):
        Image.fromarray(still).save(path)
    seen = {}
    real = LTX2Engine.generate

    def generate(self, prompt, **kw):
        seen.update(kw)
        seen["result"] = real(self, prompt, **kw)
        return seen["result"]
    monkeypatch.setattr(LTX2Engine, "generate", generate)
    out = tmp_path / "out.mp4"
    assert main(["generate", "--model", str(model), "--prompt", "a cat", *FLAGS, "--image", str(paths[0]), "0", "1",
                 "--image", str(paths[1]), "8", "0.9", "--output", str(out)]) == 0
    assert out.is_file() and seen["pipeline"] == "keyframe-interpolation"
    assert [(c.frame_index, c.strength) for c in seen["conditions"]] == [(0, 1.0), (8, 0.9)]
    # the command's other arguments as it passed them, the images as arrays
    kw = {k: v for k, v in seen.items() if k not in ("result", "conditions", "output", "callback")}
    engine = Engine.from_pretrained(model, device="cpu", dtype=torch.float32)
    api = real(engine, "a cat", **kw,
               conditions=[Condition(image=stills[0]), Condition(image=stills[1], frame_index=8, strength=0.9)])
    assert np.array_equal(seen["result"].frames, api.frames) and np.array_equal(seen["result"].audio, api.audio)
