"""Beam-centre refinement from an isotropic scattering image.

Public names are re-exported by :mod:`xsvs_bluesky.core.images`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from xsvs_bluesky.core._radial_spline import (
    ProfileResiduals,
    RadialSpline,
    inverse_sigma,
    minimise,
)
from xsvs_bluesky.core.geometry import Geometry
from xsvs_bluesky.errors import FitError, GeometryError

__all__ = ["CenterFit", "refine_center"]

METHOD = "azimuthal-spline"


@dataclass(frozen=True)
class CenterFit:
    """Refined beam centre, in the pixel convention of the input geometry.

    Attributes
    ----------
    center_x, center_y : float
        Beam centre along columns and rows, in px.
    center_x_err, center_y_err : float
        One-sigma uncertainties in px (from the Jacobian of the fit).
    n_pixels : int
        Number of pixels used.
    method : str
        ``"azimuthal-spline"`` (see :func:`refine_center`).
    one_based : bool
        Pixel-centre convention of the centre (that of the input geometry).
    correlation : float
        Correlation coefficient of the x and y estimates.
    reduced_chi2 : float
        Weighted sum of squared residuals per degree of freedom (about 1
        when the noise model fits).
    initial_x, initial_y : float
        Starting centre, in px.
    error_method : str
        ``"jacobian"`` or ``"jackknife-<n>"`` (see :func:`refine_center`).
    """

    center_x: float
    center_y: float
    center_x_err: float
    center_y_err: float
    n_pixels: int
    method: str
    one_based: bool
    correlation: float
    reduced_chi2: float
    initial_x: float
    initial_y: float
    error_method: str = "jacobian"

    def apply(self, geometry: Geometry) -> Geometry:
        """Return ``geometry`` with this centre.

        Raises
        ------
        GeometryError
            If ``geometry`` uses the other pixel-centre convention.
        """
        if geometry.one_based != self.one_based:
            raise GeometryError(
                f"CenterFit.apply: the fit has one_based={self.one_based} but the "
                f"geometry has one_based={geometry.one_based}; use one convention"
            )
        return geometry.with_center(self.center_x, self.center_y)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dictionary."""
        return {
            "center_x": self.center_x,
            "center_y": self.center_y,
            "center_x_err": self.center_x_err,
            "center_y_err": self.center_y_err,
            "n_pixels": self.n_pixels,
            "method": self.method,
            "one_based": self.one_based,
            "correlation": self.correlation,
            "reduced_chi2": self.reduced_chi2,
            "initial_x": self.initial_x,
            "initial_y": self.initial_y,
            "error_method": self.error_method,
        }


