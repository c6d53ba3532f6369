"""Compile our Triton kernels for Hopper (sm_90a) ahead of time, on a machine without a GPU.

Triton's interpreter, which CI runs the kernels through, accepts code that a GPU compile rejects
(tl type errors, unsupported constructs, constexpr mistakes) and says nothing of register spills.
``triton.compile`` needs no GPU when it is given a target, so this module compiles each kernel
exactly as the JIT would on an H100 and reads back what ptxas reports.

How a launch becomes a compile, without copying the launchers' logic:
1. A *case* is a zero-argument function that calls a public launcher (``ada_norm(...)``) on
   ``fake_cuda`` tensors: meta tensors (shapes, strides and storage offsets, no memory) that
   claim ``is_cuda``, so the launchers pick their GPU block sizes, warps and stages.
2. ``capture`` swaps ``JITFunction.run`` for a recorder: ``kernel[grid](*args, **kwargs)``
   records (kernel, grid, args, kwargs) instead of launching.
3. ``ast_source`` hands those to the JIT's own binder and ``_pack_args`` (built for the sm_90
   target instead of the current device's), which yield the signature, constexprs and the
   divisibility-by-16 / ==1 specialisation attributes the JIT would pass; without them the
   compiler does not vectorize or pipeline and the register figures would mislead.
4. ``compile_launch`` runs ``triton.compile`` for GPUTarget("cuda", 90, 32) (Triton turns 90
   into sm_90a, the target with wgmma) and parses ptxas' ``-v`` report. It then checks step 3
   against the JIT itself: ``kernel.warmup`` (compile, no launch) under a stand-in driver that
   reports an sm_90 device must land on the same compiled kernel (same hash: a cache hit).

Why a subprocess (``compile_cases``): the kernel objects must be real JITFunctions. tests/
conftest.py sets TRITON_INTERPRET=1 on CPU machines before the kernels are imported, which
makes every ``@triton.jit`` an InterpretedFunction, and the launchers read the same variable to
pick interpreter-sized blocks. Re-wrapping ``.fn`` in-process would still leave the nested
@triton.jit helpers (to_e4m3, _prologue, ...) interpreted and the launchers in interpreter mode;
a fresh interpreter without the variable imports everything as on a GPU machine and leaves the
test session untouched. The private Triton entry points used (``create_function_from_signature``,
``JITFunction._pack_args``, ``knobs.nvidia.dump_ptxas_log``) are those of triton 3.9.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

TARGET_ARCH = 90  # compiled as sm_90a: Triton adds the "a" for capability >= 90
REPO_ROOT = Path(__file__).resolve().parents[2]

# PTX instruction families reported per kernel (regex -> count): tensor-core paths first.
PTX_PATTERNS = {
    "wgmma": r"\bwgmma\.mma_async\.",
    "wgmma_bf16": r"\bwgmma\.mma_async\.[\w.]*\.bf16\.bf16\b",
    "wgmma_e4m3": r"\bwgmma\.mma_async\.[\w.]*\.e4m3\.e4m3\b",
    "mma_sync": r"\bmma\.sync\.",  # the pre-Hopper tensor-core path
    "cp_async": r"\bcp\.async\.(?:ca|cg)\b",  # software-pipelined global -> shared copies
    "tma": r"\bcp\.async\.bulk\.tensor\b",
    "local": r"\b(?:ld|st)\.local\b",  # run-time indexed arrays (ptxas' own spills are in its report)
    "ld_v4": r"\bld\.global(?:\.[a-z]\w*)*\.v4\.[bfu]32\b",  # 16-byte vector loads
}


# --------------------------------------------------------------------------------------------
# inputs and launch capture (run in a process where TRITON_INTERPRET is unset)


class _FakeCuda(torch.Tensor):
    """A meta tensor that says it is on CUDA: the launchers choose GPU configurations from
    ``x.is_cuda``; the subclass survives views, so strided inputs keep the claim."""

    @property
    def is_cuda(self):
        return True


def fake_cuda(shape, dtype=torch.bfloat16, stride=None, offset=0) -> torch.Tensor:
    """A memory-less tensor of ``shape`` (optionally ``stride`` / storage ``offset`` in elements)
    that launchers treat as a CUDA tensor. Its data_ptr is ``offset`` * itemsize, so the JIT's
    16-byte alignment test sees what a fresh (256-byte aligned) CUDA allocation would give."""
    stride = stride if stride is not None else torch.empty(shape, device="meta").stride()
    size = 1 + sum((n - 1) * s for n, s in zip(shape, stride)) + offset
    base = torch.empty(size, dtype=dtype, device="meta")
    return base.as_strided(shape, stride, offset).as_subclass(_FakeCuda)


@dataclass
class Launch:
    kernel: object  # triton.runtime.jit.JITFunction
    grid: tuple | str  # a callable grid (none of ours) is kept as its repr
    args: tuple
    kwargs: dict


@contextlib.contextmanager
def capture():
    """Record every Triton launch made inside the block instead of running it."""
    from triton.runtime.jit import JITFunction

    launches: list[Launch] = []

    def record(kernel, *args, grid, warmup, **kwargs):
        launches.append(Launch(kernel, repr(grid) if callable(grid) else tuple(grid), args, kwargs))

    original = JITFunction.run
    JITFunction.run = record
    try:
        yield launches
    finally:
        JITFunction.run = original


# --------------------------------------------------------------------------------------------
# compile


def target():
    from triton.backends.compiler import GPUTarget

    return GPUTarget("cuda", TARGET_ARCH, 32)


def ast_source(launch: Launch):
    """(ASTSource, options) the JIT would compile for this launch on an sm_90 device."""
    from triton import knobs
    from triton.compiler import ASTSource, make_backend
    from triton.runtime.jit import create_function_from_signature

    kernel = launch.kernel
    backend = make_backend(target())
    kwargs = dict(launch.kwargs)
    # The options JITFunction.run adds before binding (triton 3.9).
    kwargs["debug"] = kwargs.get("debug", kernel.debug) or knobs.runtime.debug
    kwargs["instrumentation_mode"] = knobs.compilation.instrumentation_mode
    kwargs["fpsan_homomorphic_casts"] = knobs.compilation.fpsan_homomorphic_casts
    binder = create_function_from_signature(kernel.signature, kernel.params, backend)
    bound, specialization, options = binder(*launch.args, **kwargs)
    options, signature, constexprs, attrs = kernel._pack_args(backend, kwargs, bound, specialization, options)
    return ASTSource(kernel, signature, constexprs, attrs), options


@dataclass
class KernelStats:
    kernel: str
    grid: tuple | str  # a callable grid (none of ours) is kept as its repr
    num_warps: int
    num_stages: int
    regs: int
    spill_stores: int  # bytes, from ptxas -v
    spill_loads: int
    stack: int  # stack frame bytes
    smem: int  # dynamic shared memory the launch requests (Triton's metadata.shared), bytes
    ptx: dict = field(default_factory=dict)  # PTX_PATTERNS name -> count
    compile_s: float = 0.0
    matches_jit: bool = False  # kernel.warmup on an sm_90 device compiles the same kernel

    @property
    def spills(self) -> int:
        return max(self.spill_stores, self.spill_loads)


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")


def parse_ptxas_log(log: str) -> tuple[int, int, int, int]:
    """(registers, spill store bytes, spill load bytes, stack frame bytes) of a one-kernel log."""
    regs, frame = _PTXAS_REGS.search(log), _PTXAS_FRAME.search(log)
    if regs is None or frame is None:
        raise RuntimeError(f"sm90: unexpected ptxas -v report:\n{log}")
    stack, stores, loads = (int(v) for v in frame.groups())
    return int(regs.group(1)), stores, loads, stack


class _Sm90Driver:
    """Just enough of a Triton driver for JITFunction.run(warmup=True): device 0 is an sm_90."""

    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 0

    def get_current_target(self):
        return target()


def _jit_warmup(launch: Launch):
    """The JIT's own compile of this launch on an sm_90 device (no launch, no GPU)."""
    from triton.runtime import driver

    try:
        previous = driver.active
    except Exception:  # noqa: BLE001 - no GPU: stays unresolved, as it was
        previous = None
    driver.set_active(_Sm90Driver())
    try:
        return launch.kernel.warmup(*launch.args, grid=launch.grid, **launch.kwargs)
    finally:
        driver.set_active(previous)


