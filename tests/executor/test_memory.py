"""Activation memory planning, the page pool and served runs (ltxengine/executor/memory.py, serve.py).

Served runs are compared with the plain call by torch.equal: serving changes where outputs are
written, never how they are computed (an out= overload runs the functional op's own kernel), so
any difference is a bug. The arena is poisoned with NaN first: a planned buffer read before it
is written would leak NaN into the output. GPU-marked tests capture a served step in a CUDA graph.
"""

from __future__ import annotations

import os
import random
import re

import pytest
import torch

from ltxengine.config import TransformerConfig, VideoVAEConfig
from ltxengine.executor.memory import Allocation, PagePlan, Trace, plan_pages, trace_allocations
from ltxengine.executor.serve import PageLease, PagePool, PlanMismatch, PoolExhausted, run_served
from ltxengine.models.transformer import LTXVideoTransformer, grid_positions
from ltxengine.models.video_vae import VideoVAE
from ltxengine.ops import get_ops, set_ops
from ltxengine.presets import TINY_2B, TINY_VAE_095
from ltxengine.ltx_video.sampling import Guidance

from ..helpers import perturb_, preset_kwargs, randomize_vae_

# bench's --smoke models (ltxengine/presets.py)
TINY = preset_kwargs(TINY_2B, TransformerConfig())
VAE_095 = preset_kwargs(TINY_VAE_095, VideoVAEConfig())
PAGE = 512  # the smallest page the pool takes: tiny CPU tensors are a few KiB


def make_guide(grid=(3, 4, 5), ops=None, device="cpu", dtype=torch.float32, **config):
    """The transformer call of one CFG step as the pipelines make it: Guidance over a tiny random
    model, text context projected once, RoPE from the model's own helpers. -> (guide, x, t)."""
    torch.manual_seed(0)
    model = LTXVideoTransformer(TransformerConfig(**dict(TINY, **config))).eval()
    perturb_(model, seed=1)
    model = model.to(device, dtype)
    if ops is not None:
        set_ops(model, ops)
    g = torch.Generator().manual_seed(2)
    cap = model.config.caption_channels
    embeds, negative = (torch.randn(1, 7, cap, generator=g).to(device) for _ in range(2))
    mask = torch.ones(1, 7, device=device)
    mask[0, 5:] = 0
    with torch.no_grad():
        guide = Guidance(model, embeds, mask, negative, torch.ones_like(mask), guidance_scale=3.0,
                         guidance_rescale=0.7)
        guide.set_positions(grid_positions(1, *grid, (8 / 25, 32, 32), device=device))
    x = torch.randn(1, grid[0] * grid[1] * grid[2], model.config.in_channels, generator=g).to(device)
    return guide, x, torch.full((2,), 937.5, device=device)


def make_vae_tile():
    """One decode tile of a tiny 0.9.5-layout (timestep-conditioned) VAE -> (decode, (z, temb))."""
    torch.manual_seed(0)
    vae = VideoVAE(VideoVAEConfig(**VAE_095)).eval()
    randomize_vae_(vae, 1)
    z = torch.randn(1, 8, 2, 2, 2, generator=torch.Generator().manual_seed(3))
    return vae.decode, (z, torch.tensor([0.05]))


@pytest.fixture(scope="module")
def cases():
    guide, x, t = make_guide()
    out = {"transformer": (guide, (x, t)), "vae": make_vae_tile()}
    result = {}
    for name, (fn, args) in out.items():
        with torch.no_grad():
            expected = fn(*args)
        result[name] = dict(fn=fn, args=args, expected=expected, trace=trace_allocations(fn, *args))
    return result


def poisoned_pool(plan: PagePlan) -> PagePool:
    pool = PagePool.reserve(plan)
    pool.arena.view(torch.float32).fill_(float("nan"))
    return pool


