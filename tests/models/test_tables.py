"""Modulation tables packed across blocks and added to temb once per forward (models/tables.py).

The hoisted add is the blocks' own elementwise add (same operands, same dtypes, each output
element one rounding), so packed and unpacked models must give the same bits: torch.equal, fp32
and bf16. Per-token timesteps are never hoisted; anything that replaces a table falls back to the
per-block add, which the counts of aten.add calls show.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.distributed as dist
from torch.utils._python_dispatch import TorchDispatchMode

from ltxengine.executor.block_offload import BlockOffload
from ltxengine.models import tables
from ltxengine.models.ltx2_audio_only import LTX2AudioTransformer
from ltxengine.models.ltx2_transformer import Skip
from ltxengine.models.packing import pack_projections
from ltxengine.models.transformer import grid_positions
from ltxengine.parallel import sequence
from tests.models import ltx2_transformer_fixtures as ltx2
from tests.models.ltx2_audio_only_fixtures import audio_only, run_audio
from tests.models.transformer_fixtures import inputs, make_pair
from tests.parallel import spawn


class _Adds(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += func is torch.ops.aten.add.Tensor
        return func(*args, **(kwargs or {}))


def _counted(fn, *args, **kwargs):
    with _Adds() as adds:
        out = fn(*args, **kwargs)
    return out, adds.count


def _ltxv(model, dtype, per_token: bool):
    x, text, mask, t = inputs()
    x, text = x.to(dtype), text.to(dtype)
    if per_token:
        t = t[:, None].repeat(1, x.shape[1])
        t[:, :20] = 0.0  # conditioned tokens: two distinct values per sample
    with torch.no_grad():
        ctx = model.prepare_context(text, mask)
        return _counted(model, x, t, context=ctx, rope=model.rope(grid_positions(2, 3, 4, 5, None)))


def _packed(model):
    packed = copy.deepcopy(model)
    pack_projections(packed)  # packs the tables too: every load path calls it
    return packed


def _stacked(model, name):
    return tables.stacked([getattr(b, name) for b in model.transformer_blocks])


@pytest.mark.parametrize("dtype,table_dtype", [(torch.float32, None), (torch.bfloat16, None),
                                               (torch.bfloat16, torch.float32)])
def test_ltxv_hoisted_add_gives_the_per_block_bits(dtype, table_dtype):
    """``table_dtype``: fp32 tables in a bf16 model: fp32 + bf16 temb promotes to fp32 in both adds."""
    _, model = make_pair()
    model = model.to(dtype)
    for block in model.transformer_blocks if table_dtype else ():
        block.scale_shift_table.data = block.scale_shift_table.data.to(table_dtype)
    packed = _packed(model)
    layers = len(model.transformer_blocks)
    stack = _stacked(packed, "scale_shift_table")
    assert stack is not None and stack.shape == (layers, 6, model.config.inner_dim)
    assert stack.untyped_storage().nbytes() == stack.numel() * stack.element_size()  # no extra bytes
    assert packed.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in packed.state_dict().items())
    (expected, adds), (out, packed_adds) = _ltxv(model, dtype, False), _ltxv(packed, dtype, False)
    assert torch.equal(out, expected) and packed_adds == adds - (layers - 1)  # L adds became one
    (expected, adds), (out, packed_adds) = _ltxv(model, dtype, True), _ltxv(packed, dtype, True)
    assert torch.equal(out, expected) and packed_adds == adds  # per-token temb: each block adds its own


def _ltx2_inputs(cfg, dtype, per_token: bool):
    x = ltx2.inputs(cfg)
    if not per_token:
        x["vt"] = x["sigma_v"]
    return {k: v.to(dtype) if v.is_floating_point() and k in ("video", "audio", "vtext", "atext") else v
            for k, v in x.items()}


@pytest.mark.parametrize("name,dtype", [("split64", torch.float32), ("v23", torch.float32),
                                        ("v23", torch.bfloat16), ("static_kv", torch.float32)])
def test_ltx2_hoisted_adds_give_the_per_block_bits(name, dtype):
    """2.0 and 2.3 (gated attention, 9-row tables, prompt tables; static_kv: no prompt temb, so
    no add to hoist there), with per-sample STG and modality isolation in one batch."""
    _, model, cfg = ltx2.pair(name)
    model = model.to(dtype)
    packed = _packed(model)
    skip = [Skip.stg([1]), Skip.isolate()]
    kinds = 8 if cfg.kv_mod and cfg.use_prompt_adaln_single else 6  # tables.hoist_blocks' fields
    for per_token in (False, True):  # per-token video timesteps: the video table stays per block
        x = _ltx2_inputs(cfg, dtype, per_token)
        expected, adds = _counted(ltx2.run_ours, model, x, skip=skip)
        out, packed_adds = _counted(ltx2.run_ours, packed, x, skip=skip)
        assert all(torch.equal(o, e) for o, e in zip(out, expected)), (name, per_token)
        # isolate() skips a2v / v2a for sample 1 only: the cross tables are added in every block
        assert packed_adds == adds - (kinds - per_token) * (cfg.num_layers - 1), (name, per_token)


def test_ltx2_audio_only_hoists_on_a_view_and_alone():
    _, full, cfg = ltx2.pair("v23")
    x = _ltx2_inputs(cfg, torch.float32, False)
    expected = run_audio(audio_only(full, cfg), x)
    packed = _packed(full)
    view = LTX2AudioTransformer.view(packed)  # shares the full model's packed Parameters
    alone = _packed(audio_only(full, cfg))
    for model in (view, alone):
        assert _stacked(model, "audio_scale_shift_table") is not None
        out, adds = _counted(run_audio, model, x)
        assert torch.equal(out, expected)
    _, unpacked_adds = _counted(run_audio, audio_only(full, cfg), x)
    assert adds == unpacked_adds - 2 * (cfg.num_layers - 1)


def test_a_replaced_table_falls_back_to_the_per_block_add():
    _, model = make_pair()
    packed = _packed(model)
    expected, adds = _ltxv(model, torch.float32, False)
    block = packed.transformer_blocks[1]
    block.scale_shift_table.data = block.scale_shift_table.data.clone()  # e.g. a conversion or a move
    assert _stacked(packed, "scale_shift_table") is None
    out, fallback_adds = _ltxv(packed, torch.float32, False)
    assert torch.equal(out, expected) and fallback_adds == adds
    assert tables.pack_tables(packed) == 1 and _stacked(packed, "scale_shift_table") is not None  # repacked
    state = {k: v * 1.5 if k.endswith("scale_shift_table") else v for k, v in model.state_dict().items()}
    packed.load_state_dict(state)  # an in-place copy: still packed, with the new values
    model.load_state_dict(state)
    assert _stacked(packed, "scale_shift_table") is not None
    assert torch.equal(_ltxv(packed, torch.float32, False)[0], _ltxv(model, torch.float32, False)[0])


def test_block_offload_moves_the_tables_and_the_blocks_add_their_own():
    """Offload points each table at its group's host buffer: no stack any more (one block per
    group is the case where a lone table lies at offset 0 of a larger storage)."""
    _, model = make_pair()
    expected, adds = _ltxv(model, torch.float32, False)
    for group_size in (1, 2):
        packed = _packed(model)
        off = BlockOffload(packed.transformer_blocks, "cpu", group_size, owner=packed)
        try:
            assert _stacked(packed, "scale_shift_table") is None
            out, offload_adds = _ltxv(packed, torch.float32, False)
        finally:
            off.close()
        assert torch.equal(out, expected) and offload_adds == adds


def test_pack_tables_leaves_mismatched_tables_alone():
    _, model = make_pair()
    blocks = model.transformer_blocks
    blocks[0].scale_shift_table.data = blocks[0].scale_shift_table.data.double()
    assert tables.pack_tables(model) == 0 and _stacked(model, "scale_shift_table") is None
    assert tables.pack_tables(blocks[0]) == 0  # no transformer_blocks: nothing to pack


def _sharded(model, run):
    sequence.enable(model, dist.group.WORLD)
    try:
        return _counted(run, model)
    finally:
        sequence.disable(model)


def _sharded_rank(rank, world):
    """Sequence parallel shards temb before the blocks (per-sample tables as they are, per-token ones
    per rank): the hoisted adds read what the blocks would, so the sharded outputs keep their bits."""
    _, ltxv = make_pair()
    _, model, cfg = ltx2.pair("v23")
    x = _ltx2_inputs(cfg, torch.float32, False)
    runs = {"ltxv": (ltxv, lambda m: _ltxv(m, torch.float32, False)[0]),
            "ltx2": (model, lambda m: ltx2.run_ours(m, x, skip=[Skip.stg([1]), Skip()]))}
    return {name: (_sharded(m, run), _sharded(_packed(m), run)) for name, (m, run) in runs.items()}


def test_sequence_parallel_hoisted_adds_give_the_per_block_bits():
    ranks = spawn.run(_sharded_rank, 2, timeout=120)
    for rank in ranks:
        for name, ((expected, adds), (out, packed_adds)) in rank.items():
            expected, out = (t if isinstance(t, tuple) else (t,) for t in (expected, out))
            assert all(torch.equal(o, e) for o, e in zip(out, expected)), name
            assert packed_adds < adds, name  # hoisted on every rank
