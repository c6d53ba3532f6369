"""Builds ``ltxengine._C`` from csrc/ as plain C++ that runs its kernels on the CPU (emu.h).

Every csrc source is copied into ``out_dir/src`` with three rewrites, each checked so that code
the rewrite does not understand stops the build with the offending line instead of compiling
into something that silently skips a kernel:

- ``callee<<<grid, block[, smem[, stream]]>>>(args)`` becomes
  ``emu_launch("callee", callee, grid, block, smem, stream, args)`` (line count kept, so compile
  errors and sanitizer reports point at csrc lines);
- ``#ifdef __CUDACC__`` / ``#ifndef`` / ``defined(__CUDACC__)`` take the CUDA branch; any other
  use of ``__CUDACC__*`` or ``__CUDA_ARCH__`` is refused (the emulation cannot pick a branch);
- ``__launch_bounds__(n) kernel(...) {...}`` gets a registration after its body, so a launch
  with more threads than ``n`` fails here as it does on a GPU.

.cu files listed in EXCLUDED are not compiled; their launchers are replaced by stubs that raise.
Objects are compiled with g++ at -O1, two at a time, and linked into one module.
"""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
CSRC = HERE.parents[1] / "csrc"
EMU_H = HERE / "emu.h"
SOURCES = (".h", ".cuh", ".hpp", ".cu", ".cpp")
JOBS = 2  # the CI machine's cores
CUDA_HEADERS = ("cuda_runtime.h", "cuda_bf16.h", "cuda_fp8.h")


@dataclass(frozen=True)
class Exclusion:
    reason: str
    stub: str  # C++ that defines what the excluded file's callers link against


EXCLUDED = {
    "fp8_gemm.cu": Exclusion(
        reason="Hopper wgmma, TMA and mbarrier inline PTX have no CPU emulation; the kernel is checked on a GPU "
               "by tests/kernels/test_fp8_gemm_cuda.py (its host checks in fp8_gemm.cpp are still compiled here)",
        stub="""#include <stdexcept>
#include "fp8_gemm.h"
namespace ltxe {
cudaError_t launch_fp8_gemm(const void*, const void*, const float*, const float*, const void*, void*, int64_t,
                            int64_t, int64_t, int64_t, bool, bool, cudaStream_t) {
  throw std::runtime_error("emu: fp8_gemm is not emulated (wgmma/TMA); "
                           "run tests/kernels/test_fp8_gemm_cuda.py on a GPU");
}
}  // namespace ltxe
"""),
}


class RewriteError(ValueError):
    """A construct in csrc/ that the emulation's source rewrite does not handle."""


class ToolchainMissing(RuntimeError):
    """g++ or the CUDA headers are not installed (the tests skip with this message)."""


class BuildError(RuntimeError):
    """A compile or link step failed; the message carries the command and the compiler output."""


# ---- source rewrite ---------------------------------------------------------------------------

def mask_code(text: str) -> str:
    """``text`` with comments and the insides of string/char literals blanked (same length, newlines
    kept), so the scans below see only code."""
    out, i, n = list(text), 0, len(text)

    def blank(start: int, end: int) -> None:
        for j in range(start, end):
            if out[j] != "\n":
                out[j] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i) or text.startswith("/*", i):
            end = text.find("\n" if c == "/" and text[i + 1] == "/" else "*/", i + 2)
            end = n if end < 0 else end + (0 if text[i + 1] == "/" else 2)
            blank(i, end)
            i = end
        elif c in "\"'" and not (c == "'" and i and text[i - 1].isalnum()):  # 1'000 is a number
            j = i + 1
            while j < n and text[j] not in (c, "\n"):
                j += 2 if text[j] == "\\" else 1
            blank(i + 1, min(j, n))
            i = j + 1
        else:
            i += 1
    return "".join(out)


def _fail(path: str, text: str, pos: int, why: str) -> RewriteError:
    line = text.count("\n", 0, pos) + 1
    source = text.splitlines()[line - 1] if text else ""
    return RewriteError(f"{path}:{line}: {why}\n    {source.strip()}")


def _match(masked: str, pos: int) -> int:
    """Index of the bracket closing the one at ``pos`` (parens, brackets and braces nest), or -1."""
    depth = 0
    for i in range(pos, len(masked)):
        depth += 1 if masked[i] in "([{" else -1 if masked[i] in ")]}" else 0
        if depth == 0:
            return i
    return -1


