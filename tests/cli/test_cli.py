"""The CLI (demo, generate, info) and the mp4 writer it uses."""

import logging
from fractions import Fraction

import numpy as np
import pytest

import json

import torch

from ltxengine.cli import main
from ltxengine.demo import write_demo_checkpoint
from ltxengine.media import read_mp4, write_mp4

from ..helpers import record_encoded_frames


def test_demo_writes_a_playable_video(tmp_path, capsys):
    """The README's main job: a tiny checkpoint in the real diffusers format, full two-stage path."""
    out = tmp_path / "demo.mp4"
    assert main(["demo", "--output", str(out), "--frames", "9", "--height", "64", "--width", "128",
                 "--steps", "2", "--fps", "24000/1001"]) == 0
    frames, rate = read_mp4(out)
    assert frames.shape == (9, 64, 128, 3)
    assert rate == Fraction(24000, 1001)
    assert frames.std() > 1.0  # decoded content, not a constant image
    printed = capsys.readouterr().out
    assert "two-stage 32x64 -> 64x128" in printed and "stage 2" in printed


def test_ltx2_demo_writes_video_with_an_audio_track(tmp_path, capsys, caplog):
    from ltxengine.media import read_media
    out = tmp_path / "demo2.mp4"
    with caplog.at_level(logging.WARNING):
        assert main(["demo", "--family", "ltx-2", "--output", str(out), "--frames", "9", "--height", "64", "--width",
                     "128", "--steps", "2"]) == 0
    # a first run shows no warning (64 tokens truncated the default negative prompt, a screen of <unk>)
    assert [r.getMessage()[:80] for r in caplog.records if r.levelno >= logging.WARNING] == []
    frames, rate, audio, sample_rate = read_media(out)
    assert frames.shape == (9, 64, 128, 3) and frames.std() > 1.0
    assert audio is not None and audio.shape[0] == 2 and sample_rate == 24000
    assert abs(audio.shape[1] / sample_rate - 9 / float(rate)) <= 1024 / sample_rate
    assert "LTX-2" in capsys.readouterr().out


def test_demo_rejects_bad_frame_count(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["demo", "--output", str(tmp_path / "x.mp4"), "--frames", "10"])
    assert e.value.code == 2  # a usage error, not the generic status 1 a message-only SystemExit gives
    assert ("ltxengine demo: error: argument --frames: must be of the form 8k+1 (e.g. 9 or 17), got 10"
            in capsys.readouterr().err)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    return write_demo_checkpoint(tmp_path_factory.mktemp("demo") / "tiny")


def test_generate_command(demo_folder, tmp_path, capsys, monkeypatch):
    encoded = record_encoded_frames(monkeypatch)
    out = tmp_path / "gen.mp4"
    argv = ["generate", "--model", str(demo_folder), "--prompt", "a red car at night", "--output", str(out),
            "--height", "64", "--width", "96", "--num-frames", "17", "--steps", "2", "--seed", "3", "--dtype",
            "fp32", "--frame-rate", "30000/1001", "--quiet"]
    assert main(argv) == 0
    frames, rate = read_mp4(out)
    assert frames.shape == (17, 64, 96, 3) and rate == Fraction(30000, 1001)
    assert "seed 3" in capsys.readouterr().out
    cli_video = np.stack(encoded)
    encoded.clear()
    # the same command through the API gives the same video: the frames given to the encoder are equal
    from ltxengine import Engine

    eng = Engine.from_pretrained(demo_folder, device="cpu", dtype=torch.float32)
    api_out = tmp_path / "api.mp4"
    result = eng.generate("a red car at night", height=64, width=96, num_frames=17, num_inference_steps=2, seed=3,
                          frame_rate="30000/1001", decode_timestep=0.05, decode_noise_scale=0.025, output=api_out)
    api_video = np.stack(encoded)
    assert np.array_equal(cli_video, api_video), f"{(cli_video != api_video).sum()} of {cli_video.size} values differ"
    assert np.array_equal(api_video, result.video)  # what was streamed is the result
    encoded.clear()
    result.save(tmp_path / "saved.mp4")  # writing the result encodes the same frames
    assert np.array_equal(np.stack(encoded), api_video)
    assert read_mp4(api_out)[0].shape == read_mp4(tmp_path / "saved.mp4")[0].shape == (17, 64, 96, 3)


def test_generate_two_stage_and_image(demo_folder, tmp_path):
    img = tmp_path / "first.mp4"
    write_mp4(img, np.random.default_rng(0).integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), 24)
    out = tmp_path / "two.mp4"
    assert main(["generate", "--model", str(demo_folder), "--prompt", "a cat", "--output", str(out), "--image",
                 str(img), "--height", "128", "--width", "128", "--num-frames", "9", "--steps", "2", "--two-stage",
                 "--downscale-factor", "0.5", "--refine-steps", "2", "--refine-strength", "1.0", "--dtype", "fp32",
                 "--quiet"]) == 0
    assert read_mp4(out)[0].shape == (9, 128, 128, 3)


