"""``ltxengine generate`` for both families: the installed command end to end, the LTX-2 options,
every user error (exit 2, the flag named, before the model loads), --help / --version / --quiet,
and SIGINT / SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from ltxengine.cli import build_parser, main
from ltxengine.demo import write_demo_checkpoint, write_demo_ltx2_checkpoint
from ltxengine.engine import Engine
from ltxengine.media import read_media, write_mp4
from tests.cli.recording import Stop as _Stop

from ..helpers import record_encoded_frames


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """The two demo checkpoints, copies of them without latent_upsampler/, a still and a sound."""
    root = tmp_path_factory.mktemp("cli")
    out = {"ltx-video": write_demo_checkpoint(root / "ltxv"), "ltx-2": write_demo_ltx2_checkpoint(root / "ltx2")}
    for name in ("ltx-video", "ltx-2"):
        bare = root / f"{name}-bare"
        bare.mkdir()
        for child in out[name].iterdir():
            if child.name != "latent_upsampler":
                (bare / child.name).symlink_to(child)
        out[f"{name}-bare"] = bare
    rng = np.random.default_rng(0)
    out["still"] = write_mp4(root / "still.mp4", rng.integers(0, 255, (1, 64, 64, 3), dtype=np.uint8), 24)
    t = np.arange(48000) / 24000
    tone = np.stack([np.sin(2 * np.pi * 440 * t), np.sin(2 * np.pi * 220 * t)]).astype(np.float32) * 0.5
    out["sound"] = write_mp4(root / "sound.mp4", np.zeros((48, 16, 16, 3), np.uint8), 24, audio=tone,
                             sample_rate=24000)
    return out


def _cli(argv, capsys) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _command(args, cwd, **kw) -> subprocess.CompletedProcess:
    # from a folder outside the source tree, as a user runs it (python -m: the same main as the script)
    return subprocess.run([sys.executable, "-m", "ltxengine.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, **kw)


# -- the command end to end, one per family ------------------------------------------------------------

def test_generate_ltx_video_from_the_command_line(folders, tmp_path):
    out = tmp_path / "v.mp4"
    r = _command(["generate", "--model", folders["ltx-video"], "--prompt", "a red car at night", "--output", out,
                  "--height", "64", "--width", "96", "--num-frames", "17", "--frame-rate", "30000/1001", "--steps",
                  "2", "--seed", "3", "--dtype", "fp32", "--quiet"], tmp_path)
    assert r.returncode == 0, r.stderr
    frames, rate, audio, _ = read_media(out)
    assert frames.shape == (17, 64, 96, 3) and rate == Fraction(30000, 1001) and audio is None
    assert "seed 3" in r.stdout
    # --quiet: no progress bar of ours, of transformers' loading ("Loading weights") or the Hub's
    assert "%|" not in r.stderr and "it/s" not in r.stderr, r.stderr


def test_generate_ltx2_from_the_command_line(folders, tmp_path, monkeypatch):
    """Crashed with "unexpected keyword argument 'guidance_scale'" on every LTX-2 checkpoint. The
    LTX-2 flags reach LTX2Engine.generate as the API spells them: same seed, same mp4."""
    from ltxengine import Condition
    from ltxengine.cli_generate import read_image
    from ltxengine.ltx2.engine import LTX2TwoStage
    from ltxengine.ltx2.denoise import GuidanceParams

    out = tmp_path / "cli.mp4"
    cli_args = [str(a) for a in ["generate", "--checkpoint-path", str(folders["ltx-2"]), "--prompt", "a cat walks",
                "--height", "64", "--width", "128", "--num-frames", "9", "--num-inference-steps", "2", "--seed",
                "5", "--dtype", "fp32", "--max-sequence-length", "32", "--sampler", "gradient-estimation",
                "--image", folders["still"], "0", "0.9", "20", "--image", folders["still"], "8", "0.5",
                "--video-cfg-guidance-scale", "2.0", "--video-stg-blocks", "1", "--a2v-guidance-scale", "1.5",
                "--audio-rescale-scale", "0.3", "--audio-stg-guidance-scale", "0", "--adain-factor", "0.5",
                "--negative-prompt", "blurry", "--quiet"]]
    r = _command(cli_args + ["--output-path", out], tmp_path)
    assert r.returncode == 0, r.stderr
    frames, rate, audio, sample_rate = read_media(out)
    assert frames.shape == (9, 64, 128, 3) and rate == 24  # 24 fps: LTX-2's default
    assert audio is not None and audio.shape[0] == 2 and sample_rate == 24000
    assert abs(audio.shape[1] / sample_rate - 9 / 24) <= 1024 / sample_rate  # the video's duration (+ AAC padding)
    assert "2-channel 24000 Hz audio, seed 5" in r.stdout
    assert "%|" not in r.stderr and "it/s" not in r.stderr, r.stderr  # --quiet
    engine = Engine.from_pretrained(folders["ltx-2"], device="cpu", dtype=torch.float32)
    still = read_image(folders["still"])
    api = tmp_path / "api.mp4"
    encoded = record_encoded_frames(monkeypatch)
    engine.generate("a cat walks", "blurry", height=64, width=128, num_frames=9, num_inference_steps=2, seed=5,
                    max_sequence_length=32, sampler="gradient-estimation", image_crf=20,
                    conditions=[Condition(image=still, frame_index=0, strength=0.9),
                                Condition(image=still, frame_index=8, strength=0.5)],
                    video_guidance=GuidanceParams(cfg=2.0, stg=1.0, stg_blocks=(1,), rescale=0.7, modality=1.5),
                    audio_guidance=GuidanceParams(cfg=7.0, stg=0.0, stg_blocks=(1,), rescale=0.3, modality=3.0),
                    two_stage=LTX2TwoStage(adain_factor=0.5, lora_strength=0.0), output=api)  # (no LoRA to fuse)
    api_video = np.stack(encoded)
    encoded.clear()
    expected = read_media(api)
    assert frames.shape == expected[0].shape
    assert np.array_equal(audio, expected[2])
    # the command hands the encoder the same frames as the API (run again in this process to see them;
    # decoded mp4s are not compared: see record_encoded_frames)
    assert main(cli_args + ["--output-path", str(tmp_path / "cli2.mp4")]) == 0
    cli_video = np.stack(encoded)
    assert np.array_equal(cli_video, api_video), f"{(cli_video != api_video).sum()} of {cli_video.size} differ"


# -- what reaches the engine (no model run) ---------------------------------------------------------------




def test_ltx2_flags_reach_the_engine(folders, recorded, capsys):
    from transformers.utils import logging
    bars = logging.is_progress_bar_enabled()
    lora = folders["still"]  # any existing file: the fake engine does not read it
    with pytest.raises(_Stop):
        main(["generate", "--model", str(folders["ltx-2"]), "--prompt", "p", "--gemma-root", str(folders["ltx-2"] /
              "text_encoder"), "--spatial-upsampler-path", str(folders["ltx-2"] / "latent_upsampler"),
              "--distilled-lora", str(lora), "0.7", "--pipeline", "distilled", "--video-cfg-guidance-scale", "2",
              "--audio-path", str(folders["sound"]), "--audio-start-time", "0.25", "--quantization", "fp8-cast",
              "--kernels", "torch", "--executor", "eager", "--offload", "text_encoder", "--dtype", "fp32",
              "--decode-timestep", "0.05", "--tone-map", "0.6"])
    load, gen = recorded["load"], recorded["generate"]
    assert load["path"] == folders["ltx-2"] and load["distilled_lora"] == Path(lora)
    assert load["text_encoder"] == str(folders["ltx-2"] / "text_encoder")
    assert load["latent_upsampler"] == str(folders["ltx-2"] / "latent_upsampler")
    assert (load["quantization"], load["kernels"], load["executor"], load["offload"], load["dtype"]) == (
        "fp8-cast", "torch", "eager", ("text_encoder",), torch.float32)
    assert gen["pipeline"] == "distilled" and gen["two_stage"].lora_strength == 0.7
    assert gen["two_stage"].tone_map_compression_ratio == 0.6 and gen["decode_timestep"] == 0.05
    # distilled: no guidance unless asked, so only the CFG given is on
    assert gen["video_guidance"].cfg == 2.0 and gen["video_guidance"].stg == 0 and gen["audio_guidance"] is None
    assert gen["audio"] == str(folders["sound"]) and gen["audio_start"] == 0.25
    assert gen["frame_rate"] == 24 and (gen["height"], gen["width"], gen["num_frames"]) == (512, 768, 121)
    assert recorded["load"]["bars"] == bars  # not --quiet: transformers' bars as they were


def test_audio_max_duration_reaches_the_engine(folders, recorded):
    with pytest.raises(_Stop):
        main(["generate", "--model", str(folders["ltx-2"]), "--prompt", "p", "--num-frames", "25", "--frame-rate",
              "25", "--audio-path", str(folders["sound"]), "--audio-start-time", "0.5", "--audio-max-duration", "1.2",
              "--pipeline", "one-stage", "--quiet"])
    gen = recorded["generate"]  # the engine reads that window of the file (ltx-pipelines' a2vid_two_stage)
    assert (gen["audio"], gen["audio_start"], gen["audio_max_duration"]) == (str(folders["sound"]), 0.5, 1.2)
    assert recorded["load"]["bars"] is False and recorded["load"]["hub_bars"] is False  # --quiet
    from transformers.utils import logging
    assert logging.is_progress_bar_enabled()  # restored after the command


def test_two_stage_hq_flags_reach_the_engine(folders, recorded):
    lora = folders["still"]  # any existing file: the fake engine does not read it
    argv = ["generate", "--model", str(folders["ltx-2"]), "--prompt", "p", "--pipeline", "two-stage-hq",
            "--distilled-lora", str(lora)]
    with pytest.raises(_Stop):
        main(argv)
    gen = recorded["generate"]  # the strengths left to the pipeline's preset (0.25 / 0.5)
    assert gen["pipeline"] == "two-stage-hq" and gen["sampler"] is None and gen["video_guidance"] is None
    assert (gen["two_stage"].stage1_lora_strength, gen["two_stage"].lora_strength) == (None, None)
    with pytest.raises(_Stop):
        main(argv[:-1] + [str(lora), "0.6", "--distilled-lora-strength-stage-1", "0.3", "--video-cfg-guidance-scale",
                          "4"])
    gen = recorded["generate"]
    assert (gen["two_stage"].stage1_lora_strength, gen["two_stage"].lora_strength) == (0.3, 0.6)
    # a guidance flag changes its field of the HQ guidance (no STG), not of the release's
    assert (gen["video_guidance"].cfg, gen["video_guidance"].stg, gen["video_guidance"].rescale) == (4.0, 0.0, 0.45)


def test_ltx_video_images_and_stages_reach_the_engine(folders, recorded):
    with pytest.raises(_Stop):
        main(["generate", "--model", str(folders["ltx-video"]), "--prompt", "p", "--image", str(folders["still"]),
              "--two-stage", "--refine-steps", "3", "--guidance-scale", "4.5"])
    gen = recorded["generate"]
    assert gen["image"].shape == (64, 64, 3) and "conditions" not in gen
    assert gen["two_stage"].num_inference_steps == 3 and gen["guidance_scale"] == 4.5
    assert (gen["height"], gen["width"], gen["frame_rate"], gen["num_inference_steps"]) == (512, 704, 25, 50)
    with pytest.raises(_Stop):
        main(["generate", "--model", str(folders["ltx-video"]), "--prompt", "p", "--image", str(folders["still"]),
              "16", "0.8"])
    (cond,) = recorded["generate"]["conditions"]
    assert (cond.frame_index, cond.strength, cond.image.shape) == (16, 0.8, (64, 64, 3))


def test_engine_warnings_are_shown_in_cli_terms(folders, monkeypatch, capsys):
    import warnings

    class Warns:
        def generate(self, prompt, **kw):
            warnings.warn("stage 2 without a LoRA: load it with Engine.from_pretrained(..., distilled_lora=PATH)")
            raise _Stop

    monkeypatch.setattr(Engine, "from_pretrained", lambda *a, **k: Warns())
    with pytest.raises(_Stop):
        main(["generate", "--model", str(folders["ltx-2"]), "--prompt", "p", "--quiet"])
    assert capsys.readouterr().err == ("ltxengine generate: warning: stage 2 without a LoRA: load it with "
                                       "--distilled-lora PATH\n")


# -- user errors: exit 2, "ltxengine generate: error:", the flag, before the model loads ---------------------

V, A = "ltx-video", "ltx-2"
ERRORS = [
    (V, ["--image", "missing.png"], "argument --image: 'missing.png' does not exist"),
    (V, ["--image", "{still}", "0"], "argument --image: takes PATH or PATH FRAME STRENGTH [CRF], got 2 values"),
    (V, ["--image", "{still}", "0", "1.5"], "argument --image: {still} STRENGTH must be in [0.0, 1.0], got 1.5"),
    (A, ["--image", "{still}", "40", "1.0"], "--image {still}: FRAME must be < --num-frames (9), got 40"),
    (V, ["--image", "{still}", "0", "1", "20"], "--image CRF: LTX-Video uses condition images as they are"),
    (A, ["--image", "{still}", "0", "1", "20", "--image", "{still}", "8", "1", "30"],
     "--image CRF: LTX-2 round-trips every condition image at one CRF, got [20, 30]"),
    (A, ["--image", "{still}", "--image", "{still}", "0", "0.5"], "--image: at most one image may condition frame 0"),
    (V, ["--dtype", "fp64"], "argument --dtype: invalid choice: 'fp64'"),
    (V, ["--device", "tpu"], "--device: 'tpu' is not a device name"),
    (V, ["--device", "mps"], "--device must be cpu, cuda or cuda:N, got 'mps'"),
    (V, ["--output", "{tmp}/clip.gif"], "--output must name an .mp4 file"),
    (V, ["--output", "{tmp}"], "--output must name an .mp4 file"),
    (V, ["--output", "{tmp}/missing/clip.mp4"], "--output: the folder '{tmp}/missing' does not exist"),
    (V, ["--num-frames", "10"], "argument --num-frames: must be of the form 8k+1 (e.g. 9 or 17), got 10"),
    (V, ["--height", "100"], "argument --height: must be a multiple of 32, got 100"),
    (V, ["--steps", "0"], "argument --steps/--num-inference-steps: must be >= 1, got 0"),
    (V, ["--seed", "-1"], "argument --seed: must be in [0, 18446744073709551615], got -1"),
    (V, ["--frame-rate", "0"], "argument --frame-rate: must be positive, got '0'"),
    (V, ["--guidance-scale", "nan"], "argument --guidance-scale: must be finite, got 'nan'"),
    (V, ["--model", "{tmp}/missing"], "--model: '{tmp}/missing' is neither an existing file or folder"),
    (V, ["--text-encoder", "{tmp}/missing"], "--text-encoder: '{tmp}/missing' does not exist"),
    (V, ["--latent-upsampler", "{tmp}/missing", "--two-stage"], "--latent-upsampler: '{tmp}/missing' does not exist"),
    (V, ["--two-stage"], "--two-stage needs a latent upsampler: pass --latent-upsampler PATH"),
    (V, ["--distilled"], "--distilled needs a latent upsampler"),
    (A, ["--pipeline", "two-stage"], "--pipeline two-stage needs the spatial latent upsampler: pass "
                                     "--spatial-upsampler-path PATH"),
    (A, ["--two-stage"], "--two-stage needs the spatial latent upsampler"),
    (V, ["--refine-steps", "3"], "--refine-steps: configures stage 2, which only --two-stage and --distilled run"),
    (V, ["--distilled", "--guidance-scale", "2", "--latent-upsampler", "{up}"],
     "--guidance-scale: --distilled runs the fixed distilled schedules without guidance"),
    (V, ["--video-cfg-guidance-scale", "2"], "--video-cfg-guidance-scale is an LTX-2 option; {model} is an LTX-Video "
                                             "checkpoint"),
    (V, ["--pipeline", "one-stage"], "--pipeline is an LTX-2 option"),
    (V, ["--audio-path", "{sound}"], "--audio-path is an LTX-2 option"),
    (A, ["--guidance-scale", "2"], "--guidance-scale is an LTX-Video option; {model} is an LTX-2 checkpoint (LTX-2 "
                                   "guides video and audio apart: --video-cfg-guidance-scale"),
    (A, ["--refine-strength", "0.5"], "--refine-strength is an LTX-Video option"),
    (A, ["--height", "96", "--latent-upsampler", "{up}"], "--height must be a multiple of 64 for the two-stage "
                                                          "pipeline (stage 1 runs at half the size), got 96"),
    (A, ["--two-stage", "--pipeline", "one-stage"], "--pipeline one-stage and --two-stage: choose one pipeline"),
    (A, ["--pipeline", "distilled", "--steps", "3", "--latent-upsampler", "{up}"],
     "--steps: --pipeline distilled runs the fixed 8-sigma distilled schedule"),
    (A, ["--steps", "1"], "--steps must be >= 2 for LTX-2's stretched schedule, got 1"),
    (A, ["--distilled-lora", "{still}"], "--distilled-lora: configures stage 2, which the one-stage pipeline does "
                                         "not have"),
    (A, ["--distilled-lora", "{still}", "x"], "argument --distilled-lora: STRENGTH must be a number, got 'x'"),
    (A, ["--video-stg-blocks", "5"], "--video-stg-blocks must be block indices in [0, 2)"),
    (A, ["--audio-stg-guidance-scale", "1", "--audio-stg-blocks"], "--audio-stg-guidance-scale = 1.0 needs "
                                                                   "--audio-stg-blocks"),
    (A, ["--video-rescale-scale", "2"], "argument --video-rescale-scale: must be in [0.0, 1.0], got 2"),
    (A, ["--audio-start-time", "1"], "--audio-start-time: needs --audio-path"),
    (A, ["--audio-path", "{still}"], "--audio-path: '{still}' has no audio stream"),
    (A, ["--audio-path", "{tmp}/missing.wav"], "--audio-path: '{tmp}/missing.wav' does not exist"),
    (A, ["--audio-path", "{sound}", "--audio-max-duration", "0.2"], "--audio-max-duration 0.2 s is shorter than the "
                                                                    "video (9 frames at 24 fps = 0.375 s)"),
    (A, ["--audio-path", "{sound}", "--v2a-guidance-scale", "2"], "--v2a-guidance-scale: the audio is given with "
                                                                  "--audio-path, not generated, so it is not guided"),
    (A, ["--pipeline", "two-stage-hq", "--sampler", "euler", "--latent-upsampler", "{up}"],
     "--sampler: --pipeline two-stage-hq samples with res2s in both stages, got euler"),
    (A, ["--distilled-lora-strength-stage-1", "0.3", "--latent-upsampler", "{up}"],
     "--distilled-lora-strength-stage-1: only --pipeline two-stage-hq fuses the distilled LoRA in stage 1, got the "
     "two-stage pipeline"),
]


@pytest.mark.parametrize("family, extra, message", ERRORS, ids=[" ".join(e[1])[:40] for e in ERRORS])
def test_user_errors_exit_2_naming_the_flag_before_loading(folders, tmp_path, monkeypatch, capsys, family, extra,
                                                           message):
    def no_load(*a, **k):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(Engine, "from_pretrained", no_load)
    model = folders[f"{family}-bare"]
    fill = dict(still=folders["still"], sound=folders["sound"], tmp=tmp_path, model=model,
                up=folders[family] / "latent_upsampler")
    argv = ["generate", "--model", model, "--prompt", "x", "--output", tmp_path / "out.mp4", "--num-frames", "9",
            *[a.format(**fill) for a in extra]]
    code, out, err = _cli(argv, capsys)
    assert code == 2, err
    assert err.strip().splitlines()[-1].startswith("ltxengine generate: error: "), err
    assert message.format(**fill) in err, err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_device_cuda_without_cuda(folders, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(Engine, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    code, _, err = _cli(["generate", "--model", folders["ltx-video"], "--prompt", "x", "--device", "cuda",
                         "--output", tmp_path / "o.mp4"], capsys)
    assert code == 2 and "ltxengine generate: error: --device cuda: CUDA is not available" in err


def test_engine_errors_come_back_with_flag_names(folders, tmp_path, capsys):
    """A rule only the engine checks (stage 1 of at least one latent pixel) still exits 2 with the
    flag, not the Python argument."""
    code, _, err = _cli(["generate", "--model", folders["ltx-video"], "--prompt", "x", "--output", tmp_path / "o.mp4",
                         "--height", "64", "--width", "64", "--num-frames", "9", "--two-stage", "--downscale-factor",
                         "0.25", "--dtype", "fp32", "--quiet"], capsys)
    assert code == 2, err
    assert "ltxengine generate: error: --downscale-factor 0.25 makes the first stage" in err, err
    assert "two_stage" not in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []


def test_flag_message_translates_python_names():
    from ltxengine.cli_options import flag_message
    cases = {
        "num_frames must be of the form 8k+1, got 10": "--num-frames must be of the form 8k+1, got 10",
        "height must be a multiple of 64 for pipeline='two-stage'": "--height must be a multiple of 64 for "
                                                                    "--pipeline 'two-stage'",
        "two_stage.denoise_strength must be in (0.0, 1.0], got 0": "--refine-strength must be in (0.0, 1.0], got 0",
        "conditions[1].frame_index must be < num_frames (9), got 12": "--image #2 FRAME must be < --num-frames (9), "
                                                                      "got 12",
        "video_guidance.rescale must be in [0, 1]": "--video-rescale-scale must be in [0, 1]",
        "audio_guidance.modality must be >= 0": "--v2a-guidance-scale must be >= 0",
        "an image and its height": "an image and its height",  # prose keeps its words
        "text_encoder: /x holds no Gemma 3 text encoder": "--text-encoder: /x holds no Gemma 3 text encoder",
        # the API's way in becomes the flag
        "pipeline='two-stage' needs the upsampler: pass latent_upsampler=PATH to Engine.from_pretrained":
            "--pipeline 'two-stage' needs the upsampler: pass --latent-upsampler PATH",
        "no LoRA: load it with Engine.from_pretrained(..., distilled_lora=PATH)": "no LoRA: load it with "
                                                                                   "--distilled-lora PATH",
    }
    for engine_says, cli_says in cases.items():
        assert flag_message(engine_says) == cli_says


# -- help, version, choices ---------------------------------------------------------------------------------

def test_every_option_has_help_with_its_default():
    from ltxengine.cli import _HelpFormatter
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subparsers.items():
        formatter = _HelpFormatter(prog=name)
        for action in sub._actions:
            if action.dest == "help":
                continue
            assert action.help, f"{name} {action.option_strings or action.dest}: no help"
            if action.option_strings and not action.required and action.nargs != 0:
                text = formatter._get_help_string(action)
                assert "default" in text, f"{name} {action.option_strings}: help does not give the default: {text}"
    text = " ".join(subparsers["generate"].format_help().split())  # unwrapped
    assert "(default: bf16)" in text and "(default: 512 for LTX-Video, 512 for LTX-2)" in text


def test_version(capsys):
    from ltxengine import __version__
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ltxengine {__version__}"


def test_choices_match_the_engine():
    from ltxengine import cli_options
    import ltxengine.ltx2.engine as ltx2_engine
    from ltxengine.ops import BACKENDS
    assert cli_options.PIPELINES_LTX2 == ltx2_engine.PIPELINES_LTX2 and cli_options.SAMPLERS == ltx2_engine.SAMPLERS
    gen = next(a for a in build_parser()._actions if a.dest == "command").choices["generate"]
    choices = {a.dest: tuple(a.choices) for a in gen._actions if a.choices}
    assert choices["kernels"] == BACKENDS and choices["offload"] == Engine.OFFLOADABLE + Engine.STREAMED


# -- interrupts -----------------------------------------------------------------------------------------------

def test_ctrl_c_exits_130(folders, tmp_path, monkeypatch, capsys):
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(Engine, "from_pretrained", interrupted)
    handler = signal.getsignal(signal.SIGTERM)
    code, _, err = _cli(["generate", "--model", folders["ltx-video"], "--prompt", "x", "--output",
                         tmp_path / "o.mp4"], capsys)
    assert code == 130 and "ltxengine generate: interrupted by SIGINT" in err
    assert signal.getsignal(signal.SIGTERM) is handler  # the CLI's SIGTERM handler is gone again


_SLOW_WRITER = """
import sys, time
import ltxengine.media as media
encode = media._encode_frames
def slow(*args):  # the first frames reach the temporary file, then the writer stalls
    encode(*args)
    time.sleep(300)
