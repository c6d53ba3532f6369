"""csrc/fp8_gemm.cu (Hopper wgmma e4m3 GEMM, ltxengine._C.fp8_gemm) against the fp32 reference.

The GEMM tests need an sm_90 GPU and a built extension; the argument checks run on any machine
whose ltxengine._C exposes fp8_gemm, because the host wrapper validates before touching the device.
Budget: 2 x the error of the same product done by cuBLAS in bf16 (operands dequantized to bf16)
plus one bf16 ulp at the output's largest magnitude (the kernel's single final rounding).
"""

import shutil

import pytest
import torch

from ltxengine.ops import reference
from tests.kernels.budget import check_budget

try:
    from ltxengine import _C
except ImportError:
    _C = None

HAS_OP = _C is not None and hasattr(_C, "fp8_gemm")
needs_op = pytest.mark.skipif(not HAS_OP, reason="ltxengine._C with fp8_gemm is not built (needs nvcc)")
needs_gpu = pytest.mark.skipif(not (HAS_OP and torch.cuda.is_available()),
                               reason="needs a CUDA sm_90 GPU and ltxengine._C with fp8_gemm")
E4M3 = torch.float8_e4m3fn


@pytest.fixture(autouse=True)
def _fp32_reference_matmuls():
    """The oracle's fp32 matmuls must not silently run in TF32 (another test may have enabled it)."""
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


