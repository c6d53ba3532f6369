"""Multi-GPU scenario (issue 22): one denoising step and a whole two-stage generation on 1, 2, 4 and 8
GPUs, to set against the communication model (bench/comm_model.py, results/multi_gpu_model.md).

    torchrun --nproc-per-node N bench/scenario_multi_gpu.py [--parts step,generate] [--models ltx2.3-22b,13b]
        [--sizes 768x512x121,1536x1024x121] [--batch B] [--guidance G] [--steps S] [--reps N] [--warmup N]
        [--out DIR] [--smoke]
    python bench/scenario_multi_gpu.py --dry-run    # the plan, the model's prediction, the torchrun commands

Run it once per GPU count (N = 1 is the baseline; without torchrun it is one process). Every rank
builds the same random weights of the released config on its GPU (bench/models.py, same seeds),
as scenario_transformer.py does; the ranks meet through ltxengine.parallel.config (NCCL).

- ``step``: one transformer forward at ``--batch`` passes, the video tokens sharded over all N ranks
  (ltxengine.parallel.sequence, Ulysses). Verified first against the same model's one-rank forward on
  the same rank (bf16: within 2 % of the output scale, the op order of the sharded GEMMs differs);
  timed with CUDA events between barriers; the record holds the slowest rank's median.
- ``generate``: LTX-2 two-stage text-to-video+audio at the size (stage 1 at half size with the
  default guidance, ``--steps`` steps; stage 2 with the distilled LoRA), the 19B set of
  generate_ltx2.py (Gemma 3 12B included; LTX-2.3's transformer has the same shapes), the engine's
  generations split by ``ParallelConfig(sequence=N / G, guidance=G)``. Records the wall time of
  whole generations (``--reps``, after ``--warmup``) and the engine's stage timings; every rank must
  return the same frames (checked by a checksum all-reduce).

Records go to ``<out>/scenario_multi_gpu.jsonl`` from rank 0 with the world size, the layout and the
comm model's prediction beside the measurement. ``--smoke``: tiny configs on the CPU (gloo), no
performance figures.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import comm_model as C  # noqa: E402
from bench import common  # noqa: E402
from bench import models as M  # noqa: E402
from bench import scenario_transformer as S  # noqa: E402

SCRIPT = "scenario_multi_gpu"
PARTS = ("step", "generate")
FULL_MODELS = ("ltx2.3-22b", "13b")
SMOKE_MODELS = ("tiny-ltx2.3", "tiny-2b")
SMOKE_SIZES = {"128x128x9": S.Geometry(9, 128, 128, 24.0, 7)}  # two-stage: multiples of 64
GPU_COUNTS = (1, 2, 4, 8)
STEP_REL_TOL = 2e-2  # bf16: sharded GEMMs (N/P rows) and attention by head shards round differently
GENERATE_MODEL = "ltx2-19b"  # the only released LTX-2 set bench/generate_ltx2.py builds


def parse_size(text: str) -> S.Geometry:
    """'WxHxF' -> the geometry scenario_transformer uses (24 fps, text tokens set per family later)."""
    try:
        w, h, f = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--sizes: each size must be WIDTHxHEIGHTxFRAMES, e.g. 768x512x121, got {text!r}") from None
    if w % 64 or h % 64 or (f - 1) % 8:
        raise ValueError(f"--sizes: width and height must be multiples of 64 (two-stage) and frames 8k+1, got {text!r}")
    return S.Geometry(f, h, w, 24.0, 0)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--parts", default="step,generate", help="comma-separated: step, generate")
    p.add_argument("--models", help=f"step models (default {','.join(FULL_MODELS)}; smoke {','.join(SMOKE_MODELS)})")
    p.add_argument("--sizes", help=f"WxHxF sizes (default {','.join(C.SIZES)})")
    p.add_argument("--batch", type=int, default=1, help="guidance passes batched in the timed step")
    p.add_argument("--guidance", type=int, default=1, help="guidance groups of the generation (divides N)")
    p.add_argument("--steps", type=int, help=f"stage-1 steps of the generation (default {C.STAGE1_STEPS}; smoke 2)")
    p.add_argument("--reps", type=int, help="timed repetitions (default: step 10, generate 2; smoke 2 / 1)")
    p.add_argument("--warmup", type=int, help="untimed calls first (default: step 3, generate 1; smoke 0)")
    p.add_argument("--out", help=f"results folder (default {common.RESULTS_DIR}; with --smoke {common.SMOKE_DIR})")
    p.add_argument("--smoke", action="store_true", help="tiny configs, CPU allowed: checks the script, no figures")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the torchrun commands; build nothing")
    return p


def parse(argv=None):
    parser = make_parser()
    args = parser.parse_args(argv)
    args.parts = common.pick_names("--parts", args.parts, list(PARTS), parser)
    choices = list(M.TRANSFORMERS)
    args.models = common.pick_names("--models", args.models, choices, parser) or list(
        SMOKE_MODELS if args.smoke else FULL_MODELS)
    sizes = SMOKE_SIZES if args.smoke else C.SIZES
    try:
        args.sizes = {s: sizes.get(s) or parse_size(s) for s in (args.sizes.split(",") if args.sizes else sizes)}
    except ValueError as e:
        parser.error(str(e))
    if args.steps is None:
        args.steps = 2 if args.smoke else C.STAGE1_STEPS
    for name in ("batch", "guidance", "steps"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    for name in ("reps", "warmup"):
        value = getattr(args, name)
        if value is not None and value < (1 if name == "reps" else 0):
            parser.error(f"--{name} must be >= {1 if name == 'reps' else 0}, got {value}")
    return args


# -- the plan (no GPU, no torch.distributed) ----------------------------------------------------------------

def plan_lines(args) -> list[str]:
    lines = []
    for model in args.models if "step" in args.parts else ():
        config = M.TRANSFORMERS[model]
        for size, geo in args.sizes.items():
            step = _step(model, geo, args.batch)
            pred = [f"{n}: {C.predict(step, 1, n)['serial'] * 1e3:.0f} ms" for n in GPU_COUNTS
                    if config.num_attention_heads % n == 0]
            lines.append(f"step {model} {size} batch {args.batch}: {step.video_tokens} video / {step.audio_tokens} "
                         f"audio tokens; comm model (no overlap) {', '.join(pred)}")
    if "generate" in args.parts:
        for size in args.sizes:
            lines.append(f"generate {GENERATE_MODEL} two-stage {size}: {args.steps} stage-1 steps, guidance "
                         f"groups {args.guidance}")
    flags = " ".join(a for a in sys.argv[1:] if a != "--dry-run") if __name__ == "__main__" else ""
    for n in GPU_COUNTS:
        lines.append(f"torchrun --nproc-per-node {n} bench/scenario_multi_gpu.py {flags}".rstrip())
    return lines


def _step(model: str, geo: S.Geometry, batch: int) -> C.Step:
    config = M.TRANSFORMERS[model]
    ltx2 = M.is_ltx2(config)
    f, h, w = S.latent_grid(config, geo)
    return C.Step(config, f * h * w, S.audio_tokens(config, geo), C.TEXT_TOKENS["ltx2" if ltx2 else "ltxv"], batch)


# -- on the ranks ------------------------------------------------------------------------------------------

def start(args):
    """torch.distributed and this rank's device (ltxengine.parallel.config; one process without torchrun)."""
    from ltxengine.parallel.config import ParallelConfig, init

    if "WORLD_SIZE" not in os.environ:  # not under torchrun: a group of this one process
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1",
                          LOCAL_RANK="0")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        raise SystemExit("scenario_multi_gpu: no CUDA device; full-size runs need GPUs (use --smoke on a CPU)")
    return init(ParallelConfig.from_env(guidance=args.guidance), device)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def settings(args, state) -> common.Settings:
    reps = args.reps if args.reps is not None else (2 if args.smoke else 10)
    warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 3)
    out = Path(args.out) if args.out else (common.SMOKE_DIR if args.smoke else common.RESULTS_DIR)
    return common.Settings(SCRIPT, state.device, args.smoke, reps, warmup, out, [], None, ceilings={})


