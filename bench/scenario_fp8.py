"""Benchmark one denoising step of the LTX transformers in fp8 against bf16, in the same run.

    python bench/scenario_fp8.py [--models 2b,13b,ltx2-19b] [--batch 2] [--policies fp8-cast,fp8-scaled-mm]
                                 [--kernels auto] [--memory-plan auto|together|pairwise|sequential]
                                 [--no-quality] [--reps N] [--warmup N] [--out DIR] [--smoke]

Workload: scenario_transformer's (768x512x121: 6144 video tokens, 128 T5 / 1024 Gemma text
tokens, LTX-2 also 126 audio tokens), batch 2 (classifier-free guidance batched) by default.
Implementations, all from ONE set of random bf16 weights of realistic scale (bench/models.py):
  ltxengine-bf16           the bf16 model with get_ops(--kernels) (default auto)
  ltxengine-fp8-scaled-mm  convert_to_fp8(twin, "fp8-scaled-mm"): e4m3 x e4m3 GEMMs
  ltxengine-fp8-cast       convert_to_fp8(twin, "fp8-cast"): e4m3 storage, bf16 GEMMs
(a twin shares the bf16 storage; only its converted layers get new fp8 tensors, ltxengine.quant).

Verification before timing: each fp8 model's first output against the bf16 model's, relative L2
per output (video, audio) <= GATE_REL_L2 (see there for why 0.15); a model over it is "failed" and
not timed. Then the models that passed are timed alternately (bench/models.time_alternating).

Memory plan (``--memory-plan auto``, recorded as ``memory_plan`` and ``memory_estimate``): the
bf16 model is built and its first call measured (activation peak); each fp8 copy needs about
1 byte per converted weight (biases and unconverted tensors are shared). "together" when bf16 and
every fp8 copy fit with 1.25x the activation peak, one layer's quantization transient and 1 GiB
to spare, timing all alternately; else "pairwise", one fp8 copy at a time, each timed alternately
with bf16 (its own bf16 record, ``timed_with``); else "sequential": bf16 timed alone, then the
model converted in place (rebuilt from the same seed for the next policy) and timed alone
(``ratio_basis: "separate timing"``). 19B: bf16 37.75 GB; the fp8 copies add 16.2 GB
(fp8-scaled-mm, 1176 layers) and 18.5 GB (fp8-cast, 1344 layers), 34.7 GB together; headroom
1.7 GB + 1.25x activations. With ~46 GB free next to the bf16 weights on an 80 GB H100, together
holds if the measured batch-2 activation peak stays under ~7 GB, else pairwise (bf16 + 18.5 GB).

Figures per record: median/p10/p90 ms, ``ratio_vs_bf16`` (median bf16 / median this; > 1: fp8 is
faster), tflops from scenario_transformer.transformer_flops (``fraction_of_bf16_peak`` against this
run's bf16 8192^3 matmul), ``weight_bytes`` (every parameter and buffer of the model, each storage
once) and ``weight_ratio_vs_bf16``, ``peak_mem_bytes`` (rise over one call), ``rel_l2_vs_bf16``.
Unless ``--no-quality``, bench/fp8_quality.py's measurements follow (per-layer error, 8-step denoise
PSNR; one fp8 model at a time, re-made from the same weights); their records go to
<out>/fp8_quality.jsonl.
Smoke: 8-block tiny models (fp8_quality.CONFIGS) on a 17x96x160 clip, bfloat16 on the CPU.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import fp8_quality as Q  # noqa: E402
from bench import models as M  # noqa: E402
from bench import scenario_transformer as T  # noqa: E402
from ltxengine.quant import convert_to_fp8, fp8_targets, fp8_weight_bytes  # noqa: E402

SCRIPT = "scenario_fp8"
BF16 = Q.BF16
PLANS = ("auto", "together", "pairwise", "sequential")
# Each e4m3 operand carries up to 2^-4 relative rounding (3 mantissa bits), ~2.5-3 % RMS, so one
# layer with fp8 inputs and weights is off by ~4 % L2 and a whole step by more: emulated on the
# CPU (reference fp8 ops, 28-block 2B at 45 tokens) the step output moved 4.3 % (weights only) and
# 5.6 % (weights and activations) from bf16; 48 blocks add to that. A 5 % gate would fail honest
# fp8. A wiring fault (a scale applied twice or not at all, a transposed or wrong weight) moves a
# layer's output by ~100 %. 0.15 sits between the two with margin on both sides.
GATE_REL_L2 = 0.15
MARGIN_BYTES = 1 << 30
QUANT_TRANSIENT = 9  # bytes per element while one layer is quantized: fp32 copy, fp32 quotient, e4m3


# -- memory plan -----------------------------------------------------------------------------

def fp8_copy_bytes(model, policy: str) -> int:
    """Bytes an fp8 twin adds: 1 per converted weight element plus its fp32 scale."""
    return sum(model.get_submodule(n).weight.numel() + 4 for n in fp8_targets(model, policy))


def available_bytes(device: torch.device) -> int | None:
    """Free device memory, counting what torch's cache holds but does not use (None off the GPU)."""
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def plan_memory(model, policies: list[str], activation_peak: int, available: int | None,
                requested: str = "auto") -> tuple[str, dict]:
    """(plan, estimate): see the module docstring. ``available`` None (CPU): "together"."""
    if requested not in PLANS:
        raise ValueError(f"plan_memory: requested must be one of {PLANS}, got {requested!r}")
    copies = {p: fp8_copy_bytes(model, p) for p in policies}
    largest = max((model.get_submodule(n).weight.numel() for p in policies for n in fp8_targets(model, p)), default=0)
    headroom = int(1.25 * activation_peak) + QUANT_TRANSIENT * largest + MARGIN_BYTES
    estimate = {"available_bytes": available, "fp8_copy_bytes": copies, "activation_peak_bytes": activation_peak,
                "headroom_bytes": headroom, "need_together_bytes": sum(copies.values()) + headroom,
                "need_pairwise_bytes": max(copies.values(), default=0) + headroom}
    plan = requested
    if plan == "auto":
        if available is None or estimate["need_together_bytes"] <= available:
            plan = "together"
        else:
            plan = "pairwise" if estimate["need_pairwise_bytes"] <= available else "sequential"
    return plan, estimate


