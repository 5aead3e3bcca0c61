"""Closed-form contrast estimators: moments, low-count identities, legacy R-1.

All take one histogram ``h_k`` (k = 0, 1, ... photons) and return a
:class:`ContrastEstimate` whose standard error comes from the delta method
on the multinomial covariance of the histogram,
``Cov(P_i, P_j) = (P_i delta_ij - P_i P_j) / N``.

For the negative-binomial law the identities

    P1/P0 = kbar / (1 + kbar beta),  P2/P1 = (1 + beta) kbar / (2 (1 + kbar beta))

hold exactly, so ``P0/P1 - 1/kbar = beta`` and ``2 P0 P2 / P1^2 - 1 = beta``
for any ``kbar``.  Their standard error tends to ``sqrt(2(1+beta)/N)/kbar``
when ``kbar -> 0``.  The legacy "R-1", ``2 P2 (1 - P1)/P1^2 - 1``, agrees
with them only for ``kbar << 1``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._contrast import (
    FLAG_LEGACY_R1,
    FLAG_LOW_STATISTICS,
    FLAG_NEGATIVE,
    MIN_PAIRS,
    ContrastEstimate,
    EstimatorError,
    as_counts,
    empty_estimate,
    modes_from_beta,
)

__all__ = ["LOW_COUNT_IDENTITIES", "fit_low_count", "fit_moments", "legacy_r_minus_1"]

#: Choices of :func:`fit_low_count` and the estimator names they report.
LOW_COUNT_IDENTITIES = {
    "combined": "low-count",
    "p0p1": "low-count-p0p1",
    "p0p2": "low-count-p0p2",
}


def _prepare(counts: ArrayLike, name: str) -> tuple[NDArray, float, float, float]:
    """Probabilities padded to >= 3 bins, N, kbar and the photon pairs."""
    arr = as_counts(counts, 1)
    if arr.size < 3:
        arr = np.concatenate([arr, np.zeros(3 - arr.size)])
    n = float(arr.sum())
    if not math.isfinite(n):
        raise EstimatorError(f"counts must be finite, got a sum of {n!r} ({name})")
    if n <= 0.0:
        return arr, n, math.nan, 0.0
    k = np.arange(arr.size, dtype=np.float64)
    p = arr / n
    kbar = float(p @ k)
    pairs = 0.5 * float(arr @ (k * (k - 1.0)))
    return p, n, kbar, pairs


def _delta_var(p: NDArray, n: float, ga: NDArray, gb: NDArray) -> float:
    """Multinomial covariance of two smooth functions with gradients ga, gb."""
    return float((np.sum(ga * gb * p) - (ga @ p) * (gb @ p)) / n)


def _estimate(
    beta: float,
    var: float,
    kbar: float,
    kbar_err: float,
    estimator: str,
    flags: list[str],
    pairs: float,
    n: float,
) -> ContrastEstimate:
    if pairs < MIN_PAIRS:
        flags.append(FLAG_LOW_STATISTICS)
    if beta < 0.0:
        flags.append(FLAG_NEGATIVE)
    beta_err = math.sqrt(var) if var >= 0.0 else math.nan
    m_modes, m_err = modes_from_beta(beta, beta_err)
    return ContrastEstimate(
        beta=beta,
        beta_err=beta_err,
        M=m_modes,
        M_err=m_err,
        kbar=kbar,
        kbar_err=kbar_err,
        estimator=estimator,
        flags=tuple(flags),
        n_samples=round(n),
    )


def fit_moments(counts: ArrayLike) -> ContrastEstimate:
    """Method-of-moments contrast ``beta = var/kbar^2 - 1/kbar``.

    Parameters
    ----------
    counts : array_like, shape (K,)
        Photon-count histogram ``h_k``.

    Returns
    -------
    ContrastEstimate
        ``estimator="moments"``; ``var`` is the unbiased (ddof=1) sample
        variance.  Fast but less efficient than the MLE and can be negative
        (kept, flagged ``"negative-contrast"``).  ``beta_err`` by the delta
        method from the sample central moments up to the fourth.

    Raises
    ------
    EstimatorError
        If ``counts`` is not a 1-d histogram of non-negative finite values.
    """
    p, n, kbar, pairs = _prepare(counts, "moments")
    if n <= 1.0 or not kbar > 0.0:
        return empty_estimate("moments", round(n), kbar)
    k = np.arange(p.size, dtype=np.float64) - kbar
    mu2, mu3, mu4 = (float(p @ k**2), float(p @ k**3), float(p @ k**4))
    var = mu2 * n / (n - 1.0)
    beta = var / kbar**2 - 1.0 / kbar
    g_mean = -2.0 * var / kbar**3 + 1.0 / kbar**2
    g_var = 1.0 / kbar**2
    var_beta = (
        g_mean**2 * mu2 + g_var**2 * (mu4 - mu2**2) + 2.0 * g_mean * g_var * mu3
    ) / n
    return _estimate(beta, var_beta, kbar, math.sqrt(var / n), "moments", [], pairs, n)


def fit_low_count(counts: ArrayLike, identity: str = "combined") -> ContrastEstimate:
    """Contrast from the exact low-count identities of the NB law.

    ``beta = P0/P1 - 1/kbar`` ("p0p1") and ``beta = 2 P0 P2 / P1^2 - 1``
    ("p0p2") hold exactly for the negative-binomial law at any ``kbar``;
    they use only the first bins of the histogram (plus the mean for
    "p0p1"), so they are robust to the tail but lose efficiency when
    ``kbar`` is not small.

    Parameters
    ----------
    counts : array_like, shape (K,)
        Photon-count histogram ``h_k``.
    identity : {"combined", "p0p1", "p0p2"}
        Which identity.  "combined" (estimator name ``"low-count"``) is the
        minimum-variance linear combination ``w b_01 + (1-w) b_02`` with ``w``
        from their delta-method covariance (clipped to [0, 1]).

    Returns
    -------
    ContrastEstimate
        Estimator ``"low-count"``, ``"low-count-p0p1"`` or
        ``"low-count-p0p2"``.  ``beta_err`` by the delta method on the
        multinomial covariance; it tends to ``sqrt(2(1+beta)/N)/kbar`` for
        ``kbar -> 0``.  NaN (flag ``"low-statistics"``) when ``P1 = 0``.

    Raises
    ------
    EstimatorError
        If ``identity`` is unknown or ``counts`` invalid.
    """
    if identity not in LOW_COUNT_IDENTITIES:
        raise EstimatorError(
            f"identity={identity!r} is not a low-count identity; "
            f"valid: {', '.join(LOW_COUNT_IDENTITIES)}"
        )
    name = LOW_COUNT_IDENTITIES[identity]
    p, n, kbar, pairs = _prepare(counts, name)
    if n <= 0.0 or not kbar > 0.0:
        return empty_estimate(name, round(n), kbar)
    p0, p1, p2 = float(p[0]), float(p[1]), float(p[2])
    kbar_err = math.sqrt(max(float(p @ (np.arange(p.size) - kbar) ** 2), 0.0) / n)
    if p1 <= 0.0:
        est = empty_estimate(name, round(n), kbar)
        return dataclasses.replace(est, flags=(FLAG_LOW_STATISTICS,))
    k = np.arange(p.size, dtype=np.float64)
    b01 = p0 / p1 - 1.0 / kbar
    g01 = k / kbar**2
    g01[0] += 1.0 / p1
    g01[1] -= p0 / p1**2
    b02 = 2.0 * p0 * p2 / p1**2 - 1.0
    g02 = np.zeros(p.size)
    g02[0] = 2.0 * p2 / p1**2
    g02[1] = -4.0 * p0 * p2 / p1**3
    g02[2] = 2.0 * p0 / p1**2
    v11 = _delta_var(p, n, g01, g01)
    v22 = _delta_var(p, n, g02, g02)
    if identity == "p0p1":
        beta, var = b01, v11
    elif identity == "p0p2":
        beta, var = b02, v22
    else:
        v12 = _delta_var(p, n, g01, g02)
        denom = v11 + v22 - 2.0 * v12
        w = min(max((v22 - v12) / denom, 0.0), 1.0) if denom > 0.0 else 0.5
        beta = w * b01 + (1.0 - w) * b02
        var = w * w * v11 + (1.0 - w) ** 2 * v22 + 2.0 * w * (1.0 - w) * v12
    return _estimate(beta, var, kbar, kbar_err, name, [], pairs, n)


def legacy_r_minus_1(
    counts: ArrayLike, n_samples: float | None = None
) -> ContrastEstimate:
    """Legacy low-count contrast "R-1" ``= 2 P2 (1 - P1) / P1^2 - 1``.

    Kept for comparison with published pyxsvs results.  It equals ``beta``
    only in the limit ``kbar -> 0`` (for ``kbar = 2, beta = 0.5`` it gives
    3.5); prefer :func:`fit_low_count`.

    Parameters
    ----------
    counts : array_like, shape (K,)
        Photon-count histogram ``h_k``, or a probability histogram ``P(k)``
        such as the legacy averaged density (normalised here).
    n_samples : float, optional
        Number of samples behind a probability histogram, for the standard
        error and the flags; by default ``sum(counts)``.

    Returns
    -------
    ContrastEstimate
        ``estimator="r-1"``, always flagged ``"legacy-r-1"``; ``beta_err`` by
        the delta method.
    """
    p, n, kbar, pairs = _prepare(counts, "r-1")
    if n_samples is not None and n > 0.0:
        pairs *= float(n_samples) / n
        n = float(n_samples)
    if n <= 0.0 or not kbar > 0.0:
        est = empty_estimate("r-1", round(n), kbar)
        return dataclasses.replace(est, flags=(*est.flags, FLAG_LEGACY_R1))
    p1, p2 = float(p[1]), float(p[2])
    kbar_err = math.sqrt(max(float(p @ (np.arange(p.size) - kbar) ** 2), 0.0) / n)
    if p1 <= 0.0:
        return ContrastEstimate(
            math.nan, math.nan, math.nan, math.nan, kbar, kbar_err, "r-1",
            (FLAG_LOW_STATISTICS, FLAG_LEGACY_R1), round(n),
        )  # fmt: skip
    beta = 2.0 * p2 * (1.0 - p1) / p1**2 - 1.0
    grad = np.zeros(p.size)
    grad[1] = -2.0 * p2 * (2.0 - p1) / p1**3
    grad[2] = 2.0 * (1.0 - p1) / p1**2
    var = _delta_var(p, n, grad, grad)
    return _estimate(beta, var, kbar, kbar_err, "r-1", [FLAG_LEGACY_R1], pairs, n)
