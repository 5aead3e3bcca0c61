"""Fit of the contrast ``beta(t_e)`` of one q partition with a visibility kernel.

Units: exposure times in s, ``Gamma`` in 1/s, ``q`` in 1/Angstrom.

References
----------
Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import optimize, stats

from xsvs_bluesky.core._deadtime_dyn import contiguous_kernel, visibility_kernel
from xsvs_bluesky.core._diffusion_dyn import not_yet_determined
from xsvs_bluesky.core._kernels_dyn import exponential_slope
from xsvs_bluesky.errors import FitError, OptionError
from xsvs_bluesky.options import DYNAMICS_MODELS

__all__ = ["EXPONENT_BOUNDS", "MODELS", "DynamicsFit", "fit_visibility"]

logger = logging.getLogger(__name__)

#: Model names accepted by the fits (:class:`xsvs_bluesky.options.DynamicsModel`).
MODELS = DYNAMICS_MODELS

#: Default bounds of the stretching exponent in the stretched fit.
EXPONENT_BOUNDS = (0.1, 4.0)
#: p-value of chi2 below which a fit is flagged "poor-fit".
POOR_FIT_P = 1e-3
#: Evaluations of the residuals allowed per fitted parameter (plus one).  A
#: well-posed fit needs 4-40; a decay much faster than the shortest exposure
#: leaves only ``beta0 / Gamma`` determined, and the optimiser then walks that
#: valley to the evaluation limit (2000 took 0.3-1.4 s per partition, the live
#: refits of a real series spent most of their time there): it stops at
#: this limit, flagged "not-converged".
_MAX_NFEV_PER_PARAMETER = 100
#: Flag "decay-too-fast" when Gamma * (shortest exposure) exceeds this.
TOO_FAST_X = 3.0
#: Flag "decay-too-slow" when Gamma * (longest duration) is below this.
TOO_SLOW_X = 0.1


@dataclass(frozen=True)
class DynamicsFit:
    """Fit of ``beta(t_e)`` for one q partition.

    Attributes
    ----------
    partition : int
        Partition index.
    q : float
        Partition centre (1/Angstrom); NaN when unknown.
    model : str
        ``"exponential"`` or ``"stretched"``.
    gamma : float
        Relaxation rate ``Gamma = 1/tau0`` (1/s).
    gamma_err : float
        Standard error of ``gamma`` (1/s).
    beta0 : float
        Contrast at zero exposure.
    beta0_err : float
        Standard error of ``beta0``.
    exponent : float
        Stretching exponent (exactly 1 for the exponential model).
    exponent_err : float
        Its standard error (0 for the exponential model, where it is fixed).
    chi2 : float
        Weighted sum of squared residuals at the optimum.
    dof : int
        Degrees of freedom, ``n_points - n_parameters``.
    flags : tuple of str
        Warnings, see ``docs/explanation/dynamics.md`` (empty when clean).
    n_points : int
        Number of ``beta`` points used (after skipping NaN / invalid ones).
    """

    partition: int
    q: float
    model: str
    gamma: float
    gamma_err: float
    beta0: float
    beta0_err: float
    exponent: float
    exponent_err: float
    chi2: float
    dof: int
    flags: tuple[str, ...] = ()
    n_points: int = 0

    @property
    def tau0(self) -> float:
        """Relaxation time ``1/Gamma`` (s)."""
        return 1.0 / self.gamma if self.gamma != 0 else math.inf

    @property
    def reduced_chi2(self) -> float:
        """``chi2 / dof`` (NaN when ``dof == 0``)."""
        return self.chi2 / self.dof if self.dof > 0 else math.nan

    @property
    def ok(self) -> bool:
        """True when the fit produced finite ``gamma`` and ``gamma_err``."""
        return bool(np.isfinite(self.gamma) and np.isfinite(self.gamma_err))

    @property
    def determined(self) -> bool:
        """False when ``gamma`` must be shown as "not yet determined".

        That is when ``gamma`` or its error is not finite or the error is as
        large as ``gamma`` (typical of early live refits on two exposures).
        """
        return not not_yet_determined(self.gamma, self.gamma_err)

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (flags as a list, plus ``reduced_chi2``)."""
        out = asdict(self)
        out["flags"] = list(self.flags)
        out["reduced_chi2"] = self.reduced_chi2
        return out


