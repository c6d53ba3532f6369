"""How one generation is split over several processes, and the process groups that carry it.

    engine = Engine.from_pretrained(path, parallel=ParallelConfig(sequence=2, guidance=2))  # 4 ranks

``ParallelConfig(sequence=S, guidance=G)`` asks for S x G ranks on a 2-D device mesh
(``torch.distributed.device_mesh``, dims ("guidance", "sequence")): the S ranks of a sequence group
share one guidance pass's transformer call with the video tokens sharded (Ulysses, sequence.py);
the G sequence groups each compute a share of a step's guidance passes (cond / uncond / STG /
isolated), gathered over the guidance group (guidance.py). Rank r sits at guidance index r // S,
sequence index r % S, so a sequence group (the all-to-all heavy one) is S consecutive ranks: one
node's GPUs under torchrun.

``init`` starts torch.distributed from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK,
MASTER_ADDR/PORT) unless a default group exists already: NCCL on CUDA (each rank on cuda:LOCAL_RANK),
gloo on the CPU. Every group gets ``timeout`` seconds per collective, so a rank that fails makes
the others fail with an error at the next collective instead of waiting forever.

CUDA graphs (the step executor, ``executor="auto"`` on CUDA): sequence parallel's all-to-alls and
gathers run inside the transformer call, so they are captured with the step; NCCL collectives can
be captured (they run on the capturing stream), and every rank captures and replays the same
collectives in the same order because every rank makes the same calls. Guidance parallel's gather
runs between replays (parallel/guidance.py). Untested until a multi-GPU machine runs it; on the CPU
the executor is eager and gloo runs every collective.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch

__all__ = ["ParallelConfig", "ParallelState", "agreed_seed", "init", "resolve"]

MESH_DIMS = ("guidance", "sequence")


@dataclass(frozen=True)
class ParallelConfig:
    """The split of one generation: ``sequence`` ranks per transformer call (video tokens
    sharded), ``guidance`` groups of them sharing a step's guidance passes; world size = the product.
    ``timeout``: seconds any collective waits for a peer before raising (a failed rank's peers exit
    instead of hanging)."""

    sequence: int = 1
    guidance: int = 1
    timeout: float = 600.0

    def __post_init__(self):
        for name in ("sequence", "guidance"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"ParallelConfig: {name} must be an int >= 1 (ranks), got {v!r}")
        t = self.timeout
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not t > 0 or t == float("inf"):
            raise ValueError(f"ParallelConfig: timeout must be a finite number of seconds > 0, got {t!r}")

    @property
    def world_size(self) -> int:
        return self.sequence * self.guidance

    @classmethod
    def from_env(cls, sequence: int | None = None, guidance: int | None = None,
                 timeout: float = 600.0) -> "ParallelConfig":
        """The split of torchrun's WORLD_SIZE ranks: all of them sequence parallel when neither is
        given (as SGLang's auto mode picks pure sequence parallel), else the given one and the
        rest of the world for the other."""
        world = env_world_size()
        if sequence is None and guidance is None:
            return cls(sequence=world, guidance=1, timeout=timeout)
        given, name = (sequence, "sequence") if sequence is not None else (guidance, "guidance")
        if isinstance(given, bool) or not isinstance(given, int) or given < 1 or world % given:
            raise ValueError(f"ParallelConfig.from_env: {name} must be an int >= 1 dividing the world size "
                             f"WORLD_SIZE={world}, got {given!r}")
        other = world // given
        if sequence is None:
            sequence = other
        if guidance is None:
            guidance = other
        return cls(sequence=sequence, guidance=guidance, timeout=timeout)


def env_world_size() -> int:
    """torchrun's WORLD_SIZE (1 when unset: a single process)."""
    text = os.environ.get("WORLD_SIZE", "1")
    try:
        world = int(text)
    except ValueError:
        world = 0
    if world < 1:
        raise ValueError(f"parallel: the environment's WORLD_SIZE must be an int >= 1, got {text!r}")
    return world


def _world_size() -> int:
    """The ranks of this job: the default group's when torch.distributed is started, else torchrun's."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return env_world_size()


def resolve(parallel: "ParallelConfig | None") -> "ParallelConfig | None":
    """from_pretrained's ``parallel=`` checked against this job's world size before any work:
    None: every rank of the job sequence parallel (torchrun's WORLD_SIZE, or the started default
    group's size), None again for a single process."""
    if parallel is not None and not isinstance(parallel, ParallelConfig):
        raise ValueError(f"parallel must be a ParallelConfig or None, got {parallel!r}")
    world = _world_size()
    if parallel is None:
        return ParallelConfig(sequence=world) if world > 1 else None
    if parallel.world_size != world:
        raise ValueError(f"parallel: sequence x guidance must equal the world size: ParallelConfig(sequence="
                         f"{parallel.sequence}, guidance={parallel.guidance}) needs {parallel.world_size} ranks, "
                         f"this job has {world} (torchrun --nproc-per-node {parallel.world_size})")
    return None if world == 1 else parallel


@dataclass(frozen=True)
class ParallelState:
    """This rank's place in the mesh and the groups its collectives use."""

    config: ParallelConfig
    rank: int
    world_size: int
    device: torch.device
    mesh: object  # torch.distributed.device_mesh.DeviceMesh, dims MESH_DIMS
    sequence_group: object  # the ranks sharing one transformer call (video tokens sharded)
    guidance_group: object  # the ranks sharing a step's guidance passes
    # every rank as one sequence group: a stage with fewer guidance passes than guidance ranks runs
    # sequence parallel over all of them (parallel/layout.py); None with a single guidance rank
    world_group: object = None

    @property
    def is_main(self) -> bool:
        """Rank 0: runs the text encoder, prints, writes files."""
        return self.rank == 0


def init(config: ParallelConfig, device: torch.device) -> ParallelState:
    """Start torch.distributed (unless started) and build the mesh. ``device``: this rank's
    (CUDA: its index is torchrun's LOCAL_RANK when none was given) -> the rank's state, on ``device``
    with the index filled in."""
    dist = torch.distributed
    if not dist.is_available():
        raise RuntimeError("parallel: this build of torch has no torch.distributed")
    cuda = device.type == "cuda"
    backend = "nccl" if cuda else "gloo"
    if cuda and device.index is None:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if cuda:
        torch.cuda.set_device(device)
    timeout = datetime.timedelta(seconds=config.timeout)
    if not dist.is_initialized():
        extra = {"device_id": device} if cuda else {}
        dist.init_process_group(backend, timeout=timeout, **extra)
    world = dist.get_world_size()
    if world != config.world_size:
        raise ValueError(f"parallel: sequence x guidance must equal the world size: {config.sequence} x "
                         f"{config.guidance} != {world}")
    from torch.distributed.device_mesh import init_device_mesh
    # every group of the mesh gets the configured timeout (the mesh's own default is the backend's,
    # 10-30 minutes: a failed peer would hold the others that long)
    options = _group_options(backend, timeout)
    mesh = init_device_mesh(device.type, (config.guidance, config.sequence), mesh_dim_names=MESH_DIMS,
                            backend_override={name: (backend, options) for name in MESH_DIMS})
    # built here, by every rank at once as new_group needs, with the configured timeout
    everyone = dist.new_group(backend=backend, timeout=timeout) if config.guidance > 1 else None
    return ParallelState(config, dist.get_rank(), world, device, mesh, mesh.get_group("sequence"),
                         mesh.get_group("guidance"), everyone)


def _group_options(backend: str, timeout: datetime.timedelta):
    dist = torch.distributed
    options = dist.ProcessGroupNCCL.Options() if backend == "nccl" else dist.ProcessGroupGloo._Options()
    options._timeout = timeout
    return options


def agreed_seed(seed: int | None, generator) -> int | None:
    """A call's seed, the same on every rank (of the default group): rank 0's random one when the
    call gives neither a seed nor a generator. Ranks given different seeds, or generators in
    different states, would draw different noise and silently disagree: a ValueError on every rank."""
    dist = torch.distributed
    proposal = torch.Generator().seed() if seed is None and generator is None else None
    mine = (seed, None if generator is None else generator.get_state(), proposal)
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, mine)
    first_seed, first_state, _ = everyone[0]
    for rank, (s, state, _) in enumerate(everyone):
        if s != first_seed:
            raise ValueError(f"seed: every rank must generate with the same seed, rank 0 has {first_seed!r}, "
                             f"rank {rank} {s!r}")
        if (state is None) != (first_state is None) or (state is not None and not torch.equal(state, first_state)):
            raise ValueError(f"generator: every rank's generator must be in the same state (rank {rank}'s is not "
                             f"rank 0's): seed them alike, or pass seed=")
    return seed if seed is not None or generator is not None else everyone[0][2]
