"""Flat field (pixel efficiency) and the speckle contrast.

Pixel efficiencies ``w_i`` (mean 1, variance ``s_w^2``) multiply each
pixel's mean count.  Pooling raw counts of pixels with different ``w``
adds variance, so the apparent contrast is

    beta_app = beta + s_w^2 (1 + beta)

(``apparent_contrast``).  The legacy pyxsvs tool divided each frame by the
flat field and rounded (``divide_round``), which does not remove the bias at
low counts (a 1 stays 1 unless ``w < 2/3``) and adds its own.  The unbiased
route keeps integer counts and fits per-pixel-group means ``kbar * w_g``
(``fit_grouped_mle`` with weights, estimator ``"mle-weighted"``).  See
``docs/explanation/statistics.md``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from xsvs_bluesky.core._contrast import EstimatorError

__all__ = [
    "apparent_contrast",
    "corrected_contrast",
    "divide_round",
    "efficiency_variance",
]


def divide_round(
    frame: ArrayLike, flat: ArrayLike, *, dtype: DTypeLike | None = None
) -> NDArray:
    """Legacy flat-field treatment: ``numpy.around(frame / flat)``.

    Parameters
    ----------
    frame : array_like
        One frame ``(rows, cols)`` or a stack ``(n, rows, cols)`` of counts.
    flat : array_like
        Flat field ``(rows, cols)`` (relative efficiency, mean ~1).
    dtype : numpy dtype, optional
        When given (an integer dtype, to feed a histogram), the result is
        cast to it; pixels where the division is not finite (flat <= 0 or
        NaN: they must be masked anyway) become 0.  By default the legacy
        float64 result is returned unchanged (``inf``/``nan`` kept).

    Returns
    -------
    numpy.ndarray
        Rounded (half to even, as ``numpy.around``) flat-divided counts.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.around(np.asarray(frame, dtype=np.float64) / np.asarray(flat))
    if dtype is None:
        return out
    return np.where(np.isfinite(out), out, 0.0).astype(dtype)


def efficiency_variance(flat: ArrayLike, mask: ArrayLike | None = None) -> float:
    """Variance ``s_w^2`` of the relative efficiency ``w = flat / mean(flat)``.

    Parameters
    ----------
    flat : array_like
        Flat field.
    mask : array_like of bool, optional
        True for excluded pixels (the package convention).  Pixels with a
        non-finite or non-positive flat value are excluded too.

    Returns
    -------
    float
        ``var(w)`` over the used pixels (ddof = 0).
    """
    f = np.asarray(flat, dtype=np.float64)
    used = np.isfinite(f) & (f > 0)
    if mask is not None:
        m = np.asarray(mask, dtype=bool)
        if m.shape != f.shape:
            raise EstimatorError(
                f"mask shape {m.shape} does not match flat field shape {f.shape}"
            )
        used &= ~m
    if not np.any(used):
        raise EstimatorError("flat field has no usable pixel (all masked or <= 0)")
    w = f[used] / f[used].mean()
    return float(w.var())


def apparent_contrast(beta: ArrayLike, efficiency_var: ArrayLike) -> NDArray:
    """Contrast seen in pooled raw counts, ``beta + s_w^2 (1 + beta)``.

    Parameters
    ----------
    beta : float or array_like
        True speckle contrast.
    efficiency_var : float or array_like
        Variance of the relative pixel efficiency (or of any relative mean
        that varies across the pooled samples, e.g. a frame-to-frame drift).

    Returns
    -------
    numpy.ndarray
        The apparent contrast (to first order exact for the moments and, up to
        small terms, for the MLE).
    """
    b = np.asarray(beta, dtype=np.float64)
    s2 = np.asarray(efficiency_var, dtype=np.float64)
    return b + s2 * (1.0 + b)


def corrected_contrast(beta_apparent: ArrayLike, efficiency_var: ArrayLike) -> NDArray:
    """Invert :func:`apparent_contrast`: ``(beta_app - s_w^2) / (1 + s_w^2)``.

    A quick correction of results obtained from raw pooled counts; the
    flat-field-aware MLE (``"mle-weighted"``) is the better fix.
    """
    b = np.asarray(beta_apparent, dtype=np.float64)
    s2 = np.asarray(efficiency_var, dtype=np.float64)
    return (b - s2) / (1.0 + s2)
