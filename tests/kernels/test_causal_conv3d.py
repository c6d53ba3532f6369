"""Implicit-GEMM causal conv3d (kernels/causal_conv3d.py) against the fp32 reference.

Error budgets:
- fp32: max error <= 1e-5 * max(1, max|ref|). The kernel sums the same K <= 135 fp32 products as
  the reference in a different order; fp32 reassociation of K terms of size ~ output scale moves
  the result by a few K * 2**-24 relative (~1e-6), so 1e-5 leaves ~10x headroom yet catches any
  wrong tap, padding index or prologue step (those are O(0.1) relative).
- bf16/fp16: max|kernel - ref32| <= 2 * max|torch_lowp - ref32| + one ulp of the dtype at the
  output's magnitude, torch_lowp being the reference run on the low-precision inputs (it rounds
  the prologue after every step and the output once); the floor covers the output rounding.
Under the interpreter a 3x3x3 conv on the shapes below takes ~0.5 s.
"""

import math

import pytest
import torch

import ltxengine.kernels.causal_conv3d as conv_module
from ltxengine.kernels.causal_conv3d import causal_conv3d
from ltxengine.ops import reference

B, CIN, COUT, T, H, W = 2, 5, 7, 5, 7, 9


def _inputs(kernel=(3, 3, 3), dtype=torch.float32, bias=True, mod=False, seed=0, shape=(B, CIN, T, H, W),
            cout=COUT):
    g = torch.Generator().manual_seed(seed)
    b, cin = shape[:2]
    x = torch.randn(shape, generator=g).to(dtype)
    fan_in = cin * math.prod(kernel)
    w = (torch.randn((cout, cin) + tuple(kernel), generator=g) / fan_in ** 0.5).to(dtype)
    bias_t = torch.randn(cout, generator=g).to(dtype) if bias else None
    scale = (torch.randn(b, cin, generator=g) * 0.5).to(dtype) if mod else None
    shift = (torch.randn(b, cin, generator=g) * 0.5).to(dtype) if mod else None
    return x, w, bias_t, scale, shift


def _f32(t):
    return None if t is None else t.float()


def _ulp(dtype, magnitude):
    mant = {torch.bfloat16: 7, torch.float16: 10}[dtype]
    return 2.0 ** (math.floor(math.log2(max(magnitude, 1e-30))) - mant)


def _check(x, w, bias, stride, causal, mode="zeros", out=None, **prologue):
    """Run the kernel, check inputs are untouched and the error is within budget; returns the error."""
    before = [t.clone() for t in (x, w, bias, prologue.get("scale"), prologue.get("shift")) if t is not None]
    got = causal_conv3d(x, w, bias, stride, causal, mode, out=out, **prologue)
    after = [t for t in (x, w, bias, prologue.get("scale"), prologue.get("shift")) if t is not None]
    assert all(torch.equal(a, b) for a, b in zip(before, after)), "inputs were modified"
    p32 = dict(prologue, scale=_f32(prologue.get("scale")), shift=_f32(prologue.get("shift")))
    ref = reference.causal_conv3d(x.float(), w.float(), _f32(bias), stride, causal, mode, **p32)
    assert got.dtype == x.dtype and got.shape == ref.shape
    err = (got.double() - ref.double()).abs().max().item()
    scale = ref.abs().max().item()
    if x.dtype == torch.float32:
        budget = 1e-5 * max(1.0, scale)
    else:
        lowp = reference.causal_conv3d(x, w, bias, stride, causal, mode, **prologue)
        budget = 2 * (lowp.double() - ref.double()).abs().max().item() + _ulp(x.dtype, scale)
    assert err <= budget, f"max error {err:.3e} > budget {budget:.3e} (output scale {scale:.3e})"
    return got


GEOMETRIES = [  # kernel, stride, causal, padding mode, bias
    ((3, 3, 3), (1, 1, 1), True, "zeros", True),
    ((3, 3, 3), (1, 1, 1), False, "reflect", True),
    ((3, 3, 3), (1, 1, 1), False, "replicate", False),
    ((3, 3, 3), (2, 2, 2), True, "zeros", True),
    ((3, 3, 3), (1, 2, 2), False, "reflect", True),
    ((3, 3, 3), (2, 2, 2), False, "replicate", True),
    ((1, 1, 1), (1, 1, 1), True, "zeros", True),
    ((1, 1, 1), (2, 2, 2), False, "reflect", False),
    ((3, 1, 1), (1, 1, 1), True, "reflect", True),
    ((3, 1, 1), (2, 1, 1), False, "zeros", True),
    ((1, 3, 3), (1, 1, 1), False, "reflect", True),
    ((1, 3, 3), (1, 2, 2), True, "replicate", False),
    ((3, 5, 3), (1, 1, 1), False, "reflect", True),  # any odd kernel: pad 2 on H
]


