"""The negative-binomial (Poisson-gamma) law of speckle photon counts.

``P(k) = Gamma(k+M) / (Gamma(k+1) Gamma(M)) (M/(M+kbar))^M (kbar/(M+kbar))^k``
with mean ``kbar`` and variance ``kbar + kbar^2/M``; ``M`` is the number of
coherent modes and ``beta = 1/M`` the speckle contrast.  ``M = inf`` is the
Poisson law.  The pmf is evaluated in log space with ``gammaln``.

The small helpers at the end (``_h``, ``_dh``) are the numba building blocks
of the likelihood in the contrast parametrisation, shared by the fitters.

References
----------
Li et al., J. Synchrotron Rad. 21, 1288 (2014).
"""

from __future__ import annotations

import math

import numba
import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import gammaln, xlogy

__all__ = ["nbinom_logpmf", "nbinom_pmf"]


def nbinom_logpmf(k: ArrayLike, kbar: ArrayLike, M: ArrayLike) -> NDArray[np.float64]:
    """Natural logarithm of the negative-binomial pmf.

    Parameters
    ----------
    k : array_like
        Photon counts (>= 0).  Non-integer values give the analytic
        continuation of the formula (gamma functions), as in scikit-beam.
    kbar : float or array_like
        Mean count per pixel (> 0; 0 gives ``P(0) = 1``).
    M : float or array_like
        Number of modes (> 0); ``numpy.inf`` gives the Poisson law.

    Returns
    -------
    numpy.ndarray
        ``log P(k; kbar, M)``, broadcast over the inputs; ``-inf`` for
        ``k < 0``.
    """
    k_arr = np.asarray(k, dtype=float)
    kbar_arr = np.asarray(kbar, dtype=float)
    m_arr = np.asarray(M, dtype=float)
    k_arr, kbar_arr, m_arr = np.broadcast_arrays(k_arr, kbar_arr, m_arr)
    out = np.empty(k_arr.shape, dtype=float)
    valid = k_arr >= 0
    poisson = valid & np.isinf(m_arr)
    nbin = valid & ~np.isinf(m_arr)
    out[~valid] = -np.inf
    if np.any(poisson):
        kp, mu = k_arr[poisson], kbar_arr[poisson]
        out[poisson] = xlogy(kp, mu) - mu - gammaln(kp + 1.0)
    small = nbin & (m_arr <= _LARGE_M)
    if np.any(small):
        kn, mu, m = k_arr[small], kbar_arr[small], m_arr[small]
        # log(M/(M+kbar)) = -log1p(kbar/M); xlogy so that k = 0 at kbar = 0
        # gives 0, not nan.
        out[small] = (
            gammaln(kn + m)
            - gammaln(kn + 1.0)
            - gammaln(m)
            - m * np.log1p(mu / m)
            + xlogy(kn, mu)
            - kn * np.log(m + mu)
        )
    large = nbin & (m_arr > _LARGE_M)
    if np.any(large):
        out[large] = _logpmf_large_m(k_arr[large], kbar_arr[large], m_arr[large])
    return out if out.ndim else out[()]


#: Above this M, gammaln(k+M) - gammaln(M) is formed by Stirling's series.
_LARGE_M = 1e4


def _stirling_tail(z: NDArray) -> NDArray:
    # ln Gamma(z) - [(z - 1/2) ln z - z + ln(2 pi)/2], to 1e-20 for z > 1e4
    return 1.0 / (12.0 * z) - 1.0 / (360.0 * z**3)


def _logpmf_large_m(k: NDArray, mu: NDArray, m: NDArray) -> NDArray:
    """Log pmf for large M without the cancellation of ``gammaln(k+M) - gammaln(M)``.

    ``ln Gamma(M+k) - ln Gamma(M) = (M - 1/2) log1p(k/M) + k ln(M+k) - k +
    tail(M+k) - tail(M)``, and the ``k ln(M+k) - k ln(M+kbar)`` pair is
    written as ``k log1p((k - kbar)/(M + kbar))``.
    """
    return (
        (m - 0.5) * np.log1p(k / m)
        - m * np.log1p(mu / m)
        + k * np.log1p((k - mu) / (m + mu))
        - k
        + xlogy(k, mu)
        - gammaln(k + 1.0)
        + (_stirling_tail(m + k) - _stirling_tail(m))
    )


def nbinom_pmf(k: ArrayLike, kbar: ArrayLike, M: ArrayLike) -> NDArray[np.float64]:
    """Negative-binomial (Poisson-gamma) probability of ``k`` photons.

    Equals ``scipy.stats.nbinom(n=M, p=M/(M+kbar)).pmf(k)`` at integer ``k``,
    evaluated in log space so that large ``k`` and ``M`` neither overflow nor
    lose precision.  At non-integer ``k`` it is the gamma-function
    continuation of the same formula (scipy returns 0 there).

    Parameters
    ----------
    k : array_like
        Photon counts (>= 0).
    kbar : float or array_like
        Mean count per pixel and frame.
    M : float or array_like
        Number of coherent modes ``1/beta`` (> 0); ``numpy.inf`` is Poisson.

    Returns
    -------
    numpy.ndarray
        ``P(k; kbar, M)``, broadcast over the inputs.

    References
    ----------
    Li et al., J. Synchrotron Rad. 21, 1288 (2014).

    Examples
    --------
    >>> import numpy as np
    >>> np.round(nbinom_pmf(np.array([0.0, 0.4, 0.8]), 3.15, 1.9), 8)
    array([0.15609113, 0.17669628, 0.18451672])
    """
    return np.exp(nbinom_logpmf(k, kbar, M))


# --------------------------------------------------------------------------
# numba helpers for the likelihood in the contrast parametrisation
# --------------------------------------------------------------------------
# With b = beta = 1/M and x = kbar * b the NB log-likelihood contains
# -N log1p(x) / b^2-type terms whose naive evaluation cancels badly for
# small b.  They are written with
#     h(x) = (x - log1p(x)) / x^2   (h(0) = 1/2)
# and its derivative, both by their Taylor series for small x.

_SERIES_X = 0.1
_SERIES_TERMS = 17  # 0.1**17 < 1e-16
# h(x) = sum_n (-1)^n x^n / (n + 2);  h'(x) = sum_n (-1)^(n+1) (n+1) x^n / (n + 3)
_H_COEF = np.array([(-1.0) ** n / (n + 2) for n in range(_SERIES_TERMS)])
_DH_COEF = np.array(
    [(-1.0) ** (n + 1) * (n + 1) / (n + 3) for n in range(_SERIES_TERMS)]
)


@numba.njit(cache=True)
def _h(x: float) -> float:  # pragma: no cover - compiled
    """Return ``(x - log1p(x)) / x^2`` for ``x >= 0``, exact near 0."""
    if x < _SERIES_X:
        total = 0.0
        for n in range(_SERIES_TERMS - 1, -1, -1):  # Horner
            total = total * x + _H_COEF[n]
        return total
    return (x - math.log1p(x)) / (x * x)


@numba.njit(cache=True)
def _dh(x: float) -> float:  # pragma: no cover - compiled
    """Return the derivative of :func:`_h`, ``1/(x (1+x)) - 2 h(x) / x``."""
    if x < _SERIES_X:
        total = 0.0
        for n in range(_SERIES_TERMS - 1, -1, -1):
            total = total * x + _DH_COEF[n]
        return total
    return 1.0 / (x * (1.0 + x)) - 2.0 * _h(x) / x
