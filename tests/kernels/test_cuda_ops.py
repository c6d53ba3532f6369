"""ltxengine.ops.cuda: the launchers of the CUDA C++ kernels (csrc/).

On any machine: every validation of the Python wrappers (they run before the extension is
touched, so CPU tensors reach them) and the missing-extension message. On a GPU (marked `gpu`):
every kernel against the fp32 reference on production shapes with the error budget of
tests/kernels/budget.py, bit-exact fp8 quantization, out=, inputs unmodified, CUDA graph capture.
"""

import re
from collections import namedtuple

import pytest
import torch

from ltxengine.ops import cuda, reference
from tests.kernels.budget import check_budget

BF16, FP8 = torch.bfloat16, torch.float8_e4m3fn


def _rand(*shape, dtype=BF16, device="cpu", scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g) * scale).to(device=device, dtype=dtype)


def _interleaved_table(b, n, d, device="cpu", seed=1):
    angle = _rand(b, n, d // 2, dtype=torch.float32, scale=3, seed=seed).repeat_interleave(2, dim=-1)
    return angle.cos().to(device), angle.sin().to(device)


def _split_table(b, heads, n, d, device="cpu", seed=2):
    angle = _rand(b, heads, n, d // heads // 2, dtype=torch.float32, scale=3, seed=seed)
    return angle.cos().to(device), angle.sin().to(device)


def _misaligned(shape, dtype):
    """A tensor whose data starts 2 bytes past an aligned address (a 1-element offset view)."""
    flat = torch.empty(torch.Size(shape).numel() + 1, dtype=dtype)
    return flat[1:].view(shape)


# ---- validation (any machine: runs before the extension is needed) -----------------------------

def _qk_args():
    return dict(q=_rand(2, 3, 32), k=_rand(2, 3, 32, seed=1), q_weight=torch.ones(32, dtype=BF16),
                k_weight=torch.ones(32, dtype=BF16), eps=1e-6, rope=_interleaved_table(1, 3, 32))


QK_ERRORS = {
    "q_dtype": (lambda a: a.update(q=a["q"].float()), "q must be bfloat16 (the CUDA kernels), got torch.float32"),
    "q_ndim": (lambda a: a.update(q=a["q"][0]), "q must be a 3-D tensor, got (3, 32)"),
    "q_empty": (lambda a: a.update(q=a["q"][:, :0]), "q must not be empty, got shape (2, 0, 32)"),
    "k_shape": (lambda a: a.update(k=a["k"][:1]), "k must be (B=2, Nk, D=32) like q, got (1, 3, 32)"),
    "width": (lambda a: a.update(q=a["q"][..., :24], k=a["k"][..., :24]),
              "q's last dim must be a multiple of 16 up to 16384 (16-byte vectors, one row per block), got 24"),
    "weight_shape": (lambda a: a.update(k_weight=torch.ones(16, dtype=BF16)),
                     "q_weight and k_weight must be (32,) of one dtype, got (32,) torch.bfloat16 and (16,)"),
    "weight_dtypes_differ": (lambda a: a.update(k_weight=torch.ones(32)), "q_weight and k_weight must be (32,) of one"),
    "weight_dtype": (lambda a: a.update(q_weight=torch.ones(32, dtype=torch.float16)),
                     "q_weight must be bfloat16 or float32 (the CUDA kernels), got torch.float16"),
    "eps": (lambda a: a.update(eps=-1.0), "eps must be a finite non-negative number, got -1.0"),
    "rope_pair": (lambda a: a.update(rope=a["rope"][0]), "rope must be a (cos, sin) pair, got Tensor"),
    "rope_dtype": (lambda a: a.update(rope=tuple(t.to(BF16) for t in a["rope"])),
                   "rope cos must be float32 (the CUDA kernels), got torch.bfloat16"),
    "rope_cos_sin": (lambda a: a.update(rope=(a["rope"][0], a["rope"][1][:, :2])),
                     "rope cos and sin must have one shape, got (1, 3, 32) and (1, 2, 32)"),
    "rope_shape": (lambda a: a.update(rope=_interleaved_table(1, 4, 32)),
                   "rope must be (B|1, N, D) interleaved or (B|1, H, N, D/H/2) split for (2, 3, 32), got (1, 4, 32)"),
    "split_halves": (lambda a: a.update(q=_rand(2, 3, 48), k=_rand(2, 3, 48), q_weight=torch.ones(48, dtype=BF16),
                                        k_weight=torch.ones(48, dtype=BF16), rope=_split_table(1, 2, 3, 48)),
                     "rope split table needs head halves of whole 8-element vectors (D % (16 * H) == 0), "
                     "got D=48, H=2"),
    "k_rope_layout": (lambda a: a.update(k_rope=_split_table(1, 2, 3, 32)),
                      "k_rope must use rope's layout (interleaved), got split"),
    "fp8_scales_pair": (lambda a: a.update(fp8_scales=torch.ones(1)), "fp8_scales must be a (q_scale, k_scale) pair"),
    "fp8_scale": (lambda a: a.update(fp8_scales=(torch.ones(1), torch.ones(2))),
                  "fp8_scales[1] must be a one-element float32 tensor, got (2,) torch.float32"),
    "out_dtype": (lambda a: a.update(fp8_scales=(torch.ones(1), torch.ones(1)),
                                     q_out=torch.empty(2, 3, 32, dtype=BF16)),
                  "q_out must be (2, 3, 32) torch.float8_e4m3fn on cpu, got (2, 3, 32) torch.bfloat16 on cpu"),
    "out_overlap": (lambda a: a.update(q_out=torch.empty(2, 1, 32, dtype=BF16).expand(2, 3, 32)),
                    "q_out must be 16-byte aligned with a contiguous last dim, row strides in whole 8-element "
                    "vectors and rows that do not overlap, got strides (32, 0, 1)"),
    "out_alignment": (lambda a: a.update(k_out=_misaligned((2, 3, 32), BF16)), "k_out must be 16-byte aligned"),
    "cpu": (lambda a: None, "qk_norm_rope: tensors must be on a CUDA device for the CUDA kernels, got cpu"),
}


@pytest.mark.parametrize("case", sorted(QK_ERRORS))
def test_qk_norm_rope_rejects(case):
    change, message = QK_ERRORS[case]
    args = _qk_args()
    change(args)
    with pytest.raises(ValueError, match=re.escape(message)):
        cuda.qk_norm_rope(**args)


def _ada_args():
    table = _rand(2, 1, 6, 40, seed=3)
    return dict(x=_rand(2, 3, 40), shift=table[:, :, 0], scale=table[:, :, 1], eps=1e-6, kind="rms")


ADA_ERRORS = {
    "kind": (lambda a: a.update(kind="group"), "ada_norm: kind must be 'rms' or 'layer', got 'group'"),
    "x_dtype": (lambda a: a.update(x=a["x"].float()),
                "ada_norm: x must be bfloat16 (the CUDA kernels), got torch.float32"),
    "width": (lambda a: a.update(x=a["x"][..., :20], shift=None, scale=None),
              "ada_norm: x's last dim must be a multiple of 8 up to 16384 (16-byte vectors, one row per block), "
              "got 20"),
    "too_wide": (lambda a: a.update(x=_rand(1, 1, 16392), shift=None, scale=None), "up to 16384"),
    "eps": (lambda a: a.update(eps=float("nan")), "ada_norm: eps must be a finite non-negative number, got nan"),
    "shift_shape": (lambda a: a.update(shift=_rand(2, 2, 40)),
                    "ada_norm: shift must be (B|1, N|1, D) = (2|1, 3|1, 40) for x (2, 3, 40), got (2, 2, 40)"),
    "scale_dtype": (lambda a: a.update(scale=a["scale"].half()),
                    "ada_norm: scale must be bfloat16 or float32 (the CUDA kernels), got torch.float16"),
    "out_shape": (lambda a: a.update(out=torch.empty(2, 3, 48, dtype=BF16)),
                  "ada_norm: out must be (2, 3, 40) torch.bfloat16 on cpu, got (2, 3, 48) torch.bfloat16 on cpu"),
    "out_last_dim": (lambda a: a.update(out=torch.empty(2, 40, 3, dtype=BF16).transpose(1, 2)),
                     "ada_norm: out must be 16-byte aligned with a contiguous last dim"),
    "cpu": (lambda a: None, "ada_norm: tensors must be on a CUDA device for the CUDA kernels, got cpu"),
}


@pytest.mark.parametrize("case", sorted(ADA_ERRORS))
def test_ada_norm_rejects(case):
    change, message = ADA_ERRORS[case]
    args = _ada_args()
    change(args)
    with pytest.raises(ValueError, match=re.escape(message)):
        cuda.ada_norm(**args)


GATED_ERRORS = {
    "x_dtype": (lambda a: a.update(x=a["x"].half()), "gated_residual: x must be bfloat16 (the CUDA kernels)"),
    "y_shape": (lambda a: a.update(y=_rand(2, 4, 40)),
                "gated_residual: y must have x's shape (2, 3, 40), got (2, 4, 40)"),
    "gate_ndim": (lambda a: a.update(gate=_rand(2, 40)), "gated_residual: gate must be a 3-D tensor, got (2, 40)"),
    "width": (lambda a: a.update(x=_rand(2, 3, 12), y=_rand(2, 3, 12), gate=None),
              "gated_residual: x's last dim must be a multiple of 8"),
    "out_dtype": (lambda a: a.update(out=torch.empty(2, 3, 40)),
                  "gated_residual: out must be (2, 3, 40) torch.bfloat16 on cpu, got (2, 3, 40) torch.float32 on cpu"),
    "cpu": (lambda a: None, "gated_residual: tensors must be on a CUDA device for the CUDA kernels, got cpu"),
}


@pytest.mark.parametrize("case", sorted(GATED_ERRORS))
def test_gated_residual_rejects(case):
    change, message = GATED_ERRORS[case]
    args = dict(x=_rand(2, 3, 40), y=_rand(2, 3, 40, seed=1), gate=_rand(2, 1, 40, seed=2))
    change(args)
    with pytest.raises(ValueError, match=re.escape(message)):
        cuda.gated_residual(**args)


QUANT_ERRORS = {
    "x_dtype": (lambda a: a.update(x=a["x"].float()), "quantize_fp8: x must be bfloat16 (the CUDA kernels)"),
    "x_0d": (lambda a: a.update(x=torch.tensor(1.0, dtype=BF16)), "quantize_fp8: x must have at least 1 dim"),
    "width": (lambda a: a.update(x=_rand(6, 12)),
              "quantize_fp8: x's last dim must be a multiple of 8 (16-byte vectors), got 12"),
    "scale_numel": (lambda a: a.update(scale=torch.ones(2)),
                    "quantize_fp8: a static scale must have 1 (per tensor) or M=6 (per row) elements, got shape (2,)"),
    "scale_dtype": (lambda a: a.update(scale=torch.ones((), dtype=BF16)),
                    "quantize_fp8: scale must be float32 (the CUDA kernels), got torch.bfloat16"),
    "out_shape": (lambda a: a.update(out=torch.empty(6, 8, dtype=FP8)),
                  "quantize_fp8: out must be (6, 16) torch.float8_e4m3fn on cpu, got (6, 8)"),
    "scale_out_per_row": (lambda a: a.update(per_row=True, scale_out=torch.empty(6)),
                          "quantize_fp8: scale_out must be a contiguous (6, 1) float32 tensor on cpu, got (6,)"),
    "scale_out_per_tensor": (lambda a: a.update(scale_out=torch.empty(1)),
                             "quantize_fp8: scale_out must be a contiguous () float32 tensor on cpu, got (1,)"),
    "scale_out_static": (lambda a: a.update(scale=torch.ones(1), scale_out=torch.empty(())),
                         "quantize_fp8: scale_out must be a contiguous (1,) float32 tensor"),
    "cpu": (lambda a: None, "quantize_fp8: tensors must be on a CUDA device for the CUDA kernels, got cpu"),
}


@pytest.mark.parametrize("case", sorted(QUANT_ERRORS))
def test_quantize_fp8_rejects(case):
    change, message = QUANT_ERRORS[case]
    args = dict(x=_rand(2, 3, 16))
    change(args)
    with pytest.raises(ValueError, match=re.escape(message)):
        cuda.quantize_fp8(**args)


def test_missing_extension_is_an_actionable_runtime_error(monkeypatch):
    monkeypatch.setattr(cuda, "_load", lambda: None)
    monkeypatch.setattr(cuda, "_import_error", ImportError("No module named 'ltxengine._C'"))
    assert not cuda.available()
    with pytest.raises(RuntimeError, match=re.escape(
            "ltxengine was built without its CUDA extension (nvcc not found at install time); reinstall with "
            "nvcc on PATH or use kernels='triton'/'torch' [No module named 'ltxengine._C']")):
        cuda._ext()


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present")
def test_not_available_without_a_gpu():
    assert not cuda.available()


def test_fitting_views_pass_through_and_others_are_copied():
    qkv = _rand(2, 3, 96)
    q = qkv[..., 32:64]  # a fused-projection slice: aligned, strides in whole vectors
    assert cuda._view(q).data_ptr() == q.data_ptr()
    shifted = qkv[..., 4:36]  # starts 8 bytes into a vector: copied
    assert cuda._view(shifted).data_ptr() != shifted.data_ptr() and cuda._view(shifted).is_contiguous()
    transposed = _rand(2, 32, 3).transpose(1, 2)  # last dim strided: copied
    assert cuda._view(transposed).is_contiguous()


def test_rows_broadcast_size_one_dims_and_flag_fp32():
    ext = namedtuple("Ext", "Rows")(Rows=lambda *a: a)
    table = torch.zeros(2, 1, 6, 40)
    assert cuda._rows(ext, table[:, :, 1]) == (table[:, :, 1].data_ptr(), 240, 0, True)
    x = _rand(1, 5, 40)
    assert cuda._rows(ext, x) == (x.data_ptr(), 0, 40, False)
    assert cuda._rows(ext, None) == ()  # Rows(): address 0 means absent


# ---- kernels against the fp32 reference (GPU) -------------------------------------------------

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available() or not cuda.available(),
                               reason="needs a CUDA device and the compiled ltxengine._C")
DEV = "cuda"


def _qk_case(name):
    """Production q/k shapes: (q, k, rope, k_rope)."""
    if name == "ltxv_2b_interleaved":  # LTX-Video 2B self-attention, q/k sliced from a fused projection
        qkv = _rand(2, 6144, 3 * 2048, device=DEV, scale=2)
        return qkv[..., :2048], qkv[..., 2048:4096], _interleaved_table(1, 6144, 2048, DEV), None
    if name == "ltx2_video_split":  # LTX-2 video self-attention, 32 table heads of 128
        return (_rand(2, 6144, 4096, device=DEV), _rand(2, 6144, 4096, device=DEV, seed=1),
                _split_table(2, 32, 6144, 4096, DEV), None)
    if name == "ltx2_audio_to_video":  # LTX-2 audio queries (126 tokens) against video keys, own tables
        return (_rand(2, 126, 2048, device=DEV), _rand(2, 6144, 2048, device=DEV, seed=1),
                _split_table(2, 32, 126, 2048, DEV), _split_table(2, 32, 6144, 2048, DEV, seed=3))
    if name == "ltx2_audio_self":
        return (_rand(2, 126, 2048, device=DEV), _rand(2, 126, 2048, device=DEV, seed=1),
                _split_table(1, 32, 126, 2048, DEV), _split_table(1, 32, 126, 2048, DEV, seed=4))
    assert name == "cross_attention_no_rope"
    return _rand(2, 6144, 2048, device=DEV), _rand(2, 128, 2048, device=DEV, seed=1), None, None


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("case", ["ltxv_2b_interleaved", "ltx2_video_split", "ltx2_audio_to_video",
                                  "ltx2_audio_self", "cross_attention_no_rope"])
@pytest.mark.parametrize("weight_dtype", [BF16, torch.float32])
@pytest.mark.parametrize("fp8", [False, True])
def test_qk_norm_rope_matches_reference(case, weight_dtype, fp8):
    q, k, rope, k_rope = _qk_case(case)
    d = q.shape[-1]
    qw = (1 + 0.3 * _rand(d, dtype=torch.float32, device=DEV, seed=5)).to(weight_dtype)
    kw = (1 + 0.3 * _rand(d, dtype=torch.float32, device=DEV, seed=6)).to(weight_dtype)
    scales = (torch.tensor([0.01], device=DEV), torch.tensor([0.02], device=DEV)) if fp8 else None
    q0, k0 = q.clone(), k.clone()
    dtype = FP8 if fp8 else BF16
    q_out, k_out = torch.empty(q.shape, dtype=dtype, device=DEV), torch.empty(k.shape, dtype=dtype, device=DEV)
    got = cuda.qk_norm_rope(q, k, qw, kw, 1e-6, rope, k_rope, fp8_scales=scales, q_out=q_out, k_out=k_out)
    assert got[0] is q_out and got[1] is k_out
    assert torch.equal(q, q0) and torch.equal(k, k0)
    lowp = reference.qk_norm_rope(q, k, qw, kw, 1e-6, rope, k_rope, fp8_scales=scales)
    ref = reference.qk_norm_rope(q.float(), k.float(), qw.float(), kw.float(), 1e-6, rope, k_rope)
    for i, (out, lp, r) in enumerate(zip(got, lowp, ref)):
        if fp8:  # the fp32 oracle of an e4m3 output: value / scale, saturated
            r = (r / scales[i]).clamp(-448, 448)
        check_budget(out, lp, r, f"{case} {'qk'[i]}")


def _modulation(kind, b, n, d, dtype):
    """(shift, scale) views of an adaLN table (B, T, 6, D): T = 1 per sample, N per token."""
    if kind is None:
        return None, None
    table = _rand(b, 1 if kind == "sample" else n, 6, d, dtype=dtype, device=DEV, scale=0.5, seed=7)
    return table[:, :, 0], table[:, :, 1]


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("shape", [(2, 6144, 2048), (2, 6144, 4096)])
@pytest.mark.parametrize("kind", ["rms", "layer"])
@pytest.mark.parametrize("mod,mod_dtype", [("sample", BF16), ("token", torch.float32), ("token", BF16), (None, None)])
def test_ada_norm_matches_reference(shape, kind, mod, mod_dtype):
    x = _rand(*shape, device=DEV, scale=3) + 0.5  # non-zero mean: LayerNorm's centring matters
    shift, scale = _modulation(mod, *shape, mod_dtype)
    x0 = x.clone()
    out = torch.empty_like(x)
    assert cuda.ada_norm(x, shift, scale, 1e-6, kind, out=out) is out
    assert torch.equal(x, x0)
    lowp = reference.ada_norm(x, shift, scale, 1e-6, kind)
    ref = reference.ada_norm(x.float(), None if shift is None else shift.float(),
                             None if scale is None else scale.float(), 1e-6, kind)
    check_budget(out, lowp, ref, f"ada_norm {kind} {mod} {shape}")


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("shape", [(2, 6144, 2048), (2, 6144, 4096)])
@pytest.mark.parametrize("mod,mod_dtype", [("sample", BF16), ("token", torch.float32), (None, None)])
@pytest.mark.parametrize("in_place", [False, True])
def test_gated_residual_matches_reference(shape, mod, mod_dtype, in_place):
    x, y = _rand(*shape, device=DEV), _rand(*shape, device=DEV, scale=2, seed=1)
    gate = None if mod is None else _modulation(mod, *shape, mod_dtype)[1]
    lowp = reference.gated_residual(x, y, gate)
    ref = reference.gated_residual(x.float(), y.float(), None if gate is None else gate.float())
    x0, y0 = x.clone(), y.clone()
    out = cuda.gated_residual(x, y, gate, out=x if in_place else None)
    assert torch.equal(y, y0)
    if in_place:
        assert out is x
    else:
        assert torch.equal(x, x0)
    check_budget(out, lowp, ref, f"gated_residual {mod} {shape}")


def _bits(t):
    return t.view(torch.uint8)


@pytest.mark.gpu
@needs_gpu
@pytest.mark.parametrize("shape", [(2, 6144, 2048), (12288, 4096), (2, 6144, 16384)])
@pytest.mark.parametrize("mode", ["static", "static_per_row", "per_row", "per_tensor"])
def test_quantize_fp8_is_bit_exact(shape, mode):
    # Same fp32 division and one RNE conversion as the reference: every byte and scale equal.
    x = _rand(*shape, device=DEV, scale=4)
    x.view(-1)[12345] = 3e4  # saturates under the static scale
    rows = x.numel() // shape[-1]
    scale = {"static": torch.tensor(0.02, device=DEV),
             "static_per_row": torch.rand(rows, 1, device=DEV) + 0.01}.get(mode)
    per_row = mode == "per_row"
    x0 = x.clone()
    q, s = cuda.quantize_fp8(x, scale, per_row)
    rq, rs = reference.quantize_fp8(x, scale, per_row)
    assert torch.equal(x, x0)
    assert s.shape == rs.shape and torch.equal(s, rs)
    assert torch.equal(_bits(q), _bits(rq))
    out, scale_out = torch.empty_like(q), torch.empty_like(rs)
    got = cuda.quantize_fp8(x, scale, per_row, out=out, scale_out=scale_out)
    assert got[0] is out and got[1] is scale_out
    assert torch.equal(_bits(out), _bits(rq)) and torch.equal(scale_out, rs)


@pytest.mark.gpu
@needs_gpu
def test_quantize_fp8_propagates_nan_and_handles_zeros():
    x = torch.zeros(4, 2048, dtype=BF16, device=DEV)
    for per_row in (False, True):
        q, s = cuda.quantize_fp8(x, per_row=per_row)
        rq, rs = reference.quantize_fp8(x, per_row=per_row)
        assert torch.equal(s, rs) and torch.equal(_bits(q), _bits(rq))
    x[2, 7] = float("nan")
    assert torch.isnan(cuda.quantize_fp8(x)[1])
    s = cuda.quantize_fp8(x, per_row=True)[1]
    assert torch.isnan(s[2]).item() and not torch.isnan(s[[0, 1, 3]]).any()


@pytest.mark.gpu
@needs_gpu
def test_kernels_capture_in_a_cuda_graph():
    # The dynamic per-tensor scale is reduced on the device (memset + atomics), so the whole
    # launch sequence captures; replay on new input values must give the reference again.
    x = _rand(2, 6144, 2048, device=DEV)
    shift, scale = _modulation("sample", 2, 6144, 2048, BF16)
    n, q, s = torch.empty_like(x), torch.empty(12288, 2048, dtype=FP8, device=DEV), torch.empty((), device=DEV)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up off the default stream
        cuda.ada_norm(x, shift, scale, 1e-6, "rms", out=n)
        cuda.quantize_fp8(n, out=q, scale_out=s)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        cuda.ada_norm(x, shift, scale, 1e-6, "rms", out=n)
        cuda.quantize_fp8(n, out=q, scale_out=s)
    x.copy_(_rand(2, 6144, 2048, device=DEV, seed=9, scale=5))
    graph.replay()
    torch.cuda.synchronize()
    rq, rs = reference.quantize_fp8(cuda.ada_norm(x, shift, scale, 1e-6, "rms"))
    assert torch.equal(s, rs) and torch.equal(_bits(q), _bits(rq))
