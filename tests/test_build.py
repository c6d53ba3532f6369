"""The csrc/ build path: setup.py compiles ltxengine._C with nvcc (when present) and the module
imports and validates its arguments on a machine without a GPU."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built_ext(tmp_path_factory):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not on PATH: the CUDA extension build cannot be checked here")
    out = tmp_path_factory.mktemp("ext")
    env = dict(os.environ, LTXENGINE_SKIP_CUDA="0")
    subprocess.run([sys.executable, "setup.py", "-q", "build_ext", "--build-lib", str(out),
                    "--build-temp", str(out / "tmp")], cwd=ROOT, env=env, check=True, capture_output=True)
    return out


def run_in(path, code):
    return subprocess.run([sys.executable, "-c", code], cwd=path, capture_output=True, text=True)


def test_extension_compiles_and_imports(built_ext):
    r = run_in(built_ext, "import ltxengine._C as C; print(C.build_info()['cuda_version'])")
    assert r.returncode == 0, r.stderr
    assert int(r.stdout) >= 12000


def test_skip_env_builds_nothing(tmp_path):
    env = dict(os.environ, LTXENGINE_SKIP_CUDA="1")
    r = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path)], cwd=ROOT, env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "building without ltxengine._C" in r.stderr
    assert not list(tmp_path.rglob("_C*.so"))


# ---- the row kernels and fp8 quantization (csrc/qk_norm_rope, ada_norm, gated_residual, fp8_quantize)

NEW_FUNCTIONS = ("Rows", "Rope", "qk_norm_rope", "ada_norm", "gated_residual", "quantize_fp8_static",
                 "quantize_fp8_dynamic")

# Valid calls (every address aligned, shapes consistent): they fail only for want of a GPU.
# Sizes: batch 2, q 3 tokens, k 5 tokens, dim 64; ada/gated (2, 3, 40); quantize (3, 64).
_HOST_CALLS = """
import json, sys
import ltxengine._C as C
R, Rope = C.Rows, C.Rope

def qk(**kw):
    a = dict(q=R(4096, 192, 64), k=R(8192, 320, 64), q_out=R(16384, 192, 64), k_out=R(32768, 320, 64),
             q_weight=1024, k_weight=2048, weight_fp32=False, q_rope=Rope(), k_rope=Rope(), q_scale=0, k_scale=0,
             batch=2, q_tokens=3, k_tokens=5, dim=64, eps=1e-6)
    a.update(kw)
    return C.qk_norm_rope(**a)

def ada(**kw):
    a = dict(x=R(4096, 120, 40), shift=R(), scale=R(), out=R(8192, 120, 40), batch=2, tokens=3, dim=40, eps=1e-6,
             kind="rms")
    a.update(kw)
    return C.ada_norm(**a)

def gated(**kw):
    a = dict(x=R(4096, 120, 40), y=R(8192, 120, 40), gate=R(), out=R(16384, 120, 40), batch=2, tokens=3, dim=40)
    a.update(kw)
    return C.gated_residual(**a)

def static(**kw):
    a = dict(x=4096, x_row_stride=64, out=8192, out_row_stride=64, scale=512, scale_row_stride=0, rows=3, cols=64)
    a.update(kw)
    return C.quantize_fp8_static(**a)

def dynamic(**kw):
    a = dict(x=4096, x_row_stride=64, out=8192, out_row_stride=64, scale_out=512, per_row=True, rows=3, cols=64)
    a.update(kw)
    return C.quantize_fp8_dynamic(**a)

ropes = dict(inter=Rope("interleaved", 65536, 131072, 0, 0, 64, 1), split=Rope("split", 65536, 131072, 0, 192, 64, 2))
results = {}
for name, code in json.loads(sys.argv[1]).items():
    try:
        eval(code)
        results[name] = "returned"
    except Exception as e:
        results[name] = f"{type(e).__name__}: {e}"
