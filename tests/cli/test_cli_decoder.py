"""``ltxengine generate --decoder``: the choice reaches generate(decoder=) for LTX-2 (left out: the
engine's default, the conv decoder), an LTX-Video checkpoint refuses it by name before loading, and the
choices are the engine's."""

from __future__ import annotations

import pytest

from ltxengine.cli import build_parser, main
from ltxengine.demo import write_demo_checkpoint, write_demo_ltx2_checkpoint
from ltxengine.ltx2.diffusion_decode import DECODERS
from tests.cli.recording import Stop as _Stop



@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_decoder")
    return {"ltx-2": write_demo_ltx2_checkpoint(root / "ltx2"), "ltx-video": write_demo_checkpoint(root / "ltxv")}




@pytest.mark.parametrize("extra,expected", [((), None), (("--decoder", "diffusion"), "diffusion"),
                                            (("--decoder", "conv"), "conv")])
def test_decoder_reaches_the_engine(folders, recorded, extra, expected):
    with pytest.raises(_Stop):
        main(["generate", "--model", str(folders["ltx-2"]), "--prompt", "p", "--pipeline", "one-stage", "--quiet",
              *extra])
    assert recorded["generate"].get("decoder") == expected


def test_ltx_video_refuses_the_decoder(folders, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", str(folders["ltx-video"]), "--prompt", "p", "--decoder", "diffusion"]) == 2
    assert "--decoder is an LTX-2 option" in capsys.readouterr().err


def test_choices_are_the_engines():
    from ltxengine.models.ltx2_transformer import CROSS_TIMESTEPS
    gen = next(a for a in build_parser()._actions if a.dest == "command").choices["generate"]
    assert tuple(next(a for a in gen._actions if a.dest == "decoder").choices) == DECODERS
    assert tuple(next(a for a in gen._actions if a.dest == "cross_timestep").choices) == CROSS_TIMESTEPS


@pytest.mark.parametrize("extra,expected", [((), None), (("--cross-timestep", "own"), "own"),
                                            (("--cross-timestep", "mixed"), "mixed")])
def test_cross_timestep_reaches_the_engine(folders, recorded, extra, expected):
    """--cross-timestep is generate(cross_timestep=); left out, the release's default (None here)."""
    with pytest.raises(_Stop):
        main(["generate", "--model", str(folders["ltx-2"]), "--prompt", "p", "--pipeline", "one-stage", "--quiet",
              *extra])
    assert recorded["generate"].get("cross_timestep") == expected


def test_ltx_video_refuses_the_cross_timestep(folders, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert main(["generate", "--model", str(folders["ltx-video"]), "--prompt", "p", "--cross-timestep", "own"]) == 2
    assert "--cross-timestep is an LTX-2 option" in capsys.readouterr().err
