"""GGUF dequantization: the pure-torch reference equals the gguf package's numpy dequantization
bit for bit per quant type (random valid blocks, edge scales included), and the Triton kernel
(interpreter, tiny tensors) equals the reference bit for bit in fp32, within one rounding in bf16."""

from __future__ import annotations

import numpy as np
import pytest
import torch

gguf = pytest.importorskip("gguf")

from ltxengine.ops import get_ops  # noqa: E402
from ltxengine.quant.gguf import BY_NAME, QUANT_TYPES, dequantize  # noqa: E402

# fp16 scales that stress the arithmetic: zero, -0, the smallest subnormal, the largest finite
EDGE_SCALES = np.array([0.0, -0.0, 2.0 ** -24, 65504.0, -65504.0, 1.0, -3.5e-3], dtype=np.float16)
# byte offsets of the fp16 scales inside each type's block
SCALE_OFFSETS = {"Q8_0": (0,), "Q4_0": (0,), "Q3_K": (108,), "Q4_K": (0, 2), "Q5_K": (0, 2), "Q6_K": (208,)}


def random_blocks(name: str, rows: int, blocks_per_row: int, seed: int = 0) -> np.ndarray:
    """Random bytes of valid blocks: every bit pattern of the quants and packed scales is valid;
    the fp16 scales are finite (random normal values, then the edge scales in the first blocks)."""
    t = BY_NAME[name]
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(rows * blocks_per_row, t.type_size), dtype=np.uint8)
    for off in SCALE_OFFSETS[name]:
        scales = rng.standard_normal(rows * blocks_per_row).astype(np.float16)
        scales[: len(EDGE_SCALES)] = EDGE_SCALES[: len(scales)]
        data[:, off:off + 2] = scales.view(np.uint8).reshape(-1, 2)
    return data.reshape(rows, blocks_per_row * t.type_size)


def oracle(data: np.ndarray, name: str) -> torch.Tensor:
    return torch.from_numpy(gguf.quants.dequantize(data, gguf.GGMLQuantizationType[name]).copy())


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.int32), b.view(torch.int32))


@pytest.mark.parametrize("name", QUANT_TYPES)
def test_reference_equals_gguf_bit_for_bit(name):
    data = random_blocks(name, rows=6, blocks_per_row=3)
    ours = dequantize(torch.from_numpy(data), BY_NAME[name].id)
    assert same_bits(ours, oracle(data, name))


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0"])
def test_reference_on_gguf_quantized_weights(name):
    """Blocks made by gguf.quants.quantize (the path real converters take for these types)."""
    w = np.random.default_rng(1).standard_normal((5, 96)).astype(np.float32)
    w[0] = 0.0  # an all-zero row: scale 0
    data = gguf.quants.quantize(w, gguf.GGMLQuantizationType[name])
    ours = dequantize(torch.from_numpy(data), BY_NAME[name].id, (5, 96))
    assert same_bits(ours, oracle(data, name))


