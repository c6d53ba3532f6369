"""The table of fused ops (one file per op under ltxengine/ops/) and how a backend's Ops is built
from it: the same ops, preferences and sources as the hand-written backends it replaced, and a
short path from the Ops field to the launcher."""

import sys

import pytest
import torch

from ltxengine.ops import AUTO, FUSED, FUSED_OPS, SCHEMAS, Ops, library


def test_table_keeps_the_public_names_and_preferences():
    assert FUSED == ("qk_norm_rope", "ada_norm", "gated_residual", "causal_conv3d", "quantize_fp8", "scaled_mm",
                     "fp8_linear", "attention_fp8", "head_gate", "gguf_dequant",
                     "linear_gelu", "linear_gated_residual", "residual_ada_norm", "dual_ada_norm",
                     "gelu_quantize_fp8", "ada_norm_fp8", "residual_ada_norm_fp8", "dual_ada_norm_fp8",
                     "gated_residual_fp8", "head_gate_fp8")
    assert AUTO == {"qk_norm_rope": ("triton", "cuda"), "ada_norm": ("triton", "cuda"),
                    "gated_residual": ("triton", "cuda"), "causal_conv3d": ("torch",),
                    "quantize_fp8": ("triton", "cuda"), "scaled_mm": ("cuda", "triton"),
                    "fp8_linear": ("cuda", "triton"), "attention_fp8": ("triton",), "head_gate": ("triton",),
                    # cuBLASLt's GELU epilogue; no library epilogue for the gated residual, and our Triton
                    # GEMMs wait for a GPU measurement (ops/linear_gelu.py)
                    "linear_gelu": ("cuda",), "linear_gated_residual": (),
                    "gguf_dequant": ("triton",), "residual_ada_norm": ("triton",), "dual_ada_norm": ("triton",),
                    "gelu_quantize_fp8": ("triton",), "ada_norm_fp8": ("triton",),
                    "residual_ada_norm_fp8": ("triton",), "dual_ada_norm_fp8": ("triton",),
                    "gated_residual_fp8": ("triton",), "head_gate_fp8": ("triton",)}
    assert set(SCHEMAS) == set(FUSED) - {"fp8_linear"}  # composed of quantize_fp8 and scaled_mm
    assert all(op.name in Ops.__dataclass_fields__ for op in FUSED_OPS)


def _served_by(backend):
    # Loaders are not called: which ops name the backend, without importing Triton or _C.
    return {op.name for op in FUSED_OPS if backend in op.launchers or backend in op.plain}


def test_each_op_names_the_backends_the_old_backend_files_listed():
    assert _served_by("triton") == {"qk_norm_rope", "ada_norm", "gated_residual", "causal_conv3d", "quantize_fp8",
                                    "scaled_mm", "attention_fp8", "head_gate", "gguf_dequant",
                                    "linear_gelu", "linear_gated_residual", "residual_ada_norm",
                                    "dual_ada_norm", "gelu_quantize_fp8", "ada_norm_fp8",
                                    "residual_ada_norm_fp8", "dual_ada_norm_fp8", "gated_residual_fp8",
                                    "head_gate_fp8"}
    assert _served_by("cuda") == {"qk_norm_rope", "ada_norm", "gated_residual", "quantize_fp8", "scaled_mm",
                                  "linear_gelu"}
    scaled_mm = next(op for op in FUSED_OPS if op.name == "scaled_mm")
    assert scaled_mm.plain["cuda"][0] == "cublas"
    linear_gelu = next(op for op in FUSED_OPS if op.name == "linear_gelu")
    assert linear_gelu.plain["cuda"][0] == "cublaslt"


def _toy_op(name, launcher_loader):
    def adapter(launch):
        def impl(x, out) -> None:
            launch(x, out=out)

        return impl

    def wrap(op):
        def field(x, *, out=None):
            out = torch.empty_like(x) if out is None else out
            op(x, out)
            return out

        return field

    return library.FusedOp(name, "(Tensor x, Tensor(a!) out) -> ()", adapter, wrap,
                           launchers={"testonly": launcher_loader}, auto=("testonly",))


def test_build_binds_kernels_then_composites_with_sources():
    def double(x, *, out):
        return out.copy_(x * 2)

    def composite(f):
        return lambda x: f(f(x))

    ops = (library.FusedOp("toy_composite", parts=("toy_double",), compose=composite),
           _toy_op("toy_double", lambda: double), library.FusedOp("toy_absent"))
    fields, sources = library.build("testonly", ops)
    assert list(fields) == ["toy_double", "toy_composite"]  # composites after the kernels they use
    assert sources == {"toy_double": "testonly", "toy_composite": "testonly"}
    assert torch.equal(fields["toy_composite"](torch.ones(3)), torch.full((3,), 4.0))
    assert hasattr(torch.ops.ltxengine, "testonly_toy_double")


def test_a_launcher_that_fails_to_import_defines_no_op():
    """A backend whose kernels cannot be imported (kernels="auto" then falls back) must not leave
    an op defined without an implementation behind for the next build to pick up."""
    def missing():
        raise ImportError("no module named 'toy_kernels'")

    with pytest.raises(ImportError, match="toy_kernels"):
        library.build("testonly", (_toy_op("toy_missing", missing),))
    assert not hasattr(torch.ops.ltxengine, "testonly_toy_missing")


def test_three_python_hops_from_the_ops_field_to_the_launcher():
    """Ops field -> (dispatcher) -> the op file's adapter -> the launcher: nothing else of ours
    in between (there were four: a return-value wrapper sat before the adapter)."""
    stack = []

    def launcher(x, *, out):
        f = sys._getframe()
        while f.f_code is not test_three_python_hops_from_the_ops_field_to_the_launcher.__code__:
            stack.append(f.f_code)
            f = f.f_back
        return out.copy_(x)

    fields, _ = library.build("testonly", (_toy_op("toy_hops", lambda: launcher),))
    fields["toy_hops"](torch.ones(2))
    ours = [code.co_name for code in stack if code.co_filename in (__file__, library.__file__)]
    assert ours == ["launcher", "impl", "field"]
