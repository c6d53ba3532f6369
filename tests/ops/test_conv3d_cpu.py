"""reference.conv3d: oneDNN's convolution (ops/onednn.py, a custom op) on the CPU where torch's heuristic
would take its im2col path (bench/cpu_conv3d.py), F.conv3d everywhere else.

Budget: 1e-5 of the output's scale against a float64 conv, the VAE parity tests' REL_TOL (both fp32
paths measure ~5e-7 at these shapes; only the order of the K = Cin*27 products' sums differs).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ltxengine.executor.plan import fake_mode
from ltxengine.ops import reference
from tests.helpers import assert_close_scaled

REL = 1e-5
needs_onednn = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="torch built without oneDNN")


def _conv(shape, cout, k, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g).to(dtype)
    w = (torch.randn(cout, shape[1], k, k, k, generator=g) / (shape[1] * k ** 3) ** 0.5).to(dtype)
    return x, w, torch.randn(cout, generator=g).to(dtype)


@pytest.fixture
def onednn_calls(monkeypatch):
    calls = []
    real = torch.mkldnn_convolution

    def counted(*args):
        calls.append(args[0].shape)
        return real(*args)

    monkeypatch.setattr(torch, "mkldnn_convolution", counted)
    return calls


@needs_onednn
@pytest.mark.parametrize("shape,cout,stride", [((1, 8, 11, 16, 24), 16, (1, 1, 1)),
                                               ((1, 4, 9, 16, 16), 8, (2, 2, 2)),
                                               ((2, 8, 5, 8, 8), 8, (1, 2, 2))])
def test_onednn_route_matches_float64(shape, cout, stride, onednn_calls):
    # batch 1 with N*C*T*H <= 20480: torch itself would run slow_conv3d; batch 2 it routes to oneDNN too
    x, w, b = _conv(shape, cout, 3)
    pad = (0, 1, 1)
    got = reference.conv3d(x, w, b, stride, pad)
    assert len(onednn_calls) == 1  # the oneDNN path really ran
    exact = F.conv3d(x.double(), w.double(), b.double(), stride=stride, padding=pad)
    assert got.shape == exact.shape and got.dtype == torch.float32 and got.is_contiguous()
    assert_close_scaled(got, exact, REL, f"conv3d {shape}")
    assert_close_scaled(got, F.conv3d(x, w, b, stride=stride, padding=pad), REL, "against torch's fp32 route")


@needs_onednn
@pytest.mark.parametrize("shape,cout,k,dtype", [((1, 16, 4, 6, 6), 8, 1, torch.float32),  # 1x1x1
                                                ((1, 256, 3, 2, 2), 256, 3, torch.float32),  # weights >> input
                                                ((1, 8, 5, 8, 8), 8, 3, torch.float64)])
def test_torch_route_kept(shape, cout, k, dtype, onednn_calls):
    x, w, b = _conv(shape, cout, k, dtype)
    pad = (0, k // 2, k // 2)
    assert torch.equal(reference.conv3d(x, w, b, (1, 1, 1), pad), F.conv3d(x, w, b, padding=pad))
    assert onednn_calls == []


@needs_onednn
def test_fake_trace_sees_the_same_op(onednn_calls):
    # the memory plan traces on fake tensors: the custom op's fake implementation gives F.conv3d's metadata,
    # and the trace records the op the real run dispatches
    from ltxengine.executor.memory import trace_allocations
    x, w, b = _conv((1, 8, 11, 16, 24), 16, 3)
    with fake_mode():
        fx = torch.empty(x.shape)
        got, want = reference.conv3d(fx, w, b, (1, 1, 1), (0, 1, 1)), F.conv3d(fx, w, b, padding=(0, 1, 1))
        assert (got.shape, got.stride(), got.dtype) == (want.shape, want.stride(), want.dtype)
    assert onednn_calls == []
    fn = lambda x: reference.conv3d(x, w, b, (1, 1, 1), (0, 1, 1))  # noqa: E731
    with fake_mode():
        fake = trace_allocations(fn, torch.empty(x.shape))
    assert fake.ops == trace_allocations(fn, x).ops == ("ltxengine.onednn_conv3d.default",)


@needs_onednn
def test_recorded_gradients_keep_torch_route(onednn_calls):
    # the custom op has no backward: with autograd recording, F.conv3d (whose gradients work)
    x, w, b = _conv((1, 8, 5, 8, 8), 8, 3)
    w.requires_grad_(True)
    reference.conv3d(x, w, b, (1, 1, 1), (0, 1, 1)).sum().backward()
    assert w.grad is not None and onednn_calls == []
    with torch.no_grad():
        reference.conv3d(x, w, b, (1, 1, 1), (0, 1, 1))
    assert len(onednn_calls) == 1


def test_causal_conv3d_through_conv3d(onednn_calls):
    # both padding modes of the VAEs' conv reach reference.conv3d and keep F.conv3d's results within budget
    x, w, b = _conv((1, 8, 5, 16, 24), 8, 3)
    for mode in ("zeros", "reflect"):
        got = reference.causal_conv3d(x, w, b, (1, 1, 1), True, mode)
        padded = torch.cat([x[:, :, :1].expand(-1, -1, 2, -1, -1), x], dim=2)
        if mode == "zeros":
            want = F.conv3d(padded.double(), w.double(), b.double(), padding=(0, 1, 1))
        else:
            want = F.conv3d(F.pad(padded, (1, 1, 1, 1, 0, 0), mode="reflect").double(), w.double(), b.double())
        assert_close_scaled(got, want, REL, f"causal_conv3d {mode}")
    assert len(onednn_calls) == (2 if torch.backends.mkldnn.is_available() else 0)
