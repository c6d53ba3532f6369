"""Triton gated-attention output gate against the fp32 reference (interpreter on CPU; compiled on a GPU)."""

import pytest
import torch

from ltxengine.kernels import head_gate as kernel
from ltxengine.ops import reference
from tests.kernels.budget import check_budget, max_err, ulp

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def _inputs(b=2, n=7, heads=3, head_dim=12, dtype=torch.bfloat16, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(b, n, heads * head_dim, generator=g) * 2).to(DEV, dtype)
    logits = (torch.randn(b, n, heads, generator=g) * 3).to(DEV, dtype)
    return x, logits


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
@pytest.mark.parametrize("heads,head_dim", [(3, 12), (2, 7), (1, 40)])
def test_matches_reference(dtype, heads, head_dim):
    x, logits = _inputs(heads=heads, head_dim=head_dim, dtype=dtype)
    x0, l0 = x.clone(), logits.clone()
    out = kernel.head_gate(x, logits)
    ref = reference.head_gate(x.float(), logits.float())
    if dtype == torch.float32:
        # exp-based sigmoid vs torch's: a few fp32 ulps
        assert max_err(out, ref) <= 8 * ulp(torch.float32, ref.abs().max().item())
    else:
        check_budget(out, reference.head_gate(x, logits), ref, f"{dtype} {heads}x{head_dim}")
    assert torch.equal(x, x0) and torch.equal(logits, l0)


def test_strided_views_fp32_logits_and_out():
    base, _ = _inputs(n=14)
    x = base[:, ::2]  # token stride 2
    logits = torch.randn(2, 7, 3, generator=torch.Generator().manual_seed(4)).to(DEV)  # fp32 logits, bf16 x
    out = torch.empty_like(x)
    assert kernel.head_gate(x, logits, out=out) is out
    check_budget(out, reference.head_gate(x, logits), reference.head_gate(x.float(), logits), "strided")
    xt = x.transpose(1, 2).contiguous().transpose(1, 2)  # last dim strided: copied
    assert torch.equal(kernel.head_gate(xt, logits), out)


def test_zero_logits_are_identity_and_large_logits_saturate():
    x, logits = _inputs(dtype=torch.float32)
    assert torch.equal(kernel.head_gate(x, torch.zeros_like(logits)), x)
    big = torch.full_like(logits, 100.0)
    assert torch.equal(kernel.head_gate(x, big), 2 * x)
    assert torch.isfinite(kernel.head_gate(x, -big)).all() and max_err(kernel.head_gate(x, -big), 0 * x) < 1e-30


@pytest.mark.parametrize("bad,message", [
    (dict(logits=torch.zeros(2, 7, 5)), r"logits must be \(B, N, H\) = \(2, 7, H\) with H dividing 36"),
    (dict(logits=torch.zeros(2, 6, 3)), r"logits must be \(B, N, H\)"),
    (dict(x=torch.zeros(7, 36)), r"x must be a 3-D tensor, got \(7, 36\)"),
    (dict(out=torch.zeros(2, 7, 36, dtype=torch.float16)), r"out must be \(2, 7, 36\) torch.bfloat16"),
])
def test_errors_are_named(bad, message):
    x, logits = _inputs()
    args = dict(x=x, logits=logits, out=None)
    args.update({k: v.to(DEV) for k, v in bad.items()})
    with pytest.raises(ValueError, match=message):
        kernel.head_gate(args["x"], args["logits"], out=args["out"])


def test_gated_transformer_with_triton_ops_matches_torch_ops():
    """kernels='triton' equals kernels='torch' on the tiny 2.5 transformer (every Triton op, head_gate
    included), in fp32: within 1e-5 of the output scale (measured ~1e-7)."""
    from ltxengine.models.ltx2_transformer import LTX2Transformer, first_frame_keyframes
    from ltxengine.ops import get_ops, set_ops
    from ltxengine.presets import TINY_LTX25
    from tests.helpers import perturb_
    from tests.models.ltx2_transformer_fixtures import F, H, W, inputs, run_ours

    torch.manual_seed(0)
    model = LTX2Transformer(TINY_LTX25).eval()
    perturb_(model, seed=1, std=0.2)
    x = inputs(TINY_LTX25)
    kf = first_frame_keyframes(2, F, H, W)
    want = run_ours(model, x, keyframes=kf)
    set_ops(model, get_ops("triton", "cpu"))
    got = run_ours(model, x, keyframes=kf)
    for g, w in zip(got, want):
        assert max_err(g, w) <= 1e-5 * max(1.0, w.abs().max().item())
