"""The ops object's backends: resolution rules, the torch.library custom ops (opcheck), out= on
every backend, and cuBLASLt's fp8 GEMM (torch._scaled_mm also runs on the CPU) vs the reference."""

import dataclasses

import pytest
import torch

from ltxengine.ops import AUTO, FUSED, TORCH_OPS, get_ops, reference
from ltxengine.ops import cublas
from ltxengine.ops.causal_conv3d import conv_out_shape
from ltxengine.ops import SCHEMAS

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def triton_ops():
    return get_ops("triton", DEV)


def test_resolution_rules(monkeypatch):
    assert get_ops("torch", DEV) is TORCH_OPS
    assert get_ops("auto", "cpu") is TORCH_OPS  # fused kernels only pay off on a GPU
    with pytest.raises(ValueError, match=r"kernels must be one of \('auto', 'torch', 'triton', 'cuda'\), got 'fast'"):
        get_ops("fast")
    with pytest.raises(ValueError, match="kernels='cuda' needs a CUDA device, got cpu"):
        get_ops("cuda", "cpu")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="kernels='triton' on the CPU runs Triton's interpreter"):
        get_ops("triton", "cpu")
    with pytest.raises(ValueError, match="supports cuda .* devices, got meta"):
        get_ops("triton", "meta")


def test_triton_backend_serves_every_fused_op(triton_ops):
    assert dict(triton_ops.sources) == {op: "triton" for op in FUSED}
    for op in FUSED:
        assert getattr(triton_ops, op) is not getattr(TORCH_OPS, op)
    # linear and attention stay with cuBLAS / SDPA
    assert triton_ops.linear is TORCH_OPS.linear and triton_ops.attention is TORCH_OPS.attention
    assert set(AUTO) == set(FUSED)


def _inputs():
    g = torch.Generator().manual_seed(0)

    def r(*shape, dtype=torch.bfloat16):
        return torch.randn(*shape, generator=g).to(DEV, dtype)

    x = r(2, 5, 24)
    mod = r(2, 1, 24)
    fp8 = r(7, 32).to(torch.float8_e4m3fn)
    w8 = r(9, 32).to(torch.float8_e4m3fn)
    vid = r(1, 3, 3, 4, 5)
    return {
        "qk_norm_rope": (x, r(2, 3, 24), r(24), r(24), 1e-6, r(2, 2, 5, 6, dtype=torch.float32),
                         r(2, 2, 5, 6, dtype=torch.float32), r(1, 2, 3, 6, dtype=torch.float32),
                         r(1, 2, 3, 6, dtype=torch.float32), None, None, torch.empty_like(x),
                         torch.empty(2, 3, 24, dtype=torch.bfloat16, device=DEV)),
        "ada_norm": (x, mod, mod, 1e-6, "layer", torch.empty_like(x)),
        "gated_residual": (x, r(2, 5, 24), mod, torch.empty_like(x)),
        "residual_ada_norm": (x, r(2, 5, 24), None, mod, r(2, 5, 24), 1e-6, "rms", torch.empty_like(x),
                              torch.empty_like(x)),
        # a pending residual, gated, then two modulations (per-sample and per-token)
        "dual_ada_norm": (x, r(2, 5, 24), mod, mod, mod, r(2, 5, 24), None, 1e-6, "rms", torch.empty_like(x),
                          torch.empty_like(x), torch.empty_like(x)),
        "head_gate": (x, r(2, 5, 3), torch.empty_like(x)),  # 3 heads of 8
        "causal_conv3d": (vid, r(4, 3, 3, 3, 3), r(4), [1, 1, 1], True, "reflect", 1e-8, r(1, 3), r(1, 3), True,
                          torch.empty(1, 4, 3, 4, 5, dtype=torch.bfloat16, device=DEV)),
        "quantize_fp8": (r(7, 32), None, True, torch.empty(7, 32, dtype=torch.float8_e4m3fn, device=DEV),
                         torch.empty(7, 1, device=DEV)),
        "gelu_quantize_fp8": (r(7, 32), torch.empty(7, 32, dtype=torch.float8_e4m3fn, device=DEV),
                              torch.empty(7, 1, device=DEV)),
        # x (2, 5, 24): the bf16 rows and their 10 per-row quantized copies
        "ada_norm_fp8": (x, mod, r(2, 5, 24), 1e-6, "rms", torch.empty_like(x),
                         torch.empty(10, 24, dtype=torch.float8_e4m3fn, device=DEV), torch.empty(10, 1, device=DEV)),
        "gated_residual_fp8": (x, r(2, 5, 24), mod, torch.empty_like(x),
                               torch.empty(10, 24, dtype=torch.float8_e4m3fn, device=DEV),
                               torch.empty(10, 1, device=DEV)),
        "head_gate_fp8": (x, r(2, 5, 3), torch.empty(10, 24, dtype=torch.float8_e4m3fn, device=DEV),
                          torch.empty(10, 1, device=DEV)),  # 3 heads of 8
        "residual_ada_norm_fp8": (x, r(2, 5, 24), mod, mod, mod, 1e-6, "rms", torch.empty_like(x),
                                  torch.empty_like(x), torch.empty(10, 24, dtype=torch.float8_e4m3fn, device=DEV),
                                  torch.empty(10, 1, device=DEV)),
        "dual_ada_norm_fp8": (x, r(2, 5, 24), mod, mod, mod, r(2, 5, 24), None, 1e-6, "rms", torch.empty_like(x),
                              torch.empty_like(x), torch.empty_like(x),
                              torch.empty(10, 24, dtype=torch.float8_e4m3fn, device=DEV),
                              torch.empty(10, 1, device=DEV),
                              torch.empty(10, 24, dtype=torch.float8_e4m3fn, device=DEV),
                              torch.empty(10, 1, device=DEV)),
        "scaled_mm": (fp8, w8, torch.rand(7, 1, device=DEV), torch.rand(9, 1, device=DEV), r(9),
                      torch.empty(7, 9, dtype=torch.bfloat16, device=DEV)),
        # q (B=2, Nq=5, H*D=2*16), k/v Nk=3, an additive key mask
        "attention_fp8": (r(2, 5, 32), r(2, 3, 32), r(2, 3, 32), 2, r(2, 1, 1, 3),
                          torch.empty(2, 5, 32, dtype=torch.bfloat16, device=DEV)),
        # x (2, 5, K=24) through a (N=9, K) weight; the gated residual's x (2, 5, 9), per-sample gate
        "linear_gelu": (x, r(9, 24), r(9), torch.empty(2, 5, 9, dtype=torch.bfloat16, device=DEV)),
        "linear_gated_residual": (r(2, 5, 9), x, r(9, 24), r(9), r(2, 1, 9),
                                  torch.empty(2, 5, 9, dtype=torch.bfloat16, device=DEV)),
        # two Q8_0 blocks (type 8): fp16 scale 1.0 (bytes 00 3C), then 32 random int8
        "gguf_dequant": (torch.cat([torch.tensor([[0, 60]] * 2, dtype=torch.uint8), torch.randint(
            0, 256, (2, 32), generator=g, dtype=torch.uint8)], 1).to(DEV), 8, torch.empty(2, 32, device=DEV)),
    }


