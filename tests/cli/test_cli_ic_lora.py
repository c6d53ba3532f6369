"""``ltxengine generate --pipeline ic-lora``: ``--video-conditioning PATH STRENGTH`` (repeatable) and
``--conditioning-attention-mask PATH STRENGTH`` reach LTX2Engine.generate as the API spells them
(ltx-pipelines' ic_lora flags), and mistakes exit 2 naming the flag before anything loads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ltxengine import ReferenceCondition
from ltxengine.cli import main
from ltxengine.demo import write_demo_ltx2_checkpoint
from ltxengine.engine import Engine
from ltxengine.media import write_mp4
from tests.cli.recording import Stop as _Stop


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_ic_lora")
    rng = np.random.default_rng(0)
    return {"model": write_demo_ltx2_checkpoint(root / "ltx2"),
            "ref": write_mp4(root / "ref.mp4", rng.integers(0, 255, (9, 64, 96, 3), dtype=np.uint8), 24),
            "mask": write_mp4(root / "mask.mp4", np.full((9, 64, 96, 3), 255, np.uint8), 24)}





def _argv(files, *extra):
    return ["generate", "--model", str(files["model"]), "--prompt", "p", *map(str, extra)]


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


def test_ic_lora_flags_reach_the_engine(files, recorded):
    with pytest.raises(_Stop):
        main(_argv(files, "--pipeline", "ic-lora", "--video-conditioning", files["ref"], "1.0",
                   "--video-conditioning", files["ref"], "0.5", "--conditioning-attention-mask", files["mask"], "0.7"))
    gen = recorded["generate"]
    assert gen["pipeline"] == "ic-lora"
    assert gen["reference_conditions"] == [ReferenceCondition(Path(files["ref"]), 1.0),
                                           ReferenceCondition(Path(files["ref"]), 0.5)]
    assert (gen["conditioning_attention_mask"], gen["conditioning_attention_strength"]) == (Path(files["mask"]), 0.7)
    with pytest.raises(_Stop):
        main(_argv(files, "--pipeline", "ic-lora", "--video-conditioning", files["ref"], "1"))
    gen = recorded["generate"]  # no mask flag: the engine's defaults (full attention)
    assert "conditioning_attention_mask" not in gen and "conditioning_attention_strength" not in gen


@pytest.mark.parametrize("extra, message", [
    (["--pipeline", "ic-lora"], "--pipeline ic-lora needs --video-conditioning PATH STRENGTH"),
    (["--video-conditioning", "{ref}", "1"], "--video-conditioning: only --pipeline ic-lora reads it, got the "
                                            "two-stage pipeline"),
    (["--pipeline", "one-stage", "--conditioning-attention-mask", "{mask}", "0.5"],
     "--conditioning-attention-mask: only --pipeline ic-lora reads it, got --pipeline one-stage"),
    (["--pipeline", "ic-lora", "--video-conditioning", "{ref}", "1.5"],
     "argument --video-conditioning: STRENGTH must be in [0.0, 1.0], got 1.5"),
    (["--pipeline", "ic-lora", "--video-conditioning", "missing.mp4", "1"],
     "argument --video-conditioning: 'missing.mp4' does not exist or is not a file"),
    (["--pipeline", "ic-lora", "--video-conditioning", "{ref}", "1", "--steps", "4"],
     "--steps: --pipeline ic-lora runs the fixed 8-sigma distilled schedule"),
])
def test_ic_lora_mistakes_exit_2_naming_the_flag(files, monkeypatch, capsys, extra, message):
    monkeypatch.setattr(Engine, "from_pretrained", lambda *a, **k: pytest.fail("loaded before the checks"))
    fill = {k: str(v) for k, v in files.items()}
    assert _exit_code(_argv(files, *[a.format(**fill) for a in extra])) == 2
    assert message in capsys.readouterr().err