def in_arena(t: torch.Tensor, pool: PagePool) -> bool:
    base = pool.arena.data_ptr()
    return base <= t.data_ptr() < base + pool.arena.numel()


# -- traces -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["transformer", "vae"])
def test_fake_trace_equals_real_trace(cases, name):
    case = cases[name]
    real = trace_allocations(case["fn"], *case["args"], fake=False)
    fake = case["trace"]
    assert len(fake.allocations) > 20
    assert fake == real  # same ops, sizes, layouts, births and deaths


def test_fake_trace_allocates_nothing():
    # 4 TiB: only a trace that computes metadata alone can record this
    trace = trace_allocations(lambda x: x.expand(1 << 20, 1 << 20).clone(), torch.ones(1, 1))
    (a,) = trace.allocations
    assert (a.op, a.shape, a.nbytes, a.serve, a.escapes) == ("aten.clone.default", (1 << 20, 1 << 20), 4 << 40,
                                                             "copy", True)


def test_trace_reuses_the_fake_mode_of_fake_inputs():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        x = torch.ones(4, 8)  # e.g. a model built under this mode to plan a full-size step
    trace = trace_allocations(lambda x: (x * 2).sum(0), x)
    assert [(a.op, a.shape, a.end) for a in trace.allocations] == [("aten.mul.Tensor", (4, 8), 2),
                                                                   ("aten.sum.dim_IntList", (8,), None)]


def test_views_and_inplace_ops_allocate_nothing():
    def fn(x):
        y = x + 1  # the only allocation
        y.mul_(2)
        return y.view(-1).t().clone()[::2]  # clone allocates; slicing does not

    trace = trace_allocations(fn, torch.ones(4, 3))
    assert trace.ops == ("aten.add.Tensor", "aten.mul_.Tensor", "aten.view.default", "aten.t.default",
                         "aten.clone.default", "aten.slice.Tensor")
    # y is a local: it dies when fn returns, after the last op (tick 6)
    assert [(a.op, a.start, a.end) for a in trace.allocations] == [("aten.add.Tensor", 0, 6),
                                                                   ("aten.clone.default", 4, None)]
    assert trace.live_peak_bytes == 96 and trace.escaping_bytes == 48


# -- served runs --------------------------------------------------------------------------------------

# Served share of the bytes allocated: the transformer leaves SDPA and the final LayerNorm
# (measured 0.94), the VAE every convolution (0.63) to the allocator: their out= overloads are
# composite (allocate, then copy) or missing.
@pytest.mark.parametrize("name,min_served", [("transformer", 0.9), ("vae", 0.55)])
def test_served_run_equals_plain_and_reuses_the_pool(cases, name, min_served):
    case = cases[name]
    plan = plan_pages(case["trace"], PAGE)
    plan.check()
    assert plan.served_bytes / case["trace"].total_bytes > min_served
    pool = poisoned_pool(plan)
    out = run_served(case["fn"], plan, pool, *case["args"])
    assert torch.equal(out, case["expected"])
    assert pool.served_bytes == plan.served_bytes  # the arena served exactly what was planned
    assert not torch.isnan(pool.arena.view(torch.float32)).all()
    assert not in_arena(out, pool)  # the result escapes: the next run would overwrite the arena
    assert pool.used_pages == 0  # the plan's pages were leased for the call only
    again = run_served(case["fn"], plan, pool, *case["args"])
    assert torch.equal(again, case["expected"]) and pool.served_bytes == 2 * plan.served_bytes


def factories(x):
    a = torch.zeros(4, 8) + x  # filled
    b = torch.full_like(x, 2.5) * a  # filled with an argument's value
    c = x.t().contiguous()  # copied (clone)
    d = torch.linspace(0, 1, 8) * b  # out= overload without the factory options
    e = x.to(torch.float64)  # copied (_to_copy)
    f = torch.empty_like(x).copy_(d)  # bare
    return c.sum() + e.sum() + f.sum()


