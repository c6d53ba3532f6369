"""Triton fp8 quantize / scaled matmul / fp8 linear against the fp32 references.

Quantization must be bit-equal to ``reference.quantize_fp8`` (computed on the CPU, where its
divisions are true IEEE divisions). The matmul may differ from the fp32 reference only by fp32
accumulation order and the final rounding, so it gets the flash-attention budget of
``tests/kernels/budget.py``: 2 x torch's own low-precision error + one ulp of the output dtype at
the output magnitude. That floor covers one final rounding on any backend: a GPU rounds fp32 to
bf16 to nearest (<= 1/2 ulp), Triton's interpreter truncates (< 1 ulp), and a few fp32 ulps of
accumulation-order difference before the rounding can only move the result to the neighbour.
"""

import functools

import pytest
import torch

from ltxengine.kernels import fp8_gemm as kernel
from ltxengine.ops import reference as ref
from tests.kernels.budget import check_budget, max_err, ulp

DEV = "cuda" if torch.cuda.is_available() else "cpu"
FP8 = torch.float8_e4m3fn
BF16 = torch.bfloat16


def _x(*shape, dtype=torch.float32, seed=0, spread=False):
    """Normal values; with ``spread`` over 2^-12 .. 2^6 magnitudes so rows use e4m3 subnormals."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g)
    if spread:
        x = x * torch.exp2(torch.randint(-12, 7, shape, generator=g).float())
    return x.to(dtype).to(DEV)


def _bytes(q):
    return q.view(torch.uint8).cpu()


def _operand(rows, k, per_row, seed):
    """An e4m3 matrix quantized like the model's activations / weights, with its fp32 scale."""
    q, s = ref.quantize_fp8(_x(rows, k, seed=seed).cpu(), per_row=per_row)
    return q.to(DEV), s.to(DEV)


def _scale(s, rows):
    return s.float().reshape(-1, 1) if s.numel() > 1 else s.float().reshape(())


def _torch_bf16(a, b, sa, sb, bias):
    """The reference computation done by torch in bf16 (bf16 GEMM, bf16 epilogue)."""
    acc = (a.cpu().to(BF16) @ b.cpu().to(BF16).T) * _scale(sa.cpu(), 0).to(BF16)
    acc = acc * (sb.cpu().to(BF16).reshape(1, -1) if sb.numel() > 1 else sb.cpu().to(BF16).reshape(()))
    return acc if bias is None else acc + bias.cpu().to(BF16)


def _torch_scaled_mm(a, b, sa, sb, bias, out_dtype):
    """torch's own fp8 GEMM (CPU kernel here, cuBLASLt on a GPU): per-tensor pairs or row-wise pairs."""
    m, n = a.shape[0], b.shape[0]
    if sa.numel() == 1 and sb.numel() == 1:
        sa, sb = sa.reshape(()), sb.reshape(())
    else:
        sa, sb = sa.reshape(-1, 1).expand(m, 1).contiguous(), sb.reshape(1, -1).expand(1, n).contiguous()
    bias = None if bias is None else bias.to(out_dtype)
    return torch._scaled_mm(a.contiguous(), b.contiguous().t(), sa, sb, bias=bias, out_dtype=out_dtype)


@functools.lru_cache(maxsize=None)
def _has_cpu_scaled_mm():
    try:
        one = torch.ones(16, 16, dtype=FP8)
        torch._scaled_mm(one, one.t(), torch.tensor(1.0), torch.tensor(1.0), out_dtype=BF16)
        return True
    except (RuntimeError, NotImplementedError):
        return False


def _check_mm(out, a, b, sa, sb, bias, what):
    """The budget against the fp32 reference, and torch._scaled_mm as a second same-precision
    baseline (both computed on the CPU)."""
    ref32 = ref.scaled_mm(a.cpu(), b.cpu(), sa.cpu(), sb.cpu(), None if bias is None else bias.cpu(), torch.float32)
    out = out.cpu()
    err, budget = check_budget(out, _torch_bf16(a, b, sa, sb, bias).to(out.dtype), ref32, what)
    if DEV == "cpu" and _has_cpu_scaled_mm():
        lowp = _torch_scaled_mm(a.cpu(), b.cpu(), sa.cpu(), sb.cpu(), None if bias is None else bias.cpu(), out.dtype)
        check_budget(out, lowp, ref32, what + " vs torch._scaled_mm")
    return err, budget


