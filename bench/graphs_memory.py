"""The memory part of scenario_graphs.py (see its docstring): peak device memory per phase of a full
generation, LTX-Video 2B with the text encoder (and the VAE encoder) offloaded or all resident, LTX-2 19B
two-stage all resident.
Kept apart so each file stays readable."""

from __future__ import annotations

import time

import torch

from bench import common
from bench import models as M

TARGET_2B_BYTES = 8 * 10 ** 9  # issue 7: "<= 8 GB" after the text encoding, read as 10^9 bytes (the stricter)
# The 19B budget: about 79 GiB of an H100 80GB are usable (the figure, not measured here). On a
# smaller device its own total memory (recorded as device_total_bytes) is the budget.
BUDGET_BYTES = 79 * 2 ** 30
GEN_CONFIGS = {"2b": ("offload-text", "offload-text-encoder", "resident"), "ltx2-19b": ("resident",)}
# offload-text-encoder: also the VAE encoder (text-to-video never runs it)
OFFLOAD = {"offload-text": ("text_encoder",), "offload-text-encoder": ("text_encoder", "vae_encoder"), "resident": ()}


def family(name: str) -> str:
    return "ltx2-19b" if M.is_ltx2(M.TRANSFORMERS[name]) else "2b"


# -- peaks per phase of a generation ----------------------------------------------