def test_factories_and_copies_are_served():
    x = torch.randn(4, 8)
    trace = trace_allocations(factories, x)
    assert {a.op: a.serve for a in trace.allocations if a.op != "aten.add.Tensor"} == {
        "aten.zeros.default": "fill", "aten.full_like.default": "fill", "aten.mul.Tensor": "out",
        "aten.clone.default": "copy", "aten.linspace.default": "out", "aten._to_copy.default": "copy",
        "aten.empty_like.default": "empty", "aten.sum.default": None}  # sum.out is composite
    plan = plan_pages(trace, PAGE)
    pool = poisoned_pool(plan)
    assert torch.equal(run_served(factories, plan, pool, x), factories(x))
    assert pool.served_bytes == plan.served_bytes > 0.9 * trace.total_bytes


@pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                    reason="Triton kernels on CPU tensors need Triton's interpreter (TRITON_INTERPRET=1)")
def test_custom_op_outputs_are_served():
    guide, x, t = make_guide(grid=(1, 3, 4), ops=get_ops("triton", "cpu"), num_layers=1)
    with torch.no_grad():
        expected = guide(x, t)
    # Triton's interpreter keeps a launch's arguments alive until the next launch, which a fake
    # trace cannot know; a served run would (rightly) stop at the first such tensor. So this
    # plan is traced for real; the fake trace differs from it in deaths only.
    trace = trace_allocations(guide, x, t, fake=False)
    fake = trace_allocations(guide, x, t)
    assert [(a.op, a.shape, a.stride, a.start) for a in fake.allocations] == [
        (a.op, a.shape, a.stride, a.start) for a in trace.allocations]
    plan = plan_pages(trace, PAGE)
    outputs = [i for i, a in enumerate(trace.allocations) if a.serve == "empty"]  # the ops' preallocated outs
    placed = [i for i in outputs if i in plan.offsets]
    assert len(outputs) >= 8  # norms, gated residuals, q/k of the layer's two attentions
    assert len(placed) >= len(outputs) - 2  # the last launch's, alive at the end, escape
    pool = poisoned_pool(plan)
    assert torch.equal(run_served(guide, plan, pool, x, t), expected)
    assert pool.served_bytes == plan.served_bytes


def test_plan_for_another_shape_raises_before_writing():
    guide, x, t = make_guide(grid=(3, 4, 5))
    trace = trace_allocations(guide, x, t)
    plan = plan_pages(trace, PAGE)
    pool = PagePool.reserve(plan)
    run_served(guide, plan, pool, x, t)  # memoizes each planned op's layout for these arguments
    pool.arena.view(torch.float32).fill_(float("nan"))
    guide.set_positions(grid_positions(1, 2, 4, 5, (8 / 25, 32, 32)))
    # the timestep embedding matches; the CFG batch cat of the tokens is the first planned op
    # whose output differs, and it is checked before it writes
    with pytest.raises(PlanMismatch, match=r"op #\d+ \(aten\.cat\.default\) would return \(2, 40, 8\) stride "
                                           r"\(320, 8, 1\).* the plan placed \(2, 60, 8\) stride \(480, 8, 1\)") as err:
        run_served(guide, plan, pool, x[:, :40], t)
    bad = trace.allocations[int(re.search(r"allocation #(\d+)", str(err.value)).group(1))]
    written = torch.zeros(plan.arena_pages, dtype=torch.bool)  # by the ops before, rightly
    for i, first in plan.offsets.items():
        if trace.allocations[i].start < bad.start:
            written[first:first + plan.pages(i)] = True
    pages = pool.arena.view(torch.float32).view(plan.arena_pages, -1)
    assert (~written).sum() > plan.arena_pages // 2
    assert torch.isnan(pages[~written]).all()
    assert pool.used_pages == 0


