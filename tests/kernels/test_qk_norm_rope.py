"""Triton Q/K RMSNorm + RoPE against the fp32 reference (interpreter on CPU; compiled on a GPU)."""

import pytest
import torch

from ltxengine.kernels import qk_norm_rope as kernel
from ltxengine.ops import reference
from tests.kernels.budget import check_budget, max_err, ulp

EPS = 1e-6
DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(b=2, nq=7, nk=5, d=24, dtype=torch.bfloat16, seed=0, fused=False):
    g = torch.Generator().manual_seed(seed)
    if fused:  # q and k as strided column slices of one fused projection (B, N, 3D)
        qkv = torch.randn(b, nq, 3 * d, generator=g).to(DEV, dtype)
        q, k = qkv[..., :d], qkv[..., d:2 * d]
    else:
        q = torch.randn(b, nq, d, generator=g).to(DEV, dtype)
        k = torch.randn(b, nk, d, generator=g).to(DEV, dtype)
    qw = (1 + 0.3 * torch.randn(d, generator=g)).to(DEV, dtype)
    kw = (1 + 0.3 * torch.randn(d, generator=g)).to(DEV, dtype)
    return q, k, qw, kw


def _interleaved(b, n, d, seed=1):
    g = torch.Generator().manual_seed(seed)
    angle = torch.randn(b, n, d // 2, generator=g).repeat_interleave(2, dim=-1) * 3
    return angle.cos().to(DEV), angle.sin().to(DEV)


def _split(b, heads, n, d, seed=2):
    g = torch.Generator().manual_seed(seed)
    angle = torch.randn(b, heads, n, d // heads // 2, generator=g) * 3
    return angle.cos().to(DEV), angle.sin().to(DEV)


def _compare(q, k, qw, kw, rope, k_rope=None, what=""):
    out = kernel.qk_norm_rope(q, k, qw, kw, EPS, rope, k_rope)
    lowp = reference.qk_norm_rope(q, k, qw, kw, EPS, rope, k_rope)
    ref = reference.qk_norm_rope(q.float(), k.float(), qw.float(), kw.float(), EPS, rope, k_rope)
    for name, o, lp, r in zip("qk", out, lowp, ref):
        assert o.dtype == q.dtype and o.shape == r.shape
        if q.dtype == torch.float32:
            # Same fp32 math, different summation order: a few ulps of the output.
            assert max_err(o, r) <= 8 * ulp(torch.float32, r.abs().max().item()), what
        else:
            check_budget(o, lp, r, f"{what} {name}")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_interleaved_layout_self_attention(dtype):
    q, k, qw, kw = _inputs(nk=7, dtype=dtype)
    _compare(q, k, qw, kw, _interleaved(2, 7, 24), what="interleaved")


def test_interleaved_table_shared_across_batch_and_fused_projection_views():
    q, k, qw, kw = _inputs(nk=7, fused=True)
    assert q.stride(-1) == 1 and not q.is_contiguous()
    _compare(q, k, qw, kw, _interleaved(1, 7, 24), what="interleaved broadcast")


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_split_layout_with_separate_key_table(dtype):
    # LTX-2 cross-modal attention: 4 table heads over width 24 (head width 6), q and k positions differ.
    q, k, qw, kw = _inputs(nq=7, nk=5, dtype=dtype)
    _compare(q, k, qw, kw, _split(2, 4, 7, 24), _split(1, 4, 5, 24, seed=3), what="split")


def test_no_rope_cross_attention_lengths_differ():
    q, k, qw, kw = _inputs(nq=3, nk=11, d=40)
    _compare(q, k, qw, kw, None, what="norm only")


def test_last_dim_strided_input_is_copied_not_misread():
    q, k, qw, kw = _inputs(nk=7)
    qt = q.transpose(1, 2).contiguous().transpose(1, 2)  # same values, channel stride != 1
    assert qt.stride(-1) != 1
    _compare(qt, k, qw, kw, _interleaved(2, 7, 24), what="transposed")


def test_fp8_output_within_one_e4m3_step_of_quantized_reference():
    q, k, qw, kw = _inputs(nk=7)
    rope = _interleaved(2, 7, 24)
    scales = (torch.tensor([0.01], device=DEV), torch.tensor([0.02], device=DEV))
    out = kernel.qk_norm_rope(q, k, qw, kw, EPS, rope, fp8_scales=scales)
    ref = reference.qk_norm_rope(q.float(), k.float(), qw.float(), kw.float(), EPS, rope)
    for o, r, s in zip(out, ref, scales):
        assert o.dtype == torch.float8_e4m3fn
        target = (r / s).clamp(-448, 448)
        # The kernel rounds its fp32 value once to e4m3: within one e4m3 step of the exact value.
        step = torch.exp2(torch.floor(torch.log2(target.abs().clamp(min=2.0 ** -6))) - 3)
        assert ((o.float() - target).abs() <= step).all()


def test_out_buffers_are_written_in_place_and_inputs_untouched():
    q, k, qw, kw = _inputs(nk=7)
    rope = _interleaved(2, 7, 24)
    before = [t.clone() for t in (q, k, qw, kw, *rope)]
    q_out, k_out = torch.empty_like(q), torch.empty_like(k)
    rq, rk = kernel.qk_norm_rope(q, k, qw, kw, EPS, rope, q_out=q_out, k_out=k_out)
    assert rq is q_out and rk is k_out
    for t, b in zip((q, k, qw, kw, *rope), before):
        assert torch.equal(t, b)
    assert torch.equal(rq, kernel.qk_norm_rope(q, k, qw, kw, EPS, rope)[0])


@pytest.mark.parametrize("change, message", [
    (dict(q=torch.zeros(2, 7)), "q must be a 3-D tensor"),
    (dict(k=torch.zeros(3, 7, 24)), "k must be (B=2, Nk, D=24)"),
    (dict(qw=torch.zeros(23)), "q_weight must be (24,)"),
    (dict(eps=0.0), "eps must be > 0"),
    (dict(rope=(torch.zeros(2, 7, 20), torch.zeros(2, 7, 20))), "rope tables must be (B|1, N, D) interleaved"),
    (dict(rope=(torch.zeros(2, 7, 24, dtype=torch.float64),) * 2), "rope cos/sin must be fp32"),
    (dict(k_rope=(torch.zeros(1, 4, 7, 3), torch.zeros(1, 4, 7, 3))), "k_rope must use the same layout"),
    (dict(q_out=torch.zeros(2, 7, 24)), "q_out must be (2, 7, 24) torch.bfloat16"),
    (dict(fp8_scales=(torch.tensor([1.0, 2.0]), torch.tensor([1.0]))), "fp8_scales[0] must be a one-element"),
    (dict(q=torch.zeros(2, 7, 24, dtype=torch.int32)), "q must be float32, bfloat16 or float16"),
])
def test_errors_name_argument_rule_and_value(change, message):
    q, k, qw, kw = _inputs(nk=7)
    args = dict(q=q, k=k, qw=qw, kw=kw, eps=EPS, rope=_interleaved(2, 7, 24), k_rope=None)
    extra = {n: change.pop(n) for n in ("q_out", "fp8_scales") if n in change}
    args.update({n: (v.to(DEV) if isinstance(v, torch.Tensor) else v) for n, v in change.items()})
    if isinstance(args["rope"], tuple):
        args["rope"] = tuple(t.to(DEV) for t in args["rope"])
    if args["k_rope"] is not None:
        args["k_rope"] = tuple(t.to(DEV) for t in args["k_rope"])
    extra = {n: (v.to(DEV) if isinstance(v, torch.Tensor) else tuple(t.to(DEV) for t in v)) for n, v in extra.items()}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("|", r"\|")
                       .replace("[", r"\[").replace("]", r"\]")):
        kernel.qk_norm_rope(args["q"], args["k"], args["qw"], args["kw"], args["eps"], args["rope"],
                            args["k_rope"], **extra)


@pytest.mark.gpu
@pytest.mark.parametrize("b, n, d, heads, layout", [
    (2, 6144, 2048, None, "interleaved"),  # LTX-Video 2B, CFG batch
    (1, 6144, 4096, None, "interleaved"),  # LTX-Video 13B
    (2, 6144, 4096, 32, "split"),  # LTX-2 video
    (2, 126, 2048, 32, "split"),  # LTX-2 audio
])
def test_production_shapes_on_gpu(b, n, d, heads, layout):
    q, k, qw, kw = _inputs(b, n, n, d)
    rope = _interleaved(b, n, d) if layout == "interleaved" else _split(1, heads, n, d)
    _compare(q, k, qw, kw, rope, what=f"{layout} {b}x{n}x{d}")