def slowest(value: float, device) -> float:
    """The largest of every rank's ``value`` (a step is as slow as its slowest rank)."""
    t = torch.tensor([value], dtype=torch.float64, device=device)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return t.item()


def bench_step(args, state, st: common.Settings, model_name: str, size: str, geo: S.Geometry) -> dict:
    from ltxengine.parallel import sequence

    dtype = torch.float32 if args.smoke else torch.bfloat16
    model = M.build(M.TRANSFORMERS[model_name], state.device, dtype, M.TORCH_OPS)  # same seed: same weights
    config = model.config
    text = geo.text_tokens or C.TEXT_TOKENS["ltx2" if M.is_ltx2(config) else "ltxv"]
    geo = S.Geometry(geo.frames, geo.height, geo.width, geo.fps, text)
    inp = S.make_inputs(config, geo, args.batch, state.device, dtype)
    call = S.ltxengine_call(model, inp, geo)
    reference = call()  # one rank's forward, unsharded
    sequence.enable(model, state.sequence_group)
    out = call()
    err = max((out[k].float() - reference[k].float()).abs().max().item() for k in out)
    scale = max(reference[k].float().abs().max().item() for k in reference)
    ok = slowest(err / max(scale, 1e-30), state.device) <= STEP_REL_TOL
    torch.distributed.barrier()
    times = common.time_fn(call, state.device, st.reps, st.warmup) if ok else []
    median = slowest(common.summarize(times)["median_ms"], state.device) if ok else None
    step = _step(model_name, geo, args.batch)
    pred = C.predict(step, 1, state.world_size)
    sequence.disable(model)
    return dict(op="transformer_step", shape=f"{model_name}-{size}-b{args.batch}", status="ok" if ok else "failed",
                reason="" if ok else f"sharded step differs from the one-rank step by {err:.3e} (scale {scale:.3e})",
                median_ms=median, max_abs_err=err, tolerance=STEP_REL_TOL * scale,
                predicted_ms={"no_overlap": pred["serial"] * 1e3, "overlap": pred["overlapped"] * 1e3},
                dims={"model": model_name, "video_tokens": step.video_tokens, "audio_tokens": step.audio_tokens,
                      "batch": args.batch})


