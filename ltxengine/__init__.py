"""ltxengine: fast, exact inference for Lightricks' LTX-Video and LTX-2 models."""

__version__ = "0.1.0"

from .engine import STOP, Engine, GenerationCancelled, GenerationResult  # noqa: E402
# importing a family's engine module registers it with Engine.from_pretrained
from .ltx_video.engine import LTXVideoEngine, TwoStage  # noqa: E402
from .ltx2.engine import LTX2Engine, LTX2TwoStage  # noqa: E402
from .models.video_vae import TilingConfig  # noqa: E402
from .components import Condition, ReferenceCondition  # noqa: E402
from .ltx2.denoise import GuidanceParams  # noqa: E402
from .parallel.config import ParallelConfig  # noqa: E402
from .ltx_video.schedule import DISTILLED_STAGE1_TIMESTEPS, DISTILLED_STAGE2_TIMESTEPS  # noqa: E402

__all__ = [
    "DISTILLED_STAGE1_TIMESTEPS",
    "DISTILLED_STAGE2_TIMESTEPS",
    "STOP",
    "Condition",
    "Engine",
    "GenerationCancelled",
    "GenerationResult",
    "GuidanceParams",
    "LTX2Engine",
    "LTX2TwoStage",
    "LTXVideoEngine",
    "ParallelConfig",
    "ReferenceCondition",
    "TilingConfig",
    "TwoStage",
    "__version__",
]
