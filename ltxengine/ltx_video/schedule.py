"""Flow-matching schedules and Euler updates of diffusers' ``FlowMatchEulerDiscreteScheduler``.

The schedule arithmetic is done in numpy float32/float64 exactly as the scheduler does it, so the
timesteps the transformer sees and the sigmas of every update are bit-equal to diffusers'. The
scheduler config is the ``scheduler/scheduler_config.json`` of a diffusers folder.

Options of the scheduler that LTX-Video configs never use (karras/exponential/beta sigmas,
inverted sigmas, stochastic sampling, linear time shift) are refused by name rather than ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

from ..config import check_fields

__all__ = [
    "DISTILLED_STAGE1_TIMESTEPS",
    "DISTILLED_STAGE2_TIMESTEPS",
    "DEFAULT_SCHEDULER_CONFIG",
    "Schedule",
    "SchedulerConfig",
    "calculate_shift",
    "linear_quadratic_schedule",
    "make_schedule",
]

# diffusers' documented timesteps for the 0.9.7 / 0.9.8 distilled models (stage 1, then the
# refinement pass after the x2 latent upsampler, run with denoise_strength 0.999).
DISTILLED_STAGE1_TIMESTEPS = (1000.0, 993.0, 987.0, 981.0, 975.0, 909.0, 725.0, 0.03)
DISTILLED_STAGE2_TIMESTEPS = (1000.0, 909.0, 725.0, 421.0, 0.0)

# The LTX-Video 0.9.0/0.9.1 diffusers scheduler (resolution-dependent shift, last sigma 0.1); used
# for single-file checkpoints, which carry no diffusers scheduler config.
DEFAULT_SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000, "shift": 1.0, "use_dynamic_shifting": True, "base_shift": 0.95,
    "max_shift": 2.05, "base_image_seq_len": 1024, "max_image_seq_len": 4096, "shift_terminal": 0.1,
}

_UNSUPPORTED_TRUE = ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                     "stochastic_sampling")
_KNOWN = {"num_train_timesteps", "shift", "use_dynamic_shifting", "base_shift", "max_shift", "base_image_seq_len",
          "max_image_seq_len", "shift_terminal", "time_shift_type", *_UNSUPPORTED_TRUE}


@dataclass(frozen=True)
class SchedulerConfig:
    num_train_timesteps: int = 1000
    shift: float = 1.0
    use_dynamic_shifting: bool = False
    base_shift: float = 0.5
    max_shift: float = 1.15
    base_image_seq_len: int = 256
    max_image_seq_len: int = 4096
    shift_terminal: float | None = None

    @classmethod
    def from_dict(cls, config: dict[str, Any] | None, source: str = "scheduler config") -> "SchedulerConfig":
        """diffusers' ``scheduler_config.json`` contents (``_``-keys ignored) -> config."""
        if config is None:
            return cls()
        config = {k: v for k, v in config.items() if not k.startswith("_")}
        unknown = sorted(set(config) - _KNOWN)
        if unknown:
            raise ValueError(f"{source}: unsupported FlowMatchEulerDiscreteScheduler option(s) {unknown}")
        on = [k for k in _UNSUPPORTED_TRUE if config.get(k)]
        if on:
            raise ValueError(f"{source}: {on} must be false for LTX-Video (not implemented), got true")
        if config.get("time_shift_type", "exponential") != "exponential":
            raise ValueError(f"{source}: time_shift_type must be 'exponential', got {config['time_shift_type']!r}")
        fields = {k: v for k, v in config.items() if k in cls.__dataclass_fields__}
        # diffusers treats None like the defaults for the shift bounds
        for k in ("base_shift", "max_shift"):
            if fields.get(k, 0) is None:
                fields.pop(k)
        return cls(**check_fields(cls, fields, source))  # JSON types and ranges, key named


@dataclass(frozen=True)
class Schedule:
    """``timesteps`` (S,) fed to the model and ``sigmas`` (S+1,) ending in 0, both float32 (CPU)."""

    timesteps: torch.Tensor
    sigmas: torch.Tensor

    def __len__(self) -> int:
        return len(self.timesteps)

    def truncate(self, denoise_strength: float) -> "Schedule":
        """Keep the last ``int(S * strength)`` steps (LTXConditionPipeline.get_timesteps)."""
        n = len(self)
        keep = min(int(n * denoise_strength), n)
        start = max(n - keep, 0)
        return Schedule(self.timesteps[start:], self.sigmas[start:])


