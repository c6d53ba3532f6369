"""ltxengine/ops/native.py, the torch backend's ops: on fp32 inputs the reference bit for bit; on
bf16/fp16 ones diffusers' own arithmetic for each site bit for bit, within a stated bound of the
fp64 math; and whole tiny transformers in bf16 equal to diffusers' in bf16 (same weights)."""

import dataclasses

import pytest
import torch
import torch.nn as nn

from ltxengine.ops import TORCH_OPS, native, reference, set_ops

diffusers = pytest.importorskip("diffusers")
from diffusers.models.normalization import RMSNorm  # noqa: E402
from diffusers.models.transformers import transformer_ltx, transformer_ltx2  # noqa: E402

B, N, HEADS, R = 2, 7, 3, 4
D = HEADS * 2 * R  # 24: three heads of split halves of 4, or 12 interleaved pairs
EPS = 1e-6
UNIT = {torch.bfloat16: 2.0 ** -8, torch.float16: 2.0 ** -11}  # unit roundoff of the 16-bit formats


def _randn(*shape, seed, scale=1.0, dtype=torch.float32):
    return (scale * torch.randn(*shape, generator=torch.Generator().manual_seed(seed))).to(dtype)


def _tables(split: bool, seed: int):
    # fp32 angles as the models make them: split (B, H, N, R), interleaved (B, N, D) each angle twice
    angles = _randn(B, HEADS, N, R, seed=seed, scale=3.0) if split else \
        _randn(B, N, D // 2, seed=seed, scale=3.0).repeat_interleave(2, -1)
    return angles.cos(), angles.sin()


def _mods(dtype, per_token: bool):
    rows = N if per_token else 1
    return _randn(B, rows, D, seed=3, scale=0.5, dtype=dtype), _randn(B, rows, D, seed=4, scale=0.5, dtype=dtype)


def _calls(dtype, device="cpu"):
    """(name, function of an ops module, args): every native op in each of its variants."""
    return [(name, op, tuple(a.to(device) if isinstance(a, torch.Tensor) else a for a in args))
            for name, op, args in _cpu_calls(dtype)]


def _cpu_calls(dtype):
    x, y = _randn(B, N, D, seed=1, scale=2.0, dtype=dtype), _randn(B, N, D, seed=2, dtype=dtype)
    w = (1 + _randn(D, seed=5, scale=0.3)).to(dtype)
    packed = _randn(B, N, 3 * D, seed=6, dtype=dtype)  # q/k as strided views of one projection
    shift, scale = _mods(dtype, False)
    tshift, tscale = _mods(dtype, True)
    out = [(f"ada_norm {kind} {mod}", "ada_norm", (x, sh, sc, EPS, kind))
           for kind in ("rms", "layer") for mod, sh, sc in
           (("sample", shift, scale), ("token", tshift, tscale), ("plain", None, None))]
    out += [("gated_residual", "gated_residual", (x, y, scale)), ("residual", "gated_residual", (x, y, None)),
            ("gated_residual token", "gated_residual", (x, y, tscale)),
            ("head_gate", "head_gate", (x, _randn(B, N, HEADS, seed=7, dtype=dtype))),
            ("residual_ada_norm", "residual_ada_norm", (x, y, scale, shift, tscale, EPS, "rms")),
            ("residual_ada_norm layer", "residual_ada_norm", (x, y, None, None, None, EPS, "layer")),
            ("dual_ada_norm", "dual_ada_norm", (x, y, scale, shift, tscale, tshift, scale, EPS, "rms")),
            ("dual_ada_norm no residual", "dual_ada_norm", (x, None, None, shift, None, None, tscale, EPS, "rms")),
            ("dual_ada_norm layer", "dual_ada_norm", (x, y, None, None, None, shift, scale, EPS, "layer")),
            ("linear_gated_residual", "linear_gated_residual",
             (x, y, _randn(D, D, seed=8, scale=0.2, dtype=dtype), _randn(D, seed=9, dtype=dtype), scale))]
    for split in (False, True):
        rope, k_rope = _tables(split, 10), _tables(split, 11)
        out += [(f"qk_norm_rope split={split}", "qk_norm_rope", (x, y, w, w.flip(0), 1e-5, rope)),
                (f"qk_norm_rope k_rope split={split}", "qk_norm_rope", (x, y, w, w, 1e-6, rope, k_rope)),
                (f"qk_norm_rope views split={split}", "qk_norm_rope",
                 (packed[..., :D], packed[..., D:2 * D], w, w, 1e-6, rope))]
    return out + [("qk_norm no rope", "qk_norm_rope", (x, y, w, w, 1e-6, None))]


def _pairs(got, expected):
    return zip(got if isinstance(got, tuple) else (got,), expected if isinstance(expected, tuple) else (expected,))


@pytest.mark.parametrize("name,op,args", _calls(torch.float32), ids=lambda v: v if isinstance(v, str) else "")
def test_fp32_is_the_reference_bit_for_bit(name, op, args):
    got, expected = getattr(native, op)(*args), getattr(reference, op)(*args)
    for g, e in _pairs(got, expected):
        assert g.dtype == e.dtype and torch.equal(g, e), name


def _diffusers_ada_norm(x, shift, scale, eps, kind):
    # diffusers' blocks: norm1 / norm2 (RMSNorm without weight) or norm_out (LayerNorm), then modulation
    norm = RMSNorm(D, eps=eps, elementwise_affine=False) if kind == "rms" else \
        nn.LayerNorm(D, eps=eps, elementwise_affine=False)
    n = norm(x)
    n = n * (1 + scale) if scale is not None else n
    return n + shift if shift is not None else n


def _diffusers_ada_norm_mod(n, shift, scale):
    n = n * (1 + scale) if scale is not None else n
    return n + shift if shift is not None else n


def _diffusers_qk(q, k, wq, wk, eps, rope, k_rope=None):
    # the attention processors: torch.nn.RMSNorm with the weight, then the layout's rotary function
    norm_q, norm_k = (nn.RMSNorm(D, eps=eps).to(q.device, q.dtype) for _ in range(2))
    with torch.no_grad():
        norm_q.weight.copy_(wq), norm_k.weight.copy_(wk)
        q, k = norm_q(q), norm_k(k)
    if rope is None:
        return q, k
    apply = transformer_ltx2.apply_split_rotary_emb if rope[0].ndim == 4 else transformer_ltx.apply_rotary_emb
    return apply(q, rope), apply(k, rope if k_rope is None else k_rope)


def _diffusers(op, args):
    if op == "ada_norm":
        return _diffusers_ada_norm(*args)
    if op == "gated_residual":
        x, y, gate = args
        return x + y * gate if gate is not None else x + y
    if op == "linear_gated_residual":
        x, h, w, b, gate = args
        return x + nn.functional.linear(h, w, b) * gate
    if op == "residual_ada_norm":
        x_new = _diffusers("gated_residual", args[:3])
        return x_new, _diffusers_ada_norm(x_new, *args[3:])
    if op == "dual_ada_norm":  # LTX2VideoTransformerBlock's a2v / v2a: one norm, two modulations
        x, y, gate, sh1, sc1, sh2, sc2, eps, kind = args
        x_new = x if y is None else _diffusers("gated_residual", (x, y, gate))
        n = _diffusers_ada_norm(x_new, None, None, eps, kind)
        return x_new, _diffusers_ada_norm_mod(n, sh1, sc1), _diffusers_ada_norm_mod(n, sh2, sc2)
    if op == "head_gate":  # LTX2AudioVideoAttnProcessor's gate
        x, logits = args
        return (x.unflatten(2, (HEADS, -1)) * (2.0 * torch.sigmoid(logits)).unsqueeze(-1)).flatten(2, 3)
    return _diffusers_qk(*args)


# On CUDA the same claim: both sides dispatch the same aten ops in the same dtypes (F.rms_norm on
# both sides of the q/k norm, whatever kernel it picks there).
@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_is_diffusers_arithmetic_bit_for_bit(dtype, device):
    for name, op, args in _calls(dtype, device):
        before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
        got, expected = getattr(TORCH_OPS, op)(*args), _diffusers(op, args)
        for g, e in _pairs(got, expected):
            assert g.dtype == dtype and torch.equal(g, e), (name, (g.float() - e.float()).abs().max())
        for a, b in zip(args, before):
            assert not isinstance(a, torch.Tensor) or torch.equal(a, b), f"{name} modified an input"


def _f64(op, args):
    """(the exact result from the 16-bit inputs, the magnitude the bound scales with), per element."""
    a = [t.double() if isinstance(t, torch.Tensor) else t for t in args]
    if op == "ada_norm":
        x, shift, scale, eps, kind = a
        n = torch.nn.functional.layer_norm(x, (D,), eps=eps) if kind == "layer" else \
            x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
        n = n * (1 + scale) if scale is not None else n
        return n + (shift if shift is not None else 0), n.abs() + (shift.abs() if shift is not None else 0)
    if op == "gated_residual":
        x, y, gate = a
        t = y * gate if gate is not None else y
        return x + t, x.abs() + t.abs()
    if op == "head_gate":
        x, logits = a
        y = (x.unflatten(2, (HEADS, -1)) * (2 * torch.sigmoid(logits)).unsqueeze(-1)).flatten(2, 3)
        return y, y.abs()
    return None


# Roundings per element in 16 bits (each at most one unit roundoff u of the value it rounds):
# ada_norm 4 (norm, 1 + scale, product, sum), gated_residual 2 (product, sum), head_gate 2 (sigmoid,
# product; the doubling is exact). Bound: (roundings + 1/2) u x the sum of the terms' magnitudes (the
# half covers fp32's own error inside the norm and second-order terms).
ROUNDINGS = {"ada_norm": 4, "gated_residual": 2, "head_gate": 2, "qk_norm_rope": 2}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_error_within_the_stated_bound_of_fp64(dtype):
    u = UNIT[dtype]
    for name, op, args in _calls(dtype):
        exact = _f64(op, args) if op != "qk_norm_rope" else None
        if op == "qk_norm_rope":  # per output: the norm rounded (u), RoPE in fp32, rounded once (u)
            q, k, wq, wk, eps = (t.double() if isinstance(t, torch.Tensor) else t for t in args[:5])
            qs = [v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + eps) * w for v, w in ((q, wq), (k, wk))]
            ropes = (args[5], args[6] if len(args) > 6 else args[5])  # k_rope rotates k
            for got, n, rope in zip(TORCH_OPS.qk_norm_rope(*args), qs, ropes):
                e, mag = (n, n.abs()) if rope is None else _rope64(n, rope)
                assert ((got.double() - e).abs() <= (ROUNDINGS[op] + 0.5) * u * mag).all(), name
            continue
        if exact is None:
            continue
        e, mag = exact
        got = getattr(TORCH_OPS, op)(*args).double()
        assert ((got - e).abs() <= (ROUNDINGS[op] + 0.5) * u * mag).all(), (name, ((got - e).abs() / mag).max())


