"""Schedules against diffusers' FlowMatchEulerDiscreteScheduler and LTXConditionPipeline helpers.

The schedule decides the timesteps the transformer sees and the sigmas of every update, so it must
be bit-equal (torch.equal), not merely close.
"""

import numpy as np
import pytest
import torch

from ltxengine.ltx_video import sampling as lv
from ltxengine.ltx_video.schedule import (
    DEFAULT_SCHEDULER_CONFIG,
    SchedulerConfig,
    calculate_shift,
    linear_quadratic_schedule,
    make_schedule,
)

diffusers = pytest.importorskip("diffusers")
from diffusers import FlowMatchEulerDiscreteScheduler  # noqa: E402
from diffusers.pipelines.ltx import pipeline_ltx, pipeline_ltx_condition  # noqa: E402

CONFIGS = {
    "0.9.0-dynamic": DEFAULT_SCHEDULER_CONFIG,
    "0.9.5-default": {"use_dynamic_shifting": False},
    "shift2-terminal": {"use_dynamic_shifting": False, "shift": 2.0, "shift_terminal": 0.05},
}


def _pair(name):
    ref = FlowMatchEulerDiscreteScheduler(**CONFIGS[name])
    return ref, SchedulerConfig.from_dict(dict(ref.config))


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("steps,seq_len", [(1, 6), (7, 60), (50, 6144)])
def test_ltx_pipeline_sigmas(name, steps, seq_len):
    ref, cfg = _pair(name)
    sig = np.linspace(1.0, 1 / steps, steps)
    mu = pipeline_ltx.calculate_shift(seq_len, ref.config.base_image_seq_len, ref.config.max_image_seq_len,
                                      ref.config.base_shift, ref.config.max_shift)
    assert calculate_shift(seq_len, cfg) == mu
    ref.set_timesteps(sigmas=sig, mu=mu)
    if steps == 1 and cfg.shift_terminal:
        # a single sigma of 1 cannot be stretched to the terminal value: diffusers returns NaN
        assert torch.isnan(ref.sigmas[0])
        with pytest.raises(ValueError, match="more than one step"):
            make_schedule(cfg, sigmas=sig, mu=mu if cfg.use_dynamic_shifting else None)
        return
    ours = make_schedule(cfg, sigmas=sig, mu=mu if cfg.use_dynamic_shifting else None)
    assert torch.equal(ours.timesteps, ref.timesteps) and torch.equal(ours.sigmas, ref.sigmas)


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("timesteps", [[1000, 993, 987, 981, 975, 909, 725, 0.03], [1000, 909, 725, 421, 0],
                                       "linear-quadratic"])
def test_given_timesteps(name, timesteps):
    ref, cfg = _pair(name)
    if timesteps == "linear-quadratic":
        sig = linear_quadratic_schedule(9)
        assert torch.equal(sig, pipeline_ltx_condition.linear_quadratic_schedule(9))
        timesteps = sig * 1000
    mu = 1.7 if cfg.use_dynamic_shifting else None
    ref.set_timesteps(timesteps=timesteps, mu=mu)
    ours = make_schedule(cfg, timesteps=timesteps, mu=mu)
    assert torch.equal(ours.timesteps, ref.timesteps) and torch.equal(ours.sigmas, ref.sigmas)


@pytest.mark.parametrize("steps", [1, 2, 3, 10, 30, 31])
def test_linear_quadratic(steps):
    assert torch.equal(linear_quadratic_schedule(steps), pipeline_ltx_condition.linear_quadratic_schedule(steps))


def test_default_path_matches_scheduler():
    ref, cfg = _pair("shift2-terminal")
    ref.set_timesteps(12)
    ours = make_schedule(cfg, 12)
    assert torch.equal(ours.timesteps, ref.timesteps) and torch.equal(ours.sigmas, ref.sigmas)


def test_truncate_matches_condition_pipeline_get_timesteps():
    cfg = SchedulerConfig.from_dict(CONFIGS["0.9.5-default"])
    sched = make_schedule(cfg, timesteps=linear_quadratic_schedule(10) * 1000)
    for strength in (0.999, 0.5, 0.4, 0.05):
        n = min(int(10 * strength), 10)
        cut = sched.truncate(strength)
        assert len(cut) == n and torch.equal(cut.timesteps, sched.timesteps[10 - n:])
        assert torch.equal(cut.sigmas, sched.sigmas[10 - n:])


def test_per_token_step_matches_scheduler():
    ref = FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=False)
    ts = linear_quadratic_schedule(6) * 1000
    ref.set_timesteps(timesteps=ts)
    g = torch.Generator().manual_seed(0)
    x, v = torch.randn(1, 10, 4, generator=g), torch.randn(1, 10, 4, generator=g)
    t = ref.timesteps[2]
    token_t = torch.minimum(t.expand(1, 10), (1 - torch.rand(1, 10, generator=g).round()) * 1000)
    exp = ref.step(v, t, x, per_token_timesteps=token_t, return_dict=False)[0]
    assert torch.equal(lv.per_token_step(x, v, token_t / 1000, ref.sigmas), exp)


@pytest.mark.parametrize("bad,match", [
    ({"use_karras_sigmas": True}, "must be false"),
    ({"time_shift_type": "linear"}, "time_shift_type"),
    ({"foo": 1}, "unsupported"),
])
def test_config_refuses_unsupported(bad, match):
    with pytest.raises(ValueError, match=match):
        SchedulerConfig.from_dict(bad)


def test_dynamic_needs_mu_and_values_checked():
    cfg = SchedulerConfig.from_dict(DEFAULT_SCHEDULER_CONFIG)
    with pytest.raises(ValueError, match="mu is required"):
        make_schedule(cfg, 5)
    with pytest.raises(ValueError, match="at most one"):
        make_schedule(cfg, sigmas=[1.0], timesteps=[1000.0], mu=1.0)
    with pytest.raises(ValueError, match="finite"):
        make_schedule(cfg, sigmas=[1.0, float("nan")], mu=1.0)