print(json.dumps(results))
"""

# One case per check class: (call, expected ValueError text). Every one fails before any device call.
HOST_CHECKS = {
    "qk_dim": ("qk(dim=40)", "qk_norm_rope: dim must be a positive multiple of 16 up to 16384, got 40"),
    "qk_tokens": ("qk(q_tokens=0)", "qk_norm_rope: q_tokens must be positive, got 0"),
    "qk_rows_limit": ("qk(batch=2**30, q_tokens=1, k_tokens=1)",
                      "batch * (q_tokens + k_tokens) must be < 2^31 (one block per row), got 2147483648"),
    "qk_eps": ("qk(eps=-1.0)", "qk_norm_rope: eps must be finite and non-negative, got -1"),
    "qk_alignment": ("qk(q=R(4100, 192, 64))", "qk_norm_rope: q.ptr must be non-null and 16-byte aligned, got 4100"),
    "qk_stride": ("qk(k=R(8192, 320, 68))",
                  "qk_norm_rope: k.token_stride must be a non-negative multiple of 8 elements, got 68"),
    "qk_out_rows_overlap": ("qk(q_out=R(16384, 192, 32))",
                            "qk_norm_rope: q_out.token_stride must be >= dim (64) for an output (rows may not "
                            "overlap), got 32"),
    "qk_out_samples_overlap": ("qk(k_out=R(32768, 64, 64))",
                               "qk_norm_rope: k_out.batch_stride must be >= (tokens - 1) * token_stride + dim "
                               "(320) for an output (samples may not overlap), got 64"),
    "qk_dtype": ("qk(q=R(4096, 192, 64, True))", "qk_norm_rope: q/k must be bfloat16, got float32"),
    "qk_weight": ("qk(k_weight=0)", "qk_norm_rope: q_weight/k_weight must be non-null and 16-byte aligned, got 0"),
    "qk_rope_layout": ("qk(q_rope=Rope('spiral', 0, 0, 0, 0, 0, 1))",
                       "qk_norm_rope: q_rope.layout must be 'none', 'interleaved' or 'split', got 'spiral'"),
    "qk_rope_layouts_differ": ("qk(q_rope=ropes['inter'])",
                               "qk_norm_rope: k_rope.layout must equal q_rope.layout ('interleaved'), got 'none'"),
    "qk_rope_table": ("qk(q_rope=Rope('interleaved', 0, 131072, 0, 0, 64, 1), k_rope=ropes['inter'])",
                      "qk_norm_rope: q_rope.cos/sin must be non-null and 16-byte aligned, got 0"),
    "qk_rope_strides": ("qk(q_rope=ropes['split'], k_rope=Rope('split', 65536, 131072, 0, 192, 12, 2))",
                        "qk_norm_rope: k_rope strides must be non-negative multiples of 8 elements, got 12"),
    "qk_rope_heads": ("qk(q_rope=Rope('split', 65536, 131072, 0, 192, 64, 3), k_rope=ropes['split'])",
                      "qk_norm_rope: q_rope.heads must divide dim (64) into heads whose halves are multiples of 8, "
                      "got 3"),
    "qk_fp8_scales": ("qk(q_scale=256)",
                      "qk_norm_rope: k_scale must be given exactly when q_scale is (fp8 output), got 0"),
    "ada_kind": ("ada(kind='group')", "ada_norm: kind must be 'rms' or 'layer', got 'group'"),
    "ada_dim": ("ada(dim=12)", "ada_norm: dim must be a positive multiple of 8 up to 16384, got 12"),
    "ada_tokens": ("ada(tokens=0)", "ada_norm: tokens must be positive, got 0"),
    "ada_eps": ("ada(eps=float('nan'))", "ada_norm: eps must be finite and non-negative, got nan"),
    "ada_modulation_stride": ("ada(shift=R(65536, 240, 12))",
                              "ada_norm: shift.token_stride must be a non-negative multiple of 8 elements, got 12"),
    "ada_modulation_alignment": ("ada(scale=R(65544 + 2, 240, 0))",
                                 "ada_norm: scale.ptr must be non-null and 16-byte aligned, got 65546"),
    "ada_out_overlap": ("ada(out=R(8192, 120, 8))", "ada_norm: out.token_stride must be >= dim (40)"),
    "ada_dtype": ("ada(x=R(4096, 120, 40, True))", "ada_norm: x/out must be bfloat16, got float32"),
    "gated_dim": ("gated(dim=12)", "gated_residual: dim must be a positive multiple of 8, got 12"),
    "gated_batch": ("gated(batch=0)", "gated_residual: batch must be positive, got 0"),
    "gated_gate_alignment": ("gated(gate=R(4104, 0, 0))",
                             "gated_residual: gate.ptr must be non-null and 16-byte aligned, got 4104"),
    "gated_out_overlap": ("gated(out=R(16384, 40, 40))", "gated_residual: out.batch_stride must be >= (tokens - 1)"),
    "gated_dtype": ("gated(y=R(8192, 120, 40, True))", "gated_residual: x/y/out must be bfloat16, got float32"),
    "quant_cols": ("static(cols=12)", "quantize_fp8_static: cols must be a positive multiple of 8, got 12"),
    "quant_rows": ("dynamic(rows=0)", "quantize_fp8_dynamic: rows must be in [1, 2^31) (one block per row), got 0"),
    "quant_x_alignment": ("static(x=4100)", "quantize_fp8_static: x must be non-null and 16-byte aligned, got 4100"),
    "quant_x_stride": ("static(x_row_stride=32)",
                       "quantize_fp8_static: x_row_stride must be a multiple of 8 elements and >= cols (64), got 32"),
    "quant_out_alignment": ("dynamic(out=8196)",
                            "quantize_fp8_dynamic: out must be non-null and 8-byte aligned, got 8196"),
    "quant_out_stride": ("dynamic(out_row_stride=60)",
                         "quantize_fp8_dynamic: out_row_stride must be a multiple of 8 elements and >= cols (64), "
                         "got 60"),
    "quant_scale": ("static(scale=0)", "quantize_fp8_static: scale must be non-null and 4-byte aligned, got 0"),
    "quant_scale_stride": ("static(scale_row_stride=2)",
                           "quantize_fp8_static: scale_row_stride must be 0 (per-tensor scale) or 1 (per-row "
                           "scales), got 2"),
    "quant_scale_out": ("dynamic(scale_out=2)",
                        "quantize_fp8_dynamic: scale_out must be non-null and 4-byte aligned, got 2"),
}

# Valid calls of every new entry point: they reach the device check.
DEVICE_CALLS = {
    "qk_none": "qk()",
    "qk_interleaved_fp8": "qk(q_rope=ropes['inter'], k_rope=ropes['inter'], q_scale=256, k_scale=260)",
    "qk_split_fp32_weight": "qk(q_rope=ropes['split'], k_rope=ropes['split'], weight_fp32=True)",
    "ada_layer_modulated": "ada(kind='layer', shift=R(65536, 240, 0, True), scale=R(65568, 240, 0, True))",
    "gated_gate": "gated(gate=R(65536, 240, 40))",
    "gated_no_gate": "gated()",
    "quant_static_per_row": "static(scale_row_stride=1)",
    "quant_dynamic_per_tensor": "dynamic(per_row=False)",
}


@pytest.fixture(scope="module")
def host_results(built_ext):
    import json

    calls = {**{k: v[0] for k, v in HOST_CHECKS.items()}, **DEVICE_CALLS}
    r = subprocess.run([sys.executable, "-c", _HOST_CALLS, json.dumps(calls)], cwd=built_ext, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_new_kernels_are_exported(built_ext):
    r = run_in(built_ext, f"import ltxengine._C as C; print(all(hasattr(C, n) for n in {NEW_FUNCTIONS!r}))")
    assert r.stdout.strip() == "True", r.stdout + r.stderr


@pytest.mark.parametrize("case", sorted(HOST_CHECKS))
def test_host_wrappers_reject_bad_arguments_before_the_device(host_results, case):
    assert host_results[case].startswith("ValueError: "), host_results[case]
    assert HOST_CHECKS[case][1] in host_results[case]


@pytest.mark.parametrize("case", sorted(DEVICE_CALLS))
def test_valid_calls_report_missing_gpu(host_results, case):
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU is present: the no-device message is not reachable")
    assert host_results[case].startswith("RuntimeError: ltxengine._C: no usable CUDA device"), host_results[case]
