"""Visibility kernels of summed frames with dead time, and the model dispatcher.

``n`` frames of exposure ``t_e`` taken every ``P >= t_e`` and summed have a
larger contrast than one exposure of ``t_e + (n - 1) P``: the gaps carry no
blurring.  The exact kernel is a double sum over pairs of windows (derivation
in ``docs/explanation/dynamics.md``).

References
----------
Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._kernels_dyn import (
    Correlation,
    _floats,
    _numerical_one,
    _quad,
    _squared,
    _stretched_u,
    exponential_kernel,
)
from xsvs_bluesky.errors import OptionError

__all__ = ["contiguous_kernel", "dead_time_kernel", "visibility_kernel"]


def _check_acquisition(exposure: float, period: float, n_frames: float) -> int:
    n = int(n_frames)
    if n != n_frames or n < 1:
        raise OptionError(f"n_frames must be a positive integer, got {n_frames!r}")
    if not exposure > 0:
        raise OptionError(f"exposure (s) must be > 0, got {exposure!r}")
    if not period >= exposure * (1 - 1e-12):
        raise OptionError(
            f"frame period {period!r} s is shorter than the exposure "
            f"{exposure!r} s; the period must be >= the exposure"
        )
    return n


def _pair_numerical(a: float, d: float, h: Correlation, epsrel: float) -> float:
    """``int_0^a (a - u) [h(d + u) + h(d - u)] du`` for windows ``d >= a`` apart."""

    def integrand(u: float) -> float:
        return (a - u) * float(h(d + u) + h(d - u))

    return _quad(integrand, 0.0, a, epsrel)


def _dead_time_one(
    a: float,
    period: float,
    n: int,
    rate: float,
    exponent: float,
    h: Correlation | None,
    epsrel: float,
) -> float:
    """Dead-time kernel for one acquisition (see :func:`dead_time_kernel`)."""
    d = period * np.arange(1, n)  # window offsets (s)
    if h is not None:
        k0 = _numerical_one(a, h, epsrel)
        pairs = np.array([_pair_numerical(a, float(di), h, epsrel) for di in d])
    elif exponent == 1.0:
        x = rate * a
        k0 = float(exponential_kernel(x))
        # [exp(-Gamma (d - a)) - exp(-Gamma (d + a))]^2 / (2 Gamma)^2
        shape = 1.0 if x == 0 else -np.expm1(-2.0 * x) / (2.0 * x)
        pairs = (a * shape * np.exp(-rate * (d - a))) ** 2
    else:
        # second difference of G(t) = t^2 k(t) / 2 with the closed-form k
        def second(t: NDArray) -> NDArray:
            return 0.5 * t * t * _stretched_u(t * rate, np.asarray(exponent))

        k0 = float(_stretched_u(np.asarray(a * rate), np.asarray(exponent)))
        pairs = second(d + a) - 2.0 * second(d) + second(np.maximum(d - a, 0.0))
        pairs = np.maximum(pairs, 0.0)
    weights = n - np.arange(1, n)
    total = n * a * a * k0 + 2.0 * float(np.sum(weights * pairs))
    return total / (n * a) ** 2


def dead_time_kernel(
    exposure: ArrayLike,
    period: ArrayLike,
    n_frames: ArrayLike,
    *,
    rate: ArrayLike | None = None,
    exponent: ArrayLike = 1.0,
    g1: Correlation | None = None,
    g1_squared: Correlation | None = None,
    epsrel: float = 1e-10,
) -> NDArray[np.float64]:
    """Kernel of the sum of ``n`` frames of exposure ``t_e`` taken every ``P``.

    Frame ``i`` integrates over ``[i P, i P + t_e]``; the summed intensity has
    the visibility::

        beta / beta0 = 1/(n t_e)^2 sum_{i,j} int_win_i int_win_j |g1(t - t')|^2

    which equals the single-window kernel of ``n t_e`` when ``P = t_e`` and is
    larger than that of ``t_e + (n-1) P`` when ``P > t_e``.

    Parameters
    ----------
    exposure : float or array_like
        Exposure ``t_e`` of each frame (s), ``> 0``.
    period : float or array_like
        Frame period ``P`` (s), ``>= t_e`` (exposure plus dead time).
    n_frames : int or array_like
        Number of summed frames ``n >= 1``.
    rate : float or array_like, optional
        ``Gamma = 1/tau0`` (1/s) of the exponential / stretched model.
    exponent : float or array_like
        Stretching exponent (1: exponential, closed form).
    g1, g1_squared : callable, optional
        Any correlation function instead of ``rate``/``exponent`` (give one;
        see :func:`numerical_kernel`); evaluated by quadrature.
    epsrel : float
        Relative tolerance of the quadratures (numerical path only).

    Returns
    -------
    numpy.ndarray or float
        ``beta / beta0``, broadcast over the array inputs.

    Raises
    ------
    ValueError
        For ``P < t_e``, ``n < 1``, a negative rate, or when neither ``rate``
        nor a callable (or both) is given.

    Notes
    -----
    The pair of windows ``i, j`` with offset ``d = |i - j| P`` contributes
    ``C(d) = int_{-t_e}^{t_e} (t_e - |u|) |g1(d + u)|^2 du``, so the sum is
    ``n t_e^2 k(t_e) + 2 sum_{m=1}^{n-1} (n - m) C(m P)``.  For the
    exponential ``C(d) = [(exp(-Gamma (d - t_e)) - exp(-Gamma (d + t_e))) /
    (2 Gamma)]^2`` (closed form); for the stretched exponential ``C(d)`` is
    the second difference of ``G(t) = t^2 k(t) / 2`` with the closed-form
    ``k``; for a callable it is a quadrature.

    References
    ----------
    Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).
    """
    h: Correlation | None = None
    if g1 is not None or g1_squared is not None:
        if rate is not None:
            raise OptionError("give either rate (with exponent) or g1/g1_squared")
        h = _squared(g1, g1_squared)
        rate = 0.0
    elif rate is None:
        raise OptionError("give rate (1/s) or a correlation callable g1/g1_squared")
    rate_a = _floats("rate (1/s)", rate)
    exp_a = _floats("exponent", exponent, positive=True)
    arrays = np.broadcast_arrays(
        np.asarray(exposure, dtype=float),
        np.asarray(period, dtype=float),
        np.asarray(n_frames, dtype=float),
        rate_a,
        exp_a,
    )
    out = np.empty(arrays[0].shape)
    for index in np.ndindex(out.shape):
        a, p, nf, r, g = (float(arr[index]) for arr in arrays)
        if np.isnan(r) or np.isnan(g):
            out[index] = np.nan
            continue
        n = _check_acquisition(a, p, nf)
        out[index] = _dead_time_one(a, p, n, r, g, h, epsrel)
    return out[()]


def contiguous_kernel(x: NDArray, exponent: NDArray) -> NDArray[np.float64]:
    """``beta / beta0`` of contiguous exposures, no checks (arrays of one shape).

    ``x`` is the whole duration times ``Gamma``; the exponential kernel where
    ``exponent == 1``, the stretched one elsewhere.  Shared by
    :func:`visibility_kernel` and the least-squares loop of the dynamics fits.
    """
    out = np.empty(x.shape)
    plain = exponent == 1.0
    out[plain] = exponential_kernel(x[plain])
    out[~plain] = _stretched_u(x[~plain], exponent[~plain])
    return out


def visibility_kernel(
    exposure: ArrayLike,
    rate: ArrayLike,
    *,
    exponent: ArrayLike = 1.0,
    frame_period: ArrayLike | None = None,
    n_frames: ArrayLike = 1,
) -> NDArray[np.float64]:
    """``beta / beta0`` of the exponential or stretched model for an acquisition.

    Dispatches to :func:`exponential_kernel` / :func:`stretched_kernel` for
    contiguous exposures (``n_frames == 1`` or no dead time; then the duration
    is ``n_frames * exposure``) and to :func:`dead_time_kernel` otherwise.

    Parameters
    ----------
    exposure : float or array_like
        Exposure time of one frame (s).
    rate : float or array_like
        ``Gamma = 1/tau0`` (1/s).
    exponent : float or array_like
        Stretching exponent (1: exponential).
    frame_period : float or array_like, optional
        Frame period (s), ``>= exposure``; None means no dead time.
    n_frames : int or array_like
        Number of frames summed into each measurement.

    Returns
    -------
    numpy.ndarray or float
        ``beta / beta0`` broadcast over the inputs.

    Raises
    ------
    ValueError
        For a non-integer or non-positive ``n_frames``, a period shorter than
        the exposure (with ``n_frames > 1``) or a negative rate.
    """
    t = np.asarray(exposure, dtype=float)
    n = np.asarray(n_frames, dtype=float)
    period = t if frame_period is None else np.asarray(frame_period, dtype=float)
    t, n, period, r, g = np.broadcast_arrays(
        t,
        n,
        period,
        _floats("rate (1/s)", rate),
        _floats("exponent", exponent, positive=True),
    )
    bad_n = (n < 1) | (n != np.round(n))
    if np.any(bad_n):
        raise OptionError(f"n_frames must be positive integers, got {n[bad_n][0]!r}")
    overlap = (n > 1) & (period < t * (1 - 1e-12))
    if np.any(overlap):
        raise OptionError(
            f"frame period {period[overlap][0]!r} s is shorter than the exposure "
            f"{t[overlap][0]!r} s; the period must be >= the exposure"
        )
    contiguous = (n == 1) | (period <= t * (1 + 1e-12))
    out = np.empty(t.shape)
    if np.any(contiguous):
        x = t[contiguous] * n[contiguous] * r[contiguous]
        out[contiguous] = contiguous_kernel(x, g[contiguous])
    if not np.all(contiguous):
        sel = ~contiguous
        out[sel] = dead_time_kernel(
            t[sel], period[sel], n[sel], rate=r[sel], exponent=g[sel]
        )
    return out[()]
