"""executor/replay.py: a repeated module traced once and replayed. The reference is the full trace
(every call run: ``signature`` forced to None); the replayed trace must give the same allocations
tick for tick where the calls are identical, and a live peak never below the full trace's."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import ltxengine.executor.replay as replay
from ltxengine.executor.memory import trace_allocations
from ltxengine.models import tables
from ltxengine.models.packing import pack_projections
from tests.executor import plan_fixtures

engine, ltx2_engine = plan_fixtures.engine, plan_fixtures.ltx2_engine  # the tiny engines' fixtures


class Block(nn.Module):
    def __init__(self, d: int = 8, hidden: int = 16, skip: bool = False, keep: bool = False):
        super().__init__()
        self.up, self.down = nn.Linear(d, hidden), nn.Linear(hidden, d)
        self.skip, self.keep = skip, keep

    def forward(self, x, scale: float = 1.0):
        if self.skip:
            return x  # the input itself: a replay must hand back the same object
        h = self.up(x).relu()
        if self.keep:
            self.saved = h * 2  # outlives the call, held by the module
        return x + self.down(h) * scale


class Stack(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x, scales=None):
        for i, b in enumerate(self.blocks):
            x = b(x) if scales is None else b(x, scale=scales[i])
        return x.float().sum(-1)


def _full(monkeypatch, fn, *args, repeated):
    with monkeypatch.context() as m:
        m.setattr(replay, "signature", lambda *a: None)  # every call runs: the full trace
        return trace_allocations(fn, *args, repeated=repeated)


def _replays(monkeypatch) -> list:
    calls = []
    original = replay._replay
    monkeypatch.setattr(replay, "_replay", lambda *a: calls.append(1) or original(*a))
    return calls


def _rows(trace):
    return [(a.op, a.shape, a.stride, a.dtype, a.nbytes, a.start, a.end, a.serve) for a in trace.allocations]


def test_identical_blocks_replay_tick_for_tick(monkeypatch):
    torch.manual_seed(0)
    blocks = [Block() for _ in range(5)] + [Block(skip=True), Block(hidden=24), Block(), Block(hidden=24)]
    model = Stack(blocks)
    x = torch.randn(2, 10, 8)
    full = _full(monkeypatch, model, x, repeated=model.blocks)
    calls = _replays(monkeypatch)
    fast = trace_allocations(model, x, repeated=model.blocks)
    # distinct signatures: hidden 16, skip, hidden 24 -> 3 run, the other 6 replayed
    assert len(calls) == 6
    assert fast.ops == full.ops and _rows(fast) == _rows(full)
    assert fast.live_peak_bytes == full.live_peak_bytes > 0


def test_arguments_and_state_are_part_of_the_signature(monkeypatch):
    model = Stack([Block() for _ in range(4)])
    x = torch.randn(3, 8)
    calls = _replays(monkeypatch)
    scales = [1.0, 2.0, 1.0, 2.0]  # plain values by value: two signatures
    fast = trace_allocations(model, x, scales, repeated=model.blocks)
    assert len(calls) == 2 and _rows(fast) == _rows(_full(monkeypatch, model, x, scales, repeated=model.blocks))
    calls.clear()
    model.blocks[2].flag = "other"  # a plain attribute differs: block 2 runs
    trace_allocations(model, x, repeated=model.blocks)
    assert len(calls) == 2


def test_a_call_that_changes_its_module_or_arguments_is_never_replayed(monkeypatch):
    model = Stack([Block(keep=True) for _ in range(4)])  # each call sets block.saved
    x = torch.randn(4, 8)
    calls = _replays(monkeypatch)
    fast = trace_allocations(model, x, repeated=model.blocks)
    assert not calls and _rows(fast) == _rows(_full(monkeypatch, model, x, repeated=model.blocks))
    assert all(hasattr(b, "saved") for b in model.blocks)

    class Squeeze(Block):
        def forward(self, x, scale=1.0):
            x.unsqueeze_(0)  # changes the caller's tensor: the next block sees another shape
            return super().forward(x[0], scale)
    model = Stack([Squeeze() for _ in range(3)])
    fast = trace_allocations(model, torch.randn(4, 8), repeated=model.blocks)
    assert not calls and _rows(fast) == _rows(_full(monkeypatch, model, torch.randn(4, 8), repeated=model.blocks))


def test_state_left_where_the_signature_does_not_look_is_never_freed_in_a_replay(monkeypatch):
    """An object argument the call changes (box.items) makes the call run; a tensor stored where the
    signature does not look (a list the block closes over) is replayed as alive to the end: above
    the full trace, never below."""
    class Box:
        pass
    hidden = []

    class Keeper(Block):
        def forward(self, x, box=None):
            box.items.append(self.up(x) * 2)
            hidden.append(self.down(self.up(x)) * 3)
            return super().forward(x)

    class BoxStack(Stack):
        def forward(self, x):
            box = Box()
            box.items = []
            for b in self.blocks:
                x = b(x, box=box)
                box.items.pop(0)
            hidden.clear()  # the full trace sees the hidden tensors die here
            return x.float().sum(-1)
    model = BoxStack([Keeper() for _ in range(4)])
    x = torch.randn(4, 8)
    full = _full(monkeypatch, model, x, repeated=model.blocks)
    calls = _replays(monkeypatch)
    fast = trace_allocations(model, x, repeated=model.blocks)
    assert not calls and _rows(fast) == _rows(full)  # box.items changed: every call ran

    class Hider(Block):
        def forward(self, x):
            hidden.append(self.down(self.up(x)) * 3)
            return super().forward(x)

    class HiddenStack(Stack):
        def forward(self, x):
            for b in self.blocks:
                x = b(x)
            hidden.clear()
            return x.repeat(1, 64).sum(-1)  # the peak: where the full trace has freed the hidden tensors
    model = HiddenStack([Hider() for _ in range(4)])
    full = _full(monkeypatch, model, x, repeated=model.blocks)
    fast = trace_allocations(model, x, repeated=model.blocks)
    assert len(calls) == 3 and fast.ops == full.ops
    assert fast.live_peak_bytes > full.live_peak_bytes


def test_hooked_modules_always_run(monkeypatch):
    model = Stack([Block() for _ in range(3)])
    model.blocks[1].register_forward_hook(lambda m, i, o: o * 1)
    x = torch.randn(2, 8)
    calls = _replays(monkeypatch)
    fast = trace_allocations(model, x, repeated=model.blocks)
    assert len(calls) == 1  # block 2 replays block 0; the hooked block 1 runs
    assert _rows(fast) == _rows(_full(monkeypatch, model, x, repeated=model.blocks))
    assert "forward" not in vars(model.blocks[0])  # the memo is removed after the trace


def test_replay_needs_fake_tensors():
    model = Stack([Block()])
    with pytest.raises(ValueError, match="repeated= .* needs fake=True"):
        trace_allocations(model, torch.randn(2, 8), fake=False, repeated=model.blocks)


def _deepen(transformer, n: int):
    """The transformer with ``n`` blocks (copies of its first): the depth a released model has."""
    blocks = transformer.transformer_blocks
    saved = list(blocks)
    blocks.extend(copy.deepcopy(saved[0]) for _ in range(n - len(saved)))
    return saved


def _traced(monkeypatch, cls) -> list:
    """Counts the calls of ``cls``' blocks that run (a replay does not call forward). Patched on the
    class: memoized() wraps each instance's forward, a hook would make the blocks unreplayable."""
    calls, forward = [], cls.forward
    monkeypatch.setattr(cls, "forward", lambda self, *a, **k: calls.append(1) or forward(self, *a, **k))
    return calls


