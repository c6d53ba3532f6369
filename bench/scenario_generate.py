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
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Callable

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import models as M  # noqa: E402

SCRIPT = "scenario_generate"
LTXV = ("ltxv-098", "ltxv-2b")
LTX2 = ("ltx2-19b",)
MODELS = LTXV + LTX2
PROMPT = "a red car drives through the rain at night, the camera pans across the wet street"
SEED = 0
FULL_SIZE = (512, 768, 121)  # height, width, frames
SMOKE_SIZE = (96, 96, 9)  # stage 1 at 64x64, refined at 128x128, resized to 96x96: every path runs
SMOKE_SIZE_LTX2 = (128, 128, 9)  # LTX-2 two-stage: multiples of 64 (stage 1 at half size, 2x2 latents)
FRAME_RATE = 24
T5_SEQ = 256  # LTXConditionPipeline's max_sequence_length (our Engine's default in condition mode)
DOWNSCALE = 2 / 3
FP32_TOL = 1e-4  # max |d| on [0, 1] frames: tests/pipelines' parity contract
BF16_MEAN_TOL = 0.1  # mean |d| on [0, 1] frames: sanity only (see the module docstring)
SCHEDULER = dict(num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=False)  # 0.9.7/0.9.8 distilled
DECODE = dict(decode_timestep=0.05, decode_noise_scale=0.025)
WORDS = ("a the red car drives through rain at night camera pans across wet street city lights "
         "dog runs on beach sunset waves").split()

# T5-XXL encoder (google/t5-v1_1-xxl, the LTX-Video text encoder) and a tiny one for --smoke.
T5_XXL = dict(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
              feed_forward_proj="gated-gelu", relative_attention_num_buckets=32,
              relative_attention_max_distance=128, layer_norm_epsilon=1e-6, dropout_rate=0.0)
T5_TINY = dict(T5_XXL, vocab_size=128, d_model=M.TINY_2B.caption_channels, d_kv=6, d_ff=16, num_layers=2,
               num_heads=2)


# -- models ---------------------------------------------------------------------------------------

def t5_tokenizer():
    """A T5 Unigram tokenizer built in memory (pad 0, eos 1, unk 2 as in T5): no download."""
    import transformers

    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("\u2581", -2.0)]
    vocab += [("\u2581" + w, -1.0 - 0.01 * i) for i, w in enumerate(WORDS)]
    vocab += [(c, -5.0) for c in "abcdefghijklmnopqrstuvwxyz"]
    return transformers.T5Tokenizer(vocab=vocab, extra_ids=4)


def build_t5(config: dict, device, dtype):
    """T5EncoderModel on meta, cast, materialized on the device and filled in place (no fp32 copy)."""
    import transformers

    with torch.device("meta"):
        model = transformers.T5EncoderModel(transformers.T5Config(**config)).to(dtype)
    model = model.to_empty(device=device)
    model.tie_weights()  # the shared embedding and encoder.embed_tokens are one tensor
    return M.randomize_(model, seed=3).eval().requires_grad_(False)


def build_upsampler(config, device, dtype, ops):
    from ltxengine.models.latent_upsampler import LatentUpsampler

    with torch.device("meta"):
        model = LatentUpsampler(config, ops=ops).to(dtype)
    return M.randomize_(model.to_empty(device=device), seed=2).eval()


def diffusers_upsampler(model):
    """diffusers' LTXLatentUpsamplerModel over the same storage (our names are its keys)."""
    from diffusers.pipelines.ltx.modeling_latent_upsampler import LTXLatentUpsamplerModel

    with torch.device("meta"):
        ref = LTXLatentUpsamplerModel(**dataclasses.asdict(model.config))
    ref.load_state_dict(model.state_dict(), strict=True, assign=True)
    return ref.eval()


