"""``ltxengine generate --output-latents / --latents / --noise-scale`` (issue 21): the command's
latent file holds what ``generate(output_type="latent")`` returns, bit for bit, and starts the next
command as ``latents=`` / ``audio_latents=`` do; bad files and flags exit 2 naming the flag before
the model loads."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from ltxengine.cli import main
from ltxengine.demo import write_demo_checkpoint, write_demo_ltx2_checkpoint
from ltxengine.engine import Engine

ARGS = dict(height=64, width=64, num_frames=9, num_inference_steps=2, seed=3, max_sequence_length=32)
FLAGS = ["--pipeline", "one-stage", "--height", "64", "--width", "64", "--num-frames", "9", "--steps", "2",
         "--seed", "3", "--max-sequence-length", "32", "--dtype", "fp32", "--quiet"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_latents")
    return {"ltx-2": write_demo_ltx2_checkpoint(root / "ltx2"), "ltx-video": write_demo_checkpoint(root / "ltxv")}


def _cli(argv, capsys) -> tuple[int, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    return code, capsys.readouterr().err


def _main(argv) -> int:
    return main([str(a) for a in argv])


def test_latent_files_chain_commands_as_the_api_chains_calls(folders, tmp_path, capsys):
    model = folders["ltx-2"]
    first, second = tmp_path / "first.safetensors", tmp_path / "second.safetensors"
    assert _main(["generate", "--model", model, "--prompt", "a cat", *FLAGS, "--output-latents", first]) == 0
    assert _main(["generate", "--model", model, "--prompt", "a cat", *FLAGS, "--latents", first, "--noise-scale",
                 "0.5", "--output-latents", second]) == 0
    assert not list(tmp_path.glob("*.mp4")) and not list(tmp_path.glob(".*"))  # no mp4, no partial file
    engine = Engine.from_pretrained(model, device="cpu", dtype=torch.float32)
    api = engine.generate("a cat", pipeline="one-stage", output_type="latent", **ARGS)
    saved = load_file(str(first))
    assert torch.equal(saved["latents"], api.latents) and torch.equal(saved["audio_latents"], api.audio_latents)
    api2 = engine.generate("a cat", pipeline="one-stage", output_type="latent", latents=api.latents,
                           audio_latents=api.audio_latents, noise_scale=0.5, **ARGS)
    saved2 = load_file(str(second))
    assert torch.equal(saved2["latents"], api2.latents) and torch.equal(saved2["audio_latents"], api2.audio_latents)
    assert not torch.equal(api2.latents, api.latents)
    # decoded from given latents: the mp4 of the same call through the API
    out = tmp_path / "from_latents.mp4"
    assert _main(["generate", "--model", model, "--prompt", "a cat", *FLAGS, "--latents", first, "--output", out]) == 0
    assert out.is_file() and "seed 3" in capsys.readouterr().out


def test_bad_latent_flags_exit_2_before_loading(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Engine, "from_pretrained", lambda *a, **k: pytest.fail("loaded before the check"))
    wrong = tmp_path / "wrong.safetensors"
    save_file({"video": torch.zeros(1)}, str(wrong))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not safetensors")
    cases = [
        (["--noise-scale", "0.5"], "--noise-scale mixes noise into --latents, got --noise-scale 0.5 without --latents"),
        (["--noise-scale", "2"], "argument --noise-scale: must be in [0.0, 1.0], got 2"),
        (["--latents", tmp_path / "missing.safetensors"], "--latents: '{tmp}/missing.safetensors' does not exist"),
        (["--latents", wrong], "--latents: '{tmp}/wrong.safetensors' must hold latents and/or audio_latents (as "
                               "--output-latents writes), got keys ['video']"),
        (["--latents", junk], "--latents: cannot read '{tmp}/junk.safetensors' as safetensors"),
        (["--output-latents", tmp_path / "z.pt"], "--output-latents must name a .safetensors file, got '{tmp}/z.pt'"),
        (["--output-latents", tmp_path / "missing" / "z.safetensors"], "--output-latents: cannot write"),
    ]
    for extra, message in cases:
        code, err = _cli(["generate", "--model", folders["ltx-2"], "--prompt", "x", *FLAGS, *extra], capsys)
        assert code == 2 and message.format(tmp=tmp_path) in err, (extra, err)
    code, err = _cli(["generate", "--model", folders["ltx-video"], "--prompt", "x", "--output-latents",
                      tmp_path / "z.safetensors"], capsys)
    assert code == 2 and "--output-latents is an LTX-2 option" in err, err


def test_engine_refusals_name_the_flags(folders, tmp_path, capsys):
    """A latent file of another size: the engine's shape check, given back with the flag's name."""
    other = tmp_path / "other.safetensors"
    save_file({"latents": torch.zeros(1, 8, 2, 4, 4)}, str(other))
    code, err = _cli(["generate", "--model", folders["ltx-2"], "--prompt", "x", *FLAGS, "--latents", other], capsys)
    assert code == 2 and "--latents must be unpacked, denormalized (1, C, F', H', W') video latents" in err, err
