"""ParallelConfig and its checks, the mesh's groups and their timeout, guidance parallel's row
split / gather and the text encoder's broadcast from rank 0 (ltxengine/parallel/config.py,
guidance.py, text.py). End-to-end parity of generations is tests/parallel/test_engine_parallel.py."""

import os

import pytest
import torch

from tests.parallel import spawn


# -- ParallelConfig (one process) ------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, match", [
    (dict(sequence=0), r"sequence must be an int >= 1 \(ranks\), got 0"),
    (dict(guidance=1.5), r"guidance must be an int >= 1 \(ranks\), got 1.5"),
    (dict(guidance=True), r"guidance must be an int >= 1 \(ranks\), got True"),
    (dict(timeout=0), r"timeout must be a finite number of seconds > 0, got 0"),
    (dict(timeout=float("inf")), r"timeout must be a finite number of seconds > 0, got inf"),
])
def test_config_refuses_bad_values(kwargs, match):
    from ltxengine.parallel.config import ParallelConfig
    with pytest.raises(ValueError, match=match):
        ParallelConfig(**kwargs)


def test_config_is_exported():
    import ltxengine
    from ltxengine.parallel.config import ParallelConfig
    assert ltxengine.ParallelConfig is ParallelConfig and "ParallelConfig" in ltxengine.__all__
    assert ParallelConfig(sequence=2, guidance=3).world_size == 6


def test_config_from_torchrun_environment(monkeypatch):
    from ltxengine.parallel.config import ParallelConfig, resolve
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert resolve(None) is None  # one process: no parallel state
    assert resolve(ParallelConfig()) is None
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert ParallelConfig.from_env() == ParallelConfig(sequence=4, guidance=1)  # all ranks sequence parallel
    assert ParallelConfig.from_env(guidance=2) == ParallelConfig(sequence=2, guidance=2)
    assert ParallelConfig.from_env(sequence=1).guidance == 4
    assert resolve(None) == ParallelConfig(sequence=4)
    assert resolve(ParallelConfig(sequence=2, guidance=2)).world_size == 4
    with pytest.raises(ValueError, match=r"from_env: guidance must be an int >= 1 dividing the world size "
                                         r"WORLD_SIZE=4, got 3"):
        ParallelConfig.from_env(guidance=3)
    with pytest.raises(ValueError, match=r"ParallelConfig\(sequence=2, guidance=1\) needs 2 ranks, this job has 4"):
        resolve(ParallelConfig(sequence=2))
    with pytest.raises(ValueError, match=r"parallel must be a ParallelConfig or None, got \(2, 2\)"):
        resolve((2, 2))
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match=r"WORLD_SIZE must be an int >= 1, got 'two'"):
        resolve(None)


# -- several ranks ------------------------------------------------------------------------------------

def _mesh_and_collectives(rank, world):
    """The 2 x 2 mesh's groups, gather_rows for every row count on a group of 4 and of 2, and the
    text broadcast (values, None entries, a failure on rank 0)."""
    from ltxengine.parallel.config import ParallelConfig, init, resolve
    from ltxengine.parallel.guidance import gather_rows, rows_of
    from ltxengine.parallel.text import on_main_rank
    dist = torch.distributed
    # a default group started without torchrun's environment: parallel=None splits over all of it
    assert "WORLD_SIZE" not in os.environ and resolve(None) == ParallelConfig(sequence=4)
    state = init(ParallelConfig(sequence=2, guidance=2, timeout=30), torch.device("cpu"))
    groups = {name: dist.get_process_group_ranks(getattr(state, f"{name}_group"))
              for name in ("sequence", "guidance", "world")}
    timeout = [group._get_backend(torch.device("cpu")).options._timeout.total_seconds()
               for group in (state.guidance_group, state.world_group)]
    gathered = {}
    for group_name, group in (("world", dist.group.WORLD), ("guidance", state.guidance_group)):
        for n in range(1, 6):
            rows = rows_of(group, n)  # row i holds i in every element: the gather must put it at i
            local = [torch.tensor(rows, dtype=torch.float32)[:, None].expand(-1, 3),
                     torch.tensor(rows, dtype=torch.float32)[:, None, None].expand(-1, 2, 2)]
            a, b = gather_rows(local if rows else [None, None], [(3,), (2, 2)], n, group, "cpu")
            gathered[group_name, n] = (a[:, 0].tolist(), b[:, 1, 1].tolist(), tuple(a.shape), tuple(b.shape))
    text = on_main_rank(state, lambda: (torch.full((2, 3), 7.0), None, torch.ones(2, dtype=torch.bool)))
    try:
        on_main_rank(state, lambda: 1 / 0)
        failure = None
    except (ZeroDivisionError, RuntimeError) as e:
        failure = f"{type(e).__name__}: {e}"
    return (groups, timeout, gathered, [None if t is None else t.tolist() for t in text], failure,
            _seeds(rank), _layouts(state))


