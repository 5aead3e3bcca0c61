"""Visibility kernels: the speckle contrast ``beta(T) / beta0`` of an exposure.

An exposure of length ``T`` integrates a fluctuating speckle pattern; its
contrast is the time average of the squared field correlation over the
exposure (Bandyopadhyay et al. 2005)::

    beta(T) / beta0 = (2 / T) int_0^T (1 - tau / T) |g1(tau)|^2 dtau

This module evaluates that kernel for an exponential and a stretched
exponential ``g1`` in closed form and for any ``g1`` by quadrature (frames
with dead time: ``_deadtime_dyn``).  The derivations are in
``docs/explanation/dynamics.md``.

References
----------
Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import integrate, special

from xsvs_bluesky.errors import OptionError

__all__ = [
    "exponential_kernel",
    "numerical_kernel",
    "stretched_kernel",
]

#: Below this ``y = 2 Gamma T`` the exponential kernel uses its Taylor series.
_EXP_SERIES_Y = 0.1
#: Below this ``S = 2 (T/tau0)^gamma`` the stretched kernel uses its series.
_STRETCHED_SERIES_S = 1.0
_STRETCHED_SERIES_TERMS = 40
#: ``2 / (n+2)!`` for n = 11 .. 0 (Horner order).
_EXP_SERIES_COEFFS = tuple(2.0 / math.factorial(n + 2) for n in range(11, -1, -1))

Correlation = Callable[[float], Any]


def _floats(name: str, value: ArrayLike, *, positive: bool = False) -> NDArray:
    arr = np.asarray(value, dtype=float)
    bad = arr <= 0 if positive else arr < 0
    if np.any(bad):
        first = arr[bad].flat[0]
        need = "> 0" if positive else ">= 0"
        raise OptionError(f"{name} must be {need} (NaN allowed), got {first!r}")
    return arr


def exponential_kernel(x: ArrayLike) -> NDArray[np.float64]:
    """Kernel of an exponential correlation, ``(exp(-2x) - 1 + 2x) / (2 x^2)``.

    Parameters
    ----------
    x : float or array_like
        ``Gamma * T``: relaxation rate of ``g1 = exp(-Gamma tau)`` (1/s) times
        the exposure time (s); dimensionless, ``>= 0``.  NaN propagates.

    Returns
    -------
    numpy.ndarray or float
        ``beta(T) / beta0`` (1 at ``x = 0``, ``~1/x`` for large ``x``).

    Raises
    ------
    ValueError
        If any ``x`` is negative.

    Notes
    -----
    With ``y = 2x`` the kernel is ``2 (exp(-y) - 1 + y) / y^2``.  For
    ``y < 0.1`` its Taylor series ``2 sum_n (-y)^n / (n+2)!`` avoids the
    cancellation; otherwise ``2/y - 2 (1 - exp(-y)) / y^2`` is used, which
    stays finite for very large ``x``.

    References
    ----------
    Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).

    Examples
    --------
    >>> round(float(exponential_kernel(1.0)), 8)
    0.56766764
    """
    y = 2.0 * _floats("x (Gamma * T)", x)
    return _series_or_closed(y, _EXP_SERIES_COEFFS, _exp_closed)[()]


def _exp_closed(y: NDArray) -> NDArray:
    """Exponential kernel ``2 (exp(-y) - 1 + y) / y^2`` for ``y >= 0.1``."""
    return 2.0 / y + 2.0 * np.expm1(-y) / (y * y)


def _series_or_closed(
    y: NDArray, coefficients: tuple[float, ...], closed: Callable[[NDArray], NDArray]
) -> NDArray:
    """Series ``sum_n c_n (-y)^n`` below ``y = 0.1``, else ``closed(y)``.

    ``coefficients`` in Horner order; one split shared by the exponential
    kernel and its slope.
    """
    out = np.empty_like(y)
    small = y < _EXP_SERIES_Y
    if small.any():  # the dynamics fits call this with a few points, mostly
        ys = y[small]  # all on one side: skip the other branch's ufuncs
        acc = np.zeros_like(ys)
        for coefficient in coefficients:
            acc = acc * (-ys) + coefficient
        out[small] = acc
    if not small.all():
        with np.errstate(over="ignore"):
            out[~small] = closed(y[~small])
    return out


#: ``2 n / (n+2)!`` for n = 11 .. 0 (Horner order): series of ``y dk/dy``.
_EXP_SLOPE_COEFFS = tuple(2.0 * n / math.factorial(n + 2) for n in range(11, -1, -1))


def exponential_slope(x: NDArray) -> NDArray[np.float64]:
    """``d k / d log x`` of :func:`exponential_kernel` (arrays ``>= 0``, no checks).

    With ``y = 2x`` the kernel is ``k = 2 (exp(-y) - 1 + y) / y^2`` and
    ``x dk/dx = y dk/dy = 2 (1 - exp(-y)) / y - 2 k``: the derivative of the
    model with respect to ``log Gamma``, for the analytic Jacobian of the
    exponential dynamics fit.  Below ``y = 0.1`` the series
    ``2 sum_n n (-y)^n / (n+2)!`` avoids the cancellation of the two terms.
    """
    y = 2.0 * np.asarray(x, dtype=float)
    return _series_or_closed(
        y,
        _EXP_SLOPE_COEFFS,
        lambda yb: -2.0 * np.expm1(-yb) / yb - 2.0 * _exp_closed(yb),
    )


def _stretched_u(u: NDArray, exponent: NDArray) -> NDArray:
    """Stretched kernel as a function of ``u = T / tau0`` (arrays, no checks)."""
    a = 1.0 / exponent
    s = 2.0 * u**exponent
    out = np.empty(np.broadcast(u, exponent).shape)
    u, a, s = np.broadcast_arrays(u, a, s)
    small = s < _STRETCHED_SERIES_S
    if np.any(small):
        aa, ss = a[small], s[small]
        # 2 a^2 sum_n (-S)^n / (n! (a + n) (2a + n))
        power = np.ones_like(ss)
        total = np.zeros_like(ss)
        for n in range(_STRETCHED_SERIES_TERMS):
            if n:
                power = power * (-ss) / n
            total = total + power / ((aa + n) * (2.0 * aa + n))
        out[small] = 2.0 * aa * aa * total
    big = ~small
    if np.any(big):
        aa, ss, uu = a[big], s[big], u[big]
        log_u = np.log(uu)
        log2 = np.log(2.0)
        with np.errstate(divide="ignore"):
            first = np.exp(
                np.log(2.0 * aa)
                + special.gammaln(aa)
                + np.log(special.gammainc(aa, ss))
                - aa * log2
                - log_u
            )
            second = np.exp(
                np.log(2.0 * aa)
                + special.gammaln(2.0 * aa)
                + np.log(special.gammainc(2.0 * aa, ss))
                - 2.0 * aa * log2
                - 2.0 * log_u
            )
        out[big] = first - second
    return out


def stretched_kernel(
    T: ArrayLike, tau0: ArrayLike, exponent: ArrayLike
) -> NDArray[np.float64]:
    """Kernel of a stretched exponential, ``|g1|^2 = exp(-2 (tau/tau0)^gamma)``.

    Parameters
    ----------
    T : float or array_like
        Exposure time (s), ``>= 0``.
    tau0 : float or array_like
        Relaxation time (s), ``> 0`` (the rate is ``Gamma = 1/tau0``).
    exponent : float or array_like
        Stretching exponent ``gamma > 0`` (1 is the exponential, < 1
        stretched, > 1 compressed).

    Returns
    -------
    numpy.ndarray or float
        ``beta(T) / beta0``, broadcast over the inputs.

    Raises
    ------
    ValueError
        If ``T < 0``, ``tau0 <= 0`` or ``exponent <= 0``.

    Notes
    -----
    With ``a = 1/gamma``, ``u = T/tau0`` and ``S = 2 u^gamma``, and ``P`` the
    regularised lower incomplete gamma function (``scipy.special.gammainc``)::

        beta/beta0 = 2a [ Gamma(a) P(a, S) 2^-a / u
                          - Gamma(2a) P(2a, S) 2^-2a / u^2 ]

    evaluated in log space.  For ``S < 1`` the equivalent series
    ``2 a^2 sum_n (-S)^n / (n! (a+n) (2a+n))`` is used instead.  The
    derivation is in ``docs/explanation/dynamics.md``.

    References
    ----------
    Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).

    Examples
    --------
    >>> round(float(stretched_kernel(0.3, 1.0, 0.5)), 8)
    0.57422862
    """
    t = _floats("T (exposure time, s)", T)
    tau = _floats("tau0 (relaxation time, s)", tau0, positive=True)
    g = _floats("exponent (stretching exponent)", exponent, positive=True)
    return _stretched_u(t / tau, g)[()]


def _squared(g1: Correlation | None, g1_squared: Correlation | None) -> Correlation:
    if (g1 is None) == (g1_squared is None):
        raise OptionError("give exactly one of g1 (a callable) or g1_squared")
    if g1_squared is not None:
        return g1_squared
    assert g1 is not None
    field = g1
    return lambda tau: abs(field(tau)) ** 2


def _quad(func: Callable[[float], float], lo: float, hi: float, epsrel: float) -> float:
    value, _ = integrate.quad(func, lo, hi, epsabs=0.0, epsrel=epsrel, limit=200)
    return float(value)


def _numerical_one(t: float, h: Correlation, epsrel: float) -> float:
    if t == 0.0:
        return 1.0
    # 2 int_0^1 (1 - s) h(t s) ds, split in decades of s so that a correlation
    # decaying much faster than t is not missed by the adaptive rule.
    edges = np.concatenate([[0.0], np.logspace(-16, 0, 17)])
    total = 0.0
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        total += _quad(lambda s: (1.0 - s) * float(h(t * s)), lo, hi, epsrel)
    return 2.0 * total


def numerical_kernel(
    T: ArrayLike,
    g1: Correlation | None = None,
    *,
    g1_squared: Correlation | None = None,
    epsrel: float = 1e-10,
) -> NDArray[np.float64]:
    """Kernel ``beta(T)/beta0`` of any correlation function, by quadrature.

    Parameters
    ----------
    T : float or array_like
        Exposure time(s) (s), ``>= 0``.
    g1 : callable, optional
        Field correlation ``g1(tau)`` of a float delay ``tau`` (s); may be
        complex, its squared modulus is used.
    g1_squared : callable, optional
        ``|g1(tau)|^2`` directly (give exactly one of ``g1``, ``g1_squared``).
    epsrel : float
        Relative tolerance of ``scipy.integrate.quad``.

    Returns
    -------
    numpy.ndarray or float
        ``(2/T) int_0^T (1 - tau/T) |g1(tau)|^2 dtau`` (1 at ``T = 0``).

    Raises
    ------
    ValueError
        If ``T < 0`` or not exactly one callable is given.

    References
    ----------
    Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).
    """
    h = _squared(g1, g1_squared)
    t = _floats("T (exposure time, s)", T)
    out = np.array([_numerical_one(float(v), h, epsrel) for v in t.flat])
    return out.reshape(t.shape)[()]
