"""Shared timing harness for the op benchmarks (and, later, the full-model scenarios).

What every benchmark script gets from here:

* timing: CUDA events around each repetition after a warm-up, summarized as median, p10 and
  p90; optionally L2 is evicted before each repetition by writing a 256 MB buffer (memory-bound
  ops, so that no input is served from the 50 MB L2). Without a GPU, time.perf_counter: smoke
  runs only, whose records say "device": "cpu" and are never performance figures;
* ceilings measured in the same run (device-to-device copy bandwidth, bf16 dense matmul rate),
  so a result is stated as a fraction of what this GPU reaches today, not of a datasheet;
* verify-before-time: each implementation's first output is compared with the fp32 reference
  within an error budget; a wrong one is reported "failed" and not timed; a backend that raises
  when resolved or on its first call is reported "unavailable: <reason>", never a crash;
* records: one JSON object per (op, shape, implementation) with environment(), appended as JSON
  lines to <out>/<script>.jsonl (append_results).

Ratios are speedups: ratio_vs_X = median(X) / median(this implementation), > 1 means faster.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import json
import math
import os
import platform
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable

import torch

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "bench" / "results"
SMOKE_DIR = Path(tempfile.gettempdir()) / "ltxengine-bench-smoke"
L2_FLUSH_BYTES = 256 << 20  # 5x the H100's 50 MB L2: one write of it leaves no input resident
BACKENDS = ("torch", "triton", "cuda")  # ltxengine's own: a failed verification fails the run
COMPILE = "torch.compile"
SMOKE_REPS = 2


# -- transformer streams at 768x512x121 (6144 video tokens, 126 audio tokens) -------------------

@dataclass(frozen=True)
class Stream:
    """One token stream of a transformer: the geometry every per-token op of it sees."""

    tokens: int
    width: int
    heads: int
    rope: str  # "interleaved" (LTX-Video, tables (B, N, D)) or "split" (LTX-2, (B, H, N, D/H/2))
    qk_eps: float  # Q/K RMSNorm eps: 1e-5 in LTX-Video, 1e-6 in LTX-2


STREAMS = {
    "ltxv-2b": Stream(6144, 2048, 32, "interleaved", 1e-5),
    "ltxv-13b": Stream(6144, 4096, 32, "interleaved", 1e-5),
    "ltx2-video": Stream(6144, 4096, 32, "split", 1e-6),
    "ltx2-audio": Stream(126, 2048, 32, "split", 1e-6),
}
# Odd token counts and several heads: what the interpreter can run in seconds.
SMOKE_STREAMS = {
    "smoke-interleaved": Stream(9, 64, 4, "interleaved", 1e-5),
    "smoke-split": Stream(7, 64, 4, "split", 1e-6),
}


def stream_shapes(smoke: bool) -> dict[str, tuple[Stream, int]]:
    """Named (stream, batch) pairs: batch 1 and 2 (classifier-free guidance) per stream."""
    if smoke:
        return {"smoke-interleaved-b2": (SMOKE_STREAMS["smoke-interleaved"], 2),
                "smoke-split-b1": (SMOKE_STREAMS["smoke-split"], 1)}
    return {f"{name}-b{b}": (s, b) for name, s in STREAMS.items() for b in (1, 2)}


# -- statistics -----------------------------------------------------------------------------------

def percentile(values: Iterable[float], q: float) -> float:
    """q-th percentile (0..100), linear between the closest ranks (numpy's default method)."""
    s = sorted(values)
    if not s:
        raise ValueError("percentile: values must be non-empty, got []")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile: q must be in [0, 100], got {q}")
    pos = (len(s) - 1) * q / 100
    lo = math.floor(pos)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def summarize(times_ms: list[float]) -> dict:
    return {"median_ms": percentile(times_ms, 50), "p10_ms": percentile(times_ms, 10),
            "p90_ms": percentile(times_ms, 90), "min_ms": min(times_ms),
            "mean_ms": sum(times_ms) / len(times_ms), "reps": len(times_ms)}


# -- timing ---------------------------------------------------------------------------------------

@functools.lru_cache(maxsize=None)
def _flush_buffer(device: torch.device) -> torch.Tensor:
    return torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, reps: int, warmup: int,
            flush_l2: bool = False) -> list[float]:
    """Milliseconds of each of ``reps`` calls of fn after ``warmup`` untimed ones."""
    if reps < 1:
        raise ValueError(f"time_fn: reps must be >= 1, got {reps}")
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        return _time_cuda(fn, device, reps, flush_l2)
    return _time_host(fn, reps)