def test_unserved_op_with_other_output_raises():
    fn = torch.nn.functional.layer_norm  # native_layer_norm: three outputs, no out= overload
    plan = plan_pages(trace_allocations(fn, torch.ones(4, 8), (8,)), PAGE)
    with pytest.raises(PlanMismatch, match=r"op #0 \(aten\.native_layer_norm\.default\) output 0 is \(5, 8\) "
                                           r"stride \(8, 1\).*the plan traced \(4, 8\) stride \(8, 1\)"):
        run_served(fn, plan, PagePool.reserve(plan), torch.ones(5, 8), (8,))


KEEP = []


def chain(x, hold=False, ret=False, steps=1):
    """Traced as: op 0 y = x * 2, op 1 z = y + 1 (y dies), op 2 z * 3 (returned)."""
    y = x * 2
    if hold:
        KEEP.append(y)  # alive past its planned death
    z = y + 1
    del y
    for _ in range(steps - 1):
        z = z + 1
    out = z * 3
    return (out, z) if ret else out  # z dies on return, unless returned


def add_n(x, n):
    for _ in range(n):
        x = x + 1
    return x


@pytest.mark.parametrize("kwargs,message", [
    (dict(hold=True), r"output of op #0 \(aten\.mul\.Tensor, \(64,\)\) is still referenced at op #2, but the "
                      r"plan frees its pages at op #2"),
    (dict(ret=True), r"output of op #1 \(aten\.add\.Tensor, \(64,\)\) is still referenced at the end of the call"),
    (dict(steps=2), r"op #2 is aten\.add\.Tensor, the plan traced aten\.mul\.Tensor"),
])
def test_served_call_diverging_from_its_trace_raises(kwargs, message):
    x = torch.randn(64)
    plan = plan_pages(trace_allocations(chain, x), PAGE)
    pool = PagePool.reserve(plan)
    assert torch.equal(run_served(chain, plan, pool, x), chain(x))
    with pytest.raises(PlanMismatch, match=message):
        run_served(chain, plan, pool, x, **kwargs)
    KEEP.clear()
    assert pool.used_pages == 0


def test_served_call_with_fewer_or_more_ops_raises():
    x = torch.randn(64)
    plan = plan_pages(trace_allocations(add_n, x, 3), PAGE)
    pool = PagePool.reserve(plan)
    assert torch.equal(run_served(add_n, plan, pool, x, 3), x + 3)
    with pytest.raises(PlanMismatch, match="the call ran 2 ops, the plan traced 3"):
        run_served(add_n, plan, pool, x, 2)
    with pytest.raises(PlanMismatch, match=r"op #3 is aten\.add\.Tensor, the plan traced nothing"):
        run_served(add_n, plan, pool, x, 4)


def test_lease_keeps_its_pages_and_bad_pools_are_refused():
    x = torch.randn(64)
    plan = plan_pages(trace_allocations(chain, x), PAGE)
    assert plan.arena_pages == 2  # y and z (256 bytes each) overlap at op 1; the result escapes
    pool = PagePool("cpu", plan.arena_pages + 2, PAGE)
    with pool.lease(plan.arena_pages + 1) as lease:
        assert isinstance(lease, PageLease)
        assert torch.equal(run_served(chain, plan, lease, x), chain(x))
        assert pool.used_pages == plan.arena_pages + 1  # held for, e.g., a CUDA graph replaying into it
    assert pool.used_pages == 0
    with pytest.raises(ValueError, match="run_served: pool must be a PagePool or a PageLease, got str"):
        run_served(chain, plan, "cpu", x)
    with pytest.raises(ValueError, match="the pool has 1024-byte pages on cpu, the plan 512-byte pages on cpu"):
        run_served(chain, plan, PagePool("cpu", 4, 1024), x)
    big = plan_pages(trace_allocations(chain, torch.randn(1024)), PAGE)
    with pytest.raises(ValueError, match=f"the lease holds 1 pages, the plan needs {big.arena_pages}"):
        run_served(chain, big, PagePool("cpu", 8, PAGE).lease(1), torch.randn(1024))
    with pytest.raises(PoolExhausted, match=f"cannot allocate {big.arena_pages} pages"):
        run_served(chain, big, PagePool("cpu", 1, PAGE), torch.randn(1024))


