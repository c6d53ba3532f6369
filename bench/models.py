"""Random-weight LTX models for the full-model scenarios, built once in ltxengine and shared with
diffusers, plus the measurement steps both scenario scripts use.

Models. No checkpoint is read: a released config (``ltxengine.config`` presets, ``VAE_LTX2``) is
built on the meta device, cast to the run dtype (still on meta, free), materialized on the target
device with ``to_empty`` and filled in place tensor by tensor (``randomize_``), so a 19B model
never exists in fp32 and never passes through the host. Other model objects (ltxengine with
another ops backend, diffusers eager, diffusers compiled) are built on the meta device too and
take the SAME storage through ``load_state_dict(assign=True)``: the weights exist once, whatever
the number of implementations, and they are equal by construction. Our parameter names are
diffusers' state-dict keys (see tests/models/), so the load is strict.

Weights of realistic scale (what a trained LTX model looks like to the arithmetic; the values
decide overflow, rounding and attention sharpness, not speed):

* linear and conv weights N(0, 1/fan_in): activations keep unit scale through every layer;
* biases N(0, 0.02^2): trained biases are small next to the activations;
* norm weights (Q/K RMSNorm) N(1, 0.05^2): around 1, but not exactly 1, so a wrongly wired
  weight shows up in the smoke parity check;
* modulation tables ``*scale_shift_table`` N(0, 1/D), the modules' own initialisation: small
  next to the timestep embedding added to them;
* the VAE's latent statistics are the identity (mean 0, std 1) and its
  ``timestep_scale_multiplier`` is the released 1000.

Measurement (``run_group``): every implementation is verified before it is timed, against an
oracle: in float32 (smoke runs on the CPU) the output of ltxengine with the torch ops; in
bfloat16 the same ltxengine model run in float32 on the bf16-valued weights and inputs, one
transformer block upcast at a time (``fp32_weights``), with the house error budget (bench/README).
Then all implementations that passed are timed alternately (A B C A B C ...), so clock and
thermal drift hit them alike, and summarized by their medians.
"""

from __future__ import annotations

import dataclasses
import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn

from bench import common
from ltxengine.config import (LTX2_TRANSFORMER_19B, LTX2_TRANSFORMER_22B_V23, LTX2_TRANSFORMER_22B_V25, TRANSFORMER_2B,
                              TRANSFORMER_13B, VAE_095, LTX2TransformerConfig, TransformerConfig, VideoVAEConfig)
from ltxengine.models.ltx2_transformer import LTX2Transformer
from ltxengine.models.transformer import LTXVideoTransformer
from ltxengine.models.video_vae import VAE_LTX2, LTX2VideoVAE, LTX2VideoVAEConfig, VideoVAE
from ltxengine.ops import TORCH_OPS, Ops
from ltxengine.presets import TINY_2B, TINY_LTX2, TINY_LTX23, TINY_LTX25, TINY_VAE_095, TINY_VAE_LTX2

BIAS_STD = 0.02
NORM_WEIGHT_STD = 0.05
REL_FP32 = 1e-5  # fp32 parity: op-order rounding measured ~1e-7 of the output scale (tests/models/)
TORCH_IMPL = "ltxengine-torch"  # the oracle: always runs, first
DIFFUSERS = "diffusers"
DIFFUSERS_COMPILE = "diffusers+compile"

# -- configs ----------------------------------------------------------------------------------

# the released configs and the tiny ones (ltxengine/presets.py) by the names the scripts take
TRANSFORMERS = {"2b": TRANSFORMER_2B, "13b": TRANSFORMER_13B, "ltx2-19b": LTX2_TRANSFORMER_19B,
                "tiny-2b": TINY_2B, "tiny-ltx2": TINY_LTX2,
                # LTX-2.3 / 2.5: by name (--models), not in any script's default list yet
                "ltx2.3-22b": LTX2_TRANSFORMER_22B_V23, "ltx2.5-22b": LTX2_TRANSFORMER_22B_V25,
                "tiny-ltx2.3": TINY_LTX23, "tiny-ltx2.5": TINY_LTX25}
