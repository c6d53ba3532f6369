"""fp8 quality of the LTX transformers: per-layer error and final-latent PSNR against bf16.

    python bench/fp8_quality.py [--models 2b,13b,ltx2-19b] [--policies fp8-cast,fp8-scaled-mm]
                                [--kernels auto] [--out DIR] [--smoke]

For each model (released config, random weights of realistic scale, bench/models.py) and policy
(ltxengine.quant.POLICIES), the fp8 model is made by ``convert_to_fp8`` from the SAME bf16 weights
(a twin over the bf16 storage, bench/models.share), so both see identical values before rounding.

* ``layer_rel_l2`` (one record per model and policy): one bf16 step at 768x512x121, batch 1,
  sigma 0.7 (the step scenario's inputs). A forward hook on every converted layer of the bf16
  model runs the fp8 layer on the SAME input the bf16 layer got and compares the outputs,
  ||y_fp8 - y_bf16|| / ||y_bf16||, so each figure is the layer's own rounding, not the error
  accumulated upstream. Both are also compared with that layer in float32 (TF32 off) on the same
  input, so ``bf16_rel_l2_vs_fp32`` gives the bf16 layer's own error as a yardstick.
* ``denoise_psnr`` (one record per model and policy, plus one for bf16): the 8 distilled steps
  (LTX-Video DISTILLED_STAGE1_TIMESTEPS / 1000, then 0; LTX-2 DISTILLED_SIGMAS), Euler on the
  flow velocity, no guidance (the distilled recipe), batch 1, the same seeded noise and text.
  PSNR = 10 log10(range^2 / MSE) of the final latent (per output: video, audio for LTX-2) against
  the bf16 run, range = max - min of the bf16 latent; also against a float32 run of the same
  model (bench/models.fp32_weights, one block upcast at a time) and the relative L2.

Smoke: tiny 8-block models (so fp8-scaled-mm, which keeps the first block and the last five in
full precision, converts some blocks) on a 17x96x160 clip, bfloat16 on the CPU, 3 of the 8 steps.
No figure of this script has been measured at full size (GPU) yet.

``bench/scenario_fp8.py`` calls ``references`` and ``measure_policies`` after its timing, so one
command (and ``ltxengine bench 2b|13b|ltx2``) gives both. Either way one fp8 model exists at a time
next to the bf16 one. This script is not ``scenario_*``-named, so the CLI does not list it.
"""

from __future__ import annotations

import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

if __package__ in (None, ""):  # run as a script: make `bench` importable from the repository root
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import common  # noqa: E402
from bench import models as M  # noqa: E402
from bench import scenario_transformer as T  # noqa: E402
from ltxengine.ltx2.denoise import DISTILLED_SIGMAS  # noqa: E402
from ltxengine.ltx_video.schedule import DISTILLED_STAGE1_TIMESTEPS  # noqa: E402
from ltxengine.quant import POLICIES, convert_to_fp8, fp8_targets  # noqa: E402

SCRIPT = "fp8_quality"
FULL_MODELS = ("2b", "13b", "ltx2-19b")
SMOKE_MODELS = ("tiny8-2b", "tiny8-ltx2")
# 8 blocks: fp8-scaled-mm keeps block 0 and the last five, so blocks 1-2 are converted.
CONFIGS = {**{k: M.TRANSFORMERS[k] for k in FULL_MODELS},
           "tiny8-2b": dataclasses.replace(M.TINY_2B, num_layers=8),
           "tiny8-ltx2": dataclasses.replace(M.TINY_LTX2, num_layers=8)}
BF16 = "ltxengine-bf16"
LAYER_BATCH = 1
_BLOCK = re.compile(r"^transformer_blocks\.\d+\.")


def impl_name(policy: str) -> str:
    return f"ltxengine-{policy}"


def geometry(name: str, smoke: bool) -> T.Geometry:
    return (T.SMOKE_GEOMETRY if smoke else T.GEOMETRY)["ltx2" if M.is_ltx2(CONFIGS[name]) else "ltxv"]


# -- models --------------------------------------------------------------------------------------

def fp8_twin(model: torch.nn.Module, policy: str) -> torch.nn.Module:
    """An fp8 model over ``model``'s storage: the converted layers get new e4m3 weights, every
    other tensor (biases, norms, tables, unconverted layers) stays shared; ``model`` is untouched."""
    return convert_to_fp8(M.share(model, model.ops), policy)


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer of the model (each storage counted once)."""
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


# -- metrics -------------------------------------------------------------------------------------

def rel_l2(out: torch.Tensor, ref: torch.Tensor) -> float:
    ref = ref.float()
    den = ref.norm().item()
    num = (out.float() - ref).norm().item()
    return num / den if den else (0.0 if num == 0 else math.inf)


def psnr(out: torch.Tensor, ref: torch.Tensor) -> float:
    """dB; the peak is the reference's range (max - min): latents have no fixed range."""
    ref = ref.float()
    mse = (out.float() - ref).pow(2).mean().item()
    span = (ref.max() - ref.min()).item()
    if not math.isfinite(mse):
        return math.nan
    return math.inf if mse == 0 else 10 * math.log10(span * span / mse)