def compile_launch(launch: Launch) -> KernelStats:
    """Compile one captured launch for sm_90a. Needs a fresh TRITON_CACHE_DIR (ptxas, whose
    report is parsed, does not run on a cache hit) and a throwaway process: the kernel's JIT
    cache keeps the sm_90 binary for device 0."""
    import triton
    from triton import knobs

    src, options = ast_source(launch)
    log = io.StringIO()
    start = time.perf_counter()
    # Triton prints the ptxas -v log when asked to; it is captured rather than rerunning ptxas.
    with knobs.nvidia.scope(), contextlib.redirect_stdout(log):
        knobs.nvidia.dump_ptxas_log = True
        compiled = triton.compile(src, target=target(), options=options.__dict__)
    seconds = time.perf_counter() - start
    regs, stores, loads, stack = parse_ptxas_log(log.getvalue())
    matches_jit = _jit_warmup(launch).hash == compiled.hash
    ptx = compiled.asm["ptx"]
    meta = compiled.metadata
    return KernelStats(
        kernel=launch.kernel.fn.__name__, grid=launch.grid, num_warps=meta.num_warps,
        num_stages=meta.num_stages, regs=regs, spill_stores=stores, spill_loads=loads, stack=stack,
        smem=meta.shared, ptx={k: len(re.findall(p, ptx)) for k, p in PTX_PATTERNS.items()},
        compile_s=round(seconds, 2), matches_jit=matches_jit)


