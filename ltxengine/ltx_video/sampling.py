"""LTX-Video 0.9.x sampling: text-to-video, image-to-video and multi-condition, reproducing
diffusers' LTXPipeline, LTXImageToVideoPipeline and LTXConditionPipeline step for step, random draw
for random draw (latent upsampling: ``latents.py``; decoding: ``decode.py``).

Latents here are the transformer's normalized latents, (1, C, F, H, W) float32, unless packed
(1, F*H*W, C) in (f, h, w) raster order. Every random draw takes the caller's generator in the
order diffusers makes it, on the generator's device, so a CPU generator gives the same video on
any device.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from ..components.latents import pack, randn, unpack
from ..models.transformer import coords_positions, grid_positions
from ..parallel.guidance import gather_rows, rows_of
from .schedule import Schedule

__all__ = [
    "Guidance",
    "StepHook",
    "encode_condition",
    "sample_condition",
    "sample_image_to_video",
    "sample_text_to_video",
]

# hook(step, total, timestep, latents (1, C, F, H, W)): called after every step; raises to stop the loop
StepHook = Callable[[int, int, float, torch.Tensor], None]


# -- guidance ------------------------------------------------------------------------------------

class Guidance:
    """The transformer call of one step with classifier-free guidance and rescale.

    Work constant over a sampling call is done once: the text context ([negative, positive] when
    guiding) is projected and every block's cross-attention keys/values computed at construction,
    RoPE tables per sampling call (``set_positions``), timestep embeddings for every step before
    the loop (``embed``). ``step`` runs the guided model call and the sampler's update as one pure
    function of tensors through ``executor`` (a GraphExecutor: static buffers, CUDA graphs) or
    directly when there is none. Velocities come back as float32.
    """

    def __init__(self, transformer, embeds: torch.Tensor, mask: torch.Tensor,
                 negative_embeds: torch.Tensor | None, negative_mask: torch.Tensor | None,
                 guidance_scale: float, guidance_rescale: float, executor=None, group=None, graph_tag: tuple = ()):
        self.transformer = transformer
        self.scale = float(guidance_scale)
        self.rescale = float(guidance_rescale)
        self.do_cfg = self.scale > 1.0
        self.dtype = next(transformer.parameters()).dtype
        self.executor = executor
        # in the step graphs' names: what else specialises them (parallel/layout.py's stage layout)
        self._tag = "".join(f"|{t}" for t in graph_tag)
        if self.do_cfg:
            embeds = torch.cat([negative_embeds, embeds], dim=0)
            mask = torch.cat([negative_mask, mask], dim=0)
        self.context = transformer.prepare_context(embeds.to(self.dtype), mask)
        self.cross_kv = [t for pair in transformer.cross_kv(self.context[0]) for t in pair]
        device = self.context[0].device
        # tensors, not Python floats: a new scale then reuses the captured graph
        self._scales = (torch.tensor(self.scale, device=device), torch.tensor(self.rescale, device=device))
        self.rope = None
        self.group = group  # a guidance group (parallel/guidance.py): this rank runs its rows of the batch
        if group is not None:
            self._rows = torch.tensor(rows_of(group, self.batch), device=device, dtype=torch.long)
            ctx, bias = self.context
            self._row_context = (ctx[self._rows], None if bias is None else bias[self._rows])
            self._row_kv = [t[self._rows] for t in self.cross_kv]

    @property
    def batch(self) -> int:
        return 2 if self.do_cfg else 1

    def set_positions(self, positions: torch.Tensor) -> None:
        self.rope = self.transformer.rope(positions)

    def embed(self, timestep: torch.Tensor):
        """(B,) or (B, N) timesteps of one step (B = ``batch``) -> the transformer's temb pair."""
        return self.transformer.embed_timestep(timestep, self.batch, self.dtype)

    def step(self, x: torch.Tensor, temb, update: Callable | None = None, *update_args):
        """x (1, N, C) float32 -> ``update(x, v, *update_args)``, or the velocity v when update is
        None. ``update`` must be a module-level pure function of tensors (and hashable values)."""
        args = (x, *temb, self.context[0], self.context[1], *self.rope, *self._scales, self.do_cfg,
                self.rescale > 0, len(self.cross_kv), *self.cross_kv, *update_args)
        fn = _step_fn(self.transformer, update)
        if self.group is not None:
            return self._split_step(x, temb, update, *update_args)
        if self.executor is None:
            return fn(*args)
        name = f"ltx-video:{update.__name__ if update is not None else 'velocity'}{self._tag}"
        return self.executor.run(name, fn, *args)

    def _split_step(self, x: torch.Tensor, temb, update: Callable | None, *update_args):
        """``step`` under guidance parallel: the model on this rank's rows (through the executor),
        the group's rows gathered, then the same guidance and update, eagerly (no collective in a
        captured graph)."""
        k, rows = len(self._rows), self._rows
        mine = None
        if k:
            args = (x, k, temb[0][rows], temb[1][rows], *self._row_context, *self.rope, len(self._row_kv),
                    *self._row_kv)
            fn = functools.partial(_rows_fn, self.transformer)
            mine = fn(*args) if self.executor is None else self.executor.run(f"ltx-video:rows{self._tag}", fn, *args)
        shape = (x.shape[1], self.transformer.config.out_channels)
        (v,) = gather_rows([mine], [shape], self.batch, self.group, x.device)
        v = _combine(v, *self._scales, self.do_cfg, self.rescale > 0)
        return v if update is None else update(x, v, *update_args)

    def __call__(self, x: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
        """x (1, N, C) float32; timestep (B,) or (B, N) for the batched branches -> velocity (1, N, C)."""
        return self.step(x, self.embed(timestep))


def _step_fn(transformer, update):
    def fn(x, temb, embedded, ctx, bias, cos, sin, scale, rescale, do_cfg, rescale_on, n_kv, *rest):
        kv = list(zip(rest[:n_kv:2], rest[1:n_kv:2]))
        v = _guided(transformer, x, (temb, embedded), (ctx, bias), (cos, sin), kv, scale, rescale, do_cfg,
                    rescale_on)
        return v if update is None else update(x, v, *rest[n_kv:])
    return fn


def _guided(transformer, x, temb, context, rope, cross_kv, scale, rescale, do_cfg: bool, rescale_on: bool):
    dtype = context[0].dtype
    inp = torch.cat([x, x]) if do_cfg else x
    v = transformer(inp.to(dtype), None, context=context, rope=rope, temb=temb, cross_kv=cross_kv).float()
    return _combine(v, scale, rescale, do_cfg, rescale_on)


def _rows_fn(transformer, x, k: int, temb, embedded, ctx, bias, cos, sin, n_kv: int, *kv):
    """Velocities (k, N, C) of k rows of the guidance batch (guidance parallel's share)."""
    inp = torch.cat([x] * k) if k > 1 else x
    pairs = list(zip(kv[0:n_kv:2], kv[1:n_kv:2]))
    return transformer(inp.to(ctx.dtype), None, context=(ctx, bias), rope=(cos, sin), temb=(temb, embedded),
                       cross_kv=pairs).float()


def _combine(v, scale, rescale, do_cfg: bool, rescale_on: bool):
    """Velocities of the batch ([uncond, text] when guiding) -> the guided velocity (1, N, C)."""
    if not do_cfg:
        return v
    v_uncond, v_text = v.chunk(2)
    v = v_uncond + scale * (v_text - v_uncond)
    if rescale_on:
        dims = list(range(1, v.ndim))
        std_text = v_text.std(dim=dims, keepdim=True)
        std_cfg = v.std(dim=dims, keepdim=True)
        v = rescale * (v * (std_text / std_cfg)) + (1 - rescale) * v
    return v


class FiniteWatch:
    """Non-finite latents are detected without a host sync per step: each step records on the
    device whether the latents are finite; ``check`` (once, after the loop, or before a hook that
    syncs anyway) raises naming the first bad step."""

    def __init__(self, stage: str, total: int, device):
        self.stage, self.total = stage, total
        self.first_bad = torch.full((), -1, dtype=torch.int64, device=device)

    def update(self, x: torch.Tensor, step: int) -> None:
        bad = ~torch.isfinite(x).all()
        self.first_bad = torch.where(bad & (self.first_bad < 0), step, self.first_bad)

    def check(self) -> None:
        step = int(self.first_bad)
        if step >= 0:
            raise FloatingPointError(f"{self.stage}: latents became non-finite (nan/inf) at step {step}/{self.total}; "
                                     f"the model or its inputs produced overflow (try dtype=torch.float32 or check "
                                     f"the weights)")


# -- text-to-video (LTXPipeline) --------------------------------------------------------------------

def sample_text_to_video(guide: Guidance, schedule: Schedule, shape, *, frame_rate: float,
                         ratios: tuple[int, int], generator, device, latents: torch.Tensor | None = None,
                         hook: StepHook | None = None, stage: str = "denoise") -> torch.Tensor:
    """shape (1, C, F, H, W) of the latents -> denoised normalized latents."""
    _, _, f, h, w = shape
    spatial, temporal = ratios
    x = latents.to(device, torch.float32) if latents is not None else randn(shape, generator, device)
    x = pack(x)
    guide.set_positions(grid_positions(1, f, h, w, (temporal / frame_rate, spatial, spatial), device=device))
    total = len(schedule)
    sig = schedule.sigmas.to(device)
    timesteps = schedule.timesteps.to(device)
    tembs = [guide.embed(t.expand(guide.batch)) for t in timesteps]
    dts = [sig[i + 1] - sig[i] for i in range(total)]
    watch = FiniteWatch(stage, total, device)
    for i, t in enumerate(timesteps):
        x = guide.step(x, tembs[i], euler_update, dts[i])
        watch.update(x, i + 1)
        if hook is not None:
            watch.check()
            hook(i + 1, total, float(t), unpack(x.clone(), f, h, w))
    watch.check()
    return unpack(x.clone(), f, h, w)


def euler_update(x: torch.Tensor, v: torch.Tensor, dt: torch.Tensor) -> torch.Tensor:
    return x + dt * v


# -- image-to-video (LTXImageToVideoPipeline) ----------------------------------------------------

def sample_image_to_video(guide: Guidance, schedule: Schedule, vae, image: torch.Tensor, shape, *,
                          frame_rate: float, ratios: tuple[int, int], generator, device,
                          latents: torch.Tensor | None = None, hook: StepHook | None = None,
                          stage: str = "denoise") -> torch.Tensor:
    """image (3, H, W) in [-1, 1]. Latent frame 0 is the encoded image and is never stepped; the
    per-token timestep is t on the other frames and 0 on it."""
    _, c, f, h, w = shape
    spatial, temporal = ratios
    mask = torch.zeros((1, 1, f, h, w), device=device)
    mask[:, :, 0] = 1.0
    if latents is not None:  # as diffusers: given latents already hold the conditioning frame
        x = latents.to(device, torch.float32)
    else:
        init = encode_condition(vae, image[None, :, None], generator).to(torch.float32)
        init = init.repeat(1, 1, f, 1, 1)
        noise = randn(shape, generator, device)
        x = init * mask + noise * (1 - mask)
    x = pack(x)
    mask = pack(mask).squeeze(-1)
    mask_in = torch.cat([mask] * guide.batch)
    guide.set_positions(grid_positions(1, f, h, w, (temporal / frame_rate, spatial, spatial), device=device))
    total = len(schedule)
    sig = schedule.sigmas.to(device)
    timesteps = schedule.timesteps.to(device)
    tembs = [guide.embed(t.expand(guide.batch).unsqueeze(-1) * (1 - mask_in)) for t in timesteps]
    dts = [sig[i + 1] - sig[i] for i in range(total)]
    watch = FiniteWatch(stage, total, device)
    for i, t in enumerate(timesteps):
        x = guide.step(x, tembs[i], first_frame_kept_update, dts[i], f, h, w)
        watch.update(x, i + 1)
        if hook is not None:
            watch.check()
            hook(i + 1, total, float(t), unpack(x.clone(), f, h, w))
    watch.check()
    return unpack(x.clone(), f, h, w)


def first_frame_kept_update(x: torch.Tensor, v: torch.Tensor, dt: torch.Tensor, f: int, h: int, w: int):
    """Euler step of every latent frame but the first (the conditioning image)."""
    v = unpack(v, f, h, w)
    lat = unpack(x, f, h, w)
    stepped = lat[:, :, 1:] + dt * v[:, :, 1:]
    return pack(torch.cat([lat[:, :, :1], stepped], dim=2))


# -- multi-condition (LTXConditionPipeline) ------------------------------------------------------

@dataclass
class EncodedCondition:
    """A preprocessed condition: pixels (1, 3, F, H, W) in [-1, 1], where and how strongly."""

    pixels: torch.Tensor
    frame_index: int
    strength: float


def encode_condition(vae, pixels: torch.Tensor, generator) -> torch.Tensor:
    """VAE posterior sample of pixels (1, 3, F, H, W) -> normalized latents."""
    weight = next(vae.parameters())
    moments = vae.encode(pixels.to(weight.device, weight.dtype))
    return vae.normalize_latents(vae.sample(moments, generator))


def _video_ids(frames: int, height: int, width: int, ratios: tuple[int, int], frame_index: int, device):
    """Pixel coordinates (1, 3, N) of latent cells: (t*rt + 1 - rt).clamp(0) + frame_index, y*r, x*r."""
    spatial, temporal = ratios
    grid = torch.meshgrid(torch.arange(frames, device=device), torch.arange(height, device=device),
                          torch.arange(width, device=device), indexing="ij")
    ids = torch.stack(grid, dim=0).reshape(1, 3, -1)
    ids = ids * torch.tensor([temporal, spatial, spatial], device=device)[None, :, None]
    ids[:, 0] = (ids[:, 0] + 1 - temporal).clamp(min=0)
    ids[:, 0] += frame_index
    return ids


def _prepare_condition_latents(vae, conditions: Sequence[EncodedCondition], shape, ratios, generator, device,
                               latents: torch.Tensor | None, sigma: torch.Tensor | None,
                               num_prefix_latent_frames: int = 2):
    """-> packed latents (1, N_extra + N, C), conditioning mask (1, N_extra + N), coords (1, 3, ...),
    number of extra (prepended) tokens."""
    _, c, f, h, w = shape
    spatial, temporal = ratios
    noise = randn(shape, generator, device)
    if latents is not None and sigma is not None:
        x = sigma * noise + (1 - sigma) * latents.to(device, torch.float32)
    else:
        x = noise
    frame_mask = torch.zeros((1, f), device=device)
    extra_x, extra_ids, extra_mask = [], [], []
    for cond in conditions:
        cl = encode_condition(vae, cond.pixels, generator).to(device, torch.float32)
        n_data, n_cond = cond.pixels.shape[2], cl.shape[2]
        s = cond.strength
        if cond.frame_index == 0:
            x[:, :, :n_cond] = torch.lerp(x[:, :, :n_cond], cl, s)
            frame_mask[:, :n_cond] = s
            continue
        if n_data > 1:
            if n_cond < num_prefix_latent_frames:
                raise ValueError(f"conditions: a video condition needs at least {num_prefix_latent_frames} latent "
                                 f"frames ({(num_prefix_latent_frames - 1) * temporal + 1} pixel frames), got "
                                 f"{n_data} frames")
            if n_cond > num_prefix_latent_frames:
                start = cond.frame_index // temporal + num_prefix_latent_frames
                end = start + n_cond - num_prefix_latent_frames
                if end > f:
                    raise ValueError(f"conditions: video at frame_index {cond.frame_index} with {n_data} frames "
                                     f"reaches latent frame {end - 1}, past the last latent frame {f - 1}")
                x[:, :, start:end] = torch.lerp(x[:, :, start:end], cl[:, :, num_prefix_latent_frames:], s)
                frame_mask[:, start:end] = s
                cl = cl[:, :, :num_prefix_latent_frames]
        cl = torch.lerp(randn(cl.shape, generator, device), cl, s)
        extra_ids.append(_video_ids(cl.shape[2], h, w, ratios, cond.frame_index, device))
        packed = pack(cl)
        extra_x.append(packed)
        extra_mask.append(torch.full(packed.shape[:2], s, device=device))
    ids = _video_ids(f, h, w, ratios, 0, device)
    grid_t = torch.arange(f, device=device).repeat_interleave(h * w)[None]
    mask = frame_mask.gather(1, grid_t)
    x = pack(x)
    n_extra = sum(e.shape[1] for e in extra_x)
    if extra_x:
        x = torch.cat([*extra_x, x], dim=1)
        ids = torch.cat([*extra_ids, ids], dim=2)
        mask = torch.cat([*extra_mask, mask], dim=1)
    return x, mask, ids, n_extra


def per_token_step(x: torch.Tensor, velocity: torch.Tensor, token_sigmas: torch.Tensor,
                   all_sigmas: torch.Tensor) -> torch.Tensor:
    """Euler step of every token from its own sigma to the next lower sigma of the schedule
    (FlowMatchEulerDiscreteScheduler.step with per_token_timesteps)."""
    sig = all_sigmas[:, None, None]
    lower = ((sig < token_sigmas[None] - 1e-6) * sig).max(dim=0)[0]
    dt = token_sigmas[..., None] - lower[..., None]
    return x + dt * velocity


def sample_condition(guide: Guidance, schedule: Schedule, all_sigmas: torch.Tensor, vae,
                     conditions: Sequence[EncodedCondition], shape, *, frame_rate: float, ratios: tuple[int, int],
                     generator, device, image_cond_noise_scale: float = 0.15, latents: torch.Tensor | None = None,
                     denoise_sigma: torch.Tensor | None = None, hook: StepHook | None = None,
                     stage: str = "denoise") -> torch.Tensor:
    """The LTXConditionPipeline loop. ``schedule`` may be truncated by denoise strength, in which
    case ``latents`` are mixed with noise at ``denoise_sigma`` (its first sigma); ``all_sigmas`` is
    the untruncated schedule the per-token update searches."""
    _, _, f, h, w = shape
    x, mask, ids, n_extra = _prepare_condition_latents(vae, conditions, shape, ratios, generator, device,
                                                       latents, denoise_sigma)
    coords = ids.float()
    coords[:, 0] = coords[:, 0] * (1.0 / frame_rate)
    guide.set_positions(coords_positions(coords))
    conditioned = bool(conditions)
    init = x.clone() if conditioned else None
    mask_in = torch.cat([mask] * guide.batch)
    all_sigmas = all_sigmas.to(device)
    total = len(schedule)
    timesteps = schedule.timesteps.to(device)
    token_timesteps = []
    for t in timesteps:
        timestep = t.expand(guide.batch).unsqueeze(-1).float()
        if conditioned:
            timestep = torch.min(timestep, (1 - mask_in) * 1000.0)
        token_timesteps.append(timestep)
    tembs = [guide.embed(ts if conditioned else ts[:, 0]) for ts in token_timesteps]
    hard = (mask > 1.0 - 1e-6).unsqueeze(-1)
    watch = FiniteWatch(stage, total, device)
    for i, t in enumerate(timesteps):
        if image_cond_noise_scale > 0 and conditioned:
            tt = t / 1000.0
            noise = randn(x.shape, generator, device)
            x = torch.where(hard, init + image_cond_noise_scale * noise * (tt**2), x)
        if conditioned:
            x = guide.step(x, tembs[i], conditioned_update, token_timesteps[i][:1], all_sigmas, t, mask)
        else:
            x = guide.step(x, tembs[i], per_token_update, token_timesteps[i][:1], all_sigmas)
        watch.update(x, i + 1)
        if hook is not None:
            watch.check()
            hook(i + 1, total, float(t), unpack(x[:, n_extra:].clone(), f, h, w))
    watch.check()
    return unpack(x[:, n_extra:].clone(), f, h, w)


def per_token_update(x: torch.Tensor, v: torch.Tensor, timestep: torch.Tensor, all_sigmas: torch.Tensor):
    # diffusers steps -v by sigma_token - sigma_next (a positive dt)
    return per_token_step(x, -v, timestep / 1000, all_sigmas)


def conditioned_update(x: torch.Tensor, v: torch.Tensor, timestep: torch.Tensor, all_sigmas: torch.Tensor,
                       t: torch.Tensor, mask: torch.Tensor):
    """Tokens whose conditioning strength keeps them below the current noise level stay put."""
    stepped = per_token_update(x, v, timestep, all_sigmas)
    update = (t / 1000 - 1e-6 < (1.0 - mask)).unsqueeze(-1)
    return torch.where(update, stepped, x)