def ltxv_configs(smoke: bool) -> dict:
    from ltxengine.config import UPSAMPLER_097, TRANSFORMER_2B, VAE_095

    if smoke:
        up = dataclasses.replace(UPSAMPLER_097, in_channels=M.TINY_2B.in_channels, mid_channels=32,
                                 num_blocks_per_stage=1)
        return {"transformer": M.TINY_2B, "vae": M.TINY_VAE_095, "upsampler": up, "t5": T5_TINY}
    return {"transformer": TRANSFORMER_2B, "vae": VAE_095, "upsampler": UPSAMPLER_097, "t5": T5_XXL}


def build_ltxv(settings: common.Settings, dtype, kernels: str) -> dict:
    """ltxengine's Engine and diffusers' pipelines over one set of weights."""
    import diffusers

    from ltxengine import Engine

    # diffusers warns on every explicit-timesteps call (they are the distilled recipe's, unshifted)
    diffusers.utils.logging.set_verbosity_error()
    from ltxengine.models.text_encoder import T5TextEncoder

    ops, why = common.resolve_backend(kernels, settings.device)
    if ops is None:
        raise RuntimeError(f"scenario_generate: --kernels {kernels} {why}")
    cfg = ltxv_configs(settings.smoke)
    dev = settings.device
    transformer = M.build(cfg["transformer"], dev, dtype, ops)
    vae = M.build(cfg["vae"], dev, dtype, ops)
    upsampler = build_upsampler(cfg["upsampler"], dev, dtype, ops)
    t5, tok = build_t5(cfg["t5"], dev, dtype), t5_tokenizer()
    engine = Engine(transformer, vae, T5TextEncoder(t5, tok), latent_upsampler=upsampler,
                    scheduler_config=dict(SCHEDULER), device=dev, dtype=dtype, source="bench")
    dvae = M.build_diffusers(vae)
    pipe = diffusers.LTXConditionPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**SCHEDULER), vae=dvae, text_encoder=t5,
        tokenizer=tok, transformer=M.build_diffusers(transformer))
    up_pipe = diffusers.LTXLatentUpsamplePipeline(vae=dvae, latent_upsampler=diffusers_upsampler(upsampler))
    for p in (pipe, up_pipe):
        p.set_progress_bar_config(disable=True)
    return {"engine": engine, "pipe": pipe, "up_pipe": up_pipe, "sources": dict(ops.sources)}


# -- the LTX-Video recipes ------------------------------------------------------------------------------

def ltxv_recipe(model: str, steps: int) -> dict:
    """Stage-1 (or only-stage) sampling arguments shared by both libraries."""
    from ltxengine import DISTILLED_STAGE1_TIMESTEPS

    sched = dict(timesteps=list(DISTILLED_STAGE1_TIMESTEPS)) if model == "ltxv-098" or steps == 8 else \
        dict(num_inference_steps=steps)
    return dict(guidance_scale=1.0, image_cond_noise_scale=0.0, max_sequence_length=T5_SEQ, **sched)


def stage_sizes(size: tuple[int, int, int], r: int) -> tuple[int, int]:
    """Stage-1 height and width of the two-stage recipe (TwoStage's rounding)."""
    return int(size[0] * DOWNSCALE) // r * r, int(size[1] * DOWNSCALE) // r * r


def ours_ltxv(built: dict, model: str, size, steps: int, stages: list) -> Callable[[], dict]:
    from ltxengine import DISTILLED_STAGE2_TIMESTEPS, TwoStage

    two = TwoStage(downscale_factor=DOWNSCALE, adain_factor=1.0, tone_map_compression_ratio=0.6,
                   denoise_strength=0.999, timesteps=list(DISTILLED_STAGE2_TIMESTEPS),
                   guidance_scale=1.0) if model == "ltxv-098" else None
    kw = dict(height=size[0], width=size[1], num_frames=size[2], frame_rate=FRAME_RATE, seed=SEED,
              pipeline="condition", two_stage=two, **DECODE, **ltxv_recipe(model, steps))

    def run():
        result = built["engine"].generate(PROMPT, **kw)
        stages.append(dict(result.timings))
        return {"frames": torch.from_numpy(result.frames)}
    return run