def _stats(values: list[float]) -> dict:
    finite = [v for v in values if math.isfinite(v)]
    if not finite:
        return {"median": None, "p90": None, "max": None}
    return {"median": common.percentile(finite, 50), "p90": common.percentile(finite, 90),
            "max": max(finite) if len(finite) == len(values) else math.inf}


# -- per-layer error -----------------------------------------------------------------------------

def layer_errors(model, fp8_model, names: list[str], run_step) -> tuple[list[list], list[str]]:
    """Run ``run_step()`` (one bf16 forward of ``model``) with a hook on each layer ``names``.

    Returns rows [name, fp8 vs bf16, fp8 vs fp32, bf16 vs fp32] (relative L2, summed over the
    layer's calls) and the names never called."""
    sums = {n: [0.0] * 5 for n in names}  # |d8|^2, |bf|^2, |d8_32|^2, |dbf_32|^2, |y32|^2

    def hook(name, fp8_layer):
        def fn(module, args, out):
            x = args[0]
            y8 = fp8_layer(x).float()
            with common.exact_fp32():
                bias = None if module.bias is None else module.bias.float()
                y32 = F.linear(x.float(), module.weight.float(), bias)
            yb = out.float()
            acc = sums[name]
            for i, v in enumerate(((y8 - yb).pow(2).sum(), yb.pow(2).sum(), (y8 - y32).pow(2).sum(),
                                   (yb - y32).pow(2).sum(), y32.pow(2).sum())):
                acc[i] += v.item()
        return fn

    handles = [model.get_submodule(n).register_forward_hook(hook(n, fp8_model.get_submodule(n))) for n in names]
    try:
        with torch.no_grad():
            run_step()
    finally:
        for h in handles:
            h.remove()

    def ratio(num, den):
        return math.sqrt(num / den) if den else (0.0 if num == 0 else math.inf)

    rows = [[n, ratio(s[0], s[1]), ratio(s[2], s[4]), ratio(s[3], s[4])] for n, s in sums.items() if s[1] or s[4]]
    return rows, [n for n, s in sums.items() if not (s[1] or s[4])]


def layer_summary(rows: list[list]) -> dict:
    """Statistics over layers, the worst layer, and the mean per kind of layer (name without
    its block index: e.g. "attn1.to_q", "ff.net.2", "audio_to_video_attn.to_k")."""
    kinds: dict[str, list[float]] = {}
    for name, err, *_ in rows:
        kinds.setdefault(_BLOCK.sub("", name), []).append(err)
    worst = max(rows, key=lambda r: r[1]) if rows else [None, None]
    return {"layers": len(rows), "layer_rel_l2_vs_bf16": _stats([r[1] for r in rows]),
            "layer_rel_l2_vs_fp32": _stats([r[2] for r in rows]),
            "bf16_layer_rel_l2_vs_fp32": _stats([r[3] for r in rows]),
            "worst_layer": worst[0], "per_kind_mean_rel_l2_vs_bf16": {k: sum(v) / len(v) for k, v in kinds.items()},
            "per_layer": rows}


# -- denoising -----------------------------------------------------------------------------------

SMOKE_STEPS = (0, 3, 6, 8)  # --smoke: 3 of the 8 steps (the first, middle and last sigmas)


def sigmas(config, smoke: bool = False) -> list[float]:
    full = list(DISTILLED_SIGMAS) if M.is_ltx2(config) else [t / 1000.0 for t in DISTILLED_STAGE1_TIMESTEPS] + [0.0]
    return [full[i] for i in SMOKE_STEPS] if smoke else full


def denoise(model, inp: dict, geo: T.Geometry, schedule: list[float], dtype: torch.dtype) -> dict:
    """Euler on the flow velocity from the noise in ``inp``; the state is kept in float32 and
    rounded to ``dtype`` at each model input, as the engine's samplers do. In float32 (the oracle,
    under fp32_weights: a block's weights are fp32 only while it runs) LTX-Video's text keys /
    values are projected inside the step (scenario_transformer.ltxengine_call's cross_kv)."""
    keys = ("video", "audio") if "audio" in inp else ("video",)
    state = {k: inp[k].float() for k in keys}
    batch = inp["video"].shape[0]
    with torch.no_grad():
        for s, s_next in zip(schedule[:-1], schedule[1:]):
            step_in = {**inp, **{k: state[k].to(dtype) for k in keys},
                       "sigma": torch.full((batch,), s, device=inp["video"].device)}
            v = T.ltxengine_call(model, step_in, geo, cross_kv=dtype != torch.float32)()
            state = {k: state[k] + (s_next - s) * v[k].float() for k in keys}
    return state