def _close_config(masked: str, start: int) -> int:
    """Index of the ``>>>`` that ends a launch configuration starting at ``start``, or -1."""
    depth = 0
    for i in range(start, len(masked)):
        depth += 1 if masked[i] in "([{" else -1 if masked[i] in ")]}" else 0
        if depth == 0 and masked.startswith(">>>", i):
            return i
    return -1


def _callee_start(masked: str, end: int) -> int:
    """Start of ``ns::kernel<T, 4>`` ending at ``end`` (exclusive), or -1."""
    i = end
    while i > 0 and masked[i - 1].isspace():
        i -= 1
    if i > 0 and masked[i - 1] == ">":  # template arguments
        depth = 0
        while i > 0:
            i -= 1
            depth += {">": 1, "<": -1}.get(masked[i], 0)
            if depth == 0:
                break
        if depth:
            return -1
    m = re.search(r"(?:::\s*)?[A-Za-z_]\w*(?:\s*::\s*[A-Za-z_]\w*)*\s*$", masked[:i])
    return m.start() if m else -1


def _split_top(masked: str, start: int, end: int) -> list[tuple[int, int]]:
    """Spans of the comma-separated items of masked[start:end] at bracket depth 0."""
    spans, depth, begin = [], 0, start
    for i in range(start, end):
        c = masked[i]
        depth += 1 if c in "([{" else -1 if c in ")]}" else 0
        if c == "," and depth == 0:
            spans.append((begin, i))
            begin = i + 1
    return spans + [(begin, end)]


def _rewrite_launches(text: str, masked: str, path: str) -> tuple[list[tuple[int, int, str]], list[str]]:
    edits, names = [], []
    for m in re.finditer(r"<<<", masked):
        start = _callee_start(masked, m.start())
        if start < 0:
            raise _fail(path, text, m.start(), "cannot rewrite this kernel launch: no kernel name before <<<")
        close = _close_config(masked, m.end())
        if close < 0:
            raise _fail(path, text, m.start(), "cannot rewrite this kernel launch: no matching >>>")
        cfg = [text[a:b].strip() for a, b in _split_top(masked, m.end(), close)]
        if not 2 <= len(cfg) <= 4 or not all(cfg):
            raise _fail(path, text, m.start(), "cannot rewrite this kernel launch: expected <<<grid, block[, smem"
                                               "[, stream]]>>>")
        paren = close + 3
        while paren < len(masked) and masked[paren].isspace():
            paren += 1
        if paren >= len(masked) or masked[paren] != "(" or _match(masked, paren) < 0:
            raise _fail(path, text, m.start(), "cannot rewrite this kernel launch: no argument list after >>>")
        has_args = masked[paren + 1:_match(masked, paren)].strip() != ""
        callee = " ".join(text[start:m.start()].split())
        cfg += ["0", "cudaStream_t{}"][len(cfg) - 2:]
        new = f'emu_launch("{callee}", {callee}, {", ".join(" ".join(c.split()) for c in cfg)}'
        new += (", " if has_args else "") + "\n" * text.count("\n", start, paren + 1)
        edits.append((start, paren + 1, new))
        names.append(callee)
    return edits, names


def _register_bounds(text: str, masked: str, path: str) -> tuple[list[tuple[int, int, str]], list[str]]:
    edits, names = [], []
    for m in re.finditer(r"\b__launch_bounds__\s*\(", masked):
        args_end = _match(masked, m.end() - 1)
        decl = re.match(r"\s*([A-Za-z_]\w*)\s*\(", masked[args_end + 1:]) if args_end > 0 else None
        if decl is None:
            raise _fail(path, text, m.start(), "cannot register __launch_bounds__: expected `__launch_bounds__(n) "
                                               "kernel_name(params)`")
        head = masked[max(masked.rfind(";", 0, m.start()), masked.rfind("}", 0, m.start())) + 1:m.start()]
        if re.search(r"\btemplate\b", head):
            raise _fail(path, text, m.start(), "cannot register __launch_bounds__ of a kernel template (extend "
                                               "tests/cuda_emu/build.py)")
        params_close = _match(masked, args_end + decl.end())
        body = params_close + 1
        while body < len(masked) and masked[body].isspace():
            body += 1
        if body >= len(masked) or masked[body] != "{":
            raise _fail(path, text, m.start(), "cannot register __launch_bounds__: expected the kernel's body "
                                               "(put the bounds on the definition)")
        end = _match(masked, body)
        name, bound = decl.group(1), " ".join(text[m.end():args_end].split())
        edits.append((end + 1, end + 1, f" static const bool emu_bounds_{name}_{len(names)} = ::emu::register_bounds("
                                        f"reinterpret_cast<const void*>(&{name}), ::emu::first_of({bound}));"))
        names.append(name)
    return edits, names


