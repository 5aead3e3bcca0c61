"""Weighted cubic B-spline radial profile used by the centre refinement.

The profile ``I(r)`` is a uniform cubic B-spline fitted by weighted linear
least squares; :class:`ProfileResiduals` gives the residuals about it as a function
of the trial beam centre (variable projection: the profile is re-fitted at
every centre).
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy.linalg import solveh_banded
from scipy.optimize import least_squares

from xsvs_bluesky.errors import FitError

_FloatArray = NDArray[np.float64]

# smallest penalty (relative to the mean diagonal of B^T W B): keeps knots
# without pixels defined without smoothing the profile
_MIN_SMOOTHING = 1e-6


class RadialSpline:
    """Weighted least-squares cubic B-spline profile I(r), uniform knots."""

    def __init__(self, r_lo: float, r_hi: float, spacing: float) -> None:
        self.r_lo = r_lo
        self.spacing = spacing
        self.n_intervals = max(1, math.ceil((r_hi - r_lo) / spacing))
        self.n_coef = self.n_intervals + 3
        # second-difference penalty D^T D, symmetric upper banded (u = 3)
        pen = np.zeros((4, self.n_coef))
        d = (1.0, -2.0, 1.0)
        n_rows = self.n_coef - 2
        for a in range(3):
            for b in range(a, 3):
                pen[3 + a - b, b : b + n_rows] += d[a] * d[b]
        self.penalty = pen

    def basis(self, r: _FloatArray) -> tuple[NDArray[np.intp], _FloatArray]:
        """First coefficient index and the 4 basis values at each radius."""
        u = (r - self.r_lo) * (1.0 / self.spacing)
        idx = np.floor(u).astype(np.intp)
        np.clip(idx, 0, self.n_intervals - 1, out=idx)
        f = u - idx
        f2 = f * f
        f3 = f2 * f
        g = 1.0 - f
        b = np.empty((4, r.size))
        b[0] = g * g * g
        b[1] = 3.0 * f3 - 6.0 * f2 + 4.0
        b[2] = 3.0 * (f2 + f - f3) + 1.0
        b[3] = f3
        b *= 1.0 / 6.0
        return idx, b

    def slope(self, r: _FloatArray, coef: _FloatArray) -> _FloatArray:
        """Return the derivative dI/dr of the profile with coefficients ``coef``."""
        u = (r - self.r_lo) * (1.0 / self.spacing)
        idx = np.floor(u).astype(np.intp)
        np.clip(idx, 0, self.n_intervals - 1, out=idx)
        f = u - idx
        f2 = f * f
        g = 1.0 - f
        out = -g * g * coef[idx]
        out += (3.0 * f2 - 4.0 * f) * coef[idx + 1]
        out += (1.0 + 2.0 * f - 3.0 * f2) * coef[idx + 2]
        out += f2 * coef[idx + 3]
        out *= 0.5 / self.spacing
        return out

    def normal_equations(
        self, idx: NDArray[np.intp], b: _FloatArray, y: _FloatArray, w2: _FloatArray
    ) -> tuple[_FloatArray, _FloatArray]:
        """Upper banded ``B^T W B`` and ``B^T W y`` of the weighted fit."""
        k = self.n_coef
        ab = np.zeros((4, k))
        rhs = np.zeros(k)
        wb = b * w2
        for i in range(4):
            rhs += np.bincount(idx + i, weights=wb[i] * y, minlength=k)
            for j in range(i, 4):
                ab[3 + i - j] += np.bincount(idx + j, weights=wb[i] * b[j], minlength=k)
        return ab, rhs

    def _penalised(self, ab: _FloatArray, smoothing: float) -> _FloatArray:
        scale = max(float(ab[3].mean()), np.finfo(float).tiny)
        return np.asarray(ab + (smoothing * scale) * self.penalty)

    def fit(
        self,
        idx: NDArray[np.intp],
        b: _FloatArray,
        y: _FloatArray,
        w2: _FloatArray,
        smoothing: float,
    ) -> _FloatArray:
        """Coefficients of the penalised weighted least-squares profile."""
        ab, rhs = self.normal_equations(idx, b, y, w2)
        m = self._penalised(ab, smoothing)
        return np.asarray(solveh_banded(m, rhs, check_finite=False))

    def choose_smoothing(
        self, idx: NDArray[np.intp], b: _FloatArray, y: _FloatArray, w2: _FloatArray
    ) -> float:
        """Smoothing factor minimising generalised cross-validation.

        ``GCV = n RSS / (n - edf)^2`` with ``edf = trace((A + lam P)^-1 A)``,
        ``A = B^T W B``, on a grid of ``lam`` relative to the mean diagonal
        of ``A``.
        """
        ab, rhs = self.normal_equations(idx, b, y, w2)
        n, k = y.size, self.n_coef
        best, best_gcv = _MIN_SMOOTHING, math.inf
        for smoothing in np.logspace(math.log10(_MIN_SMOOTHING), 3.0, 10):
            m = self._penalised(ab, float(smoothing))
            coef = solveh_banded(m, rhs, check_finite=False)
            inv = solveh_banded(m, np.eye(k), check_finite=False)
            edf = float(np.dot(np.diagonal(inv), ab[3]))
            for d in range(1, 4):
                edf += 2.0 * float(np.dot(np.diagonal(inv, d), ab[3 - d, d:]))
            res = y - self.evaluate(idx, b, coef)
            gcv = n * float(np.dot(w2 * res, res)) / max(n - edf, 1.0) ** 2
            if gcv < best_gcv:
                best, best_gcv = float(smoothing), gcv
        return best

    @staticmethod
    def evaluate(
        idx: NDArray[np.intp], b: _FloatArray, coef: _FloatArray
    ) -> _FloatArray:
        """Profile values from :meth:`basis` output."""
        out = b[0] * coef[idx]
        for i in range(1, 4):
            out += b[i] * coef[idx + i]
        return out


class ProfileResiduals:
    """Weighted residuals about the re-fitted profile, as a function of c."""

    def __init__(
        self,
        spline: RadialSpline,
        x: _FloatArray,
        y: _FloatArray,
        values: _FloatArray,
        w: _FloatArray,
        smoothing: float = _MIN_SMOOTHING,
    ) -> None:
        self.spline, self.x, self.y, self.values = spline, x, y, values
        self.w, self.w2 = w, w * w
        self.smoothing = smoothing
        self._key: tuple[float, float] | None = None
        self._coef = np.zeros(spline.n_coef)

    def residuals(self, c: _FloatArray) -> _FloatArray:
        dx = self.x - c[0]
        dy = self.y - c[1]
        r = np.hypot(dx, dy)
        idx, b = self.spline.basis(r)
        self._coef = self.spline.fit(idx, b, self.values, self.w2, self.smoothing)
        self._key = (float(c[0]), float(c[1]))
        return self.w * (self.values - self.spline.evaluate(idx, b, self._coef))

    def jacobian(self, c: _FloatArray) -> _FloatArray:
        """Jacobian at fixed profile (Kaufman's variable-projection form)."""
        if self._key != (float(c[0]), float(c[1])):
            self.residuals(c)
        dx = self.x - c[0]
        dy = self.y - c[1]
        r = np.hypot(dx, dy)
        scale = self.w * self.spline.slope(r, self._coef)
        np.divide(scale, r, out=scale, where=r > 0)
        scale[r == 0] = 0.0
        # d res / d c = w * dI/dr * (x - c) / r
        return np.stack([scale * dx, scale * dy], axis=1)

    def subset(self, keep: NDArray[np.bool_]) -> ProfileResiduals:
        """Restrict the problem to some pixels."""
        return ProfileResiduals(
            self.spline,
            self.x[keep],
            self.y[keep],
            self.values[keep],
            self.w[keep],
            self.smoothing,
        )

    def choose_smoothing(self, c: _FloatArray) -> float:
        """GCV smoothing factor of the profile about the centre ``c``."""
        r = np.hypot(self.x - c[0], self.y - c[1])
        idx, b = self.spline.basis(r)
        return self.spline.choose_smoothing(idx, b, self.values, self.w2)

    def covariance(self, c: _FloatArray, step: float = 1e-3) -> _FloatArray:
        """Gauss-Newton covariance ``s^2 (J^T J)^-1`` of the centre at ``c``.

        ``J`` is the central-difference Jacobian of the projected residuals
        (profile re-fitted at each point) and ``s^2`` the reduced chi-square.
        """
        jac = np.empty((self.values.size, 2))
        for k in range(2):
            h = np.zeros(2)
            h[k] = step
            plus = self.residuals(c + h)
            jac[:, k] = (plus - self.residuals(c - h)) / (2.0 * step)
        res = self.residuals(c)
        dof = self.values.size - self.spline.n_coef - 2
        jtj = jac.T @ jac
        if not np.all(np.isfinite(jtj)) or np.linalg.cond(jtj) > 1e12:
            raise FitError(
                "refine_center: the image has no radial structure that fixes the "
                "centre; check the image, the mask and r_range"
            )
        return np.asarray(np.linalg.inv(jtj) * (float(res @ res) / dof))


def minimise(
    problem: ProfileResiduals,
    start: _FloatArray,
    bounds: tuple[_FloatArray, _FloatArray],
) -> _FloatArray:
    """Least-squares centre from ``start`` within ``bounds``."""
    start = np.clip(start, bounds[0], bounds[1])
    result = least_squares(
        problem.residuals,
        start,
        jac=problem.jacobian,
        bounds=bounds,
        method="trf",
        x_scale=1.0,
        xtol=1e-9,
        ftol=1e-10,
        gtol=1e-10,
    )
    if result.status <= 0:
        raise FitError(f"refine_center: least_squares failed: {result.message}")
    return np.asarray(result.x, dtype=np.float64)


def inverse_sigma(r: _FloatArray, res: _FloatArray, width: float) -> _FloatArray:
    """``1 / sigma(r)`` from the residual variance in radial bins."""
    b = np.floor(r / width).astype(np.intp)
    counts = np.bincount(b)
    var = np.bincount(b, weights=res * res) / np.maximum(counts, 1)
    good = counts >= 8
    fill = float(np.median(var[good])) if np.any(good) else float(np.mean(res * res))
    var = np.where(good, var, fill)
    floor = max(1e-12 * float(var.max(initial=0.0)), np.finfo(float).tiny)
    return 1.0 / np.sqrt(np.maximum(var[b], floor))
