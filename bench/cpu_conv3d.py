"""The VAEs' 3D convolutions on the CPU: torch's own route (F.conv3d) against ``reference.conv3d``
(oneDNN's convolution called directly for fp32 kernels larger than 1x1x1).

    python bench/cpu_conv3d.py [--reps 7] [--out bench/results/cpu_conv3d.md] [--smoke]

Why: torch sends a batch-1 fp32 conv whose N*C*T*H <= 20480 to its im2col ``slow_conv3d``
(aten Convolution.cpp ``use_mkldnn``), which took ~80 % of a small generation's CPU time
(bench/results/cpu_vs_diffusers.md). Rows: the tiny test decoder's convs at a 256x384x25 video (the
shapes bench/cpu_vs_diffusers.py runs, and the demo's model), and a released decoder's convs
(LTX-Video 0.9.5+ / LTX-2 channels) at a small video, where torch already picks oneDNN by itself.
Both sides alternate per repetition; medians; ratio = reference.conv3d / F.conv3d (< 1: faster).
Error: max |out - float64 conv| relative to max |float64 conv|, for each side.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from ltxengine.ops import onednn, reference  # noqa: E402

# (name, input (B, C, T, H, W) already padded in time, Cout, kernel): padding (0, k//2, k//2) as the VAEs
SHAPES = [
    ("tiny decoder conv_in", (1, 8, 6, 8, 12), 64, 3),
    ("tiny mid resnet", (1, 64, 6, 8, 12), 64, 3),
    ("tiny up0 resnet", (1, 32, 9, 16, 24), 32, 3),
    ("tiny up1 resnet", (1, 16, 15, 32, 48), 16, 3),
    ("tiny up2 resnet", (1, 8, 27, 64, 96), 8, 3),
    ("tiny conv_out", (1, 8, 27, 64, 96), 48, 3),
    ("tiny 1x1x1 shortcut", (1, 64, 6, 8, 12), 32, 1),
    ("released mid resnet, 128x192x9", (1, 1024, 4, 4, 6), 1024, 3),
    ("released up2 resnet, 128x192x9", (1, 128, 11, 128, 192), 128, 3),
]
SMOKE = [SHAPES[0], SHAPES[6]]


def median_ms(fn, reps: int) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def run_shape(name, shape, cout, k, reps: int) -> dict:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g)
    w = torch.randn(cout, shape[1], k, k, k, generator=g) / (shape[1] * k ** 3) ** 0.5
    b = torch.randn(cout, generator=g)
    pad, stride = (0, k // 2, k // 2), (1, 1, 1)
    sides = {"torch": lambda: F.conv3d(x, w, b, stride=stride, padding=pad),
             "reference": lambda: reference.conv3d(x, w, b, stride, pad)}
    exact = F.conv3d(x.double(), w.double(), b.double(), stride=stride, padding=pad)
    scale = exact.abs().max().item()
    row = {"name": name, "shape": shape, "cout": cout, "k": k, "route": "oneDNN" if onednn.uses_onednn(x, w) else
           "F.conv3d (same call: the ratio is noise)"}
    for side, fn in sides.items():
        fn()  # warm-up: oneDNN builds its primitive, torch its buffers
        row[side + "_err"] = (fn().double() - exact).abs().max().item() / scale
    times = {side: [] for side in sides}
    for _ in range(reps):
        for side, fn in sides.items():
            times[side].append(median_ms(fn, 1))
    row.update({side + "_ms": statistics.median(t) for side, t in times.items()})
    row["ratio"] = row["reference_ms"] / row["torch_ms"]
    return row


def report(rows: list[dict], reps: int) -> str:
    lines = ["# The VAEs' 3D convs on the CPU: torch's route vs reference.conv3d (oneDNN direct)", "",
             f"{platform.processor() or platform.machine()}, torch {torch.__version__} "
             f"({torch.get_num_threads()} threads), fp32, {reps} alternating repetitions, medians, load average "
             f"{os.getloadavg()[0]:.1f} at the end (a shared machine: rows whose two sides are the same call show the "
             "noise). Produced by `bench/cpu_conv3d.py`. Ratio < 1: reference.conv3d faster. At batch 1, torch "
             "itself picks oneDNN only when N*C*T*H > 20480, so at released channel counts little changes.", "",
             "| conv | input (B, C, T, H, W) | Cout | k | F.conv3d ms | reference.conv3d ms | ratio "
             "| rel err torch / ref | reference's route |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['name']} | {r['shape']} | {r['cout']} | {r['k']} | {r['torch_ms']:.2f} | "
                     f"{r['reference_ms']:.2f} | {r['ratio']:.2f} | {r['torch_err']:.1e} / {r['reference_err']:.1e} | "
                     f"{r['route']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--reps", type=int, default=7, help="alternating repetitions (default 7)")
    p.add_argument("--out", help="markdown file to write (default: print only)")
    p.add_argument("--smoke", action="store_true", help="two small shapes, two repetitions (CI)")
    args = p.parse_args(argv)
    if args.reps < 1:
        p.error(f"--reps must be >= 1, got {args.reps}")
    shapes, reps = (SMOKE, 2) if args.smoke else (SHAPES, args.reps)
    text = report([run_shape(*s, reps) for s in shapes], reps)
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
