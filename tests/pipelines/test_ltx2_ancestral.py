"""LTX-2.5's Euler-ancestral loop against diffusers' LTXEulerAncestralRFScheduler and a transcription
of Lightricks' reference (ltx-core / ltx-pipelines at Lightricks/LTX-2@400fd31, newer than the
ltx-core 1.0.0 the other sampler tests import, which has no ancestral step).

The loops run the toy denoiser of test_ltx2_samplers (non-linear, sigma- and step-dependent, the
streams coupled), so mixing up the streams, the sigma or the order of the noise draws shows.
"""

import copy

import pytest
import torch

from ltxengine.ltx2 import samplers as S
from ltxengine.ltx2.samplers import LatentState, euler, euler_ancestral, post_process

from ..helpers import assert_close_scaled
from .sampler_fixtures import B, CA, CV, MASKS, NA, NV, SCHEDULES, Toy, states as _states

# Measured max |ours - oracle| / max(1, max|oracle|) on the CPU (torch 2.13): the step against
# diffusers' and the loop against the reference transcription are bit-equal (0); the loop against
# two diffusers schedulers is 1.8e-7, because diffusers takes a velocity and rebuilds x0 = x - sigma v
# (one float32 rounding); eta = 0 against ``euler`` is 1.6e-7 (see test_eta_zero_is_euler). 1e-6 is
# a few float32 ulps; eta = 0.5 instead of 1, or another seed, moves the result by more than 1e-2.
REL = 1e-6


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# --- the reference, transcribed -----------------------------------------------------------------------

def _reference_step(sample, denoised, sigmas, step_index, eta, noise, s_noise=1.0):
    """ltx-core components/diffusion_steps.py:83-106, EulerAncestralDiffusionStep.step."""
    sigma = sigmas[step_index].to(torch.float32)
    sigma_next = sigmas[step_index + 1].to(torch.float32)
    if sigma_next == 0:
        return denoised.to(sample.dtype)
    x = sample.to(torch.float32)
    denoised = denoised.to(torch.float32)
    downstep_ratio = 1.0 + (sigma_next / sigma - 1.0) * eta
    sigma_down = sigma_next * downstep_ratio
    sigma_down_ratio = sigma_down / sigma
    x_next = sigma_down_ratio * x + (1.0 - sigma_down_ratio) * denoised
    if eta > 0:
        alpha_next = 1.0 - sigma_next
        alpha_down = 1.0 - sigma_down
        renoise_coeff = (sigma_next**2 - sigma_down**2 * alpha_next**2 / alpha_down**2).clamp(min=0) ** 0.5
        x_next = (alpha_next / alpha_down) * x_next + noise.to(torch.float32) * s_noise * renoise_coeff
    return x_next.to(sample.dtype)


def _reference_post_process(denoised, mask, clean):
    """ltx-pipelines utils/helpers.py post_process_latent."""
    return (denoised * mask + clean.float() * (1 - mask)).to(denoised.dtype)


def _reference_loop(toy, video: LatentState, audio: LatentState, sigmas, eta, noise_seed, model_dtype):
    """ltx-pipelines utils/samplers.py _ancestral_euler_denoising_loop with the ancestral stepper and
    _get_plain_noise: states in model_dtype, one generator on the video latent's device."""
    generator = torch.Generator(device=video.latent.device).manual_seed(noise_seed)
    states = {name: [st.latent.to(model_dtype), st.mask, st.clean.to(model_dtype)]
              for name, st in (("video", video), ("audio", audio))}
    for step_idx in range(len(sigmas) - 1):
        dv, da = toy(states["video"][0].float(), states["audio"][0].float(), float(sigmas[step_idx]), step_idx)
        pending = [(states[name], _reference_post_process(d.float(), states[name][1], states[name][2]))
                   for name, d in (("video", dv), ("audio", da))]
        terminal = sigmas[step_idx + 1] == 0
        for state, denoised in pending:
            if terminal:
                state[0] = denoised.to(model_dtype)
                continue
            noise = (torch.randn(state[0].shape, generator=generator, dtype=state[0].dtype, device=state[0].device)
                     if eta > 0 else None)
            x_next = _reference_step(state[0].float(), denoised, sigmas, step_idx, eta, noise)
            if eta > 0:
                x_next = _reference_post_process(x_next, state[1], state[2])
            state[0] = x_next.to(model_dtype)
        if terminal:
            break
    return states["video"][0], states["audio"][0]


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_matches_reference_transcription(kind, schedule, eta):
    sigmas = torch.tensor(SCHEDULES[schedule])
    theirs = _reference_loop(Toy(), *_states(kind), sigmas, eta, 10007, torch.float32)
    toy = Toy()
    ours = euler_ancestral(toy, *_states(kind), sigmas, generator=_gen(10007), eta=eta, noise_dtype=torch.float32)
    for o, t, name in zip(ours, theirs, ("video", "audio")):
        assert_close_scaled(o.latent, t, REL, f"ancestral {kind} {schedule} eta={eta} {name}")
    assert len(toy.calls) == len(sigmas) - 1


