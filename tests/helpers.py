"""Shared test utilities."""

import dataclasses

import torch


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = "") -> float:
    """max|a - e| <= rel * max(1, max|e|): an error budget relative to the output's scale.

    Returns the measured error so tests can report it.
    """
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    err = (actual.double() - expected.double()).abs().max().item()
    scale = max(1.0, expected.abs().max().item())
    assert err <= rel * scale, f"{what}: max abs error {err:.3e} > {rel:.1e} * {scale:.3e}"
    return err


def preset_kwargs(preset, base) -> dict:
    """The fields where a tiny config of ltxengine/presets.py differs from ``base`` (the release it
    scales down), as keyword arguments: for the config class, and for the diffusers class it mirrors,
    whose argument names the config fields follow."""
    return {f.name: getattr(preset, f.name) for f in dataclasses.fields(preset)
            if getattr(preset, f.name) != getattr(base, f.name)}


def perturb_(module: torch.nn.Module, seed: int = 0, std: float = 0.1) -> None:
    """Add noise to every parameter and float buffer. Norm weights initialise to 1 and noise
    scales to 0; left as initialised they would hide a wrongly wired weight."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            if not t.is_floating_point():
                continue
            noise = torch.randn(t.shape, generator=g, dtype=torch.float32).to(t.dtype) * std
            t.add_(noise.abs() if name.endswith("latents_std") else noise)


def randomize_vae_(model: torch.nn.Module, seed: int) -> None:
    """Video VAE (LTX-Video or LTX-2): non-trivial values for everything that initialises to
    0 / 1 / a constant (statistics, noise scales, timestep tables and multiplier)."""
    perturb_(model, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        model.latents_mean.copy_(torch.randn(model.latents_mean.shape, generator=g))
        model.latents_std.copy_(torch.rand(model.latents_std.shape, generator=g) + 0.5)
        for name, p in model.named_parameters():
            if "per_channel_scale" in name or "scale_shift_table" in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            if name.endswith("timestep_scale_multiplier"):
                p.fill_(731.0)


def run_bench_smokes(runs: dict, tmp_path_factory, timeout: float = 300) -> dict:
    """Start ``bench/<script>.py --smoke`` runs together in subprocesses (CPU only, Triton's
    interpreter, one thread each: the runs are short and share two cores) and wait for all.

    runs: name -> (script, extra arguments). Returns name -> (returncode, output, records).
    """
    import os
    import subprocess
    import sys
    from pathlib import Path

    from bench import common

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="", OMP_NUM_THREADS="1", TRITON_INTERPRET="1")
    procs = {}
    for name, (script, extra) in runs.items():
        out = tmp_path_factory.mktemp(name)
        cmd = [sys.executable, f"bench/{script}.py", "--smoke", "--out", str(out), *extra]
        procs[name] = (out / f"{script}.jsonl", subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE,
                                                                 stderr=subprocess.STDOUT, text=True))
    result = {}
    for name, (path, proc) in procs.items():
        output, _ = proc.communicate(timeout=timeout)
        result[name] = (proc.returncode, output, common.read_results(path) if path.exists() else [])
    return result


class MoveRecorder(torch.nn.Module):
    """A component that records each ``.to(device)`` (as a string) instead of moving: what the
    residency tests check the executor's moves with."""

    def __init__(self):
        super().__init__()
        self.moves = []

    def to(self, device):
        self.moves.append(str(device))
        return self


def record_encoded_frames(monkeypatch) -> list:
    """Every uint8 frame handed to the H.264 encoder (media._encode_frames), in order. Tests that two
    paths make the same video compare these, not decoded mp4s: the same frames written to a
    VideoWriter in chunks were seen to encode to different files about once in 10-40 runs on this
    machine (libx264 through PyAV; also with x264 threads=1), which made such comparisons flaky."""
    import numpy as np

    from ltxengine import media

    frames, encode = [], media._encode_frames

    def record(container, stream, chunk):
        frames.extend(np.array(f) for f in chunk)
        encode(container, stream, chunk)

    monkeypatch.setattr(media, "_encode_frames", record)
    return frames
