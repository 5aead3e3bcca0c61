"""Masks, flat field and q partitions of a stored raw run (private).

Helpers of :mod:`xsvs_bluesky.reanalyze`: :func:`read_calibration` reads the
mask and flat-field files the run's start document names (checked against
their recorded SHA-256); :func:`merge_partitions` merges the run's q
partition parameters with new ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.errors import InputFileError, RunError

__all__ = ["merge_partitions", "read_calibration"]


def read_calibration(
    start: Mapping[str, Any], shape: tuple[int, int], *, use_flat: bool = True
) -> tuple[list[tuple[str, NDArray[np.bool_], str]], Any]:
    """Masks and flat field named by a replayed run's start document.

    Returns
    -------
    masks : list of (name, excluded pixels, sha256)
    flat_field : (name, float64 array, sha256) or None

    Raises
    ------
    InputFileError
        A file is missing, unreadable, of another shape, or changed since
        the replay (SHA-256 differs).
    """
    from xsvs_bluesky.core.geometry import check_mask_polarity
    from xsvs_bluesky.legacy import file_sha256, read_flat_field, read_mask

    uid = start.get("uid")

    def checked(entry: Mapping[str, Any], what: str) -> Path:
        path = Path(str(entry.get("path", "")))
        if not path.is_file():
            raise InputFileError(
                f"raw run {uid}: {what} {str(path)!r} not found; restore it (the "
                "analysis needs the same file) or replay the series again"
            )
        sha = file_sha256(path)
        if entry.get("sha256") and sha != entry["sha256"]:
            raise InputFileError(
                f"raw run {uid}: {what} {path} changed since the replay (sha256 "
                f"{sha[:12]}... != {str(entry['sha256'])[:12]}...); restore it or "
                "replay the series again with --force"
            )
        return path

    masks = []
    union = np.zeros(shape, dtype=bool)
    for entry in start.get("xsvs_masks") or []:
        path = checked(entry, f"mask ({entry.get('key', 'mask')})")
        excluded = read_mask(path, shape, one_is_bad=bool(entry.get("one_is_bad", 1)))
        check_mask_polarity(excluded, name=str(path))
        masks.append((path.name, excluded, str(entry.get("sha256", ""))))
        union |= excluded
    flat = None
    entry = start.get("xsvs_flat_field")
    if use_flat and isinstance(entry, Mapping):
        path = checked(entry, "flat field")
        values = read_flat_field(path, shape, mask=union)
        values[~(np.isfinite(values) & (values > 0))] = 1.0  # masked pixels only
        flat = (path.name, values, str(entry.get("sha256", "")))
    return masks, flat


def merge_partitions(
    start: Mapping[str, Any], given: Mapping[str, Any] | None
) -> dict[str, Any]:
    """Merge the run's partition parameters with the ``given`` ones.

    Parameters
    ----------
    start : mapping
        The raw run's start document (``xsvs_partitions`` or ``partitions``).
    given : mapping or None
        New parameters (1/Angstrom): ``q1``, ``q2``, ``qs``, ``dq`` (any
        subset) or ``centers`` and ``dq``; None values are ignored.

    Returns
    -------
    dict
        ``centers`` and ``dq``, or ``q1``, ``q2``, ``qs`` and ``dq``.

    Raises
    ------
    XSVSError
        A parameter is missing from both the run and ``given``.
    """
    spec = dict(start.get("xsvs_partitions") or start.get("partitions") or {})
    new = {k: v for k, v in (given or {}).items() if v is not None}
    if "centers" in new:
        spec = {"dq": spec.get("dq")}
    elif any(k in new for k in ("q1", "q2", "qs")):
        spec.pop("centers", None)
    spec.update(new)
    keys = ("centers", "dq") if "centers" in spec else ("q1", "q2", "qs", "dq")
    missing = [k for k in keys if spec.get(k) is None]
    if missing:
        raise RunError(
            f"raw run {start.get('uid')}: q partitions lack {', '.join(missing)}; "
            "give them (--q1 --q2 --qs --dq, 1/Angstrom)"
        )
    return {k: spec[k] for k in keys}