def refine_center(
    image: ArrayLike,
    geometry: Geometry,
    mask: ArrayLike | None = None,
    *,
    r_range: tuple[float, float] | None = None,
    knot_spacing: float = 1.0,
    max_shift: float = 10.0,
    jackknife_sectors: int = 0,
) -> CenterFit:
    """Refine the beam centre of an isotropic pattern ``I(|r - c|)``.

    For a trial centre ``c`` every pixel gets its radius ``|r_i - c|`` (pixel
    centres placed exactly as in :meth:`Geometry.q_map`), a smooth
    azimuthal-average profile ``I(r)`` is fitted by weighted linear least
    squares (cubic B-spline with uniform knots every ``knot_spacing`` px; a
    tiny second-difference penalty keeps knots without pixels defined), and
    the residuals ``w_i (I_i - I(|r_i - c|))`` measure the scatter of the
    pixels about the profile.  Their sum of squares is minimised over ``c``
    with ``scipy.optimize.least_squares`` (variable projection: the profile
    is re-fitted at every ``c``, only the two centre coordinates are
    optimised).

    The fit is done twice: first unweighted, then with weights ``1/sigma(r)``
    where ``sigma(r)^2`` is the residual variance of the first fit in radial
    bins of ``2 * knot_spacing`` px, so that Poisson noise, speckle and an
    intensity falling by decades with r are weighted correctly.  The
    uncertainty is the Gauss-Newton covariance ``s^2 (J^T J)^-1`` of the
    second fit (``J``: central-difference Jacobian of the residuals at the
    optimum, ``s^2``: reduced chi-square).  It assumes independent pixel
    residuals and an isotropic pattern.  With ``jackknife_sectors = n`` the
    fit is repeated ``n`` times leaving out one azimuthal sector and the
    delete-one jackknife covariance is reported instead: it also captures
    anisotropy, flat-field structure and speckle correlations.

    Pure numerics: nothing is written anywhere.

    Parameters
    ----------
    image : array_like
        2-d image of ``geometry.shape``, e.g. the time-averaged frames
        (divide by the flat field first if it has structure).
    geometry : Geometry
        Starting centre, detector shape and pixel-centre convention (the
        result uses the same convention).
    mask : array_like, optional
        Excluded pixels (True or nonzero).  Non-finite pixels are also
        excluded.
    r_range : tuple of float, optional
        Use only pixels whose distance from the starting centre lies in
        ``[r_min, r_max]`` px (default: all pixels).
    knot_spacing : float, optional
        Knot spacing of the radial profile in px (default 1); keep it below
        the width of the sharpest radial feature.
    max_shift : float, optional
        Largest change of each coordinate from the start, in px (default 10).
    jackknife_sectors : int, optional
        0 (default): Jacobian errors.  n >= 3: jackknife errors over n
        azimuthal sectors (n more fits, each cheaper than the first).

    Returns
    -------
    CenterFit

    Raises
    ------
    GeometryError
        On a shape mismatch or an invalid option.
    FitError
        If too few pixels are usable, the image has no radial structure,
        the optimiser fails or the centre reaches ``max_shift``.

    References
    ----------
    G. H. Golub and V. Pereyra, "Separable nonlinear least squares: the
    variable projection method and its applications", Inverse Problems 19,
    R1 (2003).  B. Efron, "The jackknife, the bootstrap and other resampling
    plans", SIAM (1982).

    Examples
    --------
    >>> i, j = np.indices((64, 80))
    >>> r = np.hypot(i + 1 - 30.4, j + 1 - 41.7)
    >>> image = 10 + 100 * np.exp(-0.5 * ((r - 15) / 5) ** 2)
    >>> start = Geometry(1.0, 1000.0, 0.055, 41.0, 31.0, (64, 80))
    >>> fit = refine_center(image, start)
    >>> round(fit.center_x, 2), round(fit.center_y, 2)
    (41.7, 30.4)
    """
    img = np.asarray(image, dtype=np.float64)
    if img.shape != geometry.shape:
        raise GeometryError(
            f"refine_center: image shape {img.shape} differs from the geometry "
            f"shape {geometry.shape}"
        )
    _check_options(knot_spacing, max_shift, jackknife_sectors)
    valid = np.isfinite(img)
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != img.shape:
            raise GeometryError(
                f"refine_center: mask shape {m.shape} differs from the image "
                f"shape {img.shape}"
            )
        valid &= m == 0
    shift = 1.0 if geometry.one_based else 0.0
    rows, cols = np.nonzero(valid)
    y = rows.astype(np.float64) + shift
    x = cols.astype(np.float64) + shift
    x0 = np.array([geometry.center_x, geometry.center_y])
    r0 = np.hypot(x - x0[0], y - x0[1])
    if r_range is not None:
        r_min, r_max = float(r_range[0]), float(r_range[1])
        if not (0 <= r_min < r_max):
            raise GeometryError(f"r_range = {r_range!r}; give 0 <= r_min < r_max px")
        keep = (r0 >= r_min) & (r0 <= r_max)
        x, y, r0, rows, cols = x[keep], y[keep], r0[keep], rows[keep], cols[keep]
    values = img[rows, cols]
    n = values.size
    margin = max_shift * math.sqrt(2.0) + knot_spacing
    r_lo = max(0.0, float(r0.min()) - margin) if n else 0.0
    r_hi = (float(r0.max()) if n else 0.0) + margin
    spline = RadialSpline(r_lo, r_hi, knot_spacing)
    if n - spline.n_coef - 2 < 10:
        raise FitError(
            f"refine_center: only {n} usable pixels for {spline.n_coef} profile "
            "coefficients; unmask more pixels, widen r_range or increase "
            "knot_spacing"
        )
    if np.ptp(values) == 0:
        raise FitError(
            "refine_center: the image is constant on the usable pixels and has no "
            "radial structure; check the image, the mask and r_range"
        )
    bounds = (x0 - max_shift, x0 + max_shift)
    problem = ProfileResiduals(spline, x, y, values, np.ones(n))
    problem.smoothing = problem.choose_smoothing(x0)
    c1 = minimise(problem, x0, bounds)
    r1 = np.hypot(x - c1[0], y - c1[1])
    w = inverse_sigma(r1, problem.residuals(c1), 2.0 * knot_spacing)
    problem = ProfileResiduals(spline, x, y, values, w)
    problem.smoothing = problem.choose_smoothing(c1)
    c2 = minimise(problem, c1, bounds)
    if np.any(np.abs(c2 - x0) > max_shift * (1 - 1e-6)):
        raise FitError(
            f"refine_center: the centre ({c2[0]:.3f}, {c2[1]:.3f}) px reached the "
            f"search limit max_shift = {max_shift} px around ({x0[0]}, {x0[1]}); "
            "give a better starting centre or a larger max_shift"
        )
    cov = problem.covariance(c2)
    res = problem.residuals(c2)
    chi2 = float(res @ res) / (n - spline.n_coef - 2)
    error_method = "jacobian"
    if jackknife_sectors:
        cov = _jackknife(problem, c2, bounds, int(jackknife_sectors))
        error_method = f"jackknife-{int(jackknife_sectors)}"
    sx, sy = math.sqrt(cov[0, 0]), math.sqrt(cov[1, 1])
    if max(sx, sy) > max_shift:
        raise FitError(
            f"refine_center: the image does not determine the centre (uncertainty "
            f"{max(sx, sy):.3g} px > max_shift = {max_shift} px); check the image, "
            "the mask and r_range"
        )
    return CenterFit(
        center_x=float(c2[0]),
        center_y=float(c2[1]),
        center_x_err=sx,
        center_y_err=sy,
        n_pixels=int(n),
        method=METHOD,
        one_based=geometry.one_based,
        correlation=float(cov[0, 1] / (sx * sy)) if sx * sy > 0 else 0.0,
        reduced_chi2=chi2,
        initial_x=float(x0[0]),
        initial_y=float(x0[1]),
        error_method=error_method,
    )