_GUARD = re.compile(r"^(\s*#\s*)(ifdef|ifndef)(\s+)__CUDACC__\s*$")
_DEFINED = re.compile(r"\bdefined\s*(\(\s*__CUDACC__\s*\)|__CUDACC__\b)")
_CUDA_MACRO = re.compile(r"\b__CUDA(?:CC\w*|_ARCH\w*)")


def _rewrite_guards(text: str, masked: str, path: str) -> list[tuple[int, int, str]]:
    edits, pos = [], 0
    for line in masked.splitlines(keepends=True):
        m = _GUARD.match(line.rstrip("\n"))
        if m:
            edits.append((pos, pos + len(line.rstrip("\n")), f"#if {1 if m.group(2) == 'ifdef' else 0}"))
        elif re.match(r"\s*#\s*(el)?if\b", line):
            edits += [(pos + d.start(), pos + d.end(), "1") for d in _DEFINED.finditer(line)]
        stray = _CUDA_MACRO.search(_DEFINED.sub("", line)) if not m else None
        if stray:
            raise _fail(path, text, pos + stray.start(), f"{stray.group()} is not handled by the emulation (only "
                                                         "#ifdef/#ifndef/defined(__CUDACC__) are)")
        pos += len(line)
    return edits


def rewrite_source(text: str, path: str) -> tuple[str, list[str]]:
    """(rewritten text, kernels launched in it in order). Raises RewriteError with the line."""
    masked = mask_code(text)
    launches, names = _rewrite_launches(text, masked, path)
    bounds, _ = _register_bounds(text, masked, path)
    edits = sorted(launches + bounds + _rewrite_guards(text, masked, path))
    out, last = [], 0
    for start, end, new in edits:
        out += [text[last:start], new]
        last = end
    return "".join(out) + text[last:], names


@dataclass
class Prepared:
    """What prepare_sources wrote: translation units to compile and the launches it rewrote."""
    units: list[Path] = field(default_factory=list)
    launches: dict[str, list[str]] = field(default_factory=dict)  # rewritten file name -> kernels launched
    excluded: list[str] = field(default_factory=list)


def prepare_sources(csrc: Path, dst: Path) -> Prepared:
    """Rewrites csrc's sources into ``dst`` and writes the stubs of the excluded files there."""
    dst.mkdir(parents=True, exist_ok=True)
    prepared = Prepared()
    for src in sorted(p for p in csrc.iterdir() if p.suffix in SOURCES):
        if src.name in EXCLUDED:
            prepared.excluded.append(src.name)
            stub = dst / f"emu_stub_{src.stem}.cpp"
            stub.write_text(EXCLUDED[src.name].stub)
            prepared.units.append(stub)
            continue
        text, prepared.launches[src.name] = rewrite_source(src.read_text(), str(src))
        (dst / src.name).write_text(text)
        if src.suffix in (".cu", ".cpp"):
            prepared.units.append(dst / src.name)
    return prepared


# ---- toolchain and compile --------------------------------------------------------------------