media._encode_frames = slow
from ltxengine.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_sigterm_while_writing_removes_the_partial_file_and_exits_143(folders, tmp_path):
    """Before: SIGTERM killed the process at once and left the hidden .part file for ever."""
    out = tmp_path / "clip.mp4"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_WRITER, "generate", "--model", str(folders["ltx-video"]),
                             "--prompt", "x", "--output", str(out), "--height", "64", "--width", "64",
                             "--num-frames", "9", "--steps", "1", "--dtype", "fp32", "--quiet"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300
        while not list(tmp_path.glob(".*.part")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no temporary file appeared"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "ltxengine generate: interrupted by SIGTERM" in err
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)


def test_lora_flags_fuse_the_same_adapters_as_the_api(folders, tmp_path, monkeypatch, capsys):
    """--lora PATH [STRENGTH] (repeatable) loads each file as an adapter and activates all of them
    with their strengths: the encoder gets the same frames as load_lora_weights + set_adapters."""
    from safetensors.torch import save_file

    from ..loading.lora_fixtures import random_lora
    engine = Engine.from_pretrained(folders["ltx-video"], device="cpu", dtype=torch.float32)
    paths = []
    for seed, layout in ((1, "diffusers"), (2, "lightricks")):
        prefix = "transformer." if layout == "diffusers" else "diffusion_model."
        sd = random_lora(engine.transformer, rename=str, seed=seed, exact=True, prefix=prefix,
                         modules=["transformer_blocks.0.attn1.to_q", "transformer_blocks.1.ff.net.2"])
        paths.append(tmp_path / f"{layout}.safetensors")
        save_file(sd, str(paths[-1]))
    size = ["--height", "64", "--width", "96", "--num-frames", "9", "--steps", "2", "--seed", "3", "--dtype", "fp32",
            "--quiet"]
    encoded = record_encoded_frames(monkeypatch)
    code, _, err = _cli(["generate", "--model", folders["ltx-video"], "--prompt", "a red car", "--output",
                         tmp_path / "cli.mp4", "--lora", paths[0], "--lora", paths[1], "0.5", *size], capsys)
    assert code == 0, err
    cli_frames = np.stack(encoded)
    encoded.clear()
    engine.load_lora_weights(paths[0], adapter_name="a")
    engine.load_lora_weights(paths[1], adapter_name="b")
    engine.set_adapters(["a", "b"], [1.0, 0.5])
    api = dict(height=64, width=96, num_frames=9, num_inference_steps=2, seed=3, decode_timestep=0.05,
               decode_noise_scale=0.025)  # the command's LTX-Video decode defaults
    engine.generate("a red car", output=tmp_path / "api.mp4", **api)
    assert np.array_equal(cli_frames, np.stack(encoded))
    encoded.clear()
    engine.unload_lora_weights()
    engine.generate("a red car", output=tmp_path / "plain.mp4", **api)
    assert not np.array_equal(cli_frames, np.stack(encoded))  # the LoRAs changed the video


def test_a_lora_for_another_model_is_a_usage_error_naming_the_flag(folders, tmp_path, capsys):
    from safetensors.torch import save_file
    bad = tmp_path / "other.safetensors"
    save_file({"transformer.no_such_layer.lora_A.weight": torch.ones(2, 8),
               "transformer.no_such_layer.lora_B.weight": torch.ones(8, 2)}, str(bad))
    out = tmp_path / "never.mp4"
    code, _, err = _cli(["generate", "--model", folders["ltx-video"], "--prompt", "x", "--output", out, "--lora", bad,
                         "--height", "64", "--width", "96", "--num-frames", "9", "--steps", "2", "--quiet"], capsys)
    assert code == 2 and "--lora" in err and "match no linear layer of the model" in err, err
    assert not out.exists()