@pytest.mark.parametrize("kernel,stride,causal,mode,bias", GEOMETRIES)
def test_conv_matches_reference_fp32(kernel, stride, causal, mode, bias):
    x, w, b, _, _ = _inputs(kernel, torch.float32, bias)
    _check(x, w, b, stride, causal, mode)


# bf16 on a subset (the index arithmetic is dtype-independent): every kernel shape, stride and mode.
@pytest.mark.parametrize("kernel,stride,causal,mode,bias", [GEOMETRIES[i] for i in (1, 3, 5, 7, 9, 11)])
def test_conv_matches_reference_bf16(kernel, stride, causal, mode, bias):
    x, w, b, _, _ = _inputs(kernel, torch.bfloat16, bias)
    _check(x, w, b, stride, causal, mode)


PROLOGUES = {
    "norm": dict(norm_eps=1e-6),
    "norm+mod": dict(norm_eps=1e-6, mod=True),
    "norm+mod+silu": dict(norm_eps=1e-6, mod=True, silu=True),
    "silu": dict(silu=True),
    "scale-only": dict(mod="scale"),
    "shift-only": dict(mod="shift"),
}


def _prologue_args(name, dtype, seed=1):
    spec = dict(PROLOGUES[name])
    mod = spec.pop("mod", False)
    x, w, b, scale, shift = _inputs((3, 3, 3), dtype, True, mod=bool(mod), seed=seed)
    if mod == "scale":
        shift = None
    if mod == "shift":
        scale = None
    return x, w, b, dict(spec, scale=scale, shift=shift)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("name,mode", [("norm", "zeros"), ("norm+mod", "zeros"), ("norm+mod+silu", "reflect"),
                                       ("silu", "replicate"), ("scale-only", "reflect"), ("shift-only", "zeros")])
def test_prologue_matches_reference(dtype, name, mode):
    # "zeros" with a shift checks that padding is zero after the prologue, reflect/replicate that
    # the border holds activated copies.
    x, w, b, prologue = _prologue_args(name, dtype)
    _check(x, w, b, (1, 1, 1), name != "silu", mode, **prologue)


def test_float16_with_prologue():
    x, w, b, prologue = _prologue_args("norm+mod+silu", torch.float16)
    _check(x, w, b, (1, 2, 2), False, "reflect", **prologue)


def test_prologue_with_stride():
    x, w, b, prologue = _prologue_args("norm+mod+silu", torch.bfloat16)
    _check(x, w, b, (2, 2, 2), True, "zeros", **prologue)


def test_channel_slice_input():
    big, w, b, _, _ = _inputs((3, 3, 3), torch.bfloat16, shape=(B, CIN + 3, T, H, W))
    x = big[:, 2:2 + CIN]  # strided in B: a slice of a wider activation
    assert not x.is_contiguous()
    _check(x, w[:, :CIN].contiguous(), b, (1, 1, 1), False, "reflect", norm_eps=1e-6, silu=True)


def test_channels_last_view_input():
    x, w, b, scale, shift = _inputs((3, 3, 3), torch.float32, mod=True, seed=3)
    x = x.permute(0, 2, 3, 4, 1).contiguous().permute(0, 4, 1, 2, 3)  # channel stride 1
    assert not x.is_contiguous()
    _check(x, w, b, (1, 2, 2), True, "zeros", norm_eps=1e-6, scale=scale, shift=shift, silu=True)


def test_out_written_in_place():
    x, w, b, _, _ = _inputs((3, 1, 1), torch.float32, seed=4)
    out = torch.full((B, COUT, T, H, W), float("nan"))
    got = _check(x, w, b, (1, 1, 1), True, out=out)
    assert got is out and not torch.isnan(out).any()


def test_out_strided_view():
    x, w, b, _, _ = _inputs((1, 3, 3), torch.bfloat16, seed=5)
    big = torch.zeros((B, COUT + 2, T, H, W), dtype=torch.bfloat16)
    out = big[:, 1:1 + COUT]
    got = _check(x, w, b, (1, 1, 1), False, "reflect", out=out)
    assert got.data_ptr() == out.data_ptr()
    assert (big[:, 0] == 0).all() and (big[:, -1] == 0).all()  # neighbours untouched


