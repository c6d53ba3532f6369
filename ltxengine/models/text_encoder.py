"""T5 text encoding for LTX-Video, through transformers.

``T5TextEncoder.encode`` reproduces diffusers' ``LTXPipeline._get_t5_prompt_embeds``:

* tokenise with right padding to exactly ``max_sequence_length`` tokens, truncation on,
  special tokens on (T5 appends ``</s>``);
* run the encoder on the ids WITHOUT the attention mask (padding positions therefore carry
  non-zero embeddings; the transformer masks them out in cross-attention);
* duplicate for ``num_videos_per_prompt`` the way diffusers does (see ``encode``).
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Sequence

import torch

from ..loading.text_encoders import checked_folder, dtype_kwarg, load_model, load_tokenizer

logger = logging.getLogger(__name__)

__all__ = ["T5TextEncoder"]

_WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                 "pytorch_model.bin.index.json")
_TOKENIZER_FILES = ("tokenizer.json", "spiece.model")


def _missing_modules(names: Sequence[str]) -> list[str]:
    missing = []
    for name in names:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # parent package absent
            found = False
        if not found:
            missing.append(name)
    return missing


def _check_sentencepiece_support(tok_dir: Path) -> None:
    """A folder with spiece.model but no tokenizer.json (Lightricks' LTX-Video tokenizer/ folder) is
    converted to a fast tokenizer on load; transformers >= 5 needs sentencepiece and protobuf for
    that and otherwise fails with an unrelated-looking tiktoken error."""
    import transformers
    from packaging.version import Version

    if (tok_dir / "tokenizer.json").is_file() or Version(transformers.__version__).release < (5,):
        return
    missing = _missing_modules(("sentencepiece", "google.protobuf"))
    if missing:
        pip_names = ["protobuf" if m == "google.protobuf" else m for m in missing]
        raise ImportError(
            f"tokenizer_dir: T5 tokenizer folder {str(tok_dir)!r} has spiece.model but no tokenizer.json; "
            f"transformers {transformers.__version__} converts it with sentencepiece and protobuf, and "
            f"{', '.join(pip_names)} {'is' if len(pip_names) == 1 else 'are'} not installed "
            f"(pip install {' '.join(pip_names)})"
        )


class T5TextEncoder:
    """A T5 encoder (``transformers.T5EncoderModel``) and its tokenizer."""

    def __init__(self, model, tokenizer):
        self.model = model
        self.tokenizer = tokenizer

    @classmethod
    def from_folders(cls, text_encoder_dir, tokenizer_dir, device: torch.device | str = "cpu",
                     dtype: torch.dtype = torch.bfloat16) -> "T5TextEncoder":
        """Load diffusers' ``text_encoder/`` and ``tokenizer/`` subfolders (or any local
        T5EncoderModel / T5 tokenizer folders). Nothing is downloaded, no code from the folders
        runs (an ``auto_map`` is refused), and the weights must match the model exactly (see
        ``ltxengine.loading.text_encoders``)."""
        from transformers import T5EncoderModel

        te_dir = checked_folder(text_encoder_dir, "T5 text encoder", "text_encoder_dir", ("config.json",),
                                _WEIGHT_FILES)
        tok_dir = checked_folder(tokenizer_dir, "T5 tokenizer", "tokenizer_dir", (), _TOKENIZER_FILES)
        _check_sentencepiece_support(tok_dir)
        model = load_model(T5EncoderModel, te_dir, "T5 text encoder", **{dtype_kwarg(): dtype})
        model = model.to(device).eval().requires_grad_(False)
        tokenizer = load_tokenizer(tok_dir, "T5 tokenizer")
        return cls(model, tokenizer)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def hidden_size(self) -> int:
        return self.model.config.d_model

    @torch.no_grad()
    def encode(self, prompts: str | list[str], max_sequence_length: int = 128,
               device: torch.device | str | None = None, num_videos_per_prompt: int = 1,
               dtype: torch.dtype | None = None,
               diffusers_mask_order: bool = True,
               use_attention_mask: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode prompts -> (embeds (B*n, L, d_model), mask (B*n, L) int64), L = max_sequence_length.

        ``device`` defaults to the encoder's device and ``dtype`` to the encoder's dtype (the
        embeddings are cast to it, as diffusers does). A single ``str`` is treated as ``[str]``.

        Duplication for ``n = num_videos_per_prompt``: the embeddings are repeated per prompt
        (p0, p0, p1, p1, ...) but diffusers tiles the mask (m0, m1, m0, m1, ...). With more than
        one prompt and n > 1 the two orders disagree; ``diffusers_mask_order=True`` (default)
        reproduces diffusers bit for bit, ``False`` repeats the mask per prompt to match the
        embeddings. Both agree whenever B == 1 or n == 1.

        ``use_attention_mask``: LTXPipeline and LTXImageToVideoPipeline run T5 over the padded
        sequence without its mask (False); LTXConditionPipeline passes the mask (True).
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, (list, tuple)) or len(prompts) == 0:
            raise ValueError(f"encode: prompts must be a non-empty list of str, got {prompts!r}")
        bad = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        if bad:
            raise ValueError(f"encode: prompts must be a non-empty list of str, got {type(prompts[bad[0]]).__name__} "
                             f"at index {bad[0]}: {prompts[bad[0]]!r}")
        if isinstance(max_sequence_length, bool) or not isinstance(max_sequence_length, int) \
                or max_sequence_length <= 0:
            raise ValueError(f"encode: max_sequence_length must be a positive int, got {max_sequence_length!r}")
        if isinstance(num_videos_per_prompt, bool) or not isinstance(num_videos_per_prompt, int) \
                or num_videos_per_prompt <= 0:
            raise ValueError(f"encode: num_videos_per_prompt must be a positive int, got {num_videos_per_prompt!r}")
        prompts = list(prompts)
        device = torch.device(device) if device is not None else self.device
        dtype = dtype or self.dtype
        batch = len(prompts)
        n = num_videos_per_prompt

        text_inputs = self.tokenizer(prompts, padding="max_length", max_length=max_sequence_length, truncation=True,
                                     add_special_tokens=True, return_tensors="pt")
        input_ids = text_inputs.input_ids
        mask = text_inputs.attention_mask.to(dtype=torch.long, device=device)

        if logger.isEnabledFor(logging.WARNING):
            untruncated = self.tokenizer(prompts, padding="longest", return_tensors="pt").input_ids
            if untruncated.shape[-1] >= input_ids.shape[-1] and not torch.equal(input_ids, untruncated):
                removed = self.tokenizer.batch_decode(untruncated[:, max_sequence_length - 1:-1])
                logger.warning("The following part of the prompt was truncated because max_sequence_length is "
                               "%d tokens: %s", max_sequence_length, removed)

        # diffusers' T2V/I2V pipelines run T5 without the mask (padding tokens attend), its
        # condition pipeline with it; the mask is in any case the transformer's cross-attention bias.
        te_mask = mask.to(self.device) if use_attention_mask else None
        embeds = self.model(input_ids.to(self.device), attention_mask=te_mask)[0]
        embeds = embeds.to(dtype=dtype, device=device)

        seq_len = embeds.shape[1]
        embeds = embeds.repeat(1, n, 1).view(batch * n, seq_len, -1)
        if diffusers_mask_order:
            mask = mask.view(batch, -1).repeat(n, 1)
        else:
            mask = mask.repeat_interleave(n, dim=0)
        return embeds, mask
