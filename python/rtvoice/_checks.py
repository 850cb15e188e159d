"""Argument checks shared by the public entry points.

Each function returns the checked value in its canonical type or raises at once, at the call that
received the bad input: ``TypeError`` for a value of the wrong kind, ``ValueError`` for a value of
the right kind out of range. Every message names the argument and says what to pass instead.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any, Literal, overload

import numpy as np

__all__ = [
    "MAX_CHANNELS",
    "MAX_SAMPLE_RATE_HZ",
    "MIN_SAMPLE_RATE_HZ",
    "mapping",
    "pcm_layout",
    "positive_interval",
    "positive_timeout",
    "sample_rate",
]

MIN_SAMPLE_RATE_HZ = 8000
MAX_SAMPLE_RATE_HZ = 192000
MAX_CHANNELS = 8
_PCM_DTYPES = (np.dtype(np.float32), np.dtype(np.int16))


def _kind(value: object) -> str:
    return type(value).__name__


def sample_rate(value: object, name: str = "sample_rate") -> int:
    """An integer rate in Hz within 8000..192000. ``bool`` and floats (even ``48000.0``) are
    refused; numpy integers are accepted."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int number of Hz (e.g. 48000), got {_kind(value)}")
    rate = int(value)
    if not MIN_SAMPLE_RATE_HZ <= rate <= MAX_SAMPLE_RATE_HZ:
        raise ValueError(
            f"{name} must be within {MIN_SAMPLE_RATE_HZ}..{MAX_SAMPLE_RATE_HZ} Hz, got {rate}"
        )
    return rate


def _positive_seconds(value: object, name: str, none_hint: str) -> float:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds{none_hint}, got {_kind(value)}")
    seconds = float(value)
    if math.isnan(seconds) or seconds <= 0:
        raise ValueError(f"{name} must be > 0 seconds, got {seconds}")
    if math.isinf(seconds):
        raise ValueError(f"{name} must be a finite number of seconds{none_hint}, got {seconds}")
    return seconds


@overload
def positive_timeout(value: object, name: str, *, allow_none: Literal[False] = False) -> float: ...
@overload
def positive_timeout(value: object, name: str, *, allow_none: bool) -> float | None: ...
def positive_timeout(value: object, name: str, *, allow_none: bool = False) -> float | None:
    """A timeout in seconds: finite and > 0. ``None`` (no timeout) only when the caller passes
    ``allow_none=True``; infinity is refused in favour of that explicit ``None``."""
    if value is None:
        if allow_none:
            return None
        raise TypeError(f"{name} must be a number of seconds, got None")
    return _positive_seconds(value, name, " (or None for no timeout)" if allow_none else "")


def positive_interval(value: object, name: str) -> float:
    """A period in seconds (polling, stats, keep-alive): finite and > 0."""
    if value is None:
        raise TypeError(f"{name} must be a number of seconds, got None")
    return _positive_seconds(value, name, "")


def non_negative(value: object, name: str) -> float:
    """A duration in seconds that may be 0: finite and >= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds, got {_kind(value)}")
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"{name} must be a finite number of seconds >= 0, got {seconds}")
    return seconds


def count(value: object, name: str) -> int:
    """A non-negative int (a bound on items, characters or bytes)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int, got {_kind(value)}")
    n = int(value)
    if n < 0:
        raise ValueError(f"{name} must be >= 0, got {n}")
    return n


def pcm_layout(arr: object, name: str = "pcm") -> tuple[int, int]:
    """``(frames, channels)`` of a PCM chunk: a float32 or int16 numpy array shaped ``(frames,)``
    (mono) or ``(frames, channels)`` with 1..8 channels. A layout is never guessed from a shape:
    a channels-first array such as ``(2, 4800)`` is refused, with ``.T`` as the fix."""
    if not isinstance(arr, np.ndarray):
        raise TypeError(
            f"{name} must be a numpy array (float32 or int16) shaped (frames,) or "
            f"(frames, channels), got {_kind(arr)}"
        )
    if arr.dtype not in _PCM_DTYPES:
        raise TypeError(
            f"{name} must be float32 or int16, got {arr.dtype}: convert it first, e.g. "
            f"{name}.astype(np.float32)"
        )
    if arr.ndim == 1:
        return int(arr.shape[0]), 1
    if arr.ndim != 2:
        raise ValueError(
            f"{name} must be shaped (frames,) or (frames, channels), got {arr.ndim} dimensions "
            f"{arr.shape}"
        )
    frames, channels = (int(n) for n in arr.shape)
    if 1 <= channels <= MAX_CHANNELS:
        return frames, channels
    hint = (
        f"; it looks channels-first: pass {name}.T"
        if 1 <= frames <= MAX_CHANNELS and channels > MAX_CHANNELS
        else ""
    )
    raise ValueError(
        f"{name} must be laid out (frames, channels) with 1..{MAX_CHANNELS} channels, got shape "
        f"{arr.shape}{hint}"
    )


def mapping(value: object, name: str) -> Mapping[str, Any]:
    """``value`` itself when it is a mapping (a dict or any ``collections.abc.Mapping``)."""
    if not isinstance(value, Mapping):
        raise TypeError(f"{name} must be a mapping (e.g. a dict), got {_kind(value)}")
    return value