# ------------------------------------------------------------------------------------------
# quantize_fp8


def _edge_values():
    """Every finite e4m3 value, every midpoint between neighbours (ties: nearest even), the fp32
    neighbours of each midpoint, subnormal ties, values past 448, infinities and signed zeros."""
    codes = torch.arange(256, dtype=torch.uint8).view(FP8).float()
    grid = codes[torch.isfinite(codes)].unique()
    mids = (grid[1:] + grid[:-1]) / 2  # exact in fp32
    up, down = torch.nextafter(mids, mids + 1), torch.nextafter(mids, mids - 1)
    extra = torch.tensor([448.0, 449.0, 463.9, 464.0, 480.0, 1e6, float("inf"), -float("inf"), 0.0, -0.0,
                          2.0 ** -10, 3 * 2.0 ** -10, 2.0 ** -11, 1e-30, -1e-30, 2.0 ** -6, 0.0155])
    return torch.cat([grid, mids, up, down, extra, -mids, -up, -down])


def test_quantize_rounding_is_bit_exact_on_edge_values():
    v = _edge_values()
    x = v.reshape(1, -1).to(DEV)
    q, s = kernel.quantize_fp8(x, torch.ones((), device=DEV))
    q_ref, _ = ref.quantize_fp8(v.reshape(1, -1), torch.tensor(1.0))
    assert torch.equal(_bytes(q), _bytes(q_ref))
    assert (q.float().abs() <= 448).all(), "saturates, never NaN"
    nan_q, _ = kernel.quantize_fp8(torch.tensor([[float("nan"), 1.0]], device=DEV), torch.ones((), device=DEV))
    assert torch.isnan(nan_q.float()[0, 0]) and nan_q.float()[0, 1] == 1.0


@pytest.mark.parametrize("dtype", [torch.float32, BF16, torch.float16])
def test_quantize_static_scale_bit_exact_on_strided_rows(dtype):
    base = _x(37, 80, dtype=dtype, spread=True) * 4
    x = base[:, 3:74]  # row stride 80, K = 71
    before = x.clone()
    scale = torch.tensor(0.0123, device=DEV)
    q, s = kernel.quantize_fp8(x, scale)
    q_ref, _ = ref.quantize_fp8(x.cpu(), scale.cpu())
    assert torch.equal(_bytes(q), _bytes(q_ref)) and s is scale
    assert torch.equal(x, before)


@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, BF16])
def test_quantize_dynamic_bit_exact(per_row, dtype):
    x = _x(2, 9, 71, dtype=dtype, spread=True)
    x[1, 4] = 0  # an all-zero row: its scale is FP8_MIN_AMAX / 448, finite
    before = x.clone()
    q, s = kernel.quantize_fp8(x, per_row=per_row)
    q_ref, s_ref = ref.quantize_fp8(x.cpu(), per_row=per_row)
    assert q.shape == (18, 71) and s.shape == s_ref.shape and s.dtype == torch.float32
    assert torch.equal(_bytes(q), _bytes(q_ref))
    assert torch.equal(s.cpu(), s_ref)
    assert torch.equal(x, before)
    if per_row:
        assert torch.equal(s[13].cpu(), (torch.tensor([ref.FP8_MIN_AMAX]) / ref.FP8_MAX))
        assert not _bytes(q)[13].any()


