"""Diffusion coefficient from relaxation rates, ``Gamma(q) = D q^2``.

Units: ``Gamma`` in 1/s, ``q`` in 1/Angstrom, ``D`` in Angstrom^2/s.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

from xsvs_bluesky.errors import FitError, OptionError

__all__ = [
    "DIFFUSION_STATUSES",
    "DiffusionFit",
    "fit_diffusion",
    "not_yet_determined",
]

#: p-value of the D-fit chi2 below which the fit is flagged "poor-fit".
POOR_FIT_P = 1e-3
#: A D fit with ``chi2/dof`` above this and p below :data:`INFLATE_P` has its
#: error multiplied by ``sqrt(chi2/dof)`` (and is flagged "poor-fit").
INFLATE_REDUCED_CHI2 = 2.0
INFLATE_P = 0.01

#: What a :class:`DiffusionFit` says about ``D`` (:attr:`DiffusionFit.status`).
DIFFUSION_STATUSES = (
    "diffusive",
    "poor-fit",
    "non-diffusive",
    "not yet determined",
    "no-data",
)


def not_yet_determined(value: float, error: float) -> bool:
    """Tell whether a fitted value cannot be shown as a number yet.

    That is when the value or its error is not finite, or the error is as
    large as the value (e.g. an early live refit on two exposures): show
    "not yet determined" instead of the numbers.
    """
    v, e = float(value), float(error)
    return not (math.isfinite(v) and math.isfinite(e)) or e >= abs(v)


@dataclass(frozen=True)
class DiffusionFit:
    """Fit of ``Gamma(q) = D q^2`` and of the exponent ``p`` of ``Gamma ~ q^p``.

    Attributes
    ----------
    D : float
        Diffusion coefficient (Angstrom^2/s).
    D_err : float
        Standard error of ``D`` (Angstrom^2/s).
    exponent : float
        Power ``p`` of ``Gamma = A q^p`` (2 for diffusion); NaN with < 2 points.
    exponent_err : float
        Standard error of ``p``.
    chi2 : float
        Weighted chi-square of the ``D q^2`` fit.
    dof : int
        Its degrees of freedom (``n - 1``).
    flags : tuple of str
        ``"non-diffusive"``, ``"poor-fit"``, ``"no-dof"``, ``"unweighted"``,
        ``"no-scaling-check"`` (fewer than two distinct q with Gamma > 0),
        ``"too-few-partitions"`` (no usable partition, from ``fit_dynamics``).
    partitions : tuple of int
        Indices of the partitions used (empty when not given).
    prefactor : float
        ``A`` of ``Gamma = A q^p`` (1/s / (1/Angstrom)^p).
    error_scale : float
        Factor already applied to ``D_err``: ``sqrt(chi2/dof)`` when the fit
        was poor (``chi2/dof > 2`` with ``p < 0.01``, or ``scale_errors``), else 1.
    """

    D: float
    D_err: float
    exponent: float
    exponent_err: float
    chi2: float
    dof: int
    flags: tuple[str, ...] = ()
    partitions: tuple[int, ...] = ()
    prefactor: float = math.nan
    error_scale: float = 1.0

    @property
    def reduced_chi2(self) -> float:
        """``chi2 / dof`` (NaN when ``dof == 0``)."""
        return self.chi2 / self.dof if self.dof > 0 else math.nan

    @property
    def status(self) -> str:
        """What may be said about ``D``, one of :data:`DIFFUSION_STATUSES`.

        ``"non-diffusive"``: ``Gamma/q^2`` is not constant within errors
        (the q exponent differs from 2), so ``D`` is not the result;
        ``"not yet determined"``: its error is as large as ``D``;
        ``"poor-fit"``: ``D`` stands with its inflated error; ``"diffusive"``.
        """
        if not math.isfinite(self.D):
            return "no-data"
        if "non-diffusive" in self.flags:
            return "non-diffusive"
        if not_yet_determined(self.D, self.D_err):
            return "not yet determined"
        if "poor-fit" in self.flags:
            return "poor-fit"
        return "diffusive"

    def describe(self) -> str:
        """One line for a text table: ``D`` with its error, or why not."""
        status = self.status
        if status == "no-data":
            return "D: no partition with a usable rate"
        if status == "non-diffusive":
            return (
                f"non-diffusive: Gamma/q^2 is not constant within errors (Gamma ~ "
                f"q^{self.exponent:.2f}+-{self.exponent_err:.2f}, chi2/dof = "
                f"{self.reduced_chi2:.3g}); D is not given"
            )
        if status == "not yet determined":
            return "D not yet determined"
        text = f"D = {self.D:.4g} +- {self.D_err:.2g} A^2/s"
        if self.error_scale != 1.0:
            text += (
                f" (error x{self.error_scale:.2g} for chi2/dof = "
                f"{self.reduced_chi2:.3g}: poor fit)"
            )
        return text

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python dict (tuples as lists, plus ``reduced_chi2``)."""
        out = asdict(self)
        out["flags"] = list(self.flags)
        out["partitions"] = list(self.partitions)
        out["reduced_chi2"] = self.reduced_chi2
        out["status"] = self.status
        return out