def calculate_shift(seq_len: int, cfg: SchedulerConfig) -> float:
    """mu = m * seq_len + b, the line through (base_len, base_shift) and (max_len, max_shift)."""
    m = (cfg.max_shift - cfg.base_shift) / (cfg.max_image_seq_len - cfg.base_image_seq_len)
    b = cfg.base_shift - m * cfg.base_image_seq_len
    return seq_len * m + b


def linear_quadratic_schedule(num_steps: int, threshold_noise: float = 0.025, linear_steps: int | None = None):
    """LTXConditionPipeline's default sigmas (from LTX-Video's rf.py): linear to 1 - threshold over the
    first half, then quadratic towards 0. Returns a float32 tensor of ``num_steps`` sigmas."""
    if linear_steps is None:
        linear_steps = num_steps // 2
    if num_steps < 2:
        return torch.tensor([1.0])
    linear = [i * threshold_noise / linear_steps for i in range(linear_steps)]
    diff = linear_steps - threshold_noise * num_steps
    quad_steps = num_steps - linear_steps
    quad_coef = diff / (linear_steps * quad_steps**2)
    lin_coef = threshold_noise / linear_steps - 2 * diff / (quad_steps**2)
    const = quad_coef * (linear_steps**2)
    quad = [quad_coef * (i**2) + lin_coef * i + const for i in range(linear_steps, num_steps)]
    sched = [1.0 - x for x in linear + quad + [1.0]]
    return torch.tensor(sched[:-1])


def _check_values(name: str, values) -> np.ndarray:
    arr = np.asarray(values.cpu().numpy() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {list(arr)}")
    return arr


def make_schedule(cfg: SchedulerConfig, num_inference_steps: int | None = None, *,
                  sigmas: Sequence[float] | None = None, timesteps: Sequence[float] | None = None,
                  mu: float | None = None) -> Schedule:
    """``FlowMatchEulerDiscreteScheduler.set_timesteps`` for the LTX configs.

    * neither given: timesteps linspace(1000, 1, S) -> sigmas = t / 1000 -> shift.
    * ``sigmas`` given: shifted; model timesteps = shifted sigmas x 1000.
    * ``timesteps`` given: the model sees them as given (float32) while the sigmas of the update are
      t / 1000 passed through the same shift (diffusers' behaviour; identity when shift = 1, no
      dynamic shifting and no terminal stretch, as for the distilled schedules).
    ``mu`` is required with dynamic shifting.
    """
    if sigmas is not None and timesteps is not None:
        raise ValueError("pass at most one of sigmas and timesteps")
    if cfg.use_dynamic_shifting and mu is None:
        raise ValueError("mu is required: the scheduler config uses dynamic (resolution-dependent) shifting")
    n_train = cfg.num_train_timesteps
    given_t = None
    if timesteps is not None:
        given_t = _check_values("timesteps", timesteps).astype(np.float32)
        sig = given_t / n_train
    elif sigmas is not None:
        sig = _check_values("sigmas", sigmas).astype(np.float32)
    else:
        if isinstance(num_inference_steps, bool) or not isinstance(num_inference_steps, int) \
                or num_inference_steps <= 0:
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}")
        # the scheduler's sigma_max/min come from its float32 training table, shifted when the
        # shift is static
        table = torch.from_numpy(np.linspace(1, n_train, n_train, dtype=np.float32)[::-1].copy()) / n_train
        if not cfg.use_dynamic_shifting:
            table = cfg.shift * table / (1 + (cfg.shift - 1) * table)
        sig_max, sig_min = table[0].item(), table[-1].item()
        sig = np.linspace(sig_max * n_train, sig_min * n_train, num_inference_steps) / n_train
    with np.errstate(divide="ignore"):
        if cfg.use_dynamic_shifting:
            sig = math.exp(mu) / (math.exp(mu) + (1 / sig - 1) ** 1.0)
        else:
            sig = cfg.shift * sig / (1 + (cfg.shift - 1) * sig)
    if cfg.shift_terminal:
        one_minus = 1 - sig
        if one_minus[-1] == 0:
            # diffusers divides by zero here and returns NaN sigmas
            raise ValueError(f"the schedule's last sigma is 1, so it cannot be stretched to end at "
                             f"shift_terminal={cfg.shift_terminal}; use more than one step")
        sig = 1 - one_minus / (one_minus[-1] / (1 - cfg.shift_terminal))
    sig_t = torch.from_numpy(np.asarray(sig)).to(torch.float32)
    t = torch.from_numpy(given_t) if given_t is not None else sig_t * n_train
    return Schedule(timesteps=t, sigmas=torch.cat([sig_t, torch.zeros(1)]))
