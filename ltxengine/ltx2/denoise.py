"""LTX-2 sampling pieces: sigma schedules, multimodal guidance on x0, the latent states of a
stage (noise, image and keyframe conditioning, re-noising), decoding of video and audio.

Follows ltx-pipelines 1.0.0 (Lightricks' reference) with two deliberate choices, both so that the
same integer seed gives diffusers' LTX2Pipeline video:
* fresh noise is drawn in diffusers' order: video (1, C, F, H, W), then audio (1, C, T, F)
  unpacked, then any keyframe tokens; ltx-pipelines draws packed tokens (1, N, C). Re-noising of
  given latents (stage 2) draws packed tokens, as both references do.
* latents stay float32 between steps (ltx-pipelines keeps its states in bf16).
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field, replace
from typing import Mapping, Sequence

import torch

from ..models.ltx2_transformer import Skip, TextContext, first_frame_keyframes
from ..parallel.guidance import gather_rows, rows_of
from .samplers import LatentState

__all__ = ["DISTILLED_SIGMAS", "STAGE2_SIGMAS", "DEFAULT_NEGATIVE_PROMPT", "GuidanceParams", "VIDEO_GUIDANCE",
           "AUDIO_GUIDANCE", "NO_GUIDANCE", "ltx2_sigmas", "guide", "Denoiser", "KeyframeTokens", "audio_frames"]

# ltx-pipelines utils/constants.py: the distilled model's schedule and stage 2's tail of it.
DISTILLED_SIGMAS = (1.0, 0.99375, 0.9875, 0.98125, 0.975, 0.909375, 0.725, 0.421875, 0.0)
STAGE2_SIGMAS = (0.909375, 0.725, 0.421875, 0.0)

DEFAULT_NEGATIVE_PROMPT = (
    "blurry, out of focus, overexposed, underexposed, low contrast, washed out colors, excessive noise, "
    "grainy texture, poor lighting, flickering, motion blur, distorted proportions, unnatural skin tones, "
    "deformed facial features, asymmetrical face, missing facial features, extra limbs, disfigured hands, "
    "wrong hand count, artifacts around text, inconsistent perspective, camera shake, incorrect depth of "
    "field, background too sharp, background clutter, distracting reflections, harsh shadows, inconsistent "
    "lighting direction, color banding, cartoonish rendering, 3D CGI look, unrealistic materials, uncanny "
    "valley effect, incorrect ethnicity, wrong gender, exaggerated expressions, wrong gaze direction, "
    "mismatched lip sync, silent or muted audio, distorted voice, robotic voice, echo, background noise, "
    "off-sync audio, incorrect dialogue, added dialogue, repetitive speech, jittery movement, awkward "
    "pauses, incorrect timing, unnatural transitions, inconsistent framing, tilted camera, flat lighting, "
    "inconsistent tone, cinematic oversaturation, stylized filters, or AI artifacts."
)


def ltx2_sigmas(steps: int, tokens: int = 4096, base_shift: float = 0.95, max_shift: float = 2.05,
                terminal: float | None = 0.1) -> torch.Tensor:
    """ltx-core's LTX2Scheduler: linspace(1, 0, steps + 1), shifted by mu = the line through
    (1024, base_shift) and (4096, max_shift) at ``tokens``, non-zero values stretched to end at
    ``terminal``. ltx-pipelines always uses 4096 tokens; diffusers the video's token count."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"num_inference_steps must be an int >= 1, got {steps!r}")
    if steps == 1 and terminal is not None:
        # the stretch divides by 1 - sigma_last = 0 (ltx-core then returns [0.1, 0]: one step from 0.1)
        raise ValueError("num_inference_steps must be >= 2 for the stretched LTX-2 schedule, got 1 (pass sigmas= "
                         "for a custom schedule)")
    mu = base_shift + (max_shift - base_shift) * (tokens - 1024) / (4096 - 1024)
    s = torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)[:-1]
    s = math.exp(mu) / (math.exp(mu) + (1 / s - 1))
    if terminal is not None:
        one_minus = 1.0 - s
        s = 1.0 - one_minus / (one_minus[-1] / (1.0 - terminal))
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)]).to(torch.float32)