@dataclass
class References:
    """What every policy of one model is compared with (kept; all small next to the weights)."""

    step_inputs: dict  # batch 1, the step scenario's inputs
    noise_inputs: dict  # batch 1, seeded noise and text for the denoise
    schedule: list[float]
    bf16: dict  # final latents of the bf16 denoise
    fp32: dict  # final latents of the float32 denoise of the same weights


def references(model, geo: T.Geometry, device, dtype, smoke: bool = False, seed: int = 0) -> References:
    config = model.config
    step_inputs = T.make_inputs(config, geo, LAYER_BATCH, device, dtype, seed=seed)
    noise_inputs = T.make_inputs(config, geo, 1, device, dtype, seed=seed + 1)
    schedule = sigmas(config, smoke)
    bf16 = denoise(model, noise_inputs, geo, schedule, dtype)
    with M.fp32_weights(model, model.transformer_blocks):
        f32_in = {k: v.float() for k, v in noise_inputs.items()}
        fp32 = denoise(model, f32_in, geo, schedule, torch.float32)
    return References(step_inputs, noise_inputs, schedule, bf16, fp32)


# -- records -------------------------------------------------------------------------------------

def _base(impl: str, policy: str | None) -> dict:
    return {"impl": impl, "policy": policy, "source": None, "status": "ok", "reason": "", "median_ms": None}


def _status(res: dict, values) -> dict:
    if not all(v is not None and not (isinstance(v, float) and math.isnan(v)) for v in values):
        res.update(status="failed", reason="failed: non-finite output (NaN) in the fp8 model")
    return res


def psnr_result(impl: str, policy: str | None, latents: dict, refs: References) -> dict:
    """``psnr_db``: against the bf16 denoise (None for bf16 itself); ``psnr_db_vs_fp32``: against
    the float32 one, which for bf16 is the floor fp8 is to be read against."""
    res = _base(impl, policy)
    vs_bf16 = policy is not None
    res.update(psnr_db={k: psnr(latents[k], refs.bf16[k]) for k in latents} if vs_bf16 else None,
               psnr_db_vs_fp32={k: psnr(latents[k], refs.fp32[k]) for k in latents},
               rel_l2_vs_bf16={k: rel_l2(latents[k], refs.bf16[k]) for k in latents} if vs_bf16 else None,
               rel_l2_vs_fp32={k: rel_l2(latents[k], refs.fp32[k]) for k in latents})
    return _status(res, list(res["psnr_db_vs_fp32"].values()))


def dims(name: str, config, geo: T.Geometry, batch: int, **extra) -> dict:
    f, h, w = T.latent_grid(config, geo)
    return {"model": name, "batch": batch, "frames": geo.frames, "height": geo.height, "width": geo.width,
            "fps": geo.fps, "latent_grid": [f, h, w], "video_tokens": f * h * w, "text_tokens": geo.text_tokens,
            "audio_tokens": T.audio_tokens(config, geo), "layers": config.num_layers, **extra}


def bf16_records(settings, name: str, model, refs: References, geo, dtype) -> list[dict]:
    d = dims(name, model.config, geo, 1, steps=len(refs.schedule) - 1, sigmas=refs.schedule)
    res = psnr_result(BF16, None, refs.bf16, refs)
    return [common.make_record(settings, res, op="denoise_psnr", shape=f"{name}-{d['steps']}steps", dims=d,
                               dtype=dtype, script=SCRIPT)]


def run_policy(settings, name: str, model, fp8_model, policy: str, refs: References, geo, dtype) -> list[dict]:
    """The two records of one policy: per-layer error on one step, PSNR of the denoise."""
    config = model.config
    names = fp8_targets(model, policy)
    # every target layer must run inside the step: LTX-Video's text keys / values too (not projected before it)
    step = T.ltxengine_call(model, refs.step_inputs, geo, cross_kv=False)
    rows, not_called = layer_errors(model, fp8_model, names, step)
    layer = {**_base(impl_name(policy), policy), **layer_summary(rows), "not_called": not_called}
    _status(layer, [r[1] for r in rows])
    latents = denoise(fp8_model, refs.noise_inputs, geo, refs.schedule, dtype)
    steps = len(refs.schedule) - 1
    d_layer = dims(name, config, geo, LAYER_BATCH, sigma=T.SIGMA)
    d_psnr = dims(name, config, geo, 1, steps=steps, sigmas=refs.schedule)
    return [common.make_record(settings, layer, op="layer_rel_l2", shape=f"{name}-b{LAYER_BATCH}", dims=d_layer,
                               dtype=dtype, script=SCRIPT),
            common.make_record(settings, psnr_result(impl_name(policy), policy, latents, refs), op="denoise_psnr",
                               shape=f"{name}-{steps}steps", dims=d_psnr, dtype=dtype, script=SCRIPT)]