def _time_cuda(fn, device, reps, flush_l2):
    flush = _flush_buffer(device) if flush_l2 else None
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    torch.cuda.synchronize(device)
    for start, end in zip(starts, ends):
        if flush is not None:
            flush.zero_()  # outside the events: evicts L2 without being timed
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize(device)
    return [s.elapsed_time(e) for s, e in zip(starts, ends)]


def _time_host(fn, reps):
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def peak_memory(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Bytes allocated at the peak of one call above what was allocated before (output
    included: every implementation must allocate it). None off the GPU."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    out = fn()
    torch.cuda.synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    del out
    return peak


# -- ceilings measured in the same run --------------------------------------------------------

def copy_bandwidth(device: torch.device, nbytes: int | None = None, reps: int = 20) -> float:
    """GB/s of dst.copy_(src) counting bytes read plus bytes written (the bound of a
    memory-bound op that reads its inputs once and writes its outputs once)."""
    nbytes = nbytes or ((1 << 30) if device.type == "cuda" else (16 << 20))
    src = torch.randint(0, 256, (nbytes,), dtype=torch.uint8, device=device)
    dst = torch.empty_like(src)
    t = percentile(time_fn(lambda: dst.copy_(src), device, reps, warmup=3), 50)
    return 2 * nbytes / t / 1e6


def matmul_peak(device: torch.device, n: int | None = None, reps: int = 20) -> float:
    """TFLOP/s of a bf16 n^3 matmul on random data (cuBLAS at n = 8192 on a GPU)."""
    n = n or (8192 if device.type == "cuda" else 256)
    a = torch.randn(n, n, device=device).to(torch.bfloat16)
    b = torch.randn(n, n, device=device).to(torch.bfloat16)
    t = percentile(time_fn(lambda: a @ b, device, reps, warmup=3), 50)
    return 2 * n ** 3 / t / 1e9


def measure_ceilings(device: torch.device, which: Iterable[str] = ("copy", "matmul")) -> dict:
    out = {}
    if "copy" in which:
        out["copy_gbps"] = copy_bandwidth(device)
    if "matmul" in which:
        out["bf16_matmul_tflops"] = matmul_peak(device)
    return out


# -- environment ----------------------------------------------------------------------------

def _run(cmd: list[str]) -> str | None:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=20, cwd=REPO)
    except (OSError, subprocess.SubprocessError):
        return None
    return (r.stdout.strip() or None) if r.returncode == 0 else None


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return triton.__version__


@functools.lru_cache(maxsize=None)
def environment() -> dict:
    """Where and when a record was measured: GPU, driver, CUDA, library versions, commit, date."""
    env = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
           "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
           "triton": _triton_version(), "cuda": torch.version.cuda, "gpu": None, "sm": None,
           "driver": None, "cudnn": None,
           # a device machine gets the working tree without .git: gpu_session.sh passes the commit on
           "commit": _run(["git", "rev-parse", "HEAD"]) or os.environ.get("LTXENGINE_COMMIT")}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.cuda.current_device())
        env.update(gpu=props.name, sm=f"{props.major}.{props.minor}", cudnn=torch.backends.cudnn.version(),
                   multiprocessors=props.multi_processor_count, memory_gib=round(props.total_memory / 2 ** 30, 1))
        smi = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
        env["driver"] = smi.splitlines()[0] if smi else None
    return env


# -- results ----------------------------------------------------------------------------------

def _clean(value):
    """JSON-safe copy: non-finite floats become strings ("inf", "nan"), dtypes and paths str."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def append_results(path: str | Path, records: Iterable[dict]) -> Path:
    """Append one JSON line per record to ``path`` (folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(_clean(record), allow_nan=False) + "\n")
    return path


def read_results(path: str | Path) -> list[dict]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


# -- verification -------------------------------------------------------------------------------

def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def max_abs_err(out, ref) -> float:
    """max |out - ref| over a tensor or a tuple of tensors; inf when anything is not finite."""
    outs, refs = _as_tuple(out), _as_tuple(ref)
    if len(outs) != len(refs):
        raise ValueError(f"max_abs_err: expected {len(refs)} outputs, got {len(outs)}")
    worst = 0.0
    for o, r in zip(outs, refs):
        if tuple(o.shape) != tuple(r.shape):
            raise ValueError(f"max_abs_err: output shape {tuple(o.shape)} != reference {tuple(r.shape)}")
        diff = (o.float() - r.float()).abs()
        if not bool(torch.isfinite(diff).all()):
            return math.inf
        worst = max(worst, diff.max().item() if diff.numel() else 0.0)
    return worst


