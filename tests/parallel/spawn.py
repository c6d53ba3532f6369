"""Run a function on N gloo processes (CPU) and collect what each rank returned or raised.

Shared by the parallel tests (sequence, guidance, VAE decode). Processes come from a forkserver
that has imported torch once, so a run costs a fork per rank rather than a torch import per rank;
the forkserver has run no torch op, so forking it is safe (no live OpenMP pool). Ranks meet through
a FileStore in a private temporary folder, not a TCP port, so tests run side by side never collide.

Each rank writes its outcome to a file (torch.save, renamed into place), so nothing large crosses a
pipe. The parent joins every rank with a deadline and kills a rank still alive after it: a test
never hangs, and a hung rank is reported as such (``Outcome.hung``), distinct from one that raised.

``fn`` must be importable by name (a module-level function of a test module): ``fn(rank, world, *args)``
runs after ``init_process_group`` with the default group set up; its return value must pickle.
"""

import dataclasses
import datetime
import multiprocessing
import os
import tempfile
import time
import traceback

import torch

_CTX = multiprocessing.get_context("forkserver")
_CTX.set_forkserver_preload(["torch"])


@dataclasses.dataclass
class Outcome:
    rank: int
    value: object = None        # fn's return value, when it returned
    error: str | None = None    # the traceback, when it raised
    exitcode: int | None = None
    hung: bool = False          # still alive at the deadline (then killed)

    @property
    def ok(self) -> bool:
        return self.error is None and not self.hung and self.exitcode == 0


def _child(fn, rank, world, args, folder, collective_timeout):
    # 2 shared cores: one intra-op thread per rank keeps N ranks from oversubscribing them.
    torch.set_num_threads(1)
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    result = {}
    try:
        torch.distributed.init_process_group(
            "gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=collective_timeout))
        result["value"] = fn(rank, world, *args)
    except BaseException:
        result["error"] = traceback.format_exc()
    tmp = os.path.join(folder, f"rank{rank}.tmp")
    torch.save(result, tmp)
    os.replace(tmp, os.path.join(folder, f"rank{rank}.pt"))
    # No destroy_process_group: after a peer's failure it could block; the process exits anyway.
    os._exit(1 if "error" in result else 0)


def run_outcomes(fn, world: int, *args, timeout: float = 120.0,
                 collective_timeout: float = 60.0) -> list[Outcome]:
    """Run ``fn(rank, world, *args)`` on ``world`` gloo ranks; one Outcome per rank, never raises
    for a rank's failure. ``timeout``: seconds for the whole run before live ranks are killed;
    ``collective_timeout``: the process group's timeout on every collective."""
    with tempfile.TemporaryDirectory(prefix="ltxengine_spawn_") as folder:
        procs = [_CTX.Process(target=_child, args=(fn, r, world, args, folder, collective_timeout))
                 for r in range(world)]
        for p in procs:
            p.start()
        deadline = time.monotonic() + timeout
        outcomes = []
        for rank, p in enumerate(procs):
            p.join(max(0.0, deadline - time.monotonic()))
            hung = p.is_alive()
            if hung:
                p.kill()
                p.join(10)
            outcomes.append(_read(folder, rank, p.exitcode, hung))
        return outcomes


def _read(folder, rank, exitcode, hung) -> Outcome:
    path = os.path.join(folder, f"rank{rank}.pt")
    if not os.path.exists(path):
        return Outcome(rank, error=None if hung else f"rank {rank} wrote no result", exitcode=exitcode, hung=hung)
    result = torch.load(path, weights_only=False)
    return Outcome(rank, result.get("value"), result.get("error"), exitcode, hung)


def run(fn, world: int, *args, timeout: float = 120.0, collective_timeout: float = 60.0) -> list:
    """As run_outcomes, but returns the ranks' values and fails with every rank's report if any
    rank raised, hung or exited non-zero."""
    outcomes = run_outcomes(fn, world, *args, timeout=timeout, collective_timeout=collective_timeout)
    bad = [o for o in outcomes if not o.ok]
    if bad:
        report = "\n".join(f"rank {o.rank}: exit {o.exitcode}{' (hung, killed)' if o.hung else ''}\n"
                           f"{o.error or ''}" for o in bad)
        raise AssertionError(f"{len(bad)} of {world} ranks failed:\n{report}")
    return [o.value for o in outcomes]