def _layouts(state):
    """parallel/layout.py on the 2 x 2 mesh: which stages go world-wide, the transformer's sequence
    group inside and after a world-wide stage (also one that fails), the fallback's log line."""
    import logging
    import types

    from ltxengine.models.transformer import LTXVideoTransformer
    from ltxengine.parallel import layout, sequence
    from ltxengine.presets import DEMO_TRANSFORMER, TINY_2B
    four, two = (types.SimpleNamespace(parallel=state, transformer=LTXVideoTransformer(c), guidance_group="mesh")
                 for c in (DEMO_TRANSFORMER, TINY_2B))  # 4 and 2 heads
    sequence.enable(four.transformer, state.sequence_group)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logging.getLogger(layout.__name__).addHandler(handler)
    logging.getLogger(layout.__name__).setLevel(logging.INFO)
    chosen = {case: layout.choose(engine, passes, tokens)
              for case, engine, passes, tokens in (("1 pass", four, 1, 16), ("2 passes", four, 2, 16),
                                                   ("3 tokens", four, 1, 3), ("2 heads", two, 1, 16))}
    sizes = []
    for fail in (False, True):
        try:
            with layout.stage_layout(four, 1, 16) as got:
                sizes.append((got, four.transformer.sequence_parallel.size))
                if fail:
                    raise RuntimeError("stage failed")
        except RuntimeError:
            pass
        sizes.append(four.transformer.sequence_parallel.size)
    with layout.stage_layout(four, 2, 16) as got:
        sizes.append((got, four.transformer.sequence_parallel.size))
    return chosen, sizes, [r.getMessage() for r in records]


def _seeds(rank):
    """agreed_seed: rank 0's random seed for everyone; disagreeing seeds / generators refused on every rank."""
    from ltxengine.parallel.config import agreed_seed

    def outcome(seed, generator):
        try:
            return agreed_seed(seed, generator)
        except ValueError as e:
            return str(e)
    return (outcome(None, None), outcome(7, None), outcome(7 + (rank == 3), None),
            outcome(None, torch.Generator().manual_seed(5)), outcome(None, torch.Generator().manual_seed(rank)))


def test_mesh_groups_gather_and_text_broadcast():
    values = spawn.run(_mesh_and_collectives, 4, timeout=120)
    for rank, (groups, timeout, gathered, text, failure, seeds, layouts) in enumerate(values):
        chosen, sizes, logged = layouts
        assert chosen == {"1 pass": True, "2 passes": False, "3 tokens": False, "2 heads": False}
        world = (None, ("sequence-world", 4))  # no guidance split, graphs keyed on the layout
        assert sizes == [(world, 4), 2, (world, 4), 2, (("mesh", ()), 2)]
        assert len(logged) == 2 and all("keeps the 2 x 2 (guidance x sequence) mesh" in m for m in logged)
        assert "num_video_tokens must be at least the group size 4" in logged[0]
        assert "num_attention_heads must be divisible by the group size 4" in logged[1]
        # rank r: guidance index r // 2, sequence index r % 2 (a sequence group is consecutive ranks)
        # the world group (a one-pass stage's sequence group, parallel/layout.py): every rank in rank order
        assert groups == {"sequence": [rank - rank % 2, rank - rank % 2 + 1], "guidance": [rank % 2, rank % 2 + 2],
                          "world": [0, 1, 2, 3]}
        assert timeout == [30, 30]  # the configured timeout, not the backend's default
        for (group, n), (a, b, shape_a, shape_b) in gathered.items():
            assert a == b == list(range(n)), (rank, group, n)
            assert shape_a == (n, 3) and shape_b == (n, 2, 2)
        assert text == [[[7.0] * 3] * 2, None, [True, True]]
        # rank 0 raises its own error; the others are told rank 0 failed instead of waiting
        if rank == 0:
            assert failure == "ZeroDivisionError: division by zero"
        else:
            assert failure.startswith("RuntimeError: parallel: the text encoder failed on rank 0 "
                                      "(ZeroDivisionError: division by zero)")
        random, given, differing, same_generators, differing_generators = seeds
        assert random == values[0][5][0] and isinstance(random, int)  # rank 0's random seed on every rank
        assert (given, same_generators) == (7, None)
        assert differing == "seed: every rank must generate with the same seed, rank 0 has 7, rank 3 8"
        assert differing_generators.startswith("generator: every rank's generator must be in the same state (rank 1's")