def diffusers_ltxv(built: dict, model: str, size, steps: int) -> Callable[[], dict]:
    from ltxengine import DISTILLED_STAGE2_TIMESTEPS
    from ltxengine.pipelines.ltx_video import resize_frames

    pipe, up_pipe = built["pipe"], built["up_pipe"]
    common_kw = dict(prompt=PROMPT, num_frames=size[2], frame_rate=FRAME_RATE, **ltxv_recipe(model, steps))
    r = pipe.vae_spatial_compression_ratio

    def frames(out) -> dict:  # (1, F, 3, H, W) -> (F, H, W, 3) on the host, like the Engine's result
        f = out.frames[0].permute(0, 2, 3, 1).float()
        return {"frames": resize_frames(f, size[0], size[1]).cpu()}

    def one_stage():
        return frames(pipe(height=size[0], width=size[1], output_type="pt",
                           generator=torch.Generator().manual_seed(SEED), **common_kw, **DECODE))

    def two_stage():
        h1, w1 = stage_sizes(size, r)
        lat = pipe(height=h1, width=w1, output_type="latent", generator=torch.Generator().manual_seed(SEED),
                   **common_kw).frames
        up = up_pipe(latents=lat, output_type="latent", adain_factor=1.0, tone_map_compression_ratio=0.6).frames
        kw = dict(common_kw, timesteps=list(DISTILLED_STAGE2_TIMESTEPS))
        kw.pop("num_inference_steps", None)
        return frames(pipe(latents=up, height=2 * h1, width=2 * w1, denoise_strength=0.999, output_type="pt",
                           generator=torch.Generator().manual_seed(SEED), **kw, **DECODE))
    return M.no_grad(two_stage if model == "ltxv-098" else one_stage)


# -- verification, timing, records ----------------------------------------------------------------------

def compare(ours: dict, theirs: dict, dtype) -> dict:
    """Frame (and audio) differences and the verdict: fp32 max |d| <= FP32_TOL, else mean |d| <= BF16_MEAN_TOL."""
    out = {"status": "ok", "reason": ""}
    diffs = {}
    for k in ours:
        a, b = ours[k].float(), theirs[k].float()
        if a.shape != b.shape:
            return {"status": "failed", "reason": f"failed: {k} shape {tuple(a.shape)} != diffusers "
                                                  f"{tuple(b.shape)}; not timed"}
        d = (a - b).abs()
        diffs[k] = {"max_abs_diff": d.max().item(), "mean_abs_diff": d.mean().item(), "std": b.std().item(),
                    "unclamped_fraction": ((b > 0) & (b < 1)).float().mean().item() if k == "frames" else None}
    metric, tol = ("max_abs_diff", FP32_TOL) if dtype == torch.float32 else ("mean_abs_diff", BF16_MEAN_TOL)
    bad = [k for k, v in diffs.items() if not v[metric] <= tol]
    if bad:
        out.update(status="failed", reason="failed: " + "; ".join(
            f"{k} {metric} {diffs[k][metric]:.3e} > {tol:g}" for k in bad) + "; not timed")
    out.update(verify={"metric": metric, "tolerance": tol, "outputs": diffs},
               max_abs_err=max(v["max_abs_diff"] for v in diffs.values()), tolerance=tol)
    return out


def first_call(fn: Callable[[], dict], device) -> tuple[dict | None, int | None, str]:
    """(output, peak bytes above the resident weights, error) of the verified first call."""
    try:
        base = None
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
        out = fn()
        common.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - base if base is not None else None
        return out, peak, ""
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: reported, not raised
        return None, None, common._short(e)


def _result(name: str, source: str, settings) -> dict:
    return {"impl": name, "source": source, "status": "ok", "reason": "", "max_abs_err": None, "tolerance": None,
            "median_ms": None, "p10_ms": None, "p90_ms": None, "min_ms": None, "mean_ms": None, "reps": None,
            "warmup": settings.warmup, "flush_l2": False, "peak_mem_bytes": None}