def _bf16_states(kind: str) -> tuple[LatentState, LatentState]:
    """States whose values a bfloat16 state holds exactly, so one step starts from the same numbers."""
    return tuple(LatentState(latent=s.latent.bfloat16().float(), clean=s.clean.bfloat16().float(), mask=s.mask)
                 for s in _states(kind))


@pytest.mark.parametrize("kind", MASKS)
def test_bfloat16_noise_matches_reference_model_dtype(kind):
    """The reference's distilled pipeline keeps states (and so draws noise) in bfloat16. One step from
    bf16-exact states: ours rounded to bf16 equals the reference's bf16 state bit for bit."""
    sigmas = torch.tensor([0.9, 0.7])
    theirs = _reference_loop(Toy(), *_bf16_states(kind), sigmas, 1.0, 3, torch.bfloat16)
    ours = euler_ancestral(Toy(), *_bf16_states(kind), sigmas, generator=_gen(3))
    for o, t in zip(ours, theirs):
        assert torch.equal(o.latent.bfloat16(), t)
    # the dtype matters: float32 draws are other numbers (rounded, or entirely for sizes not a multiple of 16)
    f32 = euler_ancestral(Toy(), *_bf16_states(kind), sigmas, generator=_gen(3), noise_dtype=torch.float32)
    assert not torch.equal(f32[0].latent, ours[0].latent)


# --- diffusers ----------------------------------------------------------------------------------------

def _diffusers():
    schedulers = pytest.importorskip("diffusers.schedulers.scheduling_ltx_euler_ancestral_rf")
    return schedulers.LTXEulerAncestralRFScheduler


STEP_CASES = [(1.0, 0.9), (0.75, 0.5), (0.3, 0.05), (0.909375, 0.725)]  # last: distilled sigmas[0:2]


@pytest.mark.parametrize("eta", [1.0, 0.5, 0.0])
@pytest.mark.parametrize("sigma,sigma_next", STEP_CASES)
def test_step_matches_diffusers(sigma, sigma_next, eta):
    scheduler = _diffusers()(eta=eta)
    scheduler.set_timesteps(sigmas=[sigma, sigma_next])
    g = _gen(11)
    x, v = torch.randn(B, NV, CV, generator=g), torch.randn(B, NV, CV, generator=g)
    theirs = scheduler.step(v, scheduler.timesteps[0], x, generator=_gen(5)).prev_sample
    sig = scheduler.sigmas  # float32, as ours
    x0 = x - sig[0] * v  # how diffusers rebuilds x0 from a velocity
    noise = torch.randn(x.shape, generator=_gen(5)) if eta > 0 else None
    ours = S._ancestral_step(x, x0, sig[0], sig[1], eta, noise)
    assert_close_scaled(ours, theirs, REL, f"step {sigma}->{sigma_next} eta={eta}")


@pytest.mark.parametrize("eta", [1.0, 0.5])
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_loop_matches_two_diffusers_schedulers(schedule, eta):
    """diffusers' LTX-2 pipelines step video with one scheduler and audio with a copy; given one
    generator (video first) they draw what ours draws in float32, packed."""
    sigmas = SCHEDULES[schedule]
    video_sched = _diffusers()(eta=eta)
    video_sched.set_timesteps(sigmas=sigmas)
    audio_sched = copy.deepcopy(video_sched)
    toy, g = Toy(), _gen(21)
    video, audio = _states("ones")
    xv, xa = video.latent, audio.latent
    for i, t in enumerate(video_sched.timesteps[:-1]):
        x0v, x0a = toy(xv, xa, float(video_sched.sigmas[i]), i)
        sigma = video_sched.sigmas[i]
        xv = video_sched.step((xv - x0v) / sigma, t, xv, generator=g).prev_sample
        xa = audio_sched.step((xa - x0a) / sigma, t, xa, generator=g).prev_sample
    ours = euler_ancestral(Toy(), *_states("ones"), torch.tensor(sigmas), generator=_gen(21), eta=eta,
                           noise_dtype=torch.float32)
    assert_close_scaled(ours[0].latent, xv, REL, f"diffusers loop {schedule} video")
    assert_close_scaled(ours[1].latent, xa, REL, f"diffusers loop {schedule} audio")


