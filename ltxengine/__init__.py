"""ltxengine: fast, exact inference for Lightricks' LTX-Video and LTX-2 models."""

__version__ = "0.1.0"

from .engine import STOP, Engine, GenerationCancelled, GenerationResult, TwoStage  # noqa: E402
from .pipelines import DISTILLED_STAGE1_TIMESTEPS, DISTILLED_STAGE2_TIMESTEPS, Condition  # noqa: E402

__all__ = [
    "DISTILLED_STAGE1_TIMESTEPS",
    "DISTILLED_STAGE2_TIMESTEPS",
    "STOP",
    "Condition",
    "Engine",
    "GenerationCancelled",
    "GenerationResult",
    "TwoStage",
    "__version__",
]