@pytest.mark.parametrize("name", ["F32", "F16", "BF16"])
def test_float_types_pass_through(name):
    w = torch.randn(3, 8)
    stored = w.to({"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}[name])
    data = stored.view(torch.uint8)
    assert same_bits(dequantize(data, BY_NAME[name].id, (3, 8)), stored.float())
    if name != "BF16":  # gguf.quants handles BF16 as bytes through its own class too
        assert same_bits(dequantize(data, BY_NAME[name].id, (3, 8)), oracle(data.numpy(), name).view(3, 8))


def test_unsupported_and_unknown_types_are_named():
    with pytest.raises(ValueError, match=r"quant type IQ2_XXS is not supported.*Q4_K"):
        dequantize(torch.zeros(1, 66, dtype=torch.uint8), 16)
    with pytest.raises(ValueError, match="unknown ggml type id 99"):
        dequantize(torch.zeros(1, 66, dtype=torch.uint8), 99)
    with pytest.raises(ValueError, match="whole 34-byte blocks, got 33"):
        dequantize(torch.zeros(1, 33, dtype=torch.uint8), BY_NAME["Q8_0"].id)


@pytest.mark.parametrize("name", QUANT_TYPES)
def test_triton_equals_reference(name):
    ops = get_ops("triton", "cpu")
    t = BY_NAME[name]
    # 6 blocks: a partial tile of blocks for every type (a program takes 32 Q8_0 / Q4_0 or 4 K-quant blocks)
    data = torch.from_numpy(random_blocks(name, rows=3, blocks_per_row=2, seed=3))
    kept = data.clone()
    n = 2 * t.block_size
    ref = dequantize(data, t.id, (3, n))
    got = ops.gguf_dequant(data, t.id, n, torch.float32)
    assert same_bits(got, ref)
    assert torch.equal(data, kept)  # the input is not modified
    out = torch.empty(3, n, dtype=torch.bfloat16)
    assert ops.gguf_dequant(data, t.id, n, out=out) is out
    # the same fp32 values rounded once to bf16: within one bf16 ulp (2^-7 relative), as Triton's
    # interpreter truncates where torch rounds to nearest even (bit-equal is checked in fp32 above)
    close = (out.float() - ref).abs() <= ref.abs() * 2.0 ** -7
    assert bool(close[torch.isfinite(ref)].all())


def test_triton_rejects_bad_arguments():
    ops = get_ops("triton", "cpu")
    data = torch.zeros(2, 34, dtype=torch.uint8)
    with pytest.raises(ValueError, match="rows of 64 elements of type id 8 take 68 bytes"):
        ops.gguf_dequant(data, 8, 64)
    with pytest.raises(ValueError, match="out must be a contiguous"):
        ops.gguf_dequant(data, 8, 32, out=torch.empty(32, 2).t())


def test_gguf_linear_runs_the_backend_dequant():
    """GGUFLinear's call on the Triton backend equals the reference backend's bit for bit (fp32)."""
    from ltxengine.quant.gguf_linear import GGUFLinear
    t = BY_NAME["Q4_K"]
    layers = {}
    for backend in ("torch", "triton"):
        layer = GGUFLinear(256, 3, True, t.id, ops=get_ops(backend, "cpu"), bias_dtype=torch.float32)
        layer.weight.copy_(torch.from_numpy(random_blocks("Q4_K", rows=3, blocks_per_row=1, seed=5)))
        layer.bias.copy_(torch.randn(3, generator=torch.Generator().manual_seed(0)))
        layers[backend] = layer
    x = torch.randn(2, 256, generator=torch.Generator().manual_seed(1))
    assert torch.equal(layers["torch"](x), layers["triton"](x))
    assert torch.equal(layers["triton"].dequantized(torch.float32), dequantize(layers["torch"].weight, t.id, (3, 256)))


@pytest.mark.gpu
@pytest.mark.parametrize("name", QUANT_TYPES)
def test_triton_on_cuda_equals_the_reference_bit_for_bit(name):
    """On a GPU (fp fusion off in the launcher: an FMA in d * q - m would change the last bit): fp32
    bit-equal to the CPU reference on 4096 x 4096 weights; bf16 equal to the reference rounded once."""
    ops = get_ops("triton", "cuda")
    t = BY_NAME[name]
    data = torch.from_numpy(random_blocks(name, rows=4096, blocks_per_row=4096 // t.block_size, seed=7))
    ref = dequantize(data, t.id, (4096, 4096))
    got = ops.gguf_dequant(data.cuda(), t.id, 4096, torch.float32)
    assert same_bits(got.cpu(), ref)
    got16 = ops.gguf_dequant(data.cuda(), t.id, 4096, torch.bfloat16)
    assert torch.equal(got16.cpu().view(torch.int16), ref.to(torch.bfloat16).view(torch.int16))


@pytest.mark.parametrize("name", ["Q8_0", "Q4_0"])
def test_fused_gguf_linear_equals_the_unfused_path(name):
    """kernels/gguf_linear.py (experimental, bench-only): the dequant in the GEMM's operand load
    gives the unfused path's result within the GEMM's own rounding (fp32: a different accumulation
    order only; tiny tiles so the interpreter runs several K-steps, odd M and N for the masks)."""
    from ltxengine.kernels.gguf_linear import gguf_linear
    t = BY_NAME[name]
    w = np.random.default_rng(2).standard_normal((19, 96)).astype(np.float32)
    blocks = torch.from_numpy(gguf.quants.quantize(w, gguf.GGMLQuantizationType[name]))
    x = torch.randn(2, 5, 96, generator=torch.Generator().manual_seed(3))
    bias = torch.randn(19, generator=torch.Generator().manual_seed(4))
    expected = torch.nn.functional.linear(x, dequantize(blocks, t.id, (19, 96)), bias)
    got = gguf_linear(x, blocks, t.id, bias, block_m=16, block_n=16, block_k=32)
    # fp32 sums of 96 products in another order: a few ulps of the largest partial sum
    bound = 8 * 96 * torch.finfo(torch.float32).eps * (x.abs().max() * dequantize(blocks, t.id).abs().max()).item()
    assert got.shape == expected.shape and (got - expected).abs().max().item() <= bound
    # fp16 (bf16's tl.dot is wrong under the interpreter: it is for the GPU session): the fp32 result rounded
    # once, within twice torch's own fp16 rounding of it
    half = gguf_linear(x.half(), blocks, t.id, bias.half(), block_m=16, block_n=16, block_k=32).float()
    oracle = torch.nn.functional.linear(x.half().float(), dequantize(blocks, t.id, (19, 96)).half().float(),
                                        bias.half().float())
    assert (half - oracle).abs().max() <= 2 * (oracle.half().float() - oracle).abs().max() + 1e-3
    with pytest.raises(ValueError, match="the fused kernel takes Q8_0 \\(8\\) or Q4_0 \\(2\\), got type id 12"):
        gguf_linear(x, blocks, 12)


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["Q8_0", "Q4_0"])
def test_fused_gguf_linear_in_bf16_on_cuda(name):
    """The fused kernel in bf16 on a GPU (the interpreter cannot check bf16): at most twice as far from
    the fp32 product of the same bf16 operands as torch's bf16 GEMM, plus a rounding floor."""
    from ltxengine.kernels.gguf_linear import gguf_linear
    t = BY_NAME[name]
    w = np.random.default_rng(5).standard_normal((768, 1024)).astype(np.float32) * 0.05
    blocks = torch.from_numpy(gguf.quants.quantize(w, gguf.GGMLQuantizationType[name])).cuda()
    x = torch.randn(333, 1024, device="cuda").bfloat16()
    bias = (torch.randn(768, device="cuda") * 0.1).bfloat16()
    w16 = dequantize(blocks.cpu(), t.id, (768, 1024)).bfloat16().cuda()
    oracle = torch.nn.functional.linear(x.float(), w16.float(), bias.float())
    torch_err = (torch.nn.functional.linear(x, w16, bias).float() - oracle).abs().max()
    got = gguf_linear(x, blocks, t.id, bias)
    assert (got.float() - oracle).abs().max() <= 2 * torch_err + 1e-2
