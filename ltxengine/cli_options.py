"""The options of ``ltxengine generate`` (both families), their argparse types, and the map
from the engine's Python argument names back to these flags (so an engine error reads in CLI
terms). LTX-2 options carry ltx-pipelines' names where it has one; ``cli_generate`` checks them.
"""

from __future__ import annotations

import argparse
import math
import re
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple


class UsageError(ValueError):
    """A bad command line; the message names the flag. ``ltxengine`` prints it and exits 2."""


class ImageInput(NamedTuple):
    path: Path
    frame: int | None  # None: plain ``--image PATH`` (frame 0, strength 1)
    strength: float | None
    crf: int | None


# Options whose default depends on the family are None on the parser and filled in here.
DEFAULTS = {
    "LTX-Video": {"height": 512, "width": 704, "num_frames": 121, "frame_rate": Fraction(25), "steps": 50,
                  "guidance_scale": 3.0, "guidance_rescale": 0.0, "decode_timestep": 0.05,
                  "decode_noise_scale": 0.025, "downscale_factor": 2 / 3, "adain_factor": 1.0, "tone_map": 0.0,
                  "refine_strength": 0.4, "refine_steps": 10},
    # LTX2Engine.generate's defaults (ltx-pipelines' stage-1 size; steps and decode settings from the model)
    "LTX-2": {"height": 512, "width": 768, "num_frames": 121, "frame_rate": Fraction(24), "steps": None,
              "adain_factor": 0.0, "tone_map": 0.0},
}
GUIDANCE_FIELDS = ("cfg", "stg", "stg_blocks", "rescale", "modality", "skip_step")


def guidance_flags(modality: str) -> dict[str, str]:
    cross = "--a2v-guidance-scale" if modality == "video" else "--v2a-guidance-scale"
    return {"cfg": f"--{modality}-cfg-guidance-scale", "stg": f"--{modality}-stg-guidance-scale",
            "stg_blocks": f"--{modality}-stg-blocks", "rescale": f"--{modality}-rescale-scale", "modality": cross,
            "skip_step": f"--{modality}-skip-step"}


# dest (generate()'s argument) -> flag of pipeline retake's options
RETAKE_FLAGS = {"video": "--video", "start_time": "--start-time", "end_time": "--end-time",
                "regenerate_video": "--no-regenerate-video", "regenerate_audio": "--no-regenerate-audio"}
# dest -> flag of pipeline ic-lora's options
IC_LORA_FLAGS = {"video_conditioning": "--video-conditioning",
                 "conditioning_attention_mask": "--conditioning-attention-mask"}
# dest -> flag of the options only one family has
LTX_VIDEO_ONLY = {"guidance_scale": "--guidance-scale", "guidance_rescale": "--guidance-rescale",
                  "downscale_factor": "--downscale-factor", "refine_strength": "--refine-strength",
                  "refine_steps": "--refine-steps"}
LTX2_ONLY = {"pipeline": "--pipeline", "sampler": "--sampler", "distilled_lora": "--distilled-lora",
             "decoder": "--decoder", "cross_timestep": "--cross-timestep",
             "audio": "--audio-path", "audio_start": "--audio-start-time", "audio_max_duration": "--audio-max-duration",
             "stage1_lora_strength": "--distilled-lora-strength-stage-1",
             "latents_path": "--latents", "noise_scale": "--noise-scale", "output_latents": "--output-latents",
             **RETAKE_FLAGS, **IC_LORA_FLAGS,
             **{f"{m}_{k}": f for m in ("video", "audio") for k, f in guidance_flags(m).items()}}
HINTS = {"guidance_scale": "LTX-2 guides video and audio apart: --video-cfg-guidance-scale, "
                           "--audio-cfg-guidance-scale",
         "guidance_rescale": "LTX-2 rescales per modality: --video-rescale-scale, --audio-rescale-scale",
         "downscale_factor": "LTX-2's stage 1 is always half the size",
         "refine_strength": "LTX-2's stage 2 re-noises at the first distilled sigma",
         "refine_steps": "LTX-2's stage 2 has 3 steps"}

