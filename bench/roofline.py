"""Roofline estimate of one transformer step per released LTX model, traced on fake tensors (no GPU).

    python bench/roofline.py [--models 2b,13b,ltx2-19b,ltx2.3-22b] [--sizes 768x512x121,1536x1024x121]
                             [--batch 1,guided] [--impls auto,auto-fp8,triton,cuda,torch,diffusers]
                             [--gpu h100,h200]
                             [--write | --out DIR] [--json FILE] [--smoke]
    python bench/roofline.py --calibrate RECORDS.jsonl [--estimates FILE] [--out DIR]
    ltxengine bench roofline [the same options]

Each case is one forward of the transformer (bfloat16) at a clip size and batch: 1, or ``guided``,
the default guidance passes batched (LTX-Video: CFG, 2; LTX-2.x: cond, negative, STG and isolated,
4; the STG / isolated rows are traced as plain rows: the skipped self-attention of one block, or
cross-modal attention, of one row changes under 1 % of the work). Implementations:
  auto       ltxengine with kernels="auto" as it resolves on a CUDA device with Triton and the CUDA
             extension present (built here from the ops' table; the fused ops' fake impls trace them)
  auto-fp8   auto with quantization="fp8-scaled-mm" as Engine.from_pretrained applies it to a bf16
             checkpoint (ltxengine.quant.fp8.convert_to_fp8 on the policy's targets: every block linear
             but the gates, first block and last five bf16; dynamic per-token activation scales, as a
             file without input_scale gets); each fp8 GEMM's FLOPs at the fp8 peak (2x bf16)
  triton     ltxengine with every op the Triton backend has, the GEMMs with the GELU or the gated
             residual in their epilogue included: what auto becomes if a GPU shows those beat cuBLAS
             (bench/ops_linear_epilogue.py)
  cuda       ltxengine with every op the CUDA C++ backend has (not in the default set)
  torch      ltxengine with kernels="torch" (pure torch: the references on fp32, diffusers' arithmetic
             in the activation dtype on bf16)
  diffusers  diffusers' LTXVideoTransformer3DModel / LTX2VideoTransformer3DModel, eager
What the step gets is scenario_transformer's: ltxengine its RoPE tables and projected text context
precomputed (once per generation), diffusers what its pipeline passes at each step.
The counting rules and every assumption are in bench/roofline_count.py's docstring; the tables
repeat them. ``--write`` regenerates bench/results/roofline_*.md (estimate, no GPU). ``--calibrate``
reads scenario_transformer records measured on a GPU and writes measured next to estimated
(``roofline_calibration.md``). bench/gpu_session.sh makes the estimates of the steps it measures
in ``prepare`` (``--json``, on the CPU machine: a 19B trace takes tens of seconds) and joins them
with the measured records after its step stages (``--estimates``), so the device pays no tracing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch._subclasses.fake_tensor import FakeTensorMode

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import models as M  # noqa: E402
from bench import roofline_count as rc  # noqa: E402
from bench import roofline_report as report  # noqa: E402
from bench import scenario_transformer as T  # noqa: E402
from ltxengine.models.packing import pack_projections  # noqa: E402
from ltxengine.ops import TORCH_OPS, Ops, build_backend, compose_auto  # noqa: E402
from ltxengine.quant.fp8 import convert_to_fp8  # noqa: E402

MODELS = ("2b", "13b", "ltx2-19b", "ltx2.3-22b")
SMOKE_MODELS = ("tiny-2b", "tiny-ltx2")
SIZES = {"768x512x121": (768, 512, 121), "1536x1024x121": (1536, 1024, 121)}  # width x height x frames
SMOKE_SIZES = {"160x96x17": (160, 96, 17)}
BATCHES = ("1", "guided")
IMPLS = ("auto", "auto-fp8", "triton", "torch", "diffusers")  # the default set
CHOICES = ("auto", "auto-fp8", "triton", "cuda", "torch", "diffusers")  # triton / cuda: every op that backend has
FP8_POLICY = "fp8-scaled-mm"  # auto-fp8: Engine.from_pretrained(quantization=...) on a bf16 checkpoint
DTYPE = torch.bfloat16
RESULTS = Path(__file__).resolve().parent / "results"
# scenario_transformer's impl names -> ours (the calibration pairs them)
RECORD_IMPLS = {"ltxengine-auto": "auto", "ltxengine-torch": "torch", "diffusers": "diffusers"}


# -- what is traced ---------------------------------------------------------------------------------

def geometry(name: str, size: tuple[int, int, int]) -> T.Geometry:
    width, height, frames = size
    family = "ltx2" if M.is_ltx2(M.TRANSFORMERS[name]) else "ltxv"
    return dataclasses.replace(T.GEOMETRY[family], frames=frames, height=height, width=width)


def guided_batch(config) -> int:
    """Rows of the default guidance: LTX-Video CFG (scale 3) 2; LTX-2.x the Denoiser's rows."""
    if not M.is_ltx2(config):
        return 2
    from ltxengine.ltx2.denoise import AUDIO_GUIDANCE, VIDEO_GUIDANCE

    v, a = VIDEO_GUIDANCE, AUDIO_GUIDANCE
    return 1 + (v.uncond or a.uncond) + (v.perturbed or a.perturbed) + (v.isolated or a.isolated)