def max_abs(ref) -> float:
    return max((r.float().abs().max().item() if r.numel() else 0.0) for r in _as_tuple(ref))


def ulp(magnitude: float, dtype: torch.dtype = torch.bfloat16) -> float:
    """Spacing of ``dtype`` numbers at ``magnitude`` (bf16: 2^-7 relative to the binade)."""
    info = torch.finfo(dtype)
    if magnitude <= info.tiny:
        return info.tiny
    return info.eps * 2.0 ** (math.frexp(magnitude)[1] - 1)


def error_budget(lowp_err: float, ref, dtype: torch.dtype = torch.bfloat16, floor: float = 0.0) -> float:
    """Flash-attention style: 2 x the error of torch doing the same computation in the same low
    precision, plus one ``dtype`` ulp at the output's magnitude (a kernel may round the last
    bit the other way) plus an op-specific ``floor``."""
    return 2.0 * lowp_err + ulp(max_abs(ref), dtype) + floor


@contextmanager
def exact_fp32():
    """fp32 references without TF32 (cuDNN convolutions allow it by default)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


# -- implementations ------------------------------------------------------------------------------

@dataclass
class Impl:
    """One implementation of an op on one shape: ``fn`` computes the output from inputs it
    closes over. fn None: not runnable, ``status`` / ``reason`` say why."""

    name: str
    fn: Callable[[], Any] | None
    status: str = "ok"
    reason: str = ""
    oracle: Any = None  # a baseline computing something else (e.g. a bf16 GEMM) brings its own
    tolerance: float | None = None
    source: str | None = None  # what serves the op inside a backend (Ops.sources), e.g. "cublas"


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200] if text else ''}"


@functools.lru_cache(maxsize=None)
def resolve_backend(name: str, device: torch.device):
    """(Ops, "") or (None, "unavailable: <why>"): Triton and CUDA backends may not resolve."""
    try:
        from ltxengine.ops import get_ops

        if "device" in inspect.signature(get_ops).parameters:
            return get_ops(name, device=device), ""
        return get_ops(name), ""
    except Exception as e:  # noqa: BLE001 - any failure to resolve is reported, not raised
        return None, f"unavailable: {_short(e)}"


def backend_impls(op: str, call: Callable[[Callable], Any], device: torch.device,
                  backends: Iterable[str] = BACKENDS) -> list[Impl]:
    """One Impl per ltxengine backend: ``call(fn)`` applies the backend's ``op`` to the inputs.
    A backend whose ``op`` is the torch reference (its ``sources`` say so) is skipped rather
    than timed twice."""
    impls = []
    for name in backends:
        ops, why = resolve_backend(name, device)
        fn = getattr(ops, op, None) if ops is not None else None
        if ops is not None and fn is None:
            why = f"unavailable: the {name} backend has no {op}"
        if fn is None:
            impls.append(Impl(name, None, "unavailable", why))
            continue
        source = dict(getattr(ops, "sources", ())).get(op, "torch")
        if name != "torch" and source == "torch":
            impls.append(Impl(name, None, "skipped", f"skipped: the {name} backend serves {op} with the torch "
                                                     "reference", source=source))
        else:
            impls.append(Impl(name, functools.partial(call, fn), source=source))
    return impls


def compiled_impl(fn: Callable, call: Callable[[Callable], Any], settings: "Settings",
                  backend: str = "inductor") -> Impl:
    """torch.compile(fn) with one static graph per shape; compile failures surface on the
    first call and are reported as unavailable."""
    if not settings.compile:
        return Impl(COMPILE, None, "skipped", settings.compile_skip_reason)
    # A fresh dynamo cache per shape: each shape gets its own static graph, and many shapes
    # never reach the recompile limit (past it dynamo silently runs eager).
    try:
        torch._dynamo.reset()
        compiled = torch.compile(fn, dynamic=False, backend=backend)
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return Impl(COMPILE, None, "unavailable", f"unavailable: {_short(e)}")
    return Impl(COMPILE, functools.partial(call, compiled))


def measure(impl: Impl, oracle, tolerance: float, settings: "Settings", *, flush_l2: bool = False,
            memory: bool = False) -> dict:
    """Verify, then time one implementation. Returns the result fields of a record."""
    res = {"impl": impl.name, "source": impl.source, "status": impl.status, "reason": impl.reason,
           "max_abs_err": None,
           "tolerance": None, "median_ms": None, "p10_ms": None, "p90_ms": None, "min_ms": None,
           "mean_ms": None, "reps": None, "warmup": settings.warmup, "flush_l2": flush_l2,
           "peak_mem_bytes": None}
    if impl.fn is None:
        return res
    oracle = oracle if impl.oracle is None else impl.oracle
    res["tolerance"] = tolerance if impl.tolerance is None else impl.tolerance
    try:
        out = impl.fn()
        synchronize(settings.device)
    except Exception as e:  # noqa: BLE001 - a backend that raises on its first call is unavailable
        return {**res, "status": "unavailable", "reason": f"unavailable: first call raised {_short(e)}"}
    try:
        res["max_abs_err"] = err = max_abs_err(out, oracle)
    except ValueError as e:
        return {**res, "status": "failed", "reason": f"failed: {e}"}
    del out
    if not err <= res["tolerance"]:
        return {**res, "status": "failed",
                "reason": f"failed: max_abs_err {err:.3e} > tolerance {res['tolerance']:.3e}; not timed"}
    try:
        res.update(summarize(time_fn(impl.fn, settings.device, settings.reps, settings.warmup, flush_l2)))
        if memory:
            res["peak_mem_bytes"] = peak_memory(impl.fn, settings.device)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory at one shape: report, go on
        return {**res, "status": "failed", "reason": f"failed while timing: {_short(e)}"}
    return {**res, "status": "ok"}


def add_ratios(results: list[dict], baselines: dict[str, str]) -> None:
    """ratio_vs_<key> = median(baselines[key]) / median(r) for every result r, and
    ratio_vs_best_alternative against the fastest other implementation that passed."""
    ok = {r["impl"]: r for r in results if r["status"] == "ok"}

    def ratio(base, r):
        return base["median_ms"] / r["median_ms"] if base and r["status"] == "ok" and r["median_ms"] else None

    for r in results:
        for key, name in baselines.items():
            r[f"ratio_vs_{key}"] = ratio(ok.get(name), r)
        others = [o for name, o in ok.items() if name != r["impl"]]
        best = min(others, key=lambda o: o["median_ms"]) if others else None
        r["best_alternative"] = best["impl"] if best else None
        r["ratio_vs_best_alternative"] = ratio(best, r)


def throughput(result: dict, ceilings: dict, *, nbytes: int | None = None, flops: float | None = None) -> dict:
    """GB/s (bytes moved / median) or TFLOP/s, and their fraction of this run's ceilings."""
    t = result["median_ms"]
    out = {}
    if nbytes is not None:
        gbps = nbytes / t / 1e6 if t else None
        copy = ceilings.get("copy_gbps")
        out.update(bytes=nbytes, gbps=gbps, fraction_of_copy_bw=gbps / copy if gbps and copy else None)
    if flops is not None:
        tflops = flops / t / 1e9 if t else None
        peak = ceilings.get("bf16_matmul_tflops")
        out.update(flops=flops, tflops=tflops, fraction_of_bf16_peak=tflops / peak if tflops and peak else None)
    return out