def failed_records(settings, name: str, policy: str, reason: str, dtype, status: str = "failed") -> list[dict]:
    res = {**_base(impl_name(policy), policy), "status": status, "reason": reason}
    return [common.make_record(settings, dict(res), op=op, shape=name, dims={"model": name}, dtype=dtype,
                               script=SCRIPT) for op in ("layer_rel_l2", "denoise_psnr")]


def print_summary(records: list[dict]) -> None:
    print(f"{'model':<12} {'op':<13} {'impl':<24} result")
    for r in records:
        head = f"{r['dims']['model']:<12} {r['op']:<13} {r['impl']:<24} "
        if r["status"] != "ok":
            print(head + r["reason"])
        elif r["op"] == "layer_rel_l2":
            s, b = r["layer_rel_l2_vs_bf16"], r["bf16_layer_rel_l2_vs_fp32"]
            print(head + f"{r['layers']} layers: rel L2 vs bf16 median {s['median']:.4f} p90 {s['p90']:.4f} "
                  f"max {s['max']:.4f} ({r['worst_layer']}); bf16's own vs fp32 median {b['median']:.4f}")
        else:
            v32 = ", ".join(f"{k} {v:.2f} dB" for k, v in r["psnr_db_vs_fp32"].items())
            vs = ", ".join(f"{k} {v:.2f} dB" for k, v in (r["psnr_db"] or {}).items())
            print(head + (f"PSNR vs bf16: {vs}; " if vs else "") + f"PSNR vs fp32: {v32}")


# -- command line ------------------------------------------------------------------------------

def parse_policies(parser, value: str | None) -> list[str]:
    return common.pick_names("--policies", value, list(POLICIES), parser) or list(POLICIES)


def main(argv: list[str] | None = None) -> int:
    parser = common.make_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(CONFIGS)} (default: "
                                         f"{','.join(FULL_MODELS)}; with --smoke: {','.join(SMOKE_MODELS)})")
    parser.add_argument("--policies", help=f"comma-separated, from {', '.join(POLICIES)} (default: both)")
    parser.add_argument("--kernels", default="auto", choices=M.KERNELS, help="ops backend of every model")
    args = parser.parse_args(argv)
    models = common.pick_names("--models", args.models, list(CONFIGS), parser) or list(
        SMOKE_MODELS if args.smoke else FULL_MODELS)
    policies = parse_policies(parser, args.policies)
    settings = common.settings_from_args(SCRIPT, parser, args, models, default_reps=1, ceilings=())
    dtype = torch.bfloat16  # fp8-scaled-mm's GEMM output and bias are half precision
    ops, why = common.resolve_backend(args.kernels, settings.device)
    if ops is None:
        parser.error(f"--kernels {args.kernels}: {why}")
    records = []
    for name in settings.shapes:
        records += measure_model(settings, name, ops, policies, dtype)
        M.release()
    return finish(settings, records)


def measure_model(settings, name: str, ops, policies: list[str], dtype) -> list[dict]:
    geo = geometry(name, settings.smoke)
    model = M.build(CONFIGS[name], settings.device, dtype, ops)
    refs = references(model, geo, settings.device, dtype, settings.smoke)
    return bf16_records(settings, name, model, refs, geo, dtype) + measure_policies(
        settings, name, model, policies, refs, geo, dtype)


def measure_policies(settings, name: str, model, policies: list[str], refs: References, geo, dtype) -> list[dict]:
    """Each policy's records, its fp8 twin made afresh (conversion is deterministic: the same
    fp8 values as any other twin of this model) and dropped before the next: bf16 + one fp8
    copy + the hooks' float32 temporaries fit the 19B on an 80 GB GPU."""
    records = []
    for policy in policies:
        try:
            twin = fp8_twin(model, policy)
            records += run_policy(settings, name, model, twin, policy, refs, geo, dtype)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: reported, the next policy goes on
            records += failed_records(settings, name, policy, f"failed: {common._short(e)}", dtype)
        twin = None
        M.release()
    return records


def finish(settings, records: list[dict], path: Path | None = None) -> int:
    """Append the records (to ``path``, default <out>/fp8_quality.jsonl) and print them; exit
    status 1 when an fp8 model failed (non-finite output or an error)."""
    path = common.append_results(path or settings.out_dir / f"{SCRIPT}.jsonl", records)
    print_summary(records)
    print(f"{len(records)} records appended to {path}")
    return 1 if any(r["status"] == "failed" for r in records) else 0


if __name__ == "__main__":
    sys.exit(main())