# generate()'s and from_pretrained()'s argument names -> flags, to give engine errors back in CLI terms
FLAG_OF = {
    "components": "--components",
    "path_or_repo_id": "--model", "text_encoder": "--text-encoder", "latent_upsampler": "--latent-upsampler",
    "distilled_lora": "--distilled-lora", "quantization": "--quantization", "kernels": "--kernels",
    "dtype": "--dtype", "device": "--device", "executor": "--executor", "offload": "--offload",
    "offload_group_size": "--offload-group-size", "memory_budget": "--memory-budget",
    "fp8_attention": "--fp8-attention", "prompt": "--prompt", "negative_prompt": "--negative-prompt",
    "output": "--output", "image": "--image", "height": "--height", "width": "--width", "num_frames": "--num-frames",
    "frame_rate": "--frame-rate", "num_inference_steps": "--steps", "seed": "--seed", "pipeline": "--pipeline",
    "sampler": "--sampler", "guidance_scale": "--guidance-scale", "guidance_rescale": "--guidance-rescale",
    "decode_timestep": "--decode-timestep", "decode_noise_scale": "--decode-noise-scale",
    "max_sequence_length": "--max-sequence-length", "audio": "--audio-path", "audio_start": "--audio-start-time",
    "image_crf": "--image CRF", "two_stage.downscale_factor": "--downscale-factor",
    "two_stage.adain_factor": "--adain-factor", "two_stage.tone_map_compression_ratio": "--tone-map",
    "two_stage.denoise_strength": "--refine-strength", "two_stage.num_inference_steps": "--refine-steps",
    "two_stage.lora_strength": "--distilled-lora STRENGTH",
    "two_stage.stage1_lora_strength": "--distilled-lora-strength-stage-1",
    "audio_max_duration": "--audio-max-duration", "latents": "--latents", "audio_latents": "--latents",
    "noise_scale": "--noise-scale", "decoder": "--decoder", "cross_timestep": "--cross-timestep", **RETAKE_FLAGS,
    "reference_conditions": "--video-conditioning", "conditioning_attention_strength": "--conditioning-attention-mask",
    **{f"{m}_guidance.{k}": f for m in ("video", "audio") for k, f in guidance_flags(m).items()},
}
_NAME = re.compile(r"(?<![\w.'\"-])(" + "|".join(re.escape(k) for k in sorted(FLAG_OF, key=len, reverse=True))
                   + r")(?![\w\[])(=)?")
_CONDITION = re.compile(r"(?<![\w.-])conditions\[(\d+)\](?:\.(frame_index|strength|image))?")
_LOAD_HINT = re.compile(r"(?: to)? Engine\.from_pretrained(?:\(\.\.\., ([^)]*)\))?")
_PART = {"frame_index": " FRAME", "strength": " STRENGTH", "image": " PATH", None: ""}


def flag_message(message: str, extra: dict[str, str] | None = None) -> str:
    """An engine error with its Python argument names replaced by the CLI's flags. One-word names
    (height, image, ...) are replaced only where they lead the message or are written ``name=``."""
    table = {**FLAG_OF, **(extra or {})}
    pattern = _NAME if not extra else re.compile(
        r"(?<![\w.'\"-])(" + "|".join(re.escape(k) for k in sorted(table, key=len, reverse=True)) + r")(?![\w\[])(=)?")

    def flag(m: re.Match) -> str:
        name, eq = m.group(1), m.group(2)
        if "_" not in name and "." not in name and m.start() != 0 and not eq:
            return m.group(0)
        return table[name] + (" " if eq else "")

    message = _CONDITION.sub(lambda m: f"--image #{int(m.group(1)) + 1}{_PART[m.group(2)]}", message)
    message = _LOAD_HINT.sub(lambda m: f" {m.group(1)}" if m.group(1) else "", message)  # flags are the way in
    return pattern.sub(flag, message)


# -- argument types: argparse turns their errors into "argument --flag: ..." and exit status 2 ----------