def backend_ops(name: str) -> Ops:
    """kernels=<name> (triton or cuda) as on a CUDA device: every op the backend has a kernel for."""
    return build_backend(name)


def auto_ops_as_on_cuda() -> Ops:
    """kernels="auto" as ops/__init__.py's _auto_ops resolves it on a CUDA device where Triton and the
    CUDA extension are present: per op its first preferred backend. Built from the ops' table, so a
    new fused op is picked up; nothing here needs a GPU (the fake impls stand in for the kernels)."""
    return compose_auto({"torch": TORCH_OPS, "triton": backend_ops("triton"), "cuda": backend_ops("cuda")})


def fake_model(name: str, impl: str, mode: FakeTensorMode) -> torch.nn.Module:
    config = M.TRANSFORMERS[name]
    config.validate("bench.roofline")
    cls, _ = M._CLASSES[type(config)]
    auto = impl in ("auto", "auto-fp8")
    ops = auto_ops_as_on_cuda() if auto else backend_ops(impl) if impl in ("triton", "cuda") else TORCH_OPS
    with torch.device("meta"):
        model = cls(config, ops=ops).to(DTYPE)
    if impl == "auto-fp8":  # the policy's targets swapped on the meta model, as prepare_fp8 does at load
        convert_to_fp8(model, FP8_POLICY)  # no input_scale in a bf16 file: dynamic per-token activation scales
    if impl == "diffusers":
        model = M.build_diffusers(model)
    model = rc.fake_tensors(model, mode, torch.device("cpu")).eval()  # CPU fakes: see rc.CudaSdpa
    pack_projections(model)  # q/k/v as one GEMM, as the engine packs at load (diffusers' has no Attention)
    return model


def fake_inputs(config, geo: T.Geometry, batch: int) -> dict:
    """scenario_transformer.make_inputs' shapes and dtypes (call inside the fake mode: no values)."""
    f, h, w = T.latent_grid(config, geo)
    n, n_text = f * h * w, geo.text_tokens
    ltx2 = M.is_ltx2(config)
    widths = config.text_widths if ltx2 else (config.caption_channels,) * 2
    inp = {"video": torch.empty(batch, n, config.in_channels, dtype=DTYPE),
           "text": torch.empty(batch, n_text, widths[0], dtype=DTYPE),
           "mask": torch.ones(batch, n_text), "sigma": torch.full((batch,), T.SIGMA)}
    if ltx2:
        inp["audio"] = torch.empty(batch, T.audio_tokens(config, geo), config.audio_in_channels, dtype=DTYPE)
        inp["audio_text"] = torch.empty(batch, n_text, widths[1], dtype=DTYPE)
    return inp


@dataclass(frozen=True)
class Case:
    model: str
    size: str
    batch: int
    guided: bool
    impl: str
    layers: int
    trace: rc.Trace
    seconds_to_trace: float


