"""``ltxengine generate --pipeline text-to-audio``: the engine is loaded audio-only, the result is written as
WAV, mistakes exit 2 naming the flag; one end-to-end run on the demo checkpoint."""

from __future__ import annotations

import wave

import pytest

from ltxengine.cli import main
from ltxengine.demo import write_demo_ltx2_checkpoint
from ltxengine.engine import Engine


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return write_demo_ltx2_checkpoint(tmp_path_factory.mktemp("cli_t2a") / "ltx2")


def _exit_code(argv) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse's own errors
        return e.code


def _argv(model, *extra):
    return ["generate", "--model", str(model), "--prompt", "rain on a tin roof", "--pipeline", "text-to-audio",
            *map(str, extra)]


def test_loads_audio_only_and_writes_wav(model, tmp_path, monkeypatch, capsys):
    loaded = {}
    original = Engine.from_pretrained

    def recording(path, **kw):
        loaded.update(kw)
        return original(path, **kw)

    monkeypatch.setattr(Engine, "from_pretrained", recording)
    out = tmp_path / "rain.wav"
    assert main(_argv(model, "--output", out, "--num-frames", "9", "--steps", "2", "--seed", "3", "--quiet")) == 0
    assert loaded["modalities"] == ("audio",)
    with wave.open(str(out), "rb") as f:
        assert f.getnchannels() == 2 and f.getsampwidth() == 2 and f.getnframes() > 0
        rate = f.getframerate()
    assert f"{out}: " in capsys.readouterr().out and rate in (24000, 48000)


@pytest.mark.parametrize("extra, message", [
    (("--output", "x.mp4"), "--output must name a .wav file for --pipeline text-to-audio"),
    (("--output", "x.wav", "--video-cfg-guidance-scale", "5"), "generates no video"),
    (("--output", "x.wav", "--num-frames", "10"), "8k+1"),
])
def test_mistakes_exit_2(model, tmp_path, monkeypatch, capsys, extra, message):
    monkeypatch.chdir(tmp_path)
    assert _exit_code(_argv(model, *extra)) == 2
    assert message in capsys.readouterr().err