def fit_diffusion(
    q: ArrayLike,
    gamma: ArrayLike,
    gamma_err: ArrayLike | None = None,
    *,
    partitions: ArrayLike | None = None,
    scale_errors: bool = False,
    n_sigma: float = 3.0,
    exponent_tolerance: float = 0.1,
) -> DiffusionFit:
    """Weighted fit of ``Gamma = D q^2`` through the origin and a q^p check.

    Parameters
    ----------
    q : array_like
        Momentum transfers (1/Angstrom).
    gamma : array_like
        Relaxation rates (1/s); non-finite points are skipped.
    gamma_err : array_like, optional
        Standard errors of ``gamma`` (1/s); points with a non-finite or
        non-positive error are skipped.  None: unit weights, errors scaled by
        the residual scatter (flag ``"unweighted"``).
    partitions : array_like of int, optional
        Partition index of each point (kept in the result).
    scale_errors : bool
        Multiply the variances by ``chi2/dof`` (default False: absolute).
    n_sigma : float
        Flag ``"non-diffusive"`` when ``|p - 2| > n_sigma * p_err`` ...
    exponent_tolerance : float
        ... and ``|p - 2| > exponent_tolerance``.

    Returns
    -------
    DiffusionFit
        ``D`` (Angstrom^2/s), the exponent ``p`` and flags.

    Raises
    ------
    FitError
        If no valid point remains.

    Notes
    -----
    ``D = sum(w Gamma q^2) / sum(w q^4)`` with ``w = 1/Gamma_err^2`` and
    ``D_err = (sum w q^4)^-1/2``, multiplied by ``sqrt(chi2/dof)`` when
    ``chi2/dof > 2`` with ``p < 0.01`` (the scatter of ``Gamma/q^2`` then
    exceeds the errors; flag ``"poor-fit"``, :attr:`DiffusionFit.error_scale`).
    The exponent comes from a weighted straight
    line ``ln Gamma = ln A + p ln q`` with ``sigma(ln Gamma) = Gamma_err /
    Gamma`` (points with ``Gamma > 0`` only).
    """
    qa = np.asarray(q, dtype=float).ravel()
    g = np.asarray(gamma, dtype=float).ravel()
    unweighted = gamma_err is None
    e = np.ones_like(g) if gamma_err is None else np.asarray(gamma_err, float).ravel()
    if not qa.shape == g.shape == e.shape:
        raise OptionError(
            f"q, gamma and gamma_err have shapes {qa.shape}, {g.shape}, {e.shape}; "
            "they must have the same length"
        )
    parts = np.arange(qa.size) if partitions is None else np.asarray(partitions).ravel()
    valid = np.isfinite(qa) & (qa > 0) & np.isfinite(g) & np.isfinite(e) & (e > 0)
    qa, g, e, parts = qa[valid], g[valid], e[valid], parts[valid]
    if qa.size == 0:
        raise FitError("fit_diffusion: no partition with a finite rate and error")
    flags: list[str] = ["unweighted"] if unweighted else []
    w = 1.0 / e**2
    q2 = qa**2
    sq4 = float(np.sum(w * q2 * q2))
    d = float(np.sum(w * g * q2)) / sq4
    chi2 = float(np.sum(w * (g - d * q2) ** 2))
    dof = int(qa.size - 1)
    var_d = 1.0 / sq4
    error_scale = 1.0
    p_fit = stats.chi2.sf(chi2, dof) if dof > 0 else math.nan
    inflate = (
        not unweighted
        and dof > 0
        and chi2 / dof > INFLATE_REDUCED_CHI2
        and p_fit < INFLATE_P
    )
    if ((scale_errors or unweighted) and dof > 0) or inflate:
        error_scale = math.sqrt(chi2 / dof)
        var_d *= chi2 / dof
    if dof == 0:
        flags.append("no-dof")
    elif not unweighted and (p_fit < POOR_FIT_P or inflate):
        flags.append("poor-fit")

    p, p_err, prefactor = math.nan, math.nan, math.nan
    pos = g > 0
    if np.unique(qa[pos]).size >= 2:
        x = np.log(qa[pos])
        y = np.log(g[pos])
        wl = (g[pos] / e[pos]) ** 2
        design = np.column_stack([np.ones_like(x), x])
        cov = np.linalg.inv(design.T @ (wl[:, None] * design))
        coef = cov @ (design.T @ (wl * y))
        dof_p = x.size - 2
        if (scale_errors or unweighted) and dof_p > 0:
            chi2_p = float(np.sum(wl * (y - design @ coef) ** 2))
            cov = cov * (chi2_p / dof_p)
        prefactor, p = math.exp(float(coef[0])), float(coef[1])
        p_err = math.sqrt(float(cov[1, 1]))
        dev = abs(p - 2.0)
        if dev > n_sigma * p_err and dev > exponent_tolerance:
            flags.append("non-diffusive")
    else:
        flags.append("no-scaling-check")
    return DiffusionFit(
        D=d,
        D_err=math.sqrt(var_d),
        exponent=p,
        exponent_err=p_err,
        chi2=chi2,
        dof=dof,
        flags=tuple(flags),
        partitions=tuple(int(i) for i in parts),
        prefactor=prefactor,
        error_scale=error_scale,
    )