def trace_case(name: str, size: str, dims: tuple[int, int, int], batch: int, impl: str, guided: bool) -> Case:
    """One step of ``name`` by ``impl`` at ``dims`` and ``batch``, counted op by op."""
    t0 = time.perf_counter()
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    model = fake_model(name, impl, mode)
    config, geo = M.TRANSFORMERS[name], geometry(name, dims)
    with mode:
        inp = fake_inputs(config, geo, batch)
        with rc.AssumeScalars():  # the per-generation setup asks whether the all-ones masks are all ones
            step = (T.diffusers_call(model, config, inp, geo) if impl == "diffusers"
                    else T.ltxengine_call(model, inp, geo))
        trace = rc.count(step, model)
    return Case(name, size, batch, guided, impl, config.num_layers, trace, time.perf_counter() - t0)


def cases(models, sizes: dict, batches, impls, log=print) -> list[Case]:
    out = []
    for name in models:
        for size, dims in sizes.items():
            for b in batches:
                batch = guided_batch(M.TRANSFORMERS[name]) if b == "guided" else int(b)
                for impl in impls:
                    out.append(trace_case(name, size, dims, batch, impl, b == "guided"))
                    c = out[-1]
                    log(f"traced {name} {size} b{batch} {impl}: {sum(r.launches for r in c.trace.rows)} launches "
                        f"in {c.seconds_to_trace:.1f} s")
    return out


def commit() -> str:
    """The commit traced: LTXENGINE_COMMIT if set (a copy without .git), else the checkout's HEAD."""
    import os
    import subprocess

    if os.environ.get("LTXENGINE_COMMIT"):
        return os.environ["LTXENGINE_COMMIT"]
    r = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[1],
                       capture_output=True, text=True)
    return r.stdout.strip() or "unknown"


# -- calibration against measured steps ---------------------------------------------------------------

def estimate(case: Case) -> dict:
    """A case's totals on every ceiling, JSON-ready (``--json``; the calibration's input)."""
    out = {"model": case.model, "size": case.size, "batch": case.batch, "impl": case.impl, "ceilings": {}}
    for ceiling in rc.CEILINGS.values():
        t = rc.totals(case.trace.rows, ceiling)
        out.update(launches=t.launches, flops=t.flops, bytes=t.bytes)
        out["ceilings"][ceiling.name] = {"seconds": t.seconds, "eager_seconds": t.eager_seconds(),
                                         "floor_seconds": t.floor_seconds}
    return out


def _key(e: dict) -> tuple:
    return e["model"], e["size"], int(e["batch"]), e["impl"]


def calibration(records: list[dict], known: list[dict] = (), log=print) -> list[tuple[dict, dict, rc.Ceiling]]:
    """(record, estimate, ceiling of its GPU) for every measured bf16 scenario_transformer step of an
    implementation we model; estimates come from ``known`` (``--json`` output) or are traced here."""
    cache = {_key(e): e for e in known}
    pairs = []
    for r in records:
        impl = RECORD_IMPLS.get(r.get("impl"))
        d = r.get("dims") or {}
        if impl is None or r.get("op") != "transformer_step" or r.get("status") != "ok" or r.get("smoke") \
                or r.get("dtype") != "bfloat16" or d.get("model") not in M.TRANSFORMERS:
            continue
        gpu = str((r.get("env") or {}).get("gpu") or "")
        ceiling = rc.H200 if "H200" in gpu else rc.H100_SXM
        dims = (d["width"], d["height"], d["frames"])
        key = (d["model"], "x".join(map(str, dims)), int(d["batch"]), impl)
        if key not in cache:
            cache[key] = estimate(trace_case(*key[:2], dims, key[2], impl, False))
        log(f"calibration: {d['model']} b{d['batch']} {impl} measured {r['median_ms']:.1f} ms on {gpu or '?'}")
        pairs.append((r, cache[key], ceiling))
    return pairs


# -- command line --------------------------------------------------------------------------------

