"""pyxsvs-compatible least-squares contrast ("pyxsvs-lsq"), to reproduce old results.

The legacy pyxsvs tool (P. Kwasniewski, ESRF, ~2013) fitted each
partition's averaged per-frame probability histogram with the
negative-binomial law by weighted least squares on ``log10 P``, with ``M``
free and the mean fixed to the average per-frame mean.  This module
reproduces that algorithm number for number from exact integer histograms
(``HistogramAccumulator(..., keep_frame_histograms=True).frame_counts``),
so users can compare with what they published.  It is never the default:
the MLE is unbiased and more efficient (see ``docs/explanation/statistics.md``).

The legacy steps, per exposure and partition:

1. frames (divided by the flat field and rounded when one is used, see
   :func:`xsvs_bluesky.core.flatfield.divide_round`) are histogrammed with
   ``numpy.histogram(values, edges, density=True)``; ``edges`` are the
   integers ``0 .. 2*int(m) - 1`` when the partition mean ``m`` of the
   average of the first <= 200 (flat-divided, unrounded) frames exceeds 20,
   else ``0 .. 19``.  Values beyond the last edge are dropped, the rest
   renormalised, and the last bin is closed (it holds two count values);
2. ``histogram`` = mean of the per-frame densities, ``hist_std`` = their
   per-frame standard deviation ``sqrt(<P^2> - <P>^2)``, ``trace`` = the
   per-frame partition mean, ``K = mean(trace)``, ``K_err = std(trace)``;
3. ``scipy.optimize.leastsq`` of ``(log10 P - log10 P_NB(k; K, M)) / sigma``,
   ``sigma = hist_std / (P ln 10)``, over ``M`` only (start 5.0) on the bins
   with ``P > 1e-5`` minus the last two (when more than ``n_bins - 2`` bins
   qualify; otherwise every bin with ``P > 0``);
4. ``SE(M) = sqrt(cov * s^2)``, ``s^2 = sum(res^2) / (n_used - 1)``,
   ``beta = 1/M``, ``SE(beta) = SE(M)/M^2``; "R-1" from the averaged
   histogram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.optimize import leastsq
from scipy.special import gammaln

from xsvs_bluesky.core._contrast import (
    FLAG_FALLBACK_BINS,
    FLAG_LOW_STATISTICS,
    FLAG_NEGATIVE,
    FLAG_NO_CONVERGENCE,
    MIN_PAIRS,
    ContrastEstimate,
    EstimatorError,
)

__all__ = [
    "LEGACY_STATIC_FRAMES",
    "LegacyHistogram",
    "PyxsvsFit",
    "fit_pyxsvs_lsq",
    "legacy_bin_edges",
    "legacy_densities",
    "legacy_fit",
    "legacy_frame_density",
    "legacy_histogram",
]

#: The legacy bin edges come from the average of at most this many frames.
LEGACY_STATIC_FRAMES = 200
_MIN_PROBABILITY = 1e-5
_M_START = 5.0


def legacy_bin_edges(m: float) -> NDArray[np.float64]:
    """Legacy histogram bin edges for a partition of mean count ``m``.

    Parameters
    ----------
    m : float
        Partition mean of the average of the first <= 200 frames of the
        exposure (divided by the flat field when one is used, not rounded).

    Returns
    -------
    numpy.ndarray
        ``0, 1, ..., 2*int(m) - 1`` if ``m > 20``, else ``0, 1, ..., 19``
        (float64, as numpy.histogram edges).
    """
    if not math.isfinite(m):
        raise EstimatorError(f"legacy partition mean m must be finite, got {m!r}")
    n_edges = 2 * int(m) if m > 20 else 20
    return np.arange(n_edges, dtype=np.float64)


def legacy_frame_density(values: ArrayLike, edges: ArrayLike) -> NDArray[np.float64]:
    """Density histogram of one frame's partition values, the legacy way.

    Exactly ``numpy.histogram(values, edges, density=True)[0]``: the
    reference route from raw (float) pixel values.
    """
    density, _ = np.histogram(np.asarray(values), bins=np.asarray(edges), density=True)
    return density


def legacy_densities(frame_counts: ArrayLike, edges: ArrayLike) -> NDArray[np.float64]:
    """Legacy per-frame densities from exact integer per-frame histograms.

    Parameters
    ----------
    frame_counts : array_like, shape (F, K)
        Per-frame histograms of integer pixel values ``0 .. K-1`` of one
        partition (all values, nothing dropped).
    edges : array_like
        Consecutive integer bin edges starting at 0 (:func:`legacy_bin_edges`).

    Returns
    -------
    numpy.ndarray, shape (F, len(edges) - 1)
        Per-frame density, equal to :func:`legacy_frame_density` of the
        frame's values: the last bin holds the two last edge values, values
        beyond the last edge are dropped and the rest renormalised (a frame
        with no value in range gives NaN, as numpy does).
    """
    fc = np.asarray(frame_counts)
    e = np.asarray(edges, dtype=np.float64)
    n_bins = e.size - 1
    if fc.ndim != 2 or n_bins < 1 or not np.array_equal(e, np.arange(e.size)):
        raise EstimatorError(
            "legacy_densities needs frame_counts of shape (F, K) and edges "
            f"0, 1, ..., n; got shapes {fc.shape} and {e.shape}"
        )
    width = n_bins + 1  # values 0 .. n_bins are inside the edges
    inside = np.zeros((fc.shape[0], width), dtype=np.int64)
    take = min(width, fc.shape[1])
    inside[:, :take] = fc[:, :take]
    counts = inside[:, :n_bins].copy()
    counts[:, -1] += inside[:, n_bins]
    total = counts.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return counts / total


@dataclass(frozen=True)
class LegacyHistogram:
    """The legacy averaged histogram of one partition and exposure.

    Attributes
    ----------
    edges : numpy.ndarray
        Bin edges (photon counts); the abscissa is ``edges[:-1]``.
    histogram : numpy.ndarray
        Mean over frames of the per-frame densities ``P(k)``.
    hist_std : numpy.ndarray
        Per-frame standard deviation of the densities (legacy "histStdDev").
    trace : numpy.ndarray
        Per-frame partition mean count.
    kbar : float
        ``mean(trace)`` (legacy "K").
    kbar_err : float
        ``std(trace)`` (legacy "K" error; a spread, not a standard error).
    n_samples : int
        Pixel samples (pixels x frames).
    """

    edges: NDArray[np.float64]
    histogram: NDArray[np.float64]
    hist_std: NDArray[np.float64]
    trace: NDArray[np.float64]
    kbar: float
    kbar_err: float
    n_samples: int

    @property
    def bins(self) -> NDArray[np.float64]:
        """Left bin edges, the abscissa of the legacy fit."""
        return self.edges[:-1]


def legacy_histogram(frame_counts: ArrayLike, m: float) -> LegacyHistogram:
    """Legacy averaged histogram, its per-frame std and the trace.

    Parameters
    ----------
    frame_counts : array_like, shape (F, K)
        Per-frame integer histograms of one partition (values ``0 .. K-1``,
        complete: the trace is computed from them).
    m : float
        Partition mean of the first <= 200 frames' average (bin choice).

    Returns
    -------
    LegacyHistogram
    """
    fc = np.asarray(frame_counts)
    if fc.ndim != 2 or fc.shape[0] == 0:
        raise EstimatorError(
            f"frame_counts must have shape (F, K) with F >= 1, got {fc.shape}"
        )
    edges = legacy_bin_edges(m)
    dens = legacy_densities(fc, edges)
    n_frames = dens.shape[0]
    mean = dens.sum(axis=0) / n_frames
    mean_sq = (dens * dens).sum(axis=0) / n_frames
    std = np.sqrt(np.maximum(mean_sq - mean * mean, 0.0))
    k = np.arange(fc.shape[1], dtype=np.float64)
    n_pix = fc.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        trace = (fc @ k) / n_pix
    return LegacyHistogram(
        edges=edges,
        histogram=mean,
        hist_std=std,
        trace=trace,
        kbar=float(np.mean(trace)),
        kbar_err=float(np.std(trace)),
        n_samples=int(n_pix.sum()),
    )


def _legacy_nbinom(x: NDArray, kbar: float, m_modes: NDArray) -> NDArray:
    # the NB pmf in the legacy tool's arithmetic (gamma-ratio times powers),
    # so that the finite-difference Jacobian of leastsq sees the same numbers
    coeff = np.exp(gammaln(x + m_modes) - gammaln(x + 1.0) - gammaln(m_modes))
    return (
        coeff
        * np.power(m_modes / (kbar + m_modes), m_modes)
        * np.power(kbar / (m_modes + kbar), x)
    )


def _fit_bins(histogram: NDArray) -> tuple[NDArray, bool]:
    """Return the indices of the fitted bins and whether the fallback rule was used."""
    above = np.flatnonzero(histogram > _MIN_PROBABILITY)
    if above.size > histogram.size - 2:
        return above[:-2], False
    return np.flatnonzero(histogram > 0), True


@dataclass(frozen=True)
class PyxsvsFit:
    """Result of the pyxsvs least-squares fit of one partition.

    Attributes
    ----------
    histogram : LegacyHistogram
        The averaged histogram that was fitted.
    fitted_bins : numpy.ndarray
        Indices of the bins used in the fit.
    M, M_err : float
        Number of modes and its legacy standard error.
    beta, beta_err : float
        ``1/M`` and ``M_err / M^2``.
    r_minus_1 : float
        Legacy "R-1" of the averaged histogram.
    flags : tuple of str
        ``"fallback-bins"``, ``"no-convergence"``, ``"low-statistics"``,
        ``"negative-contrast"`` as applicable.
    """

    histogram: LegacyHistogram
    fitted_bins: NDArray[np.intp]
    M: float
    M_err: float
    beta: float
    beta_err: float
    r_minus_1: float
    flags: tuple[str, ...]

    @property
    def estimate(self) -> ContrastEstimate:
        """The fit as a :class:`ContrastEstimate` (``"pyxsvs-lsq"``).

        ``kbar_err`` keeps the legacy meaning, ``std(trace)``.
        """
        return ContrastEstimate(
            beta=self.beta,
            beta_err=self.beta_err,
            M=self.M,
            M_err=self.M_err,
            kbar=self.histogram.kbar,
            kbar_err=self.histogram.kbar_err,
            estimator="pyxsvs-lsq",
            flags=self.flags,
            n_samples=self.histogram.n_samples,
        )


def legacy_fit(frame_counts: ArrayLike, m: float) -> PyxsvsFit:
    """Run the pyxsvs least-squares fit of one partition, keeping all pieces.

    Parameters
    ----------
    frame_counts : array_like, shape (F, K)
        Per-frame integer histograms of the partition's (flat-divided and
        rounded, when the legacy flat-field treatment is wanted) pixel values.
    m : float
        Partition mean of the average of the first <= 200 frames (divided by
        the flat field, not rounded), which chooses the bins.

    Returns
    -------
    PyxsvsFit
    """
    hist = legacy_histogram(frame_counts, m)
    p = hist.histogram
    x = hist.bins
    flags: list[str] = []
    with np.errstate(invalid="ignore", divide="ignore"):
        r_minus_1 = 2.0 * p[2] * (1.0 - p[1]) / p[1] ** 2 - 1.0
    fc = np.asarray(frame_counts)
    k = np.arange(fc.shape[1], dtype=np.float64)
    if 0.5 * float(fc.sum(axis=0) @ (k * (k - 1.0))) < MIN_PAIRS:
        flags.append(FLAG_LOW_STATISTICS)
    idx, fallback = _fit_bins(p)
    if fallback:
        flags.append(FLAG_FALLBACK_BINS)
    y = np.log10(p[idx])
    sigma = hist.hist_std[idx] / (p[idx] * np.log(10))
    xk = x[idx]
    kbar = hist.kbar
    m_fit, m_err = math.nan, math.nan
    if idx.size >= 2 and np.all(sigma > 0) and math.isfinite(kbar) and kbar > 0:

        def residuals(params: NDArray) -> NDArray:
            return (y - np.log10(_legacy_nbinom(xk, kbar, params))) / sigma

        with np.errstate(all="ignore"):
            sol, cov, info, _, ier = leastsq(residuals, [_M_START], full_output=True)
        m_fit = float(sol[0])
        if cov is not None and ier in (1, 2, 3, 4):
            s_sq = float(np.sum(info["fvec"] ** 2)) / (idx.size - 1)
            m_err = math.sqrt(float(cov[0, 0]) * s_sq)
        else:
            flags.append(FLAG_NO_CONVERGENCE)
    else:
        flags.append(FLAG_NO_CONVERGENCE)
    beta = 1.0 / m_fit if m_fit != 0 else math.nan
    beta_err = m_err / m_fit**2 if m_fit != 0 else math.nan
    if beta < 0:
        flags.append(FLAG_NEGATIVE)
    return PyxsvsFit(
        histogram=hist,
        fitted_bins=idx,
        M=m_fit,
        M_err=m_err,
        beta=beta,
        beta_err=beta_err,
        r_minus_1=float(r_minus_1),
        flags=tuple(flags),
    )


def fit_pyxsvs_lsq(frame_counts: ArrayLike, m: float) -> ContrastEstimate:
    """pyxsvs-compatible least-squares contrast of one partition.

    Parameters
    ----------
    frame_counts : array_like, shape (F, K)
        Per-frame integer histograms of the partition (see :func:`legacy_fit`).
    m : float
        Partition mean of the first <= 200 frames' average (bin choice).

    Returns
    -------
    ContrastEstimate
        ``estimator="pyxsvs-lsq"``; ``kbar_err`` is the legacy ``std(trace)``.

    Raises
    ------
    EstimatorError
        If ``frame_counts`` is not (F, K) or ``m`` is not finite.
    """
    return legacy_fit(frame_counts, m).estimate