def test_quantize_per_row_loops_over_long_rows_and_all_zero_tensor():
    x = _x(5, 300, spread=True)  # K = 300: several K chunks in the per-row kernel
    q, s = kernel.quantize_fp8(x, per_row=True)
    q_ref, s_ref = ref.quantize_fp8(x.cpu(), per_row=True)
    assert torch.equal(_bytes(q), _bytes(q_ref)) and torch.equal(s.cpu(), s_ref)
    zeros = torch.zeros(3, 7, device=DEV)
    qz, sz = kernel.quantize_fp8(zeros)
    assert torch.equal(sz.cpu(), ref.quantize_fp8(zeros.cpu())[1]) and torch.isfinite(sz) and not _bytes(qz).any()


@pytest.mark.parametrize("shape", [(1, 71), (37, 1), (1, 1)])
@pytest.mark.parametrize("per_row", [False, True])
def test_quantize_edges_m1_k1(shape, per_row):
    x = _x(*shape, seed=4)
    q, s = kernel.quantize_fp8(x, per_row=per_row)
    q_ref, s_ref = ref.quantize_fp8(x.cpu(), per_row=per_row)
    assert torch.equal(_bytes(q), _bytes(q_ref)) and torch.equal(s.cpu(), s_ref)


@pytest.mark.filterwarnings("ignore:overflow encountered")  # -3e38 / 0.5 is -inf before the clamp
def test_quantize_saturates_at_448():
    x = torch.tensor([[1000.0, -1000.0, 447.0, -3.0e38, 5.0]], device=DEV)
    q, _ = kernel.quantize_fp8(x, torch.tensor(0.5, device=DEV))
    assert q.float().cpu().tolist() == [[448.0, -448.0, 448.0, -448.0, 10.0]]


def test_quantize_out_and_scale_out_written_in_place():
    x = _x(7, 33, dtype=BF16)
    out = torch.empty(7, 33, dtype=FP8, device=DEV)
    s_out = torch.empty(7, 1, device=DEV)
    q, s = kernel.quantize_fp8(x, per_row=True, out=out, scale_out=s_out)
    assert q is out and s is s_out
    q_ref, s_ref = ref.quantize_fp8(x.cpu(), per_row=True)
    assert torch.equal(_bytes(out), _bytes(q_ref)) and torch.equal(s_out.cpu(), s_ref)
    s_tensor = torch.empty(1, device=DEV)
    assert kernel.quantize_fp8(x, scale_out=s_tensor)[1] is s_tensor
    assert torch.equal(s_tensor.cpu(), ref.quantize_fp8(x.cpu())[1].reshape(1))
    # A static scale is copied into a given scale_out (the custom op always passes one).
    s_static = torch.empty((), device=DEV)
    out2 = torch.empty(7, 40, dtype=FP8, device=DEV)[:, :33]  # row-strided destination
    q2, s2 = kernel.quantize_fp8(x, torch.tensor(0.02, device=DEV), out=out2, scale_out=s_static)
    assert q2 is out2 and s2 is s_static and s_static.item() == pytest.approx(0.02)
    assert torch.equal(_bytes(out2.contiguous()), _bytes(ref.quantize_fp8(x.cpu(), torch.tensor(0.02))[0]))


# ------------------------------------------------------------------------------------------
# scaled_mm

MODES = {"tensor x tensor": (False, False), "row x channel": (True, True),
         "tensor x channel": (False, True), "row x tensor": (True, False)}


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("m, n, k", [(37, 53, 71), (1, 53, 71), (37, 53, 1)])
@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("out_dtype", [BF16, torch.float32])
def test_scaled_mm_matches_reference(mode, m, n, k, with_bias, out_dtype):
    a, sa = _operand(m, k, MODES[mode][0], seed=1)
    b, sb = _operand(n, k, MODES[mode][1], seed=2)
    bias = _x(n, dtype=BF16, seed=3) if with_bias else None
    before = [t.clone() for t in (a, b, sa, sb)]
    out = kernel.scaled_mm(a, b, sa, sb, bias, out_dtype)
    assert out.shape == (m, n) and out.dtype == out_dtype
    _check_mm(out, a, b, sa, sb, bias, f"{mode} {m}x{n}x{k} bias={with_bias} {out_dtype}")
    assert all(torch.equal(t.view(torch.uint8) if t.dtype == FP8 else t, u.view(torch.uint8) if u.dtype == FP8 else u)
               for t, u in zip((a, b, sa, sb), before))