def _operands(m, n, k, per_row, per_col, with_bias, lda=None, seed=0):
    """Random e4m3 a (m, k) (a column slice of an (m, lda) buffer when lda > k), b (n, k), fp32
    scales shaped for reference.scaled_mm ((m, 1) / (n, 1) or (1,)), bf16 bias (n,) or None."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    lda = lda or k
    a = (torch.randn(m, lda, device="cuda", generator=g) * 2).clamp(-448, 448).to(E4M3)[:, :k]
    b = (torch.randn(n, k, device="cuda", generator=g) * 2).clamp(-448, 448).to(E4M3)
    sa = (torch.rand(m, 1, device="cuda", generator=g) * 0.1 + 0.01) if per_row else torch.full((1,), 0.037, device="cuda")
    sb = (torch.rand(n, 1, device="cuda", generator=g) * 0.1 + 0.01) if per_col else torch.full((1,), 0.021, device="cuda")
    bias = torch.randn(n, device="cuda", generator=g).to(torch.bfloat16) if with_bias else None
    return a, b, sa, sb, bias


def _fp8_gemm(a, b, sa, sb, bias=None, out=None):
    m, k = a.shape
    n = b.shape[0]
    assert a.stride(1) == 1 and b.is_contiguous() and sa.is_contiguous() and sb.is_contiguous()
    if out is None:
        out = torch.empty(m, n, device=a.device, dtype=torch.bfloat16)
    _C.fp8_gemm(a.data_ptr(), b.data_ptr(), sa.data_ptr(), sb.data_ptr(), 0 if bias is None else bias.data_ptr(),
                out.data_ptr(), m, n, k, a.stride(0), sa.numel() > 1, sb.numel() > 1,
                torch.cuda.current_stream().cuda_stream)
    return out


def _torch_bf16(a, b, sa, sb, bias):
    """The same product in bf16 through cuBLAS: operands dequantized to bf16 with their scales."""
    a16 = (a.float() * sa.reshape(-1, 1)).to(torch.bfloat16)
    b16 = (b.float() * sb.reshape(-1, 1)).to(torch.bfloat16)
    return a16 @ b16.T if bias is None else torch.addmm(bias, a16, b16.T)


def _check(a, b, sa, sb, bias, out, what):
    ref = reference.scaled_mm(a, b, sa, sb, bias, out_dtype=torch.float32)
    err, budget = check_budget(out, _torch_bf16(a, b, sa, sb, bias), ref, what)
    print(f"{what}: max err {err:.3e} <= budget {budget:.3e} (max |ref| {ref.abs().max().item():.3e})")


def _bytes(t):
    return t.view(torch.uint8).clone() if t.dtype == E4M3 else t.clone()


# (m, n, k, lda): odd partial tiles in M and N, a K tail inside one k-tile, a strided A, odd N
# (scalar stores), several k-tiles with a tail, and more tiles than SMs (persistent loop).
ODD_SHAPES = [(300, 200, 96, 96), (300, 200, 96, 128), (77, 201, 16, 32), (129, 130, 272, 272),
              (2500, 3000, 272, 288)]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m,n,k,lda", ODD_SHAPES)
@pytest.mark.parametrize("per_row,per_col", [(False, False), (True, True), (True, False)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_odd_shapes_match_reference(m, n, k, lda, per_row, per_col, with_bias):
    a, b, sa, sb, bias = _operands(m, n, k, per_row, per_col, with_bias, lda=lda)
    before = [_bytes(t) for t in (a, b, sa, sb) + ((bias,) if bias is not None else ())]
    out = _fp8_gemm(a, b, sa, sb, bias)
    torch.cuda.synchronize()
    _check(a, b, sa, sb, bias, out, f"fp8_gemm {m}x{n}x{k} lda={lda} rows={per_row} cols={per_col} bias={with_bias}")
    after = [_bytes(t) for t in (a, b, sa, sb) + ((bias,) if bias is not None else ())]
    assert all(torch.equal(x, y) for x, y in zip(before, after)), "fp8_gemm modified an input"


@pytest.mark.gpu
@needs_gpu
def test_out_is_written_in_place():
    """A given out is every element written (NaN-filled beforehand) and nothing else: here a view
    at a 2-byte offset inside a larger buffer, which also takes the scalar-store path."""
    m, n, k = 150, 260, 160
    a, b, sa, sb, bias = _operands(m, n, k, True, True, True, seed=3)
    buf = torch.full((m * n + 2,), float("nan"), device="cuda", dtype=torch.bfloat16)
    out = buf[1:1 + m * n].view(m, n)
    assert out.data_ptr() % 4 == 2
    res = _fp8_gemm(a, b, sa, sb, bias, out=out)
    torch.cuda.synchronize()
    assert res is out
    assert torch.isnan(buf[0]) and torch.isnan(buf[-1]), "fp8_gemm wrote outside out"
    assert not torch.isnan(out).any()
    _check(a, b, sa, sb, bias, out, "fp8_gemm out= at a 2-byte offset")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("m,n,k", [(6144, 2048, 2048), (6144, 8192, 2048), (6144, 2048, 8192), (6144, 4096, 4096)])
@pytest.mark.parametrize("per_row,per_col,with_bias", [(False, False, False), (True, True, True)])
def test_production_shapes(m, n, k, per_row, per_col, with_bias):
    a, b, sa, sb, bias = _operands(m, n, k, per_row, per_col, with_bias, seed=1)
    out = _fp8_gemm(a, b, sa, sb, bias)
    torch.cuda.synchronize()
    _check(a, b, sa, sb, bias, out, f"fp8_gemm {m}x{n}x{k} rows={per_row} cols={per_col} bias={with_bias}")


# ---- argument checks: fake, suitably aligned addresses; the wrapper must refuse before any CUDA call ----

GOOD = dict(a=4096, b=8192, scale_a=256, scale_b=512, bias=1024, out=16384, m=300, n=200, k=96, lda=96,
            scale_a_per_row=True, scale_b_per_col=False, stream=0)
BAD = [
    ("m", 0, "m must be in [1, 2^31 - 1], got 0"),
    ("m", 2**31, "m must be in [1, 2^31 - 1], got 2147483648"),
    ("n", -3, "n must be in [1, 2^31 - 1], got -3"),
    ("k", 40, "k must be a positive multiple of 16 below 2^31, got 40"),
    ("k", 0, "k must be a positive multiple of 16 below 2^31, got 0"),
    ("lda", 80, "lda must be a multiple of 16, >= k (96) and < 2^40, got 80"),
    ("lda", 104, "lda must be a multiple of 16, >= k (96) and < 2^40, got 104"),
    ("lda", 2**40, "lda must be a multiple of 16, >= k (96) and < 2^40, got 1099511627776"),
    ("a", 0, "a must be non-null and 16-byte aligned, got 0"),
    ("a", 4104, "a must be non-null and 16-byte aligned, got 4104"),
    ("b", 8200, "b must be non-null and 16-byte aligned, got 8200"),
    ("scale_a", 0, "scale_a must be non-null and 4-byte aligned (fp32), got 0"),
    ("scale_b", 514, "scale_b must be non-null and 4-byte aligned (fp32), got 514"),
    ("bias", 1025, "bias must be 0 (no bias) or 2-byte aligned (bf16), got 1025"),
    ("out", 0, "out must be non-null and 2-byte aligned (bf16), got 0"),
    ("out", 16385, "out must be non-null and 2-byte aligned (bf16), got 16385"),
]


@needs_op
@pytest.mark.parametrize("arg,value,message", BAD, ids=[f"{a}={v}" for a, v, _ in BAD])
def test_rejects_bad_arguments(arg, value, message):
    kwargs = dict(GOOD, **{arg: value})
    with pytest.raises(ValueError) as info:
        _C.fp8_gemm(**kwargs)
    assert str(info.value) == "fp8_gemm: " + message


@needs_op
@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="a GPU is present: the no-device error is unreachable")
def test_valid_arguments_reach_the_device_check():
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        _C.fp8_gemm(**dict(GOOD, bias=0))
