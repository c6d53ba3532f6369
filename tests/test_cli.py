"""The demo (the README's main job without weights) and the mp4 writer it uses."""

from fractions import Fraction

import numpy as np
import pytest

from ltxengine.cli import main
from ltxengine.media import read_mp4, write_mp4


def test_demo_writes_a_playable_video(tmp_path, capsys):
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--output", str(out), "--frames", "9", "--height", "32", "--width", "64",
                 "--steps", "2"]) == 0
    frames, rate = read_mp4(out)
    assert frames.shape == (9, 32, 64, 3)
    assert rate == 24
    assert frames.std() > 1.0  # decoded content, not a constant image
    assert "demo: random-weight LTX-Video" in capsys.readouterr().out


def test_demo_rejects_bad_frame_count(tmp_path):
    with pytest.raises(SystemExit, match=r"--frames must be 8k\+1 .* got 10"):
        main(["demo", "--output", str(tmp_path / "x.mp4"), "--frames", "10"])


def test_mp4_keeps_fractional_frame_rate(tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (5, 16, 16, 3), dtype=np.uint8)
    back, rate = read_mp4(write_mp4(tmp_path / "ntsc.mp4", frames, Fraction(24000, 1001)))
    assert rate == Fraction(24000, 1001)
    assert back.shape == frames.shape


def test_mp4_failure_leaves_no_file(tmp_path):
    bad = np.zeros((2, 15, 16, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"height and width must be even"):
        write_mp4(tmp_path / "odd.mp4", bad, 24)
    with pytest.raises(ValueError, match=r"fps must be positive, got 0"):
        write_mp4(tmp_path / "zero.mp4", np.zeros((2, 16, 16, 3), np.uint8), 0)
    assert list(tmp_path.iterdir()) == []
