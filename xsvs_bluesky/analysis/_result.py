"""The result of one exposure: :class:`ExposureResult` (contrast per q partition).

Public names are re-exported by :mod:`xsvs_bluesky.analysis`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from xsvs_bluesky.core.estimators import ContrastEstimate

__all__ = ["FLAG_FIT_FAILED", "ExposureResult", "dynamics_q", "failed_estimates"]

FLAG_FIT_FAILED = "fit-failed"
"""Flag of an estimate whose estimator raised (values are NaN)."""


def _column(estimates: Sequence[ContrastEstimate], name: str) -> NDArray[np.float64]:
    return np.array([getattr(e, name) for e in estimates], dtype=np.float64)


@dataclass(frozen=True, eq=False)
class ExposureResult:
    """Contrast of one exposure, per q partition (arrays indexed ``[q]``).

    Parameters
    ----------
    stream : str
        Name of the raw stream the frames came from.
    exposure_time : float
        Exposure time of one frame in s (NaN when unknown).
    final : bool
        True for the result at the end of the exposure, False for a progress
        snapshot (which carries no ``extra_estimates``).
    n_frames : int
        Frames analysed.
    q : numpy.ndarray
        Partition centres in 1/Angstrom.
    q_half_width : float
        Partition half-width in 1/Angstrom.
    n_pixels : numpy.ndarray
        Pixels per partition (int64).
    estimator : str
        Name of the main estimator.
    estimates : tuple of ContrastEstimate
        Main estimate per partition.
    extra_estimates : mapping
        Other estimators' results, ``{name: tuple of ContrastEstimate}``.
    counts : numpy.ndarray
        ``[q, k]`` int64 sum over frames of the per-frame histograms.
    probability : numpy.ndarray
        ``[q, k]`` mean over frames of the per-frame ``P(k)``.
    probability_std : numpy.ndarray
        ``[q, k]`` per-frame standard deviation of ``P(k)`` (legacy
        ``histStdDev``).
    trace : numpy.ndarray
        ``[frame, q]`` mean count per pixel of each frame (legacy ``trace``).
    mean_image : numpy.ndarray or None
        Averaged frame, counts per pixel and frame (raw counts, before any
        flat-field correction).
    intensity, intensity_err : numpy.ndarray
        ``I(q)``: mean over each partition of the averaged image (divided by
        the flat field when one is given) and its standard error, counts per
        pixel and frame.
    source : str
        Where the frames came from (raw run uid, file), free text.
    q_eff : numpy.ndarray or None
        ``mle-intensity`` only (None otherwise): per partition, the q at
        which the ring's contrast samples a rate ``Gamma = D q^2``,
        ``sqrt(sum mu_i^2 q_i^2 / sum mu_i^2)`` in 1/Angstrom (NaN where the
        fit had no data); see :func:`dynamics_q`.
    """

    stream: str
    exposure_time: float
    final: bool
    n_frames: int
    q: NDArray[np.float64]
    q_half_width: float
    n_pixels: NDArray[np.int64]
    estimator: str
    estimates: tuple[ContrastEstimate, ...]
    extra_estimates: Mapping[str, tuple[ContrastEstimate, ...]]
    counts: NDArray[np.int64]
    probability: NDArray[np.float64]
    probability_std: NDArray[np.float64]
    trace: NDArray[np.float64]
    mean_image: NDArray[np.float64] | None
    intensity: NDArray[np.float64]
    intensity_err: NDArray[np.float64]
    source: str = ""
    q_eff: NDArray[np.float64] | None = None

    @property
    def n_bins(self) -> int:
        """Number of histogram bins ``K`` (counts ``k = 0 .. K-1``)."""
        return int(self.probability.shape[1]) if self.probability.ndim == 2 else 0

    @property
    def kbar(self) -> NDArray[np.float64]:
        """Mean count per pixel and frame, per partition."""
        return _column(self.estimates, "kbar")

    @property
    def kbar_err(self) -> NDArray[np.float64]:
        """Standard error of :attr:`kbar`."""
        return _column(self.estimates, "kbar_err")

    @property
    def kbar_frame_std(self) -> NDArray[np.float64]:
        """Standard deviation of the trace over frames (legacy "K error")."""
        if self.trace.shape[0] == 0:
            return np.full(self.q.shape, np.nan)
        return np.asarray(np.std(self.trace, axis=0), dtype=np.float64)

    @property
    def beta(self) -> NDArray[np.float64]:
        """Speckle contrast ``beta = 1/M`` per partition."""
        return _column(self.estimates, "beta")

    @property
    def beta_err(self) -> NDArray[np.float64]:
        """Standard error of :attr:`beta`."""
        return _column(self.estimates, "beta_err")

    @property
    def M(self) -> NDArray[np.float64]:
        """Number of coherent modes per partition."""
        return _column(self.estimates, "M")

    @property
    def M_err(self) -> NDArray[np.float64]:
        """Standard error of :attr:`M`."""
        return _column(self.estimates, "M_err")

    @property
    def flags(self) -> tuple[tuple[str, ...], ...]:
        """Estimator flags per partition."""
        return tuple(tuple(e.flags) for e in self.estimates)


def failed_estimates(
    n: int, estimator: str, kbar: NDArray[np.float64]
) -> tuple[ContrastEstimate, ...]:
    """NaN estimates flagged :data:`FLAG_FIT_FAILED` for ``n`` partitions.

    ``kbar`` (per partition, may be shorter than ``n``) is kept where known.
    """
    nan = math.nan
    return tuple(
        ContrastEstimate(
            beta=nan,
            beta_err=nan,
            M=nan,
            M_err=nan,
            kbar=float(kbar[j]) if j < kbar.size else nan,
            kbar_err=nan,
            estimator=estimator,
            flags=(FLAG_FIT_FAILED,),
            n_samples=0,
        )
        for j in range(n)
    )


def dynamics_q(results: Sequence[ExposureResult]) -> NDArray[np.float64]:
    """Return the q of each partition to fit ``Gamma = D q^2`` with (1/Angstrom).

    The mean over the exposures of their :attr:`ExposureResult.q_eff` (the
    ``mu^2``-weighted q of the ring that ``mle-intensity`` reports), where
    an exposure has one; the partition centre where none has.

    Parameters
    ----------
    results : sequence of ExposureResult
        Exposures with the same partitions (``results[0].q`` is used).

    Returns
    -------
    numpy.ndarray
        One q per partition.

    Examples
    --------
    >>> dynamics_q([])
    array([], dtype=float64)
    """
    if not results:
        return np.zeros(0)
    q = np.array(results[0].q, dtype=np.float64)
    rows = [
        np.asarray(r.q_eff, dtype=np.float64)
        for r in results
        if r.q_eff is not None and np.shape(r.q_eff) == q.shape
    ]
    if not rows:
        return q
    stack = np.stack(rows)
    ok = np.isfinite(stack) & (stack > 0)
    n = ok.sum(axis=0)
    mean = np.where(ok, stack, 0.0).sum(axis=0) / np.maximum(n, 1)
    return np.asarray(np.where(n > 0, mean, q), dtype=np.float64)