def _pick(flag: str, value: str | None, allowed, default, parser) -> list[str]:
    if value is None:
        return list(default)
    picked = [v.strip() for v in value.split(",") if v.strip()]
    bad = [v for v in picked if v not in allowed]
    if bad or not picked:
        parser.error(f"{flag} must list names from {', '.join(allowed)}, got {value!r}")
    return picked


def parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(M.TRANSFORMERS)} "
                                         f"(default {','.join(MODELS)}; with --smoke {','.join(SMOKE_MODELS)})")
    parser.add_argument("--sizes", help=f"WxHxF clip sizes (default {','.join(SIZES)})")
    parser.add_argument("--batch", help="comma-separated: a batch size or 'guided' (default 1,guided)")
    parser.add_argument("--impls", help=f"from {', '.join(CHOICES)} (default {','.join(IMPLS)})")
    parser.add_argument("--gpu", help=f"ceilings, from {', '.join(rc.CEILINGS)} (default all)")
    parser.add_argument("--write", action="store_true", help=f"regenerate the committed tables in {RESULTS}")
    parser.add_argument("--out", help="write the tables to this folder instead (default: print the summary only)")
    parser.add_argument("--calibrate", help="scenario_transformer .jsonl records: write roofline_calibration.md")
    parser.add_argument("--estimates", help="with --calibrate: a --json file of estimates made beforehand "
                                            "(cases missing there are traced)")
    parser.add_argument("--json", help="also write the traced cases' totals per ceiling to this file")
    parser.add_argument("--smoke", action="store_true", help=f"tiny configs ({','.join(SMOKE_MODELS)}) at 160x96x17")
    args = parser.parse_args(argv)
    args.models = _pick("--models", args.models, list(M.TRANSFORMERS), SMOKE_MODELS if args.smoke else MODELS, parser)
    sizes = SMOKE_SIZES if args.smoke else SIZES
    names = list(sizes) if args.sizes is None else [s.strip() for s in args.sizes.split(",") if s.strip()]
    try:
        args.sizes = {s: tuple(int(x) for x in s.split("x")) for s in names}
    except ValueError:
        parser.error(f"--sizes must be WxHxF sizes such as 768x512x121, got {','.join(names)!r}")
    if any(len(d) != 3 or min(d) < 1 or (d[2] - 1) % 8 or d[0] % 32 or d[1] % 32 for d in args.sizes.values()):
        parser.error(f"--sizes: width and height must be multiples of 32 and frames 8k+1, got {','.join(names)!r}")
    args.batch = _pick("--batch", args.batch, [*BATCHES, *map(str, range(1, 65))], BATCHES, parser)
    args.impls = _pick("--impls", args.impls, CHOICES, IMPLS, parser)
    args.gpu = [rc.CEILINGS[g] for g in _pick("--gpu", args.gpu, list(rc.CEILINGS), rc.CEILINGS, parser)]
    if args.write and (args.out or args.smoke):
        parser.error("--write regenerates the committed full-size tables: not with --out or --smoke")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = RESULTS if args.write else Path(args.out) if args.out else None
    if args.calibrate:
        from bench import common

        if not Path(args.calibrate).is_file():
            print(f"roofline: --calibrate must name a records file, got {args.calibrate!r} (no such file)",
                  file=sys.stderr)
            return 2
        known = []
        if args.estimates and Path(args.estimates).is_file():
            known = json.loads(Path(args.estimates).read_text())
        elif args.estimates:  # `prepare` did not make them: traced here instead (slower, same numbers)
            print(f"roofline: no estimates file {args.estimates}; tracing the measured steps here")
        pairs = calibration(common.read_results(args.calibrate), known)
        text = report.calibration_md(pairs)
        print(text)
        if out is not None:
            report.write(out / "roofline_calibration.md", text)
        return 0
    traced = cases(args.models, args.sizes, args.batch, args.impls)
    print(report.summary_md(traced, args.gpu, commit()))
    if args.json:
        print(f"wrote {report.write(Path(args.json), json.dumps([estimate(c) for c in traced], indent=1))}")
    if out is not None:
        for path, text in report.files(traced, args.gpu, commit()).items():
            print(f"wrote {report.write(out / path, text)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