def _rope64(n, rope):
    """RoPE of the fp64 normed values n by the (fp32) tables, and the terms' magnitude."""
    cos, sin = (t.double() for t in rope)
    if cos.ndim == 4:
        h = n.view(B, N, HEADS, 2, R).transpose(1, 2)
        a, b = h[..., 0, :], h[..., 1, :]
        out = torch.stack((a * cos - b * sin, b * cos + a * sin), -2).transpose(1, 2).reshape(B, N, D)
        mag = torch.stack(((a * cos).abs() + (b * sin).abs(), (b * cos).abs() + (a * sin).abs()), -2)
        return out, mag.transpose(1, 2).reshape(B, N, D)
    pairs = n.unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), -1).flatten(-2)
    return n * cos + rotated * sin, (n * cos).abs() + (rotated * sin).abs()


def test_out_is_written_and_checked_before_any_work():
    x, y = _randn(B, N, D, seed=1, dtype=torch.bfloat16), _randn(B, N, D, seed=2, dtype=torch.bfloat16)
    shift, scale = _mods(torch.bfloat16, False)
    out = torch.empty_like(x)
    assert TORCH_OPS.ada_norm(x, shift, scale, EPS, out=out) is out
    assert torch.equal(out, TORCH_OPS.ada_norm(x, shift, scale, EPS))
    assert torch.equal(TORCH_OPS.gated_residual(x, y, scale, out=x.clone()), TORCH_OPS.gated_residual(x, y, scale))
    wrong = torch.zeros(B, N, D)
    with pytest.raises(ValueError, match=r"out must be \(2, 7, 24\) torch.bfloat16"):
        TORCH_OPS.gated_residual(x, y, scale, out=wrong)
    with pytest.raises(ValueError, match="ada_norm: kind must be 'rms', 'layer' or 'none', got 'batch'"):
        TORCH_OPS.ada_norm(x, shift, scale, EPS, "batch", out=wrong)
    assert not wrong.any()  # refused before anything was written


