"""The README's results table, generated from bench/results/*.jsonl (GPU runs only).

    python bench/report.py                 # print the table
    python bench/report.py --write-readme  # replace the block between the README's markers

For each (script, op, shape, implementation) the newest GPU record is shown: median time, the
throughput the script computed (GB/s or TFLOP/s), and the speedup over the best alternative
measured in the same run, with the GPU and date of that run. Smoke (CPU) records never appear.
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


def _throughput(r: dict) -> str:
    if r.get("tflops") is not None:
        return f"{r['tflops']:.1f} TFLOP/s"
    if r.get("gbps") is not None:
        return f"{r['gbps']:.0f} GB/s"
    return "-"


def _ratio(r: dict) -> str:
    ratio = r.get("ratio_vs_best_alternative")
    return "-" if ratio is None else f"{ratio:.2f}x ({r.get('best_alternative') or '?'})"


def table(records: list[dict]) -> str:
    if not records:
        return "No GPU results yet: bench/results/ holds only runs on a GPU (see bench/README.md)."
    rows = [f"| {r.get('script')} | {r.get('op')} / {r.get('shape')} | {r.get('impl')} | {r['median_ms']:.3f} | "
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
