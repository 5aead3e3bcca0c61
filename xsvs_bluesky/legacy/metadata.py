"""Plain-JSON metadata from EDF headers, for replayed runs.

ESRF/Lima EDF headers carry acquisition details as free-form ``key = value``
strings. :func:`header_metadata` converts numbers, recognises the common
keys (exposure time, date, epoch time, motor and counter positions) and
returns only JSON types, with keys safe for bluesky documents (no ``.`` or
``/``).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["header_metadata", "header_value"]

# Header keys describing the binary layout: not metadata.
_LAYOUT_KEYS = {"BYTEORDER", "DATATYPE", "SIZE", "DIM_1", "DIM_2", "COMPRESSION"}
# Keys that hold a frame's exposure (count) time in s, in order of preference.
_COUNT_TIME_KEYS = ("count_time", "acq_expo_time", "exposure_time", "exposuretime")
_DATE_KEYS = ("date", "time")
_DATE_FORMATS = ("%a %b %d %H:%M:%S %Y", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")
_INT = re.compile(r"[+-]?\d+")
_UNSAFE = re.compile(r"[./]")


def header_value(text: str) -> int | float | str:
    """Convert a header value to int or float when it is one, else keep text.

    Examples
    --------
    >>> header_value("256"), header_value("1.5e-3"), header_value("take")
    (256, 0.0015, 'take')
    """
    text = text.strip()
    if _INT.fullmatch(text):
        return int(text)
    try:
        number = float(text)
    except ValueError:
        return text
    return number if math.isfinite(number) else text


def _safe_key(key: str) -> str:
    return _UNSAFE.sub("_", key.strip())


def _named_values(names: str, values: str) -> dict[str, float | str]:
    """Pair ESRF ``*_mne`` names with ``*_pos`` values (space separated)."""
    return {
        _safe_key(name): header_value(value)
        for name, value in zip(names.split(), values.split(), strict=False)
    }


def _parse_date(text: str) -> str | None:
    text = " ".join(text.split())
    for fmt in _DATE_FORMATS:
        try:
            parsed = time.strptime(text, fmt)
        except ValueError:
            continue
        return time.strftime("%Y-%m-%dT%H:%M:%S", parsed)
    return None


def header_metadata(header: Mapping[str, str]) -> dict[str, Any]:
    """Extract replay metadata from an EDF header.

    Parameters
    ----------
    header : mapping of str to str
        Header key/value pairs as :func:`~xsvs_bluesky.legacy.edf.read_header`
        returns them.

    Returns
    -------
    dict
        Plain JSON types. Always ``"header"``: every non-layout key (``.`` and
        ``/`` replaced by ``_``) with numbers converted. When found:
        ``"count_time"`` [s], ``"timestamp"`` [s since 1970, from
        ``time_of_day``], ``"date"`` (ISO 8601, local time as written),
        ``"motors"`` and ``"counters"`` (name -> position, from the ESRF
        ``motor_mne``/``motor_pos`` and ``counter_mne``/``counter_pos`` keys),
        ``"frame_number"`` (``acq_frame_nb`` or ``Image``).
    """
    lower = {key.strip().lower(): value for key, value in header.items()}
    meta: dict[str, Any] = {
        "header": {
            _safe_key(key): header_value(value)
            for key, value in header.items()
            if key.strip().upper() not in _LAYOUT_KEYS
        }
    }
    for key in _COUNT_TIME_KEYS:
        value = header_value(lower.get(key, ""))
        if isinstance(value, int | float) and value > 0:
            meta["count_time"] = float(value)
            break
    epoch = header_value(lower.get("time_of_day", ""))
    if isinstance(epoch, int | float) and epoch > 1e8:  # after 1973: an epoch
        meta["timestamp"] = float(epoch)
    for key in _DATE_KEYS:
        date = _parse_date(lower.get(key, ""))
        if date is not None:
            meta["date"] = date
            break
    for kind in ("motor", "counter"):
        names, values = lower.get(f"{kind}_mne"), lower.get(f"{kind}_pos")
        if names is not None and values is not None:
            meta[f"{kind}s"] = _named_values(names, values)
    for key in ("acq_frame_nb", "image"):
        number = header_value(lower.get(key, ""))
        if isinstance(number, int):
            meta["frame_number"] = number
            break
    return meta