def test_scaled_mm_fp16_out_and_fp32_bias():
    a, sa = _operand(19, 40, True, seed=5)
    b, sb = _operand(24, 40, True, seed=6)
    bias = _x(24, seed=7)
    _check_mm(kernel.scaled_mm(a, b, sa, sb, bias, torch.float16), a, b, sa, sb, bias, "fp16 out")


def test_scaled_mm_strided_operands_and_out_in_place():
    a_full, sa = _operand(37, 80, True, seed=8)
    b_full, sb = _operand(53, 90, False, seed=9)
    a, b = a_full[:, 5:76], b_full[:, 10:81]  # row strides 80 and 90, K = 71
    assert a.stride(0) == 80 and b.stride(0) == 90
    out_full = torch.empty(37, 64, dtype=BF16, device=DEV)
    out = out_full[:, :53]
    assert kernel.scaled_mm(a, b, sa, sb, out=out) is out
    assert out_full.data_ptr() == out.data_ptr()
    _check_mm(out, a, b, sa, sb, None, "strided")
    again = kernel.scaled_mm(a.contiguous(), b.contiguous(), sa, sb)
    assert torch.equal(again, out)


@pytest.mark.skipif(not _has_cpu_scaled_mm(), reason="torch._scaled_mm has no CPU kernel in this torch build")
def test_torch_scaled_mm_cpu_agrees_with_reference():
    # Guards the second baseline used by _check_mm: torch's CPU fp8 GEMM is itself within budget.
    a, sa = ref.quantize_fp8(_x(37, 71, seed=1).cpu(), per_row=True)
    b, sb = ref.quantize_fp8(_x(53, 71, seed=2).cpu(), per_row=True)
    r32 = ref.scaled_mm(a, b, sa, sb, None, torch.float32)
    lowp = _torch_scaled_mm(a, b, sa, sb, None, BF16)
    assert max_err(lowp, r32) <= ulp(BF16, r32.abs().max().item())


# ------------------------------------------------------------------------------------------
# fp8_linear


@pytest.mark.parametrize("x_dtype", [BF16, torch.float32])
@pytest.mark.parametrize("act", ["per_token", "per_tensor", "static"])
@pytest.mark.parametrize("weight_per_channel", [False, True])
def test_fp8_linear_matches_reference(x_dtype, act, weight_per_channel):
    x = _x(2, 9, 71, dtype=x_dtype, seed=11)
    w, sw = _operand(53, 71, weight_per_channel, seed=12)
    bias = _x(53, dtype=x_dtype, seed=13)
    input_scale = torch.tensor(0.006, device=DEV) if act == "static" else None
    before = x.clone()
    y = kernel.fp8_linear(x, w, sw, bias, input_scale, per_token=act == "per_token")
    assert y.shape == (2, 9, 53) and y.dtype == x_dtype
    assert torch.equal(x, before)
    # Quantization is bit-exact, so only the matmul's budget applies.
    q, sx = ref.quantize_fp8(x.cpu(), None if input_scale is None else input_scale.cpu(),
                             per_row=act == "per_token")
    _check_mm(y.reshape(18, 53), q, w, sx, sw, bias, f"fp8_linear {act}")
    y_ref = ref.fp8_linear(x.cpu(), w.cpu(), sw.cpu(), bias.cpu(), None if input_scale is None else input_scale.cpu(),
                           per_token=act == "per_token")
    assert max_err(y.cpu(), y_ref) <= 2 * ulp(x_dtype, y_ref.abs().max().item())


def test_fp8_linear_out_in_place():
    x = _x(2, 9, 71, dtype=BF16, seed=11)
    w, sw = _operand(53, 71, True, seed=12)
    out = torch.empty(2, 9, 53, dtype=BF16, device=DEV)
    assert kernel.fp8_linear(x, w, sw, out=out) is out
    assert torch.equal(out, kernel.fp8_linear(x, w, sw))


