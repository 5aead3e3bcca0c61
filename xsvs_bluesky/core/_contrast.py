"""The result type shared by every contrast estimator, and its flags.

``ContrastEstimate`` is what all estimators in :mod:`xsvs_bluesky.core.estimators`
return: the speckle contrast ``beta = 1/M``, the number of modes ``M``, the
mean count ``kbar`` (photons per pixel and frame), their standard errors, the
estimator name and quality flags.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.errors import EstimatorError

__all__ = [
    "FLAGS",
    "FLAG_BOUNDARY",
    "FLAG_FALLBACK_BINS",
    "FLAG_LEGACY_R1",
    "FLAG_LOW_STATISTICS",
    "FLAG_NEGATIVE",
    "FLAG_NO_CONVERGENCE",
    "FLAG_NO_DATA",
    "ContrastEstimate",
    "EstimatorError",
]

#: The likelihood is maximal at ``beta = 0`` (sample variance <= mean):
#: ``beta`` is reported as 0 and ``M`` as infinity.
FLAG_BOUNDARY = "boundary"
#: Fewer than :data:`MIN_PAIRS` photon pairs (``sum_k h_k k(k-1)/2``): the
#: contrast information comes from pairs, so the estimate is unreliable.
FLAG_LOW_STATISTICS = "low-statistics"
#: The root finder or least-squares fit did not converge.
FLAG_NO_CONVERGENCE = "no-convergence"
#: No samples or no photons: nothing can be estimated (values are NaN).
FLAG_NO_DATA = "no-data"
#: A moment-type estimator returned a negative contrast (kept as is).
FLAG_NEGATIVE = "negative-contrast"
#: The legacy "R-1" estimator (valid only for ``kbar << 1``).
FLAG_LEGACY_R1 = "legacy-r-1"
#: pyxsvs least squares fell back to "every bin with P > 0".
FLAG_FALLBACK_BINS = "fallback-bins"

#: Every flag an estimate may carry.
FLAGS = (
    FLAG_BOUNDARY,
    FLAG_LOW_STATISTICS,
    FLAG_NO_CONVERGENCE,
    FLAG_NO_DATA,
    FLAG_NEGATIVE,
    FLAG_LEGACY_R1,
    FLAG_FALLBACK_BINS,
)

#: Below this number of photon pairs an estimate is flagged "low-statistics".
MIN_PAIRS = 10.0


@dataclass(frozen=True)
class ContrastEstimate:
    """Speckle contrast of one histogram (one partition, one exposure).

    Attributes
    ----------
    beta : float
        Speckle contrast ``beta = 1/M`` (dimensionless); 0 at the Poisson
        boundary, NaN when nothing could be estimated.
    beta_err : float
        Standard error of ``beta``.
    M : float
        Number of coherent modes ``1/beta`` (``inf`` when ``beta <= 0``).
    M_err : float
        Standard error of ``M`` (``beta_err / beta**2``).
    kbar : float
        Mean photon count per pixel and frame.
    kbar_err : float
        Standard error of ``kbar``.
    estimator : str
        Name of the estimator that produced the numbers.
    flags : tuple of str
        Quality flags, a subset of :data:`FLAGS`; empty when all is well.
    n_samples : int
        Number of pixel samples (pixels x frames) in the histogram.
    """

    beta: float
    beta_err: float
    M: float
    M_err: float
    kbar: float
    kbar_err: float
    estimator: str
    flags: tuple[str, ...] = ()
    n_samples: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON-type dictionary (floats, str, list of str, int)."""
        return {
            "beta": float(self.beta),
            "beta_err": float(self.beta_err),
            "M": float(self.M),
            "M_err": float(self.M_err),
            "kbar": float(self.kbar),
            "kbar_err": float(self.kbar_err),
            "estimator": self.estimator,
            "flags": list(self.flags),
            "n_samples": int(self.n_samples),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ContrastEstimate:
        """Inverse of :meth:`to_dict`."""
        return cls(
            beta=float(data["beta"]),
            beta_err=float(data["beta_err"]),
            M=float(data["M"]),
            M_err=float(data["M_err"]),
            kbar=float(data["kbar"]),
            kbar_err=float(data["kbar_err"]),
            estimator=str(data["estimator"]),
            flags=tuple(data.get("flags", ())),
            n_samples=int(data.get("n_samples", 0)),
        )


def make_estimate(
    beta: float,
    beta_err: float,
    M: float,
    M_err: float,
    kbar: float,
    kbar_err: float,
    estimator: str,
    flags: tuple[str, ...],
    n_samples: int,
) -> ContrastEstimate:
    """Build a :class:`ContrastEstimate` fast (hot path of the fitters).

    Equivalent to the dataclass constructor with trusted, already-typed
    arguments, but fills the instance dict directly instead of calling the
    frozen ``__setattr__`` nine times (a fit costs a few microseconds, the
    generated ``__init__`` about as much again).
    """
    obj = object.__new__(ContrastEstimate)
    d = obj.__dict__
    d["beta"] = beta
    d["beta_err"] = beta_err
    d["M"] = M
    d["M_err"] = M_err
    d["kbar"] = kbar
    d["kbar_err"] = kbar_err
    d["estimator"] = estimator
    d["flags"] = flags
    d["n_samples"] = n_samples
    return obj


def modes_from_beta(beta: float, beta_err: float) -> tuple[float, float]:
    """``M = 1/beta`` and ``SE(M) = SE(beta)/beta^2`` (``inf`` for ``beta <= 0``)."""
    if not math.isfinite(beta):
        return math.nan, math.nan
    if beta <= 0.0:
        return math.inf, math.inf
    return 1.0 / beta, beta_err / (beta * beta)


def empty_estimate(
    estimator: str, n_samples: int = 0, kbar: float = math.nan
) -> ContrastEstimate:
    """Return an all-NaN estimate flagged ``no-data``."""
    nan = math.nan
    return ContrastEstimate(
        beta=nan,
        beta_err=nan,
        M=nan,
        M_err=nan,
        kbar=kbar,
        kbar_err=nan,
        estimator=estimator,
        flags=(FLAG_NO_DATA,),
        n_samples=int(n_samples),
    )


def as_counts(counts: ArrayLike, ndim: int, name: str = "counts") -> NDArray:
    """Histogram counts as a C-contiguous float64 array, validated.

    Raises
    ------
    EstimatorError
        If the array has the wrong number of dimensions, no bins, or holds
        negative or non-finite values.
    """
    arr = np.ascontiguousarray(counts, dtype=np.float64)
    if arr.ndim != ndim or arr.shape[-1] == 0:
        what = "(K,)" if ndim == 1 else "(G, K)" if ndim == 2 else f"{ndim}-d"
        raise EstimatorError(
            f"{name} must be a histogram of shape {what} with K >= 1 bins "
            f"(counts of 0, 1, 2, ... photons), got shape {arr.shape}"
        )
    if arr.size and not arr.min() >= 0.0:
        raise EstimatorError(
            f"{name} must hold non-negative finite counts, got min {arr.min()!r}"
        )
    return arr
