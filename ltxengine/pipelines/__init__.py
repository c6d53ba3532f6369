"""Sampling loops and schedules (LTX-Video 0.9.x), used by ``ltxengine.Engine``."""

from .inputs import Condition
from .schedule import DISTILLED_STAGE1_TIMESTEPS, DISTILLED_STAGE2_TIMESTEPS

__all__ = ["Condition", "DISTILLED_STAGE1_TIMESTEPS", "DISTILLED_STAGE2_TIMESTEPS"]
