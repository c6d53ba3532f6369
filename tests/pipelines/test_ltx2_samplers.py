"""LTX-2 denoising loops against ltx-pipelines' own loops (euler, gradient estimation, res_2s).

Both sides run the same deterministic toy denoiser: a small non-linear map per stream, a
sigma- and step-dependent term, and a coupling between the streams, so a loop that mixes up
audio and video, the sigma or the step index it passes, or the order of the two noise draws
gives different numbers. The reference loops keep their states in ``model_dtype`` (float32 here)
and do parts of res_2s in float64 exactly where ours does, so the comparison is close to exact.
"""

import decimal
import math
from dataclasses import replace

import pytest
import torch

from ltxengine.ltx2 import samplers as S
from ltxengine.ltx2.samplers import LatentState, check_sigmas, euler, euler_ancestral, gradient_estimation, res2s

from ..helpers import assert_close_scaled
from ..oracles import ltx_core, ltx_pipelines
from .sampler_fixtures import B, CA, CV, MASKS, NA, NV, SCHEDULES, Toy
from .sampler_fixtures import states as _states

# Measured max |ours - reference| / max(1, max|reference|) over every case below (CPU, torch
# 2.13): 0 for all three loops (bit-equal). res2s takes h and phi differently in float64 (log(s/s')
# and a series / expm1 against -log(s'/s) and exp - 1): ~1e-16 relative, which a float32 state
# almost never shows, but could after a step on another libm or device. 1e-6 (a few float32 ulps)
# allows that; the smallest method error tried (3 bongmath iterations instead of 100) is 1.5e-3.
REL = 1e-6


def _reference_state(state: LatentState):
    types = ltx_core("types")
    b, n, _ = state.latent.shape
    return types.LatentState(latent=state.latent.clone(), denoise_mask=state.mask.clone(),
                             positions=torch.zeros(b, 3, n, 2), clean_latent=state.clean.clone())


def _compare(ours, theirs, what):
    errs = [assert_close_scaled(o.latent, t.latent, REL, f"{what} {name}")
            for o, t, name in zip(ours, theirs, ("video", "audio"))]
    return max(errs)


def _run_reference(loop, kind, sigmas, toy, **kwargs):
    video, audio = _states(kind)
    return loop(sigmas=torch.tensor(sigmas), video_state=_reference_state(video),
                audio_state=_reference_state(audio), denoise_fn=toy.reference_fn(), **kwargs)


# --- parity with ltx-pipelines ----------------------------------------------------------------------

@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_euler_matches_reference(kind, schedule):
    loops, steps = ltx_pipelines("utils.samplers"), ltx_core("components.diffusion_steps")
    theirs = _run_reference(loops.euler_denoising_loop, kind, SCHEDULES[schedule], Toy(),
                            stepper=steps.EulerDiffusionStep())
    ours = euler(Toy(), *_states(kind), torch.tensor(SCHEDULES[schedule]))
    _compare(ours, theirs, f"euler {kind} {schedule}")


@pytest.mark.parametrize("gamma", [2.0, 1.5])
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_gradient_estimation_matches_reference(kind, schedule, gamma):
    loops, steps = ltx_pipelines("utils.samplers"), ltx_core("components.diffusion_steps")
    toy_ref, toy = Toy(), Toy()
    theirs = _run_reference(loops.gradient_estimating_euler_denoising_loop, kind, SCHEDULES[schedule], toy_ref,
                            stepper=steps.EulerDiffusionStep(), ge_gamma=gamma)
    ours = gradient_estimation(toy, *_states(kind), torch.tensor(SCHEDULES[schedule]), gamma=gamma)
    _compare(ours, theirs, f"gradient estimation {kind} {schedule}")
    assert toy.calls == toy_ref.calls
    # the correction must matter, or this test could not tell the loop from plain Euler
    plain = euler(Toy(), *_states(kind), torch.tensor(SCHEDULES[schedule]))
    assert (plain[0].latent - ours[0].latent).abs().max() > 1e-3


def _reference_res2s(kind, schedule, toy, **kwargs):
    loops, steps = ltx_pipelines("utils.samplers"), ltx_core("components.diffusion_steps")
    return _run_reference(loops.res2s_audio_video_denoising_loop, kind, SCHEDULES[schedule], toy,
                          stepper=steps.Res2sDiffusionStep(), model_dtype=torch.float32, **kwargs)


@pytest.mark.parametrize("legacy", [True, False])
@pytest.mark.parametrize("bongmath", [True, False])
@pytest.mark.parametrize("kind", MASKS)
@pytest.mark.parametrize("schedule", SCHEDULES)
def test_res2s_matches_reference(kind, schedule, bongmath, legacy):
    toy_ref, toy = Toy(), Toy()
    theirs = _reference_res2s(kind, schedule, toy_ref, noise_seed=7, bongmath=bongmath, legacy_mode=legacy)
    ours = res2s(toy, *_states(kind), torch.tensor(SCHEDULES[schedule]), seed=7, bongmath=bongmath, legacy=legacy)
    _compare(ours, theirs, f"res2s {kind} {schedule} bongmath={bongmath} legacy={legacy}")
    assert [s for s, _ in toy.calls] == pytest.approx([s for s, _ in toy_ref.calls], rel=1e-15, abs=0)
    assert [i for _, i in toy.calls] == [i for _, i in toy_ref.calls]


