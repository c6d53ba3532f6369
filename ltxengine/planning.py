"""``Engine.plan``: the memory plan of an LTX-Video generation, phase by phase, before it runs.

Phases follow ``Engine._generate``: text encoding, denoising (stage 1), latent upsampling and
refinement (two-stage), decoding. Transient memory comes from fake-tensor traces of the same code
the generation runs (``executor.plan.transient_peak``); weights from the modules on the device;
what the step executor keeps (static buffers, the activation arena / graph pool) from the step's
argument shapes and its page plan. See ltxengine/executor/plan.py for what is not counted.

Planning allocates nothing: every tensor of the video's size (latents, text embeddings, token
ids) is made in a fake-tensor mode (``executor.plan.fake_mode``), so a request far beyond the
machine's memory is planned, and refused, like any other.
"""

from __future__ import annotations

from typing import Any

import torch

from .executor.plan import (MemoryPlan, Phase, available_bytes, fake_mode, largest_fitting, module_bytes,
                            transient_peak)
from .models.transformer import grid_positions
from .pipelines import ltx_video as lv
from .pipelines.decode import decode_latents
from .pipelines.latents import upsample_latents


def plan_ltx_video(engine, a: dict[str, Any], *, suggest: bool = True) -> MemoryPlan:
    plan = measure(MemoryPlan(device=engine.device, phases=_phases(engine, a)), engine)
    if suggest and plan.fits is False:
        plan.suggestion = _suggest(engine, a, plan.budget_bytes)
    return plan


def measure(plan: MemoryPlan, engine) -> MemoryPlan:
    """Set what ``plan`` is compared with: the memory free now and the engine's weights already
    on the device (counted in the phases, so not to be found free a second time)."""
    plan.available_bytes = available_bytes(engine.device)
    modules = [engine.transformer, engine.vae, getattr(engine.text_encoder, "model", engine.text_encoder),
               *(getattr(engine, n, None) for n in ("latent_upsampler", "connectors", "audio_vae", "vocoder"))]
    plan.held_bytes = module_bytes(*(m for m in modules if isinstance(m, torch.nn.Module)), device=engine.device)
    return plan


def _weights(engine, *others) -> dict[str, int]:
    """Bytes per offloadable component, the rest (always resident) under "resident"."""
    parts = {name: module_bytes(engine._offloadable(name)) for name in engine.OFFLOADABLE}
    parts["resident"] = module_bytes(engine.transformer, engine.vae, *others) - parts["vae_encoder"]
    return parts


def _on_device(w: dict[str, int], offload, *using: str) -> int:
    """Weights on the device while components ``using`` are in use."""
    return sum(v for k, v in w.items() if k == "resident" or k not in offload or k in using)


