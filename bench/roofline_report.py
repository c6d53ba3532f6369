"""Markdown tables of bench/roofline.py: the summary per GPU, per-op and per-site tables per model,
the calibration against measured steps. Every table says it is an estimate and states its
assumptions (roofline_count.py's rules, repeated in ``ASSUMPTIONS``)."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench import roofline_count as rc

MARK = "**Estimate, no GPU**: counted on fake tensors by `bench/roofline.py`, not measured."
ASSUMPTIONS = f"""Assumptions (bench/roofline_count.py):
- one transformer forward in bfloat16; ltxengine gets its RoPE tables and projected text context precomputed
  (once per generation), diffusers what its pipeline passes per step; `guided` batches the default guidance
  passes (LTX-Video CFG: 2; LTX-2.x cond + negative + STG + isolated: 4, STG / isolated traced as plain rows);
- `auto` = kernels="auto" as resolved on a CUDA device with Triton and the CUDA extension; attention as torch
  dispatches it on Hopper (flash without a mask, else memory-efficient); `auto-fp8` = `auto` with
  quantization="fp8-scaled-mm" on a bf16 checkpoint (fp8 block linears, dynamic per-token activation scales);
- launches: 1 per dispatched op, 0 for views / metadata / bare allocations (listed below);
- bytes: each distinct tensor read once and each output written once per op (no cache reuse between ops, no
  re-reads inside one); FLOPs: torch.utils.flop_counter's formulas (matmul, attention, conv; elementwise 0),
  a named formula per custom op;
