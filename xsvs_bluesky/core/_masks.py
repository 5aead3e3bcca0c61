"""Pixel masks (True = excluded).

Public names are re-exported by :mod:`xsvs_bluesky.core.geometry`.
"""

from __future__ import annotations

import warnings

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.errors import GeometryError

__all__ = ["MaskPolarityWarning", "check_mask_polarity", "combine_masks"]


class MaskPolarityWarning(UserWarning):
    """A mask excludes most pixels: it may have the opposite polarity."""


def combine_masks(
    *masks: ArrayLike | None, shape: tuple[int, int] | None = None
) -> NDArray[np.bool_]:
    """Union of pixel masks, True = excluded.

    Any nonzero value marks an excluded pixel, as in the legacy EDF masks
    (1 = bad pixel); NaN counts as nonzero.  ``None`` entries are skipped, so
    optional masks can be passed as they are.

    Parameters
    ----------
    *masks : array_like or None
        2-d masks of one shape.
    shape : tuple of int, optional
        Expected detector shape ``(rows, columns)``; required when no mask
        is given (the result then excludes nothing).

    Returns
    -------
    numpy.ndarray
        New boolean array, True where any mask excludes the pixel.

    Raises
    ------
    GeometryError
        If a mask is not 2-d, the shapes differ (both are named) or neither
        a mask nor ``shape`` is given.

    Examples
    --------
    >>> combine_masks([[0, 1], [0, 0]], [[0, 0], [2, 0]]).tolist()
    [[False, True], [True, False]]
    """
    expected = None if shape is None else (int(shape[0]), int(shape[1]))
    source = "shape argument"
    out: NDArray[np.bool_] | None = None
    for k, mask in enumerate(masks):
        if mask is None:
            continue
        arr = np.asarray(mask)
        if arr.ndim != 2:
            raise GeometryError(
                f"mask {k} has shape {arr.shape}; give a 2-d mask (rows, columns)"
            )
        if expected is None:
            expected, source = arr.shape, f"mask {k}"
        elif arr.shape != expected:
            raise GeometryError(
                f"mask {k} has shape {arr.shape} but {source} has shape "
                f"{expected}; all masks must have the detector shape"
            )
        if out is None:
            out = arr != 0
        else:
            out |= arr != 0
    if out is None:
        if expected is None:
            raise GeometryError("combine_masks: give at least one mask or a shape")
        return np.zeros(expected, dtype=bool)
    return out


def check_mask_polarity(mask: ArrayLike, name: str = "mask") -> float:
    """Warn when a mask excludes more than half of the pixels.

    Some old masks mark *good* pixels with 1; used as they are they would
    exclude most of the detector.

    Parameters
    ----------
    mask : array_like
        Mask, nonzero = excluded.
    name : str, optional
        Name used in the warning (e.g. the file name).

    Returns
    -------
    float
        Fraction of excluded pixels.

    Warns
    -----
    MaskPolarityWarning
        If more than 50 % of the pixels are excluded.
    """
    arr = np.asarray(mask)
    fraction = float(np.count_nonzero(arr)) / arr.size if arr.size else 0.0
    if fraction > 0.5:
        warnings.warn(
            f"mask {name!r} excludes {100 * fraction:.1f}% of the pixels; it may "
            "have the opposite polarity (expected nonzero/1 = bad pixel); invert "
            "it if it marks good pixels",
            MaskPolarityWarning,
            stacklevel=2,
        )
    return fraction
