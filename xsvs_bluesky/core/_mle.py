"""Maximum-likelihood estimators of the speckle contrast.

- :func:`fit_mle`: one histogram, ``kbar`` = sample mean, MLE of ``beta``.
- :func:`fit_grouped_mle`: several histograms fitted jointly, either with
  known relative means ``kbar * w_g`` (flat field / intensity gradient,
  ``"mle-weighted"``) or with free per-group means (intensity drift between
  frames, ``"mle-frames"``).

The compiled kernels are in ``_mle_kernels``; the statistics are explained
in ``docs/explanation/statistics.md``.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
Cox & Reid, J. R. Stat. Soc. B 49, 1 (1987) (adjusted profile likelihood).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

from xsvs_bluesky.core._contrast import (
    FLAG_BOUNDARY,
    FLAG_LOW_STATISTICS,
    FLAG_NO_CONVERGENCE,
    FLAG_NO_DATA,
    MIN_PAIRS,
    ContrastEstimate,
    EstimatorError,
    as_counts,
    empty_estimate,
    make_estimate,
)
from xsvs_bluesky.core._mle_kernels import (
    BIT_BOUNDARY,
    BIT_LOW_STATISTICS,
    BIT_NO_CONVERGENCE,
    BIT_NO_DATA,
    _fit_free,
    _fit_hist,
    _fit_shared,
)

__all__ = ["fit_grouped_mle", "fit_mle"]

_INT64 = np.dtype(np.int64)
_FLOAT64 = np.dtype(np.float64)


def _flag_set(code: int) -> tuple[str, ...]:
    names = (
        (BIT_BOUNDARY, FLAG_BOUNDARY),
        (BIT_LOW_STATISTICS, FLAG_LOW_STATISTICS),
        (BIT_NO_CONVERGENCE, FLAG_NO_CONVERGENCE),
        (BIT_NO_DATA, FLAG_NO_DATA),
    )
    return tuple(name for bit, name in names if code & bit)


#: flags tuple of every code returned by the compiled single-histogram fit
_FLAG_SETS = tuple(_flag_set(code) for code in range(16))


def _flags(boundary: bool, pairs: float, converged: bool) -> tuple[str, ...]:
    if not boundary and pairs >= MIN_PAIRS and converged:
        return ()
    flags = []
    if boundary:
        flags.append(FLAG_BOUNDARY)
    if pairs < MIN_PAIRS:
        flags.append(FLAG_LOW_STATISTICS)
    if not converged:
        flags.append(FLAG_NO_CONVERGENCE)
    return tuple(flags)


def _result(
    b: float,
    info: float,
    kbar: float,
    kbar_err: float,
    estimator: str,
    flags: tuple[str, ...],
    n: float,
) -> ContrastEstimate:
    beta_err = 1.0 / math.sqrt(info) if info > 0.0 else math.nan
    if b > 0.0:
        m_modes, m_err = 1.0 / b, beta_err / (b * b)
    else:
        m_modes, m_err = math.inf, math.inf
    return make_estimate(
        b, beta_err, m_modes, m_err, kbar, kbar_err, estimator, flags, round(n)
    )


def fit_mle(counts: ArrayLike) -> ContrastEstimate:
    """Maximum-likelihood contrast of one photon-count histogram.

    The negative-binomial log-likelihood ``sum_k h_k ln P(k; kbar, M)`` is
    maximised with ``kbar`` fixed to the sample mean (its exact MLE at any
    ``M``; ``kbar`` and ``M`` are orthogonal).  The score is solved in
    ``beta = 1/M`` by safeguarded Newton on histogram tail sums, O(K) per
    iteration and compiled, so a fit takes microseconds.

    Parameters
    ----------
    counts : array_like, shape (K,)
        Histogram ``h_k``: number of pixel samples with ``k = 0, 1, ...``
        photons.  Non-integer (expected) counts are accepted.

    Returns
    -------
    ContrastEstimate
        ``estimator="mle"``.  ``beta_err`` is ``I(M)^-1/2 / M^2`` with the
        observed information ``I(M) = N psi'(M) - sum_k h_k psi'(k+M) -
        N kbar/(M(M+kbar))``; ``kbar_err = sqrt(var/N)``.  When the sample
        variance does not exceed the mean the likelihood is maximal at
        ``beta = 0``: ``beta = 0``, ``M = inf``, flag ``"boundary"`` (the
        ``beta_err`` is then the information bound at ``beta = 0``,
        ``~ sqrt(2/N)/kbar``).  Flags ``"low-statistics"`` (fewer than 10
        photon pairs), ``"no-convergence"``; no samples or no photons give
        NaN values and ``"no-data"``.

    Raises
    ------
    EstimatorError
        If ``counts`` is not a 1-d histogram of non-negative finite values.

    References
    ----------
    Li et al., J. Synchrotron Rad. 21, 1288 (2014).

    Examples
    --------
    >>> import numpy as np
    >>> from xsvs_bluesky.core.estimators import fit_mle, nbinom_pmf
    >>> expected = 1e9 * nbinom_pmf(np.arange(60), 0.5, 4.0)
    >>> round(fit_mle(expected).beta, 6)
    0.25
    """
    # hot path: a 1-d int64/float64 array goes straight to the compiled fit
    # (which validates the values); anything else is converted once
    arr = counts if type(counts) is np.ndarray else np.asarray(counts)
    dtype = arr.dtype
    if (dtype is not _INT64 and dtype is not _FLOAT64) or arr.ndim != 1:
        arr = as_counts(arr, 1)  # converts, or raises with a clear message
    status, b, b_err, m_modes, m_err, kbar, kbar_err, code, n = _fit_hist(arr)
    if status != 0:
        raise EstimatorError(
            f"counts must be non-negative and finite, got a value {kbar!r}"
        )
    return make_estimate(
        b, b_err, m_modes, m_err, kbar, kbar_err, "mle", _FLAG_SETS[code], n
    )


def fit_grouped_mle(
    counts: ArrayLike,
    weights: ArrayLike | None = None,
    *,
    adjust: bool = True,
) -> ContrastEstimate:
    """Joint maximum-likelihood contrast of several histograms.

    Parameters
    ----------
    counts : array_like, shape (G, K)
        One histogram per group: pixels of similar efficiency
        (``weights`` given) or frames (``weights=None``).
    weights : array_like, shape (G,), optional
        Relative mean of each group, e.g. the group's mean flat-field
        efficiency (or time-averaged intensity) divided by the partition's.
        With weights, group ``g`` has mean ``kbar * w_g`` and ``kbar`` and
        ``beta`` are fitted jointly (estimator ``"mle-weighted"``, the
        flat-field-aware estimator); ``kbar`` is reported as the fitted mean
        count per sample, ``kbar * sum_g N_g w_g / N``.  Without weights
        every group has its own free mean, set to its sample mean (the exact
        MLE of an NB mean at any ``M``) and ``beta`` is shared (estimator
        ``"mle-frames"``, which removes frame-to-frame intensity drift).
    adjust : bool
        Without weights only: maximise the Cox-Reid adjusted profile
        likelihood ``l_p(beta) + 1/2 sum_g log(1 + kbar_g beta)``, which
        removes the O(G/N) bias (about ``-(1/kbar + beta) G/N``) of
        profiling ``G`` free means.  Keep True unless comparing.

    Returns
    -------
    ContrastEstimate
        ``beta_err`` from the observed information matrix (the profile
        information of ``beta``); flags as :func:`fit_mle`.

    Raises
    ------
    EstimatorError
        If ``counts`` is not (G, K) non-negative, or ``weights`` has the wrong
        length or non-positive/non-finite entries for groups with samples.

    References
    ----------
    Cox & Reid, J. R. Stat. Soc. B 49, 1 (1987).
    """
    arr = as_counts(counts, 2)
    n_groups = arr.shape[0]
    if weights is None:
        return _fit_frames(arr, adjust)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if w.shape != (n_groups,):
        raise EstimatorError(
            f"weights must have one entry per group, shape ({n_groups},), "
            f"got shape {w.shape}"
        )
    used = arr.sum(axis=1) > 0
    if not np.all(np.isfinite(w[used]) & (w[used] > 0)):
        raise EstimatorError(
            "weights must be finite and > 0 for every group with samples, "
            f"got {w[used][~(np.isfinite(w[used]) & (w[used] > 0))][:3]!r}"
        )
    w = np.where(used, w, 1.0)
    n = float(arr.sum())
    if not math.isfinite(n):
        raise EstimatorError(f"counts must be finite, got a sum of {n!r}")
    if n <= 0.0 or not np.any(arr[:, 1:]):
        return empty_estimate("mle-weighted", round(n), 0.0 if n > 0 else math.nan)
    off = np.zeros(n_groups)
    scl = np.ones(n_groups)
    b, eta, info, var_eta, converged, _, n, s, q = _fit_shared(
        arr, w, -1.0, off, scl, scl
    )
    mean_w = float(arr.sum(axis=1) @ w) / n
    kbar = math.exp(eta) * mean_w
    kbar_err = kbar * math.sqrt(var_eta) if var_eta > 0.0 else math.nan
    flags = _flags(b == 0.0, q, converged)
    return _result(b, info, kbar, kbar_err, "mle-weighted", flags, n)


def _fit_frames(arr: np.ndarray, adjust: bool) -> ContrastEstimate:
    b, info, f0, converged, _, n, s, q = _fit_free(arr, adjust, -1.0)
    if not math.isfinite(n):
        raise EstimatorError(f"counts must be finite, got a sum of {n!r}")
    if n <= 0.0 or s <= 0.0:
        return empty_estimate("mle-frames", round(n), 0.0 if n > 0 else math.nan)
    # SE of the overall mean given the per-group means and the fitted law
    n_g = arr.sum(axis=1)
    s_g = arr @ np.arange(arr.shape[1], dtype=np.float64)
    m_g = np.divide(s_g, n_g, out=np.zeros_like(s_g), where=n_g > 0)
    kbar_err = math.sqrt(float(np.sum(n_g * (m_g + b * m_g * m_g)))) / n
    flags = _flags(f0 >= 0.0, q, converged)
    return _result(b, info, s / n, kbar_err, "mle-frames", flags, n)
