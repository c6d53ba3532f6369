"""Build script: compiles csrc/ into ``ltxengine._C`` when nvcc is available.

The extension is plain CUDA C++ bound with pybind11. It does not include torch headers: host
wrappers take raw device pointers, sizes and a stream handle from the Python side. That keeps
the build independent of which torch wheel is installed (a CPU wheel has no CUDA headers) and
makes a compile take seconds, so CI can check csrc/ on a machine without a GPU.

Set LTXENGINE_SKIP_CUDA=1 to skip the extension even when nvcc is present. LTXENGINE_CUDA_ARCHS
(default "90a") picks the SM targets, separated by ';'.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_namespace_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).parent.resolve()
CSRC = ROOT / "csrc"


def find_nvcc():
    if os.environ.get("LTXENGINE_SKIP_CUDA", "0") not in ("", "0"):
        return None
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if cuda_home and (Path(cuda_home) / "bin" / "nvcc").exists():
        return str(Path(cuda_home) / "bin" / "nvcc")
    return shutil.which("nvcc")


def cuda_lib_dir(nvcc):
    # nvcc may be a wrapper on PATH; ask it where its toolkit lives.
    out = subprocess.run([nvcc, "--dryrun", "-x", "cu", "-c", "/dev/null"], capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():
        if "TOP=" in line:
            top = line.split("TOP=", 1)[1].strip()
            for cand in ("lib64", "lib", "targets/x86_64-linux/lib"):
                if (Path(top) / cand / "libcudart_static.a").exists():
                    return str(Path(top) / cand)
    for cand in ("/usr/local/cuda/lib64", "/usr/local/cuda/targets/x86_64-linux/lib"):
        if Path(cand, "libcudart_static.a").exists():
            return cand
    raise RuntimeError(f"setup.py: found nvcc at {nvcc} but not libcudart_static.a next to it")


class BuildCudaExt(build_ext):
    """Compiles .cu files with nvcc and .cpp files with the host compiler, links statically
    against cudart so the module imports on a machine without a CUDA driver."""

    def build_extension(self, ext):
        nvcc = find_nvcc()
        import pybind11

        archs = os.environ.get("LTXENGINE_CUDA_ARCHS", "90a").split(";")
        gencode = [f"-gencode=arch=compute_{a},code=sm_{a}" for a in archs if a]
        build_tmp = Path(self.build_temp) / ext.name
        build_tmp.mkdir(parents=True, exist_ok=True)
        includes = [f"-I{pybind11.get_include()}", f"-I{CSRC}"] + [
            f"-I{p}" for p in self.compiler.include_dirs
        ]
        import sysconfig

        includes.append(f"-I{sysconfig.get_paths()['include']}")
        objects = []
        for rel in ext.sources:
            src = str(ROOT / rel)
            obj = build_tmp / (Path(src).name + ".o")
            common = ["-O3", "-std=c++17", "-Xcompiler=-fPIC"]
            if src.endswith(".cu"):
                cmd = [nvcc, *gencode, *common, "--expt-relaxed-constexpr", *includes, "-c", src, "-o", str(obj)]
            else:
                cmd = [nvcc, "-x", "cu", *gencode, *common, *includes, "-c", src, "-o", str(obj)]
            self.announce(" ".join(cmd), level=2)
            subprocess.check_call(cmd)
            objects.append(str(obj))
        out = Path(self.get_ext_fullpath(ext.name))
        out.parent.mkdir(parents=True, exist_ok=True)
        libdir = cuda_lib_dir(nvcc)
        cmd = [nvcc, *gencode, "-shared", "-Xcompiler=-fPIC", *objects, "-o", str(out),
               f"-L{libdir}", "-lcudart_static", "-Xlinker=-lrt", "-Xlinker=-ldl", "-Xlinker=-lpthread"]
        self.announce(" ".join(cmd), level=2)
        subprocess.check_call(cmd)


# Discovered, not listed by hand: a hand list once left out ltxengine/executor and ltxengine/quant, so a
# non-editable install could not be imported. Namespace discovery because ltxengine/models has no
# __init__.py. kernels/ is added under its installed name (package-dir in pyproject.toml maps it).
PACKAGES = [*find_namespace_packages(str(ROOT), include=["ltxengine", "ltxengine.*"]), "ltxengine.kernels"]

ext_modules = []
cmdclass = {}
if find_nvcc() is not None:
    # setuptools requires sources relative to setup.py; build_extension resolves them against ROOT.
    sources = [str(p.relative_to(ROOT)) for p in sorted(CSRC.glob("*.cu")) + sorted(CSRC.glob("*.cpp"))]
    ext_modules = [Extension("ltxengine._C", sources=sources)]
    cmdclass = {"build_ext": BuildCudaExt}
else:
    print("setup.py: nvcc not found or LTXENGINE_SKIP_CUDA set; building without ltxengine._C", file=sys.stderr)

setup(packages=PACKAGES, ext_modules=ext_modules, cmdclass=cmdclass)
