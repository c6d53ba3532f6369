"""Communication model of multi-GPU generation (issue 22): a prediction on paper, no measurement.

    python bench/comm_model.py            # print the table
    python bench/comm_model.py --write    # (re)write bench/results/multi_gpu_model.md

For one denoising step of the released transformers it counts the bytes each rank sends through each
collective of sequence parallel (Ulysses) and guidance parallel, turns them into time with the NVLink /
NVSwitch bandwidth of an H100 SXM node, sets them against the step's compute time (the FLOP model of
bench/scenario_transformer.py over the bf16 peak at an assumed MFU), with and without overlap, and
predicts the speed-up on 2, 4 and 8 GPUs. Every assumption is a named constant below.

Ulysses, per block and guidance pass (ltxengine/parallel/sequence.py; ltx-pipelines' sequence-parallel
docs): video tokens padded to a multiple of P and sharded; all-to-all of q, k, v into head shards before
video self-attention and of its output back (each rank sends (P-1)/P of its (N/P, d) shard per tensor);
text cross-attention and audio->video attention (video queries, replicated audio / text K/V) need
nothing; video->audio attention (replicated audio queries) all-gathers the video K and V (N, d_a2v);
audio and text stay replicated, so their compute is not divided. One all-gather of the output
(N, out_channels) ends the step. Guidance parallel over M groups: each group runs G/M passes; one
all-gather of the passes' x0 (N, out_channels, fp32) per step.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import models as M  # noqa: E402
from bench import scenario_transformer as S  # noqa: E402
from ltxengine.config import LTX2TransformerConfig  # noqa: E402

RESULT = Path(__file__).resolve().parent / "results" / "multi_gpu_model.md"

# -- assumptions (H100 SXM5 node, NVLink 4 through NVSwitch) --------------------------------------------
BF16_TFLOPS = 989.4  # dense bf16 tensor-core peak, TFLOP/s (performance-anchors.md 4a)
MFU = 0.60  # achieved fraction of the peak by a whole step (GEMMs ~0.7-0.8, FA3 hd128 ~0.65; anchors 6)
NVLINK_GBPS = 450.0  # per GPU per direction (900 GB/s bidirectional), GB/s = 1e9 B/s
NCCL_EFFICIENCY = 0.80  # NCCL bus bandwidth / link bandwidth for large all-to-all / all-gather messages
COLLECTIVE_LATENCY_S = 25e-6  # fixed cost per collective call (launch + synchronization), seconds
ACT_BYTES = 2  # bf16 activations (q, k, v, attention output, gathered K/V, step output)
X0_BYTES = 4  # the sampler's x0 in fp32
OVERLAP = 1.0  # fraction of communication hidden behind compute in the "overlap" columns (ideal: 1)
# two-stage generation (ltx-pipelines' ti2vid_two_stages as ltxengine runs it; ltx2/releases.py)
STAGE1_STEPS = 30  # LTX-2.3 stage 1 (half size, full model)
STAGE1_PASSES = 4  # cond, uncond (CFG), STG, modality isolation: the 2.3 default guidance
STAGE2_STEPS = 3  # STAGE2_SIGMAS: distilled refine at full size, no guidance
VAE_DECODE_TFLOP_768 = 60.0  # conv decoder at 768x512x121 (performance-anchors.md 0), scaled by pixels
VAE_MFU = 0.40  # implicit-GEMM conv3d, 350-500 TFLOP/s (anchors 6d)
VIDEO_CHANNELS = 3  # decoded RGB frames gathered to every rank in bf16
# Not modelled: the text encoder (runs once, before the steps), loading, host work; MFU is taken as
# independent of the shard size, which flatters 8 GPUs at 768x512 (768 tokens a rank).

GPUS = (1, 2, 4, 8)
SIZES = {"768x512x121": S.Geometry(121, 512, 768, 24.0, 1024), "1536x1024x121": S.Geometry(121, 1024, 1536, 24.0, 1024)}
# the table's models and their guided pass counts (LTX-2 19B has LTX-2.3's shapes; same numbers)
MODELS = {"LTX-2.3 22B": "ltx2.3-22b", "LTX-Video 13B": "13b"}
GUIDED_PASSES = {"ltx2.3-22b": STAGE1_PASSES, "13b": 2}  # LTX-Video: cond + uncond (CFG)
GOAL = {2: 1.8, 4: 3.4}  # issue 22: speed-up for LTX-2.3 at 1536x1024x121
V2A = ("ulysses", "gather", "combine")  # the video->audio attention schemes (Step.v2a), the engine's first
TEXT_TOKENS = {"ltx2": 1024, "ltxv": 128}  # Gemma after the connectors / T5


@dataclass(frozen=True)
class Step:
    """One denoising step: a model, its token counts and the guidance passes it runs."""
    config: object
    video_tokens: int
    audio_tokens: int
    text_tokens: int
    passes: int = 1
    # video->audio attention under sequence parallel: "ulysses" (what ltxengine/parallel/sequence.py does:
    # the video k, v exchanged to head shards in one all-to-all, each rank attends with its H / P audio
    # heads, the heads all-gathered), "gather" (the video K/V all-gathered, the SDPA replicated), or
    # "combine" (each rank's partial attention over its own keys merged by log-sum-exp: one all-reduce of
    # the (audio tokens, d_a2v) outputs and per-head LSEs in fp32)
    v2a: str = "ulysses"


@dataclass(frozen=True)
class Collective:
    name: str
    calls: int  # per step
    bytes_per_rank: float  # sent by each rank per step, all calls together

    def seconds(self) -> float:
        return self.bytes_per_rank / (NVLINK_GBPS * 1e9 * NCCL_EFFICIENCY) + self.calls * COLLECTIVE_LATENCY_S


def make_step(model: str, size: str, passes: int = 1, v2a: str = "ulysses") -> Step:
    config, geo = M.TRANSFORMERS[model], SIZES[size]
    f, h, w = S.latent_grid(config, geo)
    text = TEXT_TOKENS["ltx2" if isinstance(config, LTX2TransformerConfig) else "ltxv"]
    return Step(config, f * h * w, S.audio_tokens(config, geo), text, passes, v2a)


def padded(tokens: int, sp: int) -> int:
    """Video tokens padded to a multiple of the sequence-parallel degree."""
    return math.ceil(tokens / sp) * sp


def sp_collectives(step: Step, sp: int, passes: int) -> list[Collective]:
    """Bytes each rank sends per step through sequence parallel over ``sp`` ranks, for ``passes`` passes."""
    if sp == 1:
        return []
    c, n, frac = step.config, padded(step.video_tokens, sp), (sp - 1) / sp
    shard = n // sp * c.inner_dim * ACT_BYTES  # one rank's (N/P, d) q, k, v or output
    # q, k, v travel in one all-to-all and the output in a second (sequence.py), so 2 calls a layer
    out = [Collective("a2a q,k,v,out (video self-attn)", 2 * c.num_layers * passes,
                      4 * c.num_layers * passes * frac * shard)]
    if isinstance(c, LTX2TransformerConfig) and step.v2a == "ulysses":
        kv = n // sp * c.audio_cross_attention_dim * ACT_BYTES  # one rank's (N/P, d_a2v) K or V
        heads = step.audio_tokens * c.audio_cross_attention_dim * ACT_BYTES  # the whole (Na, d_a2v) output
        out.append(Collective("a2a K,V (video->audio attn)", c.num_layers * passes,
                              2 * c.num_layers * passes * frac * kv))
        out.append(Collective("all-gather audio heads (video->audio attn)", c.num_layers * passes,
                              c.num_layers * passes * frac * heads))
    elif isinstance(c, LTX2TransformerConfig) and step.v2a == "gather":
        gathered = n * c.audio_cross_attention_dim * ACT_BYTES  # the whole (N, d_a2v) K or V
        out.append(Collective("all-gather K,V (video->audio attn)", 2 * c.num_layers * passes,
                              2 * c.num_layers * passes * frac * gathered))
    elif isinstance(c, LTX2TransformerConfig):
        partial = step.audio_tokens * (c.audio_cross_attention_dim + c.audio_num_attention_heads) * 4
        out.append(Collective("all-reduce LSE-combined outputs (video->audio attn)", c.num_layers * passes,
                              c.num_layers * passes * 2 * frac * partial))  # ring all-reduce: 2 (P-1)/P
    out.append(Collective("all-gather output", passes, passes * frac * n * c.out_channels * ACT_BYTES))
    return out


def gp_collectives(step: Step, gp: int) -> list[Collective]:
    """Guidance parallel over ``gp`` groups: the x0 of every pass all-gathered across the groups."""
    if gp == 1:
        return []
    x0 = step.video_tokens * step.config.out_channels * X0_BYTES
    return [Collective("all-gather x0 (guidance)", 1, (gp - 1) / gp * step.passes * x0)]


def replicated_flops(step: Step, video_tokens: int) -> float:
    """FLOPs every rank computes in full: transformer_flops with no video tokens is exactly the audio
    stream, the text K/V and caption projections and the audio side of the audio<->video attentions;
    to it the video->audio SDPA over all video keys (its audio queries are replicated)."""
    c = step.config
    flops = S.transformer_flops(c, 0, step.text_tokens, step.audio_tokens)
    if isinstance(c, LTX2TransformerConfig) and step.v2a == "gather":
        flops += c.num_layers * 4 * step.audio_tokens * video_tokens * c.audio_cross_attention_dim
    return flops


def compute_seconds(step: Step, sp: int, passes: int) -> float:
    """One rank's compute for ``passes`` passes with the video tokens split over ``sp`` ranks."""
    n = padded(step.video_tokens, sp)
    replicated = replicated_flops(step, n)
    sharded = S.transformer_flops(step.config, n, step.text_tokens, step.audio_tokens) - replicated
    return passes * (sharded / sp + replicated) / (BF16_TFLOPS * 1e12 * MFU)


