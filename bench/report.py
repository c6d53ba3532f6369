"""The README's results table, generated from bench/results/*.jsonl (GPU runs only).

    python bench/report.py                 # print the table
    python bench/report.py --write-readme  # replace the block between the README's markers

For each (script, op, shape, implementation) the newest GPU record is shown: median time, the
throughput the script computed (GB/s or TFLOP/s), and the speedup over the best alternative
measured in the same run, with the GPU and date of that run. Quality records (fp8_quality.py)
have no time: their PSNR or per-layer error stands in the throughput column; scenario_graphs.py's
memory records show their peak there, its step records also the share of time outside kernels.
Smoke (CPU) records never appear.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import REPO, RESULTS_DIR, read_results  # noqa: E402

BEGIN, END = "<!-- bench-results:begin -->", "<!-- bench-results:end -->"
_HEADER = ("| benchmark | case | implementation | median ms | throughput | vs best alternative | GPU | date |\n"
           "|---|---|---|---|---|---|---|---|")


def latest_gpu_records(folder: Path) -> list[dict]:
    """Newest ok record per (script, op, shape, impl) among the GPU runs in ``folder``."""
    newest: dict[tuple, dict] = {}
    for path in sorted(folder.glob("*.jsonl")):
        for r in read_results(path):
            if r.get("device") == "cpu" or r.get("smoke") or r.get("status") != "ok":
                continue
            key = (r.get("script", path.stem), r.get("op"), r.get("shape"), r.get("impl"))
            if key not in newest or r["env"]["date"] > newest[key]["env"]["date"]:
                newest[key] = r
    return [newest[k] for k in sorted(newest, key=lambda k: tuple(str(x) for x in k))]


def _db(values: dict) -> str:
    """{"video": 41.2, "audio": "inf"} -> "video 41.2 dB, audio inf dB" (JSON keeps inf as a string)."""
    return ", ".join(f"{k} {v:.1f} dB" if isinstance(v, (int, float)) else f"{k} {v} dB" for k, v in values.items())


def _throughput(r: dict) -> str:
    """_rate, with the share of a step's time outside kernels where it was profiled (scenario_graphs)."""
    text = _rate(r)
    if r.get("overhead_outside_kernels") is not None:
        text += f", {r['overhead_outside_kernels']:.1%} outside kernels"
    return text


def _rate(r: dict) -> str:
    """The rate of a timed record, else the figure of a quality record (bench/fp8_quality.py) or
    the peak memory of a generation (scenario_graphs.py)."""
    if r.get("peak_reserved_bytes") is not None:
        return f"peak {r['peak_reserved_bytes'] / 2 ** 30:.2f} GiB reserved"
    if r.get("tflops") is not None:
        return f"{r['tflops']:.1f} TFLOP/s"
    if r.get("gbps") is not None:
        return f"{r['gbps']:.0f} GB/s"
    if r.get("psnr_db"):
        return f"PSNR vs bf16 {_db(r['psnr_db'])}"
    if r.get("psnr_db_vs_fp32"):
        return f"PSNR vs fp32 {_db(r['psnr_db_vs_fp32'])}"
    layer = r.get("layer_rel_l2_vs_bf16") or {}
    if layer.get("median") is not None:
        worst = layer.get("max")
        return f"layer rel L2 median {layer['median']:.4f}, max " + (
            f"{worst:.4f}" if isinstance(worst, (int, float)) else str(worst))
    return "-"


def _ms(r: dict) -> str:
    return "-" if r.get("median_ms") is None else f"{r['median_ms']:.3f}"


def _ratio(r: dict) -> str:
    ratio = r.get("ratio_vs_best_alternative")
    return "-" if ratio is None else f"{ratio:.2f}x ({r.get('best_alternative') or '?'})"


def table(records: list[dict]) -> str:
    if not records:
        return "No GPU results yet: bench/results/ holds only runs on a GPU (see bench/README.md)."
    rows = [f"| {r.get('script')} | {r.get('op')} / {r.get('shape')} | {r.get('impl')} | {_ms(r)} | "
            f"{_throughput(r)} | {_ratio(r)} | {r['env'].get('gpu')} | {r['env']['date'][:10]} |" for r in records]
    return "\n".join([_HEADER, *rows])


def write_readme(readme: Path, text: str) -> None:
    """Replace what stands between the markers (both must be present, in order)."""
    content = readme.read_text()
    start, end = content.find(BEGIN), content.find(END)
    if start < 0 or end < start:
        raise ValueError(f"report: {readme} must contain {BEGIN} followed by {END}")
    readme.write_text(content[:start + len(BEGIN)] + "\n" + text + "\n" + content[end:])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=str(RESULTS_DIR), help="folder of *.jsonl results")
    parser.add_argument("--write-readme", action="store_true", help="update README.md between the markers")
    args = parser.parse_args(argv)
    text = table(latest_gpu_records(Path(args.results)))
    if args.write_readme:
        write_readme(REPO / "README.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