# -- command line and records -----------------------------------------------------------------------

@dataclass
class Settings:
    script: str
    device: torch.device
    smoke: bool
    reps: int
    warmup: int
    out_dir: Path
    shapes: list[str]
    impls: set[str] | None
    compile: bool = False
    compile_skip_reason: str = ""
    flush_l2: bool = False
    ceilings: dict | None = None

    @property
    def results_path(self) -> Path:
        return self.out_dir / f"{self.script}.jsonl"

    def keep(self, impls: list[Impl]) -> list[Impl]:
        return [i for i in impls if self.impls is None or i.name in self.impls]


def make_parser(description: str, *, compile_option: bool = False, flush_option: bool = False):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--shapes", help="comma-separated shape names (default: all of them)")
    p.add_argument("--reps", type=int, help="timed repetitions per implementation")
    p.add_argument("--warmup", type=int, help="untimed calls before timing")
    p.add_argument("--out", help=f"results folder (default {RESULTS_DIR}; with --smoke {SMOKE_DIR})")
    p.add_argument("--smoke", action="store_true",
                   help="tiny shapes, CPU allowed, 2 reps: checks harness and kernels, no performance figures")
    p.add_argument("--impls", help="comma-separated implementations to run (default: all)")
    if compile_option:
        p.add_argument("--no-compile", action="store_true",
                       help="skip the torch.compile baselines (of the reference, or of diffusers in scenarios)")
    if flush_option:
        p.add_argument("--no-flush", action="store_true", help="do not evict L2 between repetitions")
    return p