def test_res2s_explicit_substep_seed_matches_reference():
    theirs = _reference_res2s("soft", "open", Toy(), noise_seed=3, noise_seed_substep=99, legacy_mode=False)
    ours = res2s(Toy(), *_states("soft"), torch.tensor(SCHEDULES["open"]), seed=3, substep_seed=99, legacy=False)
    _compare(ours, theirs, "res2s substep seed")
    default = res2s(Toy(), *_states("soft"), torch.tensor(SCHEDULES["open"]), seed=3, legacy=False)
    assert not torch.equal(default[0].latent, ours[0].latent)


@pytest.mark.parametrize("iters", [0, 1, 3])
def test_res2s_bongmath_iterations_match_reference(iters):
    # 100 iterations converge (contraction ~h/2 per iteration), so only a few show the count is used
    theirs = _reference_res2s("partial", "to-zero", Toy(), noise_seed=4, bongmath_max_iter=iters)
    ours = res2s(Toy(), *_states("partial"), torch.tensor(SCHEDULES["to-zero"]), seed=4, bongmath_max_iter=iters)
    _compare(ours, theirs, f"res2s bongmath_max_iter={iters}")
    converged = res2s(Toy(), *_states("partial"), torch.tensor(SCHEDULES["to-zero"]), seed=4)
    assert (converged[0].latent - ours[0].latent).abs().max() > 1e-6


def test_res2s_options_change_the_result():
    """Seeds, bongmath and legacy all reach the numbers (else the parity tests could not fail on them)."""
    sig = torch.tensor(SCHEDULES["to-zero"])
    base = res2s(Toy(), *_states("soft"), sig, seed=7)[0].latent
    again = res2s(Toy(), *_states("soft"), sig, seed=7)[0].latent
    assert torch.equal(base, again)
    for kwargs in ({"seed": 8}, {"seed": 7, "substep_seed": 1}, {"seed": 7, "bongmath": False},
                   {"seed": 7, "legacy": False}):
        other = res2s(Toy(), *_states("soft"), sig, **kwargs)[0].latent
        assert (other - base).abs().max() > 1e-3, kwargs


def test_res2s_nonlegacy_hard_condition_disables_noise():
    """ltx-pipelines' quirk, kept: per-token noise levels with any token at mask 0 skip the noise
    for the whole stream, so the seed stops mattering."""
    sig = torch.tensor(SCHEDULES["open"])
    a = res2s(Toy(), *_states("partial"), sig, seed=1, legacy=False)
    b = res2s(Toy(), *_states("partial"), sig, seed=2, legacy=False)
    assert torch.equal(a[0].latent, b[0].latent) and torch.equal(a[1].latent, b[1].latent)


@pytest.mark.parametrize("h", [1e-3, 0.1, 0.45, 0.9, 1.7, 5.8])
def test_res2s_coefficients_match_reference(h):
    ref = ltx_pipelines("utils.res2s").get_res2s_coefficients(h, {}, 0.5)
    # Both float64. The reference forms phi_2 as (e^z - 1 - z) / z^2, which loses ~1e-16 / h^2
    # to cancellation (1e-10 at h = 1e-3), and passes that on to b1 = phi_1 - b2 (ours sums a
    # series there). Coefficients are O(1) (b1 ~ -h/6 is a small difference), so compare absolutely.
    assert S._res2s_coefficients(h) == pytest.approx(ref, rel=0, abs=4e-16 / h ** 2 + 1e-15)


def _exact_coefficients(h: float) -> tuple[float, float, float]:
    """a21, b1, b2 from phi_1, phi_2 evaluated with 60 significant digits (decimal)."""
    def phi(j, z):
        z = decimal.Decimal(z)
        return (z.exp() - sum((z ** k / math.factorial(k) for k in range(j)), decimal.Decimal(0))) / z ** j

    with decimal.localcontext(decimal.Context(prec=60)):
        a21 = phi(1, -h / 2) / 2
        b2 = phi(2, -h) * 2
        return float(a21), float(phi(1, -h) - b2), float(b2)


@pytest.mark.parametrize("h", [1e-12, 3e-6, 1e-3, 0.2, 0.49, 0.5, 0.51, 0.999, 1.0001, 1.7, 5.8])
def test_res2s_coefficients_accurate(h):
    # float64 throughout: a few ulps, on both sides of the series / closed-form switch (|z| = 1/2),
    # and at small h where the reference's closed form cancels; b1 = phi_1 - b2 carries ~1e-16
    # absolute error from that subtraction (b2 ~ 1 sets the scale of b1 eps1 + b2 eps2)
    assert S._res2s_coefficients(h) == pytest.approx(_exact_coefficients(h), rel=1e-14, abs=1e-15)