def number(kind=float, low=None, high=None, *, low_open=False, multiple=None):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {'an integer' if kind is int else 'a number'}, "
                                             f"got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
        if (low is not None and (value < low or (low_open and value == low))) or (high is not None and value > high):
            rule = (f"in {'(' if low_open else '['}{low}, {high}]" if high is not None
                    else f"> {low}" if low_open else f">= {low}")
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        if multiple and value % multiple:
            raise argparse.ArgumentTypeError(f"must be a multiple of {multiple}, got {value}")
        return value
    parse.__name__ = kind.__name__
    return parse


def frame_count(text: str) -> int:
    n = number(int, 1)(text)
    if (n - 1) % 8:
        raise argparse.ArgumentTypeError(f"must be of the form 8k+1 (e.g. {8 * ((n - 1) // 8) + 1} or "
                                         f"{8 * ((n - 1) // 8 + 1) + 1}), got {n}")
    return n


def frame_rate(text: str) -> Fraction:
    from .media import frame_rate_fraction
    try:
        return frame_rate_fraction(text, "frame rate")
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e).removeprefix("frame rate ")) from None


class ImageAction(argparse.Action):
    """``--image PATH [FRAME STRENGTH [CRF]]``, repeatable (ltx-pipelines' ImageAction)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) not in (1, 3, 4):
            raise argparse.ArgumentError(self, f"takes PATH or PATH FRAME STRENGTH [CRF], got {len(values)} values "
                                               f"{values}")
        path = Path(values[0]).expanduser()
        if not path.is_file():
            raise argparse.ArgumentError(self, f"{values[0]!r} does not exist or is not a file")
        parsed = []
        parsers = (("FRAME", number(int, 0)), ("STRENGTH", number(float, 0.0, 1.0)), ("CRF", number(int, 0, 51)))
        for (label, parse), text in zip(parsers, values[1:]):
            try:
                parsed.append(parse(text))
            except argparse.ArgumentTypeError as e:
                raise argparse.ArgumentError(self, f"{values[0]} {label} {e}") from None
        frame, strength, crf = (parsed + [None] * 3)[:3]
        images = list(getattr(namespace, self.dest) or [])
        images.append(ImageInput(path, frame, strength, crf))
        setattr(namespace, self.dest, images)


class LoraAction(argparse.Action):
    """``--distilled-lora PATH [STRENGTH]`` (ltx-pipelines' LoraAction, one LoRA)."""

    def __call__(self, parser, namespace, values, option_string=None):
        if len(values) > 2:
            raise argparse.ArgumentError(self, f"takes PATH [STRENGTH], got {len(values)} values {values}")
        if not Path(values[0]).expanduser().exists():
            raise argparse.ArgumentError(self, f"{values[0]!r} does not exist")
        try:
            # --distilled-lora without STRENGTH: the pipeline's (1.0; 0.5 for two-stage-hq's stage 2)
            strength = number(float)(values[1]) if len(values) > 1 else (None if self.dest == "distilled_lora" else 1.0)
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, f"STRENGTH {e}") from None
        setattr(namespace, self.dest, (Path(values[0]).expanduser(), strength))


class VideoConditioningAction(argparse.Action):
    """``--video-conditioning PATH STRENGTH`` (repeatable: a list) and ``--conditioning-attention-mask
    PATH STRENGTH`` (one): (path, strength in [0, 1]) (ltx-pipelines' VideoConditioningAction)."""

    def __call__(self, parser, namespace, values, option_string=None):
        path = Path(values[0]).expanduser()
        if not path.is_file():
            raise argparse.ArgumentError(self, f"{values[0]!r} does not exist or is not a file")
        try:
            strength = number(float, 0.0, 1.0)(values[1])
        except argparse.ArgumentTypeError as e:
            raise argparse.ArgumentError(self, f"STRENGTH {e}") from None
        if self.dest == "video_conditioning":
            setattr(namespace, self.dest, list(getattr(namespace, self.dest) or []) + [(path, strength)])
        else:
            setattr(namespace, self.dest, (path, strength))