# -- verification and timing ---------------------------------------------------------------------

def _result(impl: str, policy: str | None, settings) -> dict:
    return {"impl": impl, "policy": policy, "source": None, "status": "ok", "reason": "", "rel_l2_vs_bf16": None,
            "gate_rel_l2": GATE_REL_L2, "timed_with": None, "median_ms": None, "p10_ms": None, "p90_ms": None,
            "min_ms": None, "mean_ms": None, "reps": None, "warmup": settings.warmup, "flush_l2": False,
            "peak_mem_bytes": None}


def check(res: dict, out: dict, reference: dict) -> bool:
    """Gate one fp8 output against the bf16 one; fills rel_l2_vs_bf16, status and reason."""
    errors = {k: Q.rel_l2(out[k], reference[k]) for k in reference}
    res["rel_l2_vs_bf16"] = errors
    bad = {k: e for k, e in errors.items() if not e <= GATE_REL_L2}
    if bad:
        res.update(status="failed", reason="failed: " + "; ".join(
            f"{k} rel L2 vs bf16 {e:.3e} > gate {GATE_REL_L2}" for k, e in bad.items()) + "; not timed")
    return not bad


def time_group(settings, fns: dict, results: dict, reference: dict) -> None:
    """Verify every fp8 entry of ``fns`` (impl -> step function) against ``reference``, then time
    the ones that passed alternately, with the bf16 entry when present; fills ``results``."""
    passed = {}
    for impl, fn in fns.items():
        res = results[impl]
        try:
            out = fn()
            common.synchronize(settings.device)
        except Exception as e:  # noqa: BLE001 - e.g. no fp8 GEMM on this device: reported
            res.update(status="unavailable", reason=f"unavailable: first call raised {common._short(e)}")
            continue
        if impl == BF16 or check(res, out, reference):
            passed[impl] = fn
            print(f"verified {impl}: rel L2 vs bf16 {res['rel_l2_vs_bf16'] or 'reference'} (gate {GATE_REL_L2})")
        else:
            print(f"FAILED {impl}: {res['reason']}")
        del out
    times, errors = M.time_alternating(passed, settings.device, settings.reps, settings.warmup)
    for impl, fn in passed.items():
        res = results[impl]
        res["timed_with"] = sorted(passed)
        if impl in errors:
            res.update(status="failed", reason=f"failed while timing: {errors[impl]}")
            continue
        res.update(common.summarize(times[impl]))
        try:
            res["peak_mem_bytes"] = common.peak_memory(fn, settings.device)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: reported, the others go on
            res.update(status="failed", reason=f"failed while measuring memory: {common._short(e)}")
    common.add_ratios(list(results.values()), {"bf16": BF16})  # within this rotation only