# -- the planner --------------------------------------------------------------------------------------

def alloc(start, end, nbytes, serve="out", device="cpu"):
    return Allocation("aten.test", (nbytes,), (1,), torch.uint8, torch.device(device), nbytes, start, end, serve)


def make_trace(*allocs):
    ticks = max(max(a.start, a.end or 0) for a in allocs) + 1
    return Trace(tuple(sorted(allocs, key=lambda a: a.start)), ("aten.test",) * ticks)


def test_plan_reaches_the_known_optimum():
    # a [0, 2) and c [2, 4) never live together: they share pages; b overlaps both
    a, b, c = alloc(0, 2, 400), alloc(1, 3, 200), alloc(2, 4, 400)
    plan = plan_pages(make_trace(a, b, c), 100)
    plan.check()
    assert plan.offsets == {0: 0, 1: 4, 2: 0}
    assert plan.arena_pages == plan.lower_bound_pages == 6  # a + b at tick 1, b + c at tick 2
    chain_plan = plan_pages(make_trace(*(alloc(i, i + 1, 300) for i in range(5))), 100)
    assert chain_plan.arena_pages == 3 and set(chain_plan.offsets.values()) == {0}


def test_page_rounding():
    plan = plan_pages(make_trace(alloc(0, 1, 1), alloc(0, 1, 100), alloc(0, 1, 101)), 100)
    assert [plan.pages(i) for i in range(3)] == [1, 1, 2]
    assert plan.arena_pages == 4 and plan.arena_bytes == 400
    assert plan_pages(make_trace(alloc(0, 1, 1))).page_size == 4096  # the CPU default


def test_only_servable_allocations_inside_the_call_are_placed():
    trace = make_trace(alloc(0, 2, 500), alloc(1, None, 300), alloc(0, 2, 200, serve=None),
                       alloc(0, 3, 2000, device="meta"))
    plan = plan_pages(trace, 100)
    assert plan.device == torch.device("meta")  # most bytes; "cpu" is asked for below
    plan = plan_pages(trace, 100, device="cpu")
    assert list(plan.offsets) == [0]  # escaping, unservable and other-device ones stay out
    assert plan.unserved_peak_bytes == 500  # the escaping 300 + the unservable 200 at tick 1
    assert plan.predicted_peak_bytes == 500 + 500
    assert trace.live_peak_bytes == 3000 and trace.escaping_bytes == 300  # all four alive at tick 1


def test_plan_invariant_holds_on_random_lifetimes():
    rng = random.Random(0)
    worst = 1.0
    for _ in range(20):
        allocs = []
        for _ in range(150):
            start = rng.randrange(200)
            end = None if rng.random() < 0.05 else start + 1 + int(rng.expovariate(1 / 15))
            allocs.append(alloc(start, end, rng.choice([rng.randrange(1, 5000), rng.randrange(1, 300000)]),
                                serve=rng.choice(["out", "out", "copy", None])))
        plan = plan_pages(make_trace(*allocs), 4096)
        plan.check()
        assert plan.lower_bound_pages <= plan.arena_pages <= sum(plan.pages(i) for i in plan.offsets)
        worst = max(worst, plan.arena_pages / plan.lower_bound_pages)
    assert worst < 1.25  # fragmentation: measured 1.14 at worst, 1.02 on average over these traces