class LorasAction(LoraAction):
    """``--lora PATH [STRENGTH]``, repeatable (ltx-pipelines' ``--lora``): a list of (path, strength)."""

    def __call__(self, parser, namespace, values, option_string=None):
        before = list(getattr(namespace, self.dest) or [])
        super().__call__(parser, namespace, values, option_string)
        setattr(namespace, self.dest, before + [getattr(namespace, self.dest)])


# -- the parser ---------------------------------------------------------------------------------------

# LTX-2's recipes (a test keeps them equal)
PIPELINES_LTX2 = ("two-stage", "distilled", "one-stage", "ic-lora", "retake", "keyframe-interpolation",
                  "text-to-audio", "two-stage-hq")
SAMPLERS = ("euler", "gradient-estimation", "res2s", "euler-ancestral")
CROSS_TIMESTEPS = ("sigma", "own", "mixed")  # models/ltx2_transformer.CROSS_TIMESTEPS (tests/cli/test_cli_decoder.py)
DTYPES = ("bf16", "bfloat16", "fp16", "float16", "fp32", "float32")


def _per_family(dest: str) -> str:
    v, t = DEFAULTS["LTX-Video"].get(dest), DEFAULTS["LTX-2"].get(dest)
    show = lambda x: "the model's" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))  # noqa: E731
    return f"(default: {show(v)} for LTX-Video, {show(t)} for LTX-2)"


