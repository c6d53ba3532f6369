"""Engines with fp8 transformer weights against the same engine in bf16.

Budget for the final latents. One quantized linear has a relative RMS output error of at most
e_p = u / sqrt(3) + 2^-8 with u = 2^-4 (weight-only, "fp8-cast"), or sqrt(2) u / sqrt(3) + 2^-8
(weight and activation, "fp8-scaled-mm"); see test_fp8_linear.py. A block's residual update
passes through two quantized linears in series (to_v -> to_out, ff.net.0 -> ff.net.2), so it
carries up to sqrt(2) e_p; the updates of different blocks err independently, so the velocity
keeps that relative error (quadrature sum over blocks, over a sum of updates of the same order).
The sampler integrates x_final = x_init - sum_t dt_t v_t, so the latents move by at most
sqrt(2) e_p * P * |x_final| where P = sum_t |x_{t+1} - x_t| / |x_final| is the path length of the
bf16 run, measured here from its own callback (LTX-2's callback starts after the first step: the
first displacement is bounded by |x_1| + |noise|, |noise| = sqrt(numel) for unit Gaussian noise,
which only loosens the bound). Guidance combines passes through the same quantized weights on
nearly the same inputs, so their errors are correlated and cancel in the guidance differences
to first order: no extra factor. Measured (4 steps, default guidance, bf16):
tiny LTX-Video (8 blocks): fp8-cast 0.021 vs bound 0.037 (ratio 0.55), fp8-scaled-mm 0.015 vs
0.053 (0.29, fewer layers converted); tiny LTX-2 (7 blocks): fp8-cast 0.057 vs 0.10 (0.56),
fp8-scaled-mm 0.061 vs 0.14 (0.43).
"""

from __future__ import annotations

import math

import pytest
import torch

from ltxengine import Engine
from ltxengine.models.packing import joined, packable
from ltxengine.quant import Fp8Linear
from tests.helpers import perturb_
from tests.pipelines.fixtures import CONFIGS, build_pipeline_folder

diffusers = pytest.importorskip("diffusers")

U = 2.0 ** -4
E_P = {"fp8-cast": U / math.sqrt(3) + 2.0 ** -8, "fp8-scaled-mm": math.sqrt(2) * U / math.sqrt(3) + 2.0 ** -8}
PROMPT = "a red car drives through the park"
GEN = dict(height=64, width=96, num_frames=9, num_inference_steps=4, seed=0, guidance_scale=3.0)
BLOCKS = 8  # deep enough that "fp8-scaled-mm" (not the first block nor the last five) converts blocks 1-2


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """tiny-095 with an 8-block transformer (diffusers' save_pretrained, random perturbed weights)."""
    folder = build_pipeline_folder(tmp_path_factory.mktemp("fp8eng"), "tiny-095")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tr = diffusers.LTXVideoTransformer3DModel(**dict(CONFIGS["tiny-095"]["transformer"], num_layers=BLOCKS))
        perturb_(tr.eval(), seed=12)
    tr.save_pretrained(folder / "transformer")
    return folder


@pytest.fixture(scope="module")
def bf16(folder):
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.bfloat16, kernels="torch")
    x_init = torch.randn(1, 8, 2, 2, 3, generator=torch.Generator().manual_seed(5))
    path = [x_init]
    result = engine.generate(PROMPT, latents=x_init, callback=lambda stage, step, total, timestep, latents:
                             path.append(latents.float().clone()) if stage == "denoise" else None, **GEN)
    assert len(path) == GEN["num_inference_steps"] + 1 and torch.equal(path[-1], result.latents)
    length = sum((b - a).norm() for a, b in zip(path, path[1:])) / path[-1].norm()
    return engine, x_init, result.latents, float(length)


def _weight_bytes(model, names):
    return sum(model.get_submodule(n).weight.numel() * model.get_submodule(n).weight.element_size() for n in names)


@pytest.mark.parametrize("policy", ["fp8-cast", "fp8-scaled-mm"])
def test_fp8_engine_latents_within_budget(folder, bf16, policy):
    ref_engine, x_init, ref, path_length = bf16
    assert ref_engine.quantization is None
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.bfloat16, kernels="torch", quantization=policy)
    assert engine.quantization == policy
    got = engine.generate(PROMPT, latents=x_init, **GEN).latents
    dist = ((got - ref).norm() / ref.norm()).item()
    bound = math.sqrt(2) * E_P[policy] * path_length
    assert dist <= bound, f"{policy}: relative latent distance {dist:.4f} > bound {bound:.4f}"
    assert dist > 1e-3  # the fp8 weights are really in use
    # weight memory of the quantized layers: 1 byte + a 4-byte scale per layer instead of 2 bytes
    fp8 = {n: m for n, m in engine.transformer.named_modules() if isinstance(m, Fp8Linear)}
    per_block = 10 if policy == "fp8-cast" else 10 * (BLOCKS - 6) / BLOCKS
    assert len(fp8) == per_block * BLOCKS
    # fp8-scaled-mm: each converted attention's q/k/v (k/v) run as one quantization + GEMM (models/packing.py)
    attns = [b.attn1 for b in engine.transformer.transformer_blocks[1:BLOCKS - 5]]
    assert all((joined(packable(a)) is not None) == (policy == "fp8-scaled-mm") for a in attns)
    bf16_bytes = _weight_bytes(ref_engine.transformer, fp8)
    fp8_bytes = sum(m.weight.numel() + 4 for m in fp8.values())
    assert fp8_bytes == _weight_bytes(engine.transformer, fp8) + 4 * len(fp8)
    assert 0.5 <= fp8_bytes / bf16_bytes <= 0.51
    total = {name: sum(t.numel() * t.element_size() for t in e.transformer.state_dict().values())
             for name, e in (("bf16", ref_engine), ("fp8", engine))}
    assert total["bf16"] - total["fp8"] == bf16_bytes - fp8_bytes