def compile_case(case) -> list[KernelStats]:
    """Run a case (a function calling launchers on fake_cuda tensors) and compile each launch."""
    with capture() as launches:
        case()
    if not launches:
        raise RuntimeError(f"sm90: case {case.__name__} launched no Triton kernel")
    return [compile_launch(launch) for launch in launches]


# --------------------------------------------------------------------------------------------
# orchestration from the test process


def ptxas_path() -> str | None:
    """The ptxas Triton's NVIDIA backend would run for sm_90, or None when it is missing."""
    try:
        from triton import knobs

        path = knobs.nvidia.ptxas.path
    except Exception:  # noqa: BLE001 - a missing or broken backend means: skip
        return None
    return path if path and os.access(path, os.X_OK) else None


def _worker_env(cache_dir: str) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = cache_dir  # fresh: every kernel really goes through ptxas
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    return env


def compile_cases(specs: list[str], jobs: int = 2, timeout: float = 600.0) -> dict[str, dict]:
    """Compile cases named "module:function" in ``jobs`` fresh interpreters without
    TRITON_INTERPRET. Returns spec -> {"kernels": [KernelStats as dict], "error": str | None}."""
    groups = [specs[i::jobs] for i in range(jobs) if specs[i::jobs]]
    results: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="sm90-") as tmp:
        procs = []
        for i, group in enumerate(groups):
            out, log = Path(tmp, f"result{i}.json"), Path(tmp, f"log{i}.txt")
            cmd = [sys.executable, "-m", "tests.kernels.sm90", str(out), *group]
            with log.open("w") as log_file:  # a file, not a pipe: a chatty worker never blocks
                proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=_worker_env(os.path.join(tmp, f"cache{i}")),
                                        stdout=log_file, stderr=subprocess.STDOUT)
            procs.append((proc, out, log, group))
        deadline = time.monotonic() + timeout
        for proc, out, log, group in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            if proc.returncode != 0 or not out.exists():
                error = f"sm90 worker exited with {proc.returncode}:\n{log.read_text()[-4000:]}"
                results.update({spec: {"kernels": [], "error": error} for spec in group})
                continue
            results.update(json.loads(out.read_text()))
    return results


def _run_spec(spec: str) -> dict:
    module, name = spec.split(":")
    try:
        stats = compile_case(getattr(importlib.import_module(module), name))
        return {"kernels": [asdict(s) for s in stats], "error": None}
    except Exception as exc:  # noqa: BLE001 - reported per case, the other cases still run
        return {"kernels": [], "error": f"{type(exc).__name__}: {str(exc)[-4000:]}"}


def main(argv: list[str]) -> None:
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("sm90: run without TRITON_INTERPRET=1 (the kernels must be real JITFunctions)")
    out, specs = argv[0], argv[1:]
    Path(out).write_text(json.dumps({spec: _run_spec(spec) for spec in specs}))


if __name__ == "__main__":
    main(sys.argv[1:])