def _phases(engine, a) -> list[Phase]:
    w = _weights(engine)
    offload = engine.residency.offload
    resident = _on_device(w, offload)
    encoding = ("vae_encoder",) if a["pipeline"] != "text-to-video" else ()
    r, rt = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    f = (a["num_frames"] - 1) // rt + 1
    cfg = a["guidance_scale"] > 1.0
    two = a["two_stage"]
    phases = [Phase("text", _on_device(w, offload, "text_encoder"), 0, _text_peak(engine, a, cfg))]
    kept = 0
    h1, w1 = a["stage1_size"]
    stages = [("denoise", h1, w1, cfg)]
    if two is not None:
        cfg2 = (a["guidance_scale"] if two.guidance_scale is None else two.guidance_scale) > 1.0
        stages.append(("refine", 2 * h1, 2 * w1, cfg2))
    for i, (name, h, wd, guided) in enumerate(stages):
        step, static = _step_peak(engine, a, f, h // r, wd // r, guided)
        if i == 1:  # the upsampler runs between the stages
            phases.append(Phase("upsample", _on_device(w, offload, "latent_upsampler"), kept,
                                _upsample_peak(engine, f, h1 // r, w1 // r)))
        # the executor keeps a bucket's static buffers (and, captured, its activations) from
        # its first step to the end of the process
        keeps = engine.executor is not None
        phases.append(Phase(name, _on_device(w, offload, *encoding), kept + (static if keeps else 0), step))
        if keeps:
            kept += static + (step if engine.executor.mode == "graphs" else 0)
    hd, wdec = (2 * h1, 2 * w1) if two is not None else (h1, w1)
    phases.append(Phase("decode", resident, kept, _decode_peak(engine, a, f, hd // r, wdec // r)))
    return phases


def _text_peak(engine, a, cfg: bool) -> int:
    te = engine.text_encoder
    with fake_mode():
        ids = torch.zeros((2 if cfg else 1, a["max_sequence_length"]), dtype=torch.long, device=engine.device)
    try:
        return transient_peak(lambda i: te.model(input_ids=i, attention_mask=torch.ones_like(i)), ids)
    except Exception:  # noqa: BLE001 - a text encoder the fake trace cannot follow: activations ~ 0 at <= 256 tokens
        return 0


def _step_peak(engine, a, f: int, h: int, w: int, cfg: bool) -> tuple[int, int]:
    """(transient bytes of one guided step incl. the per-generation constants it reads, bytes of
    the step's arguments the executor copies into static buffers)."""
    tr = engine.transformer
    dtype = engine.dtype
    L = a["max_sequence_length"]
    n = f * h * w
    c = tr.config.in_channels
    with fake_mode():
        embeds = torch.zeros((1, L, tr.config.caption_channels), dtype=dtype, device=engine.device)
        mask = torch.ones((1, L), dtype=torch.long, device=engine.device)
        x = torch.zeros((1, n, c), dtype=torch.float32, device=engine.device)
    per_token = a["pipeline"] != "text-to-video"
    spatial, temporal = engine.vae.spatial_compression_ratio, engine.vae.temporal_compression_ratio
    scale = (temporal / float(a["fps"]), spatial, spatial)

    def step(embeds, mask, x):
        guide = lv.Guidance(tr, embeds, mask, embeds if cfg else None, mask if cfg else None,
                            a["guidance_scale"] if cfg else 1.0, a["guidance_rescale"])
        guide.set_positions(grid_positions(1, f, h, w, scale, device=x.device))
        t = torch.full((guide.batch,), 500.0, device=x.device)
        temb = guide.embed(t)
        if per_token:  # (B, N, 6, D): what per-token timesteps give, without their unique()
            temb = tuple(e.expand(e.shape[0], n, *e.shape[2:]).contiguous() for e in temb)
        return guide.step(x, temb, lv.euler_update, torch.tensor(-0.1, device=x.device))

    peak = transient_peak(step, embeds, mask, x)
    b = 2 if cfg else 1
    d = tr.config.inner_dim
    item = torch.finfo(dtype).bits // 8
    static = (2 * n * c * 4  # latents in and out
              + 2 * n * d * 4  # RoPE cos/sin (fp32)
              + b * L * d * item * (1 + 2 * len(tr.transformer_blocks))  # context + cross-attention k/v
              + b * (n if per_token else 1) * 7 * d * item)  # timestep modulation
    return peak, static


def _latents(engine, f: int, h: int, w: int) -> torch.Tensor:
    """Fake (1, C, F', H', W') float32 latents."""
    with fake_mode():
        return torch.zeros((1, engine.transformer.config.in_channels, f, h, w), dtype=torch.float32,
                           device=engine.device)


def _upsample_peak(engine, f: int, h: int, w: int) -> int:
    z = _latents(engine, f, h, w)
    return transient_peak(lambda z: upsample_latents(engine.latent_upsampler, engine.vae, z), z)


def _decode_peak(engine, a, f: int, h: int, w: int) -> int:
    z = _latents(engine, f, h, w)

    def decode(z):
        return decode_latents(engine.vae, z, decode_timestep=a["decode_timestep"],
                                 decode_noise_scale=a["decode_noise_scale"], generator=None, device=z.device,
                                 model_dtype=engine.dtype, tiling=a["vae_tiling"])
    return transient_peak(decode, z)


def _suggest(engine, a, budget: int) -> str:
    """The largest frame count at this size, and the largest size at this frame count (same
    aspect ratio), whose plans fit ``budget``."""
    rt, r = engine.vae.temporal_compression_ratio, engine.vae.spatial_compression_ratio

    def peak(**change) -> int:
        b = dict(a, **change)
        if "height" in change:
            scale = b["height"] / a["height"]
            h1, w1 = a["stage1_size"]
            b["stage1_size"] = (max(r, int(h1 * scale) // r * r), max(r, int(w1 * scale) // r * r))
        return max(p.total_bytes for p in _phases(engine, b))

    frames = largest_fitting(range(1, a["num_frames"], rt), lambda n: peak(num_frames=n), budget)
    sizes = []
    for k in range(1, 64):
        hh = a["height"] * k // 64 // r * r
        ww = a["width"] * k // 64 // r * r
        if hh >= r and ww >= r and (hh, ww) not in sizes:
            sizes.append((hh, ww))
    size = largest_fitting(sizes, lambda s: peak(height=s[0], width=s[1]), budget)
    parts = []
    if frames is not None:
        parts.append(f"num_frames={frames} at {a['height']}x{a['width']}")
    if size is not None:
        parts.append(f"{size[0]}x{size[1]} at num_frames={a['num_frames']}")
    if not parts:
        return "nothing smaller fits either: free device memory, offload components or quantize the weights"
    return "largest that fits: " + ", or ".join(parts)


# -- LTX-2 ---------------------------------------------------------------------------------------------

def plan_ltx2(engine, a: dict[str, Any]) -> MemoryPlan:
    """The same phases for an LTX-2 generation (video + audio), per ``ltx2_stages.run_generation``."""
    plan = measure(MemoryPlan(device=engine.device, phases=_ltx2_phases(engine, a)), engine)
    if plan.fits is False:
        plan.suggestion = ("lower num_frames or the size, offload the text encoder "
                           "(offload=('text_encoder',)), or quantize (quantization='fp8-scaled-mm')")
    return plan


def _ltx2_phases(engine, a) -> list[Phase]:
    from .pipelines.ltx2 import audio_frames
    w = _weights(engine, engine.connectors, engine.audio_vae, engine.vocoder)
    offload = engine.residency.offload
    resident = _on_device(w, offload)
    encoding = ("vae_encoder",) if a.get("images") or a.get("conditions") or a.get("image") is not None else ()
    two_stage = a["pipeline"] != "one-stage"
    h, wd = a["height"], a["width"]
    h1, w1 = (h // 2, wd // 2) if two_stage else (h, wd)
    f = (a["num_frames"] - 1) // 8 + 1
    t_audio = audio_frames(a["num_frames"], float(a["fps"]), engine.audio_vae)
    vp, ap = a["video_guidance"], a["audio_guidance"]
    phases = [Phase("text", _on_device(w, offload, "text_encoder"), 0, 0)]
    stages = [("denoise", h1, w1, vp, ap)]
    if two_stage:
        two = a["two_stage"]
        stages.append(("refine", h, wd, two.video_guidance, two.audio_guidance))
    kept = 0
    keeps = engine.executor is not None
    for i, (name, hh, ww, gv, ga) in enumerate(stages):
        step, static = _ltx2_step_peak(engine, a, f, hh // 32, ww // 32, t_audio, gv, ga)
        if i == 1:
            phases.append(Phase("upsample", _on_device(w, offload, "latent_upsampler"), kept,
                                _upsample_peak(engine, f, h1 // 32, w1 // 32)))
        phases.append(Phase(name, _on_device(w, offload, *encoding), kept + (static if keeps else 0), step))
        if keeps:
            kept += static + (step if engine.executor.mode == "graphs" else 0)
    phases.append(Phase("decode", resident, kept, _ltx2_decode_peak(engine, a, f, h // 32, wd // 32, t_audio)))
    return phases


def _ltx2_step_peak(engine, a, f, h, w, t_audio, vp, ap) -> tuple[int, int]:
    """One Denoiser call (all guidance passes of a step) at the stage's size, traced on fake
    tensors (the text contexts too: mask None is the all-valid mask, no data-dependent check)."""
    from .pipelines.ltx2 import Denoiser
    tr, dev, dtype = engine.transformer, engine.device, engine.dtype
    cfg = tr.config
    L = a["max_sequence_length"]
    need_neg = vp.uncond or ap.uncond
    nv, na = f * h * w, t_audio
    with fake_mode():
        text = torch.zeros((1, L, cfg.caption_channels), dtype=dtype, device=dev)
        ctx = tr.prepare_context(text, text, None)
        xv = torch.zeros((1, nv, cfg.in_channels), device=dev)
        xa = torch.zeros((1, na, cfg.audio_in_channels), device=dev)
    # Every token is denoised (masks of ones): the Denoiser reads only that, from real tensors
    # (it asks the values, which fake ones do not have); one element broadcasts like (1, N, 1).
    ones = torch.ones((1, 1, 1), device=dev)
    den = Denoiser(tr, ctx, ctx if need_neg else None, None, ones, ones, vp, ap, max_batch=a["guidance_batch"])

    def step(xv, xa):
        den.rope = tr.rope(tr.video_positions(1, f, h, w, float(a["fps"]), device=dev),
                           tr.audio_positions(1, t_audio, device=dev))
        return den(xv, xa, 0.5, 0)

    peak = transient_peak(step, xv, xa)
    rows = len(den.passes)
    item = torch.finfo(dtype).bits // 8
    static = (2 * (nv * cfg.in_channels + na * cfg.audio_in_channels) * 4 * rows  # latents in, x0 out
              + 2 * 4 * (nv * tr.config.inner_dim + na * tr.config.audio_inner_dim)  # RoPE tables (fp32)
              + rows * L * (tr.config.inner_dim + tr.config.audio_inner_dim) * item)  # text contexts
    return peak, static


def _ltx2_decode_peak(engine, a, f, h, w, t_audio) -> int:
    from .ltx2_stages import decode_audio, decode_video
    z = _latents(engine, f, h, w)
    with fake_mode():
        tokens = torch.zeros((1, t_audio, engine.transformer.config.audio_in_channels), device=engine.device)
    video = transient_peak(lambda z: decode_video(engine, a, z, None), z)
    try:
        audio = transient_peak(lambda t: torch.as_tensor(decode_audio(engine, t)), tokens)
    except Exception:  # noqa: BLE001 - decode_audio ends on the host (numpy): trace up to there
        audio = 0
    return max(video, audio)