def test_check_catches_bad_plans():
    a, b = alloc(0, 2, 100), alloc(1, 3, 100)
    trace = make_trace(a, b)
    with pytest.raises(ValueError, match=r"allocations 0 and 1 are alive together \(ticks \[1, 2\)\) and share"):
        PagePlan(trace, 100, torch.device("cpu"), {0: 0, 1: 0}, 1, 0).check()
    with pytest.raises(ValueError, match=r"allocation 1 pages \[1, 2\) lie outside the arena of 1 pages"):
        PagePlan(trace, 100, torch.device("cpu"), {0: 0, 1: 1}, 1, 0).check()
    escaping = make_trace(alloc(0, None, 100))
    with pytest.raises(ValueError, match="allocation 0 .* is placed but is not servable"):
        PagePlan(escaping, 100, torch.device("cpu"), {0: 0}, 1, 0).check()


@pytest.mark.parametrize("page_size", [0, -4, 1.5])
def test_plan_rejects_bad_page_size(page_size):
    with pytest.raises(ValueError, match=f"plan_pages: page_size must be a positive int of bytes, got {page_size}"):
        plan_pages(make_trace(alloc(0, 1, 1)), page_size)


# -- the pool -----------------------------------------------------------------------------------------

def test_pool_accounting_and_fragmentation():
    pool = PagePool("cpu", 10, PAGE)
    assert pool.arena.numel() == 10 * PAGE
    a, b, c = pool.alloc(3), pool.alloc(2), pool.alloc(4)
    assert (a, b, c) == (0, 3, 5)
    assert (pool.used_pages, pool.free_pages, pool.largest_free_run) == (9, 1, 1)
    pool.free(b)
    assert (pool.free_pages, pool.largest_free_run) == (3, 2)  # free but fragmented: 2 + 1
    with pytest.raises(PoolExhausted, match=r"cannot allocate 3 pages \(1536 bytes\): 3 of 10 pages free, "
                                            r"largest free run 2 pages \(1024 bytes\)") as err:
        pool.alloc(3)
    assert isinstance(err.value, MemoryError)
    assert pool.alloc(2) == 3  # first fit
    pool.free(a)
    pool.free(c)
    pool.free(3)
    assert (pool.used_pages, pool.largest_free_run, pool.peak_pages) == (0, 10, 9)  # runs coalesced


def test_pool_errors():
    pool = PagePool("cpu", 8, PAGE)
    first = pool.alloc(4)
    pool.free(first)
    with pytest.raises(ValueError, match=r"page 0 is not the first page of an allocated run \(already free"):
        pool.free(first)
    first = pool.alloc(4)
    with pytest.raises(ValueError, match=r"page 2 .*\(inside the run starting at page 0\)"):
        pool.free(2)
    with pytest.raises(ValueError, match=r"page 9 .*\(outside the pool's pages \[0, 8\)\)"):
        pool.free(9)
    with pytest.raises(ValueError, match="PagePool.alloc: npages must be a positive int, got 0"):
        pool.alloc(0)
    with pytest.raises(ValueError, match="PagePool: num_pages must be a positive int, got 0"):
        PagePool("cpu", 0, PAGE)
    with pytest.raises(ValueError, match="PagePool: page_size must be a positive multiple of 512 bytes, got 100"):
        PagePool("cpu", 4, 100)


def test_pool_views_stay_inside_allocated_runs():
    pool = PagePool("cpu", 8, PAGE)
    first = pool.alloc(2)  # 1024 bytes = 256 floats
    v = pool.view(first + 1, (8, 16), (16, 1), torch.float32)  # the run's second page, exactly
    v.fill_(3.0)
    assert torch.equal(pool.arena[PAGE:2 * PAGE].view(torch.float32), torch.full((128,), 3.0))
    t = pool.view(first, (4, 3), (1, 4), torch.float32)  # strided (transposed) views too
    assert t.stride() == (1, 4) and t.data_ptr() == pool.arena.data_ptr()
    with pytest.raises(ValueError, match=r"a \(9, 16\) torch.float32 tensor .* at page 1 spans pages \[1, 3\), "
                                         r"which are not inside one allocated run"):
        pool.view(first + 1, (9, 16), (16, 1), torch.float32)
    with pytest.raises(ValueError, match=r"spans pages \[4, 5\)"):
        pool.view(4, (2,), (1,), torch.float32)  # free pages
    with pytest.raises(ValueError, match=r"first_page must be in \[0, 8\), got 8"):
        pool.view(8, (2,), (1,), torch.float32)
    with pytest.raises(ValueError, match=r"shape \(2, 2\) and stride \(1,\) must have equal lengths"):
        pool.view(first, (2, 2), (1,), torch.float32)