def _check_options(knot_spacing: float, max_shift: float, sectors: int) -> None:
    if not (knot_spacing > 0 and math.isfinite(knot_spacing)):
        raise GeometryError(f"knot_spacing = {knot_spacing!r}; give a float > 0 px")
    if not (max_shift > 0 and math.isfinite(max_shift)):
        raise GeometryError(f"max_shift = {max_shift!r}; give a float > 0 px")
    if int(sectors) != sectors or sectors < 0 or sectors in (1, 2):
        raise GeometryError(
            f"jackknife_sectors = {sectors!r}; give 0 (Jacobian errors) or an int >= 3"
        )


def _jackknife(
    problem: ProfileResiduals,
    center: NDArray[np.float64],
    bounds: tuple[NDArray[np.float64], NDArray[np.float64]],
    n_sectors: int,
) -> NDArray[np.float64]:
    """Delete-one-sector jackknife covariance of the centre."""
    phi = np.arctan2(problem.y - center[1], problem.x - center[0])
    sector = np.floor((phi + math.pi) * (n_sectors / (2 * math.pi))).astype(np.intp)
    sector %= n_sectors
    centers = np.empty((n_sectors, 2))
    for k in range(n_sectors):
        sub = problem.subset(sector != k)
        if sub.values.size - sub.spline.n_coef - 2 < 10:
            raise FitError(
                f"refine_center: too few pixels outside jackknife sector {k}; "
                "use fewer sectors"
            )
        centers[k] = minimise(sub, center, bounds)
    dev = centers - centers.mean(axis=0)
    return np.asarray((n_sectors - 1) / n_sectors * (dev.T @ dev))