- time per op = max(FLOPs / peak of its dtype, bytes / peak bandwidth) at datasheet peaks (dense bf16,
  fp8 2x, fp32 without TF32), ops back to back with no overlap; `graph` adds no launch cost (CUDA graph
  replay), `eager` adds {rc.LAUNCH_US:g} us per launch; FLOP floor = FLOPs at peak alone."""


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f}"


def _ms(s: float) -> str:
    return f"{s * 1e3:.1f}" if s * 1e3 >= 10 else f"{s * 1e3:.2f}"


def _op(name: str) -> str:
    return name.removesuffix(".default")


def ceiling_line(c: rc.Ceiling) -> str:
    return (f"{c.name}: {c.bf16_flops / 1e12:g} TFLOP/s dense bf16 (fp8 {c.fp8_flops / 1e12:g}, fp32 "
            f"{c.fp32_flops / 1e12:g}), {c.bandwidth / 1e12:g} TB/s; {rc.LAUNCH_US:g} us per eager launch")


def block_launches(case) -> str:
    per = rc.launches_per_block(case.trace.rows)
    if not per:
        return "-"
    lo, hi = min(per.values()), max(per.values())
    return str(lo) if lo == hi else f"{lo}-{hi}"


def batch_name(case) -> str:
    return f"{case.batch} (guided)" if case.guided else str(case.batch)


def summary_rows(cases, ceiling: rc.Ceiling) -> list[str]:
    lines = ["| model | clip | batch | implementation | launches | launches / block | GB moved | est. ms graph "
             "| est. ms eager | FLOP floor ms | est. / floor |", "|" + "---|" * 11]
    for c in cases:
        t = rc.totals(c.trace.rows, ceiling)
        lines.append(f"| {c.model} | {c.size} | {batch_name(c)} | {c.impl} | {t.launches} | {block_launches(c)} | "
                     f"{_gb(t.bytes)} | {_ms(t.seconds)} | {_ms(t.eager_seconds())} | {_ms(t.floor_seconds)} | "
                     f"{t.ratio:.2f} |")
    return lines


def summary_md(cases, ceilings, commit: str = "unknown") -> str:
    lines = ["# Roofline estimate of one transformer step", "", f"{MARK} Traced at commit {commit}.", "",
             ASSUMPTIONS, ""]
    for ceiling in ceilings:
        lines += [f"## {ceiling_line(ceiling)}", "", *summary_rows(cases, ceiling), ""]
    zero = sorted({op for c in cases for op in c.trace.zero_launch_ops})
    unknown = sorted({u for c in cases for u in c.trace.unknown_flops})
    lines += ["Ops counted as 0 launches (views, metadata, bare allocations) in these traces: "
              + ", ".join(f"`{z}`" for z in zero) + ".", ""]
    if unknown:
        lines += ["Custom ops without a FLOP formula (counted 0 FLOPs): " + ", ".join(unknown) + ".", ""]
    return "\n".join(lines)


def _table(groups: dict, ceiling: rc.Ceiling, top: int, first: str, layers: int | None) -> list[str]:
    rows = sorted(((k, rc.totals(v, ceiling)) for k, v in groups.items()), key=lambda kv: -kv[1].seconds)
    total = sum(t.seconds for _, t in rows) or 1.0
    per_block = " | per block" if layers else ""
    lines = [f"| {first} | launches{per_block} | GFLOP | GB | est. ms | share |",
             "|" + "---|" * (6 + bool(layers))]
    for k, t in rows[:top]:
        pb = f" | {t.launches / layers:g}" if layers and k.startswith(rc.BLOCKS) else " | -" if layers else ""
        lines.append(f"| {k} | {t.launches}{pb} | {t.flops / 1e9:.0f} | {_gb(t.bytes)} | {_ms(t.seconds)} "
                     f"| {t.seconds / total:.1%} |")
    rest = [t for _, t in rows[top:]]
    if rest:
        secs = sum(t.seconds for t in rest)
        lines.append(f"| ({len(rest)} more) | {sum(t.launches for t in rest)}{' | -' if layers else ''} | "
                     f"{sum(t.flops for t in rest) / 1e9:.0f} | {_gb(sum(t.bytes for t in rest))} | {_ms(secs)} "
                     f"| {secs / total:.1%} |")
    return lines


def case_md(case, ceiling: rc.Ceiling, top_ops: int = 15, top_sites: int = 25) -> list[str]:
    t = rc.totals(case.trace.rows, ceiling)
    per = rc.launches_per_block(case.trace.rows)
    head = (f"### {case.model} {case.size} batch {batch_name(case)}, {case.impl}: {t.launches} launches, "
            f"{_gb(t.bytes)} GB, est. {_ms(t.seconds)} ms graph / {_ms(t.eager_seconds())} ms eager, FLOP floor "
            f"{_ms(t.floor_seconds)} ms")
    blocks = (f"Launches per transformer block: {block_launches(case)} ({len(per)} blocks, "
              f"{sum(per.values())} launches in blocks, {t.launches - sum(per.values())} outside).")
    return [head, "", blocks, "", "Per op:", "",
            *_table(rc.group(case.trace.rows, lambda r: _op(r.op)), ceiling, top_ops, "op", None), "",
            "Per site (module path, block index as *):", "",
            *_table(rc.group(case.trace.rows, lambda r: r.site), ceiling, top_sites, "site", case.layers), ""]


def model_md(model: str, cases, ceiling: rc.Ceiling, commit: str = "unknown") -> str:
    lines = [f"# Roofline estimate per op and per site: {model}", "", f"{MARK} Traced at commit {commit}.", "",
             ASSUMPTIONS, "",
             f"## {ceiling_line(ceiling)}", ""]
    for c in cases:
        lines += case_md(c, ceiling)
    return "\n".join(lines)


def files(cases, ceilings, commit: str = "unknown") -> dict[str, str]:
    """File name -> text: the summary, and per model its per-op / per-site tables at the first clip size
    with the guided batch (the headline shape), on the first ceiling."""
    out = {"roofline_summary.md": summary_md(cases, ceilings, commit)}
    for model in dict.fromkeys(c.model for c in cases):
        mine = [c for c in cases if c.model == model]
        first = [c for c in mine if c.size == mine[0].size]
        headline = [c for c in first if c.guided] or first
        out[f"roofline_{model}.md"] = model_md(model, headline, ceilings[0], commit)
    return out


def calibration_md(pairs) -> str:
    lines = ["# Roofline calibration: measured step times next to the estimate", "",
             "Measured: bench/scenario_transformer.py records (median of eager steps, CUDA events, random weights). "
             "Estimate: bench/roofline.py for the same model, clip and batch on the GPU's ceilings.", "",
             ASSUMPTIONS, "",
             "| GPU | model | clip | batch | implementation | measured ms | est. ms eager | est. ms graph | "
             "FLOP floor ms | measured / est. eager |", "|" + "---|" * 10]
    for r, e, ceiling in pairs:
        t = e["ceilings"][ceiling.name]
        measured = float(r["median_ms"])
        lines.append(f"| {ceiling.name} | {e['model']} | {e['size']} | {e['batch']} | {e['impl']} | {measured:.1f} | "
                     f"{_ms(t['eager_seconds'])} | {_ms(t['seconds'])} | {_ms(t['floor_seconds'])} | "
                     f"{measured / (t['eager_seconds'] * 1e3):.2f} |")
    if not pairs:
        lines.append("| (no measured bfloat16 step of a modelled implementation in the records) |" + " |" * 9)
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> Path:
    """Whole or not at all: a temporary file renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
