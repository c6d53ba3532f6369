"""Weight quantization (fp8 on Hopper/Ada; fp8 storage with bf16 compute elsewhere)."""

from .fp8 import (KEEP_FULL_PRECISION, POLICIES, RULES, Fp8Linear, check_policy, convert_to_fp8, default_policy,
                  dequantize, fp8_targets, fp8_weight_bytes, keeps_full_precision, quantize_weight, validate_policy)

__all__ = ["POLICIES", "RULES", "KEEP_FULL_PRECISION", "Fp8Linear", "check_policy", "convert_to_fp8", "default_policy",
           "dequantize", "fp8_targets", "fp8_weight_bytes", "keeps_full_precision", "quantize_weight",
           "validate_policy"]