def test_generate_bad_argument_is_one_line(demo_folder, tmp_path, capsys):
    out = tmp_path / "bad.mp4"
    with pytest.raises(SystemExit) as e:
        main(["generate", "--model", str(demo_folder), "--prompt", "x", "--output", str(out), "--num-frames", "10",
              "--dtype", "fp32", "--quiet"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "ltxengine generate: error: argument --num-frames: must be of the form 8k+1 (e.g. 9 or 17), got 10" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_info_command(demo_folder, capsys):
    assert main(["info", str(demo_folder)]) == 0
    text = capsys.readouterr().out
    assert "LTX-Video" in text and "0.9.5+" in text and "transformer: LTXVideoTransformer3DModel" in text
    assert main(["info", str(demo_folder), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    n = d["components"]["transformer"]["parameters"]
    from ltxengine.presets import DEMO_TRANSFORMER
    from ltxengine.models.transformer import LTXVideoTransformer

    assert n == sum(p.numel() for p in LTXVideoTransformer(DEMO_TRANSFORMER).parameters())
    assert d["components"]["vae"]["dtypes"] == {"F32": d["components"]["vae"]["parameters"]}


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


def test_bench_command_lists_and_runs_a_script(tmp_path, capsys):
    assert main(["bench", "list"]) == 0
    listed = capsys.readouterr().out
    assert "ops_adaln" in listed and "ops_fp8_gemm" in listed
    assert main(["bench", "ops_adaln", "--smoke", "--impls", "torch", "--out", str(tmp_path)]) == 0
    records = [json.loads(line) for line in (tmp_path / "ops_adaln.jsonl").read_text().splitlines()]
    assert records and all(r["impl"] == "torch" and r["status"] == "ok" for r in records)


def test_bench_command_unknown_name_is_one_line(capsys):
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "bench: name must be one of ['list', 'kernels', '2b', '13b', 'ltx2', 'ops_adaln'" in err
    assert "got 'nope'" in err


def test_bench_suite_runs_every_scenario_of_a_model_in_one_command(tmp_path):
    assert main(["bench", "2b", "--smoke", "--out", str(tmp_path)]) == 0
    written = sorted(p.stem for p in tmp_path.glob("*.jsonl"))
    assert written == ["fp8_quality", "scenario_fp8", "scenario_generate", "scenario_graphs", "scenario_transformer",
                       "scenario_vae_decode"]
    for path in tmp_path.glob("*.jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert records and all(r["smoke"] for r in records)


@pytest.mark.parametrize("family", ["ltx-video", "ltx-2", "ltx-2.5"])
def test_demo_keep_leaves_a_checkpoint_the_printed_commands_run_on(tmp_path, capsys, family, monkeypatch):
    """`demo --keep DIR` keeps the checkpoint and prints `info` and `generate` commands for it; the
    generate command makes the demo's own video (same seed, same settings)."""
    import shlex

    from ltxengine.media import read_media
    keep, out = tmp_path / "tiny", tmp_path / "demo.mp4"
    encoded = record_encoded_frames(monkeypatch)
    assert main(["demo", "--family", family, "--output", str(out), "--frames", "9", "--height", "64", "--width",
                 "128", "--steps", "2", "--keep", str(keep)]) == 0
    assert (keep / "model_index.json").is_file() and (keep / "latent_upsampler").is_dir()
    printed = capsys.readouterr().out
    commands = [line.strip() for line in printed.splitlines() if line.strip().startswith("ltxengine ")]
    assert [c.split()[1] for c in commands] == ["info", "generate"], printed
    assert main(shlex.split(commands[0])[1:]) == 0
    info = capsys.readouterr().out
    assert ("LTX-2" if family.startswith("ltx-2") else "LTX-Video") in info
    if family == "ltx-2.5":  # info names the release, the generate command uses its defaults as the engine does
        assert "version: 2.5" in info, info
    demo_video = np.stack(encoded)
    encoded.clear()
    assert main(shlex.split(commands[1])[1:] + ["--quiet"]) == 0
    again = tmp_path / "demo-again.mp4"
    assert str(again) in commands[1]
    # the same frames reach the encoder (decoded mp4s are not compared: see record_encoded_frames)
    assert np.array_equal(demo_video, np.stack(encoded))
    demo_media, cli_media = read_media(out), read_media(again)
    assert demo_media[0].shape == cli_media[0].shape and demo_media[1] == cli_media[1]
    if family.startswith("ltx-2"):
        assert np.array_equal(demo_media[2], cli_media[2])


def test_demo_keep_refuses_a_folder_in_use(tmp_path, capsys):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["demo", "--output", str(tmp_path / "d.mp4"), "--keep", str(tmp_path / "busy")]) == 2
    assert "ltxengine demo: error: --keep: " in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["busy", "notes.txt"]
