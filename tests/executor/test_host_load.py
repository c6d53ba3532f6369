"""A DiT whose blocks will stream loads them straight into host memory (loading/placement.py), so
one larger than the device still loads: the decision per tensor is recorded and checked, a loader
run with the meta device standing in for the accelerator shows the blocks never go there, and the
engine loaded this way generates what loading resident and then streaming (the path before) does."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from ltxengine import Engine
from ltxengine.executor.block_offload import slot_bytes
from ltxengine.executor.plan import module_bytes
from ltxengine.loading import placement
from ltxengine.loading.checkpoints import load_transformer
from tests.pipelines.fixtures import build_pipeline_folder

KW = dict(seed=3, height=64, width=96, num_frames=9, num_inference_steps=1)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return build_pipeline_folder(tmp_path_factory.mktemp("hostload"), "tiny-095b")  # 3 blocks


@pytest.fixture
def records(monkeypatch):
    """Every HostBlocks record from_pretrained makes."""
    made = []

    class Recorded(placement.HostBlocks):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(placement, "HostBlocks", Recorded)
    return made


def _sides(record) -> tuple[set, set]:
    host = {k for k, d in record.placed.items() if d == record.host and k.startswith("transformer_blocks.")}
    return host, set(record.placed) - host


def test_streamed_engine_loads_its_blocks_to_the_host_and_generates_as_before(folder, records):
    """fp8-cast quantized at load (per layer on the engine's device, then to the host), groups of 1."""
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, quantization="fp8-cast",
                                    offload=("transformer",), offload_group_size=1)
    [record] = records  # one DiT: no other component of the engine is placed
    dit, blocks = engine.transformer, engine.transformer.transformer_blocks
    host, device = _sides(record)
    assert host == {k for k in dit.state_dict() if k.startswith("transformer_blocks.")} and device
    assert not any(k.startswith("transformer_blocks.") for k in device)
    nbytes = {k: t.nbytes for k, t in dit.state_dict().items()}  # fp8 layers at 1 byte, the rest fp32, as loaded
    assert record.host_bytes == sum(nbytes[k] for k in host) > 0
    assert record.device_bytes == sum(nbytes[k] for k in device) == module_bytes(dit) - module_bytes(*blocks)
    assert blocks[0].attn1.to_q.weight.dtype == torch.float8_e4m3fn
    # the path before: everything to the device, then packed to the host by stream_blocks
    before = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, quantization="fp8-cast")
    before.stream_blocks(1)
    assert all(torch.equal(a, b) for a, b in zip(dit.state_dict().values(), before.transformer.state_dict().values()))
    a, b = engine.generate("a red car", **KW), before.generate("a red car", **KW)
    assert torch.equal(a.latents, b.latents) and np.array_equal(a.frames, b.frames)
    assert engine.block_offload.stats["max_resident"] == 2 and engine.block_offload.resident == []


def test_blocks_never_reach_the_device_meta_standing_in_for_it(folder):
    """device='meta': a tensor read to the device has no data, one read to the host has the file's."""
    reference = load_transformer(folder, device="cpu", dtype=torch.float32)
    with placement.blocks_on_host("cpu") as record:
        model = load_transformer(folder, device="meta", dtype=torch.float32)
    for key, t in model.state_dict().items():
        if key.startswith("transformer_blocks."):
            assert t.device.type == "cpu" and torch.equal(t, reference.state_dict()[key]), key
        else:
            assert t.device.type == "meta", key
    assert record.used and record.placed["proj_in.weight"] == torch.device("meta")
    # outside the context nothing is placed on the host
    assert all(p.device.type == "meta" for p in load_transformer(folder, device="meta").parameters())


def test_a_budget_loads_the_blocks_to_the_host_only_when_the_dit_exceeds_it(folder, records):
    small = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, memory_budget=1000)
    assert records[-1].used and small.block_offload.group_size == 2  # streaming from load, budget regroups
    large = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, memory_budget="1TB")
    assert not records[-1].used and records[-1].device_bytes == module_bytes(large.transformer)
    assert large.block_offload is None
    plain = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32)
    assert plain.block_offload is None and len(records) == 2  # no offload, no budget: nothing placed


def test_regrouping_keeps_the_blocks_in_host_memory(folder):
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32, offload=("transformer",))
    old = engine.block_offload
    ranges = [(h.data_ptr(), h.data_ptr() + h.numel()) for h in old._host]
    keep = list(old._host)  # so a freed buffer's address cannot be reused by the new one
    engine.stream_blocks(1)  # close(to_device=False), then packed again from those host views
    assert engine.block_offload.group_size == 1 and old._slots == []
    new = [(h.data_ptr(), h.data_ptr() + h.numel()) for h in engine.block_offload._host]
    for p in engine.transformer.transformer_blocks.parameters():
        assert any(lo <= p.data_ptr() < hi for lo, hi in new)
        assert not any(lo <= p.data_ptr() < hi for lo, hi in ranges)
    model, off = engine.transformer, engine.block_offload
    inside = [(h.data_ptr(), h.data_ptr() + h.numel()) for h in off._host]
    off.close(to_device=False)
    assert all(any(lo <= p.data_ptr() < hi for lo, hi in inside) for p in model.transformer_blocks.parameters())
    del keep


@pytest.mark.gpu
def test_cuda_load_peak_is_the_non_block_weights_plus_two_slots(tmp_path):
    """max_memory_allocated during from_pretrained(offload=('transformer',)) on a DiT widened to
    ~33 MB of bf16 blocks: at most what stays on the device (non-block weights, VAE, T5, two slots)
    plus the largest non-block tensor in fp32 (a cast's staging copy) and 1 MiB of allocator
    rounding; a resident load peaks above that by at least the blocks less the slots."""
    import diffusers
    from tests.pipelines.fixtures import CONFIGS
    folder = build_pipeline_folder(tmp_path, "tiny-095b")
    cfg = dict(CONFIGS["tiny-095b"]["transformer"], num_attention_heads=8, attention_head_dim=64,
               cross_attention_dim=512, num_layers=4)
    torch.manual_seed(0)
    diffusers.LTXVideoTransformer3DModel(**cfg).save_pretrained(folder / "transformer")

    def load(**kw):
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        engine = Engine.from_pretrained(folder, device="cuda", dtype=torch.bfloat16, **kw)
        torch.cuda.synchronize()
        return engine, torch.cuda.max_memory_allocated() - base, torch.cuda.memory_allocated() - base

    engine, peak, held = load(offload=("transformer",), offload_group_size=1)
    blocks = engine.transformer.transformer_blocks
    largest = max(t.numel() * 4 for k, t in engine.transformer.state_dict().items()
                  if not k.startswith("transformer_blocks."))
    assert all(p.device.type == "cpu" and p.is_pinned() for p in blocks.parameters())
    assert engine.block_offload.device_bytes == slot_bytes(blocks, 1)
    assert peak <= held + largest + 2 ** 20, (peak, held, largest)
    del engine
    gc.collect()  # the offload's hooks and the modules reference each other
    resident, peak_resident, _ = load()
    assert peak_resident - peak >= module_bytes(*blocks) - slot_bytes(blocks, 1) - largest - 2 ** 20
