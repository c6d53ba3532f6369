"""LTX-2 denoising loops over x0 predictions (ltx-pipelines' samplers).

Every loop advances a video and an audio ``LatentState`` together. ``denoise(video, audio, sigma,
step)`` returns the guided x0 predictions of both streams for the packed latents at noise level
``sigma`` (a float); the loop blends them with the clean latents where the denoise mask is below
1 (conditioned tokens stay clean) and takes the step. Latents stay float32 throughout
(ltx-pipelines keeps its states in the model dtype, bf16).

Loops: ``euler`` (first order), ``gradient_estimation`` (Euler with a velocity correction from the
previous step), ``euler_ancestral`` (Euler to a lower sigma, then fresh noise back up to the next
one; LTX-2.5's distilled stage 1) and ``res2s`` (two-stage exponential integrator with SDE noise,
two model calls per step). Every schedule is checked by ``check_sigmas`` first.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch

__all__ = ["LatentState", "Denoise", "StepHook", "check_sigmas", "check_schedule", "euler", "euler_ancestral",
           "gradient_estimation", "post_process", "res2s"]


@dataclass(frozen=True)
class LatentState:
    """latent (B, N, C) float32 packed tokens; clean (B, N, C) the conditioning values; mask
    (B, N, 1) float32 denoise mask: 1 = generate, 0 = keep clean, between = partial strength."""

    latent: torch.Tensor
    clean: torch.Tensor
    mask: torch.Tensor

    def with_latent(self, latent: torch.Tensor) -> "LatentState":
        return replace(self, latent=latent)


# denoise(video_latent, audio_latent, sigma, step) -> (x0_video, x0_audio), float32
Denoise = Callable[[torch.Tensor, torch.Tensor, float, int], tuple[torch.Tensor, torch.Tensor]]
# hook(step, total, sigma, video_latent, audio_latent): after every step; raises to stop
StepHook = Callable[[int, int, float, torch.Tensor, torch.Tensor], None]


def post_process(x0: torch.Tensor, state: LatentState) -> torch.Tensor:
    """x0 where the mask is 1, the clean latent where it is 0 (linear in between)."""
    return x0 * state.mask + state.clean * (1 - state.mask)


def _euler_step(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    velocity = (x - x0) / sigma
    return x + velocity * (sigma_next - sigma)


def check_sigmas(sigmas: torch.Tensor, name: str = "sigmas") -> None:
    """Raise ValueError unless ``sigmas`` is a 1-D floating tensor of at least 2 finite values in
    [0, 1], strictly decreasing (so only the last one can be 0)."""
    if not isinstance(sigmas, torch.Tensor) or not sigmas.is_floating_point():
        kind = f"dtype {sigmas.dtype}" if isinstance(sigmas, torch.Tensor) else f"type {type(sigmas).__name__}"
        raise ValueError(f"{name}: must be a floating-point torch.Tensor, got {kind}")
    if sigmas.dim() != 1 or sigmas.numel() < 2:
        raise ValueError(f"{name}: must be 1-D with at least 2 values (start and end), got shape "
                         f"{tuple(sigmas.shape)}")
    values = sigmas.tolist()
    for i, v in enumerate(values):
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"{name}: values must be finite and in [0, 1], got {name}[{i}] = {v}")
    for i in range(1, len(values)):
        if values[i] >= values[i - 1]:
            raise ValueError(f"{name}: must be strictly decreasing, got {name}[{i - 1}] = {values[i - 1]} then "
                             f"{name}[{i}] = {values[i]}")


def _check_finite(x: torch.Tensor, name: str, step: int, total: int) -> None:
    if not torch.isfinite(x).all():
        raise FloatingPointError(f"{name} latents became non-finite (nan/inf) at step {step}/{total}; the model or "
                                 f"its inputs overflowed (try dtype=torch.float32 or check the weights)")


# update(i, stream, state, x0) -> the state after step i; stream is "video" or "audio", x0 post-processed
Update = Callable[[int, str, LatentState, torch.Tensor], LatentState]


def _first_order_loop(denoise: Denoise, video: LatentState, audio: LatentState, sigmas: torch.Tensor,
                      hook: StepHook | None, update: Update) -> tuple[LatentState, LatentState]:
    """What the one-call-per-step loops share: both streams' x0 at sigma_i, post-processed, each
    stream stepped by ``update`` (video first: a method that draws noise draws video's first), the
    non-finite check, then the hook."""
    total = len(sigmas) - 1
    values = sigmas.tolist()
    for i in range(total):
        x0v, x0a = denoise(video.latent, audio.latent, values[i], i)
        x0v, x0a = post_process(x0v, video), post_process(x0a, audio)
        video, audio = update(i, "video", video, x0v), update(i, "audio", audio, x0a)
        _check_finite(video.latent, "video", i + 1, total)
        _check_finite(audio.latent, "audio", i + 1, total)
        if hook is not None:
            hook(i + 1, total, values[i], video.latent, audio.latent)
    return video, audio


def euler(denoise: Denoise, video: LatentState, audio: LatentState, sigmas: torch.Tensor,
          hook: StepHook | None = None) -> tuple[LatentState, LatentState]:
    """First-order Euler over ``sigmas`` (S+1 values, float32, ending at the last sigma to reach):
    v = (x - x0) / sigma, x <- x + v (sigma_next - sigma)."""
    check_sigmas(sigmas)

    def update(i, stream, state, x0):
        return state.with_latent(_euler_step(state.latent, x0, sigmas[i], sigmas[i + 1]))
    return _first_order_loop(denoise, video, audio, sigmas, hook, update)


def _corrected_step(state: LatentState, x0: torch.Tensor, previous: torch.Tensor | None, sigma: torch.Tensor,
                    sigma_next: torch.Tensor, gamma: float) -> tuple[LatentState, torch.Tensor]:
    """One gradient-estimation step; returns the new state and the uncorrected velocity, which is
    what the next step extrapolates from (not the corrected one)."""
    x = state.latent
    velocity = (x - x0) / sigma
    if previous is not None:
        corrected = gamma * (velocity - previous) + previous
        x0 = x - corrected * sigma
    return state.with_latent(_euler_step(x, x0, sigma, sigma_next)), velocity


def gradient_estimation(denoise: Denoise, video: LatentState, audio: LatentState, sigmas: torch.Tensor,
                        hook: StepHook | None = None, gamma: float = 2.0) -> tuple[LatentState, LatentState]:
    """Euler with gradient estimation: from the second step on, the velocity v = (x - x0) / sigma is
    replaced by v_prev + gamma (v - v_prev) (gamma = 2 extrapolates linearly across steps). A step
    that ends at sigma 0 returns the post-processed x0 itself. ``hook`` runs after every step."""
    check_sigmas(sigmas)
    values = sigmas.tolist()
    previous = {"video": None, "audio": None}  # each stream's last uncorrected velocity

    def update(i, stream, state, x0):
        if values[i + 1] == 0:  # only possibly the last step (check_sigmas)
            return state.with_latent(x0)
        state, previous[stream] = _corrected_step(state, x0, previous[stream], sigmas[i], sigmas[i + 1], gamma)
        return state
    return _first_order_loop(denoise, video, audio, sigmas, hook, update)


# --- Euler ancestral ------------------------------------------------------------------------------

def _ancestral_step(x: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor, eta: float,
                    noise: torch.Tensor | None) -> torch.Tensor:
    """One rectified-flow ancestral step (sigma, sigma_next > 0: 0-dim float32 tensors): Euler to
    sigma_down = sigma_next (1 + (sigma_next / sigma - 1) eta), then the signal rescaled by
    alpha_next / alpha_down (alpha = 1 - sigma) and ``noise`` added back up to sigma_next; no noise
    (None) leaves the Euler step to sigma_down. The Euler step is written as the reference writes it,
    an interpolation between x and x0, so its rounding is the reference's."""
    sigma_down = sigma_next * (1.0 + (sigma_next / sigma - 1.0) * eta)
    ratio = sigma_down / sigma
    x_next = ratio * x + (1.0 - ratio) * x0
    if noise is None:
        return x_next
    alpha_next, alpha_down = 1.0 - sigma_next, 1.0 - sigma_down
    up = (sigma_next ** 2 - sigma_down ** 2 * alpha_next ** 2 / alpha_down ** 2).clamp(min=0) ** 0.5
    return (alpha_next / alpha_down) * x_next + noise * up


def _ancestral_update(state: LatentState, x0: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
                      eta: float, generator: torch.Generator | None, noise_dtype: torch.dtype) -> LatentState:
    if eta == 0:  # the reference draws nothing and does not re-apply the mask
        return state.with_latent(_ancestral_step(state.latent, x0, sigma, sigma_next, eta, None))
    # Drawn packed, in the reference's state dtype: CPU randn gives other numbers per dtype.
    noise = torch.randn(state.latent.shape, generator=generator, dtype=noise_dtype, device=state.latent.device)
    x = _ancestral_step(state.latent, x0, sigma, sigma_next, eta, noise.float())
    return state.with_latent(post_process(x, state))  # the noise hit every token: re-clean the conditioned


def _check_eta(eta: float, generator: torch.Generator | None) -> None:
    if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not 0.0 <= eta <= 1.0:
        raise ValueError(f"euler_ancestral: eta must be a number in [0, 1] (0 = plain Euler, 1 = fully ancestral), "
                         f"got {eta!r}")
    if eta > 0 and not isinstance(generator, torch.Generator):
        raise ValueError(f"euler_ancestral: eta > 0 draws noise and needs a torch.Generator on the latents' device "
                         f"(LTX-2.5 distilled: seeded seed + 10000), got {generator!r}")


def euler_ancestral(denoise: Denoise, video: LatentState, audio: LatentState, sigmas: torch.Tensor,
                    hook: StepHook | None = None, generator: torch.Generator | None = None, eta: float = 1.0, *,
                    noise_dtype: torch.dtype = torch.bfloat16) -> tuple[LatentState, LatentState]:
    """Euler ancestral (ltx-pipelines' euler_ancestral_denoising_loop): per step, Euler to a lower
    sigma_down, then fresh standard normal noise back up to sigma_next and the mask re-applied, so
    conditioned tokens stay clean. A step that ends at sigma 0 returns the post-processed x0 and draws
    nothing. Noise comes from ``generator`` as the reference draws it: each non-final step one
    tensor of the video latent's packed (B, N, C) shape, then one of the audio's, in ``noise_dtype``
    (the reference's state dtype: bfloat16 in its distilled pipeline) on the latents' device. eta = 0
    draws nothing and is Euler written as an interpolation (equal to ``euler`` up to rounding).
    Unlike the reference, which casts the states to the model dtype between steps, they stay float32.
    ``hook`` runs after every step."""
    check_sigmas(sigmas)
    _check_eta(eta, generator)
    values = sigmas.tolist()
    sig = sigmas.to(device=video.latent.device, dtype=torch.float32)  # the reference's schedule dtype

    def update(i, stream, state, x0):
        if values[i + 1] == 0:  # only possibly the last step (check_sigmas)
            return state.with_latent(x0)
        return _ancestral_update(state, x0, sig[i], sig[i + 1], eta, generator, noise_dtype)
    return _first_order_loop(denoise, video, audio, sigmas, hook, update)


# --- res_2s ---------------------------------------------------------------------------------------

# A schedule ending at 0 gets this sigma inserted before the 0: the exponential integrator needs
# log(sigma / sigma_next) finite; the last sigma -> 0 transition is then one plain x0 evaluation.
RES2S_LAST_SIGMA = 0.0011


def _phi(j: int, z: float) -> float:
    """phi_j(z) = (e^z - sum_{k<j} z^k / k!) / z^j for j = 1, 2. Near 0 the subtraction cancels
    (phi_2 would lose ~1e-16 / z^2 relative), so there the Taylor series sum_k z^k / (k + j)! is
    summed instead (20 terms: truncation < 1e-24 for |z| < 1/2)."""
    if abs(z) < 0.5:
        return sum(z ** k / math.factorial(k + j) for k in range(20))
    if j == 1:
        return math.expm1(z) / z
    return (math.expm1(z) - z) / (z * z)


def _res2s_coefficients(h: float) -> tuple[float, float, float]:
    """(a21, b1, b2) of the two-stage exponential Runge-Kutta step of size h = log(sigma / sigma_next)
    with the second stage at its middle (c2 = 1/2, i.e. at sqrt(sigma * sigma_next))."""
    a21 = 0.5 * _phi(1, -0.5 * h)
    b2 = _phi(2, -h) / 0.5
    return a21, _phi(1, -h) - b2, b2


def _sde_noise(shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
    """Standard normal float64 noise, standardised over the whole tensor and then again over the
    last two dims, as ltx-pipelines draws it (same generator state -> same numbers)."""
    noise = torch.randn(shape, generator=generator, dtype=torch.float64, device=generator.device)
    noise = (noise - noise.mean()) / noise.std()
    dims = (-2, -1)
    return (noise - noise.mean(dim=dims, keepdim=True)) / noise.std(dim=dims, keepdim=True)


def _sde_step(anchor: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """Re-noise the deterministic move anchor (at sigma) -> target (at sigma_next): half of
    sigma_next comes from fresh noise, the rest from the implied epsilon, rescaled so the signal
    keeps 1 - sigma_next. sigma / sigma_next are scalars or per-token tensors; their dtype is kept
    (the reference computes these coefficients in the schedule's float32 at the full step)."""
    if bool((sigma_next == 0).any()):
        # Quirk kept from ltx-pipelines: one token at 0 makes the whole tensor deterministic.
        return target
    up = sigma_next * 0.5  # the reference clamps this to 0.9999 sigma_next: a no-op for 0.5
    residual = (sigma_next ** 2 - up ** 2).clamp(min=0).sqrt()
    alpha = (1 - sigma_next) + residual
    down = residual / alpha
    eps = (anchor - target) / (sigma - sigma_next)
    x0 = anchor - sigma * eps
    return alpha * (x0 + down * eps) + up * noise


def _inject(state: LatentState, anchor: torch.Tensor, target: torch.Tensor, sigma: torch.Tensor,
            sigma_next: torch.Tensor, generator: torch.Generator, legacy: bool) -> torch.Tensor:
    # Noise is drawn even when it ends up unused, so the generator advances identically.
    noise = _sde_noise(state.latent.shape, generator)
    if not legacy:  # per-token noise levels: conditioned tokens move by mask * sigma only
        mask = state.mask.double()
        sigma, sigma_next = mask * sigma.double(), mask * sigma_next.double()
    x = _sde_step(anchor, target, sigma, sigma_next, noise)
    return post_process(x, state) if legacy else x


@dataclass(frozen=True)
class _Res2sConfig:
    substep_gen: torch.Generator
    step_gen: torch.Generator
    bongmath: bool
    bongmath_max_iter: int
    legacy: bool


def _res2s_step(denoise: Denoise, states: tuple[LatentState, LatentState], sigmas: torch.Tensor, i: int,
                cfg: _Res2sConfig) -> tuple[LatentState, LatentState]:
    """One full res_2s step sigmas[i] -> sigmas[i + 1] for both streams; the latents are float64
    inside, and each generator draws the video noise before the audio noise, as in the reference."""
    s, s_next = float(sigmas[i]), float(sigmas[i + 1])
    h = math.log(s / s_next)
    a21, b1, b2 = _res2s_coefficients(h)
    s_mid = math.sqrt(s * s_next)
    anchors = [st.latent.double() for st in states]
    x0s = denoise(states[0].latent, states[1].latent, s, i)
    x0s = [post_process(x0, st).double() for x0, st in zip(x0s, states)]
    eps1 = [x0 - a for x0, a in zip(x0s, anchors)]
    mids = [a + h * a21 * e for a, e in zip(anchors, eps1)]
    sub = torch.tensor([s, s_mid], dtype=torch.float64, device=anchors[0].device)
    mids = [_inject(st, a, m, sub[0], sub[1], cfg.substep_gen, cfg.legacy) for st, a, m in zip(states, anchors, mids)]
    if cfg.bongmath and h < 0.5 and s > 0.03:
        # Fixed-point iteration: move the anchor so that the (noised, post-processed) midpoint is
        # exactly the a21-step from it.
        for _ in range(cfg.bongmath_max_iter):
            anchors = [m - h * a21 * e for m, e in zip(mids, eps1)]
            eps1 = [x0 - a for x0, a in zip(x0s, anchors)]
    x0s2 = denoise(mids[0].float(), mids[1].float(), s_mid, 0)
    eps2 = [post_process(x0, st).double() - a for x0, st, a in zip(x0s2, states, anchors)]
    nexts = [a + h * (b1 * e1 + b2 * e2) for a, e1, e2 in zip(anchors, eps1, eps2)]
    nexts = [_inject(st, a, n, sigmas[i], sigmas[i + 1], cfg.step_gen, cfg.legacy)
             for st, a, n in zip(states, anchors, nexts)]
    return states[0].with_latent(nexts[0].float()), states[1].with_latent(nexts[1].float())


def check_schedule(sigmas: torch.Tensor, sampler: str, name: str = "sigmas") -> None:
    """Raise ValueError naming ``name`` unless the loop ``sampler`` ("euler", "gradient-estimation"
    or "res2s") accepts ``sigmas``: what the loop checks at its start, for callers that check a
    schedule before any model work."""
    if sampler == "res2s":
        _res2s_schedule(sigmas, name)
    else:
        check_sigmas(sigmas, name)


def _res2s_schedule(sigmas: torch.Tensor, name: str = "sigmas") -> torch.Tensor:
    check_sigmas(sigmas, name)
    sigmas = sigmas.to(torch.float32)  # the reference's schedules are float32; its arithmetic follows
    if float(sigmas[-1]) != 0:
        return sigmas
    if float(sigmas[-2]) <= RES2S_LAST_SIGMA:
        raise ValueError(f"{name}: res2s inserts {RES2S_LAST_SIGMA} before a final 0, so the value before it must "
                         f"be larger, got {name}[-2] = {float(sigmas[-2]):.7g}")
    tail = torch.tensor([RES2S_LAST_SIGMA, 0.0], dtype=torch.float32, device=sigmas.device)
    return torch.cat([sigmas[:-1], tail])


def res2s(denoise: Denoise, video: LatentState, audio: LatentState, sigmas: torch.Tensor,
          hook: StepHook | None = None, *, seed: int, substep_seed: int | None = None, bongmath: bool = True,
          bongmath_max_iter: int = 100, legacy: bool = True) -> tuple[LatentState, LatentState]:
    """res_2s: per step, x0 at sigma, an exponential-integrator half step to sqrt(sigma sigma_next)
    with SDE noise, x0 there, and the combined second-order step with SDE noise again; optional
    "bongmath" refinement of the step's anchor (when h < 0.5 and sigma > 0.03). A schedule ending at
    0 ends with 0.0011 instead and one final x0 evaluation there (``denoise(.., 0.0011, S)``, no hook
    call); ``hook`` runs after each of the S full steps. Noise comes from two generators on the
    latents' device, seeded ``seed`` (full steps) and ``substep_seed`` (default seed + 10000).
    ``legacy`` (ltx-pipelines' default) re-applies the mask after each noise injection; otherwise
    noise levels are per token (mask * sigma). Latents are float64 within a step (the legacy
    full-step noise coefficients come from the float32 schedule, as in the reference); unlike the
    reference, which casts the states to the model dtype between steps, they stay float32."""
    sigmas = _res2s_schedule(sigmas)
    if isinstance(bongmath_max_iter, bool) or not isinstance(bongmath_max_iter, int) or bongmath_max_iter < 0:
        raise ValueError(f"res2s: bongmath_max_iter must be an int >= 0, got {bongmath_max_iter!r}")
    device = video.latent.device
    substep_seed = seed + 10000 if substep_seed is None else substep_seed
    cfg = _Res2sConfig(substep_gen=torch.Generator(device=device).manual_seed(substep_seed),
                       step_gen=torch.Generator(device=device).manual_seed(seed), bongmath=bongmath,
                       bongmath_max_iter=bongmath_max_iter, legacy=legacy)
    ends_at_zero = float(sigmas[-1]) == 0
    total = len(sigmas) - (2 if ends_at_zero else 1)
    for i in range(total):
        video, audio = _res2s_step(denoise, (video, audio), sigmas, i, cfg)
        _check_finite(video.latent, "video", i + 1, total)
        _check_finite(audio.latent, "audio", i + 1, total)
        if hook is not None:
            hook(i + 1, total, float(sigmas[i]), video.latent, audio.latent)
    if ends_at_zero:
        x0v, x0a = denoise(video.latent, audio.latent, float(sigmas[total]), total)
        video, audio = video.with_latent(post_process(x0v, video)), audio.with_latent(post_process(x0a, audio))
    return video, audio