# -- guidance ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class GuidanceParams:
    """One modality's multimodal guidance (ltx-core MultiModalGuiderParams), on x0 predictions:
    x = c + (cfg - 1)(c - u_text) + stg (c - u_stg) + (modality - 1)(c - u_isolated), then
    x <- x (rescale std(c) / std(x) + 1 - rescale). ``skip_step`` k reuses the previous x0 on
    steps where step % (k + 1) != 0."""

    cfg: float = 1.0
    stg: float = 0.0
    stg_blocks: tuple[int, ...] = ()
    rescale: float = 0.0
    modality: float = 1.0
    skip_step: int = 0

    def __post_init__(self):
        try:
            object.__setattr__(self, "stg_blocks", tuple(self.stg_blocks))
        except TypeError:  # not a sequence: kept as given, so check() names it
            pass

    def check(self, name: str, num_layers: int, names: Mapping[str, str] | None = None) -> "GuidanceParams":
        """Raise ValueError naming the field (``name.field``, or ``names[field]`` where the caller
        spelled it otherwise, e.g. diffusers' ``guidance_scale``) unless every value is usable."""
        def label(k: str) -> str:
            return names[k] if names and k in names else f"{name}.{k}"
        for k in ("cfg", "stg", "rescale", "modality"):
            v = getattr(self, k)
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{label(k)} must be a finite number >= 0, got {v!r}")
        if self.rescale > 1:
            raise ValueError(f"{label('rescale')} must be in [0, 1], got {self.rescale!r}")
        if isinstance(self.skip_step, bool) or not isinstance(self.skip_step, int) or self.skip_step < 0:
            raise ValueError(f"{label('skip_step')} must be an int >= 0, got {self.skip_step!r}")
        blocks = self.stg_blocks
        if not isinstance(blocks, tuple) or any(isinstance(b, bool) or not isinstance(b, numbers.Integral)
                                                or not 0 <= b < num_layers for b in blocks):
            shown = repr(list(blocks)) if isinstance(blocks, tuple) else f"{blocks!r}, not a sequence of ints"
            raise ValueError(f"{label('stg_blocks')} must be block indices in [0, {num_layers}), got {shown}")
        if self.stg != 0 and not blocks:
            blocks_name = names["stg_blocks"] if names and "stg_blocks" in names else "stg_blocks"
            raise ValueError(f"{label('stg')} = {self.stg} needs {blocks_name} (the blocks whose self-attention "
                             f"is skipped)")
        # plain Python numbers (a numpy scalar times a tensor would not stay a tensor)
        return replace(self, cfg=float(self.cfg), stg=float(self.stg), rescale=float(self.rescale),
                       modality=float(self.modality), stg_blocks=tuple(int(b) for b in blocks))

    @property
    def uncond(self) -> bool:
        return not math.isclose(self.cfg, 1.0)

    @property
    def perturbed(self) -> bool:
        return not math.isclose(self.stg, 0.0)

    @property
    def isolated(self) -> bool:
        return not math.isclose(self.modality, 1.0)

    def skips(self, step: int) -> bool:
        return self.skip_step > 0 and step % (self.skip_step + 1) != 0


# ltx-pipelines LTX_2_PARAMS (LTX-2.0 dev model, stage 1)
VIDEO_GUIDANCE = GuidanceParams(cfg=3.0, stg=1.0, stg_blocks=(29,), rescale=0.7, modality=3.0)
AUDIO_GUIDANCE = GuidanceParams(cfg=7.0, stg=1.0, stg_blocks=(29,), rescale=0.7, modality=3.0)
NO_GUIDANCE = GuidanceParams()


