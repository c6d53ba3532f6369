"""``Engine.plan``: the memory plan of an LTX-Video generation, phase by phase, before it runs.

Phases follow ``stages.run_generation``: text encoding, denoising (stage 1), latent upsampling and
refinement (two-stage), decoding. Transient memory comes from fake-tensor traces of the same code
the generation runs (``executor.plan.transient_peak``); weights from the modules on the device;
what the step executor keeps (static buffers, the activation arena / graph pool) from the step's
argument shapes and its page plan. See ltxengine/executor/plan.py for what is not counted.

Planning allocates nothing: every tensor of the video's size (latents, text embeddings, token
ids) is made in a fake-tensor mode (``executor.plan.fake_mode``), so a request far beyond the
machine's memory is planned, and refused, like any other.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import torch

from ..components.decode import decode_latents
from ..executor.plan import MemoryPlan, Phase, fake_mode, largest_fitting, transient_peak
from ..models.transformer import grid_positions
from ..planning import (component_bytes, fake_latents, measure, memo_peak, on_device, on_fake_weights,
                        repeated_modules, scoped_peak, upsample_peak)
from . import sampling as lv

logger = logging.getLogger(__name__)


def plan_ltx_video(engine, a, *, suggest: bool = True) -> MemoryPlan:
    """The plan of a checked ``LTXVideoRequest``."""
    plan = measure(MemoryPlan(device=engine.device, phases=_phases(engine, a)), engine)
    if suggest and plan.fits is False:
        plan.suggestion = _suggest(engine, a, plan.budget_bytes)
    return plan


def _phases(engine, a) -> list[Phase]:
    w = component_bytes(engine)
    offload = engine.residency.offload
    resident = on_device(w, offload)
    encoding = ("vae_encoder",) if a.pipeline != "text-to-video" else ()
    r, rt = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    f = (a.num_frames - 1) // rt + 1
    cfg = a.guidance_scale > 1.0
    two = a.two_stage
    phases = [Phase("text", on_device(w, offload, "text_encoder"), 0, _text_peak(engine, a, cfg))]
    kept = 0
    h1, w1 = a.stage1_size
    stages = [("denoise", h1, w1, cfg)]
    if two is not None:
        cfg2 = (a.guidance_scale if two.guidance_scale is None else two.guidance_scale) > 1.0
        stages.append(("refine", 2 * h1, 2 * w1, cfg2))
    for i, (name, h, wd, guided) in enumerate(stages):
        step, static = _step_peak(engine, a, f, h // r, wd // r, guided)
        if i == 1:  # the upsampler runs between the stages
            phases.append(Phase("upsample", on_device(w, offload, "latent_upsampler"), kept,
                                upsample_peak(engine, f, h1 // r, w1 // r)))
        # the executor keeps a bucket's static buffers (and, captured, its activations) from
        # its first step to the end of the process
        keeps = engine.executor is not None
        phases.append(Phase(name, on_device(w, offload, *encoding), kept + (static if keeps else 0), step))
        if keeps:
            kept += static + (step if engine.executor.mode == "graphs" else 0)
    hd, wdec = (2 * h1, 2 * w1) if two is not None else (h1, w1)
    phases.append(Phase("decode", resident, kept, _decode_peak(engine, a, f, hd // r, wdec // r)))
    return phases


def _text_peak(engine, a, cfg: bool) -> int:
    """T5's activations on [negative, positive] (one batch: at or above the two calls one after the
    other that encode_prompt makes), traced once per engine and shape: the same for every video."""
    te = engine.text_encoder
    shape = (2 if cfg else 1, a.max_sequence_length)

    def peak() -> int:
        try:
            return _trace_text(engine, te.model, shape)
        except Exception as e:  # noqa: BLE001 - an encoder the fake trace cannot follow
            logger.warning("memory plan: the text encoder's fake trace failed (%s: %s); its activations (hidden "
                           "states, attention scores, MLP intermediates, the embeddings) are not counted",
                           type(e).__name__, e)
            return 0
    return memo_peak(engine, ("text", id(te.model), *shape), peak)


def _trace_text(engine, model, shape: tuple[int, int]) -> int:
    with fake_mode():
        ids = torch.zeros(shape, dtype=torch.long, device=engine.device)
    run = on_fake_weights(model, ids)  # offloaded, T5 is in host memory now
    return transient_peak(lambda i: run(input_ids=i, attention_mask=torch.ones_like(i)), ids,
                          repeated=repeated_modules(model))


def _step_peak(engine, a, f: int, h: int, w: int, cfg: bool) -> tuple[int, int]:
    """(transient bytes of one guided step incl. the per-generation constants it reads, bytes of
    the step's arguments the executor copies into static buffers)."""
    tr = engine.transformer
    dtype = engine.dtype
    L = a.max_sequence_length
    n = f * h * w
    c = tr.config.in_channels
    with fake_mode():
        embeds = torch.zeros((1, L, tr.config.caption_channels), dtype=dtype, device=engine.device)
        mask = torch.ones((1, L), dtype=torch.long, device=engine.device)
        x = torch.zeros((1, n, c), dtype=torch.float32, device=engine.device)
    per_token = a.pipeline != "text-to-video"
    spatial, temporal = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    scale = (temporal / float(a.fps), spatial, spatial)

    def step(embeds, mask, x):
        guide = lv.Guidance(tr, embeds, mask, embeds if cfg else None, mask if cfg else None,
                            a.guidance_scale if cfg else 1.0, a.guidance_rescale)
        guide.set_positions(grid_positions(1, f, h, w, scale, device=x.device))
        t = torch.full((guide.batch,), 500.0, device=x.device)
        temb = guide.embed(t)
        if per_token:  # (B, N, 6, D): what per-token timesteps give, without their unique()
            temb = tuple(e.expand(e.shape[0], n, *e.shape[2:]).contiguous() for e in temb)
        return guide.step(x, temb, lv.euler_update, torch.tensor(-0.1, device=x.device))

    key = ("ltxv-step", f, h, w, cfg, a.pipeline, L, a.guidance_scale, a.guidance_rescale, a.fps)
    peak = scoped_peak(engine, key, lambda: transient_peak(step, embeds, mask, x, repeated=tr.transformer_blocks))
    b = 2 if cfg else 1
    d = tr.config.inner_dim
    item = torch.finfo(dtype).bits // 8
    static = (2 * n * c * 4  # latents in and out
              + 2 * n * d * 4  # RoPE cos/sin (fp32)
              + b * L * d * item * (1 + 2 * len(tr.transformer_blocks))  # context + cross-attention k/v
              + b * (n if per_token else 1) * 7 * d * item)  # timestep modulation
    return peak, static


def _decode_peak(engine, a, f: int, h: int, w: int) -> int:
    z = fake_latents(engine, f, h, w)

    def decode(z):
        return decode_latents(engine.vae, z, decode_timestep=a.decode_timestep,
                                 decode_noise_scale=a.decode_noise_scale, generator=None, device=z.device,
                                 model_dtype=engine.dtype, tiling=a.vae_tiling)
    key = ("ltxv-decode", f, h, w, repr(a.vae_tiling), a.decode_timestep, a.decode_noise_scale)
    return scoped_peak(engine, key, lambda: transient_peak(decode, z, repeated=repeated_modules(engine.vae.decoder)))


def _suggest(engine, a, budget: int) -> str:
    """The largest frame count at this size, and the largest size at this frame count (same
    aspect ratio), whose plans fit ``budget``."""
    rt, r = engine.vae.temporal_compression_ratio, engine.vae.spatial_compression_ratio

    def peak(**change) -> int:
        if "height" in change:
            scale = change["height"] / a.height
            h1, w1 = a.stage1_size
            change["stage1_size"] = (max(r, int(h1 * scale) // r * r), max(r, int(w1 * scale) // r * r))
        return max(p.total_bytes for p in _phases(engine, replace(a, **change)))

    frames = largest_fitting(range(1, a.num_frames, rt), lambda n: peak(num_frames=n), budget)
    sizes = []
    for k in range(1, 64):
        hh = a.height * k // 64 // r * r
        ww = a.width * k // 64 // r * r
        if hh >= r and ww >= r and (hh, ww) not in sizes:
            sizes.append((hh, ww))
    size = largest_fitting(sizes, lambda s: peak(height=s[0], width=s[1]), budget)
    parts = []
    if frames is not None:
        parts.append(f"num_frames={frames} at {a.height}x{a.width}")
    if size is not None:
        parts.append(f"{size[0]}x{size[1]} at num_frames={a.num_frames}")
    if not parts:
        return "nothing smaller fits either: free device memory, offload components or quantize the weights"
    return "largest that fits: " + ", or ".join(parts)
