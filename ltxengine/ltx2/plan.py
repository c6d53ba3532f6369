"""``LTX2Engine.plan``: the memory plan of an LTX-2 generation (video + audio), phase by phase,
before it runs; the phases follow the recipes (``ltx2/recipes/``). How phases are measured (fake
tensors, nothing allocated) is as for LTX-Video: see ``ltx_video/plan.py``."""

from __future__ import annotations

import logging

import torch

from ..executor.plan import MemoryPlan, Phase, fake_mode, transient_peak
from ..models.ltx2_audio_only import LTX2AudioTransformer
from ..planning import (component_bytes, fake_latents, measure, memo_peak, on_device, on_fake_weights, repeated_modules,
                        scoped_peak, upsample_peak)
from .conditions import appended_tokens
from .denoise import NO_GUIDANCE, Denoiser, keyframe_marker
from .recipes.ic_lora import attention_masked, reference_tokens
from .recipes.text_to_audio import audio_transformer
from .recipes.two_stage import stage1_size
from .stages import decode_video, decode_waveform

logger = logging.getLogger(__name__)


def plan_ltx2(engine, a) -> MemoryPlan:
    """The same phases for an LTX-2 generation (video + audio), per the recipes (``ltx2/recipes/``)."""
    if a.recipe.audio_only:  # text-to-audio: its own phases, on the audio stream alone
        plan = measure(MemoryPlan(device=engine.device, phases=_audio_only_phases(engine, a)), engine)
    else:
        plan = measure(MemoryPlan(device=engine.device, phases=_phases(engine, a)), engine)
    if plan.fits is False:
        plan.suggestion = ("lower num_frames or the size, offload the text encoder "
                           "(offload=('text_encoder',)), or quantize (quantization='fp8-scaled-mm')")
    return plan