# ------------------------------------------------------------------------------------------
# errors


def _mm_args(m=5, n=6, k=8):
    a, sa = _operand(m, k, True, seed=1)
    b, sb = _operand(n, k, True, seed=2)
    return a, b, sa, sb


def _esc(message):
    return "".join("\\" + c if c in "()[]|.*+?" else c for c in message)


def _quantize_errors():
    x = _x(4, 8)
    s = torch.tensor(0.1, device=DEV)
    meta = torch.tensor(0.1, device="meta")
    return [
        (lambda: kernel.quantize_fp8("x"), "quantize_fp8: x must be a tensor of shape (..., K), got str"),
        (lambda: kernel.quantize_fp8(x[0, 0]), "quantize_fp8: x must be a tensor of shape (..., K), got ()"),
        (lambda: kernel.quantize_fp8(x.int()), "quantize_fp8: x must be bfloat16, float16 or float32, got torch.int32"),
        (lambda: kernel.quantize_fp8(x[:0]), "quantize_fp8: x must not be empty, got shape (0, 8)"),
        (lambda: kernel.quantize_fp8(x, s, per_row=True), "quantize_fp8: per_row=True applies to dynamic scales only"),
        (lambda: kernel.quantize_fp8(x, s.bfloat16()),
         "quantize_fp8: scale must be a float32 tensor, got () torch.bfloat16"),
        (lambda: kernel.quantize_fp8(x, 0.1), "quantize_fp8: scale must be a float32 tensor, got float"),
        (lambda: kernel.quantize_fp8(x, s.expand(4, 1)),
         "quantize_fp8: scale must be a per-tensor scale of shape () or (1,), got (4, 1)"),
        (lambda: kernel.quantize_fp8(x, meta),
         f"quantize_fp8: scale must be on {x.device} like the other inputs, got meta"),
        (lambda: kernel.quantize_fp8(x, out=torch.empty(4, 8, device=DEV)),
         "quantize_fp8: out must be (4, 8) torch.float8_e4m3fn"),
        (lambda: kernel.quantize_fp8(x, out=torch.empty(4, 9, dtype=FP8, device=DEV)),
         "quantize_fp8: out must be (4, 8) torch.float8_e4m3fn"),
        (lambda: kernel.quantize_fp8(x, out=torch.empty(8, 4, dtype=FP8, device=DEV).t()),
         "quantize_fp8: out must have a contiguous last dim"),
        (lambda: kernel.quantize_fp8(x, per_row=True, scale_out=torch.empty(4, device=DEV)),
         "quantize_fp8: scale_out must be (4, 1) float32"),
        (lambda: kernel.quantize_fp8(x, scale_out=torch.empty((), dtype=torch.float16, device=DEV)),
         "quantize_fp8: scale_out must be () float32"),
        (lambda: kernel.quantize_fp8(x, per_row=True, scale_out=torch.empty(4, 2, device=DEV)[:, :1]),
         "quantize_fp8: scale_out must be contiguous"),
        (lambda: kernel.quantize_fp8(x, out=torch.empty(4, 8, dtype=FP8, device="meta")),
         f"quantize_fp8: out must be (4, 8) torch.float8_e4m3fn on {x.device}, got (4, 8) torch.float8_e4m3fn on meta"),
        (lambda: kernel.quantize_fp8(x, scale_out=torch.empty((), device="meta")),
         f"quantize_fp8: scale_out must be () float32 on {x.device}, got () torch.float32 on meta"),
    ]


