"""Transformer block offload (ltxengine/executor/block_offload.py). On the CPU the "device" is the
host, so streaming copies between host buffers: what is checked is the mechanism - every block
computes from its slot copy (never the resting host copy), at most two groups are resident, the
output is bit for bit the resident model's for both families, with fp8 weights (moved as stored)
and LoRAs (fused: the fused host weights stream; fp8 branch: the factors move with their block).
CUDA streams and overlap are in the GPU-marked test."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from ltxengine.config import TransformerConfig
from ltxengine.executor.block_offload import BlockOffload, slot_bytes
from ltxengine.executor.plan import module_bytes
from ltxengine.loading.lora import LoraSet, LoraWeights
from ltxengine.models.transformer import LTXVideoTransformer, grid_positions
from ltxengine.quant.fp8 import Fp8Linear, convert_to_fp8
from tests.helpers import MoveRecorder, perturb_

LTXV = TransformerConfig(in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8,
                         cross_attention_dim=16, num_layers=5, caption_channels=12)


def ltxv_model():
    torch.manual_seed(0)
    model = LTXVideoTransformer(LTXV).eval()
    perturb_(model, seed=1, std=0.2)
    return model


def ltxv_run(model):
    """One LTX-Video step with the cross-attention K/V precomputed (block weights read outside
    the block's forward, as the sampler does)."""
    g = torch.Generator().manual_seed(2)
    x, text = torch.randn(2, 12, 8, generator=g), torch.randn(2, 5, 12, generator=g)
    with torch.no_grad():
        ctx = model.prepare_context(text, torch.ones(2, 5))
        rope = model.rope(grid_positions(2, 2, 2, 3, (1.0, 1.0, 1.0)))
        return model(x, torch.tensor([300.0, 700.0]), context=ctx, rope=rope, cross_kv=model.cross_kv(ctx[0]))


def ltx2_model():
    from ltxengine.models.ltx2_transformer import LTX2Transformer
    from ltxengine.presets import TINY_LTX23
    torch.manual_seed(3)  # every LTX-2.3 switch on (gates, cross-attention adaLN, connector widths)
    model = LTX2Transformer(dataclasses.replace(TINY_LTX23, num_layers=5)).eval()
    perturb_(model, seed=4, std=0.2)
    return model


def ltx2_run(model):
    """One LTX-2 call on a (3, 2, 3) video grid and 5 audio frames, per-token video timesteps."""
    cfg, g = model.config, torch.Generator().manual_seed(5)
    video = torch.randn(2, 18, cfg.in_channels, generator=g)
    audio = torch.randn(2, 5, cfg.audio_in_channels, generator=g)
    texts = [torch.randn(2, 7, w, generator=g) for w in cfg.text_widths]
    sigma = torch.tensor([0.7, 0.3])
    with torch.no_grad():
        rope = model.rope(model.video_positions(2, 3, 2, 3, 24.0), model.audio_positions(2, 5))
        ctx = model.prepare_context(*texts, torch.ones(2, 7, dtype=torch.long))
        v, a = model(video, audio, video_sigma=sigma, video_timesteps=sigma[:, None] * torch.ones(2, 18),
                     context=ctx, rope=rope)
    return torch.cat([v.flatten(), a.flatten()])


FAMILIES = {"ltx-video": (ltxv_model, ltxv_run), "ltx-2": (ltx2_model, ltx2_run)}


def _strict_watch(offload, model) -> dict:
    """Check, before every module of a block runs, that each of its tensors is a view of a device
    slot, that fp8 LoRA branch factors were moved by the offload, and that at most two groups are
    resident."""
    slots = [(s.data_ptr(), s.data_ptr() + s.numel()) for s in offload._slots]
    seen = {"calls": 0, "branch": 0}

    def check(module, args):
        for t in [*module._parameters.values(), *module._buffers.values()]:
            assert t is None or any(lo <= t.data_ptr() < hi for lo, hi in slots), "a block read its host copy"
        for h in module._forward_hooks.values():
            for n in getattr(h, "offload_tensors", ()):
                moved = [(hook, name) for lst in offload._extras.values() for hook, name, _ in lst]
                assert (h, n) in moved, "branch factors left on the host"
                seen["branch"] += 1
        assert len(offload.resident) <= 2, offload.resident
        seen["calls"] += 1

    seen["handles"] = [m.register_forward_pre_hook(check) for block in model.transformer_blocks
                       for m in block.modules() if m._parameters or m._buffers]
    return seen


def streamed(model, group_size):
    host = {k: v.clone() for k, v in model.state_dict().items()}
    off = BlockOffload(model.transformer_blocks, "cpu", group_size, owner=model)
    return off, _strict_watch(off, model), host


# 5 blocks: groups of 1 and 2 cycle through both slots (evictions), 5 is one group
@pytest.mark.parametrize("family, group_size", [("ltx-video", 1), ("ltx-video", 2), ("ltx-video", 5), ("ltx-2", 2)])
def test_streamed_blocks_compute_bit_for_bit_what_resident_ones_do(family, group_size):
    make, run = FAMILIES[family]
    model = make()
    expected = run(model)
    off, seen, before = streamed(model, group_size)
    for _ in range(2):  # the second call streams again from the host copies
        out = run(model)
        assert torch.equal(out, expected)
        assert off.resident == []  # every group back on the host after the forward
    assert seen["calls"] > 0
    groups = -(-5 // group_size)
    assert off.stats["max_resident"] == min(2, groups)
    assert off.stats["loads"] >= 2 * groups if groups > 2 else off.stats["loads"] >= groups
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # nothing written to the weights
    assert all(p.device.type == "cpu" for p in model.transformer_blocks.parameters())
    for h in seen["handles"]:
        h.remove()
    off.close()
    assert all(p.device.type == "cpu" for p in model.transformer_blocks.parameters())
    assert torch.equal(run(model), expected)  # resident again


def test_fp8_weights_stream_as_stored():
    model = convert_to_fp8(ltxv_model(), "fp8-cast")
    assert any(isinstance(m, Fp8Linear) for m in model.transformer_blocks.modules())
    expected = ltxv_run(model)
    dense = sum(t.nbytes for t in ltxv_model().transformer_blocks.parameters())
    stored = sum(t.nbytes for t in model.transformer_blocks.parameters())
    off, seen, _ = streamed(model, 1)
    assert torch.equal(ltxv_run(model), expected)
    # the slots hold the stored bytes (fp8 weights: a quarter of fp32's; norms, biases and scales as
    # they are) plus each tensor's padding to 256 bytes
    assert stored < 0.4 * dense
    n = len(list(model.transformer_blocks[0].parameters()))
    assert 2 * stored / 5 <= off.device_bytes <= 2 * (stored / 5 + 256 * n)
    assert model.transformer_blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn


def _lora(model, seed):
    """A diffusers-layout LoRA (our module paths) of rank 2 on every linear layer of the blocks and
    on proj_in (outside the blocks: resident)."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, m in model.named_modules():
        if isinstance(m, (torch.nn.Linear, Fp8Linear)) and name.startswith(("transformer_blocks.", "proj_in")):
            out_f, in_f = m.weight.shape
            sd[f"transformer.{name}.lora_A.weight"] = torch.randn(2, in_f, generator=g) * 0.3
            sd[f"transformer.{name}.lora_B.weight"] = torch.randn(out_f, 2, generator=g) * 0.3
    return LoraWeights.load(sd)


@pytest.mark.parametrize("fp8_lora", ["fused-dense", "branch", "merge"])
def test_loras_stream_with_their_blocks(fp8_lora):
    fp8 = fp8_lora != "fused-dense"
    make = (lambda: convert_to_fp8(ltxv_model(), "fp8-cast")) if fp8 else ltxv_model
    resident, model = make(), make()
    mode = "branch" if fp8_lora == "fused-dense" else fp8_lora
    lora = _lora(resident, seed=5)
    LoraSet(resident, fp8_lora=mode).apply([(lora, 0.7)])
    expected = ltxv_run(resident)
    off, seen, before = streamed(model, 2)
    lora_set = LoraSet(model, fp8_lora=mode)
    lora_set.apply([(lora, 0.7)])  # fused while every block rests on the host: the fused weights stream
    assert torch.equal(ltxv_run(model), expected)
    if fp8_lora == "branch":
        assert seen["branch"] > 0  # factors made on the host, moved with their block
        hook = next(iter(model.transformer_blocks[0].attn1.to_q._forward_hooks.values()))
        assert hook.a.device.type == "cpu" and off.resident == []
    lora_set.clear()
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # exactly the checkpoint again
    assert not torch.equal(ltxv_run(model), expected)


def test_group_sizes_are_checked():
    model = ltxv_model()
    for bad in (0, 6, True, "2", 1.0):
        with pytest.raises(ValueError, match=re.escape(f"offload_group_size must be an int in [1, 5] (the "
                                                       f"transformer's block count), got {bad!r}")):
            BlockOffload(model.transformer_blocks, "cpu", bad)
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_slot_bytes_is_two_of_the_largest_group():
    model = ltxv_model()
    per_block = module_bytes(model.transformer_blocks[0])
    assert all(module_bytes(b) == per_block for b in model.transformer_blocks)
    # every tensor padded to 256 bytes: at least the block's bytes, at most 256 more per tensor
    n_tensors = len(list(model.transformer_blocks[0].parameters()))
    for g, groups in ((1, 5), (2, 3), (5, 1)):
        got = slot_bytes(model.transformer_blocks, g)
        assert min(2, groups) * g * per_block <= got <= min(2, groups) * g * (per_block + 256 * n_tensors)
    off = BlockOffload(model.transformer_blocks, "cpu", 2)
    assert off.device_bytes == slot_bytes(model.transformer_blocks, 2)


@pytest.mark.gpu
@pytest.mark.parametrize("fp8_lora", [None, "branch"])
def test_cuda_streaming_equals_resident(fp8_lora):
    """On a GPU: pinned host groups, the side-stream copies and events, fp8 weights with LoRA branch
    factors made on the host and copied with their block; bit for bit the resident model."""
    def make():
        model = ltxv_model().cuda()
        return convert_to_fp8(model, "fp8-cast") if fp8_lora else model
    resident, model = make(), make()
    lora = _lora(resident, seed=5)
    if fp8_lora:
        LoraSet(resident, fp8_lora=fp8_lora).apply([(lora, 0.7)])
    expected = ltxv_run(resident)
    off = BlockOffload(model.transformer_blocks, "cuda", 2, owner=model)
    if fp8_lora:
        LoraSet(model, fp8_lora=fp8_lora).apply([(lora, 0.7)])
    assert all(p.device.type == "cpu" and p.is_pinned() for p in model.transformer_blocks.parameters())
    for _ in range(3):
        assert torch.equal(ltxv_run(model), expected)
    torch.cuda.synchronize()
    assert off.stats["max_resident"] == 2 and off.resident == []
    assert off.device_bytes == 2 * off.group_bytes


def test_offload_benchmark_smoke(tmp_path):
    import json
    from bench import scenario_offload as S
    assert S.main(["--smoke", "--out", str(tmp_path), "--reps", "1", "--batch", "1", "--group-sizes", "1"]) == 0
    records = [json.loads(line) for line in (tmp_path / "scenario_offload.jsonl").read_text().splitlines()]
    assert [r["impl"] for r in records] == ["resident", "streamed-g1"]
    assert all(r["status"] == "ok" for r in records) and records[1]["ratio_vs_resident"] > 0


def test_residency_moves_a_component_without_its_streamed_layers():
    from ltxengine.executor.block_offload import layer_stack
    from ltxengine.executor.residency import Residency
    model = ltxv_model()
    layers, owner = layer_stack(model)
    assert layers is model.transformer_blocks and owner is model
    off = BlockOffload(layers, "cpu", 1, owner=owner)
    host = [(h.data_ptr(), h.data_ptr() + h.numel()) for h in off._host]
    residency = Residency("cpu", known=("text_encoder",))
    residency.streamed["text_encoder"] = off
    before = {n: p.data_ptr() for n, p in model.named_parameters()}
    residency._move("text_encoder", model, torch.device("cpu"))
    for name, p in model.named_parameters():
        in_host = any(lo <= p.data_ptr() < hi for lo, hi in host)
        assert in_host == name.startswith("transformer_blocks.")  # streamed layers stay in their buffers
    assert model.proj_in.weight.data_ptr() == before["proj_in.weight"]  # .to(same device) keeps storage
    assert torch.equal(ltxv_run(model), ltxv_run(ltxv_model()))


def test_the_transformer_leaves_the_device_while_the_text_encoder_and_upsampler_run():
    from ltxengine.executor.residency import Residency
    known = ("text_encoder", "latent_upsampler", "vae_encoder", "transformer_between_stages")
    r = Residency("cuda:0", offload=("transformer_between_stages",), known=known)
    r.transformer = dit = MoveRecorder()
    te = MoveRecorder()
    with r.use("text_encoder", te):  # the text encoder itself stays resident (not offloaded)
        assert dit.moves == ["cpu"] and te.moves == []
    assert dit.moves == ["cpu", "cuda:0"]
    with pytest.raises(RuntimeError, match="boom"):
        with r.use("latent_upsampler", MoveRecorder()):
            raise RuntimeError("boom")
    assert dit.moves[-2:] == ["cpu", "cuda:0"]  # back on the device after a failure too
    with r.use("vae_encoder", MoveRecorder()):
        pass
    assert len(dit.moves) == 4  # the VAE encoder runs beside the DiT
    other = r.with_offload((), known)
    assert other.transformer is dit and other.streamed is r.streamed and other.offload == frozenset()