def _failed(partition: int, q: float, model: str, flag: str, n: int) -> DynamicsFit:
    nan = math.nan
    return DynamicsFit(
        partition, q, model, nan, nan, nan, nan, nan, nan, nan, 0, (flag,), n
    )


def _as_points(
    name: str, value: ArrayLike | None, n: int, default: float
) -> NDArray[np.float64]:
    arr = np.asarray(default if value is None else value, dtype=float)
    if arr.ndim == 0:
        return np.full(n, float(arr))
    if arr.shape != (n,):
        raise OptionError(
            f"{name} has shape {arr.shape}; expected a scalar or ({n},) "
            "like exposure_times"
        )
    return arr


def _profile_grid(
    kernel_of: Callable[[ArrayLike, ArrayLike], NDArray],
    b: NDArray,
    w: NDArray,
    rates: NDArray,
    exponents: NDArray,
) -> tuple[float, float, float]:
    """Coarse grid over (rate, exponent) with beta0 solved linearly.

    Returns the ``(beta0, rate, exponent)`` of the grid point of least chi2.
    """
    rr, gg = (v.ravel() for v in np.meshgrid(rates, exponents))
    k = kernel_of(rr[:, None], gg[:, None])  # [grid, points]
    kk = np.sum(w * k * k, axis=1)
    b0 = np.sum(w * b * k, axis=1) / np.where(kk > 0, kk, 1.0)
    chi2 = np.sum(w * (b - b0[:, None] * k) ** 2, axis=1)
    best = int(np.nanargmin(chi2))
    return float(b0[best]), float(rr[best]), float(gg[best])


def _exponential_jacobian(
    t: NDArray, nf: NDArray, s: NDArray, kernel: Callable[[float, float], NDArray]
) -> Callable[[NDArray], NDArray]:
    """Analytic Jacobian of the exponential model's weighted residuals.

    For contiguous exposures of duration ``T``: ``d r / d beta0 = k / s`` and
    ``d r / d log Gamma = beta0 x k'(x) / s`` with ``x = Gamma T``
    (:func:`exponential_slope`): one slope evaluation per Jacobian instead
    of the four kernels of central differences, and no step-size error.
    ``kernel(rate, 1.0)`` is the residuals' (scipy asks for the Jacobian at
    the point whose residuals it has just computed: see :func:`_last_call`).
    """
    duration = t * nf

    def jacobian(p: NDArray) -> NDArray:
        rate = math.exp(p[1])
        out = np.empty((t.size, 2))
        out[:, 0] = kernel(rate, 1.0) / s
        out[:, 1] = p[0] * exponential_slope(duration * rate) / s
        return out

    return jacobian


def _last_call(
    kernel: Callable[[float, float], NDArray],
) -> Callable[[float, float], NDArray]:
    """``kernel`` remembering its last result (callers must not modify it)."""
    last: list[Any] = [None, None]

    def remembered(rate: float, g: float) -> NDArray:
        if last[0] != (rate, g):
            last[0], last[1] = (rate, g), kernel(rate, g)
        return last[1]

    return remembered


def _point_kernel(
    t: NDArray, period: NDArray, nf: NDArray, general: Callable[..., NDArray]
) -> Callable[[float, float], NDArray]:
    """``k(t_e; rate, exponent)`` at the points, for one scalar rate/exponent.

    The least-squares loop calls it a few hundred times per partition: for
    contiguous acquisitions (one frame, or no dead time) it evaluates
    :func:`visibility_kernel`'s contiguous branch
    (:func:`contiguous_kernel`) directly, without its broadcasting and
    checks; otherwise it is ``general``.
    """
    if not np.all((nf == 1) | (period <= t * (1 + 1e-12))):
        return general
    duration = t * nf

    def contiguous(rate: float, g: float) -> NDArray:
        return contiguous_kernel(duration * rate, np.full_like(duration, g))

    return contiguous