VAES = {"ltxv-095": VAE_095, "ltx2": VAE_LTX2, "tiny-095": TINY_VAE_095, "tiny-ltx2": TINY_VAE_LTX2}

# config type -> (our class, diffusers class name)
_CLASSES = {TransformerConfig: (LTXVideoTransformer, "LTXVideoTransformer3DModel"),
            LTX2TransformerConfig: (LTX2Transformer, "LTX2VideoTransformer3DModel"),
            VideoVAEConfig: (VideoVAE, "AutoencoderKLLTXVideo"),
            LTX2VideoVAEConfig: (LTX2VideoVAE, "AutoencoderKLLTX2Video")}


def is_ltx2(config) -> bool:
    return isinstance(config, (LTX2TransformerConfig, LTX2VideoVAEConfig))


# -- building ---------------------------------------------------------------------------------

def _init_(name: str, t: torch.Tensor, g: torch.Generator) -> None:
    """Fill one tensor in place (see the module docstring for the scales and why)."""
    if name.endswith("timestep_scale_multiplier"):
        t.fill_(1000.0)
    elif name.endswith("latents_mean"):
        t.zero_()
    elif name.endswith("latents_std"):
        t.fill_(1.0)
    elif "scale_shift_table" in name:
        t.normal_(0.0, t.shape[-1] ** -0.5, generator=g)
    elif "per_channel_scale" in name:  # 0.9.1 noise injection (no released 0.9.5+/LTX-2 layout has it)
        t.normal_(0.0, 0.1, generator=g)
    elif t.ndim >= 2:
        t.normal_(0.0, (t.numel() // t.shape[0]) ** -0.5, generator=g)
    elif name.endswith("bias"):
        t.normal_(0.0, BIAS_STD, generator=g)
    elif name.endswith("weight"):
        t.normal_(1.0, NORM_WEIGHT_STD, generator=g)
    else:
        raise ValueError(f"randomize_: no initialisation rule for {name!r} of shape {tuple(t.shape)}")


@torch.no_grad()
def randomize_(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random values of realistic scale, written in place on the model's device and dtype."""
    device = next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        _init_(name, t, g)
    return model


def build(config, device: torch.device, dtype: torch.dtype, ops: Ops = TORCH_OPS, seed: int = 0) -> nn.Module:
    """An ltxengine model of ``config`` with random weights, created directly on ``device``."""
    config.validate("bench.models")
    cls, _ = _CLASSES[type(config)]
    with torch.device("meta"):
        model = cls(config, ops=ops).to(dtype)
    return randomize_(model.to_empty(device=device), seed).eval()


def share(model: nn.Module, ops: Ops) -> nn.Module:
    """A second ltxengine model object over the same storage, calling ``ops``."""
    with torch.device("meta"):
        twin = type(model)(model.config, ops=ops)
    twin.load_state_dict(model.state_dict(), strict=True, assign=True)
    return twin.eval()


def diffusers_config(model: nn.Module) -> dict:
    """diffusers' config for our model: the field names are diffusers' (ltxengine.config). The VAEs
    pass their compression ratios explicitly: diffusers' fallback 2**sum(scaling) is wrong for the
    0.9.5 / LTX-2 strides."""
    kwargs = dataclasses.asdict(model.config)
    if isinstance(model, VideoVAE):
        kwargs.update(spatial_compression_ratio=model.spatial_compression_ratio,
                      temporal_compression_ratio=model.temporal_compression_ratio)
    return kwargs


def build_diffusers(model: nn.Module) -> nn.Module:
    """The matching diffusers model over the same storage as ``model`` (strict key match)."""
    import diffusers  # benchmark-only dependency: never imported by ltxengine

    cls = getattr(diffusers, _CLASSES[type(model.config)][1])
    with torch.device("meta"):
        ref = cls(**diffusers_config(model))
    ref.load_state_dict(model.state_dict(), strict=True, assign=True)
    return ref.eval()


def release() -> None:
    """Give the memory of dropped models back to the device before the next model is built."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# -- the float32 oracle ---------------------------------------------------------------------------

def _swap(params: list[nn.Parameter], dtype: torch.dtype) -> list[torch.Tensor]:
    saved = [p.data for p in params]
    for p in params:
        p.data = p.data.to(dtype)
    return saved


def _restore(params: list[nn.Parameter], saved: list[torch.Tensor]) -> None:
    for p, s in zip(params, saved):
        p.data = s


@contextmanager
def fp32_weights(model: nn.Module, blocks: nn.ModuleList | None = None):
    """Run ``model`` in float32 on its (bf16-valued) weights without a float32 copy of it: the
    parameters outside ``blocks`` are upcast for the duration, each block's only while that block
    runs (hooks). Only this model object's parameters change; objects sharing the storage keep
    reading the original tensors, which are put back at the end."""
    inside = {id(p) for p in blocks.parameters()} if blocks is not None else set()
    outer = [p for p in model.parameters() if id(p) not in inside]
    saved_outer = _swap(outer, torch.float32)
    handles, pending = [], {}

    def enter(block, _args):
        params = list(block.parameters())
        pending[id(block)] = (params, _swap(params, torch.float32))

    def leave(block, _args, _out):
        _restore(*pending.pop(id(block)))

    for block in blocks or ():
        handles += [block.register_forward_pre_hook(enter), block.register_forward_hook(leave)]
    try:
        with common.exact_fp32():
            yield
    finally:
        for h in handles:
            h.remove()
        for params, saved in pending.values():
            _restore(params, saved)
        _restore(outer, saved_outer)


# -- verification and alternating timing -------------------------------------------------------------

@dataclass
class Candidate:
    """One implementation of a scenario: ``fn()`` returns {output name: tensor}; fn None means
    not runnable (status / reason say why)."""

    name: str
    fn: Callable[[], dict[str, torch.Tensor]] | None
    source: str | None = None
    status: str = "ok"
    reason: str = ""
    extra: dict = dataclasses.field(default_factory=dict)  # recorded as is (e.g. "precomputed")
    view: Callable[[dict], dict] | None = None  # the part of every output that is compared (default: all)


def budgets(torch_out: dict, reference: dict, dtype: torch.dtype) -> dict[str, float]:
    """Per output: fp32 parity REL_FP32 x max(1, |ref|); in a low precision the error budget,
    2 x (ltxengine-torch's own error against the fp32 oracle) + one ulp at the output's scale."""
    if dtype == torch.float32:
        return {k: REL_FP32 * max(1.0, common.max_abs(ref)) for k, ref in reference.items()}
    return {k: common.error_budget(common.max_abs_err(torch_out[k], ref), ref, dtype)
            for k, ref in reference.items()}


def _base(c: Candidate, settings: common.Settings) -> dict:
    return {"impl": c.name, "source": c.source, "status": c.status, "reason": c.reason, "max_abs_err": None,
            "tolerance": None, "errors": None, "max_abs_diff_vs_ltxengine_torch": None, "median_ms": None,
            "p10_ms": None, "p90_ms": None, "min_ms": None, "mean_ms": None, "reps": None,
            "warmup": settings.warmup, "flush_l2": False, "peak_mem_bytes": None, **c.extra}


def _check(res: dict, out: dict, reference: dict, tol: dict, torch_out: dict) -> dict:
    """Fill the verification fields; the worst output (largest err / tolerance) is the headline."""
    errors = {k: [common.max_abs_err(out[k], reference[k]), tol[k]] for k in reference}
    worst = max(errors, key=lambda k: errors[k][0] / errors[k][1] if errors[k][1] else float("inf"))
    res.update(errors=errors, max_abs_err=errors[worst][0], tolerance=errors[worst][1],
               max_abs_diff_vs_ltxengine_torch=max(common.max_abs_err(out[k], torch_out[k]) for k in reference))
    bad = [k for k, (e, t) in errors.items() if not e <= t]
    if bad:
        res.update(status="failed", reason="failed: " + "; ".join(
            f"{k} max_abs_err {errors[k][0]:.3e} > tolerance {errors[k][1]:.3e}" for k in bad) + "; not timed")
    return res


def verify(candidates: list[Candidate], settings: common.Settings, dtype: torch.dtype,
           oracle: Callable[[], dict] | None) -> tuple[dict[str, dict], dict[str, Callable]]:
    """First call of each candidate, checked against the oracle (``oracle()`` when given, else
    ltxengine-torch's output; candidates[0] must be ltxengine-torch). Returns the result dicts and
    the callables that passed."""
    results, passed = {}, {}
    reference = torch_out = None
    no_oracle = f"failed: no oracle ({TORCH_IMPL} did not run)"
    if oracle is not None:
        try:
            reference = oracle()
            common.synchronize(settings.device)
        except Exception as e:  # noqa: BLE001 - e.g. out of memory: nothing can be verified
            no_oracle = f"failed: the float32 oracle raised {common._short(e)}"
    for c in candidates:
        res = results[c.name] = _base(c, settings)
        if c.fn is None:
            continue
        if oracle is not None and reference is None:
            res.update(status="failed", reason=no_oracle)
            continue
        try:
            out = c.fn()
            common.synchronize(settings.device)
        except Exception as e:  # noqa: BLE001 - e.g. a compile failure: reported, the others go on
            res.update(status="unavailable", reason=f"unavailable: first call raised {common._short(e)}")
            continue
        if c.name == TORCH_IMPL:
            torch_out, reference = out, reference if reference is not None else out
        if torch_out is None:
            res.update(status="failed", reason=no_oracle)
            continue
        view = c.view or (lambda d: d)
        try:
            _check(res, view(out), view(reference), budgets(view(torch_out), view(reference), dtype),
                   view(torch_out))
        except (ValueError, KeyError) as e:  # another shape or a missing output: wrong, not a crash
            res.update(status="failed", reason=f"failed: {common._short(e)}")
        if res["status"] == "ok":
            passed[c.name] = c.fn
        del out
    return results, passed


def _once(fn: Callable, device: torch.device) -> float:
    """Milliseconds of one call that starts and ends on an idle device: host overhead the device
    cannot hide (eager launches) counts, as in a sampling loop that waits for each step."""
    if device.type != "cuda":
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(device)
    start.record()
    fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end)


def time_alternating(fns: dict[str, Callable], device: torch.device, reps: int,
                     warmup: int) -> tuple[dict[str, list[float]], dict[str, str]]:
    """``warmup`` then ``reps`` rounds, each calling every implementation once in turn. An
    implementation that raises leaves the rotation; its error is returned."""
    if reps < 1:
        raise ValueError(f"time_alternating: reps must be >= 1, got {reps}")
    times = {name: [] for name in fns}
    errors, active = {}, dict(fns)
    for i in range(warmup + reps):
        for name, fn in list(active.items()):
            try:
                t = _once(fn, device)
            except Exception as e:  # noqa: BLE001 - e.g. out of memory: reported, the rest go on
                errors[name] = common._short(e)
                del active[name]
                continue
            if i >= warmup:
                times[name].append(t)
    return times, errors


def run_group(candidates: list[Candidate], settings: common.Settings, dtype: torch.dtype,
              oracle: Callable[[], dict] | None = None) -> list[dict]:
    """Verify every candidate, time those that passed alternately, measure their peak memory."""
    results, passed = verify(candidates, settings, dtype, oracle)
    times, errors = time_alternating(passed, settings.device, settings.reps, settings.warmup)
    for name in passed:
        res = results[name]
        if name in errors:
            res.update(status="failed", reason=f"failed while timing: {errors[name]}")
            continue
        res.update(common.summarize(times[name]))
        try:
            res["peak_mem_bytes"] = common.peak_memory(passed[name], settings.device)
        except Exception as e:  # noqa: BLE001
            res.update(status="failed", reason=f"failed while measuring memory: {common._short(e)}")
    out = [results[c.name] for c in candidates]
    common.add_ratios(out, {"diffusers": DIFFUSERS, "diffusers_compile": DIFFUSERS_COMPILE})
    return out


def no_grad(fn: Callable[[], Any]) -> Callable[[], Any]:
    def call():
        with torch.no_grad():
            return fn()
    return call


def exit_status(records: list[dict], rc: int) -> int:
    """1 when an ltxengine implementation failed its check (common.finish only knows the op
    backends' names)."""
    bad = [r for r in records if r["status"] == "failed" and r["impl"].startswith("ltxengine")]
    return 1 if bad or rc else 0


# -- command line shared by the scenario scripts ------------------------------------------------------

KERNELS = ("auto", "triton", "cuda", "torch")


def make_parser(description: str, full: tuple[str, ...], smoke: tuple[str, ...], choices: list[str],
                batch: str = "1"):
    parser = common.make_parser(description, compile_option=True)
    parser.add_argument("--compile", action="store_true", help="force diffusers+compile on (also with --smoke)")
    parser.add_argument("--models", help=f"comma-separated, from {', '.join(choices)} (default: {','.join(full)}; "
                                         f"with --smoke: {','.join(smoke)})")
    parser.add_argument("--batch", default=batch, help=f"comma-separated batch sizes (default: {batch})")
    parser.add_argument("--kernels", default="auto",
                        help=f"ltxengine backends timed besides torch, from {', '.join(KERNELS)} (default: auto)")
    parser.add_argument("--dtype", choices=("bfloat16", "float32"),
                        help="weights and activations (default: bfloat16; float32 with --smoke)")
    return parser


def parse_common(parser, args, full: tuple[str, ...], smoke: tuple[str, ...], choices: list[str]):
    """(models, batches, kernels besides torch, dtype) from the shared options."""
    models = common.pick_names("--models", args.models, choices, parser) or list(smoke if args.smoke else full)
    try:
        batches = sorted({int(b) for b in args.batch.split(",") if b.strip()})
    except ValueError:
        parser.error(f"--batch must be comma-separated integers, got {args.batch!r}")
    if not batches or batches[0] < 1:
        parser.error(f"--batch must list positive integers, got {args.batch!r}")
    picked = common.pick_names("--kernels", args.kernels, list(KERNELS), parser) or []
    kernels = [k for k in picked if k != "torch"]  # torch always runs: it is the oracle's model
    dtype = getattr(torch, args.dtype or ("float32" if args.smoke else "bfloat16"))
    return models, batches, kernels, dtype


def apply_compile_flag(settings: common.Settings, args) -> None:
    if args.compile:
        settings.compile, settings.compile_skip_reason = True, ""


def keep(candidates: list[Candidate], settings: common.Settings) -> list[Candidate]:
    """--impls filter; ltxengine-torch always stays (the oracle's model and the budgets' yardstick)."""
    return [c for c in candidates if c.name == TORCH_IMPL or settings.impls is None or c.name in settings.impls]


def ltxengine_twins(model: nn.Module, kernels: list[str], device: torch.device) -> dict:
    """kernels name -> (model over the same storage with those ops or None, {op: backend}, why not)."""
    twins = {}
    for k in kernels:
        ops, why = common.resolve_backend(k, device)
        twins[k] = (share(model, ops), dict(ops.sources), "") if ops is not None else (None, {}, why)
    return twins


def compile_skipped(reason: str, extra: dict | None = None) -> Candidate:
    """The diffusers+compile entry when there is no compiled model (``reason`` says why)."""
    status = "unavailable" if reason.startswith("unavailable") else "skipped"
    return Candidate(DIFFUSERS_COMPILE, None, None, status, reason, extra=dict(extra or {}))