class PhaseMemory:
    """Peak device memory per generation phase. Boundaries: the first ``prepare_context`` of the
    transformer (the text encoder, offloaded or not, is done), the latent upsampler's call
    (``upsample``, then ``refine``), the VAE decoder's first call (``decode``: video and audio)."""

    def __init__(self, engine):
        self.device, self.phases, self.phase = engine.device, {}, None
        tr, self._handles = engine.transformer, []
        original = tr.prepare_context

        def prepare_context(*args, **kwargs):
            if self.phase == "text":
                self.mark("denoise")
            return original(*args, **kwargs)
        tr.prepare_context, self._tr = prepare_context, tr  # an instance attribute: removed in close()
        ups = engine.latent_upsampler
        if ups is not None:
            self._handles += [ups.register_forward_pre_hook(lambda *_: self.mark("upsample")),
                              ups.register_forward_hook(lambda *_: self.mark("refine"))]
        self._handles.append(engine.vae.decoder.register_forward_pre_hook(
            lambda *_: self.mark("decode") if self.phase != "decode" else None))

    def _cuda(self) -> bool:
        return self.device.type == "cuda"

    def start(self) -> None:
        self.phases, self.phase = {}, "text"
        if self._cuda():
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)

    def mark(self, phase: str | None) -> None:
        """Close the current phase (its peaks) and open ``phase`` with the peaks reset."""
        a = r = None
        if self._cuda():
            torch.cuda.synchronize(self.device)
            a, r = torch.cuda.max_memory_allocated(self.device), torch.cuda.max_memory_reserved(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        old = self.phases.get(self.phase)
        if old is not None and a is not None:
            a, r = max(a, old["max_allocated_bytes"]), max(r, old["max_reserved_bytes"])
        self.phases[self.phase] = {"max_allocated_bytes": a, "max_reserved_bytes": r}
        self.phase = phase

    def close(self) -> None:
        for h in self._handles:
            h.remove()
        del self._tr.prepare_context


def build_ltxv_engine(settings, dtype, ops, executor: str, offload):
    from bench import generate_ltxv as V
    from ltxengine import LTXVideoEngine
    from ltxengine.models.text_encoder import T5TextEncoder

    cfg, dev = V.ltxv_configs(settings.smoke), settings.device
    te = T5TextEncoder(V.build_t5(cfg["t5"], dev, dtype), V.t5_tokenizer())
    return LTXVideoEngine(M.build(cfg["transformer"], dev, dtype, ops), M.build(cfg["vae"], dev, dtype, ops), te,
                          scheduler_config=dict(V.SCHEDULER), device=dev, dtype=dtype, source="bench",
                          executor=executor, offload=offload)


def build_ltx2_engine(settings, dtype, ops, executor: str, offload):
    """generate_ltx2.build_ltx2's models (released configs, Gemma 3 12B, distilled LoRA), ours only."""
    from bench import generate_ltx2 as L
    from bench.generation import build_upsampler
    from ltxengine.loading.lora import LoraWeights
    from ltxengine.loading.ltx2 import LTX2Checkpoint
    from ltxengine.ltx2.engine import LTX2Engine
    from ltxengine.models.audio_vae import AudioVAE
    from ltxengine.models.ltx2_text import GemmaTextEncoder, TextConnectors
    from ltxengine.models.vocoder import Vocoder

    cfg, dev = L.ltx2_configs(settings.smoke), settings.device
    ckpt = LTX2Checkpoint(source="bench", transformer=M.build(cfg["transformer"], dev, dtype, ops),
                          vae=M.build(cfg["vae"], dev, dtype, ops),
                          connectors=L.build_module(TextConnectors, cfg["connectors"], dev, dtype, ops, 7),
                          audio_vae=L.build_module(AudioVAE, cfg["audio_vae"], dev, dtype, ops, 8),
                          vocoder=L.build_module(Vocoder, cfg["vocoder"], dev, dtype, ops, 9))
    ups = build_upsampler(cfg["latent_upsampler"], dev, dtype, ops)
    gemma = L.build_gemma(*cfg["gemma"], dev, dtype)
    lora = L.distilled_lora(ckpt.transformer, L.LORA_RANK["tiny" if settings.smoke else "full"], dtype)
    return LTX2Engine(ckpt, GemmaTextEncoder(gemma, L.gemma_tokenizer(), ckpt.connectors), latent_upsampler=ups,
                      distilled_lora=LoraWeights.load(lora, name="distilled-lora"), device=dev, dtype=dtype,
                      source="bench", executor=executor, offload=offload)


def generation(engine, name: str, args, smoke: bool):
    """(run() -> result timings, dims) of the scenario's recipe (module docstring)."""
    from bench import generate_ltxv as V
    from bench import generation as G
    from bench.scenario_vae_decode import tiling_config

    if family(name) == "ltx2-19b":
        from bench import generate_ltx2 as L
        size, stages = (G.SMOKE_SIZE_LTX2 if smoke else G.FULL_SIZE), []
        call = L.ours_ltx2({"engine": engine, "smoke": smoke}, size, args.ltx2_steps, args.tiling, stages)

        def run():
            call()
            return stages[-1]  # the result's timings (ours_ltx2 keeps them)
        dims = {"recipe": "two-stage", "num_inference_steps": args.ltx2_steps, "vae_tiling": args.tiling,
                "text_tokens": L.LTX2_SEQ, "lora_rank": L.LORA_RANK["tiny" if smoke else "full"], "audio": True}
        return run, size, dims
    size = G.SMOKE_SIZE if smoke else G.FULL_SIZE
    kw = dict(height=size[0], width=size[1], num_frames=size[2], frame_rate=G.FRAME_RATE, seed=G.SEED,
              pipeline="condition", **V.DECODE, **V.ltxv_recipe("ltxv-2b", args.ltxv_steps))
    kw["guidance_scale"] = args.ltxv_guidance
    kw["vae_tiling"] = tiling_config(args.tiling, (size[2] - 1) // 8 + 1, 8, smoke)  # 0.9.5+ VAE: 8x in time
    dims = {"recipe": "one-stage", "num_inference_steps": args.ltxv_steps, "guidance_scale": args.ltxv_guidance,
            "text_tokens": V.T5_SEQ, "vae_tiling": args.tiling}
    return (lambda: dict(engine.generate(G.PROMPT, **kw).timings)), size, dims


def _bytes(module) -> int:
    tensors = {id(t): t for t in list(module.parameters()) + list(module.buffers())}
    return sum(t.numel() * t.element_size() for t in tensors.values())


def weights(engine) -> dict:
    names = ("transformer", "vae", "text_encoder", "connectors", "audio_vae", "vocoder", "latent_upsampler")
    mods = {n: getattr(engine, n, None) for n in names}
    mods["text_encoder"] = engine.text_encoder.model
    return {n: _bytes(m) for n, m in mods.items() if m is not None}


def _peaks(runs: list[dict], key: str, skip: tuple = ()) -> int | None:
    values = [p[key] for r in runs for n, p in r["phases"].items() if n not in skip and p[key] is not None]
    return max(values) if values else None


def _verdict(name: str, config: str, res: dict, device) -> dict:
    """The issue's criterion for this configuration ({} where it sets none)."""
    if family(name) == "2b" and config.startswith("offload-text"):
        value = res["peak_after_text_reserved_bytes"]
        return {"target_bytes": TARGET_2B_BYTES, "metric": "peak_after_text_reserved_bytes",
                "met": None if value is None else value <= TARGET_2B_BYTES}
    if family(name) == "ltx2-19b" and res["peak_reserved_bytes"] is not None:
        free, total = torch.cuda.mem_get_info(device)
        context = (total - free) - torch.cuda.memory_reserved(device)  # the CUDA context, not in torch's stats
        peak = res["peak_reserved_bytes"] + context
        budget = min(BUDGET_BYTES, total)
        return {"budget_bytes": budget, "device_total_bytes": total, "context_bytes": context,
                "peak_device_bytes": peak, "headroom_bytes": budget - peak, "fits": peak <= budget}
    return {}


def bench_memory(settings, name: str, dtype, ops, args) -> list[dict]:
    records = []
    for config in GEN_CONFIGS[family(name)]:
        M.release()
        res, size, dims = _one_config(settings, name, config, dtype, ops, args)
        M.release()  # the configuration's engine is gone: its memory goes back before the next one
        if res["status"] == "ok":
            res["criterion"] = _verdict(name, config, res, settings.device)
        dims.update(model=name, config=config, size=list(size) if size else None)
        records.append(common.make_record(settings, res, op="generate_memory", shape=f"{name}-{config}", dims=dims,
                                          dtype=dtype))
    return records


def _one_config(settings, name: str, config: str, dtype, ops, args):
    """(result, size, dims) of one engine configuration; its engine dies with this frame."""
    res = {"impl": f"ltxengine-{args.executor}", "source": "Engine.generate", "status": "ok", "reason": "",
           "runs": [], "resident_bytes": None, "peak_allocated_bytes": None, "peak_reserved_bytes": None,
           "peak_after_text_reserved_bytes": None, "median_ms": None, "offload": list(OFFLOAD[config])}
    try:
        build = build_ltx2_engine if family(name) == "ltx2-19b" else build_ltxv_engine
        engine = build(settings, dtype, ops, args.executor, OFFLOAD[config])
        res.update(impl=f"ltxengine-{engine.executor.mode if engine.executor else 'none'}",
                   offload_effective=sorted(engine.residency.offload), weights_bytes=weights(engine))
        run, size, dims = generation(engine, name, args, settings.smoke)
        _measure(engine, run, res, settings, args.runs)
    except Exception as e:  # noqa: BLE001 - e.g. out of memory: the record says so
        res.update(status="failed", reason=f"failed: {common._short(e)}")
        return res, None, {}
    return res, size, dims


def _measure(engine, run, res: dict, settings, runs: int) -> None:
    cuda = settings.device.type == "cuda"
    res["resident_bytes"] = torch.cuda.memory_allocated(settings.device) if cuda else None
    tracker = PhaseMemory(engine)
    try:
        for _ in range(runs):
            M.release()  # cached blocks of the previous run would count as reserved
            tracker.start()
            t0 = time.perf_counter()
            try:
                timings = run()
            except Exception:
                res["failed_in_phase"] = tracker.phase  # e.g. which phase ran out of memory
                raise
            tracker.mark(None)
            res["runs"].append({"phases": tracker.phases, "seconds": time.perf_counter() - t0,
                                "stage_seconds": timings})
    finally:
        tracker.close()
    res["median_ms"] = 1e3 * common.percentile([r["seconds"] for r in res["runs"]], 50)
    res.update(peak_allocated_bytes=_peaks(res["runs"], "max_allocated_bytes"),
               peak_reserved_bytes=_peaks(res["runs"], "max_reserved_bytes"),
               peak_after_text_reserved_bytes=_peaks(res["runs"], "max_reserved_bytes", ("text",)))
    if engine.executor is not None:
        stats = engine.executor.buckets
        res["graphs"] = {"buckets": len(stats), "capture_seconds": sum(s.capture_seconds for s in stats),
                         "capture_bytes": sum(s.capture_bytes for s in stats), "invalidations": engine.executor.invalidations}