def add_bf16_ratios(results: list[dict]) -> None:
    """Complete ``ratio_vs_bf16`` (set per rotation by time_group): under the sequential plan an
    fp8 model was timed without bf16 in its rotation, so its ratio uses the bf16 timed on its own;
    ``ratio_basis`` says which."""
    bf16 = next((r for r in results if r["impl"] == BF16 and r["status"] == "ok"), None)
    for r in results:
        r["ratio_basis"] = None
        if r["status"] != "ok":
            continue
        if r.get("ratio_vs_bf16") is not None:
            r["ratio_basis"] = "same rotation"
        elif bf16 is not None:
            r["ratio_vs_bf16"], r["ratio_basis"] = bf16["median_ms"] / r["median_ms"], "separate timing"


# -- one model -----------------------------------------------------------------------------------

class ModelRun:
    """The bf16 model of one config, its bf16 reference outputs per batch and the records."""

    def __init__(self, settings, name: str, ops, batches: list[int], dtype):
        self.settings, self.name, self.ops, self.dtype = settings, name, ops, dtype
        self.config, self.geo = Q.CONFIGS[name], Q.geometry(name, settings.smoke)
        self.model = M.build(self.config, settings.device, dtype, ops)
        self.bf16_bytes = Q.weight_bytes(self.model)
        self.inputs, self.reference, self.activation_peak = {}, {}, 0
        for b in batches:
            self.inputs[b] = T.make_inputs(self.config, self.geo, b, settings.device, dtype)
            fn = T.ltxengine_call(self.model, self.inputs[b], self.geo)
            self.reference[b] = fn()
            self.activation_peak = max(self.activation_peak, common.peak_memory(fn, settings.device) or 0)
        self.results: dict[int, list[dict]] = {b: [] for b in batches}

    def group(self, models: dict) -> None:
        """Verify and time ``models`` (impl -> (model, policy)) at every batch size."""
        for b in self.results:
            fns = {impl: T.ltxengine_call(m, self.inputs[b], self.geo) for impl, (m, _) in models.items()}
            results = {impl: self.describe(_result(impl, policy, self.settings), m)
                       for impl, (m, policy) in models.items()}
            time_group(self.settings, fns, results, self.reference[b])
            self.results[b] += results.values()

    def describe(self, res: dict, model) -> dict:
        nbytes = Q.weight_bytes(model)
        res.update(source=self.ops.name, sources=dict(self.ops.sources), weight_bytes=nbytes,
                   weight_bytes_bf16=self.bf16_bytes, weight_ratio_vs_bf16=nbytes / self.bf16_bytes,
                   linear_weight_bytes=fp8_weight_bytes(model),
                   fp8_layers=len(fp8_targets(model, res["policy"])) if res["policy"] else 0)
        return res

    def records(self, plan: str, estimate: dict) -> list[dict]:
        out = []
        for b, results in self.results.items():
            add_bf16_ratios(results)
            d = Q.dims(self.name, self.config, self.geo, b, sigma=T.SIGMA)
            flops = T.transformer_flops(self.config, d["video_tokens"], d["text_tokens"], d["audio_tokens"], b)
            for r in results:
                r.update(memory_plan=plan, memory_estimate=estimate)
                out.append(common.make_record(self.settings, r, op="transformer_step", shape=f"{self.name}-b{b}",
                                              dims=d, dtype=self.dtype,
                                              **common.throughput(r, self.settings.ceilings, flops=flops)))
        return out


def run_model(settings, name: str, ops, batches: list[int], policies: list[str], requested: str,
              quality: bool) -> tuple[list[dict], list[dict]]:
    """(step records, quality records) of one model under the memory plan."""
    dtype = torch.bfloat16  # fp8-scaled-mm's GEMM output and bias are half precision
    run = ModelRun(settings, name, ops, batches, dtype)
    plan, estimate = plan_memory(run.model, policies, run.activation_peak, available_bytes(settings.device),
                                 requested)
    print(f"{name}: memory plan {plan} ({estimate})")
    qrecords = []
    refs = None
    if quality and plan != "sequential":
        refs = Q.references(run.model, run.geo, settings.device, dtype, settings.smoke)
        qrecords += Q.bf16_records(settings, name, run.model, refs, run.geo, dtype)
    if plan == "sequential":
        run.group({BF16: (run.model, None)})
        for i, policy in enumerate(policies):
            base = run.model if i == 0 else M.build(run.config, settings.device, dtype, ops)  # same seed
            run.model = None
            M.release()
            run.group({Q.impl_name(policy): (convert_to_fp8(base, policy), policy)})
            del base
        if quality:
            qrecords += [r for p in policies for r in Q.failed_records(
                settings, name, p, "skipped: memory plan sequential (bf16 and an fp8 copy do not fit together)",
                dtype, "skipped")]
    else:
        groups = [policies] if plan == "together" else [[p] for p in policies]
        for group in groups:
            twins = {p: Q.fp8_twin(run.model, p) for p in group}
            run.group({BF16: (run.model, None), **{Q.impl_name(p): (twins[p], p) for p in group}})
            del twins
            M.release()
        if refs is not None:  # one fp8 model at a time (the hooks' fp32 copies need room)
            qrecords += Q.measure_policies(settings, name, run.model, policies, refs, run.geo, dtype)
    return run.records(plan, estimate), qrecords