def guidance_passes(video: GuidanceParams, audio: GuidanceParams) -> int:
    """The transformer passes a step of these guidances runs (Denoiser's rows: cond, and uncond /
    perturbed / isolated when either modality needs them), known before any Denoiser is built."""
    return 1 + sum(bool(getattr(video, k) or getattr(audio, k)) for k in ("uncond", "perturbed", "isolated"))


def guide(p: GuidanceParams, cond: torch.Tensor, uncond=None, perturbed=None, isolated=None) -> torch.Tensor:
    """The guided x0 of one modality; passes a term needs may not be None."""
    pred = cond
    if p.uncond:
        pred = pred + (p.cfg - 1) * (cond - uncond)
    if p.perturbed:
        pred = pred + p.stg * (cond - perturbed)
    if p.isolated:
        pred = pred + (p.modality - 1) * (cond - isolated)
    if p.rescale != 0:
        factor = cond.std() / pred.std()
        pred = pred * (p.rescale * factor + (1 - p.rescale))
    return pred


def _cat_context(parts: Sequence[TextContext]) -> TextContext:
    bias = None
    if any(p.bias is not None for p in parts):
        ref = next(p.bias for p in parts if p.bias is not None)
        bias = torch.cat([p.bias if p.bias is not None else ref.new_zeros((p.video.shape[0],) + ref.shape[1:])
                          for p in parts])
    return TextContext(torch.cat([p.video for p in parts]), torch.cat([p.audio for p in parts]), bias)