def measure(fns: dict[str, Callable], sources: dict[str, str], settings, dtype) -> list[dict]:
    """Verify (ltxengine vs diffusers on the first call), then time alternately the ones that ran."""
    results, outs = {}, {}
    for name, fn in fns.items():
        res = results[name] = _result(name, sources[name], settings)
        outs[name], res["peak_mem_bytes"], err = first_call(fn, settings.device)
        if err:
            res.update(status="unavailable" if name == M.DIFFUSERS else "failed", reason=f"first call raised {err}")
    ours = "ltxengine"
    if outs.get(ours) is not None and outs.get(M.DIFFUSERS) is not None:
        verdict = compare(outs[ours], outs[M.DIFFUSERS], dtype)
        for name in fns:
            results[name].update({k: v for k, v in verdict.items() if name == ours or k not in ("status", "reason")})
    elif results[ours]["status"] == "ok":
        results[ours]["reason"] = "not verified: diffusers did not run"
    outs.clear()
    timed = {n: fns[n] for n in fns if results[n]["status"] == "ok"}
    times, errors = M.time_alternating(timed, settings.device, settings.reps, settings.warmup)
    for name in timed:
        if name in errors:
            results[name].update(status="failed", reason=f"failed while timing: {errors[name]}")
        else:
            results[name].update(common.summarize(times[name]))
    out = list(results.values())
    common.add_ratios(out, {"diffusers": M.DIFFUSERS})
    return out


def stage_medians(stages: list[dict], warmup: int) -> dict | None:
    """Median seconds per stage over the timed calls (host clock: a stage's GPU work may spill into
    the next stage's time; the total is synchronized by the copy of the frames to the host)."""
    timed = stages[1 + warmup:] or stages
    if not timed:
        return None
    return {k: common.percentile([s[k] for s in timed if k in s], 50) for k in timed[0]}


def records_for(settings, results: list[dict], model: str, size, dtype, dims: dict, stages: list) -> list[dict]:
    recs = []
    for res in results:
        t = res["median_ms"]
        extra = dict(seconds=t / 1e3 if t else None, output_frames=size[2],
                     fps=size[2] / (t / 1e3) if t else None)
        if res["impl"] == "ltxengine":
            extra["stage_seconds"] = stage_medians(stages, settings.warmup)
        recs.append(common.make_record(settings, res, op="generate", shape=model, dims=dims, dtype=dtype, **extra))
    return recs


def bench_ltxv(settings, model: str, built: dict, dtype, steps: int) -> list[dict]:
    size = SMOKE_SIZE if settings.smoke else FULL_SIZE
    stages: list[dict] = []
    fns = {"ltxengine": ours_ltxv(built, model, size, steps, stages),
           M.DIFFUSERS: diffusers_ltxv(built, model, size, steps)}
    fns = {k: v for k, v in fns.items() if k == "ltxengine" or settings.impls is None or k in settings.impls}
    sources = {"ltxengine": f"Engine.generate, kernels {built['sources'] or 'torch'}",
               M.DIFFUSERS: "LTXConditionPipeline" + (" + LTXLatentUpsamplePipeline" if model == "ltxv-098" else "")}
    results = measure(fns, sources, settings, dtype)
    r = built["engine"].vae.spatial_compression_ratio
    dims = {"model": model, "config": "tiny" if settings.smoke else "full", "height": size[0], "width": size[1],
            "num_frames": size[2], "frame_rate": FRAME_RATE, "text_tokens": T5_SEQ,
            "recipe": ("two-stage distilled" if model == "ltxv-098" else "one-stage"),
            "stage1": list(stage_sizes(size, r)) if model == "ltxv-098" else [size[0], size[1]],
            **ltxv_recipe(model, steps), **DECODE}
    return records_for(settings, results, model, size, dtype, dims, stages)


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
        from bench.generate_ltx2 import bench_ltx2, build_ltx2

        built = build_ltx2(settings, dtype, args.kernels)
        records += bench_ltx2(settings, built, dtype, args.ltx2_steps, args.ltx2_tiling)
        del built
        M.release()
    return M.exit_status(records, common.finish(settings, records))


if __name__ == "__main__":
    sys.exit(main())