def _mm_errors():
    a, b, sa, sb = _mm_args()
    meta = torch.empty(6, 8, dtype=FP8, device="meta")
    return [
        (lambda: kernel.scaled_mm(a[0], b, sa, sb),
         "scaled_mm: a must be a 2-D (M, K) tensor, got (8,) torch.float8_e4m3fn"),
        (lambda: kernel.scaled_mm(a.float(), b, sa, sb), "scaled_mm: a must be float8_e4m3fn, got torch.float32"),
        (lambda: kernel.scaled_mm(a, b.to(BF16), sa, sb), "scaled_mm: b must be float8_e4m3fn, got torch.bfloat16"),
        (lambda: kernel.scaled_mm(a[:0], b, sa, sb), "scaled_mm: a must not be empty, got shape (0, 8)"),
        (lambda: kernel.scaled_mm(a, b[:, :7], sa, sb),
         "scaled_mm: b must be (N, K) with K = a.shape[1] = 8, got (6, 7)"),
        (lambda: kernel.scaled_mm(a, meta, sa, sb),
         f"scaled_mm: b must be on {a.device} like the other inputs, got meta"),
        (lambda: kernel.scaled_mm(a, b, sa.double(), sb),
         "scaled_mm: scale_a must be a float32 tensor, got (5, 1) torch.float64"),
        (lambda: kernel.scaled_mm(a, b, sa.reshape(5), sb),
         "scaled_mm: scale_a must have shape (), (1,) or (5, 1) (per row of a), got (5,)"),
        (lambda: kernel.scaled_mm(a, b, sa, sb[:5]),
         "scaled_mm: scale_b must have shape (), (1,) or (6, 1) (per output channel), got (5, 1)"),
        (lambda: kernel.scaled_mm(a, b, sa, torch.ones((), device="meta")),
         f"scaled_mm: scale_b must be on {a.device} like the other inputs, got meta"),
        (lambda: kernel.scaled_mm(a, b, sa, sb, torch.ones(5, device=DEV)),
         "scaled_mm: bias must be a (6,) bfloat16, float16 or float32 tensor, got (5,) torch.float32"),
        (lambda: kernel.scaled_mm(a, b, sa, sb, torch.ones(6, dtype=torch.int32, device=DEV)),
         "scaled_mm: bias must be a (6,) bfloat16, float16 or float32 tensor, got (6,) torch.int32"),
        (lambda: kernel.scaled_mm(a, b, sa, sb, torch.ones(6, device="meta")),
         f"scaled_mm: bias must be on {a.device} like the other inputs, got meta"),
        (lambda: kernel.scaled_mm(a, b, sa, sb, out_dtype=FP8),
         "scaled_mm: out_dtype must be bfloat16, float16 or float32, got torch.float8_e4m3fn"),
        (lambda: kernel.scaled_mm(a, b, sa, sb, out=torch.empty(5, 6, device=DEV)),
         "scaled_mm: out must be (5, 6) torch.bfloat16"),
        (lambda: kernel.scaled_mm(a, b, sa, sb, out=torch.empty(6, 5, dtype=BF16, device=DEV)),
         "scaled_mm: out must be (5, 6) torch.bfloat16"),
        (lambda: kernel.scaled_mm(a, b, sa, sb, out=torch.empty(6, 5, dtype=BF16, device=DEV).t()),
         "scaled_mm: out must have a contiguous last dim"),
    ]