def _cuda_include_candidates() -> list[Path]:
    dirs = [Path(os.environ[v]) / "include" for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    nvcc = shutil.which("nvcc")
    if nvcc:  # nvcc may be a wrapper script: ask it where its toolkit lives
        dry = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", "/dev/null"], capture_output=True, text=True)
        for line in (dry.stdout + dry.stderr).splitlines():
            if "TOP=" in line:
                top = Path(line.split("TOP=", 1)[1].strip().strip('"'))
                dirs += [top / "include", top / "targets" / "x86_64-linux" / "include"]
        dirs.append(Path(nvcc).resolve().parent.parent / "include")
    return dirs + [Path("/usr/local/cuda/include")]


def find_toolchain() -> tuple[str, Path]:
    """(g++, CUDA include dir), or ToolchainMissing saying what is absent."""
    gxx = shutil.which("g++")
    if gxx is None:
        raise ToolchainMissing("g++ not found on PATH (needed to compile the emulated CUDA kernels)")
    for inc in _cuda_include_candidates():
        if all((inc / h).is_file() for h in CUDA_HEADERS):
            return gxx, inc
    raise ToolchainMissing(f"CUDA headers {', '.join(CUDA_HEADERS)} not found (looked next to nvcc, in $CUDA_HOME "
                           "and /usr/local/cuda/include)")


def _commands(gxx: str, cuda_inc: Path, prepared: Prepared, obj: Path) -> list[tuple[list[str], Path]]:
    import pybind11

    base = [gxx, "-std=c++17", "-O1", "-g0", "-fPIC", "-isystem", str(cuda_inc), "-isystem", pybind11.get_include(),
            "-isystem", sysconfig.get_paths()["include"], "-I", str(prepared.units[0].parent),
            # Own pybind11 internals: the real ltxengine._C may be loaded in the same process and
            # registers the same C++ types.
            '-DPYBIND11_COMPILER_TYPE="_ltxe_cuda_emu"']
    runtime = obj.parent / "emu_runtime.cpp"
    runtime.write_text(f'#define LTXE_EMU_RUNTIME\n#include "{EMU_H}"\n')
    cmds = [(base + ["-c", str(runtime), "-o", str(obj / "emu_runtime.o")], obj / "emu_runtime.o")]
    for unit in prepared.units:
        flags = ["-include", str(EMU_H)]
        if unit.suffix == ".cu":  # device code: GPU-fatal accesses become reported failures
            flags += ["-x", "c++", "-fsanitize=alignment,null,bounds"]
        out = obj / (unit.name + ".o")
        cmds.append((base + flags + ["-c", str(unit), "-o", str(out)], out))
    # pybind11's bindings take longest: start them first so the other job does the rest.
    return sorted(cmds, key=lambda c: "bindings" not in c[1].name)


def _run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise BuildError(f"command failed ({done.returncode}): {' '.join(cmd)}\n{done.stderr[-6000:]}")


def build(out_dir, csrc: Path = CSRC):
    """Compiles the emulated extension into ``out_dir`` and returns the loaded module (also
    carrying ``__emu_prepared__``, the Prepared record). Raises ToolchainMissing, RewriteError
    or BuildError."""
    gxx, cuda_inc = find_toolchain()
    out_dir = Path(out_dir)
    obj = out_dir / "obj"
    obj.mkdir(parents=True, exist_ok=True)
    prepared = prepare_sources(Path(csrc), out_dir / "src")
    selftest = out_dir / "src" / "emu_selftest.cu"
    selftest.write_text(rewrite_source(SELFTEST_CU, "emu_selftest.cu")[0])
    prepared.units.append(selftest)
    cmds = _commands(gxx, cuda_inc, prepared, obj)
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
        for job in [pool.submit(_run, cmd) for cmd, _ in cmds]:
            job.result()
    lib = out_dir / f"_C{sysconfig.get_config_var('EXT_SUFFIX')}"
    _run([gxx, "-shared", "-fPIC", *(str(o) for _, o in cmds), "-o", str(lib)])
    module = load(lib)
    module.__emu_prepared__ = prepared
    return module


def load(lib: Path):
    """Imports a built emulated module (its init symbol is PyInit__C, so its name is _C)."""
    spec = importlib.util.spec_from_file_location("_C", lib)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# Kernels that check the emulator itself, launched through the same rewrite (the two-argument
# <<<grid, block>>> form included). ltxe_emu_selftest(case, out) returns "" or the error text.
SELFTEST_CU = r"""
#include <cstdint>
#include <stdexcept>
#include <string>

__global__ void emu_shuffles(int* out) {  // out: (4, blockDim.x)
  const int t = threadIdx.x, n = blockDim.x;
  out[t] = __shfl_xor_sync(0xffffffffu, t, 5);
  out[n + t] = __shfl_down_sync(0xffffffffu, t, 3, 16);
  out[2 * n + t] = __shfl_up_sync(0xffffffffu, t, 2);
  out[3 * n + t] = __shfl_sync(0xffffffffu, t * 10, 7);
}

__global__ void emu_shared_sum(int* out, bool barrier) {  // out: (gridDim.x, blockDim.x)
  __shared__ int part[32];
  if ((threadIdx.x & 31) == 0) part[threadIdx.x >> 5] = blockIdx.x + 1;
  if (barrier) __syncthreads();
  int s = 0;
  for (unsigned w = 0; w < blockDim.x / 32; ++w) s += part[w];
  out[blockIdx.x * blockDim.x + threadIdx.x] = s;
}

__global__ void emu_early_exit(int* out) {
  if (threadIdx.x >= 32) return;
  __syncthreads();
  out[threadIdx.x] = 1;
}

__global__ void emu_bad_warp_op(int* out, int mode) {
  const int t = threadIdx.x;
  if (mode == 0) out[t] = __shfl_xor_sync(0xfffffffeu, t, 1);  // lane 0 outside its own mask
  if (mode == 1 && t < 16) out[t] = __shfl_sync(0xffffu, t, 20);  // source outside the mask
  if (mode == 2) __syncwarp(t == 0 ? 0x3u : 0xffffffffu);  // lanes disagree on the mask
}

__global__ void emu_misaligned(int* out) {
  const char* p = reinterpret_cast<const char*>(out) + 8;
  const uint4 v = *reinterpret_cast<const uint4*>(p);
  out[threadIdx.x + 8] = static_cast<int>(v.x);
}

__global__ void emu_load(const int* p, int* out, int index) {
  int local[4] = {1, 2, 3, 4};
  out[threadIdx.x] = *p + local[index];
}

__global__ void emu_throws(int*) { throw std::runtime_error("boom"); }

__global__ void __launch_bounds__(64) emu_bounded(int* out) { out[threadIdx.x] = 1; }

__global__ void emu_nested(int* out) { emu_bounded<<<1, 32>>>(out); }

static void run(const std::string& c, int* out) {
  if (c == "shuffles") emu_shuffles<<<1, 64>>>(out);
  else if (c == "race") emu_shared_sum<<<2, 64, 0, nullptr>>>(out, false);
  else if (c == "no_race") emu_shared_sum<<<2, 64>>>(out, true);
  else if (c == "early_exit") emu_early_exit<<<1, 64>>>(out);
  else if (c == "partial_warp") emu_shuffles<<<1, 48>>>(out);
  else if (c == "mask_without_caller") emu_bad_warp_op<<<1, 32>>>(out, 0);
  else if (c == "source_outside_mask") emu_bad_warp_op<<<1, 32>>>(out, 1);
  else if (c == "mixed_masks") emu_bad_warp_op<<<1, 32>>>(out, 2);
  else if (c == "misaligned") emu_misaligned<<<1, 32>>>(out);
  else if (c == "null") emu_load<<<1, 32>>>(nullptr, out, 0);
  else if (c == "index_out_of_bounds") emu_load<<<1, 32>>>(out, out, 4);
  else if (c == "throws") emu_throws<<<1, 32>>>(out);
  else if (c == "nested_launch") emu_nested<<<1, 32>>>(out);
  else if (c == "dynamic_smem") emu_bounded<<<1, 32, 64>>>(out);
  else if (c == "sync_outside_kernel") __syncthreads();
  else if (c == "over_bounds") emu_bounded<<<1, 96>>>(out);
  else if (c == "too_many_threads") emu_bounded<<<1, 2048>>>(out);
  else if (c == "bounded") emu_bounded<<<1, 64>>>(out);
  else throw std::invalid_argument("unknown self-test " + c);
}

extern "C" const char* ltxe_emu_selftest(const char* which, int* out) {
  static std::string error;
  error.clear();
  try {
    run(which, out);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) error = std::string("launch error: ") + cudaGetErrorString(err);
  } catch (const std::exception& e) {
    error = e.what();
  }
  return error.c_str();
}
"""

if __name__ == "__main__":  # python -m tests.cuda_emu.build OUT_DIR: build and report
    mod = build(sys.argv[1] if len(sys.argv) > 1 else "/tmp/ltxe_cuda_emu")
    print(mod.__file__, mod.__emu_prepared__.launches)
