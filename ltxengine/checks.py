"""Argument checks shared by both engine families: each raises ValueError naming the argument,
the rule and the value, before any model work (the bounds below keep absurd values away from
numpy, the tokenizer and the allocator)."""

from __future__ import annotations

import itertools
import math
import os
import reprlib
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .components.inputs import Condition

__all__ = [
    "MAX_CONDITIONS", "MAX_NUM_FRAMES", "MAX_SEQUENCE_LENGTH", "MAX_SIDE", "MAX_STEPS", "SEED_MAX", "call_args",
    "check_conditions", "check_decreasing", "check_float", "check_int", "check_kept_steps", "check_output_file",
    "check_random", "check_seed", "check_steps", "make_generator", "short",
]

# Upper bounds of the size-like arguments. Each keeps an absurd value (a typo, 10**12) from reaching
# numpy, the tokenizer or the allocator, where it would fail without naming the argument or grow
# memory until the process dies. They sit far above every released recipe: whether a request
# within them fits the device is the memory plan's question, not theirs.
MAX_SIDE = 8192  # height, width (pixels): 8K, ~7x the largest released LTX-Video size (1216 px)
MAX_NUM_FRAMES = 4097  # 8 * 512 + 1: 16x the 257 frames of the longest LTX-Video recipes
MAX_STEPS = 1000  # steps and timestep / sigma lists: the scheduler has 1000 training timesteps
# T5 tokens: 4x the 256 of LTXConditionPipeline; the prompt is padded to this length and encoder
# memory grows with its square
MAX_SEQUENCE_LENGTH = 1024
MAX_CONDITIONS = 64  # images / clips: each is VAE-encoded and adds up to 2 latent frames of tokens
SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed's largest seed (seeds here are >= 0)


def short(value) -> str:
    """repr of a value for an error message, cut short (a bad list may have millions of items)."""
    return reprlib.repr(value)


def check_int(name: str, value, minimum: int | None = None, maximum: int | None = None, why: str = "") -> int:
    """An int (not a bool) in [minimum, maximum]; ``why`` says where the maximum comes from."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"{name} must be an int, got {short(value)}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}{f' ({why})' if why else ''}, got {value!r}")
    return int(value)


def check_float(name: str, value, low: float | None = None, high: float | None = None, *,
                low_open: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise ValueError(f"{name} must be a number, got {short(value)}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    below = low is not None and (v < low or (low_open and v == low))
    above = high is not None and v > high
    if below or above:
        if high is None:
            rule = f"> {low}" if low_open else f">= {low}"
        else:
            rule = f"in {'(' if low_open else '['}{low}, {high}]"
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return v


def check_seed(value) -> int:
    return check_int("seed", value, 0, SEED_MAX, "2**64 - 1, the largest seed torch.Generator.manual_seed takes")


def check_steps(name: str, value) -> int:
    return check_int(name, value, 1, MAX_STEPS, "MAX_STEPS: the scheduler's 1000 training timesteps")


def check_output_file(out) -> Path:
    """An output path whose folder exists and is writable, checked before any work is done (the
    frames are written only after the denoising)."""
    if not isinstance(out, (str, os.PathLike)):
        raise ValueError(f"output must be a path (str or os.PathLike) or None, got {type(out).__name__}")
    try:
        path = Path(out).expanduser()
    except TypeError:  # a PathLike whose __fspath__ returns bytes
        raise ValueError(f"output must be a str path, got {out!r}") from None
    folder = path.parent
    if not folder.is_dir():
        raise ValueError(f"output: the folder {str(folder)!r} does not exist (nothing was generated)")
    if path.is_dir():
        raise ValueError(f"output: {str(path)!r} is a folder, expected an mp4 file name (nothing was generated)")
    try:  # os.access answers for the real uid and ignores read-only mounts: try it instead
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise ValueError(f"output: cannot write into the folder {str(folder)!r} ({e.strerror or e}; nothing was "
                         f"generated)") from None
    return path


def call_args(a: dict[str, Any]) -> dict[str, Any]:
    """generate()'s locals without self, the prompts and the output path checked (both engine families)."""
    a = {k: v for k, v in a.items() if k != "self"}
    if not isinstance(a["prompt"], str):
        raise ValueError(f"prompt must be a str (one video per call), got {type(a['prompt']).__name__}")
    if a["negative_prompt"] is not None and not isinstance(a["negative_prompt"], str):
        raise ValueError(f"negative_prompt must be a str or None, got {type(a['negative_prompt']).__name__}")
    if a.get("output") is not None:
        a["output"] = check_output_file(a["output"])
    return a