def add_arguments(gen: argparse.ArgumentParser) -> None:
    src = gen.add_argument_group("checkpoint (its family, LTX-Video or LTX-2, is read from its headers)")
    src.add_argument("--model", "--checkpoint-path", dest="model", required=True, metavar="PATH",
                     help="diffusers folder, Lightricks single-file .safetensors or Hugging Face repo id; or a "
                          ".gguf transformer with --components")
    src.add_argument("--components", metavar="PATH",
                     help="for a .gguf --model: the diffusers folder or Lightricks single file with its config and "
                          "the other components (VAE, text encoder, ...) (default: none; required with a .gguf)")
    src.add_argument("--text-encoder", "--gemma-root", dest="text_encoder", metavar="PATH",
                     help="text encoder folder: T5 (LTX-Video) or Gemma 3 (LTX-2) with its tokenizer (default: a "
                          "diffusers folder's own text_encoder/; single files need it)")
    src.add_argument("--latent-upsampler", "--spatial-upsampler-path", dest="latent_upsampler", metavar="PATH",
                     help="spatial latent upsampler (folder or .safetensors) for the two-stage pipelines: x2, or "
                          "LTX-2.3's x1.5 (stage 1 at 2/3 of the size), the kind read from the file (default: a "
                          "diffusers folder's own latent_upsampler/, or an LTX-2.5 folder's spatial upscaler)")
    src.add_argument("--distilled-lora", nargs="+", action=LoraAction, metavar=("PATH", "STRENGTH"),
                     help="LTX-2: the distilled LoRA fused for stage 2 of the two-stage pipelines, and its strength "
                          "(default strength: 1.0; 0.5 for --pipeline two-stage-hq)")
    src.add_argument("--distilled-lora-strength-stage-1", dest="stage1_lora_strength", type=number(float),
                     metavar="STRENGTH", help="--pipeline two-stage-hq: the distilled LoRA's strength in stage 1 "
                                              "(default: 0.25)")

    src.add_argument("--lora", dest="loras", nargs="+", action=LorasAction, metavar=("PATH", "STRENGTH"),
                     help="a LoRA (diffusers/PEFT or Lightricks/ComfyUI .safetensors) fused for the whole generation, "
                          "and its strength (default 1.0); repeatable. LTX-2's stage 2 adds the distilled LoRA to them")

    what = gen.add_argument_group("what to generate")
    what.add_argument("--prompt", required=True, help="what the video shows (and, for LTX-2, sounds like)")
    what.add_argument("--negative-prompt", help="what to steer away from (default: none for LTX-Video; "
                                                "ltx-pipelines' long default for LTX-2 when guidance is on)")
    what.add_argument("--output", "--output-path", dest="output", default="out.mp4", metavar="PATH",
                      help="the .mp4 to write (H.264; LTX-2 adds an AAC track); it appears only when complete")
    what.add_argument("--image", dest="images", nargs="+", action=ImageAction, metavar="ARG",
                      help="image condition PATH [FRAME STRENGTH [CRF]] (repeatable; any image or video file PyAV "
                           "reads, its first frame): plain PATH conditions frame 0 at strength 1; CRF is LTX-2's "
                           "H.264 round trip of the image (0: none; default: the release's, 33, or 18 for LTX-2.5). "
                           "Example: --image a.png "
                           "0 1.0 --image b.png 120 0.8")
    what.add_argument("--height", type=number(int, 32, multiple=32), help=f"pixels, a multiple of 32 (the VAE's "
                      f"latent pixel), of 64 for LTX-2's two-stage pipelines {_per_family('height')}")
    what.add_argument("--width", type=number(int, 32, multiple=32), help=f"pixels {_per_family('width')}")
    what.add_argument("--num-frames", type=frame_count, help=f"8k+1 frames {_per_family('num_frames')}")
    what.add_argument("--frame-rate", type=frame_rate, help=f"e.g. 25, 24, 24000/1001 {_per_family('frame_rate')}")
    what.add_argument("--steps", "--num-inference-steps", dest="steps", type=number(int, 1),
                      help=f"denoising steps of stage 1 {_per_family('steps')}")
    what.add_argument("--seed", type=number(int, 0, 2 ** 64 - 1),
                      help="random seed (default: a random one, printed so the video can be made again)")
    what.add_argument("--max-sequence-length", type=number(int, 1),
                      help="prompt tokens kept (default: the engine's, 128/256 for LTX-Video, 1024 for LTX-2)")
    what.add_argument("--decode-timestep", type=number(float, 0.0, 1.0),
                      help=f"VAE decode timestep {_per_family('decode_timestep')}")
    what.add_argument("--decode-noise-scale", type=number(float, 0.0, 1.0),
                      help=f"VAE decode noise {_per_family('decode_noise_scale')}")
    what.add_argument("--two-stage", action="store_true",
                      help="generate smaller, upsample the latents x2, refine (LTX-2: --pipeline two-stage)")
    what.add_argument("--distilled", action="store_true", help="the distilled recipe: LTX-Video 0.9.7/0.9.8 "
                      "distilled timesteps in two stages, no guidance (LTX-2: --pipeline distilled)")
    what.add_argument("--adain-factor", type=number(float, -10.0, 10.0),
                      help=f"stage 2: AdaIN of the upsampled latents {_per_family('adain_factor')}")
    what.add_argument("--tone-map", type=number(float, 0.0, 1.0),
                      help=f"stage 2: tone_map_compression_ratio (0.6 for LTX-Video 0.9.8) {_per_family('tone_map')}")

    ltxv = gen.add_argument_group("LTX-Video only")
    ltxv.add_argument("--guidance-scale", type=number(float, 0.0), help="CFG scale (default: 3.0)")
    ltxv.add_argument("--guidance-rescale", type=number(float, 0.0, 1.0), help="CFG rescale (default: 0.0)")
    ltxv.add_argument("--downscale-factor", type=number(float, 0.0, 1.0, low_open=True),
                      help="two-stage: stage 1 at this fraction of the size (default: 2/3)")
    ltxv.add_argument("--refine-strength", type=number(float, 0.0, 1.0, low_open=True),
                      help="two-stage: stage 2 denoise strength (default: 0.4)")
    ltxv.add_argument("--refine-steps", type=number(int, 1), help="two-stage: stage 2 steps (default: 10)")

    ltx2 = gen.add_argument_group("LTX-2 only (names as in ltx-pipelines; guidance defaults: its LTX-2.0 values)")
    ltx2.add_argument("--pipeline", choices=PIPELINES_LTX2,
                      help="default: two-stage when a latent upsampler is there, else one-stage")
    ltx2.add_argument("--sampler", choices=SAMPLERS, help="default: euler")
    ltx2.add_argument("--decoder", choices=("conv", "diffusion"),
                      help="video decoder: the VAE's conv decoder, or LTX-2.5's diffusion decoder (a diffusers "
                           "folder's diffusion_decoder/) (default: conv)")
    ltx2.add_argument("--cross-timestep", choices=CROSS_TIMESTEPS,
                      help="what drives the audio<->video modulation (differs only on conditioned tokens): "
                           "'sigma' (ltx-core 1.0.0, diffusers), 'mixed' (Lightricks since ltx-core 1.1.4), "
                           "'own' (the first 2.0 release) (default: the checkpoint release's: sigma for 2.0, "
                           "mixed for 2.3 / 2.5)")
    for modality, cfg, other in (("video", 3.0, "a2v"), ("audio", 7.0, "v2a")):
        flags = guidance_flags(modality)
        ltx2.add_argument(flags["cfg"], dest=f"{modality}_cfg", type=number(float, 0.0),
                          help=f"{modality} CFG scale, 1 = off (default: {cfg})")
        ltx2.add_argument(flags["stg"], dest=f"{modality}_stg", type=number(float, 0.0),
                          help=f"{modality} STG scale, 0 = off (default: 1.0)")
        ltx2.add_argument(flags["stg_blocks"], dest=f"{modality}_stg_blocks", type=number(int, 0), nargs="*",
                          metavar="BLOCK", help="transformer blocks STG perturbs (default: 29, or the last block of "
                                                "a smaller model)")
        ltx2.add_argument(flags["rescale"], dest=f"{modality}_rescale", type=number(float, 0.0, 1.0),
                          help=f"{modality} guidance rescale, 0 = off (default: 0.7)")
        ltx2.add_argument(flags["modality"], dest=f"{modality}_modality", type=number(float, 0.0),
                          help=f"{other.upper()} (modality isolation) guidance scale, 1 = off (default: 3.0)")
        ltx2.add_argument(flags["skip_step"], dest=f"{modality}_skip_step", type=number(int, 0),
                          help=f"reuse the {modality} x0 on steps with step %% (N + 1) != 0, 0 = never (default: 0)")
    ltx2.add_argument("--audio-path", "--audio", dest="audio", metavar="PATH",
                      help="audio-to-video: the video follows this audio (any file PyAV reads), which the mp4 keeps "
                           "(default: none, the audio is generated)")
    ltx2.add_argument("--video", "--video-path", dest="video", metavar="PATH",
                      help="--pipeline retake: the clip to retake (8k+1 frames, sides multiples of 32; its audio "
                           "track too); its size, frame count and rate are the output's (default: none)")
    ltx2.add_argument("--start-time", type=number(float, 0.0),
                      help="--pipeline retake: start of the region regenerated, in seconds (default: none, required)")
    ltx2.add_argument("--end-time", type=number(float, 0.0),
                      help="--pipeline retake: end of the region (excluded), in seconds (default: none, required)")
    ltx2.add_argument("--no-regenerate-video", dest="regenerate_video", action="store_const", const=False,
                      help="--pipeline retake: keep the clip's video whole, regenerate only the region's audio")
    ltx2.add_argument("--no-regenerate-audio", dest="regenerate_audio", action="store_const", const=False,
                      help="--pipeline retake: keep the clip's audio whole, regenerate only the region's video")
    ltx2.add_argument("--video-conditioning", nargs=2, action=VideoConditioningAction, metavar=("PATH", "STRENGTH"),
                      help="--pipeline ic-lora: a reference video for the IC-LoRA given with --lora (whose file "
                           "metadata sets the reference size) and its strength in [0, 1]; repeatable (default: none; "
                           "required by --pipeline ic-lora)")
    ltx2.add_argument("--conditioning-attention-mask", nargs=2, action=VideoConditioningAction,
                      metavar=("PATH", "STRENGTH"),
                      help="--pipeline ic-lora: a grayscale mask video (white: attend to the references) and the "
                           "attention strength in [0, 1] it is multiplied by (default: none, full attention)")
    ltx2.add_argument("--output-latents", metavar="PATH",
                      help="write the final latents to this .safetensors (keys latents, audio_latents: diffusers' "
                           "unpacked, denormalized form) instead of decoding an mp4 (default: none, the mp4)")
    ltx2.add_argument("--latents", dest="latents_path", metavar="PATH",
                      help="a .safetensors as --output-latents writes (latents and/or audio_latents): the first "
                           "stage's noisy start, at its size (half for the two-stage pipelines) (default: none, noise)")
    ltx2.add_argument("--noise-scale", type=number(float, 0.0, 1.0),
                      help="--latents: the noise mixed into them, as diffusers' noise_scale (default: 0.0)")
    ltx2.add_argument("--audio-start-time", dest="audio_start", type=number(float, 0.0),
                      help="seconds into --audio-path to start from (default: 0.0)")
    ltx2.add_argument("--audio-max-duration", type=number(float, 0.0, low_open=True),
                      help="seconds of --audio-path to read at most; at least the video's duration (default: what "
                           "the video needs)")

    rt = gen.add_argument_group("runtime")
    rt.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available, else cpu)")
    rt.add_argument("--dtype", default="bf16", choices=DTYPES, help="weights and compute dtype")
    rt.add_argument("--kernels", default="auto", choices=("auto", "torch", "triton", "cuda"),
                    help="fused ops: auto picks the fastest available for the device")
    rt.add_argument("--quantization", choices=("fp8-cast", "fp8-scaled-mm"),
                    help="fp8 transformer weights: fp8-cast (fp8 storage, compute in --dtype) or fp8-scaled-mm "
                         "(fp8 GEMM, Ada/Hopper); fp8 checkpoints keep fp8 storage without it (default: none)")
    rt.add_argument("--fp8-attention", action="store_true",
                    help="q/k/v of every attention in e4m3 (opt-in: ~5%% relative error per attention)")
    rt.add_argument("--executor", default="auto", choices=("auto", "graphs", "eager", "none"),
                    help="the denoising step: CUDA graphs (auto on CUDA), static buffers only, or plain calls")
    rt.add_argument("--offload", action="append", default=[], choices=("text_encoder", "latent_upsampler",
                                                                       "vae_encoder", "transformer_between_stages",
                                                                       "transformer", "text_encoder_layers"),
                    help="keep this component in host memory, on the device only while used (repeatable; default: "
                         "none); transformer_between_stages: the DiT leaves the device while the text encoder and "
                         "upsampler run; transformer: its blocks stream to the device in groups (eager steps); "
                         "text_encoder_layers: the text encoder's layers stream one at a time")
    rt.add_argument("--offload-group-size", type=int, default=None, metavar="N",
                    help="with --offload transformer: blocks per streamed group (default 2; two groups on the device)")
    rt.add_argument("--memory-budget", default=None, metavar="SIZE",
                    help="e.g. 24GB or 20GiB: pick offload, VAE tiling and streamed blocks so the planned peak fits "
                         "(instead of --offload; default: none)")
    rt.add_argument("--sequence-parallel", type=number(int, 1), metavar="N",
                    help="under torchrun: ranks sharing each transformer call, video tokens sharded; the product of "
                         "both parallel flags = --nproc-per-node (default: every rank when neither is given)")
    rt.add_argument("--guidance-parallel", type=number(int, 1), metavar="M",
                    help="under torchrun: groups of --sequence-parallel ranks splitting each step's guidance passes "
                         "(cond / uncond / STG / isolated) (default: 1)")
    rt.add_argument("--quiet", action="store_true", help="no progress bars (also transformers' and the Hub's)")
    for action in gen._actions:  # short placeholders keep the usage line readable
        if action.metavar is None and action.choices is None and action.nargs is None and action.type is not None:
            action.metavar = "N" if getattr(action.type, "__name__", "") == "int" else "X"