def _linear_errors():
    x = _x(2, 3, 8, dtype=BF16)
    w, sw = _operand(6, 8, True, seed=2)
    return [
        (lambda: kernel.fp8_linear(x.to(torch.int8), w, sw),
         "fp8_linear: x must be bfloat16, float16 or float32, got torch.int8"),
        (lambda: kernel.fp8_linear(x, w.to(BF16), sw), "fp8_linear: weight must be float8_e4m3fn, got torch.bfloat16"),
        (lambda: kernel.fp8_linear(x, w[0], sw), "fp8_linear: weight must be a 2-D (N, K) tensor, got (8,)"),
        (lambda: kernel.fp8_linear(x, w[:, :7], sw),
         "fp8_linear: weight must be (N, K) with K = x.shape[-1] = 8, got (6, 7)"),
        (lambda: kernel.fp8_linear(x, w.to("meta"), sw),
         f"fp8_linear: weight must be on {x.device} like the other inputs"),
        (lambda: kernel.fp8_linear(x, w, sw[:3]),
         "fp8_linear: weight_scale must have shape (), (1,) or (6, 1) (per output channel), got (3, 1)"),
        (lambda: kernel.fp8_linear(x, w, sw, torch.ones(8, device=DEV)), "fp8_linear: bias must be a (6,)"),
        (lambda: kernel.fp8_linear(x, w, sw, input_scale=sw), "fp8_linear: input_scale must be a per-tensor scale"),
        (lambda: kernel.fp8_linear(x, w, sw, out=torch.empty(2, 3, 6, device=DEV)),
         "fp8_linear: out must be (2, 3, 6) torch.bfloat16"),
        (lambda: kernel.fp8_linear(x, w, sw, out=torch.empty(3, 2, 6, dtype=BF16, device=DEV).transpose(0, 1)),
         "fp8_linear: out must be viewable as (6, 6) rows"),
    ]


_ERRORS = _quantize_errors() + _mm_errors() + _linear_errors()


@pytest.mark.parametrize("call, message", _ERRORS, ids=[message[:60] for _, message in _ERRORS])
def test_errors_name_function_argument_rule_and_value(call, message):
    with pytest.raises(ValueError, match=_esc(message)):
        call()


@pytest.mark.skipif(DEV == "cuda", reason="scale values are checked only for CPU scales (no device sync on CUDA)")
@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf"), float("nan")])
def test_non_finite_or_non_positive_scales_are_refused(bad):
    x = _x(4, 8)
    a, b, sa, sb = _mm_args()
    w, sw = _operand(6, 8, True, seed=2)
    bad_t = torch.tensor(bad)
    with pytest.raises(ValueError, match="quantize_fp8: scale must be finite and > 0"):
        kernel.quantize_fp8(x, bad_t)
    with pytest.raises(ValueError, match="scaled_mm: scale_b must be finite and > 0"):
        kernel.scaled_mm(a, b, sa, torch.cat([sb[:5], bad_t.reshape(1, 1)]))
    with pytest.raises(ValueError, match="fp8_linear: input_scale must be finite and > 0"):
        kernel.fp8_linear(x, w, sw, input_scale=bad_t)


def test_cpu_tensors_without_interpreter_are_refused(monkeypatch):
    monkeypatch.setattr(kernel, "_INTERPRET", False)
    x = torch.ones(2, 8)
    a, sa = ref.quantize_fp8(x, per_row=True)
    for call, fn, name in ((lambda: kernel.quantize_fp8(x), "quantize_fp8", "x"),
                           (lambda: kernel.scaled_mm(a, a, sa, sa), "scaled_mm", "a"),
                           (lambda: kernel.fp8_linear(x, a, sa), "fp8_linear", "x")):
        message = f"{fn}: {name} must be a CUDA tensor .*TRITON_INTERPRET=1.*got device cpu"
        with pytest.raises(ValueError, match=message):
            call()


# ------------------------------------------------------------------------------------------
# production shapes (GPU only)

GPU_SHAPES = [(6144, n, k) for n in (2048, 8192) for k in (2048, 8192)] + [
    (6144, 4096, 4096), (6144, 16384, 4096), (6144, 4096, 16384)]  # LTX-2: width 4096, FFN 4x


def _gpu_operand(rows, k, per_row, seed):
    g = torch.Generator(device="cuda").manual_seed(seed)
    x = torch.randn(rows, k, device="cuda", generator=g, dtype=BF16)
    return _ref_quantize_gpu(x, per_row)


def _ref_quantize_gpu(x, per_row):
    """reference.quantize_fp8 with the scale divided on the CPU: on CUDA, torch divides by the
    Python scalar 448 as a multiplication by its reciprocal (last-bit differences), while the
    CPU reference and the kernel divide exactly."""
    amax = x.float().abs().amax(dim=-1, keepdim=True) if per_row else x.float().abs().amax()
    scale = (amax.cpu().clamp(min=ref.FP8_MIN_AMAX) / ref.FP8_MAX).cuda()
    return ref.quantize_fp8(x, scale)