@pytest.mark.parametrize("family", ["ltxv", "ltx2"])
def test_engine_plans_equal_the_full_trace(family, request, monkeypatch):
    """The denoise phase of a tiny engine deepened to 6 blocks: the replayed plan's numbers are the
    full trace's (LTX-2's STG pass makes its perturbed block distinct; the others replay). With the
    modulation tables packed (models/tables.py: block i reads slice i of one hoisted table + temb
    add), the blocks replay as often as with per-block adds."""
    eng = request.getfixturevalue("engine" if family == "ltxv" else "ltx2_engine")
    kwargs = dict(height=64, width=96, num_frames=9, num_inference_steps=2)
    if family == "ltx2":
        from tests.pipelines import ltx2_fixtures as l2
        kwargs.update(pipeline="one-stage", video_guidance=l2.params(l2.GUIDED),
                      audio_guidance=l2.params(l2.GUIDED, "audio_"), max_sequence_length=l2.SEQ)
    blocks = eng.transformer.transformer_blocks
    saved = _deepen(eng.transformer, 6)
    try:
        traced = _traced(monkeypatch, type(blocks[0]))
        eng.plan("a", **kwargs)  # the copies' tables (and q/k/v) are not packed: each block adds its own
        unhoisted = len(traced)
        assert tables.stacked([b.scale_shift_table for b in blocks]) is None
        pack_projections(eng.transformer)  # the copies' too: all six hoisted
        assert tables.stacked([b.scale_shift_table for b in blocks]) is not None
        traced.clear()
        fast = eng.plan("a", **kwargs)
        # blocks that run (the others replay): one signature per forward on LTX-Video; on LTX-2
        assert (unhoisted, len(traced)) == ((2, 1) if family == "ltxv" else (3, 2)), (unhoisted, len(traced))
        with monkeypatch.context() as m:
            m.setattr(replay, "signature", lambda *a: None)
            full = eng.plan("a", **kwargs)
    finally:
        del blocks[len(saved):]
        pack_projections(eng.transformer)  # the fixture's two blocks packed on their own again
    assert [(p.name, p.transient_bytes, p.kept_bytes) for p in fast.phases] == \
        [(p.name, p.transient_bytes, p.kept_bytes) for p in full.phases]