def bench_generate(args, state, st: common.Settings, size: str, geo: S.Geometry) -> dict:
    from bench.generation import PROMPT, SEED

    engine = build_engine(args, state)
    kw = dict(height=geo.height, width=geo.width, num_frames=geo.frames, frame_rate=geo.fps, pipeline="two-stage",
              num_inference_steps=args.steps, seed=SEED)
    for _ in range(st.warmup):
        engine.generate(PROMPT, **kw)
    walls, stages, checks = [], [], []
    for _ in range(st.reps):
        torch.distributed.barrier()
        t0 = time.perf_counter()
        result = engine.generate(PROMPT, **kw)
        walls.append(slowest(time.perf_counter() - t0, state.device) * 1e3)
        stages.append(dict(result.timings))
        checks.append(float(torch.as_tensor(result.frames, dtype=torch.float64).sum()))
    same = all(slowest(c, state.device) == -slowest(-c, state.device) for c in checks)
    return dict(op="two_stage_generation", shape=f"{GENERATE_MODEL}-{size}", status="ok" if same else "failed",
                reason="" if same else "ranks returned different frames",
                median_ms=common.summarize(walls)["median_ms"],
                stage_seconds=stages, frames_checksum=checks[-1],
                dims={"model": GENERATE_MODEL, "steps": args.steps, "guidance_groups": args.guidance})


def build_engine(args, state):
    """generate_ltx2.py's LTX-2 set without its diffusers twins, its generations spread over ``state``."""
    from bench import generate_ltx2 as G
    from bench.generation import build_upsampler
    from ltxengine.loading.lora import LoraWeights
    from ltxengine.loading.ltx2 import LTX2Checkpoint
    from ltxengine.ltx2.engine import LTX2Engine
    from ltxengine.models.audio_vae import AudioVAE
    from ltxengine.models.ltx2_text import GemmaTextEncoder, TextConnectors
    from ltxengine.models.vocoder import Vocoder

    dtype, dev, ops = (torch.float32 if args.smoke else torch.bfloat16), state.device, M.TORCH_OPS
    cfg = G.ltx2_configs(args.smoke)
    ckpt = LTX2Checkpoint(source="bench", transformer=M.build(cfg["transformer"], dev, dtype, ops),
                          vae=M.build(cfg["vae"], dev, dtype, ops),
                          connectors=G.build_module(TextConnectors, cfg["connectors"], dev, dtype, ops, 7),
                          audio_vae=G.build_module(AudioVAE, cfg["audio_vae"], dev, dtype, ops, 8),
                          vocoder=G.build_module(Vocoder, cfg["vocoder"], dev, dtype, ops, 9))
    lora = G.distilled_lora(ckpt.transformer, G.LORA_RANK["tiny" if args.smoke else "full"], dtype)
    engine = LTX2Engine(ckpt, GemmaTextEncoder(G.build_gemma(*cfg["gemma"], dev, dtype), G.gemma_tokenizer(),
                                               ckpt.connectors),
                        latent_upsampler=build_upsampler(cfg["latent_upsampler"], dev, dtype, ops),
                        distilled_lora=LoraWeights.load(lora, name="distilled-lora"), device=dev, dtype=dtype,
                        source="bench")
    engine._attach_parallel(state)  # what Engine.from_pretrained(parallel=...) does after loading
    return engine


def _record(st: common.Settings, r: dict, layout: dict, dtype: str) -> dict:
    r = dict(r)
    op, shape, dims = r.pop("op"), r.pop("shape"), r.pop("dims")
    return common.make_record(st, dict(r, impl="ltxengine", **layout), op=op, shape=shape, dims=dims, dtype=dtype)


def run(args) -> int:
    state = start(args)
    st = settings(args, state)
    records = []
    for part in args.parts:
        if part == "step":
            for model in args.models:
                for size, geo in args.sizes.items():
                    records.append(bench_step(args, state, st, model, size, geo))
                    M.release()
        else:
            for size, geo in args.sizes.items():
                records.append(bench_generate(args, state, st, size, geo))
                M.release()
    layout = {"world_size": state.world_size, "sequence": state.config.sequence, "guidance": state.config.guidance}
    records = [_record(st, r, layout, "float32" if args.smoke else "bfloat16") for r in records]
    if state.is_main:
        common.append_results(st.results_path, records)
        for r in records:
            print(f"{r['op']:<22} {r['shape']:<34} N={r['world_size']} {r['status']:<7} "
                  f"{r['median_ms'] if r['median_ms'] is None else round(r['median_ms'], 1)} ms {r['reason']}")
    return 1 if any(r["status"] != "ok" for r in records) else 0


def main(argv=None) -> int:
    args = parse(argv)
    if args.dry_run:
        print("\n".join(plan_lines(args)))
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
