"""``ltxengine generate --pipeline retake``: the flags reach LTX2Engine.generate as the API spells
them, the clip's size, frame count and rate fill the ones not given, and mistakes exit 2 naming the
flag before anything loads; one end-to-end run on the demo checkpoint."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from ltxengine.cli import main
from ltxengine.demo import write_demo_ltx2_checkpoint
from ltxengine.engine import Engine
from ltxengine.media import read_media, write_mp4
from tests.cli.recording import Stop as _Stop


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_retake")
    rng = np.random.default_rng(0)
    video = rng.integers(0, 255, (9, 64, 96, 3), dtype=np.uint8)
    t = np.arange(24000) / 24000
    tone = np.stack([np.sin(2 * np.pi * 440 * t)] * 2).astype(np.float32) * 0.5
    return {"model": write_demo_ltx2_checkpoint(root / "ltx2"),
            "clip": write_mp4(root / "clip.mp4", video, 24, audio=tone, sample_rate=24000),
            "silent": write_mp4(root / "silent.mp4", video, 25)}





def _argv(files, *extra):
    return ["generate", "--model", str(files["model"]), "--prompt", "p", *map(str, extra)]


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


def test_retake_flags_reach_the_engine(files, recorded):
    with pytest.raises(_Stop):
        main(_argv(files, "--pipeline", "retake", "--video", files["clip"], "--start-time", "0.1", "--end-time",
                   "0.3", "--no-regenerate-audio", "--steps", "4", "--video-cfg-guidance-scale", "2"))
    gen = recorded["generate"]
    assert (gen["pipeline"], gen["video"], gen["start_time"], gen["end_time"], gen["regenerate_audio"]) == (
        "retake", str(files["clip"]), 0.1, 0.3, False)
    assert "regenerate_video" not in gen and "two_stage" not in gen and gen["num_inference_steps"] == 4
    assert (gen["num_frames"], gen["height"], gen["width"], gen["frame_rate"]) == (9, 64, 96, Fraction(24))
    # --steps: the full model, so the guidance not given is the release's
    assert gen["video_guidance"].cfg == 2.0 and gen["video_guidance"].stg == 1.0


def test_distilled_retake_guidance_defaults_to_none(files, recorded):
    with pytest.raises(_Stop):
        main(_argv(files, "--pipeline", "retake", "--video", files["silent"], "--start-time", "0", "--end-time",
                   "0.2", "--video-cfg-guidance-scale", "2", "--height", "64"))
    gen = recorded["generate"]
    assert gen["video_guidance"].cfg == 2.0 and gen["video_guidance"].stg == 0.0
    assert gen["num_inference_steps"] is None and gen["frame_rate"] == 25 and gen["height"] == 64


@pytest.mark.parametrize("extra, message", [
    (["--video", "{clip}", "--start-time", "0", "--end-time", "0.2", "--pipeline", "one-stage"],
     "--end-time: only --pipeline retake reads it, got --pipeline one-stage"),
    (["--pipeline", "retake", "--start-time", "0", "--end-time", "0.2"], "--pipeline retake needs --video PATH"),
    (["--pipeline", "retake", "--video", "{missing}"], "--video: '{missing}' does not exist"),
    (["--pipeline", "retake", "--video", "{model}/model_index.json"], "--video: cannot read"),
    (["--pipeline", "retake", "--video", "{silent}", "--start-time", "0", "--end-time", "0.2",
      "--no-regenerate-audio"], "--no-regenerate-audio keeps the clip's audio, but '{silent}' has no audio track"),
])
def test_retake_mistakes_exit_2_before_loading(files, monkeypatch, capsys, tmp_path, extra, message):
    monkeypatch.setattr(Engine, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    fill = dict(clip=files["clip"], silent=files["silent"], model=files["model"], missing=tmp_path / "no.mp4")
    code = _exit_code(_argv(files, *[a.format(**fill) for a in extra]))
    err = capsys.readouterr().err
    assert code == 2 and message.format(**fill) in err, err


def test_engine_errors_name_the_flags(files, capsys, tmp_path):
    """The region past the clip's end is the engine's check, given back in flag terms."""
    code = _exit_code(_argv(files, "--pipeline", "retake", "--video", files["clip"], "--start-time", "0.1",
                            "--end-time", "0.5", "--dtype", "fp32", "--quiet", "--output", tmp_path / "o.mp4"))
    err = capsys.readouterr().err
    assert code == 2 and "--end-time must be <= the clip's duration 0.375 s" in err, err


def test_retake_from_the_command_line(files, tmp_path):
    out = tmp_path / "retake.mp4"
    code = main(_argv(files, "--pipeline", "retake", "--video", files["clip"], "--start-time", "0.2", "--end-time",
                      "0.375", "--dtype", "fp32", "--max-sequence-length", "32", "--seed", "3", "--quiet",
                      "--output", out))
    assert code == 0
    frames, rate, audio, sample_rate = read_media(out)
    assert frames.shape == (9, 64, 96, 3) and rate == 24 and audio is not None