def make_generator(gen: torch.Generator | None, seed: int | None) -> tuple[torch.Generator, int | None]:
    """The call's random stream: the caller's generator, else a CPU one seeded with ``seed``, else
    a random seed that is reported on the result so the video can be reproduced."""
    if gen is None:
        gen = torch.Generator("cpu")
        if seed is not None:
            gen.manual_seed(check_seed(seed))
        else:
            seed = gen.seed()
    return gen, seed


def check_decreasing(name: str, values, high: float, max_len: int = MAX_STEPS) -> list[float]:
    """A strictly decreasing list of 1 to ``max_len`` finite numbers in [0, high]."""
    if isinstance(values, (torch.Tensor, np.ndarray)) and values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of numbers, got shape {tuple(values.shape)}")
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ValueError(f"{name} must be a sequence of numbers, got {short(values)}")
    items = list(itertools.islice(values, max_len + 1))  # never more than one past the bound
    if len(items) > max_len:
        raise ValueError(f"{name} must hold at most {max_len} values (MAX_STEPS: the scheduler's 1000 training "
                         f"timesteps), got more")
    bad = [v for v in items if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating))]
    if bad:
        raise ValueError(f"{name} must be a sequence of numbers, got {short(bad[0])} in {short(values)}")
    vals = [float(v) for v in items]
    if not vals:
        raise ValueError(f"{name} must not be empty")
    if any(not math.isfinite(v) or v < 0 or v > high for v in vals):
        raise ValueError(f"{name} must lie in [0, {high:g}], got {short(vals)}")
    if any(b >= a for a, b in zip(vals, vals[1:])):
        raise ValueError(f"{name} must be strictly decreasing, got {short(vals)}")
    return vals


def check_kept_steps(strength_name: str, strength: float, steps_name: str, n: int) -> None:
    """A denoise strength < 1 runs the last int(n * strength) steps (Schedule.truncate): at least one."""
    if int(n * strength) < 1:
        raise ValueError(f"{strength_name}={strength!r} keeps no step of the {n}-step schedule of {steps_name} "
                         f"(int({n} * {strength!r}) = 0); use a larger {strength_name} or more steps")


def check_random(seed, generator, generator_rule: str = "a torch.Generator or None") -> None:
    """At most one of seed and generator (the result reports the seed, which a generator would
    make wrong), a seed torch takes, a real generator."""
    if seed is not None and generator is not None:
        raise ValueError("pass seed or generator, not both")
    if seed is not None:
        check_seed(seed)
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be {generator_rule}, got {type(generator).__name__}")


def check_conditions(conditions, num_frames: int, *, first: Condition | None = None, what: str = "conditions",
                     check_item: Callable[[int, Condition], None] | None = None) -> list[Condition]:
    """A Condition or a list / tuple of them (None: none) -> the list, ``first`` (``image=`` as a
    frame-0 condition) in front; at most MAX_CONDITIONS ``what`` in all, each a Condition that
    passes the family's ``check_item(i, c)`` (its media), with a frame_index < num_frames and a
    strength in [0, 1]."""
    conds = [] if first is None else [first]
    if conditions is not None:
        if isinstance(conditions, Condition):
            conditions = [conditions]
        if not isinstance(conditions, (list, tuple)):
            raise ValueError(f"conditions must be a list of Condition, got {type(conditions).__name__}")
        conds += list(conditions)
    if len(conds) > MAX_CONDITIONS:
        raise ValueError(f"conditions must hold at most {MAX_CONDITIONS} {what} (MAX_CONDITIONS), got {len(conds)}")
    for i, c in enumerate(conds):
        if not isinstance(c, Condition):
            raise ValueError(f"conditions[{i}] must be a ltxengine.Condition, got {type(c).__name__}")
        if check_item is not None:
            check_item(i, c)
        fi = check_int(f"conditions[{i}].frame_index", c.frame_index, 0)
        if fi >= num_frames:
            raise ValueError(f"conditions[{i}].frame_index must be < num_frames ({num_frames}), got {fi}")
        check_float(f"conditions[{i}].strength", c.strength, 0.0, 1.0)
    return conds
