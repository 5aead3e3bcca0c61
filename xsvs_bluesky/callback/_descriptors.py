"""What a descriptor says about detector frames, and inline frame data.

Which data key holds the frames (:func:`find_frame_key`), how they arrive
(:func:`frame_source_kind`), the exposure time read from a descriptor's
configuration, an event or a start document (:func:`find_exposure_time`),
and inline Event data as a frame stack (:func:`stack_frames`).  Public names
are re-exported by :mod:`xsvs_bluesky.callback._frames`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import DocumentError

__all__ = [
    "data_key_shape",
    "exposure_keys",
    "find_exposure_time",
    "find_frame_key",
    "frame_source_kind",
    "positive_number",
    "stack_frames",
]

# name endings of exposure-time keys, most specific first
_EXPOSURE_SUFFIXES = (
    "acquire_time",
    "exposure_time",
    "acquisition_time",
    "count_time",
    "integration_time",
    "exposure",
)
_NOT_EXPOSURE = ("period", "num", "dead", "delay", "latency", "readout")


def data_key_shape(data_key: Mapping[str, Any]) -> tuple[int, ...]:
    """Shape of a DataKey (``None`` dimensions as -1)."""
    shape = data_key.get("shape") or ()
    return tuple(-1 if s is None else int(s) for s in shape)


def find_frame_key(
    descriptor: Mapping[str, Any],
    *,
    detector_key: str | None = None,
    frame_shape: tuple[int, int] | None = None,
) -> str | None:
    """Find the data key holding detector frames in a descriptor.

    Parameters
    ----------
    descriptor : mapping
        An EventDescriptor document.
    detector_key : str, optional
        The key to use; None picks the largest data key of at least two
        dimensions, preferring those whose last two match ``frame_shape``.
    frame_shape : tuple of int, optional
        Expected ``(rows, cols)`` of a frame.

    Returns
    -------
    str or None
        The key, or None when the descriptor holds no frames.
    """
    data_keys: Mapping[str, Any] = descriptor.get("data_keys", {})
    if detector_key is not None:
        return detector_key if detector_key in data_keys else None
    best: tuple[bool, int, str] | None = None
    for key, dk in data_keys.items():
        shape = data_key_shape(dk)
        if len(shape) < 2 or min(shape[-2:]) < 2:
            continue
        # a key of the expected shape wins; another one is still taken, so
        # a wrong geometry fails the derived run instead of going unnoticed
        fits = frame_shape is None or shape[-2:] == tuple(frame_shape)
        rank = (fits, shape[-1] * shape[-2], key)
        if best is None or rank[:2] > best[:2]:
            best = rank
    return None if best is None else best[2]


def frame_source_kind(descriptor: Mapping[str, Any], key: str) -> str:
    """How a frame key's data arrive: ``"inline"``, ``"stream"`` or ``"legacy"``.

    ``"stream"`` is StreamResource/StreamDatum (``external="STREAM:"``),
    ``"legacy"`` is Resource/Datum (any other ``external`` value).
    """
    external = descriptor["data_keys"][key].get("external")
    if not external:
        return "inline"
    return "stream" if str(external).upper().startswith("STREAM") else "legacy"


def positive_number(value: Any) -> float | None:
    """``float(value)`` if finite and > 0 (booleans excluded), else None."""
    if isinstance(value, bool):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None


def exposure_keys(keys: Iterable[str]) -> list[str]:
    """Keys that name an exposure time (``*acquire_time``, ...), best first."""
    candidates: list[tuple[int, str]] = []
    for key in keys:
        name = key.lower()
        if any(bad in name for bad in _NOT_EXPOSURE):
            continue
        for rank, suffix in enumerate(_EXPOSURE_SUFFIXES):
            if name.endswith(suffix):
                candidates.append((rank, key))
                break
    return [key for _, key in sorted(candidates)]


def _match_exposure(values: Mapping[str, Any]) -> float | None:
    """Exposure time in s from the best-matching key of a flat mapping."""
    for key in exposure_keys(values):
        value = positive_number(values[key])
        if value is not None:
            return value
    return None


def find_exposure_time(
    *,
    descriptor: Mapping[str, Any] | None = None,
    frame_key: str | None = None,
    event_data: Mapping[str, Any] | None = None,
    start: Mapping[str, Any] | None = None,
) -> tuple[float | None, str]:
    """Exposure time of one frame in s, and where it was found.

    Looked for, in order: the configuration of the detector object that
    owns ``frame_key`` (its ``*acquire_time``/``*exposure_time``/... key),
    the configuration of any other object, the event data, the start
    document (``xsvs_exposure_time``, ``exposure_time``, ``acquire_time``).

    Returns
    -------
    value : float or None
        Exposure time in s, None when none was found.
    origin : str
        ``"configuration"``, ``"event"``, ``"start"`` or ``""``.
    """
    if descriptor is not None:
        config: Mapping[str, Any] = descriptor.get("configuration", {}) or {}
        owner = None
        if frame_key is not None:
            owner = (
                descriptor.get("data_keys", {}).get(frame_key, {}).get("object_name")
            )
            for obj, keys in (descriptor.get("object_keys") or {}).items():
                if frame_key in keys:
                    owner = obj
        first = [owner] if isinstance(owner, str) and owner in config else []
        objects = first + [o for o in config if o != owner]
        for obj in objects:
            value = _match_exposure(config[obj].get("data", {}) or {})
            if value is not None:
                return value, "configuration"
    if event_data is not None:
        value = _match_exposure(event_data)
        if value is not None:
            return value, "event"
    if start is not None:
        for key in ("xsvs_exposure_time", "exposure_time", "acquire_time"):
            value = positive_number(start.get(key))
            if value is not None:
                return value, "start"
    return None, ""


def stack_frames(value: Any, frame_shape: tuple[int, ...]) -> NDArray[Any]:
    """Return inline frame data as a ``(n, rows, cols)`` stack.

    Parameters
    ----------
    value : array_like
        One frame, a stack, or a list of those (EventPage data).
    frame_shape : tuple of int
        ``(rows, cols)``.

    Raises
    ------
    XSVSError
        If the data cannot be viewed as frames of that shape.
    """
    arr = np.asarray(value)
    rows, cols = frame_shape[-2:]
    if arr.ndim < 2 or arr.shape[-2:] != (rows, cols):
        raise DocumentError(
            f"inline frame data of shape {arr.shape} do not end with the frame "
            f"shape {(rows, cols)}"
        )
    return arr.reshape(-1, rows, cols)