def settings_from_args(script: str, parser, args, shape_names: list[str], *, default_reps: int,
                       ceilings: Iterable[str]) -> Settings:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu" and not args.smoke:
        parser.error("no CUDA device: full-size runs need a GPU; use --smoke for the CPU check")
    reps = args.reps if args.reps is not None else (SMOKE_REPS if args.smoke else default_reps)
    if reps < 1:
        parser.error(f"--reps must be >= 1, got {reps}")
    warmup = args.warmup if args.warmup is not None else (0 if args.smoke else max(3, reps // 10))
    if warmup < 0:
        parser.error(f"--warmup must be >= 0, got {warmup}")
    shapes = pick_names("--shapes", args.shapes, shape_names, parser) or list(shape_names)
    impls = set(args.impls.split(",")) if args.impls else None
    out_dir = Path(args.out) if args.out else (SMOKE_DIR if args.smoke else RESULTS_DIR)
    s = Settings(script, device, args.smoke, reps, warmup, out_dir, shapes, impls,
                 flush_l2=not getattr(args, "no_flush", True))
    if getattr(args, "no_compile", True):
        s.compile_skip_reason = "skipped: --no-compile"
    elif args.smoke:
        s.compile_skip_reason = "skipped: --smoke does not compile (tens of seconds per graph on a CPU)"
    else:
        s.compile = True
    s.ceilings = measure_ceilings(device, tuple(ceilings))
    return s


def pick_names(flag: str, value: str | None, names: list[str], parser) -> list[str] | None:
    if not value:
        return None
    picked = [v.strip() for v in value.split(",") if v.strip()]
    for name in picked:
        if name not in names:
            parser.error(f"{flag}: unknown name {name!r}; choose from {', '.join(names)}")
    return picked


def make_record(settings: Settings, result: dict, *, op: str, shape: str, dims: dict, dtype,
                **extra) -> dict:
    return {"script": settings.script, "op": op, "shape": shape, "dims": dims,
            "dtype": str(dtype).replace("torch.", ""), "device": settings.device.type,
            "smoke": settings.smoke, **result, **extra, "ceilings": settings.ceilings, "env": environment()}


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def print_table(records: list[dict]) -> None:
    head = f"{'op':<28} {'shape':<22} {'impl':<26} {'median ms':>10} {'p10':>9} {'p90':>9} " \
           f"{'rate':>14} {'frac':>6} {'vs best':>8} {'max err':>9} {'tol':>9}"
    print(head)
    for r in records:
        row = f"{r['op']:<28} {r['shape']:<22} {r['impl']:<26} "
        if r["status"] != "ok":
            print(row + r["reason"])
            continue
        if r.get("tflops") is not None:
            rate, frac = f"{r['tflops']:.4g} TFLOP/s", r.get("fraction_of_bf16_peak")
        else:
            rate, frac = f"{_fmt(r.get('gbps'), '.4g')} GB/s", r.get("fraction_of_copy_bw")
        print(row + f"{r['median_ms']:>10.4f} {r['p10_ms']:>9.4f} {r['p90_ms']:>9.4f} {rate:>14} "
              f"{_fmt(frac, '.2f'):>6} {_fmt(r['ratio_vs_best_alternative'], '.2f'):>8} "
              f"{_fmt(r['max_abs_err'], '.2e'):>9} {_fmt(r['tolerance'], '.2e'):>9}")


def finish(settings: Settings, records: list[dict]) -> int:
    """Append the records, print them; exit status 1 when an ltxengine backend failed its check."""
    path = append_results(settings.results_path, records)
    if settings.device.type == "cpu":
        print("device cpu (smoke run): the timings below check the harness; they are not performance figures")
    print_table(records)
    print(f"ceilings: {settings.ceilings}")
    print(f"{len(records)} records appended to {path}")
    failed = [r for r in records if r["status"] == "failed" and r["impl"] in BACKENDS]
    for r in failed:
        print(f"FAILED {r['op']} {r['shape']} {r['impl']}: {r['reason']}")
    return 1 if failed else 0