# -- command line --------------------------------------------------------------------------------

def print_table(records: list[dict]) -> None:
    print(f"{'shape':<16} {'impl':<24} {'median ms':>10} {'vs bf16':>8} {'TFLOP/s':>9} {'weights GB':>10} "
          f"{'w ratio':>7} {'peak GB':>8} {'rel L2':>8}  timed with")
    for r in records:
        row = f"{r['shape']:<16} {r['impl']:<24} "
        if r["status"] != "ok":
            print(row + r["reason"])
            continue
        err = max(r["rel_l2_vs_bf16"].values()) if r["rel_l2_vs_bf16"] else None
        peak = r["peak_mem_bytes"] / 1e9 if r["peak_mem_bytes"] is not None else None
        print(row + f"{r['median_ms']:>10.3f} {common._fmt(r['ratio_vs_bf16'], '.3f'):>8} "
              f"{common._fmt(r['tflops'], '.1f'):>9} {r['weight_bytes'] / 1e9:>10.3f} "
              f"{r['weight_ratio_vs_bf16']:>7.3f} {common._fmt(peak, '.2f'):>8} {common._fmt(err, '.4f'):>8}  "
              f"{','.join(r['timed_with'])} ({r['memory_plan']})")


def parse_args(argv):
    parser = common.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(Q.CONFIGS)} (default: "
                                         f"{','.join(Q.FULL_MODELS)}; with --smoke: {','.join(Q.SMOKE_MODELS)})")
    parser.add_argument("--batch", default="2", help="comma-separated batch sizes (default: 2, CFG batched)")
    parser.add_argument("--policies", help="comma-separated, from fp8-cast, fp8-scaled-mm (default: both)")
    parser.add_argument("--kernels", default="auto", choices=M.KERNELS, help="ops backend of every model")
    parser.add_argument("--memory-plan", default="auto", choices=PLANS, help="see the module docstring")
    parser.add_argument("--no-quality", action="store_true", help="skip the fp8_quality measurements")
    args = parser.parse_args(argv)
    models = common.pick_names("--models", args.models, list(Q.CONFIGS), parser) or list(
        Q.SMOKE_MODELS if args.smoke else Q.FULL_MODELS)
    try:
        batches = sorted({int(b) for b in args.batch.split(",") if b.strip()})
    except ValueError:
        parser.error(f"--batch must be comma-separated integers, got {args.batch!r}")
    if not batches or batches[0] < 1:
        parser.error(f"--batch must list positive integers, got {args.batch!r}")
    return parser, args, models, batches, Q.parse_policies(parser, args.policies)


def main(argv: list[str] | None = None) -> int:
    parser, args, models, batches, policies = parse_args(argv)
    settings = common.settings_from_args(SCRIPT, parser, args, models, default_reps=10, ceilings=("matmul",))
    ops, why = common.resolve_backend(args.kernels, settings.device)
    if ops is None:
        parser.error(f"--kernels {args.kernels}: {why}")
    records, qrecords = [], []
    for name in settings.shapes:
        step, quality = run_model(settings, name, ops, batches, policies, args.memory_plan, not args.no_quality)
        records, qrecords = records + step, qrecords + quality
        M.release()
    path = common.append_results(settings.results_path, records)
    if settings.device.type == "cpu":
        print("device cpu (smoke run): the timings below check the harness; they are not performance figures")
    print_table(records)
    print(f"ceilings: {settings.ceilings}\n{len(records)} records appended to {path}")
    status = M.exit_status(records, 0)
    if qrecords:
        status = max(status, Q.finish(settings, qrecords, settings.out_dir / f"{Q.SCRIPT}.jsonl"))
    return status


if __name__ == "__main__":
    sys.exit(main())