# -- whole transformers in bf16 --------------------------------------------------------------------

def _fp32_upcasting_ops():
    """TORCH_OPS as it was before native.py: every 16-bit activation through the fp32 references."""
    return dataclasses.replace(TORCH_OPS, name="reference", **{op: getattr(reference, op) for op in (
        "qk_norm_rope", "ada_norm", "gated_residual", "head_gate", "linear_gated_residual")})


def test_tiny_ltx_video_in_bf16_equals_diffusers():
    from ..models.transformer_fixtures import inputs, make_pair
    from ltxengine.models.transformer import grid_positions

    ref, ours = (m.to(torch.bfloat16) for m in make_pair())
    x, text, mask, t = inputs()
    x, text, scale = x.bfloat16(), text.bfloat16(), (8 / 25, 32, 32)
    with torch.no_grad():
        expected = ref(x, text, t, mask, num_frames=3, height=4, width=5, rope_interpolation_scale=scale).sample
        errors = {}
        for ops in (_fp32_upcasting_ops(), TORCH_OPS):
            set_ops(ours, ops)
            rope = ours.rope(grid_positions(2, 3, 4, 5, scale))
            got = ours(x, t, context=ours.prepare_context(text, mask), rope=rope)
            errors[ops.name] = (got.float() - expected.float()).abs().max().item()
    print(f"LTX-Video bf16 max |ours - diffusers|: {errors} (output scale {expected.abs().max().item():.2f})")
    assert errors["torch"] == 0.0 and errors["reference"] > 0.0, errors  # measured: 0 and 0.0156 of 2.5


@pytest.mark.parametrize("name", ["split64", "interleaved32", "v23"])  # both RoPE layouts; v23: gated attention
def test_tiny_ltx2_in_bf16_equals_diffusers(name):
    from ..models import ltx2_transformer_fixtures as fx

    ref, ours, cfg = fx.pair(name)
    ref, ours = ref.to(torch.bfloat16), ours.to(torch.bfloat16)
    x = {k: v.bfloat16() if k in ("video", "audio", "vtext", "atext") else v for k, v in fx.inputs(cfg).items()}
    rv, ra = fx.run_diffusers(ref, x)
    errors = {}
    for ops in (_fp32_upcasting_ops(), TORCH_OPS):
        v, a = fx.run_ours(set_ops(ours, ops), x)
        errors[ops.name] = max((v.float() - rv.float()).abs().max().item(), (a.float() - ra.float()).abs().max().item())
    print(f"LTX-2 {name} bf16 max |ours - diffusers|: {errors} (video scale {rv.abs().max().item():.2f})")
    # measured: split64 0 (was 0.109 of 6.1), interleaved32 0 (0.125 of 14.1), v23 0 (0.219 of 8.0)
    assert errors["torch"] == 0.0 and errors["reference"] > 0.0, errors
