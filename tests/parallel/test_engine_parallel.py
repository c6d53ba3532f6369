"""One generation over several gloo processes equals the single-process generation (issue 22).

Both families' tiny demo checkpoints (ltxengine/demo.py), fp32 on the CPU, the same seed: every
rank returns the single-process video, latents and (LTX-2) audio within 1e-5 of the output's
scale, for guidance parallel (ranks split a step's guidance passes), sequence parallel (video
tokens sharded, parallel/sequence.py) and both on a 2 x 2 mesh; with VAE tiling the ranks share
the decode's tiles (parallel/vae.py). The budget: each rank computes
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

# small calls: 2 latent frames of 2 x 4 tokens, 2 steps
STEPS = 2
LV = dict(height=64, width=128, num_frames=9, num_inference_steps=STEPS, seed=3)


def _ltx2(passes: int, **extra):
    """An LTX-2 call whose video and audio guidance need ``passes`` passes a step: 4 (cond, uncond,
    STG, isolated) or 3 (no modality guidance: uneven over 2 ranks)."""
    from ltxengine import GuidanceParams
    guide = GuidanceParams(cfg=3.0, stg=1.0, stg_blocks=(0,), rescale=0.7, modality=2.0 if passes == 4 else 1.0)
    call = dict(height=64, width=128, num_frames=9, num_inference_steps=STEPS, seed=5, pipeline="one-stage",
                negative_prompt="blurry", max_sequence_length=16, video_guidance=guide, audio_guidance=guide)
    return {**call, **extra}


def _tiles():
    """Two tiles of 2 x 2 latents across a 64 x 128 frame: the ranks share the VAE decode (parallel/vae.py)."""
    from ltxengine import TilingConfig
    return TilingConfig(64, 64, 16, 64, 64, 8)


# name -> (family: 0 LTX-Video, 1 LTX-2; the call's arguments, made in the process that runs it)
CALLS = {
    "ltxv-cfg": (0, lambda: dict(LV, guidance_scale=3.0, guidance_rescale=0.5, vae_tiling=_tiles())),
    "ltxv-no-cfg": (0, lambda: dict(LV, guidance_scale=1.0)),  # one pass: a guidance rank idles
    "ltx2-4-passes": (1, lambda: _ltx2(4, vae_tiling=_tiles())),
    # latents out (no decode: the decoders' parity is the calls above)
    "ltx2-3-passes-batch-1": (1, lambda: _ltx2(3, guidance_batch=1, output_type="latent")),
    # two stages: stage 2 has one pass (a guidance rank waits) and LTX-Video's per-token timesteps
    "ltxv-two-stage": (0, lambda: dict(LV, guidance_scale=3.0, two_stage=True)),
    "ltx2-two-stage": (1, lambda: _ltx2(4, pipeline="two-stage", two_stage=_lora_off(), output_type="latent")),
    # the 2 x 2 mesh's two-stage calls: stage 2's single pass runs sequence parallel over all 4 ranks
    # (parallel/layout.py), which needs head counts divisible by 4: LTX-2 with 4 video and audio heads
    "ltxv-two-stage-1-pass": (0, lambda: dict(LV, guidance_scale=3.0, two_stage=_ltxv_stage2(1.0))),
    "ltx2-4-heads-two-stage": (2, lambda: _ltx2(4, pipeline="two-stage", two_stage=_lora_off(), output_type="latent")),
}
FOUR_RANK_CALLS = ("ltxv-two-stage-1-pass", "ltx2-4-heads-two-stage")


def _ltxv_stage2(guidance_scale: float):
    from ltxengine.ltx_video.request import TwoStage
    return TwoStage(guidance_scale=guidance_scale, num_inference_steps=5)


def _lora_off():
    from ltxengine import LTX2TwoStage
    return LTX2TwoStage(lora_strength=0.0)  # no distilled LoRA for random weights (said, so no warning)
# what the sequence-parallel splits run (their token split is what they add)
SEQUENCE_CALLS = ("ltxv-cfg", "ltx2-4-passes")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from ltxengine.demo import write_demo_checkpoint, write_demo_ltx2_checkpoint
    root = tmp_path_factory.mktemp("parallel_ckpt")
    ltx2 = write_demo_ltx2_checkpoint(root / "ltx2")
    return str(write_demo_checkpoint(root / "ltxv")), str(ltx2), str(_four_heads(ltx2, root / "ltx2-4-heads"))


def _four_heads(demo, folder):
    """The LTX-2 demo folder with a transformer of 4 video and 4 audio heads (the same widths)."""
    import dataclasses
    import shutil

    from ltxengine.demo import _build, _save
    from ltxengine.loading.ltx2 import COMPONENT_SPECS
    from ltxengine.presets import demo_ltx2
    shutil.copytree(demo, folder)
    cfg = dataclasses.replace(demo_ltx2("2.0")["transformer"], num_attention_heads=4, attention_head_dim=8,
                              audio_num_attention_heads=4, audio_attention_head_dim=4)
    spec = COMPONENT_SPECS["transformer"]
    _save(_build(spec, cfg), folder / "transformer", spec.diffusers_class, cfg)
    return folder


def _outputs(result) -> dict:
    """What the result holds: latents, and frames / audio waveform, or audio latents (output_type="latent")."""
    out = {"latents": result.latents.float()}
    for name, value in (("video", result.frames), ("audio", result.audio), ("audio_latents", result.audio_latents)):
        if value is not None:
            out[name] = torch.as_tensor(np.asarray(value, np.float32))
    return out


def _run_calls(folders, parallel, names, out_dir=None, check_memory=False) -> dict:
    """Each named call on an engine of its family loaded with ``parallel`` -> {name: outputs}.
    check_memory: the memory plan before each call (it changes no number; tracing it costs ~90% of
    these tiny calls' time, so only the sequence-parallel split runs it, tracing the sharded model)."""
    from ltxengine import Engine
    engines, results = {}, {}
    for name in names:
        family, call = CALLS[name]
        if family not in engines:
            engines[family] = Engine.from_pretrained(folders[family], device="cpu", dtype=torch.float32,
                                                     parallel=parallel)
            engines[family].check_memory = check_memory
        kwargs = call()
        latent = kwargs.get("output_type") == "latent"  # no frames: no file
        output = f"{out_dir}/{name}.mp4" if out_dir is not None and not latent else None
        # the batch rows of every transformer call and the VAE decoder's calls (tiles), not the memory
        # plan's fake ones
        # with the sequence group size each transformer call ran under (1: not sharded)
        rows, tiles, engine = [], [], engines[family]
        hooks = [module.register_forward_pre_hook(lambda m, args, seen=seen, count=count: None if isinstance(
                     args[0], FakeTensor) else seen.append((args[0].shape[0], _sharded_over(m)) if count else 1))
                 for module, seen, count in ((engine.transformer, rows, True), (engine.vae.decoder, tiles, False))]
        results[name] = _outputs(engine.generate("a red car drives", output=output, **kwargs))
        results[name]["rows"], results[name]["tiles"] = rows, len(tiles)
        # after the call: the transformer back on its configured group; a step graph keyed on the world layout
        results[name]["after"] = _sharded_over(engine.transformer)
        results[name]["world_graphs"] = any("sequence-world" in repr(b.key[0]) for b in engine.executor.buckets)
        for hook in hooks:
            hook.remove()
    return results


def _sharded_over(transformer) -> int:
    sharding = transformer.sequence_parallel
    return 1 if sharding is None else sharding.size


@pytest.fixture(scope="module")
def references(checkpoints):
    return _run_calls(checkpoints, None, list(CALLS))


def _rank(rank, world, folders, splits, out_dir):
    """Every (sequence, guidance, calls) of ``splits`` -> {(sequence, guidance): {name: outputs}}."""
    from ltxengine import Engine
    from ltxengine.parallel.config import ParallelConfig
    results = {}
    for sequence, guidance, names in splits:
        config = ParallelConfig(sequence=sequence, guidance=guidance, timeout=60)
        got = results[sequence, guidance] = _run_calls(folders, config, names, f"{out_dir}/{sequence}x{guidance}",
                                                       check_memory=(sequence, guidance) == (2, 1))
        if sequence > 1:  # too few video tokens for the split: refused by every rank before any work
            engine = Engine.from_pretrained(folders[0], device="cpu", dtype=torch.float32, parallel=config)
            assert engine.transformer.sequence_parallel is not None  # the video tokens are sharded
            steps = []
            try:
                engine.generate("a red car", height=32, width=32, num_frames=1, seed=0,
                                callback=lambda *a, **k: steps.append(a))
            except ValueError as e:
                got["refused"] = (str(e), len(steps))
    return results


def _check_splits(checkpoints, references, tmp_path, world: int, splits) -> None:
    for sequence, guidance, _ in splits:
        (tmp_path / f"{sequence}x{guidance}").mkdir()
    values = spawn.run(_rank, world, checkpoints, splits, str(tmp_path), timeout=240)
    for sequence, guidance, names in splits:
        for rank, results in enumerate(values):
            results = dict(results[sequence, guidance])
            if sequence > 1:
                assert results.pop("refused") == (f"sequence parallel: num_video_tokens must be at least the group "
                                                  f"size {sequence} (one token per rank), got 1", 0)
            assert set(results) == set(names)
            for name in names:
                _compare(results[name], references[name], rank, sequence, guidance, name)
        for name in names:  # a tiled decode's tiles are shared out, each decoded by one rank
            tiles = [results[sequence, guidance][name]["tiles"] for results in values]
            want = references[name]["tiles"]
            assert tiles == [want] * world if want < 2 else sum(tiles) == want and max(tiles) < want, (name, tiles)
        # rank 0 wrote each call's file; no other rank wrote anything
        written = sorted(p.name for p in (tmp_path / f"{sequence}x{guidance}").iterdir())
        assert written == sorted(f"{n}.mp4" for n in names if "video" in references[n])


def _compare(got, want, rank, sequence, guidance, name):
    got, want = dict(got), dict(want)
    calls, all_rows = got.pop("rows"), [rows for rows, _ in want.pop("rows")]
    got.pop("tiles"), want.pop("tiles"), want.pop("after"), want.pop("world_graphs")
    expected = _expected_calls(all_rows, name.endswith("batch-1"), rank, sequence, guidance)
    assert calls == expected, (name, calls, expected)
    assert got.pop("after") == sequence, name  # the configured group again after a world-wide stage
    world_graphs = got.pop("world_graphs")
    world_wide = guidance > 1 and any(size == sequence * guidance for _, size in calls)
    assert world_graphs or not world_wide, name  # its step graphs keyed on the layout
    assert set(got) == set(want), name
    for what in want:
        err = assert_close_scaled(got[what], want[what], TOL, f"rank {rank} {name} {what}")
        if rank == 0:
            print(f"{name} sequence x guidance = {sequence} x {guidance}: {what} max error {err:.1e}")


def _expected_calls(all_rows, batch_1: bool, rank, sequence, guidance) -> list:
    """(rows, sequence group size) of each transformer call of ``rank``: a step of p passes (one
    single-process call holds them all, or 3 calls of one with guidance_batch=1) runs the rank's
    guidance share on its sequence group, or, when p < guidance, every pass sharded over all ranks."""
    share, world = rank // sequence, sequence * guidance
    calls = []
    for p in [3] * (len(all_rows) // 3) if batch_1 else all_rows:
        k = len(range(share, p, guidance))
        if guidance > 1 and p < guidance:
            calls.append((p, world))
        elif batch_1:
            calls += [(1, sequence)] * k
        elif k:
            calls.append((k, sequence))
    return calls


def test_guidance_or_sequence_parallel_two_ranks(checkpoints, references, tmp_path):
    two_rank_calls = [name for name in CALLS if name not in FOUR_RANK_CALLS]
    _check_splits(checkpoints, references, tmp_path, 2, [(1, 2, two_rank_calls), (2, 1, list(SEQUENCE_CALLS))])


def test_sequence_and_guidance_parallel_four_ranks(checkpoints, references, tmp_path):
    """A 2 x 2 mesh: two sequence groups of two ranks, each group half of the guidance passes; the
    two-stage calls' stage 2 (one pass) sharded over all 4 ranks instead (parallel/layout.py)."""
    names = list(SEQUENCE_CALLS) + ["ltx2-3-passes-batch-1", *FOUR_RANK_CALLS]
    _check_splits(checkpoints, references, tmp_path, 4, [(2, 2, names)])


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


@pytest.mark.parametrize("flags, message", [
    (["--sequence-parallel", "2"], "--sequence-parallel / --guidance-parallel: ParallelConfig.from_env: sequence must "
                                   "be an int >= 1 dividing the world size WORLD_SIZE=1, got 2"),
    (["--sequence-parallel", "2", "--guidance-parallel", "2"], "ParallelConfig(sequence=2, guidance=2) needs 4 ranks, "
                                                               "this job has 1 (torchrun --nproc-per-node 4)"),
])
def test_cli_refuses_a_split_the_job_cannot_run(checkpoints, tmp_path, capsys, monkeypatch, flags, message):
    """Without torchrun the job is one process: both flags' splits are refused, nothing written."""
    from ltxengine.cli import main
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert main(["generate", "--model", checkpoints[0], "--prompt", "p", "--device", "cpu",
                 "--output", str(tmp_path / "out.mp4"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def _fail_on_rank_1(rank, world, folder):
    """Rank 1 stops at its first step (its callback raises); rank 0 must fail at the next
    collective instead of waiting for it."""
    from ltxengine import Engine
    from ltxengine.parallel.config import ParallelConfig
    engine = Engine.from_pretrained(folder, device="cpu", dtype=torch.float32,
                                    parallel=ParallelConfig(guidance=2, timeout=30))

    def callback(stage, step, total, **_):
        if rank == 1:
            raise RuntimeError("rank 1 failed mid-generation")
    engine.generate("a red car", callback=callback, **dict(LV, guidance_scale=3.0))


def test_a_rank_failing_mid_generation_fails_the_others(checkpoints):
    outcomes = spawn.run_outcomes(_fail_on_rank_1, 2, checkpoints[0], timeout=120, collective_timeout=30)
    assert not any(o.hung for o in outcomes)
    assert "rank 1 failed mid-generation" in outcomes[1].error
    assert "gather_rows" in outcomes[0].error and outcomes[0].exitcode != 0  # its next step's gather raised