def test_fp8_engine_options_are_validated(folder):
    with pytest.raises(ValueError, match=r"quantization must be one of \('fp8-cast', 'fp8-scaled-mm'\) or None, "
                                         r"got 'fp8'"):
        Engine.from_pretrained(folder, device="cpu", quantization="fp8")
    with pytest.raises(ValueError, match=r"quantization='fp8-scaled-mm' needs dtype torch.bfloat16 or "
                                         r"torch.float16 .*got torch.float32"):
        Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, quantization="fp8-scaled-mm")
    # fp8 storage with fp32 compute is allowed
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, quantization="fp8-cast")
    assert engine.quantization == "fp8-cast"
    assert engine.transformer.transformer_blocks[0].ff.net[2].weight.dtype == torch.float8_e4m3fn


def test_cli_generate_takes_quantization(monkeypatch, folder):
    from ltxengine import cli

    seen = {}

    def fake(path, **kw):
        seen.update(kw)
        raise SystemExit(0)

    monkeypatch.setattr(Engine, "from_pretrained", staticmethod(fake))
    with pytest.raises(SystemExit):
        cli.main(["generate", "--model", str(folder), "--prompt", "x", "--quantization", "fp8-scaled-mm"])
    assert seen["quantization"] == "fp8-scaled-mm"
    with pytest.raises(SystemExit) as err:
        cli.main(["generate", "--model", str(folder), "--prompt", "x", "--quantization", "int4"])
    assert err.value.code == 2  # argparse: invalid choice


# -- LTX-2 ---------------------------------------------------------------------------------------

LTX2_BLOCKS = 7
LTX2_GEN = dict(seed=1, pipeline="one-stage", height=64, width=96, num_frames=9, num_inference_steps=4)


@pytest.fixture(scope="module")
def ltx2_folder(tmp_path_factory):
    """The tiny LTX-2 pipeline folder of tests/pipelines/ltx2_fixtures.py with a 7-block DiT."""
    from diffusers.models.transformers.transformer_ltx2 import LTX2VideoTransformer3DModel

    from tests.pipelines.ltx2_fixtures import DIT, build_pipeline
    folder = build_pipeline(tmp_path_factory.mktemp("fp8ltx2"))[2]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tr = LTX2VideoTransformer3DModel(**dict(DIT, num_layers=LTX2_BLOCKS), perturbed_attn=True).eval()
        perturb_(tr, seed=1, std=0.2)
    tr.save_pretrained(folder / "transformer")
    return folder


def test_fp8_ltx2_engine_latents_within_budget(ltx2_folder):
    from tests.pipelines.ltx2_fixtures import SEQ
    path, latents, engines = [], {}, {}
    for policy in (None, "fp8-cast", "fp8-scaled-mm"):
        engine = Engine.from_pretrained(ltx2_folder, device="cpu", dtype=torch.bfloat16, kernels="torch",
                                        quantization=policy)
        assert engine.quantization == policy
        hook = (lambda stage, step, total, timestep, latents: path.append(latents.float().clone())
                if stage == "denoise" else None) if policy is None else None
        latents[policy] = engine.generate("a cat sits on the mat", max_sequence_length=SEQ, callback=hook,
                                          **LTX2_GEN).latents
        engines[policy] = engine
    assert torch.equal(path[-1], latents[None])
    length = (path[0].norm() + math.sqrt(path[0].numel()) + sum((b - a).norm() for a, b in zip(path, path[1:])))
    length = float(length / path[-1].norm())
    for policy in ("fp8-cast", "fp8-scaled-mm"):
        dist = ((latents[policy] - latents[None]).norm() / latents[None].norm()).item()
        bound = math.sqrt(2) * E_P[policy] * length
        assert 1e-3 < dist <= bound, f"{policy}: relative latent distance {dist:.4f}, bound {bound:.4f}"
        fp8 = {n: m for n, m in engines[policy].transformer.named_modules() if isinstance(m, Fp8Linear)}
        # an LTX-2 block has 28 linears (6 attentions x 4, 2 feed-forwards x 2), all in the cast rule
        assert len(fp8) == 28 * (LTX2_BLOCKS if policy == "fp8-cast" else LTX2_BLOCKS - 6)
        bf16_bytes = _weight_bytes(engines[None].transformer, fp8)
        assert 0.5 <= sum(m.weight.numel() + 4 for m in fp8.values()) / bf16_bytes <= 0.51