@dataclass
class Denoiser:
    """The transformer as an x0 predictor with multimodal guidance: one call evaluates every
    pass the two modalities' guidance needs (conditional, negative prompt, STG, isolated) as rows
    of one batch, at most ``max_batch`` rows per transformer call (None: all at once).

    Per-token timesteps are sigma x denoise mask and x0 = x - v * timestep (ltx-core's X0Model),
    so fully conditioned tokens predict themselves."""

    transformer: object
    positive: TextContext
    negative: TextContext | None
    rope: object
    video_mask: torch.Tensor  # (1, Nv, 1)
    audio_mask: torch.Tensor  # (1, Na, 1)
    video_params: GuidanceParams = NO_GUIDANCE
    audio_params: GuidanceParams = NO_GUIDANCE
    max_batch: int | None = None
    legacy_cross_timestep: bool = False
    # the audio<->video tables' convention (CROSS_TIMESTEPS; None: "own" if legacy, else "sigma")
    cross_timestep: str | None = None
    executor: object = None  # a GraphExecutor running each batch's model call (None: called directly)
    graph_variant: tuple = ()  # what the model computes beyond its weights (LoraSet.graph_variant)
    keyframes: torch.Tensor | None = None  # (1, Nv) marker for LTX-2.5's keyframe embedding (keyframe_marker)
    # (1, 1, Nv, Nv) additive bias on the video self-attention (IC-LoRA's attention strength); None: unmasked
    attention_bias: torch.Tensor | None = None
    # a guidance group (parallel/guidance.py): this rank runs its share of the passes, the rest are
    # gathered; None: every pass here
    group: object = None
    _last: tuple | None = field(default=None, repr=False)
    _rows: list | None = field(default=None, repr=False)

    def __post_init__(self):
        v, a = self.video_params, self.audio_params
        rows = [("cond", self.positive, Skip())]
        if v.uncond or a.uncond:
            if self.negative is None:
                raise ValueError("guidance: cfg != 1 needs a negative prompt context")
            rows.append(("uncond", self.negative, Skip()))
        if v.perturbed or a.perturbed:
            rows.append(("perturbed", self.positive, Skip(video_self_attn=v.stg_blocks if v.perturbed else (),
                                                          audio_self_attn=a.stg_blocks if a.perturbed else ())))
        if v.isolated or a.isolated:
            rows.append(("isolated", self.positive, Skip.isolate()))
        self._rows = rows
        self._dtype = next(self.transformer.parameters()).dtype
        self._batches = []
        mine = [rows[i] for i in rows_of(self.group, len(rows))]
        n = self.max_batch or len(rows)
        for i in range(0, len(mine), n):
            chunk = mine[i:i + n]
            self._batches.append(([r[0] for r in chunk], _cat_context([r[1] for r in chunk]), [r[2] for r in chunk]))
        self._full_video = bool((self.video_mask == 1).all())
        self._full_audio = bool((self.audio_mask == 1).all())

    @property
    def passes(self) -> list[str]:
        return [r[0] for r in self._rows]

    def _run(self, xv, xa, sigma: float):
        dev = xv.device
        outs = {}
        for names, ctx, skips in self._batches:
            b = len(names)
            s = torch.full((b,), sigma, dtype=torch.float32, device=dev)
            tv = s if self._full_video else (s[:, None] * self.video_mask[..., 0]).expand(b, -1)
            ta = s if self._full_audio else (s[:, None] * self.audio_mask[..., 0]).expand(b, -1)
            # timestep embeddings outside the captured step (they hold a data-dependent unique())
            temb = self.transformer.embed_timesteps(s, s, tv, ta, b, self._dtype, self.legacy_cross_timestep,
                                                   self.cross_timestep)
            tv_tok = tv[:1, :, None] if tv.ndim == 2 else s[:1]
            ta_tok = ta[:1, :, None] if ta.ndim == 2 else s[:1]
            args = (xv, xa, s, tv, ta, temb, ctx, self.rope, tuple(skips), self.legacy_cross_timestep, tv_tok, ta_tok,
                    self.keyframes)
            key = ("ltx2:x0", self.graph_variant)
            if self.attention_bias is not None:  # only then: the unmasked call keeps its arguments and graphs
                args, key = args + (self.attention_bias,), key + ("masked",)
            if self.executor is None:
                x0v, x0a = _x0_step(self.transformer, *args)
            else:
                x0v, x0a = self.executor.run(key,
                                             functools.partial(_x0_step, self.transformer), *args)
                x0v, x0a = x0v.clone(), x0a.clone()  # static outputs: the next replay rewrites them
            for j, name in enumerate(names):
                outs[name] = (x0v[j:j + 1], x0a[j:j + 1])
        return outs if self.group is None else self._gather(outs, xv, xa)

    def _gather(self, outs: dict, xv: torch.Tensor, xa: torch.Tensor) -> dict:
        """Every pass's (x0v, x0a) from this rank's share (``outs``) and the guidance group's."""
        names = self.passes
        local = [names[i] for i in rows_of(self.group, len(names))]
        parts = [torch.cat([outs[k][m] for k in local]) if local else None for m in (0, 1)]
        x0v, x0a = gather_rows(parts, (tuple(xv.shape[1:]), tuple(xa.shape[1:])), len(names), self.group,
                               xv.device)
        return {name: (x0v[j:j + 1], x0a[j:j + 1]) for j, name in enumerate(names)}

    def __call__(self, xv: torch.Tensor, xa: torch.Tensor, sigma: float, step: int):
        v, a = self.video_params, self.audio_params
        if v.skips(step) and a.skips(step) and self._last is not None:
            return self._last
        outs = self._run(xv, xa, sigma)

        def pick(i):
            return [outs[k][i] if k in outs else None for k in ("cond", "uncond", "perturbed", "isolated")]
        x0v = self._last[0] if v.skips(step) and self._last is not None else guide(v, *pick(0))
        x0a = self._last[1] if a.skips(step) and self._last is not None else guide(a, *pick(1))
        self._last = (x0v, x0a)
        return x0v, x0a