def fit_visibility(
    exposure_times: ArrayLike,
    beta: ArrayLike,
    beta_err: ArrayLike | None = None,
    *,
    model: str = "exponential",
    partition: int = 0,
    q: float = math.nan,
    frame_period: ArrayLike | None = None,
    n_frames: ArrayLike = 1,
    scale_errors: bool = False,
    exponent_bounds: tuple[float, float] = EXPONENT_BOUNDS,
) -> DynamicsFit:
    """Fit ``beta(t_e) = beta0 k(t_e; Gamma[, gamma])`` for one partition.

    Parameters
    ----------
    exposure_times : array_like, shape (n,)
        Exposure time of one frame of each point (s).
    beta : array_like, shape (n,)
        Measured contrast; NaN points are skipped.
    beta_err : array_like, shape (n,), optional
        Standard errors of ``beta`` (weights ``1/beta_err^2``); points with a
        non-finite or non-positive error are skipped.  None: unit weights,
        errors scaled by the residual scatter, flag ``"unweighted"``.
    model : {"exponential", "stretched"}
        Kernel; the stretched model also fits the exponent ``gamma``.
    partition : int
        Partition index stored in the result.
    q : float
        Partition centre (1/Angstrom) stored in the result.
    frame_period : float or array_like, optional
        Frame period ``P >= t_e`` (s) when each point sums ``n_frames`` frames
        with dead time; None: contiguous frames.
    n_frames : int or array_like
        Frames summed into each point (default 1).
    scale_errors : bool
        If True, multiply the covariance by ``chi2/dof`` (as
        ``curve_fit(absolute_sigma=False)``).  Default False: errors from the
        covariance with the given absolute ``beta_err``.
    exponent_bounds : tuple of float
        Allowed range of the stretching exponent.

    Returns
    -------
    DynamicsFit
        Parameters, standard errors, chi2, dof and flags.

    Raises
    ------
    ValueError
        For an unknown model, inconsistent array shapes, or a frame period
        shorter than the exposure.
    FitError
        If fewer valid points than parameters remain, or the optimiser fails.

    Notes
    -----
    The fit minimises ``sum ((beta0 k - beta) / beta_err)^2`` over ``beta0``,
    ``log Gamma`` (and the exponent) with ``scipy.optimize.least_squares``,
    started from the best point of a grid over ``Gamma`` (``0.01/T_max`` to
    ``100/t_min``; and exponent) on which ``beta0`` is solved linearly.  The
    covariance is ``(J^T J)^-1`` of the weighted residuals in ``(beta0, Gamma,
    gamma)``.

    References
    ----------
    Bandyopadhyay et al., Rev. Sci. Instrum. 76, 093110 (2005).
    """
    if model not in MODELS:
        raise OptionError(f"model {model!r} is not one of {', '.join(MODELS)}")
    t = np.asarray(exposure_times, dtype=float).ravel()
    n_all = t.size
    b = _as_points("beta", beta, n_all, math.nan)
    unweighted = beta_err is None
    s = _as_points("beta_err", beta_err, n_all, 1.0)
    nf = _as_points("n_frames", n_frames, n_all, 1.0)
    period = _as_points("frame_period", frame_period, n_all, math.nan)
    period = np.where(np.isnan(period), t, period)
    valid = np.isfinite(t) & (t > 0) & np.isfinite(b) & np.isfinite(s) & (s > 0)
    valid &= np.isfinite(period) & (nf >= 1)
    t, b, s, nf, period = t[valid], b[valid], s[valid], nf[valid], period[valid]
    # raises ValueError for bad n_frames / frame_period before fitting
    visibility_kernel(t, 0.0, frame_period=period, n_frames=nf)
    n_par = 2 if model == "exponential" else 3
    if t.size < n_par:
        raise FitError(
            f"partition {partition}: {t.size} valid beta(t_e) point(s); the "
            f"{model} model needs at least {n_par}"
        )
    flags: list[str] = []
    if t.size < n_all:
        flags.append("skipped-points")
    if unweighted:
        flags.append("unweighted")
    w = 1.0 / s**2
    lo_g, hi_g = exponent_bounds

    def kernel_of(rate: ArrayLike, g: ArrayLike) -> NDArray:
        return np.asarray(
            visibility_kernel(t, rate, exponent=g, frame_period=period, n_frames=nf)
        )

    duration = (nf - 1) * period + t
    rates = np.geomspace(0.01 / duration.max(), 100.0 / t.min(), 81)
    grid_exps = (
        np.array([1.0])
        if model == "exponential"
        else np.geomspace(max(lo_g, 0.2), min(hi_g, 3.0), 13)
    )
    b0_start, r_start, g_start = _profile_grid(kernel_of, b, w, rates, grid_exps)

    point_kernel = _point_kernel(t, period, nf, kernel_of)
    jacobian: Callable[[NDArray], NDArray] | str = "3-point"
    if model == "exponential" and point_kernel is not kernel_of:  # contiguous
        point_kernel = _last_call(point_kernel)
        jacobian = _exponential_jacobian(t, nf, s, point_kernel)

    def residuals(p: NDArray) -> NDArray:
        g = p[2] if model == "stretched" else 1.0
        return (p[0] * point_kernel(math.exp(p[1]), g) - b) / s

    # rates beyond these bounds are indistinguishable from 0 or infinity
    x0 = [b0_start, math.log(r_start)]
    lower = [-np.inf, math.log(1e-6 / duration.max())]
    upper = [np.inf, math.log(1e6 / t.min())]
    if model == "stretched":
        x0.append(float(np.clip(g_start, lo_g, hi_g)))
        lower.append(lo_g)
        upper.append(hi_g)
    try:
        res = optimize.least_squares(
            residuals,
            x0,
            bounds=(lower, upper),
            jac=jacobian,
            x_scale=np.maximum(np.abs(x0), 0.1),
            xtol=1e-12,
            ftol=1e-12,
            gtol=1e-12,
            max_nfev=_MAX_NFEV_PER_PARAMETER * (n_par + 1),
        )
    except (ValueError, FloatingPointError, OverflowError) as exc:
        raise FitError(f"partition {partition}: least squares failed: {exc}") from exc
    if res.status <= 0:
        logger.debug("partition %s: %s", partition, res.message)
        flags.append("not-converged")
    beta0 = float(res.x[0])
    rate = math.exp(float(res.x[1]))
    exponent = float(res.x[2]) if model == "stretched" else 1.0
    chi2 = float(np.sum(res.fun**2))
    dof = int(t.size - n_par)
    jac = np.array(res.jac, dtype=float)
    jac[:, 1] /= rate  # d/dlog(Gamma) -> d/dGamma
    try:
        cov = np.linalg.inv(jac.T @ jac)
        if not np.all(np.isfinite(cov)) or np.any(np.diag(cov) < 0):
            raise np.linalg.LinAlgError
    except np.linalg.LinAlgError:
        cov = np.full((n_par, n_par), np.inf)
        flags.append("singular-covariance")
    if (scale_errors or unweighted) and dof > 0:
        cov = cov * (chi2 / dof)
    errs = np.sqrt(np.abs(np.diag(cov)))
    if dof == 0:
        flags.append("no-dof")
    elif stats.chi2.sf(chi2, dof) < POOR_FIT_P and not unweighted:
        flags.append("poor-fit")
    if beta0 <= 0:
        flags.append("non-positive-beta0")
    if rate * t.min() > TOO_FAST_X:
        flags.append("decay-too-fast")
    if rate * duration.max() < TOO_SLOW_X:
        flags.append("decay-too-slow")
    if model == "stretched" and (
        math.isclose(exponent, lo_g, rel_tol=1e-6)
        or math.isclose(exponent, hi_g, rel_tol=1e-6)
    ):
        flags.append("exponent-at-bound")
    return DynamicsFit(
        partition=int(partition),
        q=float(q),
        model=model,
        gamma=rate,
        gamma_err=float(errs[1]),
        beta0=beta0,
        beta0_err=float(errs[0]),
        exponent=exponent,
        exponent_err=float(errs[2]) if model == "stretched" else 0.0,
        chi2=chi2,
        dof=dof,
        flags=tuple(flags),
        n_points=int(t.size),
    )