@pytest.mark.gpu
@pytest.mark.parametrize("m, n, k", GPU_SHAPES)
@pytest.mark.parametrize("per_row", [False, True])
def test_production_scaled_mm_on_gpu(m, n, k, per_row):
    a, sa = _gpu_operand(m, k, per_row, 1)
    b, sb = _gpu_operand(n, k, per_row, 2)
    bias = torch.randn(n, device="cuda", dtype=BF16)
    out = kernel.scaled_mm(a, b, sa, sb, bias)
    ref32 = ref.scaled_mm(a, b, sa, sb, bias, torch.float32)  # fp32 on the GPU
    acc = (a.to(BF16) @ b.to(BF16).T) * _scale(sa, m).to(BF16)
    lowp = acc * (sb.to(BF16).reshape(1, -1) if sb.numel() > 1 else sb.to(BF16).reshape(())) + bias
    check_budget(out, lowp, ref32, f"{m}x{n}x{k}")


@pytest.mark.gpu
@pytest.mark.parametrize("per_row", [False, True])
@pytest.mark.parametrize("k", [2048, 4096])
def test_production_quantize_on_gpu_bit_exact(per_row, k):
    x = torch.randn(6144, k, device="cuda", dtype=BF16) * 3
    q, s = kernel.quantize_fp8(x, per_row=per_row)
    q_ref, s_ref = _ref_quantize_gpu(x, per_row)
    assert torch.equal(s, s_ref.reshape(s.shape))
    assert torch.equal(q.view(torch.uint8), q_ref.view(torch.uint8))


@pytest.mark.gpu
@pytest.mark.parametrize("n, k", [(4096, 4096), (16384, 4096), (2048, 8192)])
def test_production_fp8_linear_on_gpu(n, k):
    x = torch.randn(2, 3072, k, device="cuda", dtype=BF16)
    w, sw = _gpu_operand(n, k, True, 3)
    y = kernel.fp8_linear(x, w, sw)
    q, sx = _ref_quantize_gpu(x.reshape(-1, k), True)
    ref32 = ref.scaled_mm(q, w, sx, sw, None, torch.float32)
    lowp = (q.to(BF16) @ w.to(BF16).T) * sx.to(BF16) * sw.to(BF16).reshape(1, -1)
    check_budget(y.reshape(-1, n), lowp, ref32, f"fp8_linear {n}x{k}")


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["auto", "triton"])
def test_packed_projections_on_gpu_within_one_rounding(backend):
    """models/packing.py's fp8 q/k/v: three e4m3 weights with their own per-tensor scales as one
    (3N, K) GEMM with a per-channel scale vector, against the three fp8_linear calls, at the 2B's
    widths. Same quantized x and products; only the accumulation order may differ for the wider N
    (tiles, split-K), so each element may differ by its one bf16 rounding: <= 2^-7 of its magnitude."""
    from ltxengine.ops import get_ops

    fp8_linear = get_ops(backend, "cuda").fp8_linear  # auto: cuBLASLt row-wise scaling
    n, k = 2048, 2048
    x = torch.randn(2, 6144, k, device="cuda", dtype=BF16)
    parts = [(*_gpu_operand(n, k, False, 20 + i), torch.randn(n, device="cuda", dtype=BF16)) for i in range(3)]
    assert len({float(s) for _, s, _ in parts}) == 3
    expected = torch.cat([fp8_linear(x, w, s, b) for w, s, b in parts], dim=-1)
    scales = torch.cat([s.reshape(1, 1).expand(n, 1) for _, s, _ in parts])
    got = fp8_linear(x, torch.cat([w for w, _, _ in parts]), scales, torch.cat([b for _, _, b in parts]))
    bound = torch.maximum(got.float().abs(), expected.float().abs()) * 2.0 ** -7
    assert bool(((got.float() - expected.float()).abs() <= bound).all())
