"""ltxengine: fast, exact inference for Lightricks' LTX-Video and LTX-2 models."""

__version__ = "0.1.0"

__all__ = ["__version__"]