def _x0_step(transformer, xv, xa, s, tv, ta, temb, ctx, rope, skips, legacy: bool, tv_tok, ta_tok, keyframes=None,
             attention_bias=None):
    """One batch of guidance passes: x0 = x - v * timestep per row (rows = passes), float32."""
    b = s.shape[0]
    dtype = ctx.video.dtype
    extra = {} if keyframes is None else {"keyframes": keyframes}
    if attention_bias is not None:
        extra["video_attention_bias"] = attention_bias
    vv, va = transformer(xv.expand(b, -1, -1).to(dtype), xa.expand(b, -1, -1).to(dtype), video_sigma=s,
                         audio_sigma=s, video_timesteps=tv, audio_timesteps=ta, context=ctx, rope=rope,
                         skip=list(skips), legacy_cross_timestep=legacy, temb=temb, **extra)
    return xv - vv.float() * tv_tok, xa - va.float() * ta_tok


# -- latent states ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeyframeTokens:
    """An encoded keyframe appended to the video tokens: tokens (1, K, C) normalized latents,
    positions (1, 3, K, 2) patch bounds in seconds, strength in [0, 1]."""

    tokens: torch.Tensor
    positions: torch.Tensor
    strength: float
    # the noisy slot starts at zeros, not at the tokens (ltx-core since 2026-06: re-noising at
    # noise_scale < 1 then keeps clean x (1 - mask) + noise x mask x noise_scale of a partial-strength
    # keyframe); False: ltx-core 1.0.0's noise x mask x noise_scale + tokens x (1 - mask x noise_scale)
    empty_slot: bool = False


def keyframe_marker(config, frames: int, height: int, width: int, appended: int, device=None):
    """The (1, Nv) marker LTX-2.5's keyframe embedding reads (None for models without it): the first
    latent frame's tokens, as Lightricks' reference marks every video state (ltx-core
    ``VideoLatentTools._first_frame_keyframes_mask``); the ``appended`` tokens after them are given
    content (keyframe images, guiding latents, IC-LoRA references), which the reference never marks
    (``extend_keyframes_mask(marked=False)``: only generated keyframe slots are marked, and the
    engine has none). diffusers' pipelines mark none. ``config``: the transformer's."""
    if not config.use_keyframes_abs_pos_embedding:
        return None
    first = first_frame_keyframes(1, frames, height, width, device=device)
    return torch.cat([first, torch.zeros(1, appended, device=device)], dim=1)


def keyframe_positions(transformer, frames: int, height: int, width: int, frame_index: int, fps: float,
                       device, *, narrow: bool = False) -> torch.Tensor:
    """ltx-core VideoConditionByKeyframeIndex: the keyframe latent's own patch bounds in pixels,
    with the causal first-frame fix only at frame_index 0, shifted by frame_index pixel frames,
    time in seconds. ``narrow``: a single-pixel-frame keyframe spans [t, t + 1) instead of the
    VAE-scaled 8 frames (ltx-core since 2026-04 and diffusers' LTX2ConditionPipeline; ltx-core
    1.0.0 does not narrow)."""
    pos = transformer.video_positions(1, frames, height, width, 1.0, device=device).clone()
    if frame_index == 0:
        t = pos[:, 0]  # the causal pixel bounds, as the video's own first frame has them
    else:
        t = torch.arange(frames, dtype=torch.float32, device=device)
        t = torch.stack([t, t + 1], dim=-1) * transformer.config.vae_scale_factors[0]  # (F, 2) pixel frames
        t = t[:, None, None, :].expand(frames, height, width, 2).reshape(1, -1, 2) + frame_index
    if narrow:
        t = torch.stack([t[..., 0], t[..., 0] + 1], dim=-1)
    pos[:, 0] = t / fps
    return pos


def video_state(clean: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor, noise_scale: float) -> LatentState:
    """ltx-core GaussianNoiser on packed tokens: x = noise (mask s) + clean (1 - mask s)."""
    scaled = mask * noise_scale
    return LatentState(latent=noise * scaled + clean * (1 - scaled), clean=clean, mask=mask)


def audio_frames(num_frames: int, fps: float, audio_vae) -> int:
    """Audio latent frames of a clip: round(duration x latents per second) (25 for LTX-2.0)."""
    cfg = audio_vae.config
    per_second = cfg.sample_rate / cfg.mel_hop_length / 4
    return round(num_frames / fps * per_second)
