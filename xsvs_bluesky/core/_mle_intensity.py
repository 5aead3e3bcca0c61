"""Intensity-aware maximum likelihood of the contrast (``"mle-intensity"``).

Pixel ``i`` of a ring has the mean count ``mu_i = kbar * w_i * s_i``: ``w_i``
its efficiency (flat field) and ``s_i = exp(c_1 x_i + c_2 x_i^2)`` the
smooth static intensity across the ring, ``x_i = (q_i - q_j) / dq``.  The
histograms are kept per (sub-ring, efficiency group) of the ring
(:func:`~xsvs_bluesky.core._intensity_groups.intensity_groups`); at the end

1. the shape ``c`` is fitted to the groups' photon totals (Poisson
   quasi-likelihood, i.e. the exposure's own averaged image summed over
   each group's pixels, evaluated pixel by pixel);
2. each group gets its mean ``kbar * a_g`` with ``a_g = mean_g(w_i s_i)``
   and, for the spread ``v_g = var_g(w_i s_i) / a_g^2`` left inside it,
   the contrast ``beta_g = beta + v_g (1 + beta)`` (the pooled law of its
   pixels has these first two factorial moments);
3. ``kbar`` and ``beta`` are fitted jointly on the group histograms by the
   compiled kernel of ``"mle-weighted"``.

The mean parameters (``kbar``, ``c``) and ``beta`` are orthogonal in the
negative-binomial likelihood, so fitting the shape on the same data costs
the error of ``beta`` nothing to first order.  See
``docs/explanation/statistics.md`` and decision record 0005.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._contrast import (
    ContrastEstimate,
    EstimatorError,
    as_counts,
    empty_estimate,
)
from xsvs_bluesky.core._intensity_groups import IntensityGroups
from xsvs_bluesky.core._mle import _flags, _result
from xsvs_bluesky.core._mle_kernels import _fit_shared, _group_moments, _sample_info

__all__ = ["IntensityFit", "fit_intensity_mle", "fit_intensity_partition"]

NAME = "mle-intensity"
_MAX_DEGREE = 2
_MAX_ITER = 30


@dataclass(frozen=True)
class IntensityFit:
    """Intensity-aware contrast of one ring and the intensity model behind it.

    Attributes
    ----------
    estimate : ContrastEstimate
        The contrast (``estimator="mle-intensity"``).
    shape : tuple of float
        Coefficients ``(c_1, c_2)`` of ``log s = c_1 x + c_2 x^2`` (fewer when
        the ring has fewer sub-rings with pixels; ``()`` for a flat shape).
    spread : float
        ``var(mu_i) / mean(mu_i)^2`` over the ring's pixels: a pooled fit of
        the raw counts would read ``beta + spread (1 + beta)``.
    q_eff : float
        ``sqrt(sum mu_i^2 q_i^2 / sum mu_i^2)`` (1/Angstrom): the q at which
        a ring's contrast ``sum mu_i^2 beta_i / sum mu_i^2`` samples a
        rate ``Gamma = D q^2`` (NaN when unknown).
    """

    estimate: ContrastEstimate
    shape: tuple[float, ...]
    spread: float
    q_eff: float


def _fit_shape(
    s_g: NDArray[np.float64],
    frames_g: NDArray[np.float64],
    x: NDArray[np.float64],
    w: NDArray[np.float64],
    label: NDArray[np.intp],
    degree: int,
) -> NDArray[np.float64]:
    """Fisher scoring of ``log E_g = c_0 + log(F_g sum_g w_i exp(c . x_i^k))``."""
    n_g = s_g.size
    powers = np.vstack([x**k for k in range(1, degree + 1)])
    coef = np.zeros(degree)
    u = w.copy()
    s_total = s_g.sum()
    jac = np.zeros((degree + 1, n_g))
    for _ in range(_MAX_ITER):
        moments = _group_moments(label, u, powers, n_g)
        u_g = moments[0]
        m_g = frames_g * u_g
        c0 = math.log(s_total / m_g.sum())
        e_g = math.exp(c0) * m_g
        jac[0] = 1.0
        nz = u_g > 0
        for k in range(degree):
            jac[k + 1] = 0.0
            np.divide(moments[k + 1], u_g, out=jac[k + 1], where=nz)
        info = (jac * e_g) @ jac.T
        score = jac @ (s_g - e_g)
        try:
            step = np.linalg.solve(info, score)[1:]
        except np.linalg.LinAlgError:
            break
        if not all(map(math.isfinite, step.tolist())):
            break
        step = np.minimum(np.maximum(step, -2.0), 2.0)  # np.clip of finite steps
        coef += step
        u = w * np.exp(coef @ powers)
        if max(map(abs, step.tolist())) < 1e-10:
            break
    return coef


def fit_intensity_mle(
    counts: ArrayLike,
    offset: ArrayLike,
    efficiency: ArrayLike,
    label: ArrayLike,
    *,
    center: float = math.nan,
    half_width: float = math.nan,
    degree: int | None = None,
) -> IntensityFit:
    """Contrast of one ring from histograms of its (sub-ring, efficiency) groups.

    Parameters
    ----------
    counts : array_like, shape (G, K)
        Photon-count histograms of the ring's groups, summed over frames.
    offset : array_like, shape (P,)
        ``(q_i - q_j) / dq`` of each of the ring's P pixels.
    efficiency : array_like, shape (P,)
        Efficiency ``w_i`` of each pixel (flat field; ones without one).
    label : array_like of int, shape (P,)
        Group ``0 .. G-1`` of each pixel.
    center, half_width : float, optional
        ``q_j`` and ``dq`` (1/Angstrom), only to report ``q_eff``.
    degree : int, optional
        Degree of the polynomial ``log s(x)`` (0: flat); default see Notes.

    Returns
    -------
    IntensityFit
        ``estimate.kbar`` is the fitted mean count per pixel sample;
        ``beta_err`` the profile observed information of ``beta``.  Flags as
        :func:`~xsvs_bluesky.core.estimators.fit_grouped_mle`.

    Raises
    ------
    EstimatorError
        On inconsistent shapes, negative counts or labels out of range.

    Notes
    -----
    The default degree is ``min(2, n - 1)`` with ``n`` the number of groups
    whose pixels do not all share one mean offset (distinct group mean
    offsets), so a ring with a single sub-ring gets a flat shape.
    """
    arr = as_counts(counts, 2)
    x = np.ascontiguousarray(offset, dtype=np.float64).ravel()
    w = np.ascontiguousarray(efficiency, dtype=np.float64).ravel()
    lab = np.ascontiguousarray(label, dtype=np.intp).ravel()
    n_groups = arr.shape[0]
    if not x.size == w.size == lab.size:
        raise EstimatorError(
            f"offset, efficiency and label must have one entry per pixel, got "
            f"sizes {x.size}, {w.size}, {lab.size}"
        )
    if lab.size and (lab.min() < 0 or lab.max() >= n_groups):
        raise EstimatorError(
            f"label must lie in [0, {n_groups}) (one per histogram), got "
            f"[{lab.min()}, {lab.max()}]"
        )
    npix_g = np.bincount(lab, minlength=n_groups).astype(np.float64)
    if np.any((npix_g == 0) & (arr.sum(axis=1) > 0)):
        raise EstimatorError("a group with samples has no pixel in label")
    n_g = arr.sum(axis=1)
    s_g = arr @ np.arange(arr.shape[1], dtype=np.float64)
    n = float(n_g.sum())
    if not math.isfinite(n):
        raise EstimatorError(f"counts must be finite, got a sum of {n!r}")
    if n <= 0.0 or not np.any(arr[:, 1:]):
        empty = empty_estimate(NAME, round(n), 0.0 if n > 0 else math.nan)
        return IntensityFit(empty, (), math.nan, math.nan)
    frames_g = np.divide(n_g, npix_g, out=np.zeros(n_groups), where=npix_g > 0)
    if degree is None:
        has = npix_g > 0
        mean_x = np.bincount(lab, weights=x, minlength=n_groups)[has] / npix_g[has]
        distinct = np.unique(np.round(mean_x, 6)).size
        degree = min(_MAX_DEGREE, distinct - 1)
    coef = _fit_shape(s_g, frames_g, x, w, lab, degree) if degree > 0 else np.zeros(0)
    s = np.exp(sum(c * x ** (k + 1) for k, c in enumerate(coef))) if degree else 1.0
    u = w * s
    u = u / u.mean()
    sum_u, sum_u2 = _group_moments(lab, u, u[None], n_groups)
    used = npix_g > 0
    a_g = np.ones(n_groups)
    v_g = np.zeros(n_groups)
    a_g[used] = sum_u[used] / npix_g[used]
    v_g[used] = np.maximum(sum_u2[used] / npix_g[used] / a_g[used] ** 2 - 1.0, 0.0)
    scl = 1.0 + v_g
    ones = np.ones(n_groups)
    b, eta, info, var_eta, converged, _, n, _, q = _fit_shared(
        arr, a_g, -1.0, v_g, scl, ones
    )
    if b > 0.0:
        # weight the groups so that the root averages the pixels' contrasts
        # with weights mu_i^2 (the ring's contrast), not with the
        # information mu^2 / (1 + mu b)^2 (roughly) that the likelihood uses
        mu_g = math.exp(eta) * a_g
        info_g = scl * scl * _sample_info(mu_g, v_g + scl * b)
        lw = np.divide(mu_g * mu_g * scl, info_g, out=ones.copy(), where=info_g > 0)
        lw /= np.mean(lw[n_g > 0])
        b1, eta1, _, var_eta1, conv1, _, _, _, _ = _fit_shared(
            arr, a_g, b, v_g, scl, lw
        )
        if conv1 and b1 > 0.0:
            b, eta, var_eta, converged = b1, eta1, var_eta1, conv1
            mu_g = math.exp(eta) * a_g
            info_g = n_g * scl * scl * _sample_info(mu_g, v_g + scl * b)
            den = float(lw @ info_g)
            info = den * den / float((lw * lw) @ info_g) if den > 0.0 else math.nan
    kbar = math.exp(eta) * float(n_g @ a_g) / n
    kbar_err = kbar * math.sqrt(var_eta) if var_eta > 0.0 else math.nan
    est = _result(b, info, kbar, kbar_err, NAME, _flags(b == 0.0, q, converged), n)
    spread = float(np.mean(u * u) - 1.0)
    q_eff = math.nan
    if math.isfinite(center) and math.isfinite(half_width):
        q_pix = center + half_width * x
        q_eff = math.sqrt(float(np.sum(u * u * q_pix * q_pix) / np.sum(u * u)))
    return IntensityFit(est, tuple(float(c) for c in coef), spread, q_eff)


def fit_intensity_partition(
    counts: ArrayLike, groups: IntensityGroups, partition: int
) -> IntensityFit:
    """:func:`fit_intensity_mle` of one partition of accumulated group histograms.

    Parameters
    ----------
    counts : array_like, shape (G_total, K)
        Histograms of every group of ``groups`` (``HistogramAccumulator.counts``).
    groups : IntensityGroups
        The groups the histograms were accumulated over.
    partition : int
        Partition index.

    Returns
    -------
    IntensityFit
    """
    idx = groups.members(partition)
    arr = np.asarray(counts)
    if idx.size == 0:
        return IntensityFit(empty_estimate(NAME), (), math.nan, math.nan)
    return fit_intensity_mle(
        arr[idx],
        groups.offset[partition],
        groups.efficiency[partition],
        groups.label[partition],
        center=float(groups.centers[partition]),
        half_width=groups.half_width,
    )