class GateBlock(nn.Module):
    """Returns a view of its argument (as an LTX block's Pending stream holds its gate, a slice of
    the hoisted table + temb tensor)."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.up = nn.Linear(d, d)

    def forward(self, x, mod):
        return x + self.up(x) * mod[0], mod[1:]


class GateStack(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.blocks = nn.ModuleList(GateBlock() for _ in range(n))
        self.gates = []

    def forward(self, x, mods):
        for block, mod in zip(self.blocks, mods):  # block i: slice i of one (n, 3, d) tensor
            x, gate = block(x, mod)
            self.gates.append((gate.storage_offset(), tuple(gate.shape), gate.stride()))
            x = x * gate[0]
        return x


def test_an_output_aliasing_an_argument_is_replayed_at_that_arguments_offset(monkeypatch):
    """Slice i of one tensor lies at offset i * 3 * 8 fp32 = 96 i bytes: alignment classes 0 and 32
    (of 64), so blocks 0 and 1 run and the others replay, each handing back its own slice's view."""
    model, n = GateStack(6), 6
    x, mods = torch.randn(4, 8), torch.randn(n, 3, 8)
    full = _full(monkeypatch, model, x, mods, repeated=model.blocks)
    expected, model.gates = model.gates, []
    assert [g[0] for g in expected] == [i * 24 + 8 for i in range(n)]
    calls = _replays(monkeypatch)
    fast = trace_allocations(model, x, mods, repeated=model.blocks)
    assert len(calls) == n - 2 and model.gates == expected
    assert _rows(fast) == _rows(full) and fast.live_peak_bytes == full.live_peak_bytes > 0