def test_sde_noise_matches_reference():
    ref_fn = ltx_pipelines("utils.samplers")._get_new_noise
    ours = S._sde_noise(torch.Size((B, NV, CV)), torch.Generator().manual_seed(5))
    theirs = ref_fn(torch.zeros(B, NV, CV), torch.Generator().manual_seed(5))
    assert torch.equal(ours, theirs)


# --- hooks, inputs --------------------------------------------------------------------------------

LOOPS = {
    "euler": euler,
    "gradient_estimation": gradient_estimation,
    "res2s": lambda *a, **k: res2s(*a, seed=0, **k),
    "euler_ancestral": lambda *a, **k: euler_ancestral(*a, generator=torch.Generator().manual_seed(0), **k),
}
# hook calls = steps; res2s counts its full steps only (the final x0 at 0.0011 is not one)
EXPECTED_STEPS = {"euler": 5, "gradient_estimation": 5, "res2s": 5, "euler_ancestral": 5}
CALLS_PER_STEP = {"euler": 1, "gradient_estimation": 1, "res2s": 2, "euler_ancestral": 1}


@pytest.mark.parametrize("name", LOOPS)
def test_hook_called_once_per_step(name):
    seen = []
    sig = torch.tensor(SCHEDULES["to-zero"])
    LOOPS[name](Toy(), *_states(), sig, hook=lambda *args: seen.append(args))
    total = EXPECTED_STEPS[name]
    assert [(s, t, sigma) for s, t, sigma, _, _ in seen] == [(i + 1, total, sig[i].item()) for i in range(total)]
    assert all(v.shape == (B, NV, CV) and a.shape == (B, NA, CA) for *_, v, a in seen)


@pytest.mark.parametrize("name", LOOPS)
def test_hook_raising_stops_the_loop(name):
    class Stop(Exception):
        pass

    def hook(step, *_):
        if step == 2:
            raise Stop

    toy = Toy()
    with pytest.raises(Stop):
        LOOPS[name](toy, *_states(), torch.tensor(SCHEDULES["to-zero"]), hook=hook)
    assert len(toy.calls) == 2 * CALLS_PER_STEP[name]


@pytest.mark.parametrize("name", LOOPS)
def test_inputs_not_modified(name):
    video, audio = _states("partial")
    copies = [replace(s, latent=s.latent.clone(), clean=s.clean.clone(), mask=s.mask.clone()) for s in (video, audio)]
    sig = torch.tensor(SCHEDULES["to-zero"])
    LOOPS[name](Toy(), video, audio, sig)
    for s, c in zip((video, audio), copies):
        assert torch.equal(s.latent, c.latent) and torch.equal(s.clean, c.clean) and torch.equal(s.mask, c.mask)
    assert torch.equal(sig, torch.tensor(SCHEDULES["to-zero"]))


# --- validation -----------------------------------------------------------------------------------

BAD_SIGMAS = [
    ([1.0, 0.5], "floating-point torch.Tensor, got type list"),
    (torch.tensor([1, 0]), "floating-point torch.Tensor, got dtype torch.int64"),
    (torch.ones(2, 2) * 0.5, "1-D with at least 2 values"),
    (torch.tensor([0.5]), "1-D with at least 2 values"),
    (torch.tensor([1.0, float("nan"), 0.0]), r"finite and in \[0, 1\], got sigmas\[1\] = nan"),
    (torch.tensor([float("inf"), 0.0]), r"finite and in \[0, 1\], got sigmas\[0\] = inf"),
    (torch.tensor([1.5, 0.5]), r"in \[0, 1\], got sigmas\[0\] = 1.5"),
    (torch.tensor([0.5, -0.1]), r"in \[0, 1\], got sigmas\[1\] = -0.1"),
    (torch.tensor([1.0, 0.5, 0.5]), r"strictly decreasing, got sigmas\[1\] = 0.5 then sigmas\[2\] = 0.5"),
    (torch.tensor([0.2, 0.5, 0.0]), r"strictly decreasing, got sigmas\[0\] = 0.2"),
]


@pytest.mark.parametrize("sigmas,message", BAD_SIGMAS)
def test_check_sigmas_rejects(sigmas, message):
    with pytest.raises(ValueError, match=message):
        check_sigmas(sigmas)
    with pytest.raises(ValueError, match="^schedule: "):
        check_sigmas(sigmas, name="schedule")


@pytest.mark.parametrize("name", LOOPS)
@pytest.mark.parametrize("sigmas,message", BAD_SIGMAS)
def test_loops_check_sigmas(name, sigmas, message):
    toy = Toy()
    with pytest.raises(ValueError, match=message):
        LOOPS[name](toy, *_states(), sigmas)
    assert toy.calls == []


def test_res2s_rejects_sigma_before_zero_below_inserted_value():
    with pytest.raises(ValueError, match=r"sigmas\[-2\] = 0.001"):
        res2s(Toy(), *_states(), torch.tensor([1.0, 0.001, 0.0]), seed=0)


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_res2s_rejects_bongmath_max_iter(bad):
    with pytest.raises(ValueError, match=f"bongmath_max_iter must be an int >= 0, got {bad!r}"):
        res2s(Toy(), *_states(), torch.tensor(SCHEDULES["open"]), seed=0, bongmath_max_iter=bad)
