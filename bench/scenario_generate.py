"""Benchmark end-to-end generation (text encoding to decoded frames): the ltxengine Engine against
diffusers' pipelines on the same weights, settings and seed.

    python bench/scenario_generate.py [--models ltxv-098,ltxv-2b,ltx2-19b] [--steps 8] [--ltx2-steps 40]
                                      [--ltx2-tiling none|spatial] [--kernels auto] [--reps N] [--warmup N]
                                      [--out DIR] [--smoke]

Scenarios (768x512x121, one prompt, seed 0; ``--smoke``: the same recipes on tiny models at 96x96x9,
float32 on the CPU):

  ltxv-098   LTX-Video 2B, the 0.9.8 distilled two-stage recipe: 8 distilled timesteps at 2/3 size
             (512x320), latent upsample x2 (AdaIN 1.0, tone map 0.6), refine at 1024x640 on the
             distilled stage-2 timesteps (strength 0.999), decode (timestep 0.05, noise 0.025), bilinear
             resize to 768x512. Ours: ``Engine.generate(two_stage=TwoStage(...))``; diffusers: the
             documented LTXConditionPipeline -> LTXLatentUpsamplePipeline -> LTXConditionPipeline recipe
             (tests/pipelines/test_parity.py), frames resized with the same bilinear resize.
  ltxv-2b    the same model in one stage at 768x512: ``--steps`` steps (8: the distilled timesteps,
             otherwise the condition pipeline's linear-quadratic schedule); isolates the two-stage overhead.

  ltx2-19b   LTX-2 19B video + audio, two stages (``--smoke``: 128x128x9): ``LTX2Engine.generate``'s
             two-stage recipe (``--ltx2-steps`` guided steps at half size with the default LTX-2.0 guidance,
             latent upsample x2, the distilled LoRA fused for the 3 STAGE2_SIGMAS steps) against diffusers'
             documented LTX2Pipeline -> LTX2LatentUpsamplePipeline -> LTX2Pipeline recipe with the settings of
             tests/pipelines/test_ltx2_parity.py's two-stage test (shift from the video's own token count,
             unshifted stage-2 scheduler, noise_scale = the first stage-2 sigma, stage 2 at guidance_scale 1
             with diffusers' other guidance defaults, given to ours too; one CPU generator). Gemma 3 12B
             (one Gemma3ForConditionalGeneration object for both) reads 1024 tokens per prompt; a random
             rank-384 LoRA on every attention projection (Lightricks format, on the host) is fused on both
             sides (ours: LoraSet; diffusers: ``fused``, the same float32 arithmetic, originals restored).

Models: the released configs (presets) with random weights of realistic scale (bench/models.py), built
once on the device; diffusers' transformer / VAE / upsampler take the SAME storage; the T5-XXL encoder
(transformers ``T5EncoderModel``) is one module object passed to both; the tokenizer is a small T5
Unigram tokenizer built offline (tokenization cost is negligible; the prompt is padded to the
condition pipeline's released 256 tokens on both sides, so the encoder's work is the real one).

Verification on the first call, before timing: ltxengine's frames (and LTX-2's waveform, in [-1, 1])
against diffusers'. float32 (smoke): max |d| <= 1e-4 on [0, 1] frames and on the waveform (the contract of tests/pipelines, measured there <= ~2e-6). bfloat16:
mean |d| <= 0.1, a sanity bound only (random weights amplify bf16 rounding differences over the steps
and two stages; it catches a broken pipeline - wrong schedule, noise or decode - whose frames are
unrelated). Timing: warm-up, then alternating repetitions (ltxengine, diffusers, ...), medians.
Figures: median seconds, output frames per second (frames / median), peak memory of the verified
call, ratio vs diffusers, and ltxengine's per-stage host times (text / denoise / refine / decode).

Layout: this file is the command line; the cases are generate_ltxv.py and generate_ltx2.py, what they
share (sizes, tolerances, verification, timing, records) is generation.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import models as M  # noqa: E402
from bench.generate_ltx2 import bench_ltx2, build_ltx2  # noqa: E402
from bench.generate_ltxv import bench_ltxv, build_ltxv  # noqa: E402

SCRIPT = "scenario_generate"
LTXV = ("ltxv-098", "ltxv-2b")
LTX2 = ("ltx2-19b",)
MODELS = LTXV + LTX2


# -- command line ----------------------------------------------------------------------------------

def make_parser():
    parser = common.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(MODELS)} (default: all)")
    parser.add_argument("--steps", type=int, default=8,
                        help="ltxv-2b steps (8: the distilled timesteps; default 8)")
    parser.add_argument("--ltx2-steps", type=int, default=40,
                        help="ltx2-19b stage-1 steps (default 40: LTX2Engine's default)")
    parser.add_argument("--ltx2-tiling", choices=("none", "spatial"), default="none",
                        help="ltx2-19b VAE decode tiling on both sides (default none)")
    parser.add_argument("--kernels", default="auto", help="ltxengine's ops backend: auto, triton, cuda, torch")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"),
                        help="weights and activations (default: bfloat16; float32 with --smoke)")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    models = common.pick_names("--models", args.models, list(MODELS), parser) or list(MODELS)
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.ltx2_steps < 1:
        parser.error(f"--ltx2-steps must be >= 1, got {args.ltx2_steps}")
    if args.kernels not in M.KERNELS:
        parser.error(f"--kernels: unknown name {args.kernels!r}; choose from {', '.join(M.KERNELS)}")
    dtype = getattr(torch, args.dtype or ("float32" if args.smoke else "bfloat16"))
    settings = common.settings_from_args(SCRIPT, parser, args, list(MODELS), default_reps=5, ceilings=())
    if args.reps is None and args.smoke:
        settings.reps = 1
    records = []
    picked = [m for m in models if m in settings.shapes]
    if any(m in LTXV for m in picked):
        built = build_ltxv(settings, dtype, args.kernels)
        for m in (m for m in picked if m in LTXV):
            records += bench_ltxv(settings, m, built, dtype, args.steps)
        del built
        M.release()
    if "ltx2-19b" in picked:
        built = build_ltx2(settings, dtype, args.kernels)
        records += bench_ltx2(settings, built, dtype, args.ltx2_steps, args.ltx2_tiling)
        del built
        M.release()
    return M.exit_status(records, common.finish(settings, records))


if __name__ == "__main__":
    sys.exit(main())