CUDA_OPS = ("qk_norm_rope", "ada_norm", "gated_residual", "quantize_fp8")


@pytest.mark.parametrize("backend, op", [("triton", op) for op in sorted(SCHEMAS)] + [
    pytest.param("cuda", op, marks=pytest.mark.gpu) for op in CUDA_OPS])
def test_custom_ops_pass_opcheck(triton_ops, backend, op):
    """Schema (the mutated outputs are declared), fake tensor, autograd registration and AOT
    dispatch: what torch.compile and CUDA graph capture rely on."""
    if backend == "cuda":
        get_ops("cuda", "cuda")  # registers the cuda_* ops (needs ltxengine._C)
    handle = getattr(torch.ops.ltxengine, f"{backend}_{op}").default
    args = _inputs()[op]
    tests = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    if any(isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn for a in args):
        # torch's SchemaCheckMode compares tensors with a multiply that has no fp8 CPU kernel;
        # its check (nothing undeclared is written) is done by hand below instead.
        tests = tests[1:]
        before = [a.view(torch.uint8).clone() if isinstance(a, torch.Tensor) and a.dtype == torch.float8_e4m3fn
                  else a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    result = torch.library.opcheck(handle, args, test_utils=tests)
    assert result and all(v == "SUCCESS" for v in result.values()), result
    if len(tests) == 3:
        handle(*args)
        outputs = {i for i, arg in enumerate(handle._schema.arguments) if arg.alias_info and arg.alias_info.is_write}
        for i, (a, b) in enumerate(zip(args, before)):
            if isinstance(a, torch.Tensor) and i not in outputs:
                now = a.view(torch.uint8) if a.dtype == torch.float8_e4m3fn else a
                assert torch.equal(now, b), f"{op}: argument {i} was modified but is not declared mutable"


def test_ops_functions_match_launchers_and_honour_out(triton_ops):
    x = _inputs()["ada_norm"][0]
    mod = _inputs()["ada_norm"][1]
    out = torch.empty_like(x)
    assert triton_ops.ada_norm(x, mod, mod, 1e-6, "rms", out=out) is out
    assert torch.equal(out, triton_ops.ada_norm(x, mod, mod, 1e-6))
    assert triton_ops.gated_residual(x, x, None, out=out) is out
    q, k = triton_ops.qk_norm_rope(x, x, torch.ones(24, device=DEV), torch.ones(24, device=DEV), 1e-6, None)
    assert q.shape == k.shape == x.shape
    y = torch.empty(2, 5, 9, dtype=torch.bfloat16, device=DEV)
    w8 = _inputs()["scaled_mm"][1]
    x32 = torch.randn(2, 5, 32, generator=torch.Generator().manual_seed(3)).to(DEV, torch.bfloat16)
    got = triton_ops.fp8_linear(x32, w8, torch.tensor(0.5, device=DEV), out=y)
    assert got is y
    assert torch.equal(y, reference.fp8_linear(x32, w8, torch.tensor(0.5, device=DEV))) or \
        (y.float() - reference.fp8_linear(x32, w8, torch.tensor(0.5, device=DEV)).float()).abs().max() <= \
        2 ** -7 * y.float().abs().max()  # same quantized operands; fp32 sums in another order, one bf16 rounding


def test_torch_compile_sees_one_node_per_kernel(triton_ops):
    x, mod = _inputs()["ada_norm"][:2]
    fn = torch.compile(lambda x, m: triton_ops.gated_residual(x, triton_ops.ada_norm(x, m, m, 1e-6), m),
                       backend="eager", fullgraph=True)
    expect = triton_ops.gated_residual(x, triton_ops.ada_norm(x, mod, mod, 1e-6), mod)
    assert torch.equal(fn(x, mod), expect)


def test_reference_ops_honour_out_and_refuse_a_wrong_one():
    x = torch.randn(2, 5, 8)
    out = torch.empty_like(x)
    assert reference.ada_norm(x, None, None, 1e-6, out=out) is out
    assert torch.equal(out, reference.ada_norm(x, None, None, 1e-6))
    with pytest.raises(ValueError, match=r"out must be \(2, 5, 8\) torch.float32 on cpu, got \(2, 5, 7\)"):
        reference.gated_residual(x, x, None, out=torch.empty(2, 5, 7))


def test_conv_output_shape_matches_reference():
    x = torch.randn(1, 2, 5, 7, 9)
    for kernel, stride, causal in (((3, 3, 3), (1, 1, 1), True), ((3, 3, 3), (2, 2, 2), False),
                                   ((1, 3, 3), (1, 2, 2), True), ((3, 1, 1), (2, 1, 1), True)):
        w = torch.randn(3, 2, *kernel)
        assert conv_out_shape(x, w, stride, causal) == tuple(reference.causal_conv3d(x, w, None, stride, causal).shape)
    with pytest.raises(ValueError, match=r"causal_conv3d: x must be a 5-D tensor, got \(2, 5, 7, 9\)"):
        conv_out_shape(x[0], w, (1, 1, 1), True)


@pytest.mark.parametrize("scales", ["tensor", "row", "mixed"])
def test_cublas_scaled_mm_matches_reference(scales):
    g = torch.Generator().manual_seed(1)
    a = torch.randn(37, 64, generator=g).to(torch.float8_e4m3fn)
    b = torch.randn(48, 64, generator=g).to(torch.float8_e4m3fn)
    sa = torch.rand(37, 1, generator=g) if scales == "row" else torch.tensor(0.7)
    sb = torch.tensor(1.3) if scales == "tensor" else torch.rand(48, 1, generator=g)
    bias = torch.randn(48, generator=g).bfloat16()
    got = cublas.scaled_mm(a, b, sa, sb, bias)
    ref = reference.scaled_mm(a.float().to(torch.float8_e4m3fn), b, sa, sb, bias)
    # Both accumulate exactly representable fp8 products in fp32 and round once to bf16: the only
    # freedom is summation order, far below one bf16 ulp at these magnitudes.
    assert (got.float() - ref.float()).abs().max() <= 2 ** -7 * ref.float().abs().max()
    out = torch.empty(37, 48, dtype=torch.bfloat16)
    assert cublas.scaled_mm(a, b, sa, sb, bias, out=out) is out


@pytest.mark.parametrize("bad, message", [
    (dict(a=torch.zeros(4, 8)), "a must be a 2-D float8_e4m3fn tensor, got (4, 8) torch.float32"),
    (dict(b=torch.zeros(3, 16).to(torch.float8_e4m3fn)), "b must be (N, K=8), got (3, 16)"),
    (dict(sa=torch.ones(3, 1)), "scale_a must be fp32 with one value or shape (4, 1), got (3, 1)"),
    (dict(bias=torch.zeros(5)), "bias must be (3,), got (5,)"),
])
def test_cublas_scaled_mm_errors(bad, message):
    args = dict(a=torch.zeros(4, 8).to(torch.float8_e4m3fn), b=torch.zeros(3, 8).to(torch.float8_e4m3fn),
                sa=torch.tensor(1.0), sb=torch.tensor(1.0), bias=None)
    args.update(bad)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cublas.scaled_mm(args["a"], args["b"], args["sa"], args["sb"], args["bias"])


@pytest.mark.gpu
def test_auto_on_gpu_follows_the_preference_table():
    ops = get_ops("auto", "cuda")
    sources = dict(ops.sources)
    for op, prefs in AUTO.items():
        assert sources[op] in prefs + ("cublas", "torch"), (op, sources[op])
    assert dataclasses.replace(ops, name="x").name == "x"