class Pair(nn.Module):
    def __init__(self, storage: torch.Tensor, offsets):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4, bias=False), nn.Linear(4, 4, bias=False)
        self.a.weight.data = storage[offsets[0]:offsets[0] + 16].view(4, 4)
        self.b.weight.data = storage[offsets[1]:offsets[1] + 16].view(4, 4)


def test_parameters_are_keyed_by_alignment_and_by_their_places_relative_to_each_other():
    """Adjacent weights (packing.joined: one GEMM) and weights apart (two GEMMs) differ; the same
    pair shifted by 64 bytes in an equal storage does not; shifted by 32 bytes it does (alignment)."""
    def key(offsets):
        return replay.signature(Pair(torch.zeros(64), offsets), (), {})[0]
    assert key((0, 16)) != key((0, 32))
    assert key((0, 16)) == key((16, 32)) != key((8, 24))
class Cfg:
    def __init__(self, wide: bool):
        self.wide = wide


class CfgBlock(nn.Module):
    """Reads a plain object argument (keyed by identity): ``cfg.wide`` doubles its hidden width."""

    def __init__(self, d: int = 8):
        super().__init__()
        self.up = nn.Linear(d, d)

    def forward(self, x, cfg):
        h = self.up(x)
        if cfg.wide:
            h = torch.cat([h, h], -1)
        return x + h.sum(-1, keepdim=True)


class CfgStack(nn.Module):
    def __init__(self, n: int):
        super().__init__()
        self.blocks = nn.ModuleList(CfgBlock() for _ in range(n))
        self.ids = []

    def forward(self, x):
        for i, b in enumerate(self.blocks):
            cfg = Cfg(wide=i % 2 == 1)  # a new object per call: CPython often reuses the last one's id
            self.ids.append(id(cfg))
            x = b(x, cfg)
            del cfg
        return x


def test_an_object_keyed_by_identity_is_not_confused_with_a_dead_one(monkeypatch):
    model = CfgStack(6)
    x = torch.randn(3, 8)
    fast = trace_allocations(model, x, repeated=model.blocks)
    if len(set(model.ids)) == len(model.ids):
        pytest.skip("no id was reused in this run: nothing to confuse")
    assert _rows(fast) == _rows(_full(monkeypatch, model, x, repeated=model.blocks))


class _Config:
    """Reads of unknown attributes raise, not with AttributeError (as Gemma 4's config does for some)."""

    def __init__(self, fail_in_forward: bool = False):
        self.fail_in_forward = fail_in_forward

    def __getattr__(self, name):
        raise KeyError(f"no config entry {name!r}")


class ConfigBlock(Block):
    def __init__(self, config: _Config):
        super().__init__()
        self.config = config  # signature() asks it for memoized()'s marker: the read raises

    def forward(self, x, scale: float = 1.0):
        if self.config.fail_in_forward:
            return self.config.missing  # the call's own error
        return super().forward(x, scale)


def test_a_signature_that_cannot_be_read_runs_the_call(monkeypatch):
    """Any error while building a call's signature (here a KeyError from an attribute read) means
    "run it unreplayed", not "abort the trace"; an error of the call itself still propagates."""
    config = _Config()
    model = Stack([ConfigBlock(config) for _ in range(3)])
    with pytest.raises(KeyError, match="memo_wrapper"):
        replay._module_key(model.blocks[0], replay._Seen())  # what used to abort the whole trace
    x = torch.randn(2, 8)
    calls = _replays(monkeypatch)
    fast = trace_allocations(model, x, repeated=model.blocks)
    assert calls == [] and fast.live_peak_bytes > 0
    assert _rows(fast) == _rows(_full(monkeypatch, model, x, repeated=model.blocks))
    config.fail_in_forward = True
    with pytest.raises(KeyError, match="no config entry 'missing'"):
        trace_allocations(model, x, repeated=model.blocks)
    assert "forward" not in vars(model.blocks[0])  # the memo is removed after a failed trace too