def layouts(gpus: int, passes: int) -> list[tuple[int, int]]:
    """(guidance groups, sequence degree) splits of ``gpus``: the groups must divide the passes."""
    return [(gp, gpus // gp) for gp in range(1, gpus + 1) if gpus % gp == 0 and passes % gp == 0]


def predict(step: Step, gp: int, sp: int) -> dict:
    local = step.passes // gp
    heads = step.config.num_attention_heads
    if heads % sp:
        raise ValueError(f"sequence degree {sp} must divide the {heads} heads")
    comm = sp_collectives(step, sp, local) + gp_collectives(step, gp)
    compute, t_comm = compute_seconds(step, sp, local), sum(c.seconds() for c in comm)
    single = compute_seconds(step, 1, step.passes)
    serial, overlapped = compute + t_comm, max(compute, t_comm) + (1 - OVERLAP) * min(compute, t_comm)
    return dict(gp=gp, sp=sp, compute=compute, comm=t_comm, bytes=sum(c.bytes_per_rank for c in comm),
                collectives=comm, serial=serial, overlapped=overlapped,
                speedup=single / serial, speedup_overlap=single / overlapped)


def best(step: Step, gpus: int) -> dict:
    return max((predict(step, gp, sp) for gp, sp in layouts(gpus, step.passes)), key=lambda r: r["speedup"])


def generation(gpus: int) -> dict:
    """LTX-2.3 two-stage at 1536x1024x121: stage 1 at 768x512 with guidance, stage 2 at full size,
    the VAE decode split into tiles over the GPUs and its frames all-gathered."""
    s1, s2 = make_step("ltx2.3-22b", "768x512x121", STAGE1_PASSES), make_step("ltx2.3-22b", "1536x1024x121")
    geo = SIZES["1536x1024x121"]
    vae = VAE_DECODE_TFLOP_768 * 1e12 * (geo.height * geo.width) / (768 * 512) / (BF16_TFLOPS * 1e12 * VAE_MFU)
    frames = VIDEO_CHANNELS * geo.frames * geo.height * geo.width * ACT_BYTES
    gather = Collective("all-gather frames", 1, (gpus - 1) / gpus * frames).seconds() if gpus > 1 else 0.0
    out = {}
    for key in ("serial", "overlapped"):
        stage1, stage2 = best(s1, gpus)[key], best(s2, gpus)[key]
        out[key] = dict(stage1=STAGE1_STEPS * stage1, stage2=STAGE2_STEPS * stage2, vae=vae / gpus + gather)
        out[key]["total"] = sum(out[key].values())
    return out


# -- the report ---------------------------------------------------------------------------------------------

def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}"


def step_table() -> list[str]:
    rows = ["| model | size | passes | GPUs | layout (guidance x sequence) | compute ms | comm ms | MB sent / rank "
            "| step ms (no overlap / overlap) | speed-up (no overlap / overlap) |", "|" + "---|" * 10]
    for label, model in MODELS.items():
        for size in SIZES:
            for passes in (1, GUIDED_PASSES[model]):
                step = make_step(model, size, passes)
                for gpus in GPUS:
                    r = best(step, gpus)
                    rows.append(f"| {label} | {size} | {passes} | {gpus} | {r['gp']} x {r['sp']} | "
                                f"{_ms(r['compute'])} | {_ms(r['comm'])} | {r['bytes'] / 1e6:.0f} | "
                                f"{_ms(r['serial'])} / {_ms(r['overlapped'])} | "
                                f"{r['speedup']:.2f} / {r['speedup_overlap']:.2f} |")
    return rows


def collective_table() -> list[str]:
    rows = ["| GPUs | collective | calls / step | MB sent / rank / step | ms |", "|---|---|---|---|---|"]
    step = make_step("ltx2.3-22b", "1536x1024x121")
    for gpus in GPUS[1:]:
        for c in predict(step, 1, gpus)["collectives"]:
            rows.append(f"| {gpus} | {c.name} | {c.calls} | {c.bytes_per_rank / 1e6:.1f} | {_ms(c.seconds())} |")
    return rows


def combine_lines() -> list[str]:
    lines = []
    for gpus in GPUS[1:]:
        r = [predict(make_step("ltx2.3-22b", "1536x1024x121", v2a=v2a), 1, gpus) for v2a in V2A]
        comm = " / ".join(_ms(x["comm"]) for x in r)
        speedup = " / ".join(f"{x['speedup']:.2f}x" for x in r)
        lines.append(f"- {gpus} GPUs, one LTX-2.3 1536x1024x121 step, {' / '.join(V2A)}: comm {comm} ms, "
                     f"speed-up {speedup} (no overlap)")
    return lines


def generation_table() -> list[str]:
    rows = ["| GPUs | stage 1 s | stage 2 s | VAE decode s | total s (no overlap / overlap) "
            "| speed-up (no overlap / overlap) |", "|---|---|---|---|---|---|"]
    one = generation(1)
    for gpus in GPUS:
        g = generation(gpus)
        s, o = g["serial"], g["overlapped"]
        rows.append(f"| {gpus} | {s['stage1']:.2f} | {s['stage2']:.2f} | {s['vae']:.2f} | "
                    f"{s['total']:.2f} / {o['total']:.2f} | {one['serial']['total'] / s['total']:.2f} / "
                    f"{one['overlapped']['total'] / o['total']:.2f} |")
    return rows


def goal_lines() -> list[str]:
    step = make_step("ltx2.3-22b", "1536x1024x121")
    one = generation(1)["serial"]["total"]
    lines = []
    for gpus, target in GOAL.items():
        per_step, whole = best(step, gpus)["speedup"], one / generation(gpus)["serial"]["total"]
        verdict = "predicted" if min(per_step, whole) >= target else "NOT predicted"
        lines.append(f"- {gpus} GPUs, goal >= {target}x: one 1536x1024x121 step {per_step:.2f}x, the two-stage "
                     f"generation {whole:.2f}x (no overlap): {verdict}.")
    return lines


def assumptions() -> list[str]:
    names = ("BF16_TFLOPS", "MFU", "NVLINK_GBPS", "NCCL_EFFICIENCY", "COLLECTIVE_LATENCY_S", "ACT_BYTES", "X0_BYTES",
             "OVERLAP", "STAGE1_STEPS", "STAGE1_PASSES", "STAGE2_STEPS", "VAE_DECODE_TFLOP_768", "VAE_MFU")
    return [f"- `{n} = {globals()[n]}`" for n in names]


def report() -> str:
    parts = [
        "# Multi-GPU scaling on H100 SXM: model, no measurement",
        "",
        "Written by `python bench/comm_model.py --write` (its docstring describes the model). Nothing here was "
        "measured: it is arithmetic from the released configs' shapes, the FLOP model of "
        "`bench/scenario_transformer.py` and the assumptions below. `bench/scenario_multi_gpu.py` measures it on "
        "the first multi-GPU machine; commit its records next to this file.",
        "",
        "Assumptions (constants in `bench/comm_model.py`):", "", *assumptions(), "",
        "## Goal of issue 22 (LTX-2.3 at 1536x1024x121)", "", *goal_lines(), "",
        "## One denoising step (best layout per GPU count)", "",
        "Speed-up against one GPU running all passes. Layout g x s: g guidance groups, s-way Ulysses.", "",
        *step_table(), "",
        "## Collectives of one LTX-2.3 1536x1024x121 step (no guidance)", "", *collective_table(), "",
        "The video->audio attention as the engine runs it (`ulysses`: the video k, v exchanged to head shards, "
        "the audio heads all-gathered; its SDPA splits over the ranks), against all-gathering the video K/V with "
        "the SDPA replicated (`gather`, which grows with P) and merging per-rank partial outputs by their "
        "log-sum-exp (`combine`, one small all-reduce a layer):", "", *combine_lines(), "",
        "## LTX-2.3 two-stage generation at 1536x1024x121", "",
        f"Stage 1: {STAGE1_STEPS} steps at 768x512x121 with {STAGE1_PASSES} guidance passes; stage 2: "
        f"{STAGE2_STEPS} steps at 1536x1024x121 without guidance; the tiled VAE decode split over the GPUs. "
        "Text encoding and host work are left out.", "", *generation_table(), "",
    ]
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write the table to {RESULT}")
    args = parser.parse_args(argv)
    text = report()
    if args.write:
        RESULT.parent.mkdir(parents=True, exist_ok=True)
        tmp = RESULT.with_suffix(".tmp")
        tmp.write_text(text)
        tmp.replace(RESULT)  # never a half-written table
        print(f"wrote {RESULT}")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