def test_reserve_fits_the_plan():
    plan = plan_pages(make_trace(alloc(0, 2, 4000), alloc(1, 3, 1000)), PAGE)
    pool = PagePool.reserve(plan)
    assert (pool.num_pages, pool.page_size, pool.device) == (plan.arena_pages, PAGE, torch.device("cpu"))
    assert plan.arena_pages == 8 + 2


# -- GPU: CUDA graphs and the predicted peak ------------------------------------------------------------

# mid-size: D = 1024, 8 blocks, 3072 tokens, CFG batch 2, bf16 (~150 MiB of activations)
MID = dict(in_channels=128, out_channels=128, num_attention_heads=16, attention_head_dim=64,
           cross_attention_dim=1024, num_layers=8, caption_channels=256)


@pytest.fixture(scope="module")
def cuda_step():
    guide, x, t = make_guide(grid=(8, 16, 24), device="cuda", dtype=torch.bfloat16, **MID)
    with torch.no_grad():
        guide(x, t)  # warm-up: cuBLAS workspace and handles exist before anything is measured
    return guide, x, t, trace_allocations(guide, x, t)


@pytest.mark.gpu
def test_cuda_fake_trace_equals_real_trace(cuda_step):
    guide, x, t, trace = cuda_step
    assert trace == trace_allocations(guide, x, t, fake=False)


@pytest.mark.gpu
def test_cuda_predicted_peak_within_5_percent(cuda_step):
    guide, x, t, trace = cuda_step
    plan = plan_pages(trace)  # 2 MiB pages
    with torch.no_grad():
        expected = guide(x, t)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    pool = PagePool.reserve(plan)
    out = run_served(guide, plan, pool, x, t)
    torch.cuda.synchronize()
    measured = torch.cuda.max_memory_allocated() - base
    assert torch.equal(out, expected)
    assert abs(plan.predicted_peak_bytes - measured) <= 0.05 * measured, (plan.predicted_peak_bytes, measured)


@pytest.mark.gpu
def test_cuda_served_ops_allocate_only_what_the_plan_leaves_to_the_allocator(cuda_step):
    guide, x, t, trace = cuda_step
    plan = plan_pages(trace)
    pool = PagePool.reserve(plan)
    run_served(guide, plan, pool, x, t)  # warm-up of the out= paths
    unserved = sum(1 for i, a in enumerate(trace.allocations)
                   if i not in plan.offsets and a.device == plan.device and a.nbytes > 0)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    run_served(guide, plan, pool, x, t)
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] - before == unserved


@pytest.mark.gpu
def test_cuda_graph_of_a_served_step_replays_without_allocating(cuda_step):
    guide, x, t, trace = cuda_step
    plan = plan_pages(trace)
    pool = PagePool.reserve(plan)
    lease = pool.lease(plan.arena_pages)  # held while the graph replays into these pages
    static_x, static_t = x.clone(), t.clone()
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        run_served(guide, plan, lease, static_x, static_t)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run_served(guide, plan, lease, static_x, static_t)
    x2 = torch.randn_like(x)
    static_x.copy_(x2)
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()["allocation.all.allocated"]
    graph.replay()
    torch.cuda.synchronize()
    assert torch.cuda.memory_stats()["allocation.all.allocated"] == before
    with torch.no_grad():
        expected = guide(x2, t)
    assert torch.equal(static_out, expected)
    lease.release()