def _audio_only_phases(engine, a) -> list[Phase]:
    """text-to-audio's phases: text, one audio stage, the audio decode; the weights counted are the
    ones the engine holds (no video stream, no video VAE)."""
    w = component_bytes(engine, engine.connectors, engine.audio_vae, engine.vocoder)
    offload = engine.residency.offload
    tr, dev, dtype = audio_transformer(engine), engine.device, engine.dtype
    cfg, na, L = tr.config, a.audio_frames, a.max_sequence_length
    with fake_mode():
        ctx = tr.prepare_context(None, torch.zeros((1, L, cfg.text_widths[1]), dtype=dtype, device=dev), None)
        xv = torch.zeros((1, 0, cfg.in_channels), device=dev)
        xa = torch.zeros((1, na, cfg.audio_in_channels), device=dev)
        tokens = torch.zeros((1, na, cfg.audio_in_channels), device=dev)
    ones = torch.ones((1, 1, 1), device=dev)
    ap = a.audio_guidance
    den = Denoiser(tr, ctx, ctx if ap.uncond else None, None, ones, ones, NO_GUIDANCE, ap, max_batch=a.guidance_batch)

    def step(xv, xa):
        den.rope = tr.rope(None, tr.audio_positions(1, na, device=dev))
        return den(xv, xa, 0.5, 0)

    peak = transient_peak(step, xv, xa)
    static = after = 0
    if engine.executor is not None:  # the step's static buffers: latents in, x0 out, RoPE, text contexts
        rows = len(den.passes)
        static = (2 * na * cfg.audio_in_channels * 4 * rows + 2 * 4 * na * cfg.audio_inner_dim
                  + rows * L * cfg.audio_inner_dim * (torch.finfo(dtype).bits // 8))
        after = static + (peak if engine.executor.mode == "graphs" else 0)  # a captured graph keeps its pool
    decode = transient_peak(lambda t: decode_waveform(engine, t), tokens)  # up to the host copy
    text = text_peak(engine, a, ap.uncond, tr)  # encode_audio_text's batch: [negative, positive] when guided
    return [Phase("text", on_device(w, offload, "text_encoder"), 0, text),
            Phase("denoise", on_device(w, offload), static, peak),
            Phase("decode", on_device(w, offload), after, decode)]


def _phases(engine, a) -> list[Phase]:
    w = component_bytes(engine, engine.connectors, engine.audio_vae, engine.vocoder)
    offload = engine.residency.offload
    resident = on_device(w, offload)
    encoding = ("vae_encoder",) if a.conditions or a.video is not None else ()  # image: conditions[0]; retake's clip
    two_stage = a.recipe.stages == 2
    h, wd = a.height, a.width
    h1, w1 = stage1_size(engine, h, wd) if two_stage else (h, wd)
    f = (a.num_frames - 1) // 8 + 1
    t_audio = a.audio_frames
    vp, ap = a.video_guidance, a.audio_guidance
    stages = [("denoise", h1, w1, vp, ap)]
    if two_stage:
        two = a.two_stage
        stages.append(("refine", h, wd, two.video_guidance, two.audio_guidance))
    # stages.encode_text: the negative prompt is encoded when any stage's guidance reads it
    need_neg = any(gv.uncond or ga.uncond for *_, gv, ga in stages)
    phases = [Phase("text", on_device(w, offload, "text_encoder"), 0,
                    text_peak(engine, a, need_neg, engine.transformer))]
    kept = 0
    keeps = engine.executor is not None
    for i, (name, hh, ww, gv, ga) in enumerate(stages):
        # IC-LoRA's reference tokens join stage 1, with a dense attention bias when masked
        refs = reference_tokens(a, hh, ww) if name == "denoise" else 0
        step, static = _step_peak(engine, a, f, hh // 32, ww // 32, t_audio, gv, ga,
                                  appended=appended_tokens(a.images, a.recipe.guiding, hh, ww) + refs,
                                  masked=bool(refs) and attention_masked(a))
        if i == 1:
            phases.append(Phase("upsample", on_device(w, offload, "latent_upsampler"), kept,
                                upsample_peak(engine, f, h1 // 32, w1 // 32)))
        phases.append(Phase(name, on_device(w, offload, *encoding), kept + (static if keeps else 0), step))
        if keeps:
            kept += static + (step if engine.executor.mode == "graphs" else 0)
    if a.output_type != "latent":  # latent out: nothing decoded
        phases.append(Phase("decode", resident, kept, _decode_peak(engine, a, f, h // 32, wd // 32, t_audio)))
    return phases


def _step_peak(engine, a, f, h, w, t_audio, vp, ap, appended: int = 0, masked: bool = False) -> tuple[int, int]:
    """One Denoiser call (all guidance passes of a step) at the stage's size, traced on fake
    tensors (the text contexts too: mask None is the all-valid mask, no data-dependent check);
    ``appended``: the condition tokens appended to the video's (conditions.appended_tokens);
    ``masked``: the video self-attention gets a dense (Nv, Nv) bias (IC-LoRA's attention strength)."""
    tr, dev, dtype = engine.transformer, engine.device, engine.dtype
    cfg = tr.config
    L = a.max_sequence_length
    need_neg = vp.uncond or ap.uncond
    nv, na = f * h * w + appended, t_audio
    with fake_mode():
        # the connectors' outputs at the widths the DiT reads (caption width for 2.0, stream widths for 2.3+)
        ctx = tr.prepare_context(*(torch.zeros((1, L, w), dtype=dtype, device=dev) for w in cfg.text_widths), None)
        xv = torch.zeros((1, nv, cfg.in_channels), device=dev)
        xa = torch.zeros((1, na, cfg.audio_in_channels), device=dev)
    # Every token is denoised (masks of ones): the Denoiser reads only that, from real tensors
    # (it asks the values, which fake ones do not have); one element broadcasts like (1, N, 1).
    ones = torch.ones((1, 1, 1), device=dev)
    den = Denoiser(tr, ctx, ctx if need_neg else None, None, ones, ones, vp, ap, max_batch=a.guidance_batch,
                   keyframes=keyframe_marker(cfg, f, h, w, appended, device=dev), cross_timestep=a.cross_timestep)

    def step(xv, xa):
        vpos = tr.video_positions(1, f, h, w, float(a.fps), device=dev)
        vpos = torch.cat([vpos, vpos[:, :, :1].expand(-1, -1, appended, -1)], dim=2) if appended else vpos
        den.rope = tr.rope(vpos, tr.audio_positions(1, t_audio, device=dev))
        if masked:  # made in the trace, so the peak counts it
            den.attention_bias = torch.zeros((1, 1, nv, nv), dtype=dtype, device=dev)
        return den(xv, xa, 0.5, 0)

    key = ("ltx2-step", f, h, w, t_audio, repr(vp), repr(ap), appended, masked, L, a.guidance_batch,
           a.cross_timestep, a.fps)
    peak = scoped_peak(engine, key, lambda: transient_peak(step, xv, xa, repeated=tr.transformer_blocks))
    rows = len(den.passes)
    item = torch.finfo(dtype).bits // 8
    static = (2 * (nv * cfg.in_channels + na * cfg.audio_in_channels) * 4 * rows  # latents in, x0 out
              + 2 * 4 * (nv * tr.config.inner_dim + na * tr.config.audio_inner_dim)  # RoPE tables (fp32)
              + rows * L * (tr.config.inner_dim + tr.config.audio_inner_dim) * item)  # text contexts
    return peak, static


def _decode_peak(engine, a, f, h, w, t_audio) -> int:
    def peak() -> int:
        z = fake_latents(engine, f, h, w)
        with fake_mode():
            tokens = torch.zeros((1, t_audio, engine.transformer.config.audio_in_channels), device=engine.device)
        video = transient_peak(lambda z: decode_video(engine, a, z, None), z,
                               repeated=repeated_modules(engine.vae.decoder))
        audio = transient_peak(lambda t: decode_waveform(engine, t), tokens, repeated=repeated_modules(engine.vocoder))
        return max(video, audio)
    key = ("ltx2-decode", f, h, w, t_audio, repr(a.vae_tiling), a.decoder, a.decode_timestep, a.decode_noise_scale)
    return scoped_peak(engine, key, peak)


def text_peak(engine, a, need_negative: bool, transformer) -> int:
    """The text phase's activations (stages.encode_text; text_to_audio.encode_audio_text with the
    audio-only ``transformer``): Gemma with every hidden state kept, the feature extractor, both
    connectors and ``transformer.prepare_context``, [negative, positive] in one batch when guided,
    max_sequence_length tokens. Traced on fake tensors once per engine and (batch, tokens): it
    does not depend on the video. The weights are the phase's other term (text_encoder_on_device:
    whole, or streamed layers' two slots); the trace counts none, so both hold either way."""
    te = engine.text_encoder
    batch, tokens = (2 if need_negative else 1), a.max_sequence_length
    audio_only = isinstance(transformer, LTX2AudioTransformer)  # prepares the audio context alone

    def peak() -> int:
        try:
            return _trace_text(engine, te, transformer, batch, tokens, audio_only)
        except Exception as e:  # noqa: BLE001 - an encoder the fake trace cannot follow
            # then only the hidden states and the features made of them count (text_floor): not
            # Gemma's attention / MLP intermediates, the connectors' activations or the contexts
            logger.warning("memory plan: the text encoder's fake trace failed (%s: %s); counting its kept "
                           "hidden states only", type(e).__name__, e)
            return text_floor(te, batch, tokens)
    return memo_peak(engine, ("ltx2-text", id(te.model), batch, tokens, audio_only), peak)


def _trace_text(engine, te, tr, batch: int, tokens: int, audio_only: bool) -> int:
    backbone = getattr(te.model, "model", te.model)  # what GemmaTextEncoder._run calls
    dev = engine.device
    with fake_mode():
        ids = torch.zeros((batch, tokens), dtype=torch.long, device=dev)
    run = on_fake_weights(backbone, ids)  # offloaded, Gemma is in host memory now
    dtype = next(tr.parameters()).dtype
    conn = te.connectors

    def connectors(states, mask):  # TextConnectors.forward less its input check (it reads mask values)
        valid = mask.bool()
        video_in, audio_in = conn._features(states, valid)
        return (conn.video_connector(video_in, valid), conn.audio_connector(audio_in, valid),
                torch.ones(valid.shape, dtype=torch.long, device=valid.device))

    def encode(ids):  # GemmaTextEncoder.encode after tokenizing: the hidden states live through the connectors
        mask = torch.ones_like(ids)  # fake: no value is read, so every token counts as valid
        kwargs = dict(input_ids=ids, attention_mask=mask, output_hidden_states=True, use_cache=False)
        states = list(run(**kwargs).hidden_states)
        return connectors(states, mask)

    def encode_text(ids):  # stages.encode_text / encode_audio_text from the encoder's outputs on
        v, au, _ = encode(ids)
        v, au = v.to(dtype), au.to(dtype)
        if audio_only:
            return [tr.prepare_context(None, au[i:i + 1], None) for i in range(batch)]
        return [tr.prepare_context(v[i:i + 1], au[i:i + 1], None) for i in range(batch)]
    # Gemma's decoder layers are traced in full, once per (batch, tokens): transformers hooks each
    # to collect hidden_states, and a hooked module is never replayed (executor/replay.py); listed,
    # their signature would read Gemma 4's config, whose per-layer attributes raise when read whole
    return transient_peak(encode_text, ids, repeated=repeated_modules(conn))


def text_floor(te, batch: int, tokens: int) -> int:
    """Bytes the text phase holds at least: every hidden state (num_hidden_states of (B, T, D))
    and the features the connectors' extractor makes of them, all alive at once."""
    item = torch.finfo(next(te.model.parameters()).dtype).bits // 8
    out = torch.finfo(te.connectors._weight.dtype).bits // 8
    return batch * tokens * te.hidden_size * te.num_hidden_states * (item + out)