def test_no_padded_copy_and_no_torch_conv(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("causal_conv3d must not pad, concatenate or fall back to torch's conv")

    x, w, b, prologue = _prologue_args("norm+mod+silu", torch.float32, seed=6)
    expected = reference.causal_conv3d(x, w, b, (1, 1, 1), False, "reflect", **prologue)
    for target in ("pad", "conv3d"):
        monkeypatch.setattr(torch.nn.functional, target, refuse)
    monkeypatch.setattr(torch, "cat", refuse)
    got = causal_conv3d(x, w, b, (1, 1, 1), False, "reflect", **prologue)
    monkeypatch.undo()
    assert (got - expected).abs().max().item() <= 1e-5 * max(1.0, expected.abs().max().item())


def test_int64_offset_path(monkeypatch):
    # Tensors past 2**31 elements switch the kernel to int64 offsets; too big for a CPU test, so
    # the threshold is lowered to run that variant here.
    monkeypatch.setattr(conv_module, "_WIDE_FROM", 0)
    x, w, b, prologue = _prologue_args("norm+mod+silu", torch.float32, seed=7)
    _check(x, w, b, (1, 2, 2), False, "reflect", **prologue)


def test_extent_of_strided_views():
    t = torch.empty(4, 6, 8)
    assert conv_module._extent(t) == t.numel()
    assert conv_module._extent(t[:, 1:3, ::2]) == 1 + 3 * 48 + 1 * 8 + 3 * 2  # from the view's first element
    assert conv_module._extent(t[:1, :1].expand(4, 6, 8)) == 8


# ---- validation -----------------------------------------------------------------------------

def _call(**over):
    x, w, b, scale, shift = _inputs((3, 3, 3), torch.float32, mod=True, shape=(1, 3, 2, 3, 3), cout=2)
    args = dict(x=x, weight=w, bias=b, stride=(1, 1, 1), causal=True, spatial_padding_mode="zeros",
                norm_eps=1e-6, scale=scale, shift=shift, silu=True, out=None)
    for key, value in over.items():
        args[key] = value(args) if callable(value) else value
    return causal_conv3d(args.pop("x"), args.pop("weight"), args.pop("bias"), args.pop("stride"),
                         args.pop("causal"), args.pop("spatial_padding_mode"), **args)


META = torch.device("meta")
ERRORS = [
    (dict(x=lambda a: a["x"][0]), "x must be a 5-D tensor"),
    (dict(x=[1.0]), "x must be a 5-D tensor"),
    (dict(x=lambda a: a["x"].to(torch.int32)), "x must be float32, bfloat16 or float16"),
    (dict(x=lambda a: a["x"][:0]), "x must not be empty"),
    (dict(x=lambda a: a["x"][:, :, :0]), "x must not be empty"),
    # a stride-0 view: 2**31 voxels without the memory
    (dict(x=lambda a: a["x"][:, :, :1, :1, :1].expand(1, 3, 2**15, 2**8, 2**8)),
     r"x must have fewer than 2\*\*31 voxels B\*T\*H\*W, got 2147483648"),
    (dict(weight=lambda a: a["weight"][0]), "weight must be a 5-D tensor"),
    (dict(weight=lambda a: a["weight"][:, :2]), r"weight must be \(Cout>0, Cin=3"),
    (dict(weight=lambda a: a["weight"][:0]), r"weight must be \(Cout>0"),
    (dict(weight=lambda a: a["weight"].double()), "weight must have x's dtype"),
    (dict(weight=lambda a: a["weight"].to(META)), "weight must be on x's device"),
    (dict(weight=lambda a: a["weight"][:, :, :2]), r"kernel sizes must be odd, got \(2, 3, 3\)"),
    (dict(weight=lambda a: a["weight"][..., :2]), r"kernel sizes must be odd, got \(3, 3, 2\)"),
    (dict(bias=lambda a: a["bias"][:1]), r"bias must be \(2,\)"),
    (dict(bias=lambda a: a["bias"][None]), "bias must be a 1-D tensor"),
    (dict(bias=lambda a: a["bias"].bfloat16()), "bias must have x's dtype"),
    (dict(bias=lambda a: a["bias"].to(META)), "bias must be on x's device"),
    (dict(stride=(1, 1)), "stride must be 3 positive ints"),
    (dict(stride=(1, 0, 1)), "stride must be 3 positive ints"),
    (dict(stride=(1, -2, 1)), "stride must be 3 positive ints"),
    (dict(stride=(1.0, 1, 1)), "stride must be 3 positive ints"),
    (dict(stride=(True, 1, 1)), "stride must be 3 positive ints"),
    (dict(stride=2), "stride must be 3 positive ints"),
    (dict(spatial_padding_mode="circular"), "spatial_padding_mode 'circular' is not supported"),
    (dict(spatial_padding_mode="mirror"), "spatial_padding_mode must be one of"),
    (dict(spatial_padding_mode="reflect", x=lambda a: a["x"][..., :1, :]), r"reflect padding \(1, 1\) must be smaller"),
    (dict(spatial_padding_mode="reflect", x=lambda a: a["x"][..., :1]),
     r"reflect padding \(1, 1\) must be smaller than the input's \(H, W\) = \(3, 1\)"),
    (dict(norm_eps=0.0), "norm_eps must be a number > 0, got 0.0"),
    (dict(norm_eps=-1e-6), "norm_eps must be a number > 0"),
    (dict(norm_eps="1e-6"), "norm_eps must be a number > 0"),
    (dict(scale=lambda a: a["scale"][:, :2]), r"scale must be \(B, Cin\) = \(1, 3\), got \(1, 2\)"),
    (dict(scale=lambda a: a["scale"][0]), r"scale must be \(B, Cin\)"),
    (dict(shift=lambda a: a["shift"].t()), r"shift must be \(B, Cin\) = \(1, 3\), got \(3, 1\)"),
    (dict(shift=3.0), r"shift must be \(B, Cin\)"),
    (dict(scale=lambda a: a["scale"].to(torch.int64)), "scale must be float32, bfloat16 or float16"),
    (dict(shift=lambda a: a["shift"].to(META)), "shift must be on x's device"),
    (dict(out=torch.empty(1, 2, 2, 3, 4)), r"out must be \(1, 2, 2, 3, 3\) torch.float32"),
    (dict(out=torch.empty(1, 2, 2, 3, 3, dtype=torch.bfloat16)), "out must be .* got .*torch.bfloat16"),
    (dict(out=torch.empty(1, 2, 2, 3, 3, device=META)), "out must be .* got .*meta"),
    (dict(out="buffer"), "out must be"),
]


@pytest.mark.parametrize("over,match", ERRORS)
def test_errors(over, match):
    with pytest.raises(ValueError, match="causal_conv3d: " + match):
        _call(**over)


def test_small_valid_call_for_error_fixture():
    # The fixture the error cases perturb is itself valid (so each case fails for its own reason).
    out = torch.empty(1, 2, 2, 3, 3)
    assert _call(out=out) is out


# ---- production shapes (GPU only) -----------------------------------------------------------

PRODUCTION = [  # x shape, Cout, padding mode, causal, prologue, channels-last x
    ((1, 512, 16, 64, 96), 512, "reflect", False, "norm+mod+silu", False),  # LTX-2 decoder up-block conv
    ((1, 512, 16, 64, 96), 512, "reflect", False, "norm+mod+silu", True),  # same, channels-last (BLOCK_K 64)
    ((1, 1024, 16, 16, 24), 1024, "zeros", False, "norm+mod+silu", False),  # LTX-Video 0.9.5 mid block
    ((1, 128, 9, 512, 768), 128, "zeros", False, "norm+silu", False),  # last-stage 128-ch conv, T cut from 121
    ((1, 128, 9, 512, 768), 48, "reflect", False, "norm+mod+silu", False),  # conv_out 128 -> 48
]


@pytest.mark.gpu
@pytest.mark.parametrize("shape,cout,mode,causal,prologue,channels_last", PRODUCTION)
def test_production_shapes_gpu(shape, cout, mode, causal, prologue, channels_last):
    g = torch.Generator(device="cuda").manual_seed(0)
    dev, dt = torch.device("cuda"), torch.bfloat16
    cin = shape[1]
    x = torch.randn(shape, generator=g, device=dev).to(dt)
    if channels_last:
        x = x.to(memory_format=torch.channels_last_3d)
    w = (torch.randn((cout, cin, 3, 3, 3), generator=g, device=dev) / (27 * cin) ** 0.5).to(dt)
    b = torch.randn(cout, generator=g, device=dev).to(dt)
    kw = dict(norm_eps=1e-6, silu="silu" in prologue)
    if "mod" in prologue:
        kw.update(scale=(torch.randn(1, cin, generator=g, device=dev) * 0.5).to(dt),
                  shift=(torch.randn(1, cin, generator=g, device=dev) * 0.5).to(dt))
    # cuDNN would run the fp32 reference in TF32 (its default), which is not an fp32 oracle.
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        _check(x, w, b, (1, 1, 1), causal, mode, **kw)