# --- properties -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_eta_zero_is_euler(kind, schedule):
    """eta = 0 is Euler; the reference writes it as x0 + (sigma_next / sigma)(x - x0) (and returns x0
    at sigma 0) where ``euler`` writes x + (x - x0)(sigma_next - sigma) / sigma, so they agree to
    rounding (measured 1.6e-7 relative), not bit for bit. It draws nothing: no generator needed."""
    sigmas = torch.tensor(SCHEDULES[schedule])
    plain = euler(Toy(), *_states(kind), sigmas)
    ours = euler_ancestral(Toy(), *_states(kind), sigmas, eta=0.0)
    for o, p, name in zip(ours, plain, ("video", "audio")):
        assert_close_scaled(o.latent, p.latent, REL, f"eta=0 vs euler {kind} {schedule} {name}")
    g = _gen(4)
    before = g.get_state()
    euler_ancestral(Toy(), *_states(kind), sigmas, generator=g, eta=0.0)
    assert torch.equal(g.get_state(), before)


def test_last_step_to_zero_adds_no_noise():
    g = _gen(8)
    before = g.get_state()
    toy = Toy()
    video, audio = _states("partial")
    ours = euler_ancestral(toy, video, audio, torch.tensor([0.3, 0.0]), generator=g)
    x0v, x0a = Toy()(video.latent, audio.latent, float(torch.tensor(0.3)), 0)
    assert torch.equal(ours[0].latent, post_process(x0v, video))
    assert torch.equal(ours[1].latent, post_process(x0a, audio))
    assert torch.equal(g.get_state(), before)


def _noise_draws(seed: int, pairs: int, dtype=torch.bfloat16) -> torch.Generator:
    g = _gen(seed)
    for _ in range(pairs):  # per non-final step: video, then audio, packed
        torch.randn(B, NV, CV, generator=g, dtype=dtype)
        torch.randn(B, NA, CA, generator=g, dtype=dtype)
    return g


@pytest.mark.parametrize("schedule,pairs", [("open", 4), ("to-zero", 4)])
def test_generator_consumed_as_reference(schedule, pairs):
    g = _gen(10042)
    euler_ancestral(Toy(), *_states(), torch.tensor(SCHEDULES[schedule]), generator=g)
    assert torch.equal(g.get_state(), _noise_draws(10042, pairs).get_state())


def test_first_draw_is_video_then_audio():
    """The first step's noise is the generator's first video-shaped draw, then an audio-shaped one."""
    video, audio = _states()
    sigmas = torch.tensor([0.9, 0.6])
    ours = euler_ancestral(Toy(), video, audio, sigmas, generator=_gen(2), noise_dtype=torch.float32)
    g = _gen(2)
    nv, na = torch.randn(B, NV, CV, generator=g), torch.randn(B, NA, CA, generator=g)
    x0v, x0a = Toy()(video.latent, audio.latent, float(sigmas[0]), 0)
    assert torch.equal(ours[0].latent, S._ancestral_step(video.latent, x0v, sigmas[0], sigmas[1], 1.0, nv))
    assert torch.equal(ours[1].latent, S._ancestral_step(audio.latent, x0a, sigmas[0], sigmas[1], 1.0, na))


def test_same_seed_same_result_other_seed_differs():
    sigmas = torch.tensor(SCHEDULES["to-zero"])
    a = euler_ancestral(Toy(), *_states("partial"), sigmas, generator=_gen(10000))
    b = euler_ancestral(Toy(), *_states("partial"), sigmas, generator=_gen(10000))
    c = euler_ancestral(Toy(), *_states("partial"), sigmas, generator=_gen(10001))
    for x, y, z in zip(a, b, c):
        assert torch.equal(x.latent, y.latent)
        assert (x.latent - z.latent).abs().max() > 1e-2
    half = euler_ancestral(Toy(), *_states("partial"), sigmas, generator=_gen(10000), eta=0.5)
    assert (a[0].latent - half[0].latent).abs().max() > 1e-1


def test_conditioned_tokens_stay_clean():
    video, audio = _states("partial")
    seen = []
    euler_ancestral(Toy(), video, audio, torch.tensor(SCHEDULES["open"]), generator=_gen(1),
                    hook=lambda step, total, sigma, v, a: seen.append((v, a)))
    assert len(seen) == 4
    for v, a in seen:
        for x, st in ((v, video), (a, audio)):
            hard = st.mask[..., 0] == 0
            assert torch.equal(x[hard], st.clean[hard])
            assert not torch.equal(x[~hard], st.clean[~hard])


# --- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("eta", [-0.1, 1.5, True, "1", float("nan")])
def test_rejects_eta(eta):
    toy = Toy()
    with pytest.raises(ValueError, match=r"euler_ancestral: eta must be a number in \[0, 1\]"):
        euler_ancestral(toy, *_states(), torch.tensor(SCHEDULES["open"]), generator=_gen(0), eta=eta)
    assert toy.calls == []


@pytest.mark.parametrize("generator", [None, 7])
def test_rejects_missing_generator(generator):
    with pytest.raises(ValueError, match="euler_ancestral: eta > 0 draws noise and needs a torch.Generator"):
        euler_ancestral(Toy(), *_states(), torch.tensor(SCHEDULES["open"]), generator=generator)
