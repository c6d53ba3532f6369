"""One generation over several gloo processes equals the single-process generation (issue 22).

Both families' tiny demo checkpoints (ltxengine/demo.py), fp32 on the CPU, the same seed: every
rank returns the single-process video, latents and (LTX-2) audio within 1e-5 of the output's
scale, for guidance parallel (ranks split a step's guidance passes), sequence parallel (video
tokens sharded, parallel/sequence.py) and both on a 2 x 2 mesh. The budget: each rank computes
its passes in its own (smaller) batch and, with sequence parallel, attention over heads in
another order; fp32 rounding of those differs at ~1e-7 per step and stays far below 1e-5 over
the few steps here (the measured errors are printed). Rank 0 alone writes ``output``.

One spawn per world size runs every case of it (a spawn costs a process start per rank).
"""

import numpy as np
import pytest
import torch
from torch._subclasses import FakeTensor

from tests.helpers import assert_close_scaled
from tests.parallel import spawn

TOL = 1e-5

# small calls: 2 latent frames of 2 x 2 tokens, 2 steps
STEPS = 2
LV = dict(height=64, width=64, num_frames=9, num_inference_steps=STEPS, seed=3)


def _ltx2(passes: int, **extra):
    """An LTX-2 call whose video and audio guidance need ``passes`` passes a step: 4 (cond, uncond,
    STG, isolated) or 3 (no modality guidance: uneven over 2 ranks)."""
    from ltxengine import GuidanceParams
    guide = GuidanceParams(cfg=3.0, stg=1.0, stg_blocks=(0,), rescale=0.7, modality=2.0 if passes == 4 else 1.0)
    return dict(height=64, width=64, num_frames=9, num_inference_steps=STEPS, seed=5, pipeline="one-stage",
                negative_prompt="blurry", max_sequence_length=16, video_guidance=guide, audio_guidance=guide,
                **extra)


# name -> (family: 0 LTX-Video, 1 LTX-2; the call's arguments, made in the process that runs it)
CALLS = {
    "ltxv-cfg": (0, lambda: dict(LV, guidance_scale=3.0, guidance_rescale=0.5)),
    "ltxv-no-cfg": (0, lambda: dict(LV, guidance_scale=1.0)),  # one pass: a guidance rank idles
    "ltx2-4-passes": (1, lambda: _ltx2(4)),
    "ltx2-3-passes-batch-1": (1, lambda: _ltx2(3, guidance_batch=1)),
}
# what the sequence-parallel splits run (their token split is what they add)
SEQUENCE_CALLS = ("ltxv-cfg", "ltx2-4-passes")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from ltxengine.demo import write_demo_checkpoint, write_demo_ltx2_checkpoint
    root = tmp_path_factory.mktemp("parallel_ckpt")
    return str(write_demo_checkpoint(root / "ltxv")), str(write_demo_ltx2_checkpoint(root / "ltx2"))


def _outputs(result) -> dict:
    out = {"latents": result.latents.float(), "video": torch.from_numpy(np.asarray(result.frames, np.float32))}
    if result.audio is not None:
        out["audio"] = torch.from_numpy(np.asarray(result.audio, np.float32))
    return out


def _run_calls(folders, parallel, names, out_dir=None) -> dict:
    """Each named call on an engine of its family loaded with ``parallel`` -> {name: outputs}."""
    from ltxengine import Engine
    engines, results = {}, {}
    for name in names:
        family, call = CALLS[name]
        if family not in engines:
            engines[family] = Engine.from_pretrained(folders[family], device="cpu", dtype=torch.float32,
                                                     parallel=parallel)
        output = f"{out_dir}/{name}.mp4" if out_dir is not None else None
        rows = []  # the batch rows of every transformer call (not the memory plan's fake ones)
        hook = engines[family].transformer.register_forward_pre_hook(
            lambda m, args: None if isinstance(args[0], FakeTensor) else rows.append(args[0].shape[0]))
        results[name] = _outputs(engines[family].generate("a red car drives", output=output, **call()))
        results[name]["rows"] = sum(rows)
        hook.remove()
    return results


@pytest.fixture(scope="module")
def references(checkpoints):
    return _run_calls(checkpoints, None, list(CALLS))


def _rank(rank, world, folders, sequence, guidance, names, out_dir):
    from ltxengine.parallel.config import ParallelConfig
    return _run_calls(folders, ParallelConfig(sequence=sequence, guidance=guidance, timeout=60), names, out_dir)


def _check_split(checkpoints, references, tmp_path, sequence: int, guidance: int, names) -> None:
    world = sequence * guidance
    values = spawn.run(_rank, world, checkpoints, sequence, guidance, names, str(tmp_path), timeout=240)
    for rank, results in enumerate(values):
        assert set(results) == set(names)
        for name in names:
            got, want = dict(results[name]), dict(references[name])
            rows, all_rows = got.pop("rows"), want.pop("rows")
            # each rank runs its guidance rank's share of the P passes of every step (steps: 2)
            passes = all_rows // STEPS
            assert rows == STEPS * len(range(rank // sequence, passes, guidance)), (name, rows, all_rows)
            assert set(got) == set(want), name
            for what in want:
                err = assert_close_scaled(got[what], want[what], TOL, f"rank {rank} {name} {what}")
                if rank == 0:
                    print(f"{name} sequence x guidance = {sequence} x {guidance}: {what} max error {err:.1e}")
    # rank 0 wrote each call's file; no other rank wrote anything
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{n}.mp4" for n in names)


def test_guidance_parallel_two_ranks(checkpoints, references, tmp_path):
    _check_split(checkpoints, references, tmp_path, 1, 2, list(CALLS))


def test_wrong_world_size_is_refused_before_any_work(checkpoints):
    from ltxengine import Engine
    from ltxengine.parallel.config import ParallelConfig
    with pytest.raises(ValueError, match=r"sequence x guidance must equal the world size.*needs 4 ranks, this "
                                         r"job has 1"):
        Engine.from_pretrained(checkpoints[0], device="cpu", parallel=ParallelConfig(sequence=2, guidance=2))


def test_torchrun_cli_writes_one_file_from_rank_0(checkpoints, tmp_path):
    """``torchrun --nproc-per-node 2 -m ltxengine generate ... --guidance-parallel 2`` on the demo
    checkpoint: no --seed (rank 0's random seed must reach every rank), one report, one file."""
    import os
    import subprocess
    import sys

    from ltxengine.media import read_media
    out = tmp_path / "out.mp4"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "ltxengine",
           "generate", "--model", checkpoints[0], "--prompt", "a red car", "--height", "64", "--width", "64",
           "--num-frames", "9", "--steps", "2", "--device", "cpu", "--dtype", "fp32", "--guidance-parallel", "2",
           "--output", str(out), "--quiet"]
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    reports = [line for line in run.stdout.splitlines() if line.startswith(str(out))]
    assert len(reports) == 1 and "9 frames 64x64" in reports[0], run.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.mp4"]
    assert read_media(out)[0].shape[0] == 9
